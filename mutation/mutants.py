"""Mutation testing of each method's core modules with cosmic-ray: `nox -s mutants [TARGET ...]`.

Why a copy: cosmic-ray mutates files in place. Each target's package is copied to a scratch
folder that goes first on PYTHONPATH, so the checkout (and anyone working in it) never sees a
mutant, while the tests run from the checkout against the copy.

Which mutants: arithmetic swaps within + - * / (and ** to *), comparisons, boolean and unary
operators, constants, `and`/`or`, `not`, True/False, break/continue and emptied loops. Excluded:
bitwise, shift, floor-division, modulo and matmul replacements (they mostly hit type annotations
such as ``Tensor | None`` and make equivalent mutants), decorator removal, exception and variable
replacement.

Pass: every mutant killed (a test failed or timed out) or listed as equivalent, with why, in the
target's README under "## Equivalent mutants" as ``- `FILE:LINE OPERATOR`: why``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ROOT / "mutation" / "targets.toml"
EXCLUDED = [
    r"core/ReplaceBinaryOperator_.*_(BitOr|BitAnd|BitXor|LShift|RShift|FloorDiv|Mod|MatMult)$",
    r"core/ReplaceBinaryOperator_(BitOr|BitAnd|BitXor|LShift|RShift|FloorDiv|Mod|MatMult)_.*",
    r"core/ReplaceBinaryOperator_(Add|Sub|Mul|Div)_Pow$",
    r"core/ReplaceComparisonOperator_(?!Is_IsNot|IsNot_Is|In_NotIn|NotIn_In).*_(Is|IsNot|In|NotIn)$",
    r"core/ReplaceComparisonOperator_(Is|IsNot|In|NotIn)_(?!IsNot$|Is$|NotIn$|In$).*",
    r"core/RemoveDecorator",
    r"core/ExceptionReplacer",
    r"core/VariableInserter",
    r"core/VariableReplacer",
]
EQUIVALENT = re.compile(r"^- `(?P<file>[\w/.]+):(?P<line>\d+) (?P<operator>[\w/]+)`")


def equivalents(readme: Path) -> set[tuple[str, int, str]]:
    """``(file, line, operator)`` of the mutants a README lists as equivalent."""
    if not readme.is_file():
        return set()
    text = readme.read_text(encoding="utf-8")
    if "## Equivalent mutants" not in text:
        return set()
    section = text.split("## Equivalent mutants", 1)[1].split("\n## ", 1)[0]
    return {
        (m["file"], int(m["line"]), m["operator"]) for line in section.splitlines() if (m := EQUIVALENT.match(line))
    }


def run_target(name: str, spec: dict, scratch: Path, timeout: float) -> list[tuple[str, int, str, str]]:
    """Mutate one target; return its unexplained survivors ``(file, line, operator, function)``."""
    package = ROOT / spec["package"]
    copy_root = scratch / name
    shutil.copytree(package, copy_root / package.name, ignore=shutil.ignore_patterns("__pycache__"))
    modules = [str(copy_root / package.name / m) for m in spec["modules"]]
    tests = " ".join(spec["tests"])
    config = copy_root / "cosmic-ray.toml"
    config.write_text(
        "[cosmic-ray]\n"
        f"module-path = {json.dumps(modules)}\n"
        f"timeout = {timeout}\n"
        "excluded-modules = []\n"
        f'test-command = "{sys.executable} -m pytest -x -q -p no:cacheprovider -p no:randomly {tests}"\n'
        '[cosmic-ray.distributor]\nname = "local"\n'
        "[cosmic-ray.filters.operators-filter]\n"
        f"exclude-operators = {json.dumps(EXCLUDED)}\n",
        encoding="utf-8",
    )
    session = copy_root / "session.sqlite"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(copy_root), os.environ.get("PYTHONPATH", "")])}
    env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "1")

    def cr(*args: str, capture: bool = False) -> str:
        done = subprocess.run(args, cwd=ROOT, env=env, check=True, text=True, capture_output=capture)
        return done.stdout if capture else ""

    cr("cosmic-ray", "init", str(config), str(session))
    cr("cr-filter-operators", str(session), str(config))
    cr("cosmic-ray", "baseline", str(config))
    cr("cosmic-ray", "exec", str(config), str(session))
    listed = equivalents(ROOT / spec["readme"])
    survivors, total, killed = [], 0, 0
    for line in cr("cosmic-ray", "dump", str(session), capture=True).splitlines():
        job, result = json.loads(line)
        if result is None or result.get("worker_outcome") == "skipped":
            continue
        total += 1
        if result.get("test_outcome") != "survived":
            killed += 1
            continue
        for mutation in job["mutations"]:
            file = Path(mutation["module_path"]).name
            row = mutation["start_pos"][0]
            key = (file, row, mutation["operator_name"])
            if key not in listed:
                survivors.append((*key, mutation.get("definition_name", "")))
    print(f"{name}: {total} mutants, {killed} killed, {total - killed} survived, {len(survivors)} not listed")
    return survivors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", help="targets of mutation/targets.toml (default: all)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant's test run")
    args = parser.parse_args()
    specs = tomllib.loads(TARGETS.read_text(encoding="utf-8"))
    unknown = sorted(set(args.targets) - set(specs))
    if unknown:
        parser.error(f"unknown targets {unknown}; known: {sorted(specs)}")
    failed = False
    with tempfile.TemporaryDirectory(prefix="robust-mutants-") as scratch:
        for name in args.targets or sorted(specs):
            survivors = run_target(name, specs[name], Path(scratch), args.timeout)
            for file, line, operator, function in survivors:
                print(f"  survived: `{file}:{line} {operator}` (in {function})")
            failed |= bool(survivors)
    if failed:
        print("Kill each survivor with a test, or list it under '## Equivalent mutants' in the target's README.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
