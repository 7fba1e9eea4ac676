"""Sessions: `lint`, `packages` (each package's tests with only what it declares) and `tests` (the
root tests: integration, CLI, docs and architecture, with every package and the example plugin
installed) are what `nox` runs by default and CI runs; `isolation` (one method package alone) and
`mutants` (mutation testing of each method's core modules; long) are run by hand.

Every test runs once in CI: the packages' own tests in `packages`, the rest in `tests`.
`nox -s tests -- packages/core/tests` (any pytest arguments) runs others with everything installed;
plain `pytest -n 2` in a developer's environment runs the whole suite (pytest.ini's testpaths).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import tomllib
from pathlib import Path

import nox
from nox.command import CommandFailed

ROOT = Path(__file__).parent
PACKAGES = sorted(str(p) for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").is_file())
EXAMPLE = str(ROOT / "examples" / "robust-example-method")
TEST_DEPS = ["pytest>=8", "pytest-xdist>=3", "hypothesis>=6"]

nox.options.sessions = ["lint", "packages", "tests"]


def install_core_first(session: nox.Session, *paths: str) -> None:
    """Core first, so that plugins resolve robust-core to the checkout, not to PyPI."""
    core = str(ROOT / "packages" / "core")
    session.install("-e", core)
    session.install(*[arg for p in paths if p != core for arg in ("-e", p)])


@nox.session
def tests(session: nox.Session) -> None:
    """Every package and the example plugin installed; the root tests (or the pytest arguments given), on 2 workers."""
    install_core_first(session, *PACKAGES, EXAMPLE)
    session.install(*TEST_DEPS)
    session.run("pytest", "-n", "2", *(session.posargs or ["tests"]))


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, and the architecture contracts of .importlinter: plugins use only robust.api, the core
    imports no plugin, no import circle. grimp reads the sources: nothing is installed but the tools."""
    session.install("ruff", "import-linter>=2.1")
    session.run("ruff", "check", ".")
    sources = [str(p) for p in sorted((ROOT / "packages").glob("*/src"))] + [
        str(ROOT / "examples" / "robust-example-method" / "src")
    ]
    session.run("lint-imports", env={"PYTHONPATH": os.pathsep.join(sources)})


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _pyprojects() -> dict[str, tuple[str, dict]]:
    """Distribution name -> (folder name under packages/, its [project] table)."""
    found = {}
    for folder in PACKAGES:
        with open(Path(folder) / "pyproject.toml", "rb") as handle:
            project = tomllib.load(handle)["project"]
        found[project["name"]] = (Path(folder).name, project)
    return found


def _requirements(project: dict) -> list[str]:
    """What a package declares: its dependencies and its `test` extra."""
    return [*project.get("dependencies", []), *project.get("optional-dependencies", {}).get("test", [])]


def _robust_closure(name: str, projects: dict[str, tuple[str, dict]]) -> list[str]:
    """``name`` and the packages of this repository it declares (dependencies and the `test` extra of
    the package itself; dependencies only of those it brings in), core first."""
    seen: list[str] = []
    todo = [(name, True)]
    while todo:
        dist, with_test = todo.pop()
        if dist in seen:
            continue
        seen.append(dist)
        project = projects[dist][1]
        declared = _requirements(project) if with_test else project.get("dependencies", [])
        todo += [(r, False) for r in map(_requirement_name, declared) if r in projects]
    return sorted(seen, key=lambda dist: (dist != "robust-core", dist))


@nox.session
def packages(session: nox.Session) -> None:
    """Each package's tests with only what it declares: core, the package, the robust packages it
    depends on and its `test` extra, nothing else. `nox -s packages -- core methods-clp -m "not slow"`:
    some packages (folder names under packages/), then pytest's arguments.

    One environment (this session's) gets the third-party dependencies of every package; each package
    gets a child virtualenv that sees it through a .pth file (torch is shared, not installed again)
    and has only its declared robust packages installed, editable and without dependencies: a test
    that imports a package its pyproject does not declare fails here."""
    projects = _pyprojects()
    by_folder = {folder: dist for dist, (folder, _) in projects.items()}
    first_option = next((i for i, arg in enumerate(session.posargs) if arg.startswith("-")), len(session.posargs))
    names, pytest_args = session.posargs[:first_option], session.posargs[first_option:]
    unknown = [n for n in names if n not in by_folder]
    if unknown:
        session.error(f"no package {unknown}; packages: {sorted(by_folder)}")
    chosen = [by_folder[n] for n in names] or sorted(projects, key=lambda d: (d != "robust-core", d))

    third_party = sorted(
        {r for _, project in projects.values() for r in _requirements(project) if _requirement_name(r) not in projects}
    )
    session.install(*third_party, *TEST_DEPS, "setuptools>=68")
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    base_site = session.run("python", "-c", code, silent=True).strip()

    results: list[tuple[str, str, float]] = []
    for dist in chosen:
        folder = projects[dist][0]
        started = time.monotonic()
        child = Path(session.create_tmp()) / "packages" / folder
        shutil.rmtree(child, ignore_errors=True)
        session.run("python", "-m", "venv", "--without-pip", str(child), silent=True)
        python = str(child / "bin" / "python")
        child_site = session.run(python, "-c", code, silent=True, external=True).strip()
        Path(child_site, "_robust_base.pth").write_text(base_site + "\n")
        installs = _robust_closure(dist, projects)
        editable = [arg for d in installs for arg in ("-e", str(ROOT / "packages" / projects[d][0]))]
        session.run(
            python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", *editable,
            external=True, silent=True,
        )  # fmt: skip
        session.log(f"{folder}: {', '.join(installs)} ({time.monotonic() - started:.1f} s to set up)")
        try:
            session.run(
                python, "-m", "pytest", "-n", "2", f"packages/{folder}/tests", *pytest_args,
                external=True, env={"OMP_NUM_THREADS": "1"},
            )  # fmt: skip
            results.append((folder, "passed", time.monotonic() - started))
        except CommandFailed:
            results.append((folder, "FAILED", time.monotonic() - started))
    session.log("packages, each with only what it declares:")
    for folder, outcome, seconds in results:
        session.log(f"  {folder:<16} {outcome:<7} {seconds:6.0f} s")
    failed = [folder for folder, outcome, _ in results if outcome != "passed"]
    if failed:
        session.error(f"failed: {', '.join(failed)}")


@nox.session
def isolation(session: nox.Session) -> None:
    """Core plus one plugin package (default: the example) and nothing else: only its method is found."""
    target = session.posargs[0] if session.posargs else EXAMPLE
    install_core_first(session, target)
    listing = json.loads(session.run("robust", "list", "methods", "--json", silent=True))
    names = sorted(m["name"] for m in listing["methods"])
    packages = sorted({m["package"] for m in listing["methods"]})
    session.log(f"methods found: {names} from {packages}")
    with open(Path(target) / "pyproject.toml", "rb") as handle:
        dist = tomllib.load(handle)["project"]["name"]
    foreign = [p for p in packages if p not in ("robust-core", dist)]
    if foreign:
        session.error(f"packages other than core and {target} registered methods: {foreign}")


@nox.session
def mutants(session: nox.Session) -> None:
    """cosmic-ray over the modules of mutation/targets.toml (all, or the targets named after --)."""
    install_core_first(session, *PACKAGES)
    session.install(*TEST_DEPS, "cosmic-ray>=8.3")
    session.run("python", "mutation/mutants.py", *session.posargs)
