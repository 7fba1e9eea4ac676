"""The run directory: what a run leaves behind, every file written atomically.

::

    RUN_DIR/
      config.json        fully resolved config, package versions
      history.h5         one row per evaluation: phase, epoch, step, every metric (h5py)
      summary.json       final metrics for val and test under each selection rule
      checkpoints/last.pt                  the resume point (written after every epoch)
      checkpoints/phase-<name>.pt          the state at the end of each phase (to rerun the next one)
      checkpoints/<rule>.pt                model weights at the best evaluation under a val rule
      .run.lock, .run.pid                  one writer at a time (:mod:`robust.runlock`)
      .rerun-backup/                       a rerun's predecessor, kept until the rerun finishes

Other commands write their own files beside these (:data:`RUN_FILES`); no two commands share a
name, so no command overwrites another's results.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from robust.atomic import atomic_write, atomic_write_json, remove_leftovers
from robust.errors import RunDirError
from robust.runlock import LOCK, PID

CONFIG = "config.json"
HISTORY = "history.h5"
SUMMARY = "summary.json"
CHECKPOINTS = "checkpoints"
BACKUP = ".rerun-backup"
#: What a config.json must hold for a run to be resumed or rerun, and the type of each.
CONFIG_KEYS: dict[str, type] = {"method": dict, "dataset": dict, "model": dict, "seed": int, "train": dict}

#: Every name a command writes into a run directory (globs, relative to it), by command. Names are
#: never shared, so a command refuses to write a name that another command owns
#: (:func:`check_output`). The method files (PruSC's clusters and sparsity, the TensorBoard logger)
#: are written during a run, so ``robust run`` owns them; ``robust rare remove`` makes a new run
#: directory and writes a run's files (config.json, checkpoints/last.pt) there, as ``robust run``.
RUN_FILES: dict[str, tuple[str, ...]] = {
    "robust run": (
        CONFIG,
        HISTORY,
        SUMMARY,
        f"{CHECKPOINTS}/*.pt",
        LOCK,
        PID,
        f"{BACKUP}/*",
        "clusters.csv",
        "clusters.json",
        "sparsity.json",
        "tensorboard/*",
    ),
    "robust discover": ("groups.csv", "groups.json"),
    "robust rare spurious-score": ("spurious_score-*.json",),
    "robust rare membership": ("membership.json",),
    "robust cfgen preview": ("cfgen-preview.png",),
}


def owner_of(name: str) -> str | None:
    """The command that owns ``name`` (a path relative to a run directory, ``/``-separated), if any."""
    for command, patterns in RUN_FILES.items():
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
            return command
    return None


def run_root(path: Path) -> Path | None:
    """The run directory that ``path`` is in (the nearest of its parents holding config.json), if any."""
    for parent in list(path.parents)[:3]:
        if (parent / CONFIG).is_file():
            return parent
    return None


def check_output(path: str | Path, command: str) -> None:
    """Refuse to write ``path`` when it is in a run directory and belongs to another command there.
    Call it before any work, for every file the command will write."""
    path = Path(path)
    root = run_root(path)
    if root is None:
        return
    name = path.relative_to(root).as_posix()
    owner = owner_of(name)
    if owner is not None and owner != command:
        raise RunDirError(
            f"{command} would write {str(path)!r}, but {name} in the run directory {str(root)!r} belongs to "
            f"{owner}: writing it would destroy that command's result. Choose another file name (with --out), "
            "or write outside the run directory."
        )


def config_changes(old: Any, new: Any, prefix: str = "") -> list[tuple[str, str, str]]:
    """``(dotted key, old value, new value)`` for every leaf where two configs differ ("unset" where a
    key is missing from one of them); values as JSON."""
    if isinstance(old, dict) and isinstance(new, dict):
        changes = []
        for key in [*old, *(k for k in new if k not in old)]:
            path = f"{prefix}.{key}" if prefix else str(key)
            changes += config_changes(old.get(key, _UNSET), new.get(key, _UNSET), path)
        return changes
    if old == new:
        return []
    return [(prefix or "(config)", _shown(old), _shown(new))]


_UNSET = object()


def _shown(value: Any) -> str:
    return "unset" if value is _UNSET else json.dumps(value, sort_keys=True)


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

    @property
    def backup_path(self) -> Path:
        return self.path / BACKUP

    def is_finished(self) -> bool:
        return self.summary_path.is_file()

    def is_empty(self) -> bool:
        """No file but the lock's (a directory that a run locked, then died before writing anything)."""
        return not self.path.exists() or (
            self.path.is_dir() and all(p.name in (LOCK, PID) or p.name.endswith(".tmp") for p in self.path.iterdir())
        )

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
                    f"Use a new --out directory to train again (if {SUMMARY} is damaged, delete it and resume "
                    "to write it again)."
                )
        elif not self.is_empty():
            raise RunDirError(
                f"Run directory {str(self.path)!r} already exists and is not empty; two runs in one "
                "directory would mix their results. Choose another --out, delete the directory, or pass "
                "--resume to continue an interrupted run there."
            )

    def check_same_run(self, config: dict[str, Any], resume: bool, rerun: str | None = None) -> None:
        """A resume continues the same run; a rerun keeps method, dataset, model and seed but may
        change options. Reads only: nothing is changed before the run is known to be able to start."""
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
        elif resume:
            previous = self.read_config()
            keys = ("method", "dataset", "model", "seed", "train")
            changes = config_changes({k: previous.get(k) for k in keys}, {k: config.get(k) for k in keys})
            if changes:
                shown = "; ".join(f"{key}: {old} → {new}" for key, old, new in changes[:8])
                more = f" (and {len(changes) - 8} more)" if len(changes) > 8 else ""
                raise RunDirError(
                    f"Cannot resume {str(self.path)!r}: this command changes {len(changes)} option"
                    f"{'s' if len(changes) > 1 else ''} of the run ({shown}{more}). A resume continues the run "
                    "as it was: drop the changed option(s) from the command (the run's config.json holds the "
                    "rest). To train with the new value(s), start a new run with another --out directory, or "
                    "rerun a phase with --rerun PHASE --out RUN_DIR where the method's options may change."
                )

    def claim(self, config: dict[str, Any], resume: bool, rerun: str | None = None) -> None:
        """Write config.json for a new run; for a resumed one, check it is the same run. A rerun's
        config is written by :meth:`begin_rerun`, once the rerun has everything it needs to start."""
        self.check(resume, rerun)
        self.check_same_run(config, resume, rerun)
        if not resume and rerun is None:
            self.path.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.config_path, config)

    # -- starting again: leftovers and reruns ----------------------------------------------

    def remove_leftovers(self) -> list[Path]:
        """The temporary files of writes that a kill interrupted (call it under the run's lock)."""
        removed = remove_leftovers(self.path) + remove_leftovers(self.path / CHECKPOINTS)
        for partial in self.path.glob(f"{BACKUP}.*.tmp"):  # a backup that was being made
            shutil.rmtree(partial, ignore_errors=True)
            removed.append(partial)
        return removed

    def _backed_up(self) -> list[str]:
        """The files a rerun may replace: the run's results and checkpoints (lock files aside)."""
        top = [p.name for p in self.path.iterdir() if p.is_file() and p.name not in (LOCK, PID)]
        checkpoints = self.path / CHECKPOINTS
        kept = [f"{CHECKPOINTS}/{p.name}" for p in checkpoints.glob("*.pt")] if checkpoints.is_dir() else []
        return sorted(top + kept)

    def _last_stamp(self) -> list[int] | None:
        try:
            stat = self.checkpoint_path.stat()
        except FileNotFoundError:
            return None
        return [stat.st_ino, stat.st_mtime_ns, stat.st_size]

    def begin_rerun(self, config: dict[str, Any]) -> None:
        """Set the finished (or interrupted) run aside, then make the directory the rerun's: its
        config, no summary, no best checkpoints of the old selection. The old files are hard links in
        ``.rerun-backup`` (made whole, then renamed in), given back by :meth:`recover` if the rerun
        stops before its first checkpoint, and dropped when the rerun finishes."""
        if self.backup_path.is_dir():  # a rerun of a rerun in progress: keep the older, finished run
            manifest = json.loads((self.backup_path / "manifest.json").read_text(encoding="utf-8"))
        else:
            staging = self.path / f"{BACKUP}.{os.getpid()}.tmp"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            names = self._backed_up()
            for name in names:
                _link_or_copy(self.path / name, staging / _backup_name(name))
            manifest = {"files": names}
            atomic_write_json(staging / "manifest.json", manifest)
            os.replace(staging, self.backup_path)
        manifest["last"] = self._last_stamp()  # the rerun has begun once last.pt is another file
        atomic_write_json(self.backup_path / "manifest.json", manifest)
        self.summary_path.unlink(missing_ok=True)  # not finished any more: resumable if interrupted
        for path in (self.path / CHECKPOINTS).glob("*.pt"):
            if path.name != "last.pt" and not path.name.startswith("phase-"):
                path.unlink()  # selection restarts with the rerun: stale best weights go
        atomic_write_json(self.config_path, config)

    def recover(self) -> str | None:
        """After a rerun stopped: if it never wrote a checkpoint, give the set-aside run back (and say
        so); if it finished, drop the backup. Call it under the run's lock."""
        if not self.backup_path.is_dir():
            return None
        if self.is_finished():
            shutil.rmtree(self.backup_path)
            return None
        manifest_path = self.backup_path / "manifest.json"
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # begun without its stamp: nothing to compare, the rerun goes on
        if self._last_stamp() != manifest.get("last"):
            return None  # the rerun has checkpointed: it is resumed, the backup kept until it finishes
        names = set(manifest.get("files", []))
        checkpoints = self.path / CHECKPOINTS
        for path in checkpoints.glob("*.pt") if checkpoints.is_dir() else []:
            if f"{CHECKPOINTS}/{path.name}" not in names:
                path.unlink()  # best weights of the stopped rerun's evaluations
        for name in names:
            source = self.backup_path / _backup_name(name)
            if source.is_file():
                os.replace(source, self.path / name)
        shutil.rmtree(self.backup_path)
        return (
            f"The rerun of {str(self.path)!r} stopped before its first checkpoint: the run as it was before it "
            "was put back."
        )

    def end_rerun(self) -> None:
        """The rerun finished (its summary is written): the run it replaced goes."""
        shutil.rmtree(self.backup_path, ignore_errors=True)

    # -- files -------------------------------------------------------------------------

    def read_config(self, keys: tuple[str, ...] = tuple(CONFIG_KEYS)) -> dict[str, Any]:
        """config.json, with ``keys`` checked (all that a resume or rerun needs, by default): one
        paragraph naming the file and the key otherwise."""
        data = _read_json(self.config_path, "the run's resolved config")
        for key in keys:
            kind, value = CONFIG_KEYS[key], data.get(key)
            if not isinstance(value, kind) or isinstance(value, bool):
                what = "missing" if key not in data else f"a {type(value).__name__}, not a {kind.__name__}"
                problem = f"its key {key!r} is {what}"
            elif kind is dict and key != "train" and not isinstance(value.get("name"), str):
                problem = f"{key}.name is missing or not a string"
            else:
                continue
            raise RunDirError(
                f"{str(self.config_path)!r} is damaged: {problem}. This file records the run's options; restore it "
                "from a backup, or start the run again in a new --out directory."
            )
        return data

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.summary_path, summary)

    def read_summary(self) -> dict[str, Any]:
        return _read_json(self.summary_path, "the run's final metrics")

    def write_history(self, records: list[dict[str, Any]]) -> None:
        """Rewrite history.h5 from all evaluation records (small; rewriting keeps it atomic)."""
        atomic_write(self.history_path, lambda tmp: _write_history_file(tmp, records))


