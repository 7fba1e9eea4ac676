"""How long the ``robust`` command line takes to start, and whether it imports torch.

Times ``robust --help``, ``robust list`` and ``robust list --json`` as fresh subprocesses, both as
``python -m robust ...`` (with this interpreter) and through the ``robust`` console script when
one is found (on PATH, else next to this interpreter). Each command runs once untimed (to warm
the file cache), then ``--repeats`` times; the median and the minimum wall time are printed
beside the target (< 0.3 s), with a bare ``python -c pass`` as the baseline. Then
``python -X importtime -m robust list`` tells whether torch was imported, and which imports cost
the most.

    python benchmarks/cli_startup.py [--repeats 10] [--target 0.3]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS: list[list[str]] = [["--help"], ["list"], ["list", "--json"]]


def console_script() -> str | None:
    """The ``robust`` executable: on PATH, else in this interpreter's bin directory."""
    found = shutil.which("robust")
    if found:
        return found
    beside = Path(sys.executable).parent / ("robust.exe" if os.name == "nt" else "robust")
    return str(beside) if beside.is_file() else None


def time_command(argv: list[str], repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` runs of ``argv`` (after one untimed run); fails loudly on error."""
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return times


def import_report(top: int) -> tuple[bool, list[tuple[int, str]], list[tuple[int, str]], list[str]]:
    """(torch imported?, the ``top`` largest cumulative top-level imports and the ``top`` largest
    self times, both in µs, and the torch modules imported)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "robust", "list"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    rows: list[tuple[int, int, str]] = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        parts = line[len("import time:") :].split("|")
        if len(parts) != 3:
            continue
        try:
            own, cumulative = int(parts[0].strip()), int(parts[1].strip())
        except ValueError:
            continue
        rows.append((own, cumulative, parts[2].rstrip()))
    names = [name.strip() for _, _, name in rows]
    torch_lines = [name for name in names if name == "torch" or name.startswith("torch.")]
    # The name column is indented by nesting depth; one leading space means a top-level import.
    top_level = sorted(((cum, name.strip()) for _, cum, name in rows if not name.startswith("  ")), reverse=True)
    by_self = sorted(((own, name.strip()) for own, _, name in rows), reverse=True)
    return "torch" in names, top_level[:top], by_self[:top], torch_lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10, help="Timed runs of each command (default 10).")
    parser.add_argument("--target", type=float, default=0.3, help="Target seconds (default 0.3).")
    parser.add_argument("--top", type=int, default=8, help="How many of the costliest imports to list (default 8).")
    args = parser.parse_args()

    launchers: list[tuple[str, list[str]]] = [("python -m robust", [sys.executable, "-m", "robust"])]
    script = console_script()
    if script is not None:
        launchers.append(("robust (console script)", [script]))

    print(f"robust CLI start-up: {args.repeats} timed runs per command after 1 untimed warm-up run")
    print(f"python {platform.python_version()} at {sys.executable}")
    print(f"console script: {script or 'not found (only python -m robust is timed)'}")
    if hasattr(os, "getloadavg"):
        print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print()
    header = f"{'command':<40} {'median s':>9} {'min s':>8}  target < {args.target:g} s"
    print(header)
    print("-" * len(header))
    worst = 0.0
    for label, prefix in launchers:
        for command in COMMANDS:
            times = time_command([*prefix, *command], args.repeats)
            median, best = statistics.median(times), min(times)
            worst = max(worst, median)
            verdict = "ok" if median < args.target else "OVER"
            print(f"{label + ' ' + ' '.join(command):<40} {median:>9.3f} {best:>8.3f}  {verdict}")
    base = time_command([sys.executable, "-c", "pass"], args.repeats)
    print(f"{'(baseline: python -c pass)':<40} {statistics.median(base):>9.3f} {min(base):>8.3f}")
    if hasattr(os, "getloadavg"):
        print("load average after:  {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))

    imported, top, by_self, torch_lines = import_report(args.top)
    print()
    print(f"python -X importtime -m robust list: torch imported: {'YES' if imported else 'no'}")
    if torch_lines:
        print(f"  torch modules imported: {len(torch_lines)} (first: {', '.join(torch_lines[:3])})")
    print("  costliest top-level imports (cumulative, one run; -X importtime inflates them):")
    for us, name in top:
        print(f"    {us / 1000:8.1f} ms  {name}")
    print("  costliest modules by self time (excluding their own imports):")
    for us, name in by_self:
        print(f"    {us / 1000:8.1f} ms  {name}")
    print()
    print(
        f"slowest median: {worst:.3f} s -> {'meets' if worst < args.target else 'MISSES'} the < {args.target:g} s target"
    )


if __name__ == "__main__":
    main()
