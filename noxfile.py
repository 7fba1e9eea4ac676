"""Sessions: `tests` (what CI runs), `lint`, `isolation` (one method package alone) and `mutants`
(mutation testing of each method's core modules; long: not part of CI's default run).

`nox -s tests` installs every package under packages/ plus the example plugin, then runs
pytest on 2 cores.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import nox

ROOT = Path(__file__).parent
PACKAGES = sorted(str(p) for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").is_file())
EXAMPLE = str(ROOT / "examples" / "robust-example-method")
TEST_DEPS = ["pytest>=8", "pytest-xdist>=3", "hypothesis>=6"]

nox.options.sessions = ["lint", "tests"]


def install_core_first(session: nox.Session, *paths: str) -> None:
    """Core first, so that plugins resolve robust-core to the checkout, not to PyPI."""
    core = str(ROOT / "packages" / "core")
    session.install("-e", core)
    session.install(*[arg for p in paths if p != core for arg in ("-e", p)])


@nox.session
def tests(session: nox.Session) -> None:
    """Every package, the example plugin and the test suite, on 2 workers."""
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