def _backup_name(name: str) -> str:
    """``checkpoints/last.pt`` -> ``checkpoints--last.pt.previous``: flat, and never a name a reader
    looks for (``robust report`` finds runs by summary.json)."""
    return name.replace("/", "--") + ".previous"


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)  # free, and the original's inode survives its replacement
    except OSError:
        shutil.copy2(source, target)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirError(f"{str(path)!r} does not exist; it holds {what}. Point --out at a run directory.") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RunDirError(
            f"{str(path)!r} is damaged (truncated or not JSON: {str(exc).splitlines()[0]}); it holds {what}. "
            "Restore it from a backup, or start the run again in a new --out directory."
        ) from None
    if not isinstance(data, dict):
        raise RunDirError(
            f"{str(path)!r} is damaged: it holds a JSON {type(data).__name__}, not an object with {what}. "
            "Restore it from a backup, or start the run again in a new --out directory."
        )
    return data


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
    """history.h5 as flat arrays: ``phase``, ``epoch``, ``step`` and ``"val/avg_acc"``-style keys.
    A damaged file is a :class:`RunDirError` naming it (and the missing dataset)."""
    path = Path(path)
    fix = (
        "It is rewritten from the checkpoint whenever the run trains again: resume an interrupted run with "
        "--resume, or delete the file (the summary keeps the final metrics)."
    )
    try:
        handle = h5py.File(path, "r")
    except FileNotFoundError:
        raise RunDirError(f"{str(path)!r} does not exist: the run has not evaluated yet.") from None
    except OSError as exc:
        raise RunDirError(
            f"{str(path)!r} is damaged (truncated or not HDF5: {str(exc).splitlines()[0]}). {fix}"
        ) from None
    with handle:
        try:
            return _read_history(handle)
        except KeyError as exc:
            raise RunDirError(f"{str(path)!r} is damaged: it has no dataset {exc.args[0]!r}. {fix}") from None
        except (OSError, ValueError, IndexError, TypeError, AttributeError) as exc:
            raise RunDirError(f"{str(path)!r} is damaged ({type(exc).__name__}: {exc}). {fix}") from None


def _read_history(handle: h5py.File) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key in ("phase", "epoch", "step"):
        if key not in handle:
            raise KeyError(key)
    out["phase"] = np.array([p.decode() if isinstance(p, bytes) else p for p in handle["phase"][()]])
    out["epoch"] = handle["epoch"][()]
    out["step"] = handle["step"][()]
    if "metric_names" in handle:  # robust-history-v2: one table
        if "metrics" not in handle:
            raise KeyError("metrics")
        names = [n.decode() if isinstance(n, bytes) else n for n in handle["metric_names"][()]]
        table = handle["metrics"][()]
        if table.ndim != 2 or table.shape != (len(out["step"]), len(names)):
            raise ValueError(f"metrics is {table.shape}, not (rows, metric_names) = ({len(out['step'])}, {len(names)})")
        out.update({name: table[:, i] for i, name in enumerate(names)})
    elif "metrics" in handle:  # v1: one dataset per metric

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[()]

        handle["metrics"].visititems(visit)
    return out
