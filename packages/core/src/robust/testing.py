"""A test kit for plugin authors (and this repository's packages), as pytest's ``pytester`` is for
pytest plugins: a tiny in-memory dataset, hermetic plugin registration, a one-call run, and a check
of a plugin's registrations.

Use it from a ``conftest.py``::

    pytest_plugins = ("robust.testing",)   # fixtures: robust_data_root (autouse), register_plugin, one_thread

and in tests::

    from robust.testing import registered, tiny_run, check_registrations

    def test_my_method_runs(tmp_path):
        summary = tiny_run("my-method", tmp_path / "run", sets=["lr=0.01"])
        assert summary["selection"]

    def test_my_plugin_registrations():
        assert check_registrations("my_plugin") == []

``tiny`` (registered by :func:`tiny_dataset` or by the fixture ``register_plugin(TinyDatasetPlugin(), ...)``)
is 96 + 40 + 40 images of 3x8x8 with two classes, a spurious colour (group = 2·label + bias),
foreground masks and boxes: enough to exercise any method's code path in a second on a CPU.
``CrashAt(n)`` (a plugin) raises :class:`Crash` at the n-th evaluation, to test resuming.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from robust.config import DatasetConfig
from robust.hookspecs import hookimpl


class TinyConfig(DatasetConfig):
    n_train: int = 96
    spurious: float = 0.9


def _split(n: int, spurious: float, seed: int) -> Any:
    import torch

    from robust.data import ArraySplit

    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=gen)
    agree = torch.rand(n, generator=gen) < spurious
    bias = torch.where(agree, y, 1 - y)
    images = torch.randint(0, 60, (n, 3, 8, 8), generator=gen, dtype=torch.uint8)
    images[:, 0, :4] += (y * 120).to(torch.uint8)[:, None, None]  # the core feature: top half, red
    images[:, 2] += (bias * 100).to(torch.uint8)[:, None, None]  # the spurious one: all of blue
    masks = torch.zeros(n, 1, 8, 8, dtype=torch.uint8)
    masks[:, :, :4] = 255
    bboxes = torch.tensor([[0, 0, 8, 4]] * n)
    return ArraySplit(labels=y, groups=2 * y + bias, bias=bias, bboxes=bboxes, images=images, masks=masks)


def load_tiny(config: TinyConfig, data_root: Any = None) -> Any:
    """The ``tiny`` dataset (a :class:`robust.data.DatasetBundle`)."""
    from robust.data import DatasetBundle, DatasetInfo

    info = DatasetInfo(
        name="tiny",
        num_classes=2,
        input_shape=(3, 8, 8),
        class_names=["a", "b"],
        group_names=["a_0", "a_1", "b_0", "b_1"],
        bias_names=["0", "1"],
        train_augment="crop_flip",
    )
    splits = {
        "train": _split(config.n_train, config.spurious, 0),
        "val": _split(40, 0.5, 1),
        "test": _split(40, 0.5, 2),
    }
    return DatasetBundle(info, splits)


class TinyDatasetPlugin:
    """Registers the ``tiny`` dataset (default model: ``mlp``)."""

    @hookimpl
    def register_datasets(self, register):
        register("tiny", load_tiny, config=TinyConfig, description="tiny test data", default_model="mlp")


#: One paper result of a toy method, as a method package's paper_results.toml would give it.
TOY_PAPER_RESULT: dict[str, Any] = {
    "method": "toy",
    "dataset": "toyset",
    "metric": "test/worst_group_acc",
    "value": 0.8,
    "std": 0.01,
    "source": "Toy et al., Table 2",
    "selection": "oracle_test",
    "dataset_options": {"conflict_pct": 1},
    "train_group_labels": False,
    "val_group_labels": False,
    "model": "mlp",
}


class ToyPaperResults:
    """Registers :data:`TOY_PAPER_RESULT` (tests of the paper results and of reports against them)."""

    @hookimpl
    def register_paper_results(self, register):
        register(**TOY_PAPER_RESULT)


@contextlib.contextmanager
def registered(plugin: object, name: str) -> Iterator[None]:
    """Register ``plugin`` for the duration of a ``with`` block, then unregister it and rebuild the
    registry (datasette's testing pattern): tests never leak plugins into each other."""
    from robust.plugins import load_plugins, pm
    from robust.registry import reset_registry

    load_plugins()
    if pm.is_registered(plugin) or pm.get_plugin(name) is not None:  # already loaded
        yield
        return
    pm.register(plugin, name=name)
    reset_registry()
    try:
        yield
    finally:
        pm.unregister(name=name)
        reset_registry()


@contextlib.contextmanager
def tiny_dataset() -> Iterator[None]:
    """The ``tiny`` dataset registered for the duration of a ``with`` block."""
    with registered(TinyDatasetPlugin(), "robust-testing-tiny"):
        yield


def tiny_run(
    method: str,
    out: str | Path,
    *,
    sets: Sequence[str] = (),
    dataset: str = "tiny",
    epochs: int | None = 1,
    **flags: Any,
) -> dict[str, Any]:
    """Train ``method`` on the tiny dataset into ``out`` on the CPU and return its summary (``steps=N``
    trains N steps instead of ``epochs``)."""
    from robust.engine import Run
    from robust.resolve import resolve_run_config

    with tiny_dataset():
        given = {"epochs": epochs if flags.get("steps") is None else None, "device": "cpu", **flags}
        resolved = resolve_run_config(method, dataset=dataset, sets=list(sets), flags=given)
        return Run(resolved, out).fit()


class Crash(Exception):
    """Raised by :class:`CrashAt`."""


class CrashAt:
    """A lifecycle plugin that kills a run at its ``evaluation``-th evaluation, as a SIGKILL would
    mid-run: register it (``registered(CrashAt(2), "crash")``), expect :class:`Crash`, then resume."""

    def __init__(self, evaluation: int) -> None:
        self.evaluation = evaluation
        self.seen = 0

    @hookimpl
    def on_evaluation(self, run: Any, record: Any) -> None:
        self.seen += 1
        if self.seen == self.evaluation:
            raise Crash


def check_registrations(plugin: str | None = None) -> list[str]:
    """Problems with the registrations of ``plugin`` (its name in ``robust list plugins``; None: all):
    every lazy reference must import, and every option of every config must have a description."""
    from robust.registry import KINDS, get_registry

    registry = get_registry()
    problems = []
    for kind in KINDS:
        for entry in registry.entries(kind):
            if plugin is not None and entry.plugin != plugin:
                continue
            try:
                entry.load()
                config = entry.load() if kind == "options" else entry.load_config()
            except Exception as exc:
                problems.append(f"{entry.owner}: {exc}")
                continue
            for name, field in getattr(config, "model_fields", {}).items():
                if not field.description:
                    problems.append(f"{entry.owner}: option {name!r} has no description")
    return problems


# -- pytest fixtures (``pytest_plugins = ("robust.testing",)``) --------------------------------

try:
    import pytest
except ImportError:  # pragma: no cover - the kit is importable without pytest
    pytest = None

if pytest is not None:

    @pytest.fixture(scope="session", autouse=True)
    def robust_data_root(tmp_path_factory: Any) -> Iterator[Path]:
        """All tests share one data root (ROBUST_DATA), never the user's."""
        root = Path(os.environ.get("ROBUST_TEST_DATA") or tmp_path_factory.mktemp("robust-data"))
        old = os.environ.get("ROBUST_DATA")
        os.environ["ROBUST_DATA"] = str(root)
        yield root
        if old is None:
            os.environ.pop("ROBUST_DATA", None)
        else:
            os.environ["ROBUST_DATA"] = old

    @pytest.fixture
    def register_plugin() -> Any:
        """``with register_plugin(obj, "name"): ...``"""
        return registered

    @pytest.fixture(scope="module")
    def one_thread() -> Iterator[None]:
        """One intra-op thread for the module: on tiny tensors and a busy machine, torch's threads only
        wait for each other."""
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        yield
        torch.set_num_threads(threads)
