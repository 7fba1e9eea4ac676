"""TensorBoard logger: writes every evaluation's metrics to RUN_DIR/tensorboard.

Enabled with ``--set train.tensorboard=true``; needs the ``tensorboard`` package
(``pip install robust-core[tensorboard]``). Torch-free at import, like every plugin module.
"""

from __future__ import annotations

from typing import Any

from robust.errors import ConfigError
from robust.hookspecs import hookimpl

_writers: dict[int, Any] = {}


@hookimpl
def register_options(register):
    register("tensorboard", "robust.loggers.tensorboard_options:TensorBoardOptions", section="train")


@hookimpl
def on_run_start(run):
    if not run.config.train.tensorboard:
        return
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(
            "train.tensorboard is on but the tensorboard package is not installed. Install it with "
            "`pip install 'robust-core[tensorboard]'` or turn the option off."
        ) from None
    _writers[id(run)] = SummaryWriter(log_dir=str(run.run_dir.path / "tensorboard"))


@hookimpl
def on_evaluation(run, record):
    writer = _writers.get(id(run))
    if writer is None:
        return
    for key, value in record["metrics"].items():
        writer.add_scalar(key, value, global_step=record["step"])
    writer.flush()


@hookimpl
def on_run_end(run, summary):
    writer = _writers.pop(id(run), None)
    if writer is not None:
        writer.close()
