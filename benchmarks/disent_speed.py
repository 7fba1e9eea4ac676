"""Steps per second of ``robust run disent`` (or ``lff``) against a hand-written loop on the same data.

Both sides train on ``synthetic-cmnist`` (generated on first use under ``--data-root``, default a
temporary folder) with the method's ``synthetic-cmnist`` preset: 100-100-16 MLPs on inputs / 255,
Adam (lr 0.01), batch 256 with the last incomplete batch dropped, GCE (the reference surrogate) for
the biased network, and cross-entropy weighted by the relative difficulty from per-sample loss
EMAs (α 0.7, class-wise max) for the debiased one; both evaluate val and test every
``--eval-every`` steps.

* ``--method disent``: two branches whose ``Linear(32, 10)`` heads read the concatenated features,
  feature swapping after ``--curr-step``, and the delayed step-LR decay;
* ``--method lff``: two independent MLPs (each with its own ``Linear(16, 10)`` head), no schedule.

* hand: what a careful user writes in one function: device-resident data, per-epoch randperm,
  the EMAs as plain tensors, the losses inline, one ``.item()`` per evaluation;
* engine: ``Run.fit()``, which also checkpoints every ``2 * eval_every`` steps, keeps every logged
  loss per step and checks them every 25, computes every group metric and writes history.h5 and
  summary.json.

Both sides start from the same weights, see the same batches and draw the same swap permutations,
so they end with the same test accuracy (printed as a check). Set-up (data loading, building
models) is excluded from both timings. After one short untimed warm-up of each side, the sides
alternate ``--repeats`` times; the script prints medians, minima and CPU time (the steadiest
figures on a machine shared with other jobs) and their ratios.

    python benchmarks/disent_speed.py [--method disent|lff] [--steps 1000] [--repeats 3] [--threads 2]
    python benchmarks/disent_speed.py --method lff --count   # operators and Python calls per step instead
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import os
import pstats
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from robust.device import resolve_device
from robust.engine import Run
from robust.plugins import load_plugins
from robust.registry import get_registry
from robust.resolve import resolve_run_config
from robust.seeding import derive_seed

SEED = 0
LR, BATCH, ALPHA, Q = 0.01, 256, 0.7, 0.7
LAMBDA_DIS, LAMBDA_SWAP_B, LAMBDA_SWAP, GAMMA = 10.0, 10.0, 1.0, 0.5
EVAL_BATCH = 512


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def mlp(device: torch.device, concat_head: bool) -> torch.nn.Module:
    """The registry's 100-100-16 MLP; DisEnt's branches get a head over both branches' features."""
    entry = get_registry().get("model", "mlp")
    config = entry.load_config().model_validate({"hidden_sizes": [100, 100, 16], "input_scale": 1 / 255})
    model = entry.load()(config, num_classes=10, input_shape=(3, 28, 28))
    if concat_head:
        model.head = torch.nn.Linear(32, 10)
    return model.to(device)


def hand_setup(run: Run, method: str, device: torch.device):
    """Both networks (built as the engine builds them after seeding) and the data the engine loaded."""
    torch.manual_seed(SEED)
    first, second = mlp(device, method == "disent"), mlp(device, method == "disent")
    data = {name: (s.images.to(device), s.labels.to(device)) for name, s in run.data.splits.items()}
    sync(device)
    return first, second, data


def gce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The references' GCE: CE times detached q * p_y^q."""
    p = logits.softmax(1).gather(1, target[:, None]).squeeze(1).detach()
    return F.cross_entropy(logits, target, reduction="none") * (Q * p**Q)


