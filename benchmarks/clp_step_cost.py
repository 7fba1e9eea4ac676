"""Wall-clock cost of one CLP training step relative to one ERM step on the same batch.

CLP's step, in passes over a batch (F a forward, B ≈ 2F a backward; an ERM step is F + B ≈ 3F): the
training batch's forward at θ (F, shared by the virtual and the real step), the virtual gradient
Jᵀr (B), the meta batch's forward and backward at θ' (F + B: CF and F images take places in the meta
batch under ``meta_batch_counts=images``, the default, so this is one ERM step whatever the infills;
three under ``originals``), the forward-mode product J v (about 3F: besides the primal, a tangent
convolution for the weights and one for the activations) and the real step's backward (B): about
11F ≈ 3.7 ERM steps for the exact meta-gradient (17F ≈ 5.7 under ``originals``); the rest is the ten
characteristics, the perturbation network and BatchNorm's buffer copies. The saliency term
differentiates an input gradient (double backward) on the training and the meta batch.
Both methods are built on ``synthetic-waterbirds`` (small, generated) with the same
model (``cnn``), batch and data; each timing calls ``update`` on the same batch ``--steps`` times,
the two methods alternating ``--repeats`` times; medians are compared. Variants: CLP as configured
by its preset (metadata augmentation + saliency), without the saliency term (``lambda_=0``), and
without augmentation or saliency.

    python benchmarks/clp_step_cost.py [--steps 20] [--repeats 5] [--threads 2] [--image-size 32]
"""

from __future__ import annotations

import argparse
import os
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
    "clp, no saliency, meta_batch_counts=originals": ("clp", ["lambda_=0", "meta_batch_counts=originals"]),
    "erm, channels_last=false": ("erm", ["train.channels_last=false"]),
    "clp, no saliency, channels_last=false": ("clp", ["lambda_=0", "train.channels_last=false"]),
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
            f"cpu, {args.threads} threads, batch 32, {args.image_size}px, cnn; median (min-max) of {args.repeats} x "
            f"{args.steps} steps; load: {os.getloadavg()[0]:.2f}"
        )
        for name, values in times.items():
            median = statistics.median(values)
            spread = f"({1000 * min(values):.1f}-{1000 * max(values):.1f})"
            print(f"{name:46s} {1000 * median:7.1f} ms/step {spread:14s} {median / erm:5.2f}x ERM")
        full, bare = (statistics.median(times[k]) for k in ("clp (CF/F meta images + saliency)", "clp, no saliency"))
        print(f"saliency term's share of the CLP step: {100 * (full - bare) / full:.0f} %")


if __name__ == "__main__":
    main()
