"""The module robust loads through the ``robust`` entry point: hook implementations only.

It must not import torch (``robust --help`` and ``robust list`` load every plugin): the method
is registered by lazy reference and imported only when a run or ``robust info`` needs it.
"""

from __future__ import annotations

from typing import Any

from robust.api import hookimpl


@hookimpl
def register_methods(register: Any) -> None:
    register(
        "mixup",
        "robust_example_method.method:Mixup",
        config="robust_example_method.method:MixupConfig",
        description="mixup: train on convex combinations of pairs of inputs and of their labels, "
        "with the mixing weight drawn from Beta(alpha, alpha).",
        paper="Zhang, Cisse, Dauphin, Lopez-Paz. mixup: Beyond Empirical Risk Minimization. ICLR 2018.",
    )


@hookimpl
def register_commands(cli: Any) -> None:
    from robust_example_method.commands import mixup_lambda  # click only, no torch

    cli.add_command(mixup_lambda)