class Difficulty:
    """The per-sample loss EMAs of the biased (b) and debiased (d) network, and W = b / (b + d)."""

    def __init__(self, labels: torch.Tensor) -> None:
        self.labels = labels
        self.ema = {k: torch.zeros(len(labels), device=labels.device) for k in ("b", "d")}
        self.seen = torch.zeros(len(labels), device=labels.device)

    @torch.no_grad()
    def weight(self, idx: torch.Tensor, y: torch.Tensor, ce_b: torch.Tensor, ce_d: torch.Tensor) -> torch.Tensor:
        norm = {}
        for key, ce in (("b", ce_b), ("d", ce_d)):
            ema = self.ema[key]
            ema[idx] = ALPHA * ema[idx] + (1 - ALPHA * self.seen[idx]) * ce
        self.seen[idx] = 1
        for key, ema in self.ema.items():
            peak = torch.zeros(10, device=ema.device).scatter_reduce(0, self.labels, ema, "amax")
            norm[key] = ema[idx] / peak[y]
        return norm["b"] / (norm["b"] + norm["d"] + 1e-8)


@torch.no_grad()
def accuracies(predict, data: dict, accs: dict) -> None:
    for split in ("val", "test"):
        ims, labs = data[split]
        correct = torch.zeros((), dtype=torch.long, device=labs.device)
        for s in range(0, len(labs), EVAL_BATCH):
            correct += (
                predict(ims[s : s + EVAL_BATCH].float().div_(255.0)).argmax(1) == labs[s : s + EVAL_BATCH]
            ).sum()
        accs[f"{split}/avg_acc"] = correct.item() / len(labs)


