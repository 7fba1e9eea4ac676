"""The training engine's overhead, as a ratio to a hand-written PyTorch loop doing the same work.

Both sides train the registry's ``cnn`` model (built by the same call, from the same seed, so with
the same initial weights) with ERM: SGD (lr 0.01, momentum 0.9, weight decay 0), mean
cross-entropy, batch size 128, no augmentation, fp32, for ``--epochs`` epochs over the same
in-memory dataset, in the same sample order, and evaluate val and test after every epoch.

The dataset is random uint8 images with 10 classes (and a random 2-valued bias attribute, so
the engine also computes its group metrics as it would on a real benchmark). It is generated once,
before any timing, and handed to the engine by a throwaway dataset plugin registered in this script.

Timed per side (wall clock, ``torch.cuda.synchronize`` at the end on a GPU):

* hand: the loop below, from the first epoch to the last evaluation;
* engine: ``Run.fit()``, which also writes checkpoints/last.pt after every epoch,
  best-model checkpoints when a val metric improves, history.h5 and summary.json.

One-time setup (engine: ``resolve_run_config`` + ``Run(...)``; hand: building the model and the
optimiser and moving the data to the device) is excluded from the ratio and reported apart. The
sides alternate (hand, engine, hand, engine, ...) ``--repeats`` times after one short untimed
warm-up of each, and medians are compared.

    python benchmarks/engine_overhead.py [--epochs 3] [--repeats 3] [--threads 2] [--device auto]
    python benchmarks/engine_overhead.py --profile   # then cProfile one engine fit and one hand loop
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import io
import os
import pstats
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from robust import hookimpl
from robust.data import ArraySplit, DatasetBundle, DatasetInfo
from robust.device import resolve_device
from robust.engine import Run
from robust.errors import RobustError
from robust.plugins import load_plugins, pm
from robust.registry import get_registry, reset_registry
from robust.resolve import resolve_run_config
from robust.seeding import derive_seed

DATASET = "bench-random"
PLUGIN_NAME = "benchmark-engine-overhead"
NUM_CLASSES = 10
LR, MOMENTUM, WEIGHT_DECAY = 0.01, 0.9, 0.0
EVAL_BATCH_SIZE = 512  # the engine's default train.eval_batch_size
SEED = 0


# -- the data, and the throwaway plugin that hands it to the engine --------------------------------


def make_split(n: int, size: int, seed: int) -> ArraySplit:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=gen)
    bias = torch.randint(0, 2, (n,), generator=gen)
    images = torch.randint(0, 256, (n, 3, size, size), generator=gen, dtype=torch.uint8)
    return ArraySplit(labels=labels, groups=2 * labels + bias, bias=bias, images=images)


def make_splits(n_train: int, n_eval: int, size: int) -> dict[str, ArraySplit]:
    return {
        "train": make_split(n_train, size, 1),
        "val": make_split(n_eval, size, 2),
        "test": make_split(n_eval, size, 3),
    }


def make_info(size: int) -> DatasetInfo:
    return DatasetInfo(
        name=DATASET,
        num_classes=NUM_CLASSES,
        input_shape=(3, size, size),
        class_names=[str(c) for c in range(NUM_CLASSES)],
        group_names=[f"{c}_{b}" for c in range(NUM_CLASSES) for b in range(2)],
        bias_names=["0", "1"],
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        train_augment="none",
    )


class BenchPlugin:
    """Registers the pre-generated splits as a dataset (the factory only wraps them: no generation)."""

    def __init__(self, splits: dict[str, ArraySplit], size: int) -> None:
        self.splits = splits
        self.size = size

    def load(self, config, data_root) -> DatasetBundle:
        return DatasetBundle(make_info(self.size), dict(self.splits))

    @hookimpl
    def register_datasets(self, register):
        register(DATASET, self.load, description="random uint8 images (benchmark)", default_model="cnn")


def register(plugin: BenchPlugin) -> None:
    """As tests/conftest.py's ``registered``: load the installed plugins, add ours, rebuild the registry."""
    load_plugins()
    pm.register(plugin, name=PLUGIN_NAME)
    reset_registry()


