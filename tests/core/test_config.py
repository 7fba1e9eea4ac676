"""Config resolution: presets, sources in order, --set routing."""

from __future__ import annotations

import pytest

from robust.errors import ConfigError
from robust.resolve import resolve_run_config


def test_dataset_picks_the_method_preset_and_user_options_win(tmp_path):
    auto = resolve_run_config("erm", dataset="synthetic-waterbirds").config
    assert auto.preset == "synthetic" and auto.method["optimizer"] == "adam" and auto.train.epochs == 8
    file = tmp_path / "run.toml"
    file.write_text("[method]\nlr = 0.5\n[train]\nepochs = 4\n")
    mine = resolve_run_config(
        "erm", dataset="synthetic-waterbirds", config_file=str(file), sets=["lr=0.25"], flags={"epochs": 2}
    ).config
    assert mine.method["optimizer"] == "adam"  # from the preset
    assert mine.method["lr"] == 0.25  # --set beats the file
    assert mine.train.epochs == 2  # the flag beats both


def test_named_preset_and_unknown_preset():
    assert resolve_run_config("erm", dataset="synthetic-cmnist", sets=["preset=celeba"]).config.method["lr"] == 1e-4
    with pytest.raises(ConfigError, match=r"has no preset 'nope'.*celeba, synthetic, waterbirds"):
        resolve_run_config("erm", dataset="synthetic-cmnist", sets=["preset=nope"])


def test_set_routing():
    config = resolve_run_config(
        "erm", dataset="synthetic-cmnist", sets=["momentum=0.5", "batch_size=32", "dataset.conflict_pct=2", "seed=7"]
    ).config
    assert config.method["momentum"] == 0.5 and config.train.batch_size == 32
    assert config.dataset["conflict_pct"] == 2 and config.seed == 7
