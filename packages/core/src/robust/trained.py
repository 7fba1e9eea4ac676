"""The classifier a finished (or interrupted) run trained, read back from its run directory.

Methods that start from a trained model (PruSC's pruning, IRM with annotation-free environments,
group discovery, probes) take it from another run directory instead of training it again. The
classifier of any method is its ``model`` attribute (the method contract), so its weights are the
``model.*`` entries of a checkpoint's module state.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from robust.checkpoint import load_checkpoint
from robust.data import DatasetBundle
from robust.errors import CheckpointError, RunDirError
from robust.models.classifier import Classifier, build_registered_model
from robust.results import RunDir


def trained_weights(
    run_dir: str | Path,
    checkpoint: str = "last",
    map_location: str | torch.device = "cpu",
    keys: tuple[str, ...] = ("model",),
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """``(config, classifier state dict)`` of a run directory.

    ``checkpoint``: ``last`` (the resume point: the model as training left it), a selection
    rule (``best_val_worst_group``...: the model kept for that rule), or ``phase-NAME`` (the
    model at the end of that phase of a multi-phase run, e.g. PruSC's ``phase-erm``). ``keys``:
    the config.json entries the caller needs, checked (a damaged file is named, with the key).
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
    holder = payload.get("method", payload)
    modules = holder.get("modules") if isinstance(holder, dict) else None
    if not isinstance(modules, dict):
        raise CheckpointError(
            f"Checkpoint {str(path)!r} holds no module weights (no 'modules' table): it was damaged or not "
            "written by a robust run. Pick another checkpoint of the run, or train it again."
        )
    weights = holder.get("classifier")  # Method.classifier, the declared one
    if not isinstance(weights, dict):  # checkpoints written before the classifier was declared
        weights = {k[len("model.") :]: v for k, v in modules.items() if k.startswith("model.")}
    if not weights:
        raise RunDirError(
            f"The checkpoint {str(path)!r} holds no classifier: its method declares none (Method.classifier), so "
            "it cannot be reused as a trained classifier."
        )
    return run.read_config(keys), weights


@dataclass
class TrainedRun:
    """A run directory's classifier (eval mode, on ``device``), its dataset and its config."""

    config: dict[str, Any]
    model: Classifier
    data: DatasetBundle
    device: torch.device


def load_trained_run(
    run_dir: str | Path,
    checkpoint: str = "last",
    device: str | torch.device = "cpu",
    data_root: str | Path | None = None,
) -> TrainedRun:
    """Rebuild the classifier of ``run_dir`` from its config (model and options, the dataset's
    classes and input shape) and load its weights: for analyses of any finished run."""
    from robust.datasets import load_dataset
    from robust.registry import get_registry

    device = torch.device(device)
    config, weights = trained_weights(run_dir, checkpoint, map_location=device, keys=("dataset", "model"))
    dataset = dict(config.get("dataset", {}))
    data = load_dataset(dataset.pop("name"), dataset, data_root or config.get("data_root"))
    model_options = dict(config.get("model", {}))
    entry = get_registry().get("model", model_options.pop("name"))
    model = build_registered_model(entry, model_options, data.info.num_classes, data.info.input_shape)
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise RunDirError(
            f"The weights in {str(run_dir)!r} do not fit the model its config.json describes "
            f"({str(exc).splitlines()[0]}): the run directory was changed after training."
        ) from None
    return TrainedRun(config, model.to(device).eval(), data, device)
