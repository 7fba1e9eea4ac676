"""Shared fixtures: a per-session data root so generated datasets are built once, and helpers
to register throwaway plugins hermetically (registered, then unregistered and the registry reset)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """All tests share one data root (ROBUST_DATA), never the user's."""
    root = Path(os.environ.get("ROBUST_TEST_DATA") or tmp_path_factory.mktemp("robust-data"))
    old = os.environ.get("ROBUST_DATA")
    os.environ["ROBUST_DATA"] = str(root)
    yield root
    if old is None:
        os.environ.pop("ROBUST_DATA", None)
    else:
        os.environ["ROBUST_DATA"] = old


@contextlib.contextmanager
def registered(plugin: object, name: str) -> Iterator[None]:
    """Register ``plugin`` for the duration of a ``with`` block (datasette's testing pattern)."""
    from robust.plugins import load_plugins, pm
    from robust.registry import reset_registry

    load_plugins()
    if pm.is_registered(plugin):  # already loaded from its entry point
        yield
        return
    pm.register(plugin, name=name)
    reset_registry()
    try:
        yield
    finally:
        pm.unregister(name=name)
        reset_registry()


@pytest.fixture
def register_plugin():
    """``with register_plugin(obj, "name"): ...``"""
    return registered
