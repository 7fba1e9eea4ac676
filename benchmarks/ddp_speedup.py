"""Data-parallel training: N processes (`robust run --nproc N`) against one, side by side.

Runs the same `robust run` (same seed, same global batch) with 1 process and with N, and prints
the training wall time of each (from summary.json: the loop, not process start-up), the speed-up,
and how far apart the final metrics are. On a GPU machine give --device cuda and N ≤ the GPUs;
on the CPU each of the N processes gets cores/N threads and the single process all of them.

    python benchmarks/ddp_speedup.py                              # ERM, cnn, synthetic-waterbirds, CPU
    python benchmarks/ddp_speedup.py --method lff --nproc 2 --device cuda --epochs 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def run(args: argparse.Namespace, nproc: int, out: Path) -> dict:
    cores = os.cpu_count() or 1
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // nproc))}
    command = [sys.executable, "-m", "robust", "run", args.method, "--dataset", args.dataset, "--device", args.device]
    command += ["--epochs", str(args.epochs), "--seed", "0", "-q", "--out", str(out), "--nproc", str(nproc)]
    command += ["--set", f"train.batch_size={args.batch_size}", "--set", "train.augment=none"]
    if args.model:
        command += ["--model", args.model]
    for option in args.set:
        command += ["--set", option]
    subprocess.run(command, env=env, check=True, capture_output=True)
    return json.loads((out / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="erm")
    parser.add_argument("--dataset", default="synthetic-waterbirds")
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--set", action="append", default=["dataset.image_size=64"], help="Extra --set options.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one = run(args, 1, Path(tmp) / "one")
        many = run(args, args.nproc, Path(tmp) / "many")
    t1, tn = one["train"]["wall_time_s"], many["train"]["wall_time_s"]
    print(
        f"{args.method} on {args.dataset} ({args.model}), {args.epochs} epochs, global batch {args.batch_size}, "
        f"{args.device}, {os.cpu_count()} cores"
    )
    print(f"  1 process:  {t1:8.1f} s training ({one['train']['steps']} steps)")
    print(f"  {args.nproc} processes: {tn:8.1f} s training ({many['train']['steps']} steps)")
    print(f"  speed-up:   {t1 / tn:8.2f}x")
    a, b = one["selection"]["last"]["metrics"], many["selection"]["last"]["metrics"]
    for key in ("val/loss", "test/avg_acc", "test/worst_group_acc"):
        if key in a and key in b:
            print(
                f"  {key:22s} 1 process {a[key]:.5f}   {args.nproc} processes {b[key]:.5f}   diff {b[key] - a[key]:+.2e}"
            )


if __name__ == "__main__":
    main()
