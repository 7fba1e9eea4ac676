"""Checkpoints: written atomically, read with ``weights_only=True`` (no arbitrary code on load)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from robust.atomic import atomic_write
from robust.errors import CheckpointError

FORMAT = "robust-checkpoint-v1"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` so that a crash leaves the previous checkpoint intact."""
    payload = {"format": FORMAT, **state}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, with an actionable error otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"No checkpoint at {str(path)!r}. A run directory gets checkpoints/last.pt after its first "
            "epoch; start the run without --resume, or point --out at the directory of an interrupted run."
        )
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise CheckpointError(
            f"Checkpoint {str(path)!r} is corrupt or was not written by robust ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'unreadable'}). Delete it (and its run directory) "
            "to start the run again, or restore it from a backup."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{str(path)!r} is a torch file but not a robust checkpoint (expected format {FORMAT!r}). "
            "Point --out at a run directory made by `robust run`, or delete the file to start over."
        )
    return payload


#: What the engine's resume point holds (``checkpoints/last.pt``, ``phase-NAME.pt``).
ENGINE_KEYS = ("phase", "started", "epoch", "batch", "phase_step", "global_step", "elapsed", "history", "selector")


def load_training_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint to resume training from: :func:`load_checkpoint`, and the engine and method
    state it must hold (a model-only checkpoint, or one with keys missing, is named as such)."""
    payload = load_checkpoint(path, map_location)
    engine, method = payload.get("engine"), payload.get("method")
    missing = [f"engine.{k}" for k in ENGINE_KEYS if not isinstance(engine, dict) or k not in engine]
    if not isinstance(method, dict) or "modules" not in method:
        missing.append("method.modules")
    if missing:
        raise CheckpointError(
            f"Checkpoint {str(path)!r} cannot be resumed from: it lacks {', '.join(missing[:4])}"
            f"{' ...' if len(missing) > 4 else ''} (it holds model weights only, or was damaged). Start the run "
            "again in a new --out directory, or restore the file from a backup."
        )
    return payload
