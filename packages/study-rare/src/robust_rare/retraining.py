"""Incremental retraining, the study's second way of removing learnt spurious examples.

As the reference (``experiments/incremental_retraining.py``, ``spurious_ml/models/torch_base.py``
``load``, ``torch_model.py`` ``fit(..., with_scheduler=False)``): delete the spurious examples from
the training set, load the trained model together with its optimizer's state, and keep training
without a schedule. The optimizer's state carries the learning rate the schedule had decayed to
(0.01 · 0.1³ = 1e-5 after the study's 70 epochs), Adam's moments and SGD's momentum: retraining
continues gently from where training stopped. A fresh optimizer at 0.01 would shake the model far
more, and the study's finding (retraining does not remove the pattern) is about the continuation.

The reference's epoch loop resumes at the saved epoch counter (70) and runs through ``--epochs 140``
inclusive, so it trains one epoch more than the first run did: our default length.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from robust.api import ConfigError, Method, Run, RunDir, RunDirError, load_checkpoint, resolve_run_config


def source_optimizer_states(run_dir: str | Path) -> dict[str, Any]:
    """The optimizer states in ``run_dir``'s last checkpoint (the end of its training)."""
    run = RunDir(run_dir)
    payload = load_checkpoint(run.checkpoint_path)
    states = payload.get("method", {}).get("optimizers")
    if not states:
        raise ConfigError(
            f"Run {str(run_dir)!r} has no optimizer state in its last checkpoint (a model edited by `robust rare "
            "remove --how influence` keeps only weights), so its training cannot be continued as the study does. "
            "Retrain from the run that trained the model."
        )
    return states


def load_optimizer_states(method: Method, states: dict[str, Any], source: str | Path) -> None:
    """Load each of ``method``'s optimizers from ``states`` (learning rate, moments, step counts)."""
    missing = sorted(set(method.optimizers) - set(states))
    if missing:
        raise ConfigError(
            f"Run {str(source)!r} saved optimizers {', '.join(sorted(states))} but this run has "
            f"{', '.join(sorted(method.optimizers))}: retrain with the method the run was trained with."
        )
    for name, optimizer in method.optimizers.items():
        try:
            optimizer.load_state_dict(states[name])
        except ValueError as exc:
            raise ConfigError(
                f"The optimizer state {name!r} of run {str(source)!r} does not fit this run's ({exc}). Retrain with "
                "the run's own model and options."
            ) from None


def retraining_run(
    run_dir: str | Path, out: str | Path, *, epochs: int | None = None, device: str | None = None, quiet: bool = True
) -> Run:
    """The run (not yet trained) that continues ``run_dir`` without its planted examples, as the study.

    Its config is the source's with ``dataset.drop_planted=true``, ``train.init_from=RUN_DIR`` and no
    schedule; its optimizers start from the source's last checkpoint (whose learning rate, weight decay
    and momentum replace the configured ones, as the reference's ``optimizer.load_state_dict``).
    ``epochs``: default the source's plus one (the reference's 71 epochs after 70).
    """
    source = RunDir(run_dir)
    if not source.config_path.is_file():
        raise RunDirError(
            f"{str(run_dir)!r} is not a run directory (no config.json): expected the --out directory of the run "
            "whose training to continue."
        )
    config = source.read_config()
    states = source_optimizer_states(run_dir)
    sets = ["dataset.drop_planted=true", f"train.init_from={run_dir}", "schedule=constant"]
    resolved = resolve_run_config(
        config["method"]["name"],
        dataset=config["dataset"]["name"],
        model=config["model"]["name"],
        sets=sets,
        flags={"epochs": epochs or config["train"]["epochs"] + 1, "device": device},
        base=config,
    )
    run = Run(resolved, out, quiet=quiet)
    load_optimizer_states(run.method, states, run_dir)
    return run
