"""The root tests (documentation, architecture, example plugin, CLI and integration tests) use robust's
test kit (robust.testing): a per-session data root so generated datasets are built once
(``robust_data_root``, also as ``data_root``), ``register_plugin`` to register throwaway plugins
hermetically, ``one_thread``."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ("robust.testing",)


@pytest.fixture(scope="session")
def data_root(robust_data_root: Path) -> Path:
    return robust_data_root
