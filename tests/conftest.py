"""Shared fixtures from robust's test kit (robust.testing): a per-session data root so generated
datasets are built once (``robust_data_root``, also as ``data_root``), and ``register_plugin`` to
register throwaway plugins hermetically (registered, then unregistered and the registry reset)."""

from __future__ import annotations

from pathlib import Path

import pytest

from robust.testing import registered  # noqa: F401  (tests import it from here)

pytest_plugins = ("robust.testing",)


@pytest.fixture(scope="session")
def data_root(robust_data_root: Path) -> Path:
    return robust_data_root
