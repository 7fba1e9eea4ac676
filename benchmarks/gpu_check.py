"""One command for the first GPU a session is lent: what robust does on it, in ratios and seconds.

    python benchmarks/gpu_check.py                       # on the GPU, about 5-8 minutes on an H100-class card
    python benchmarks/gpu_check.py --device cpu --small  # the same script on tiny sizes (CI runs it)

Four measurements, each side by side in one process, medians of ``--repeats``:

1. **ERM ResNet-50 on 224-px Waterbirds-like images** (the generated birds, ``synthetic-waterbirds``
   at 224 px), images per second of training:
   * *group_DRO's way*: JPEG files decoded by PIL per item in a ``DataLoader`` with workers, torchvision
     transforms (their Waterbirds training transform: RandomResizedCrop(224, scale 0.7-1), flip,
     ToTensor, Normalize), fp32, the model in its default memory format;
   * *bare fast loop*: the same images held on the device as uint8, batched by index, flipped and
     normalised on the device, bf16 autocast, channels_last: the ceiling;
   * *robust's engine*: ``robust run erm`` (``Run.fit``) on the same data with ``data_on_device=yes``
     and ``amp=bf16``: what users get.
2. **DisEnt on full-size generated Colored MNIST** (60,000 training images, the paper's
   ``cmnist-1pct`` preset, its MLP and batch 256): steps per second over ``--disent-steps`` and the
   projected time of the preset's 50,000-step schedule (target: under 60 s on an H100-class GPU).
3. **A CLP step against an ERM step** on the same batch (CLP's CPU preset on the generated birds:
   CF/F meta images and the saliency term), as benchmarks/clp_step_cost.py measures it.
4. **Peak GPU memory** of each part (``torch.cuda.max_memory_allocated``).

Writes one JSON (``--out``, default benchmarks/results/gpu_check-DEVICE.json) with the figures,
the machine (device name, torch version, ``uptime``'s load) and the options; prints a table.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from robust.device import resolve_device
from robust.engine import Run
from robust.plugins import load_plugins
from robust.resolve import resolve_run_config

ROOT = Path(__file__).resolve().parent
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# -- timing -----------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn: Callable[[], Any]) -> tuple[float, Any]:
    sync(device)
    started = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - started, result


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def load() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "uptime unavailable"


# -- 1. ERM ResNet-50 at 224 px ---------------------------------------------------------------


def bird_images(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    """The generated birds' training split as uint8 images (N, 3, S, S) and labels."""
    from robust.datasets import load_entry
    from robust.registry import get_registry

    entry = get_registry().get("dataset", "synthetic-waterbirds")
    bundle = load_entry(entry, {"image_size": args.image_size, "scale": args.scale}, args.data_root)
    train = bundle.splits["train"]
    return train.images[: args.images], train.labels[: args.images]


def build_resnet(args: argparse.Namespace, device: torch.device) -> torch.nn.Module:
    """The registry's model (ResNet-50 from scratch; ``cnn`` with --small), as the engine builds it."""
    from robust.models.classifier import build_registered_model
    from robust.registry import get_registry

    torch.manual_seed(0)
    options = {"weights": None} if args.model.startswith("resnet") else {}
    entry = get_registry().get("model", args.model)
    return build_registered_model(entry, options, 2, (3, args.image_size, args.image_size)).to(device)


