"""The module robust loads through the ``robust`` entry point. Torch-free: lazy references only."""

from __future__ import annotations

from typing import Any

from robust.api import hookimpl


@hookimpl
def register_commands(cli: Any) -> None:
    from robust_report.commands import report

    cli.add_command(report)
