"""The classifier a finished (or interrupted) run trained, read back from its run directory.

Methods that start from a trained model (PruSC's pruning, IRM with annotation-free environments,
group discovery, probes) take it from another run directory instead of training it again. The
classifier of any method is its ``model`` attribute (the method contract), so its weights are the
``model.*`` entries of a checkpoint's module state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from robust.checkpoint import load_checkpoint
from robust.errors import RunDirError
from robust.results import RunDir


def trained_weights(
    run_dir: str | Path, checkpoint: str = "last", map_location: str | torch.device = "cpu"
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """``(config, classifier state dict)`` of a run directory.

    ``checkpoint``: ``last`` (the resume point: the model as training left it), a selection
    rule (``best_val_worst_group``...: the model kept for that rule), or ``phase-NAME`` (the
    model at the end of that phase of a multi-phase run, e.g. PruSC's ``phase-erm``).
    """
    run = RunDir(run_dir)
    if not run.config_path.is_file():
        raise RunDirError(
            f"{str(run.path)!r} is not a run directory (no config.json): expected the --out directory of a "
            "`robust run` whose classifier to start from."
        )
    path = run.checkpoint_path if checkpoint == "last" else run.best_path(checkpoint)
    if not path.is_file():
        kept = sorted(p.stem for p in (run.path / "checkpoints").glob("*.pt") if not p.stem.startswith("phase-"))
        raise RunDirError(
            f"Run {str(run.path)!r} has no {checkpoint!r} checkpoint ({path.name}); it has: "
            f"{', '.join(kept) or 'none (it stopped before its first checkpoint)'}. Pick one of those, or let the "
            "run finish (robust run ... --resume)."
        )
    payload = load_checkpoint(path, map_location=map_location)
    modules = payload["method"]["modules"] if "method" in payload else payload["modules"]
    weights = {k[len("model.") :]: v for k, v in modules.items() if k.startswith("model.")}
    if not weights:
        raise RunDirError(
            f"The checkpoint {str(path)!r} holds no classifier (no 'model.' weights): its method keeps its "
            "networks under other names, so it cannot be reused as a trained classifier."
        )
    return run.read_config(), weights