def group_dro_loader(images: torch.Tensor, labels: torch.Tensor, work: Path, args: argparse.Namespace):
    """group_DRO's data path: JPEG files, PIL per item, torchvision transforms, DataLoader workers."""
    from PIL import Image
    from torchvision import transforms

    folder = work / "jpeg"
    folder.mkdir(exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        path = folder / f"{i}.jpg"
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(path, quality=90)
        paths.append(path)
    size = args.image_size
    transform = transforms.Compose(
        [
            transforms.RandomResizedCrop(
                size, scale=(0.7, 1.0), ratio=(0.75, 4 / 3), interpolation=transforms.InterpolationMode.BILINEAR
            ),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )

    class Files(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(paths)

        def __getitem__(self, i: int):
            with Image.open(paths[i]) as image:
                return transform(image.convert("RGB")), labels[i]

    return torch.utils.data.DataLoader(
        Files(), batch_size=args.batch_size, shuffle=True, num_workers=args.workers, drop_last=True
    )


def train_epoch_loader(model, loader, device: torch.device) -> int:
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
    model.train()
    seen = 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(y)
    return seen


def train_epoch_fast(model, images: torch.Tensor, labels: torch.Tensor, args, device: torch.device) -> int:
    """uint8 images on the device, batched by index, flipped and normalised there, bf16, channels_last."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
    model.train()
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    order = torch.randperm(len(labels), device=device)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    seen = 0
    for start in range(0, len(order) - args.batch_size + 1, args.batch_size):
        index = order[start : start + args.batch_size]
        x = images[index].float().div_(255)
        flip = torch.rand(len(index), device=device) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        x = ((x - mean) / std).contiguous(memory_format=torch.channels_last)
        with amp:
            loss = F.cross_entropy(model(x), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(index)
    return seen


def engine_run(
    method: str, dataset: str, sets: list[str], flags: dict[str, Any], out: Path, model: str | None = None
) -> Run:
    resolved = resolve_run_config(method, dataset=dataset, model=model, sets=sets, flags=flags)
    return Run(resolved, out, quiet=True)


def erm_resnet(args: argparse.Namespace, device: torch.device, work: Path) -> dict[str, Any]:
    images, labels = bird_images(args)
    figures: dict[str, list[float]] = {"group_dro": [], "fast": [], "engine": []}
    peaks: dict[str, float | None] = {}
    loader = group_dro_loader(images, labels, work, args)
    on_device = (images.to(device), labels.to(device))
    engine_sets = [
        f"dataset.image_size={args.image_size}",
        f"dataset.scale={args.scale}",
        f"train.batch_size={args.batch_size}",
        "train.data_on_device=yes",
        f"train.amp={'bf16' if device.type == 'cuda' else 'off'}",
        "train.keep_best=false",
        "train.augment=flip",
        "optimizer=sgd",
        "lr=0.001",
    ]
    for repeat in range(args.warmup + args.repeats):  # warm-up: cudnn autotuning, worker start
        reset_peak(device)
        model = build_resnet(args, device)
        seconds, seen = timed(device, lambda m=model: train_epoch_loader(m, loader, device))
        peaks["group_dro"] = peak_mib(device)
        if repeat >= args.warmup:
            figures["group_dro"].append(seen / seconds)
        reset_peak(device)
        model = build_resnet(args, device).to(memory_format=torch.channels_last)
        seconds, seen = timed(device, lambda m=model: train_epoch_fast(m, *on_device, args, device))
        peaks["fast"] = peak_mib(device)
        if repeat >= args.warmup:
            figures["fast"].append(seen / seconds)
        reset_peak(device)
        flags = {"epochs": 1, "seed": 0, "device": str(device), "data_root": args.data_root}
        run = engine_run("erm", "synthetic-waterbirds", engine_sets, flags, work / f"erm-{repeat}", args.model)
        summary = run.fit()
        peaks["engine"] = peak_mib(device)
        steps, wall = summary["train"]["steps"], summary["train"]["wall_time_s"]
        if repeat >= args.warmup:  # the engine's training wall time includes its per-epoch evaluation and checkpoint
            figures["engine"].append(steps * args.batch_size / wall)
    medians = {k: statistics.median(v) for k, v in figures.items()}
    return {
        "images_per_s": medians,
        "spread": {k: [min(v), max(v)] for k, v in figures.items()},
        "ratio_engine_to_group_dro": medians["engine"] / medians["group_dro"],
        "ratio_engine_to_fast": medians["engine"] / medians["fast"],
        "ratio_fast_to_group_dro": medians["fast"] / medians["group_dro"],
        "peak_mib": peaks,
        "images": len(labels),
        "note": "engine images/s count its training steps over its whole training wall time (evaluation included)",
    }


# -- 2. DisEnt on full-size Colored MNIST ------------------------------------------------------


def disent_cmnist(args: argparse.Namespace, device: torch.device, work: Path) -> dict[str, Any]:
    sets = [
        "preset=cmnist-1pct",
        f"dataset.n_train={args.cmnist_train}",
        f"train.eval_every_steps={args.disent_steps}",
        f"train.checkpoint_every_steps={args.disent_steps}",
        "train.keep_best=false",
    ]
    rates = []
    reset_peak(device)
    for repeat in range(args.warmup + args.repeats):
        flags = {"steps": args.disent_steps, "seed": 0, "device": str(device), "data_root": args.data_root}
        summary = engine_run("disent", "synthetic-cmnist", sets, flags, work / f"disent-{repeat}").fit()
        if repeat >= args.warmup:
            rates.append(summary["train"]["steps"] / summary["train"]["wall_time_s"])
    rate = statistics.median(rates)
    return {
        "steps_per_s": rate,
        "spread": [min(rates), max(rates)],
        "projected_50k_steps_s": 50_000 / rate,
        "target_s": 60.0,
        "training_images": args.cmnist_train,
        "peak_mib": peak_mib(device),
    }


# -- 3. a CLP step against an ERM step --------------------------------------------------------


def clp_vs_erm(args: argparse.Namespace, device: torch.device, work: Path) -> dict[str, Any]:
    data = ["dataset.image_size=32", "dataset.scale=0.1", "dataset.meta_per_class=16"]
    common = ["train.batch_size=32", "train.amp=off", "optimizer=adam", "lr=0.001", "weight_decay=0"]
    flags = {"epochs": 1, "seed": 0, "device": str(device), "data_root": args.data_root}
    runs = {
        name: engine_run(name, "synthetic-waterbirds", [*data, *common], flags, work / f"step-{name}", "cnn")
        for name in ("erm", "clp")
    }
    first = runs["erm"]
    batch = next(first._train_loader(first.method.phases()[0]).batches(torch.arange(32)))
    times: dict[str, list[float]] = {name: [] for name in runs}
    peaks: dict[str, float | None] = {}
    for repeat in range(args.warmup + args.repeats):
        for name, run in runs.items():
            reset_peak(device)

            def steps(run: Run = run) -> None:
                for step in range(args.clp_steps):
                    run.method.update(batch, step)
                    run.method.end_step()

            seconds, _ = timed(device, steps)
            peaks[name] = peak_mib(device)
            if repeat >= args.warmup:
                times[name].append(seconds / args.clp_steps)
    medians = {k: statistics.median(v) for k, v in times.items()}
    return {"step_s": medians, "ratio_clp_to_erm": medians["clp"] / medians["erm"], "peak_mib": peaks}


# -- the report -------------------------------------------------------------------------------


def table(result: dict[str, Any]) -> str:
    from rich.console import Console
    from rich.table import Table

    erm, disent, clp = result["erm_resnet"], result["disent_cmnist"], result["clp_step"]
    rows = [
        (
            "ERM " + result["options"]["model"] + ", group_DRO's loader (im/s)",
            f"{erm['images_per_s']['group_dro']:.0f}",
        ),
        ("ERM, bare fast loop: uint8 on device, bf16, channels_last (im/s)", f"{erm['images_per_s']['fast']:.0f}"),
        ("ERM, robust's engine (im/s)", f"{erm['images_per_s']['engine']:.0f}"),
        ("  engine / group_DRO's loader", f"{erm['ratio_engine_to_group_dro']:.2f}x"),
        ("  engine / bare fast loop", f"{erm['ratio_engine_to_fast']:.2f}x"),
        ("DisEnt, full-size Colored MNIST (steps/s)", f"{disent['steps_per_s']:.1f}"),
        ("  projected 50k-step schedule (s; target < 60)", f"{disent['projected_50k_steps_s']:.0f}"),
        ("CLP step / ERM step", f"{clp['ratio_clp_to_erm']:.2f}x"),
    ]
    peaks = {"ERM group_DRO": erm["peak_mib"].get("group_dro"), "ERM engine": erm["peak_mib"].get("engine")}
    peaks |= {"DisEnt": disent["peak_mib"], "CLP step": clp["peak_mib"].get("clp")}
    rows += [(f"peak GPU memory, {k} (MiB)", f"{v:.0f}") for k, v in peaks.items() if v is not None]
    out = Table(title=f"gpu_check on {result['machine']['device_name']} ({result['machine']['load']})")
    out.add_column("measure")
    out.add_column("value", justify="right")
    for row in rows:
        out.add_row(*row)
    buffer = io.StringIO()
    Console(file=buffer, width=110).print(out)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--small", action="store_true", help="tiny sizes: checks the script, measures nothing useful")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--out", default=None, help="JSON file (default benchmarks/results/gpu_check-DEVICE.json)")
    parser.add_argument("--data-root", default=None, help="where the generated datasets are cached")
    args = parser.parse_args()
    small = args.small
    args.model = "cnn" if small else "resnet50"
    args.image_size = 32 if small else 224
    args.scale = 0.02 if small else 1.0
    args.images = 64 if small else 4096
    args.batch_size = 16 if small else 128
    args.workers = 0 if small else min(8, os.cpu_count() or 1)
    args.cmnist_train = 500 if small else 60_000
    args.disent_steps = 20 if small else 2_000
    args.clp_steps = 2 if small else 20
    args.repeats = args.repeats or (1 if small else 3)
    args.warmup = 0 if small else 1
    device = resolve_device(args.device)
    load_plugins()
    torch.backends.cudnn.benchmark = device.type == "cuda"
    with tempfile.TemporaryDirectory(prefix="robust-gpu-check-") as tmp:
        work = Path(tmp)
        args.data_root = args.data_root or str(work / "data")
        started = time.perf_counter()
        result: dict[str, Any] = {
            "machine": {
                "device": str(device),
                "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                "torch": torch.__version__,
                "cpu_threads": torch.get_num_threads(),
                "load": load(),
            },
            "options": {k: v for k, v in vars(args).items() if k not in ("out", "data_root")},
        }
        result["erm_resnet"] = erm_resnet(args, device, work)
        result["disent_cmnist"] = disent_cmnist(args, device, work)
        result["clp_step"] = clp_vs_erm(args, device, work)
        result["seconds"] = round(time.perf_counter() - started, 1)
        result["machine"]["load_after"] = load()
    out = Path(args.out) if args.out else ROOT / "results" / f"gpu_check-{device.type}{'-small' if small else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(table(result))
    print(f"{result['seconds']:.0f} s; figures written to {out}")


if __name__ == "__main__":
    main()
