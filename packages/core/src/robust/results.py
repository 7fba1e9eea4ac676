"""The run directory: what a run leaves behind, every file written atomically.

::

    RUN_DIR/
      config.json        fully resolved config, package versions
      history.h5         one row per evaluation: phase, epoch, step, every metric (h5py)
      summary.json       final metrics for val and test under each selection rule
      checkpoints/last.pt                  the resume point (written after every epoch)
      checkpoints/phase-<name>.pt          the state at the end of each phase (to rerun the next one)
      checkpoints/<rule>.pt                model weights at the best evaluation under a val rule
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from robust.atomic import atomic_write, atomic_write_json
from robust.errors import RunDirError

CONFIG = "config.json"
HISTORY = "history.h5"
SUMMARY = "summary.json"


class RunDir:
    """Paths and writers for one run's directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def history_path(self) -> Path:
        return self.path / HISTORY

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoints" / "last.pt"

    def best_path(self, rule: str) -> Path:
        return self.path / "checkpoints" / f"{rule}.pt"

    def phase_path(self, phase: str) -> Path:
        """The state saved when ``phase`` ended: where a rerun of the phase after it starts."""
        return self.path / "checkpoints" / f"phase-{phase}.pt"

    def is_finished(self) -> bool:
        return self.summary_path.is_file()

    def check(self, resume: bool, rerun: str | None = None) -> None:
        """Before any work: refuse to mix two runs, and make sure a resume has something to resume."""
        if rerun is not None:
            if not self.config_path.is_file():
                raise RunDirError(
                    f"Cannot rerun phase {rerun!r}: {str(self.path)!r} holds no run (no {CONFIG}). Pass --out "
                    "with the directory of a run of this method, or drop --rerun to start a new one."
                )
            return
        if resume:
            if not self.config_path.is_file():
                raise RunDirError(
                    f"Cannot resume: {str(self.path)!r} holds no run (no {CONFIG}). Pass --out with the "
                    "directory of the interrupted run, or drop --resume to start a new one."
                )
            if self.is_finished():
                raise RunDirError(
                    f"Run {str(self.path)!r} already finished ({SUMMARY} exists); there is nothing to resume. "
                    "Use a new --out directory to train again."
                )
        elif self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            raise RunDirError(
                f"Run directory {str(self.path)!r} already exists and is not empty; two runs in one "
                "directory would mix their results. Choose another --out, delete the directory, or pass "
                "--resume to continue an interrupted run there."
            )

    def claim(self, config: dict[str, Any], resume: bool, rerun: str | None = None) -> None:
        """Write config.json for a new run; for a resumed one, check it is the same run. A rerun
        keeps method, dataset, model and seed but may change options: its config replaces the old."""
        self.check(resume, rerun)
        if rerun is not None:
            previous = self.read_config()
            for key in ("dataset", "model", "seed"):
                if previous.get(key) != config.get(key):
                    raise RunDirError(
                        f"Cannot rerun phase {rerun!r} of {str(self.path)!r}: its {key} is {previous.get(key)!r} "
                        f"but this command asks for {config.get(key)!r}. A rerun continues the same run with other "
                        "method options; use a new --out directory for another dataset, model or seed."
                    )
            if previous.get("method", {}).get("name") != config.get("method", {}).get("name"):
                raise RunDirError(
                    f"Cannot rerun phase {rerun!r} of {str(self.path)!r}: it is a run of method "
                    f"{previous.get('method', {}).get('name')!r}. Name that method, or use a new --out directory."
                )
            self.summary_path.unlink(missing_ok=True)  # not finished any more: resumable if interrupted
            for path in (self.path / "checkpoints").glob("*.pt"):
                if path.name != "last.pt" and not path.name.startswith("phase-"):
                    path.unlink()  # selection restarts with the rerun: stale best weights go
            atomic_write_json(self.config_path, config)
            return
        if resume:
            previous = self.read_config()
            for key in ("method", "dataset", "model", "seed", "train"):
                if previous.get(key) != config.get(key):
                    raise RunDirError(
                        f"Cannot resume {str(self.path)!r}: its {key} is {previous.get(key)!r} but this "
                        f"command asks for {config.get(key)!r}. Resume with the original options, or use a "
                        "new --out directory."
                    )
            return
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.config_path, config)

    def read_config(self) -> dict[str, Any]:
        return json.loads(self.config_path.read_text(encoding="utf-8"))

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.summary_path, summary)

    def read_summary(self) -> dict[str, Any]:
        return json.loads(self.summary_path.read_text(encoding="utf-8"))

    def write_history(self, records: list[dict[str, Any]]) -> None:
        """Rewrite history.h5 from all evaluation records (small; rewriting keeps it atomic)."""
        atomic_write(self.history_path, lambda tmp: _write_history_file(tmp, records))


def _write_history_file(path: Path, records: list[dict[str, Any]]) -> None:
    """One (records x metrics) float64 table and its column names: a few datasets whatever the number
    of metrics (one dataset per metric made every rewrite cost ~0.1 s with 100 groups)."""
    keys = sorted({k for r in records for k in r["metrics"]})
    table = np.array([[r["metrics"].get(k, math.nan) for k in keys] for r in records], dtype=np.float64)
    with h5py.File(path, "w") as handle:
        handle.attrs["format"] = "robust-history-v2"
        handle.create_dataset("phase", data=np.array([r["phase"] for r in records], dtype=h5py.string_dtype()))
        handle.create_dataset("epoch", data=np.array([r["epoch"] for r in records], dtype=np.int64))
        handle.create_dataset("step", data=np.array([r["step"] for r in records], dtype=np.int64))
        handle.create_dataset("metric_names", data=np.array(keys, dtype=h5py.string_dtype()))
        handle.create_dataset("metrics", data=table.reshape(len(records), len(keys)))


def read_history(path: str | Path) -> dict[str, np.ndarray]:
    """history.h5 as flat arrays: ``phase``, ``epoch``, ``step`` and ``"val/avg_acc"``-style keys."""
    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as handle:
        out["phase"] = np.array([p.decode() if isinstance(p, bytes) else p for p in handle["phase"][()]])
        out["epoch"] = handle["epoch"][()]
        out["step"] = handle["step"][()]
        if "metric_names" in handle:  # robust-history-v2: one table
            names = [n.decode() if isinstance(n, bytes) else n for n in handle["metric_names"][()]]
            table = handle["metrics"][()]
            out.update({name: table[:, i] for i, name in enumerate(names)})
        elif "metrics" in handle:  # v1: one dataset per metric

            def visit(name: str, obj: Any) -> None:
                if isinstance(obj, h5py.Dataset):
                    out[name] = obj[()]

            handle["metrics"].visititems(visit)
    return out
