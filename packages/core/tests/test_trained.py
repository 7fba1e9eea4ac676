"""robust.trained: the classifier of a run directory, with clear errors for what is not one."""

from __future__ import annotations

import json

import pytest
import torch

from robust.checkpoint import save_checkpoint
from robust.errors import RunDirError
from robust.trained import trained_weights


def make_run_dir(path, modules):
    (path / "checkpoints").mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model": {"name": "mlp"}}))
    save_checkpoint(path / "checkpoints" / "last.pt", {"engine": {}, "method": {"modules": modules}})
    save_checkpoint(path / "checkpoints" / "best_val_avg.pt", {"modules": {k: v + 1 for k, v in modules.items()}})


def test_weights_of_the_last_and_of_a_selected_checkpoint(tmp_path):
    make_run_dir(tmp_path, {"model.head.weight": torch.zeros(2, 3), "other.x": torch.ones(1)})
    config, last = trained_weights(tmp_path)
    assert config["model"]["name"] == "mlp" and list(last) == ["head.weight"] and last["head.weight"].sum() == 0
    _, best = trained_weights(tmp_path, "best_val_avg")
    assert best["head.weight"].sum() == 6


def test_clear_errors(tmp_path):
    with pytest.raises(RunDirError, match="not a run directory"):
        trained_weights(tmp_path)
    make_run_dir(tmp_path / "run", {"model.head.weight": torch.zeros(1)})
    with pytest.raises(RunDirError, match=r"no 'best_val_worst_group' checkpoint.*best_val_avg, last"):
        trained_weights(tmp_path / "run", "best_val_worst_group")
    make_run_dir(tmp_path / "two", {"model_b.head.weight": torch.zeros(1)})
    with pytest.raises(RunDirError, match="holds no classifier"):
        trained_weights(tmp_path / "two")
