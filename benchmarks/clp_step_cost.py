"""Wall-clock cost of one CLP training step relative to one ERM step on the same batch.

CLP's step does a virtual step, a meta step on an augmented meta batch and the real step. Without
CF/F images and saliency that is one forward of the training batch (shared by the virtual and the
real step), one backward for the virtual gradient, a forward and a backward of the meta batch at
θ', one forward-mode product (about a forward and a backward) and the real step's backward: about
3.5 ERM steps. CF and F images triple the meta batch; the saliency term differentiates an input
gradient (double backward) on the training and the meta batch. Both methods are built on ``synthetic-waterbirds`` (small, generated) with the same
model (``cnn``), batch and data; each timing calls ``update`` on the same batch ``--steps`` times,
the two methods alternating ``--repeats`` times; medians are compared. Variants: CLP as configured
by its preset (metadata augmentation + saliency), without the saliency term (``lambda_=0``), and
without augmentation or saliency.

    python benchmarks/clp_step_cost.py [--steps 20] [--repeats 5] [--threads 2] [--image-size 32]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from robust.engine import Run
from robust.plugins import load_plugins
from robust.resolve import resolve_run_config

VARIANTS = {
    "erm": ("erm", []),
    "clp (CF/F meta images + saliency)": ("clp", []),
    "clp, no saliency": ("clp", ["lambda_=0"]),
    "clp, no CF/F images, no saliency": ("clp", ["lambda_=0", "cf_infill=none", "f_infill=none"]),
}


def build(method: str, sets: list[str], out: Path, args: argparse.Namespace) -> Run:
    data = [f"dataset.image_size={args.image_size}", "dataset.scale=0.1", "dataset.meta_per_class=16"]
    common = ["train.batch_size=32", "train.amp=off", "optimizer=adam", "lr=0.001", "weight_decay=0"]
    flags = {"epochs": 1, "seed": 0, "device": "cpu", "data_root": args.data_root}
    resolved = resolve_run_config(
        method, dataset="synthetic-waterbirds", model="cnn", sets=[*data, *common, *sets], flags=flags
    )
    return Run(resolved, out, quiet=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_plugins()
    with tempfile.TemporaryDirectory() as tmp:
        args.data_root = args.data_root or str(Path(tmp) / "data")
        runs = {
            name: build(m, sets, Path(tmp) / f"run{i}", args) for i, (name, (m, sets)) in enumerate(VARIANTS.items())
        }
        first = next(iter(runs.values()))
        batch = next(first._train_loader(first.method.phases()[0]).batches(torch.arange(32)))
        times: dict[str, list[float]] = {name: [] for name in runs}
        for repeat in range(args.repeats + 1):  # repeat 0 warms up
            for name, run in runs.items():
                started = time.perf_counter()
                for step in range(args.steps):
                    run.method.update(batch, step)
                    run.method.end_step()
                elapsed = (time.perf_counter() - started) / args.steps
                if repeat:
                    times[name].append(elapsed)
        erm = statistics.median(times["erm"])
        print(
            f"cpu, {args.threads} threads, batch 32, {args.image_size}px, cnn; median of {args.repeats} x {args.steps} steps"
        )
        for name, values in times.items():
            median = statistics.median(values)
            print(f"{name:36s} {1000 * median:8.1f} ms/step  {median / erm:5.2f}x ERM")


if __name__ == "__main__":
    main()
