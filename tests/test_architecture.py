"""The architecture docs/architecture.md describes: a declared plugin API, a small core, import
contracts that cover every internal module, and plugins that pin a bounded core version."""

from __future__ import annotations

import ast
import configparser
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "packages" / "core" / "src" / "robust"
CORE_CODE_LINES = 5500  # issue 19: lines of code, without blank lines, comments and docstrings


def core_modules() -> list[str]:
    names = []
    for path in CORE.rglob("*.py"):
        parts = path.relative_to(CORE.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return sorted(names)


def test_the_plugin_contract_forbids_every_internal_module():
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    forbidden = set(config["importlinter:contract:plugin-api"]["forbidden_modules"].split())
    internal = set(core_modules()) - {"robust.api", "robust.__main__"}
    assert internal - forbidden == set(), "add the new core module to .importlinter's plugin-api contract"
    plugins = set(config["importlinter:contract:plugin-api"]["source_modules"].split())
    packages = {p.name for p in (ROOT / "packages").glob("*/src/*") if p.is_dir() and not p.name.endswith("egg-info")}
    assert packages - {"robust"} <= plugins, "a package is missing from the plugin-api contract"


def test_every_api_name_resolves_and_importing_the_api_loads_no_torch():
    code = (
        "import sys, robust.api as api; assert 'torch' not in sys.modules, 'robust.api imported torch';"
        "[getattr(api, n) for n in api.__all__]; print(len(api.__all__))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 60


def test_a_name_outside_the_api_is_a_clear_error():
    import robust.api

    try:
        robust.api.Engine  # noqa: B018
    except AttributeError as exc:
        assert "not part of the plugin API" in str(exc)
    else:
        raise AssertionError("robust.api.Engine should not exist")


def test_every_plugin_package_pins_a_bounded_core_version():
    for pyproject in [*ROOT.glob("packages/*/pyproject.toml"), *ROOT.glob("examples/*/pyproject.toml")]:
        project = tomllib.loads(pyproject.read_text())["project"]
        if project["name"] == "robust-core":
            continue
        core = [d for d in project["dependencies"] if d.startswith("robust-core")]
        assert core and "<" in core[0] and ">=" in core[0], f"{pyproject}: pin robust-core>=X,<Y, not {core}"
        assert project["requires-python"] == ">=3.11", f"{pyproject}: the code uses tomllib (3.11)"


def code_lines(path: Path) -> int:
    source = path.read_text(encoding="utf-8")
    docstrings: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", None)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and body:
            first = body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                docstrings.update(range(first.lineno, first.end_lineno + 1))
    return sum(
        1
        for number, line in enumerate(source.splitlines(), start=1)
        if line.strip() and not line.strip().startswith("#") and number not in docstrings
    )


def test_the_core_stays_small():
    total = sum(code_lines(path) for path in CORE.rglob("*.py"))
    assert total <= CORE_CODE_LINES, f"the core has {total} lines of code; move what only some methods use out"


def test_every_package_has_the_readme_its_pyproject_names():
    """A missing readme breaks building the package's wheel (setuptools reads it for the metadata)."""
    for pyproject in [*ROOT.glob("packages/*/pyproject.toml"), *ROOT.glob("examples/*/pyproject.toml")]:
        readme = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"].get("readme")
        assert readme is None or (pyproject.parent / readme).is_file(), f"{pyproject.parent.name}: no {readme}"