def unregister() -> None:
    pm.unregister(name=PLUGIN_NAME)
    reset_registry()


# -- the hand-written loop ------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_model(width: int, size: int, device: torch.device) -> torch.nn.Module:
    """The registry's cnn, as the engine builds it (after the engine's torch.manual_seed(seed); its
    convolutions channels-last, the engine's default ``train.channels_last``)."""
    torch.manual_seed(SEED)
    entry = get_registry().get("model", "cnn")
    config = entry.load_config().model_validate({"width": width})
    model = entry.load()(config, num_classes=NUM_CLASSES, input_shape=(3, size, size))
    return model.to(memory_format=torch.channels_last).to(device)


@dataclass
class HandState:
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    data: dict[str, tuple[torch.Tensor, torch.Tensor]]  # split -> (uint8 images, labels) on the device
    mean: torch.Tensor
    std: torch.Tensor


def hand_setup(splits: dict[str, ArraySplit], width: int, size: int, device: torch.device) -> HandState:
    model = build_model(width, size, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    data = {name: (s.images.to(device), s.labels.to(device)) for name, s in splits.items()}
    mean = torch.tensor([0.5, 0.5, 0.5], device=device).view(1, 3, 1, 1)
    std = torch.tensor([0.25, 0.25, 0.25], device=device).view(1, 3, 1, 1)
    sync(device)
    return HandState(model, optimizer, data, mean, std)


def hand_loop(
    state: HandState, epochs: int, batch_size: int, device: torch.device, max_steps: int | None = None
) -> dict[str, float]:
    """What a careful user writes: device-resident uint8 data, per-epoch randperm, gather by index,
    /255, normalise, forward, CE, backward, step; then argmax accuracy on val and test."""
    model, optimizer, mean, std = state.model, state.optimizer, state.mean, state.std
    images, labels = state.data["train"]
    n = images.shape[0]
    steps = 0
    result: dict[str, float] = {}
    for epoch in range(epochs):
        model.train()
        # The engine's order seed for this epoch, so that both sides see the same batches.
        gen = torch.Generator().manual_seed(derive_seed(SEED, "order", "train", epoch))
        order = torch.randperm(n, generator=gen).to(device)
        loss_sum = torch.zeros((), device=device)
        count = 0
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            if idx.numel() == 1:  # BatchNorm cannot train on one sample (the engine drops it too)
                break
            x = (images[idx].float().div_(255.0) - mean) / std
            loss = F.cross_entropy(model(x), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()
            count += 1
            steps += 1
            if max_steps is not None and steps >= max_steps:
                break
        result["train/loss"] = loss_sum.item() / max(count, 1)
        model.eval()
        with torch.no_grad():
            for split in ("val", "test"):
                eval_images, eval_labels = state.data[split]
                correct = torch.zeros((), dtype=torch.long, device=device)
                for start in range(0, eval_images.shape[0], EVAL_BATCH_SIZE):
                    x = (eval_images[start : start + EVAL_BATCH_SIZE].float().div_(255.0) - mean) / std
                    correct += (model(x).argmax(dim=1) == eval_labels[start : start + EVAL_BATCH_SIZE]).sum()
                result[f"{split}/avg_acc"] = correct.item() / eval_images.shape[0]
        if max_steps is not None and steps >= max_steps:
            break
    sync(device)
    result["steps"] = steps
    return result


# -- the engine ------------------------------------------------------------------------------------


def engine_setup(out: Path, args: argparse.Namespace, device: torch.device, steps: int | None = None) -> Run:
    sets = [
        f"lr={LR}",
        f"momentum={MOMENTUM}",
        f"weight_decay={WEIGHT_DECAY}",
        "optimizer=sgd",
        "schedule=constant",
        f"train.batch_size={args.batch_size}",
        f"train.eval_batch_size={EVAL_BATCH_SIZE}",
        "train.amp=off",
        "train.channels_last=true",
        f"model.width={args.width}",
    ]
    # A run trains for epochs or for steps, never both (the warm-up's few steps replace the epochs).
    flags = {"epochs": None if steps else args.epochs, "steps": steps, "seed": SEED, "device": str(device)}
    resolved = resolve_run_config("erm", dataset=DATASET, model="cnn", sets=sets, flags=flags)
    run = Run(resolved, out, quiet=True)
    sync(device)
    return run


def engine_fit(run: Run, device: torch.device) -> dict[str, float]:
    summary = run.fit()
    sync(device)
    last = run.history[-1]["metrics"]
    return {
        "train/loss": last["train/loss"],
        "val/avg_acc": last["val/avg_acc"],
        "test/avg_acc": last["test/avg_acc"],
        "steps": summary["train"]["steps"],
    }


# -- measuring ---------------------------------------------------------------------------------------


def timed(fn, *args, **kwargs):
    """(wall seconds, value); the CPU seconds of this process (all threads) go to ``cpu_seconds``."""
    global cpu_seconds
    cpu_started, started = time.process_time(), time.perf_counter()
    value = fn(*args, **kwargs)
    wall = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    return wall, value


cpu_seconds = 0.0


# Work only the engine does, as (label, file suffix, function name) of the cProfile entries.
ENGINE_ONLY = [
    (
        "checkpoints: last.pt every epoch + best-model .pt (torch.save, fsync)",
        "robust/checkpoint.py",
        "save_checkpoint",
    ),
    ("history.h5 rewritten after each evaluation", "robust/results.py", "write_history"),
    ("metrics: accuracy_metrics on val and test", "robust/metrics.py", "accuracy_metrics"),
    ("summary.json", "robust/results.py", "write_summary"),
    ("finite-loss checks (_check_finite)", "robust/engine.py", "_check_finite"),
    ("per-step loss sums on the device (_accumulate)", "robust/engine.py", "_accumulate"),
    ("order/augmentation generators (derive_seed)", "robust/seeding.py", "generator"),
    ("lifecycle hooks (pluggy)", "pluggy/_caller.py", "__call__"),
]


def profile_both(args, splits, device, root: Path) -> None:
    """cProfile one hand loop and one engine fit; print where time goes and the engine-only work."""
    for label in ("hand", "engine"):
        if label == "hand":
            state = hand_setup(splits, args.width, args.image_size, device)
            call = functools.partial(hand_loop, state, args.epochs, args.batch_size, device)
        else:
            call = functools.partial(engine_fit, engine_setup(root / "engine-profile", args, device), device)
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.enable()
        call()
        profiler.disable()
        total = time.perf_counter() - started
        for order in ("cumulative", "tottime"):
            stream = io.StringIO()
            pstats.Stats(profiler, stream=stream).sort_stats(order).print_stats(args.profile_top)
            table = stream.getvalue()
            table = table[table.index("   ncalls") :] if "   ncalls" in table else table
            print(f"\n=== cProfile, {label}: {total:.2f} s under the profiler; top {args.profile_top} by {order} ===")
            print(table.rstrip())
        if label == "engine":
            raw = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
            print(f"\n=== engine-only work in that fit (cumulative s, share of the {total:.2f} s) ===")
            summed = 0.0
            for text, suffix, name in ENGINE_ONLY:
                seconds = sum(v[3] for k, v in raw.items() if k[0].endswith(suffix) and k[2] == name)
                calls = sum(v[1] for k, v in raw.items() if k[0].endswith(suffix) and k[2] == name)
                summed += seconds
                print(f"  {seconds:8.3f} s {100 * seconds / total:6.2f} %  {calls:6d} calls  {text}")
            print(f"  {summed:8.3f} s {100 * summed / total:6.2f} %  in all (hooks may overlap with the rest)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3, help="Training epochs of each side (default 3).")
    parser.add_argument("--repeats", type=int, default=3, help="Timed runs of each side, alternating (default 3).")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2).")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="Device (default auto).")
    parser.add_argument("--n-train", type=int, default=4096, help="Training images (default 4096).")
    parser.add_argument("--n-eval", type=int, default=1024, help="Images in val and in test each (default 1024).")
    parser.add_argument("--image-size", type=int, default=32, help="Images are 3 x SIZE x SIZE (default 32).")
    parser.add_argument(
        "--width", type=int, default=16, help="cnn model.width (default 16; the model's own default is 32)."
    )
    parser.add_argument("--batch-size", type=int, default=128, help="Training batch size (default 128).")
    parser.add_argument("--warmup-steps", type=int, default=3, help="Untimed warm-up steps of each side (default 3).")
    parser.add_argument("--target", type=float, default=1.05, help="Target engine/hand ratio (default 1.05).")
    parser.add_argument("--tmp-dir", help="Where the engine's run directories go (default: the system temp dir).")
    parser.add_argument(
        "--profile", action="store_true", help="After timing, cProfile one engine fit and one hand loop."
    )
    parser.add_argument("--profile-top", type=int, default=30, help="Rows of each profile table (default 30).")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
    except RobustError as exc:
        raise SystemExit(f"error: {exc.message}") from None
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # the engine's seed_everything sets it; give the hand loop the same
    started_all = time.perf_counter()
    splits = make_splits(args.n_train, args.n_eval, args.image_size)
    register(BenchPlugin(splits, args.image_size))
    steps_per_epoch = len(range(0, args.n_train, args.batch_size)) - (1 if args.n_train % args.batch_size == 1 else 0)
    total_steps = steps_per_epoch * args.epochs

    print("engine overhead: robust's Run.fit() vs a hand-written PyTorch loop")
    print(
        f"torch {torch.__version__}, device {device}, torch threads {torch.get_num_threads()}, "
        f"cpu count {os.cpu_count()}"
    )
    if hasattr(os, "getloadavg"):
        print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print(
        f"data: random uint8 3x{args.image_size}x{args.image_size}, {NUM_CLASSES} classes, train {args.n_train}, "
        f"val {args.n_eval}, test {args.n_eval}; held on the device; no augmentation"
    )
    print(f"model: registry 'cnn' (width {args.width}, depth 4), same seed -> same initial weights on both sides")
    print(
        f"training: ERM, SGD lr {LR} momentum {MOMENTUM} weight decay {WEIGHT_DECAY}, mean CE, fp32, "
        f"batch {args.batch_size}, {args.epochs} epochs x {steps_per_epoch} steps = {total_steps} steps, "
        "same sample order on both sides"
    )
    print(
        f"each epoch, both sides: train, then argmax accuracy on val and test (eval batch {EVAL_BATCH_SIZE}, "
        "model.eval(), no grad)"
    )
    print("  hand   also: F.cross_entropy (mean); one loss.item() per epoch; nothing written to disk")
    print(
        "  engine also: per-sample CE then .mean(); loss kept per step and checked finite every 25 steps; all "
        "its metrics (class, group, bias) on val and test; history.h5 rewritten after each evaluation; "
        "checkpoints/last.pt after every epoch and at the end; a best-model checkpoint per val rule that "
        "improved; summary.json (config.json is written in setup)"
    )
    print(
        "timed: hand = the loop (all epochs + evaluations); engine = Run.fit(). Setup is excluded from the "
        "ratio and shown apart (engine: resolve_run_config + Run(); hand: model + optimiser + data to device)."
    )
    print(f"engine run directories: under {args.tmp_dir or tempfile.gettempdir()} (deleted at the end)")
    print(
        f"order: 1 untimed warm-up of each side ({args.warmup_steps} steps + 1 evaluation), then "
        f"{args.repeats} x (hand, engine)"
    )
    print()

    hand_times, engine_times, hand_setups, engine_setups, hand_cpu, engine_cpu = [], [], [], [], [], []
    hand_result: dict[str, float] = {}
    engine_result: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="robust-bench-", dir=args.tmp_dir) as tmp:
        root = Path(tmp)
        try:
            state = hand_setup(splits, args.width, args.image_size, device)
            hand_loop(state, 1, args.batch_size, device, max_steps=args.warmup_steps)
            engine_fit(engine_setup(root / "engine-warmup", args, device, steps=args.warmup_steps), device)
            for repeat in range(args.repeats):
                setup_s, state = timed(hand_setup, splits, args.width, args.image_size, device)
                loop_s, hand_result = timed(hand_loop, state, args.epochs, args.batch_size, device)
                hand_cpu.append(cpu_seconds)
                hand_setups.append(setup_s)
                hand_times.append(loop_s)
                setup_s, run = timed(engine_setup, root / f"engine-{repeat}", args, device)
                fit_s, engine_result = timed(engine_fit, run, device)
                engine_cpu.append(cpu_seconds)
                engine_setups.append(setup_s)
                engine_times.append(fit_s)
                print(
                    f"repeat {repeat + 1}: hand {loop_s:7.2f} s (cpu {hand_cpu[-1]:6.2f} s, setup "
                    f"{hand_setups[-1]:.3f} s)   engine {fit_s:7.2f} s (cpu {engine_cpu[-1]:6.2f} s, setup "
                    f"{setup_s:.3f} s)   ratio {fit_s / loop_s:.3f}",
                    flush=True,
                )
            if args.profile:
                profile_both(args, splits, device, root)
        finally:
            unregister()

    hand_med, engine_med = statistics.median(hand_times), statistics.median(engine_times)
    ratio = engine_med / hand_med
    pair_ratios = [e / h for e, h in zip(engine_times, hand_times, strict=True)]
    print()
    print(f"{'':<8} {'median s':>9} {'min s':>8} {'steps/s':>8} {'cpu s':>8} {'setup s':>8}")
    for label, times, cpus, setups in (
        ("hand", hand_times, hand_cpu, hand_setups),
        ("engine", engine_times, engine_cpu, engine_setups),
    ):
        median = statistics.median(times)
        print(
            f"{label:<8} {median:>9.2f} {min(times):>8.2f} {total_steps / median:>8.2f} "
            f"{statistics.median(cpus):>8.2f} {statistics.median(setups):>8.3f}"
        )
    print(
        "(wall seconds; steps/s = training steps / median wall time, evaluation included; cpu s = median CPU "
        "seconds of this process, all threads; setup s = median, not in the timed figures)"
    )
    print()
    with_setup = (engine_med + statistics.median(engine_setups)) / (hand_med + statistics.median(hand_setups))
    print(
        f"ratio engine/hand (medians of wall time): {ratio:.3f}  target <= {args.target:g}  "
        f"-> {'meets' if ratio <= args.target else 'MISSES'} it"
    )
    print(
        f"  per-pair: {', '.join(f'{r:.3f}' for r in pair_ratios)}; of minima: {min(engine_times) / min(hand_times):.3f}; "
        f"of median CPU time: {statistics.median(engine_cpu) / statistics.median(hand_cpu):.3f}; "
        f"medians with setup included: {with_setup:.3f}"
    )
    print(
        "  (other processes on the machine slow either side at random: the minima and the CPU times are the "
        "figures least disturbed by them)"
    )
    spread = max(max(t) / min(t) for t in (hand_times, engine_times))
    if spread > 1.10:
        print(
            f"  WARNING: one side's timings vary by {100 * (spread - 1):.0f} % between repeats: something else "
            "was using the CPU. Trust the ratio of minima more, or rerun on a quiet machine / with more --repeats."
        )
    print(
        f"same work check (last repeat, last epoch): train loss hand {hand_result['train/loss']:.5f} "
        f"engine {engine_result['train/loss']:.5f}; val acc hand {hand_result['val/avg_acc']:.4f} "
        f"engine {engine_result['val/avg_acc']:.4f}; test acc hand {hand_result['test/avg_acc']:.4f} "
        f"engine {engine_result['test/avg_acc']:.4f}; steps hand {hand_result['steps']} "
        f"engine {engine_result['steps']}"
    )
    if hasattr(os, "getloadavg"):
        print("load average after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print(f"total wall time of this script: {time.perf_counter() - started_all:.0f} s")


if __name__ == "__main__":
    main()
