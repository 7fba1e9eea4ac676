"""Steps per second of DisEnt's released code against ``robust run disent`` on the same Colored MNIST files.

    python benchmarks/disent_original.py --original PATH [--steps 2000] [--repeats 3] [--threads 1]
    python benchmarks/disent_original.py --original PATH --steps 200 --eval-every 100 --repeats 1   # a quick try
    python benchmarks/disent_original.py --original PATH --data-root DIR --json figures.json

``PATH`` is a checkout of github.com/kakaoenterprise/Learning-Debiased-Disentangled (the DisEnt
authors' code, "the original"), which the user fetches: robust does not ship it and this script only
runs it, as a subprocess, on a temporary copy.

**Data.** Our generated Colored MNIST (``synthetic-cmnist``, ``--version`` 1 by default: 10,000
training images of which 1 % conflict, 2,000 val, 2,000 test; generated on first use or read from
its cache under ``--data-root``, default a temporary folder) is written as PNG files in the layout of
DisEnt's release (packages/datasets/DATASETS.md), under ``DATA_ROOT/disent-original/cmnist``::

    cmnist/<pct>/align/<y>/<i>_<y>_<b>.png       training images with y == b
    cmnist/<pct>/conflict/<y>/<i>_<y>_<b>.png    training images with y != b
    cmnist/<pct>/valid/<i>_<y>_<b>.png           val (flat, as the release's cmnist)
    cmnist/test/<y>/<i>_<y>_<b>.png              test (colours independent of the digit: unbiased)

with ``<pct>`` = ``1pct`` (version 1) or ``5pct`` (version 2) and ``<i>`` the image's index in its
split. The generated arrays are uint8 and PNG is lossless, so both sides read the same pixels. The
folders are written once (to ``<folder>.partial``, then renamed) and reused while their
``metadata.json`` matches. Both sides then read *these files*: the original's ``CMNISTDataset``
(PIL per image in its ``DataLoader``), and robust's ``cmnist`` dataset (``--dataset cmnist --set
dataset.root=...``), which decodes them once, caches them in HDF5 under ``DATA_ROOT/.cache`` and
trains from memory.

**Settings: the released CMNIST script** (``scripts/run_cmnist_ours.sh``; robust's ``cmnist-1pct`` /
``cmnist-5pct`` preset, picked by robust from the dataset's ``conflict_pct``): MLP 100-100-16 on
inputs / 255 (after ToTensor's / 255), two branches with ``Linear(32, 10)`` heads, Adam lr 0.01, batch
256 (drop last), GCE (q 0.7) for the bias branch, λ_dis = λ_swap_b = 10, λ_swap = 1, swapping and LR
decay (×0.5 every 10,000) from step 10,000, EMA α 0.7. The original runs ``train.py --dataset cmnist
--lr=0.01 --percent=<pct> --curr_step=10000 --lambda_swap=1 --lambda_dis_align=10
--lambda_swap_align=10 --use_lr_decay --lr_decay_step=10000 --lr_gamma=0.5 --train_ours`` with
``--device cpu``, ``--num_steps``, ``--valid_freq`` / ``--log_freq`` = ``--eval-every`` (the release's
default is 500) and ``--save_freq`` = twice that (release: 1,000), and ``--num_workers --workers``
(default 0: loading in the training process, so that both sides use the same threads; the release's
default is 16 loader processes); robust runs ``robust run disent --dataset cmnist --steps N`` with
``train.eval_every_steps`` and ``train.checkpoint_every_steps`` set the same way, fp32, on the CPU.
The release's ``--tensorboard --wandb`` flags are left out (no logging service; they only log
scalars every 500 steps). Shorter than 10,000 steps neither side swaps features nor decays the LR:
that is the released schedule's first fifth.

**Timing, start-up excluded.** The original prints ``valid_d: ... || test_d: ...`` after each
evaluation (steps 0, E, 2E, ...; its step 0 is the first update, so it runs ``N + 1`` steps to
evaluate after update ``N + 1``): its time is from the step-0 line to the step-N line, read as the
lines arrive (unbuffered stdout), i.e. N updates with their N / E evaluations and checkpoints.
Robust's is ``train.wall_time_s`` of its summary.json: ``Run.fit`` from the first to the N-th
update, with its N / E evaluations and checkpoints (data loading, model building and interpreter
start-up are outside it). Both figures are steps per second; the ratio is robust / original. Each
side's start-up (the rest of its process's wall time) is reported apart. The sides alternate
``--repeats`` times (original first); medians are reported. Robust's repeat ``r`` uses seed
``--seed + r``; the original never seeds. Final test accuracy: the original's ``test_d`` at step N
(after N + 1 updates: accuracy over the unbiased test folder), robust's ``test/unbiased_acc`` of the
``last`` evaluation (after N updates; the same sample-weighted accuracy over the same files).

**Threads.** ``--threads`` (default 1) sets ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` for both
subprocesses (torch reads them at start-up; neither side calls ``torch.set_num_threads``).
``uptime``'s load average is printed before and after: on a shared machine, read the figures with it.

**What is done to the original, on a temporary copy only** (its files on disk are never changed):

* patch 1, ``util.py`` ``EMA.__init__``: ``self.label = label.cuda()`` loses its ``.cuda()``;
* patch 2, ``util.py`` ``EMA.__init__``: ``self.max = torch.zeros(self.num_classes).cuda()`` loses
  its ``.cuda()``. These two hard-coded ``.cuda()`` calls are the only ones on the CMNIST path; with
  them the code cannot run without a GPU (``--device cpu`` moves everything else);
* missing dependencies are stubbed, not installed: when this interpreter cannot import ``wandb``
  (``learner.py`` imports it unconditionally; with ``--wandb`` off it is never called) or ``tqdm``, a
  small module of that name that does nothing (tqdm: returns its iterable) is written to a shim folder
  put first on the subprocess's ``PYTHONPATH``. The script says which stubs it used.

The copy (and its ``log/`` folder of checkpoints) is made in a temporary folder, deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPOSITORY = "https://github.com/kakaoenterprise/Learning-Debiased-Disentangled"
LAYOUT_FOLDER = "disent-original"
METADATA_FILE = "metadata.json"
EXIT_NO_ORIGINAL = 2
# The released CMNIST script (scripts/run_cmnist_ours.sh) without --exp, --percent and the logging flags.
RELEASED_CMNIST_FLAGS = [
    "--dataset",
    "cmnist",
    "--lr=0.01",
    "--curr_step=10000",
    "--lambda_swap=1",
    "--lambda_dis_align=10",
    "--lambda_swap_align=10",
    "--use_lr_decay",
    "--lr_decay_step=10000",
    "--lr_gamma=0.5",
    "--train_ours",
]
# (file, text, replacement, expected count): what makes the original run without a GPU.
CPU_PATCHES = [
    ("util.py", "self.label = label.cuda()", "self.label = label", 1),
    ("util.py", "self.max = torch.zeros(self.num_classes).cuda()", "self.max = torch.zeros(self.num_classes)", 1),
]
STUBS = {
    "wandb": '"""Stub of wandb written by benchmarks/disent_original.py: does nothing."""\n\n'
    "class _Run:\n    name = None\n\n\nrun = _Run()\n\n\n"
    "def init(*args, **kwargs):\n    return run\n\n\ndef log(*args, **kwargs):\n    pass\n",
    "tqdm": '"""Stub of tqdm written by benchmarks/disent_original.py: returns the iterable."""\n\n'
    "def tqdm(iterable=None, *args, **kwargs):\n    return iterable\n",
}
EVAL_LINE = re.compile(r"valid_d:\s*(?:tensor\()?([0-9.eE+-]+)\)?\s*\|\|\s*test_d:\s*(?:tensor\()?([0-9.eE+-]+)")


class NoOriginal(Exception):
    """The checkout of the original code is missing or incomplete."""


def missing_original_message(path: str | None) -> str:
    where = "No --original PATH was given" if path is None else f"{path!r} is not a checkout of the original code"
    return (
        f"{where}. This benchmark runs the DisEnt authors' released code (Lee et al., NeurIPS 2021), which "
        f"robust does not ship: fetch it yourself with `git clone {REPOSITORY}` (or download the "
        f"repository's zip from {REPOSITORY} and unpack it), then pass the folder that holds its train.py, "
        "learner.py and util.py, e.g. `python benchmarks/disent_original.py --original "
        "./Learning-Debiased-Disentangled`. Its own requirements.txt pins torch 1.4 and more, but nothing "
        "needs installing: the script runs it with this interpreter's torch and torchvision on a temporary "
        "copy (two .cuda() calls removed) and stubs wandb/tqdm when they are missing; its datasets are not "
        "needed either (our generated Colored MNIST is written in its layout)."
    )


def check_original(path: str | None) -> Path:
    """The checkout's folder, or NoOriginal with the paragraph that says how to get it."""
    if path is None:
        raise NoOriginal(missing_original_message(None))
    folder = Path(path).expanduser()
    needed = ["train.py", "learner.py", "util.py", "data/util.py", "module/mlp.py"]
    if not folder.is_dir() or any(not (folder / name).is_file() for name in needed):
        raise NoOriginal(missing_original_message(path))
    return folder.resolve()


