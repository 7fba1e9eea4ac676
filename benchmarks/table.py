"""Regenerate BENCHMARKS.md: every method on the embedded benchmarks, 5 seeds, against ERM (issue 20 §3).

    python benchmarks/table.py                          # the whole table (hours on 2 CPU cores)
    python benchmarks/table.py --parallel 1 --out runs/table
    python benchmarks/table.py --seeds 0 --epochs 1 --set dataset.frac=0.05 --methods erm,jtt \\
        --markdown /tmp/smoke.md                        # a smoke run of the pipeline

Each spec of benchmarks/table/ is run by ``robust sweep`` (local executor; launch again to resume:
finished runs are skipped, interrupted ones resume) and summarised by ``robust report``: mean ± s.e.
over seeds under each dataset's selection rules (RULES), the group labels each method used in
training and validation, wall time per run, a figure (``--figure``) and, per method, the difference
to ERM on the benchmark's main metric with a verdict (better, worse, or within 2 s.e. of ERM).
The options after the first line only scale the table down (a smoke run); BENCHMARKS.md is written
only by a full run unless ``--markdown`` names another file.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "benchmarks" / "table"
# Per dataset: (selection rule, why) in the order shown, the first being the table's rule, and the
# metrics: the first is the benchmark's main one (worst group; unbiased for the digits).
RULES: dict[str, list[tuple[str, str]]] = {
    "synthetic-waterbirds": [
        ("last", "the fixed schedule's last epoch: the calibrated rule (packages/datasets/DATASETS.md)"),
        ("best_val_worst_group", "best validation worst-group accuracy (val group labels)"),
    ],
    "synthetic-cmnist": [
        ("best_val_avg", "best validation average: group-label free (val colours are independent of the digit)"),
        ("last", "the last evaluation"),
    ],
}
METRICS: dict[str, list[str]] = {
    "synthetic-waterbirds": ["test/worst_group_acc", "test/avg_acc"],
    "synthetic-cmnist": ["test/unbiased_acc", "test/conflicting_acc", "test/train_weighted_acc"],
}


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "uptime: not available"


def robust(*args: str, capture: bool = False) -> str:
    """``robust ARGS`` with this interpreter's installation; its output, or streamed when not captured."""
    command = [sys.executable, "-m", "robust", *args]
    done = subprocess.run(command, check=True, text=True, capture_output=capture)
    return done.stdout if capture else ""


def scaled_spec(spec: Path, args: argparse.Namespace, scratch: Path) -> Path:
    """The spec itself, or a copy scaled down by the smoke options."""
    if not (args.seeds or args.epochs or args.set or args.methods):
        return spec
    from robust.toml_values import to_toml

    data = tomllib.loads(spec.read_text(encoding="utf-8"))
    if args.seeds:
        data["seeds"] = [int(s) for s in args.seeds.split(",")]
    if args.epochs:
        data["epochs"] = args.epochs
    if args.methods:
        data["methods"] = [m for m in data["methods"] if m in args.methods.split(",")]
    for item in args.set:
        key, _, value = item.partition("=")
        data.setdefault("set", {})[key] = tomllib.loads(f"v = {value}")["v"]
    out = scratch / spec.name
    out.write_text(to_toml(data), encoding="utf-8")
    return out


def verdicts(rows: list[dict], metric: str) -> list[str]:
    """Markdown lines: each method's difference to ERM on ``metric``, and whether it beats ERM."""
    by_method = {r["method"]: r for r in rows if metric in r.get("metrics", {})}
    erm = by_method.get("erm")
    if erm is None:
        return ["ERM did not finish: no comparison."]
    e = erm["metrics"][metric]
    lines = []
    for method, row in sorted(by_method.items()):
        if method == "erm":
            continue
        m = row["metrics"][metric]
        diff = 100 * (m["mean"] - e["mean"])
        if min(m["n"], e["n"]) < 2:
            lines.append(f"- {method}: {diff:+.1f} points: no verdict from one seed")
            continue
        se = 100 * math.hypot(m.get("se", 0.0), e.get("se", 0.0))
        if diff > 2 * se:
            verdict = "beats ERM"
        elif diff < -2 * se:
            verdict = "**worse than ERM**"
        else:
            verdict = "**does not beat ERM** (within 2 s.e.)"
        lines.append(f"- {method}: {diff:+.1f} points (s.e. of the difference {se:.1f}): {verdict}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "table", help="sweep directories (resumable)")
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time (1: the wall times are comparable)")
    parser.add_argument("--markdown", type=Path, default=None, help="where to write (default: BENCHMARKS.md)")
    parser.add_argument("--figure-dir", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--seeds", help="smoke: comma-separated seeds instead of the spec's")
    parser.add_argument("--epochs", type=int, help="smoke: --epochs of every run")
    parser.add_argument("--methods", help="smoke: comma-separated subset of the spec's methods")
    parser.add_argument("--set", action="append", default=[], help="smoke: KEY=VALUE (a TOML value) for every run")
    args = parser.parse_args()
    smoke = bool(args.seeds or args.epochs or args.set or args.methods)
    markdown = args.markdown or (None if smoke else ROOT / "BENCHMARKS.md")
    if markdown is None:
        parser.error("a scaled-down run does not overwrite BENCHMARKS.md: give --markdown PATH")
    load_before = uptime()
    started = datetime.datetime.now(datetime.UTC)
    sections: list[str] = []
    with tempfile.TemporaryDirectory(prefix="robust-table-") as scratch:
        for spec in sorted(SPECS.glob("*.toml")):
            dataset = spec.stem
            out = args.out / dataset
            print(f"== {dataset}: robust sweep {spec.relative_to(ROOT)} --out {out}", flush=True)
            robust(
                "sweep",
                str(scaled_spec(spec, args, Path(scratch))),
                "--out",
                str(out),
                "--parallel",
                str(args.parallel),
            )
            metrics = [a for m in METRICS[dataset] for a in ("--metric", m)]
            sections.append(f"## {dataset}\n")
            for i, (rule, why) in enumerate(RULES[dataset]):
                figure = args.figure_dir / f"table-{dataset}-{rule}.png"
                table = robust("report", str(out), "--format", "markdown", "--selection", rule, *metrics, capture=True)
                robust("report", str(out), "--selection", rule, *metrics, "--figure", str(figure), capture=True)
                rows = json.loads(
                    robust("report", str(out), "--format", "json", "--selection", rule, *metrics, capture=True)
                )
                sections.append(f"### Selection: `{rule}`, {why}\n\n{table.strip()}\n")
                sections.append(f"![{dataset}, {rule}]({os.path.relpath(figure, markdown.parent)})\n")
                if i == 0:
                    sections.append(f"Against ERM on `{METRICS[dataset][0]}` (this rule):\n")
                    sections.append("\n".join(verdicts(rows, METRICS[dataset][0])) + "\n")
    import torch

    header = [
        "# Benchmarks: every method against ERM on the embedded data",
        "",
        f"Generated by `python benchmarks/table.py{' (scaled down: ' + ' '.join(sys.argv[1:]) + ')' if smoke else ''}` "
        f"from the sweep specs in benchmarks/table/ on {started:%Y-%m-%d}: mean ± s.e. over seeds; "
        "'group labels' says which splits' group labels each method used (training / validation).",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
        f"torch {torch.__version__}; load before: `{load_before}`; after: `{uptime()}`.",
        "",
    ]
    markdown.write_text("\n".join(header + sections), encoding="utf-8")
    print(f"wrote {markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