def hand_loop(
    method: str, first, second, data, steps: int, curr_step: int, eval_every: int, device: torch.device
) -> dict:
    """DisEnt (first = intrinsic, second = bias branch) or LfF (first = biased, second = debiased)."""
    opt_1 = torch.optim.Adam(first.parameters(), lr=LR)
    opt_2 = torch.optim.Adam(second.parameters(), lr=LR)
    scheds = []
    if method == "disent":

        def factor(s: int) -> float:
            return GAMMA ** (max(0, s - curr_step) // curr_step)

        scheds = [torch.optim.lr_scheduler.LambdaLR(opt, factor) for opt in (opt_1, opt_2)]

        def predict(x):
            return first.head(torch.cat([first.features(x), second.features(x)], 1))
    else:
        predict = second
    images, labels = data["train"]
    n = len(labels)
    difficulty = Difficulty(labels)
    step, epoch, accs = 0, 0, {}
    while step < steps:
        gen = torch.Generator().manual_seed(derive_seed(SEED, "order", "train", epoch))
        order = torch.randperm(n, generator=gen).to(device)
        for start in range(0, n - BATCH + 1, BATCH):
            idx = order[start : start + BATCH]
            x, y = images[idx].float().div_(255.0), labels[idx]
            if method == "disent":
                z_l, z_b = first.features(x), second.features(x)
                pred_l = first.head(torch.cat([z_l, z_b.detach()], 1))
                pred_b = second.head(torch.cat([z_l.detach(), z_b], 1))
                ce_l = F.cross_entropy(pred_l, y, reduction="none")
                ce_b = F.cross_entropy(pred_b, y, reduction="none")
                w = difficulty.weight(idx, y, ce_b.detach(), ce_l.detach())
                loss = (w * ce_l).mean() + LAMBDA_DIS * gce(pred_b, y).mean()
                if step > curr_step:
                    perm = torch.randperm(BATCH, device=device)
                    z_b_swap = z_b[perm]
                    swap_l = first.head(torch.cat([z_l, z_b_swap.detach()], 1))
                    swap_b = second.head(torch.cat([z_l.detach(), z_b_swap], 1))
                    loss_swap = (w * F.cross_entropy(swap_l, y, reduction="none")).mean()
                    loss = loss + LAMBDA_SWAP * (loss_swap + LAMBDA_SWAP_B * gce(swap_b, y[perm]).mean())
            else:
                pred_b, pred_d = first(x), second(x)
                ce_b = F.cross_entropy(pred_b, y, reduction="none")
                ce_d = F.cross_entropy(pred_d, y, reduction="none")
                w = difficulty.weight(idx, y, ce_b.detach(), ce_d.detach())
                loss = gce(pred_b, y).mean() + (w * ce_d).mean()
            opt_1.zero_grad(set_to_none=True)
            opt_2.zero_grad(set_to_none=True)
            loss.backward()
            opt_1.step()
            opt_2.step()
            for sched in scheds:
                sched.step()
            step += 1
            if step % eval_every == 0 or step == steps:
                first.eval(), second.eval()
                accuracies(predict, data, accs)
                first.train(), second.train()
            if step >= steps:
                break
        epoch += 1
    sync(device)
    return {"steps": step, **accs}


def engine_run(out: Path, args: argparse.Namespace, device: torch.device, steps: int) -> Run:
    sets = [
        "preset=synthetic-cmnist",
        f"train.eval_every_steps={args.eval_every}",
        f"train.checkpoint_every_steps={2 * args.eval_every}",
        f"train.eval_batch_size={EVAL_BATCH}",
        "train.amp=off",
    ]
    if args.method == "disent":
        sets += [f"curr_step={args.curr_step}", f"lr_decay_step={args.curr_step}"]
    flags = {"steps": steps, "seed": SEED, "device": str(device), "data_root": args.data_root}
    resolved = resolve_run_config(args.method, dataset="synthetic-cmnist", sets=sets, flags=flags)
    return Run(resolved, out, quiet=True)


def timed(fn, *args):
    """(wall seconds, CPU seconds of this process, value)."""
    cpu, wall = time.process_time(), time.perf_counter()
    value = fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu, value


def prepare(args: argparse.Namespace, device: torch.device, out: Path, steps: int) -> dict[str, Callable[[], dict]]:
    """Both sides, set up and ready to train from the same weights and the same RNG state."""
    run = engine_run(out, args, device, steps)
    rng = torch.get_rng_state()  # the engine's, after seeding and building its networks
    first, second, data = hand_setup(run, args.method, device)

    def hand() -> dict:
        return hand_loop(args.method, first, second, data, steps, args.curr_step, args.eval_every, device)

    def engine() -> dict:
        torch.set_rng_state(rng)  # the swap permutations the hand loop drew, drawn again
        summary = run.fit()
        sync(device)
        last = summary["selection"]["last"]["metrics"]
        return {"steps": summary["train"]["steps"], "test/avg_acc": last["test/avg_acc"]}

    return {"hand": hand, "engine": engine}


def pair(args: argparse.Namespace, device: torch.device, out: Path, steps: int) -> dict[str, tuple[float, float, dict]]:
    """One hand loop, then one engine fit."""
    sides = prepare(args, device, out, steps)
    hand = timed(sides["hand"])
    return {"hand": hand, "engine": timed(sides["engine"])}


def count(args: argparse.Namespace, device: torch.device, root: Path) -> None:
    """Per training step, what each side asks of the machine, whatever its load: the aten operators it
    dispatches (torch.profiler; nested ones included, so a ``.float()`` that copies nothing counts too)
    and its Python function calls (cProfile). From runs of 40 and 140 steps with one evaluation at the
    end and swapping from step 10, so that set-up and evaluation cancel out."""
    args = argparse.Namespace(**{**vars(args), "eval_every": 10**6, "curr_step": 10})
    per_step: dict[str, dict[str, float]] = {}
    for side in ("hand", "engine"):
        ops: dict[int, collections.Counter] = {}
        calls: dict[int, int] = {}
        for steps in (40, 140):
            fn = prepare(args, device, root / f"count-{side}-ops-{steps}", steps)[side]
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                fn()
            ops[steps] = collections.Counter(e.name for e in prof.events() if e.name.startswith("aten::"))
            fn = prepare(args, device, root / f"count-{side}-calls-{steps}", steps)[side]
            profiler = cProfile.Profile()
            profiler.runcall(fn)
            calls[steps] = sum(row[1] for row in pstats.Stats(profiler).stats.values())  # type: ignore[attr-defined]
        per_step[side] = {k: (ops[140][k] - ops[40][k]) / 100 for k in ops[140]}
        total = sum(per_step[side].values())
        print(f"{side:6s}: {total:7.1f} aten ops per step, {(calls[140] - calls[40]) / 100:7.1f} Python calls per step")
    extra = {
        k: per_step["engine"].get(k, 0) - per_step["hand"].get(k, 0) for k in {*per_step["hand"], *per_step["engine"]}
    }
    shown = sorted((k for k, v in extra.items() if abs(v) >= 0.5), key=lambda k: -abs(extra[k]))
    print("engine - hand, per step: " + ", ".join(f"{k.removeprefix('aten::')} {extra[k]:+.1f}" for k in shown))


def load() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()) if hasattr(os, "getloadavg") else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=["disent", "lff"], default="disent")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--curr-step", type=int, default=200, help="DisEnt: swapping and LR decay start here.")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup-steps", type=int, default=20, help="Untimed warm-up steps of each side.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-root", default=None)
    parser.add_argument(
        "--count", action="store_true", help="Instead of timing: aten ops and Python calls per step of each side."
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    load_plugins()
    print(f"{args.method}: engine vs hand, device {device}, {args.threads} threads, cpu count {os.cpu_count()}")
    print(f"before: {load()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        args.data_root = args.data_root or os.path.join(tmp, "data")
        if args.count:
            count(args, device, Path(tmp))
            return
        pair(args, device, Path(tmp) / "warm-up", args.warmup_steps)
        wall: dict[str, list[float]] = {"hand": [], "engine": []}
        cpu: dict[str, list[float]] = {"hand": [], "engine": []}
        results: dict[str, dict] = {}
        for repeat in range(args.repeats):
            timings = pair(args, device, Path(tmp) / f"run-{repeat}", args.steps)
            for side, (seconds, cpu_seconds, result) in timings.items():
                wall[side].append(seconds)
                cpu[side].append(cpu_seconds)
                results[side] = result
            print(
                f"repeat {repeat + 1}: hand {wall['hand'][-1]:.2f} s (cpu {cpu['hand'][-1]:.2f} s), engine "
                f"{wall['engine'][-1]:.2f} s (cpu {cpu['engine'][-1]:.2f} s), ratio "
                f"{wall['engine'][-1] / wall['hand'][-1]:.3f}",
                flush=True,
            )
    print(f"{args.steps} steps, batch {BATCH}, eval every {args.eval_every}, {args.repeats} alternating repeats")
    for side in ("hand", "engine"):
        median = statistics.median(wall[side])
        print(
            f"{side:6s}: {args.steps / median:7.1f} steps/s (median {median:.2f} s, min {min(wall[side]):.2f} s, "
            f"median cpu {statistics.median(cpu[side]):.2f} s); final test acc {results[side]['test/avg_acc']:.4f}"
        )
    ratios = {
        "medians": statistics.median(wall["engine"]) / statistics.median(wall["hand"]),
        "minima": min(wall["engine"]) / min(wall["hand"]),
        "median cpu time": statistics.median(cpu["engine"]) / statistics.median(cpu["hand"]),
    }
    print("engine / hand: " + ", ".join(f"{k} {v:.3f}x" for k, v in ratios.items()))
    pairs = [e / h for e, h in zip(wall["engine"], wall["hand"], strict=True)]
    print(f"  per pair: {', '.join(f'{r:.3f}' for r in pairs)}")
    same = results["hand"]["test/avg_acc"] == results["engine"]["test/avg_acc"]
    print(f"same final test accuracy on both sides: {'yes' if same else 'NO'}")
    print(f"after: {load()}")


if __name__ == "__main__":
    main()
