"""The plugin manager: built-ins win name clashes, broken plugins are isolated, core commands stay."""

from __future__ import annotations

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
