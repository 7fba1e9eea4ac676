"""Steps per second of ``robust run disent`` against a hand-written DisEnt loop on the same data.

Both sides train DisEnt's CMNIST setting on ``synthetic-cmnist`` (generated on first use under
``--data-root``, default a temporary folder): two 100-100-16 MLPs on inputs / 255, each with a
``Linear(32, 10)`` head over the concatenated features, Adam (lr 0.01), batch 256 with the last
incomplete batch dropped, GCE (the reference surrogate) for the bias branch, relative-difficulty
weights from per-sample loss EMAs (α 0.7, class-wise max), feature swapping after ``curr_step``,
and the delayed step-LR decay; both evaluate val and test every ``--eval-every`` steps.

* hand: what a careful user writes in one function: device-resident data, per-epoch randperm,
  the EMA as two plain tensors, the losses inline;
* engine: ``Run.fit()`` with the ``disent`` method, which also checkpoints every
  ``2 * eval_every`` steps, computes every group metric and writes history.h5 and summary.json.

Set-up (data loading, building models) is excluded from both timings. The sides alternate
``--repeats`` times after one untimed warm-up of each, and medians are compared.

    python benchmarks/disent_speed.py [--steps 1000] [--repeats 3] [--threads 2] [--device auto]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
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


def branch(device: torch.device) -> torch.nn.Module:
    entry = get_registry().get("model", "mlp")
    config = entry.load_config().model_validate({"hidden_sizes": [100, 100, 16], "input_scale": 1 / 255})
    model = entry.load()(config, num_classes=10, input_shape=(3, 28, 28))
    model.head = torch.nn.Linear(32, 10)
    return model.to(device)


def hand_setup(run: Run, device: torch.device):
    """Models, optimizers and device-resident data (the data the engine loaded, same arrays)."""
    torch.manual_seed(SEED)
    model_l, model_b = branch(device), branch(device)
    data = {name: (s.images.to(device), s.labels.to(device)) for name, s in run.data.splits.items()}
    sync(device)
    return model_l, model_b, data


def hand_loop(model_l, model_b, data, steps: int, curr_step: int, eval_every: int, device: torch.device) -> dict:
    opt_l = torch.optim.Adam(model_l.parameters(), lr=LR)
    opt_b = torch.optim.Adam(model_b.parameters(), lr=LR)

    def factor(s: int) -> float:
        return GAMMA ** (max(0, s - curr_step) // curr_step)

    sched_l = torch.optim.lr_scheduler.LambdaLR(opt_l, factor)
    sched_b = torch.optim.lr_scheduler.LambdaLR(opt_b, factor)
    images, labels = data["train"]
    n = len(labels)
    ema = {k: torch.zeros(n, device=device) for k in ("l", "b")}
    seen = torch.zeros(n, device=device)
    step, epoch, accs = 0, 0, {}
    while step < steps:
        gen = torch.Generator().manual_seed(derive_seed(SEED, "order", "train", epoch))
        order = torch.randperm(n, generator=gen).to(device)
        for start in range(0, n - BATCH + 1, BATCH):
            idx = order[start : start + BATCH]
            x, y = images[idx].float().div_(255.0), labels[idx]
            z_l, z_b = model_l.features(x), model_b.features(x)
            pred_l = model_l.head(torch.cat([z_l, z_b.detach()], 1))
            pred_b = model_b.head(torch.cat([z_l.detach(), z_b], 1))
            ce_l = F.cross_entropy(pred_l, y, reduction="none")
            ce_b = F.cross_entropy(pred_b, y, reduction="none")
            with torch.no_grad():
                for key, ce in (("l", ce_l), ("b", ce_b)):
                    ema[key][idx] = ALPHA * ema[key][idx] + (1 - ALPHA * seen[idx]) * ce
                seen[idx] = 1
                norm = {}
                for key in ("l", "b"):
                    peak = torch.zeros(10, device=device).scatter_reduce(0, labels, ema[key], "amax")
                    norm[key] = ema[key][idx] / peak[y]
                w = norm["b"] / (norm["b"] + norm["l"] + 1e-8)

            def gce(logits, target):
                p = logits.softmax(1).gather(1, target[:, None]).squeeze(1).detach()
                return F.cross_entropy(logits, target, reduction="none") * Q * p**Q

            loss = (w * ce_l).mean() + LAMBDA_DIS * gce(pred_b, y).mean()
            if step > curr_step:
                perm = torch.randperm(BATCH, device=device)
                z_b_swap = z_b[perm]
                swap_l = model_l.head(torch.cat([z_l, z_b_swap.detach()], 1))
                swap_b = model_b.head(torch.cat([z_l.detach(), z_b_swap], 1))
                loss_swap = (w * F.cross_entropy(swap_l, y, reduction="none")).mean()
                loss = loss + LAMBDA_SWAP * (loss_swap + LAMBDA_SWAP_B * gce(swap_b, y[perm]).mean())
            opt_l.zero_grad(set_to_none=True)
            opt_b.zero_grad(set_to_none=True)
            loss.backward()
            opt_l.step()
            opt_b.step()
            sched_l.step()
            sched_b.step()
            step += 1
            if step % eval_every == 0 or step == steps:
                model_l.eval(), model_b.eval()
                with torch.no_grad():
                    for split in ("val", "test"):
                        ims, labs = data[split]
                        correct = torch.zeros((), dtype=torch.long, device=device)
                        for s in range(0, len(labs), EVAL_BATCH):
                            xe = ims[s : s + EVAL_BATCH].float().div_(255.0)
                            logits = model_l.head(torch.cat([model_l.features(xe), model_b.features(xe)], 1))
                            correct += (logits.argmax(1) == labs[s : s + EVAL_BATCH]).sum()
                        accs[f"{split}/avg_acc"] = correct.item() / len(labs)
                model_l.train(), model_b.train()
            if step >= steps:
                break
        epoch += 1
    sync(device)
    return {"steps": step, **accs}


def engine_run(out: Path, args: argparse.Namespace, device: torch.device) -> Run:
    sets = [
        "preset=synthetic-cmnist",
        f"curr_step={args.curr_step}",
        f"lr_decay_step={args.curr_step}",
        f"train.eval_every_steps={args.eval_every}",
        f"train.checkpoint_every_steps={2 * args.eval_every}",
        f"train.eval_batch_size={EVAL_BATCH}",
        "train.amp=off",
    ]
    flags = {"steps": args.steps, "seed": SEED, "device": str(device), "data_root": args.data_root}
    return Run(resolve_run_config("disent", dataset="synthetic-cmnist", sets=sets, flags=flags), out, quiet=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--curr-step", type=int, default=200)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    load_plugins()
    with tempfile.TemporaryDirectory() as tmp:
        args.data_root = args.data_root or os.path.join(tmp, "data")
        times: dict[str, list[float]] = {"hand": [], "engine": []}
        results: dict[str, dict] = {}
        for repeat in range(args.repeats + 1):  # repeat 0 is the warm-up
            run = engine_run(Path(tmp) / f"run-{repeat}", args, device)
            model_l, model_b, data = hand_setup(run, device)
            started = time.perf_counter()
            results["hand"] = hand_loop(model_l, model_b, data, args.steps, args.curr_step, args.eval_every, device)
            hand = time.perf_counter() - started
            started = time.perf_counter()
            summary = run.fit()
            sync(device)
            engine = time.perf_counter() - started
            last = summary["selection"]["last"]["metrics"]
            results["engine"] = {"steps": summary["train"]["steps"], "test/avg_acc": last["test/avg_acc"]}
            if repeat:
                times["hand"].append(hand)
                times["engine"].append(engine)
        print(f"device {device}, {args.threads} threads, {args.steps} steps, batch {BATCH}, {args.repeats} repeats")
        for side in ("hand", "engine"):
            median = statistics.median(times[side])
            print(
                f"{side:6s}: {args.steps / median:7.1f} steps/s (median {median:.2f} s; "
                f"runs {', '.join(f'{t:.2f}' for t in times[side])}); final test acc {results[side]['test/avg_acc']:.3f}"
            )
        ratio = statistics.median(times["engine"]) / statistics.median(times["hand"])
        print(f"engine / hand wall time: {ratio:.3f}x")


if __name__ == "__main__":
    main()
