"""Calibrate the embedded benchmarks: ERM over 5 seeds on each generated dataset, one run at a time.

    python benchmarks/calibrate_embedded.py                      # both datasets, 5 seeds each
    python benchmarks/calibrate_embedded.py --dataset synthetic-waterbirds --seeds 2 --set dataset.seed=1

Each run is ``robust run erm`` with the dataset's benchmark protocol (PROTOCOLS below, also in
packages/datasets/DATASETS.md) under ``OMP_NUM_THREADS=2``. Printed per run: the wall and CPU
(user + sys) time and the load average (``uptime``) before it, since the machine may not be idle;
then mean +- s.d. over seeds of the metrics the targets of issue 20 name, under each selection rule.
The dataset is generated (and cached under the data root) before the first timed run, so the
times are those of training and evaluation, as every later run of a sweep sees them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The benchmark protocol: the ERM preset of the generated datasets (Adam 1e-3, no weight decay, batch 64)
# with these options, on version 2 of the data (the datasets' default is still version 1).
PROTOCOLS: dict[str, list[str]] = {
    "synthetic-waterbirds": ["--set", "dataset.version=2", "--epochs", "12", "--set", "schedule=cosine"],
    "synthetic-cmnist": ["--set", "dataset.version=2", "--epochs", "10", "--set", "train.batch_size=256"],
}
# (label, metric key in summary.json) reported per dataset; group metrics for the birds, the
# unbiased (colour-independent test) accuracy for the digits.
METRICS: dict[str, list[tuple[str, str]]] = {
    "synthetic-waterbirds": [
        ("avg", "test/avg_acc"),
        ("worst-group", "test/worst_group_acc"),
        ("train-weighted", "test/train_weighted_acc"),
    ],
    "synthetic-cmnist": [
        ("in-distribution (train-weighted)", "test/train_weighted_acc"),
        ("aligned", "test/aligned_acc"),
        ("unbiased", "test/unbiased_acc"),
        ("conflicting", "test/conflicting_acc"),
    ],
}
# Selection rules shown: worst-group val accuracy where val has usable groups (the birds: 4 groups of
# >= 200); the digits' 100 val cells have 20 images each, so the fixed schedule's last epoch and the
# group-label-free rule (val average; the val colours are independent of the digit).
RULES: dict[str, tuple[str, ...]] = {
    "synthetic-waterbirds": ("best_val_worst_group", "last"),
    "synthetic-cmnist": ("last", "best_val_avg"),
}


def uptime() -> str:
    """The ``uptime`` line (load averages over 1, 5, 15 minutes)."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def child_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_erm(dataset: str, seed: int, out: Path, extra: list[str], data_root: Path) -> dict:
    """One ``robust run erm``; returns its summary with the wall and CPU seconds it took."""
    command = ["robust", "run", "erm", "--dataset", dataset, "--seed", str(seed), "--device", "cpu"]
    command += [*PROTOCOLS[dataset], *extra, "--out", str(out), "--data-root", str(data_root), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    cpu, wall = child_cpu_seconds(), time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - wall, child_cpu_seconds() - cpu
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr}")
    summary = json.loads((out / "summary.json").read_text())
    return {"summary": summary, "wall_s": wall, "cpu_s": cpu}


def warm_cache(dataset: str, extra: list[str], data_root: Path) -> None:
    """Generate the dataset once (untimed), with the dataset options the runs will use."""
    options = [a.removeprefix("dataset.") for a in extra if a.startswith("dataset.")]
    command = ["robust", "data", "verify", dataset, *[x for option in options for x in ("--set", option)]]
    subprocess.run(command, env={**os.environ, "ROBUST_DATA": str(data_root)}, capture_output=True, check=False)


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} +- {100 * sd:.1f}"


def calibrate(dataset: str, seeds: int, extra: list[str], out: Path, data_root: Path) -> None:
    print(f"== {dataset}: erm {' '.join(PROTOCOLS[dataset] + extra)}, seeds 0..{seeds - 1}", flush=True)
    warm_cache(dataset, [*PROTOCOLS[dataset], *extra], data_root)
    runs = []
    for seed in range(seeds):
        load = uptime()
        run = run_erm(dataset, seed, out / dataset / f"seed{seed}", extra, data_root)
        runs.append(run)
        last = run["summary"]["selection"]["last"]["metrics"]
        shown = ", ".join(f"{label} {100 * last[key]:.1f}" for label, key in METRICS[dataset] if key in last)
        print(
            f"seed {seed}: wall {run['wall_s']:.0f} s, cpu (user+sys) {run['cpu_s']:.0f} s; last: {shown}\n"
            f"    before: {load}\n    after:  {uptime()}",
            flush=True,
        )
    for rule in RULES[dataset]:
        chosen = [r["summary"]["selection"].get(rule) for r in runs]
        if any(c is None for c in chosen):
            continue
        parts = []
        for label, key in METRICS[dataset]:
            values = [c["metrics"][key] for c in chosen if key in c["metrics"]]
            if len(values) == len(chosen):
                parts.append(f"{label} {mean_sd(values)}")
        print(f"{rule}: " + ", ".join(parts))
    walls, cpus = [r["wall_s"] for r in runs], [r["cpu_s"] for r in runs]
    print(f"wall per run {statistics.mean(walls):.0f} s (max {max(walls):.0f}), cpu {statistics.mean(cpus):.0f} s\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=[*PROTOCOLS, "all"], default="all")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="Passed to robust run.")
    parser.add_argument("--out", type=Path, default=None, help="Run directories (default: a temporary folder).")
    parser.add_argument("--data-root", type=Path, default=None, help="Default: $ROBUST_DATA or a temporary folder.")
    args = parser.parse_args()
    extra = [x for s in args.set for x in ("--set", s)]
    with tempfile.TemporaryDirectory(prefix="robust-calibrate-") as tmp:
        out = args.out or Path(tmp) / "runs"
        data_root = args.data_root or Path(os.environ.get("ROBUST_DATA") or Path(tmp) / "data")
        for dataset in PROTOCOLS if args.dataset == "all" else [args.dataset]:
            calibrate(dataset, args.seeds, extra, out, data_root)


if __name__ == "__main__":
    main()
