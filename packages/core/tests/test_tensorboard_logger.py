"""The built-in TensorBoard logger: writes event files when enabled, says how to install it otherwise."""

from __future__ import annotations

import importlib.util

import pytest

from robust.engine import Run
from robust.errors import ConfigError
from robust.resolve import resolve_run_config

from .tiny import TinyPlugin

HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None


@pytest.fixture(autouse=True)
def tiny(register_plugin):
    with register_plugin(TinyPlugin(), "tiny-test-plugin"):
        yield


def run(tmp_path):
    resolved = resolve_run_config("erm", dataset="tiny", sets=["train.tensorboard=true"], flags={"epochs": 1})
    return Run(resolved, tmp_path / "run", quiet=True).fit()


@pytest.mark.skipif(HAS_TENSORBOARD, reason="tensorboard is installed")
def test_missing_tensorboard_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"pip install 'robust-core\[tensorboard\]'"):
        run(tmp_path)


@pytest.mark.skipif(not HAS_TENSORBOARD, reason="tensorboard is not installed")
def test_tensorboard_event_files_are_written(tmp_path):
    run(tmp_path)
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
