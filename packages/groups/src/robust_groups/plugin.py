"""The module robust loads through the ``robust`` entry point. Torch-free: lazy references only."""

from __future__ import annotations

from typing import Any

from robust.api import hookimpl


@hookimpl
def register_commands(cli: Any) -> None:
    from robust_groups.commands import discover

    cli.add_command(discover)


@hookimpl
def register_dataset_transforms(register: Any) -> None:
    register(
        "groups",
        "robust_groups.discovery:apply_inferred_groups",
        config="robust_groups.groups_options:GroupsOptions",
        order=30,
        description="Inferred groups from a `robust discover` CSV replace the group labels of the splits it lists.",
    )
