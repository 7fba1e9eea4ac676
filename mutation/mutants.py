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

A full run of a target takes about 13 s per mutant on 2 CPU cores (clp: 446 mutants). With
``--sessions DIR`` each target's copy and cosmic-ray session are kept in ``DIR/TARGET``; after
adding tests, ``--sessions DIR --retest`` runs the target's tests (targets.toml's list, read again)
against its survivors only, as long as the mutated modules have not changed since.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import re
import shutil
import sqlite3
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


def run_target(
    name: str, spec: dict, scratch: Path, timeout: float, retest: bool = False
) -> list[tuple[str, int, str, str]]:
    """Mutate one target (or, ``retest``, test its survivors again); return its unexplained survivors
    ``(file, line, operator, function)``."""
    package = ROOT / spec["package"]
    copy_root = scratch / name
    session = copy_root / "session.sqlite"
    if retest:
        if not session.is_file():
            raise SystemExit(f"--retest: no session of {name!r} under {scratch}; run it once without --retest.")
        changed = [m for m in spec["modules"] if not filecmp.cmp(package / m, copy_root / package.name / m, False)]
        if changed:
            raise SystemExit(
                f"--retest: {changed} of {name!r} changed since its session; run it again without --retest."
            )
    else:
        shutil.rmtree(copy_root, ignore_errors=True)
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
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(copy_root), os.environ.get("PYTHONPATH", "")])}
    env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "1")

    def cr(*args: str, capture: bool = False) -> str:
        done = subprocess.run(args, cwd=ROOT, env=env, check=True, text=True, capture_output=capture)
        return done.stdout if capture else ""

    if retest:  # cosmic-ray exec runs the jobs without a result: forget the survivors' results
        with sqlite3.connect(session) as db:
            db.execute("DELETE FROM work_results WHERE test_outcome = 'SURVIVED'")
    else:
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
    parser.add_argument("--sessions", type=Path, help="keep each target's copy and session in SESSIONS/TARGET")
    parser.add_argument("--retest", action="store_true", help="test the kept sessions' survivors again")
    args = parser.parse_args()
    if args.retest and args.sessions is None:
        parser.error("--retest needs --sessions DIR (where an earlier run kept its sessions)")
    specs = tomllib.loads(TARGETS.read_text(encoding="utf-8"))
    unknown = sorted(set(args.targets) - set(specs))
    if unknown:
        parser.error(f"unknown targets {unknown}; known: {sorted(specs)}")
    failed = False
    with tempfile.TemporaryDirectory(prefix="robust-mutants-") as temporary:
        scratch = args.sessions.resolve() if args.sessions else Path(temporary)
        for name in args.targets or sorted(specs):
            survivors = run_target(name, specs[name], scratch, args.timeout, args.retest)
            for file, line, operator, function in survivors:
                print(f"  survived: `{file}:{line} {operator}` (in {function})")
            failed |= bool(survivors)
    if failed:
        print("Kill each survivor with a test, or list it under '## Equivalent mutants' in the target's README.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
