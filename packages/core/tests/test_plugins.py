"""The plugin manager: built-ins win name clashes, broken plugins are isolated, core commands stay."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from robust import hookimpl
from robust.plugins import canonical, plugin_records
from robust.registry import get_registry


class Clash:
    @hookimpl
    def register_methods(self, register):
        register("erm", "robust_nowhere:ERM", description="an impostor")
        register("fresh-method", "robust.erm:ERM", description="a new name")


class Broken:
    @hookimpl
    def register_models(self, register):
        raise RuntimeError("boom")


def test_a_plugin_cannot_replace_a_builtin(register_plugin):
    with register_plugin(Clash(), "clash"):
        registry = get_registry()
        assert registry.get("method", "erm").plugin == "robust.builtins"
        assert registry.get("method", "fresh-method").plugin == "clash"
        record = next(r for r in plugin_records() if r.name == "clash")
        assert "already registered by robust.builtins" in record.error


def test_a_failing_registration_is_recorded_and_the_rest_register(register_plugin):
    with register_plugin(Broken(), "broken-models"):
        registry = get_registry()
        assert registry.find("model", "mlp") is not None
        record = next(r for r in plugin_records() if r.name == "broken-models")
        assert "register_models failed: RuntimeError: boom" in record.error


def test_distribution_names_compare_canonically():
    assert canonical("Robust_Example.Method") == canonical("robust-example-method") == "robust-example-method"


def test_plugin_commands_cannot_replace_core_commands():
    import click

    from robust import cli as cli_module
    from robust.plugins import pm

    class Hijack:
        @hookimpl
        def register_commands(self, cli):
            @cli.command("run")
            def run():
                """hijacked"""

            @cli.command("hijack-extra")
            def extra():
                """a new command"""

    original = cli_module.cli.commands["run"]
    pm.register(Hijack(), name="hijack")
    try:
        cli_module._register_plugin_commands()
        assert cli_module.cli.commands["run"] is original
        assert isinstance(cli_module.cli.commands["hijack-extra"], click.Command)
        record = next(r for r in plugin_records() if r.name == "hijack")
        assert "replace the core command 'run'" in record.error
    finally:
        pm.unregister(name="hijack")
        cli_module.cli.commands.pop("hijack-extra", None)


# --- plugins that must not take robust down (issue 18) -----------------------------------------

FAKE_PLUGINS = {
    # distribution: (module source, extra modules)
    "robust-fake-misspelt": (
        "from robust import hookimpl\n\n@hookimpl\ndef register_method(register):  # misspelt: register_methods\n"
        "    register('misspelt-method', 'robust.erm:ERM')\n",
        {},
    ),
    "robust-fake-exits": ("import sys\nsys.exit(3)\n", {}),
    "robust-fake-lazy": (
        "from robust import hookimpl\n\n@hookimpl\ndef register_methods(register):\n"
        "    register('lazy-broken', 'robust_fake_lazy_impl:Method', description='imports a missing package')\n",
        {"robust_fake_lazy_impl": "import robust_package_that_is_not_installed\n"},
    ),
}


def fake_plugins(folder: Path) -> dict[str, str]:
    """Installed-looking distributions (dist-info with a `robust` entry point) on PYTHONPATH; the env to use."""
    for dist, (source, extra) in FAKE_PLUGINS.items():
        module = dist.replace("-", "_")
        (folder / f"{module}.py").write_text(source)
        for name, text in extra.items():
            (folder / f"{name}.py").write_text(text)
        info = folder / f"{module}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[robust]\n{dist.removeprefix('robust-fake-')} = {module}\n")
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]),
        "ROBUST_LOAD_PLUGINS": ",".join(FAKE_PLUGINS),
        "COLUMNS": "200",
    }


def robust(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robust", *args], capture_output=True, text=True, env=env, timeout=120)


def test_broken_plugins_are_isolated_reported_and_named(tmp_path):
    env = fake_plugins(tmp_path)
    version = robust(env, "--version")
    assert version.returncode == 0 and "robust" in version.stdout, version.stderr  # not a raw PluginValidationError
    warnings = [line for line in version.stderr.splitlines() if line.startswith("robust: warning: plugin")]
    assert len(warnings) == 2, version.stderr  # one line per broken plugin, nothing else
    assert "'misspelt' (robust-fake-misspelt 0.1)" in version.stderr and "register_methods?" in version.stderr
    assert "'exits' (robust-fake-exits 0.1)" in version.stderr and "SystemExit(3)" in version.stderr
    assert "Traceback" not in version.stderr

    listing = robust(env, "list", "plugins", "--json")
    assert listing.returncode == 0, listing.stderr
    plugins = {p["name"]: p for p in json.loads(listing.stdout)["plugins"]}
    assert plugins["misspelt"]["status"] == "broken" and "unknown hook register_method" in plugins["misspelt"]["error"]
    assert plugins["exits"]["status"] == "broken" and "SystemExit(3) at import" in plugins["exits"]["error"]
    assert plugins["lazy"]["status"] == "ok" and plugins["robust.builtins"]["status"] == "ok"  # the rest work
    assert "erm" in {m["name"] for m in json.loads(robust(env, "list", "methods", "--json").stdout)["methods"]}

    unknown = robust(env, "info", "misspelt-method")  # the broken plugin's method: not "pip install it"
    assert unknown.returncode == 2, unknown.stderr
    assert (
        "failed to load and may provide it" in unknown.stderr and "'misspelt' (robust-fake-misspelt)" in unknown.stderr
    )
    assert "pip install" not in unknown.stderr

    lazy = robust(env, "info", "lazy-broken")  # a lazy reference that cannot be imported: which, and whose
    assert lazy.returncode == 2, lazy.stderr
    message = " ".join(lazy.stderr.split())
    assert "'robust_fake_lazy_impl:Method'" in message and "robust-fake-lazy 0.1" in message, message
    assert "ModuleNotFoundError" in message and "Unexpected" not in message and "Traceback" not in message
