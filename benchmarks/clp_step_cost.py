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

``--engine``: the engine's overhead for CLP instead (issue 21, target 1). ``Run.fit()`` of one epoch
(its batching, logging, per-epoch evaluation, checkpoint, history and summary) against a hand loop
that draws the same number of batches from the same in-memory loader, calls the same
``CLP.update`` and ``end_step`` on each and evaluates once, both timed from the first step to the
evaluation (set-up excluded), alternating ``--repeats`` times; the hand loop is CLP's whole step,
so the ratio is the engine's share around it.

    python benchmarks/clp_step_cost.py --engine [--scale 0.2] [--repeats 3] [--threads 2]
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
    data = [f"dataset.image_size={args.image_size}", f"dataset.scale={args.scale}", "dataset.meta_per_class=16"]
    common = ["train.batch_size=32", "train.amp=off", "optimizer=adam", "lr=0.001", "weight_decay=0"]
    flags = {"epochs": 1, "seed": 0, "device": "cpu", "data_root": args.data_root}
    resolved = resolve_run_config(
        method, dataset="synthetic-waterbirds", model="cnn", sets=[*data, *common, *sets], flags=flags
    )
    return Run(resolved, out, quiet=True)


def engine_overhead(args: argparse.Namespace, tmp: Path) -> None:
    hand_times, engine_times, steps = [], [], 0
    for repeat in range(args.repeats + 1):  # repeat 0 warms up
        hand = build("clp", [], tmp / f"hand{repeat}", args)
        loader = hand._train_loader(hand.method.phases()[0])
        steps = len(hand.data.splits["train"]) // loader.batch_size  # the epoch, its last batch dropped
        order = torch.randperm(len(hand.data.splits["train"]), generator=torch.Generator().manual_seed(repeat))
        started = time.perf_counter()
        for step, batch in enumerate(loader.batches(order[: steps * loader.batch_size])):
            hand.method.update(batch, step)
            hand.method.end_step()
        hand.evaluate_splits()
        hand_seconds = time.perf_counter() - started
        engine = build("clp", [], tmp / f"engine{repeat}", args)
        summary = engine.fit()
        assert summary["train"]["steps"] == steps, (summary["train"]["steps"], steps)
        if repeat:
            hand_times.append(hand_seconds)
            engine_times.append(summary["train"]["wall_time_s"])
    hand_median, engine_median = statistics.median(hand_times), statistics.median(engine_times)
    print(
        f"cpu, {args.threads} threads, CLP preset options, batch 32, {args.image_size}px, cnn, one epoch of {steps} "
        f"steps + evaluation; median of {args.repeats}; load: {os.getloadavg()[0]:.2f}"
    )
    print(f"hand loop (CLP.update)  {hand_median:7.2f} s  ({min(hand_times):.2f}-{max(hand_times):.2f})")
    print(f"engine (Run.fit)        {engine_median:7.2f} s  ({min(engine_times):.2f}-{max(engine_times):.2f})")
    ratios = [e / h for e, h in zip(engine_times, hand_times, strict=True)]
    print(f"engine / hand: {engine_median / hand_median:.3f} (per pair: {', '.join(f'{r:.3f}' for r in ratios)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--scale", type=float, default=0.1, help="dataset.scale of the generated birds")
    parser.add_argument("--engine", action="store_true", help="the engine's overhead for CLP instead")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_plugins()
    with tempfile.TemporaryDirectory() as tmp:
        args.data_root = args.data_root or str(Path(tmp) / "data")
        if args.engine:
            engine_overhead(args, Path(tmp))
            return
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