# -- data -------------------------------------------------------------------------------------


def pct_folder(conflict_pct: float) -> str:
    """DisEnt's folder name of a conflict percentage: 1.0 -> ``1pct``, 0.5 -> ``0.5pct``."""
    return f"{conflict_pct:g}pct"


def write_disent_layout(arrays: Mapping[str, Any], out: Path, conflict_pct: float, metadata: dict[str, Any]) -> Path:
    """Write ``{split}.images`` (uint8 N,3,H,W), ``.labels``, ``.bias`` of train/val/test as DisEnt's cmnist.

    ``out`` is the dataset folder (``.../cmnist``); the files go to ``<out>.partial`` first, which is
    renamed to ``out`` once complete. Returns ``out``.
    """
    import numpy as np
    from PIL import Image

    out = Path(out)
    pct = pct_folder(conflict_pct)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    counts: dict[str, int] = {}
    for split in ("train", "val", "test"):
        images = np.asarray(arrays[f"{split}.images"])
        labels = np.asarray(arrays[f"{split}.labels"])
        bias = np.asarray(arrays[f"{split}.bias"])
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"{split}.images must be uint8 of shape (N, 3, H, W), got {images.dtype} {images.shape}")
        for i, (image, y, b) in enumerate(zip(images, labels, bias, strict=True)):
            y, b = int(y), int(b)
            if split == "train":
                folder = partial / pct / ("align" if y == b else "conflict") / str(y)
            elif split == "val":
                folder = partial / pct / "valid"
            else:
                folder = partial / "test" / str(y)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0)), "RGB").save(folder / f"{i}_{y}_{b}.png")
            key = f"{split}/{'align' if y == b else 'conflict'}" if split == "train" else split
            counts[key] = counts.get(key, 0) + 1
    (partial / METADATA_FILE).write_text(json.dumps({**metadata, "counts": counts}, indent=1), encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    return out


def prepare_data(data_root: Path, version: int) -> tuple[Path, float, dict[str, Any]]:
    """synthetic-cmnist (from its cache under data_root, else generated) written in DisEnt's layout.

    Returns the layout's ``cmnist`` folder, the conflict percentage and its metadata.
    """
    from robust_datasets import synthetic_cmnist as sc
    from robust_datasets.cache import load_or_generate

    config = sc.SyntheticCMNISTConfig(version=version)
    options = config.model_dump(mode="json")
    conflict_pct = float(config.conflict_pct)
    metadata = {
        "source": sc.NAME,
        "format_version": sc.FORMAT_VERSION,
        "options": options,
        "bias_names": list(sc.COLOR_NAMES),
        "written_by": "benchmarks/disent_original.py",
    }
    out = data_root / LAYOUT_FOLDER / "cmnist"
    try:
        existing = json.loads((out / METADATA_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        existing = None
    if existing is not None and {k: existing.get(k) for k in metadata} == metadata:
        return out, conflict_pct, existing
    arrays = load_or_generate(data_root / sc.NAME, sc.NAME, options, sc.FORMAT_VERSION, lambda: sc.generate(config))
    write_disent_layout(arrays, out, conflict_pct, metadata)
    return out, conflict_pct, json.loads((out / METADATA_FILE).read_text(encoding="utf-8"))


# -- the original -----------------------------------------------------------------------------


def copy_and_patch(original: Path, dest: Path) -> list[str]:
    """Copy the checkout to ``dest`` (without .git) and apply CPU_PATCHES there; returns what was done."""
    shutil.copytree(original, dest, ignore=shutil.ignore_patterns(".git", "__pycache__", "log", "result"))
    done = []
    for name, text, replacement, count in CPU_PATCHES:
        path = dest / name
        source = path.read_text(encoding="utf-8")
        found = source.count(text)
        if found != count:
            raise RuntimeError(
                f"{name}: expected {count} occurrence(s) of {text!r}, found {found}: this checkout differs from "
                f"the one the script was written for ({REPOSITORY}, master); check its CPU patches."
            )
        path.write_text(source.replace(text, replacement), encoding="utf-8")
        done.append(f"{name}: {text!r} -> {replacement!r}")
    return done


def write_stubs(shim: Path, python: str) -> list[str]:
    """Stub modules for the original's imports that ``python`` lacks; returns their names."""
    shim.mkdir(parents=True, exist_ok=True)
    stubbed = []
    for module, source in STUBS.items():
        probe = subprocess.run(
            [python, "-c", f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"],
            capture_output=True,
            check=False,
        )
        if probe.returncode != 0:
            (shim / f"{module}.py").write_text(source, encoding="utf-8")
            stubbed.append(module)
    return stubbed


def run_original(
    code: Path, data_dir: Path, pct: str, steps: int, eval_every: int, workers: int, env: dict[str, str], log: Path
) -> dict[str, Any]:
    """One run of the original's train.py; times the step-0 to step-N evaluation lines."""
    command = [
        sys.executable,
        "train.py",
        *RELEASED_CMNIST_FLAGS,
        "--exp=robust_benchmark",
        f"--percent={pct}",
        "--device=cpu",
        f"--num_workers={workers}",
        f"--num_steps={steps + 1}",
        f"--valid_freq={eval_every}",
        f"--log_freq={eval_every}",
        f"--save_freq={2 * eval_every}",
        f"--data_dir={data_dir}",
        f"--log_dir={log.parent / 'log'}",
    ]
    evals: list[tuple[float, float, float]] = []  # (time, valid acc, test acc)
    lines: list[str] = []
    started = time.perf_counter()
    with open(log, "w", encoding="utf-8") as stderr:
        process = subprocess.Popen(command, cwd=code, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
        assert process.stdout is not None
        for line in process.stdout:
            now = time.perf_counter()
            lines.append(line)
            if match := EVAL_LINE.search(line):
                evals.append((now, float(match.group(1)), float(match.group(2))))
        rc = process.wait()
    total = time.perf_counter() - started
    expected = steps // eval_every + 1
    if rc != 0 or len(evals) != expected:
        tail = "".join(lines[-20:]) + log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"the original's train.py exited {rc} with {len(evals)} of {expected} evaluations:\n{tail}")
    timed = evals[-1][0] - evals[0][0]
    return {
        "steps_per_s": steps / timed,
        "timed_s": timed,
        "startup_s": total - timed,
        "test_acc": evals[-1][2],
        "val_acc": evals[-1][1],
    }


# -- robust -----------------------------------------------------------------------------------


def run_robust(
    data_root: Path, layout: Path, conflict_pct: float, steps: int, eval_every: int, seed: int, out: Path, env
) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "robust",
        "run",
        "disent",
        "--dataset",
        "cmnist",
        "--data-root",
        str(data_root),
        "--set",
        f"dataset.root={layout}",
        "--set",
        f"dataset.conflict_pct={conflict_pct:g}",
        "--set",
        f"train.eval_every_steps={eval_every}",
        "--set",
        f"train.checkpoint_every_steps={2 * eval_every}",
        "--steps",
        str(steps),
        "--seed",
        str(seed),
        "--device",
        "cpu",
        "--quiet",
        "--out",
        str(out),
    ]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    total = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"robust run disent exited {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    train = summary["train"]
    if train["steps"] != steps:
        raise RuntimeError(f"robust trained {train['steps']} steps, not {steps}")
    metrics = summary["selection"]["last"]["metrics"]
    timed = float(train["wall_time_s"])
    return {
        "steps_per_s": steps / timed,
        "timed_s": timed,
        "startup_s": total - timed,
        "test_acc": metrics["test/unbiased_acc"],
        "val_acc": metrics["val/avg_acc"],
        "preset": summary.get("preset"),
        "precision": train.get("precision"),
    }


# -- main -------------------------------------------------------------------------------------


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "load average: {:.2f}, {:.2f}, {:.2f}".format(*os.getloadavg())


def side_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "steps_per_s_median": statistics.median(r["steps_per_s"] for r in runs),
        "steps_per_s_max": max(r["steps_per_s"] for r in runs),
        "startup_s_median": statistics.median(r["startup_s"] for r in runs),
        "test_acc_median": statistics.median(r["test_acc"] for r in runs),
        "test_acc_mean": statistics.fmean(r["test_acc"] for r in runs),
        "runs": runs,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--original", help=f"checkout of {REPOSITORY} (fetched by you)")
    parser.add_argument("--steps", type=int, default=2000, help="training steps of each run (default 2000)")
    parser.add_argument("--eval-every", type=int, help="evaluate every E steps (default: 500, or --steps if fewer)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side, alternating (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="OMP/MKL threads of both sides (default 1)")
    parser.add_argument("--workers", type=int, default=0, help="the original's --num_workers (default 0)")
    parser.add_argument("--version", type=int, choices=(1, 2), default=1, help="synthetic-cmnist version (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="robust's seed of the first repeat (default 0)")
    parser.add_argument("--data-root", type=Path, help="where the data are generated/reused (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.eval_every is None:
        args.eval_every = min(500, args.steps)
    if args.steps < 1 or args.repeats < 1 or args.threads < 1 or args.eval_every < 1:
        parser.error("--steps, --eval-every, --repeats and --threads must be positive")
    if args.steps % args.eval_every:
        parser.error(f"--steps ({args.steps}) must be a multiple of --eval-every ({args.eval_every})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        original = check_original(args.original)
    except NoOriginal as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_NO_ORIGINAL

    import torch

    with tempfile.TemporaryDirectory(prefix="disent_original_") as tmp_name:
        tmp = Path(tmp_name)
        data_root = (args.data_root or tmp / "data").resolve()
        data_root.mkdir(parents=True, exist_ok=True)
        load_before = uptime()
        print(f"data: synthetic-cmnist v{args.version} in DisEnt's layout under {data_root / LAYOUT_FOLDER}")
        layout, conflict_pct, metadata = prepare_data(data_root, args.version)
        pct = pct_folder(conflict_pct)
        code = tmp / "original"
        patches = copy_and_patch(original, code)
        stubs = write_stubs(tmp / "shim", sys.executable)
        threads = str(args.threads)
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTHONUNBUFFERED": "1"}
        original_env = dict(env)
        if stubs:
            original_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp / "shim"), env.get("PYTHONPATH")]))
        print(f"original: {original} (temporary copy; patched: {len(patches)}; stubbed: {', '.join(stubs) or 'none'})")
        print(
            f"{args.steps} steps, batch 256, eval every {args.eval_every}, {args.threads} thread(s), "
            f"{args.repeats} repeat(s), original's loader workers {args.workers}; {load_before}"
        )
        runs: dict[str, list[dict[str, Any]]] = {"original": [], "robust": []}
        for r in range(args.repeats):
            log = tmp / f"original-{r}" / "stderr.log"
            log.parent.mkdir()
            one = run_original(code, layout.parent, pct, args.steps, args.eval_every, args.workers, original_env, log)
            runs["original"].append(one)
            print(f"  original #{r}: {one['steps_per_s']:.2f} steps/s, test {one['test_acc']:.4f}", flush=True)
            out = tmp / f"robust-{r}"
            one = run_robust(data_root, layout, conflict_pct, args.steps, args.eval_every, args.seed + r, out, env)
            runs["robust"].append(one)
            print(f"  robust   #{r}: {one['steps_per_s']:.2f} steps/s, test {one['test_acc']:.4f}", flush=True)
            shutil.rmtree(out, ignore_errors=True)
        load_after = uptime()

    sides = {name: side_summary(side) for name, side in runs.items()}
    ratio = sides["robust"]["steps_per_s_median"] / sides["original"]["steps_per_s_median"]
    figures = {
        "steps": args.steps,
        "eval_every": args.eval_every,
        "batch_size": 256,
        "threads": args.threads,
        "repeats": args.repeats,
        "original_workers": args.workers,
        "data": {"layout": str(layout), "pct": pct, "counts": metadata.get("counts"), "source": metadata["options"]},
        "robust_preset": runs["robust"][0]["preset"],
        "original": sides["original"],
        "robust": sides["robust"],
        "ratio_robust_to_original": ratio,
        "target_ratio": 5.0,
        "target_met": ratio >= 5.0,
        "patches": patches,
        "stubs": stubs,
        "machine": {
            "torch": torch.__version__,
            "cpus": os.cpu_count(),
            "load_before": load_before,
            "load_after": load_after,
        },
    }
    print()
    print("| side     | steps/s (median) | best   | start-up | final test acc (median) |")
    print("|----------|-----------------:|-------:|---------:|------------------------:|")
    for name in ("original", "robust"):
        s = sides[name]
        print(
            f"| {name:<8} | {s['steps_per_s_median']:16.2f} | {s['steps_per_s_max']:6.2f} | "
            f"{s['startup_s_median']:7.1f}s | {s['test_acc_median']:23.4f} |"
        )
    print(f"\nrobust / original: {ratio:.2f}x (target >= 5x: {'met' if ratio >= 5 else 'NOT met'})")
    print(f"robust preset: {figures['robust_preset']}; load before: {load_before}\n             after:  {load_after}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=1), encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
