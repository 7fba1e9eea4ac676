"""docs/plugins.md stays in step with the code: a heading per hook, code that parses, the
environment switches the plugin manager reads, and the example plugin's entry point."""

from __future__ import annotations

import inspect
import re
import tomllib
from pathlib import Path

import pytest

from robust import hookspecs, plugins

ROOT = Path(__file__).resolve().parents[1]
PLUGINS_DOC = ROOT / "docs" / "plugins.md"
EXAMPLE_PYPROJECT = ROOT / "examples" / "robust-example-method" / "pyproject.toml"


def hook_names() -> list[str]:
    """Every function in robust.hookspecs marked as a hook spec."""
    marker = f"{hookspecs.PROJECT}_spec"
    names = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(fn, marker)]
    assert names, "found no hook specs: has the marker attribute changed?"
    return sorted(names)


def doc_text() -> str:
    return PLUGINS_DOC.read_text(encoding="utf-8")


def headings(text: str) -> list[tuple[int, str]]:
    """(level, text) of every ## and ### heading outside code blocks."""
    found, in_code = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        match = re.match(r"^(#{2,3})\s+(.*?)\s*$", line)
        if match and not in_code:
            found.append((len(match.group(1)), match.group(2)))
    return found


def hook_heading(name: str, titles: list[str]) -> str | None:
    """The heading that starts with the hook's name (not with a longer identifier)."""
    for title in titles:
        if re.match(rf"^`?{re.escape(name)}(?![A-Za-z0-9_])", title):
            return title
    return None


def section(text: str, title: str) -> str:
    """The body of a heading, up to the next heading of the same or a higher level."""
    lines = text.splitlines()
    start = next(
        i for i, line in enumerate(lines) if re.match(r"^#{2,3}\s+", line) and line.split(None, 1)[1].strip() == title
    )
    level = len(lines[start]) - len(lines[start].lstrip("#"))
    body = []
    for line in lines[start + 1 :]:
        match = re.match(r"^(#+)\s", line)
        if match and len(match.group(1)) <= level:
            break
        body.append(line)
    return "\n".join(body)


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.S | re.M)


def test_hookspecs_are_the_hooks_the_manager_knows():
    managed = {name for name in vars(plugins.pm.hook) if not name.startswith("_")}
    assert set(hook_names()) <= managed


@pytest.mark.parametrize("name", hook_names())
def test_every_hook_has_a_heading(name):
    titles = [title for _, title in headings(doc_text())]
    assert hook_heading(name, titles) is not None, (
        f"docs/plugins.md has no ## or ### heading starting with the hook name {name!r} "
        f"(e.g. '### {name}(...)'); headings: {titles}"
    )


@pytest.mark.parametrize("name", hook_names())
def test_every_hook_section_has_an_example(name):
    text = doc_text()
    title = hook_heading(name, [t for _, t in headings(text)])
    assert title is not None
    body = section(text, title)
    assert "```python" in body, f"the section of {name} has no Python example"
    assert f"def {name}(" in body, f"the example of {name} does not implement the hook"


def test_python_examples_compile():
    blocks = code_blocks(doc_text(), "python")
    assert len(blocks) >= 10
    for number, block in enumerate(blocks):
        compile(block, f"docs/plugins.md python block {number}", "exec")


def test_toml_examples_parse():
    blocks = code_blocks(doc_text(), "toml")
    assert blocks
    for block in blocks:
        tomllib.loads(block)


def test_documented_entry_point_is_the_examples():
    example = tomllib.loads(EXAMPLE_PYPROJECT.read_text())
    group = example["project"]["entry-points"]["robust"]
    assert group == {"example": "robust_example_method.plugin"}
    assert example["project"]["name"] == "robust-example-method"
    assert example["project"]["dependencies"] == ["robust-core>=0.1,<0.2"]
    documented = [tomllib.loads(b) for b in code_blocks(doc_text(), "toml")]
    assert all(d["project"]["entry-points"]["robust"] == group for d in documented if "project" in d)
    assert any("project" in d for d in documented)


def test_environment_switches_are_documented():
    source = Path(plugins.__file__).read_text()
    switches = set(re.findall(r"ROBUST_[A-Z_]+", source))
    assert {"ROBUST_LOAD_PLUGINS", "ROBUST_DISABLE_PLUGIN_AUTOLOAD", "ROBUST_TRACE_PLUGINS"} <= switches
    text = doc_text()
    missing = sorted(s for s in switches if s not in text)
    assert not missing, f"docs/plugins.md does not mention {missing}"


def test_required_sections_exist():
    titles = " | ".join(title.lower() for _, title in headings(doc_text()))
    for topic in (
        "overview",
        "tutorial",
        "method contract",
        "dataset contract",
        "model contract",
        "environment switches",
        "testing",
        "robust list",
    ):
        assert topic in titles, f"no section about {topic!r}: {titles}"


def test_readme_setup_command_installs_existing_packages_and_runs_clp_with_its_cpu_preset():
    from robust.resolve import resolve_run_config

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    setup = section(readme, "Set up")
    first = code_blocks(setup, "bash")[0].strip()
    installs = re.findall(r"-e (\S+)", first)
    assert installs and all((ROOT / path / "pyproject.toml").is_file() for path in installs), installs
    command = first.split("&& ")[-1].split()
    assert command[:3] == ["robust", "run", "clp"], command
    dataset = command[command.index("--dataset") + 1]
    resolved = resolve_run_config("clp", dataset=dataset, sets=[], flags={})
    assert resolved.config.preset == "synthetic-waterbirds"
    assert resolved.config.dataset["image_size"] == 32 and resolved.config.dataset["scale"] == 0.5


def test_python_examples_import_only_the_plugin_api():
    """Examples import robust only through robust.api (the test kit, robust.testing, is for tests)."""
    import ast

    bad = []
    for number, block in enumerate(code_blocks(doc_text(), "python")):
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.ImportFrom):
                modules = [node.module or ""] if node.level == 0 else []
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            for module in modules:
                if module.split(".")[0] == "robust" and module not in ("robust.api", "robust.testing"):
                    bad.append(f"block {number}, line {node.lineno}: {module}")
    assert not bad, f"docs/plugins.md imports internal modules (use robust.api): {bad}"
