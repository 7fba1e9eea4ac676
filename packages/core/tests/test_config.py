"""Config resolution: presets, sources in order, --set routing."""

from __future__ import annotations

from typing import ClassVar

import pytest

from robust import hookimpl
from robust.erm import ERM
from robust.errors import ConfigError
from robust.resolve import resolve_run_config

from .tiny import TinyPlugin


class PresetERM(ERM):
    """ERM whose `synthetic` preset is picked for the tiny dataset (as ERM's is for the generated ones)."""

    dataset_presets: ClassVar[dict[str, str]] = {"tiny": "synthetic"}


class PresetPlugin:
    @hookimpl
    def register_methods(self, register):
        register("preset-erm", PresetERM)


@pytest.fixture(autouse=True)
def tiny(register_plugin):
    with register_plugin(TinyPlugin(), "tiny-test-plugin"), register_plugin(PresetPlugin(), "preset-test-plugin"):
        yield


def test_dataset_picks_the_method_preset_and_user_options_win(tmp_path):
    auto = resolve_run_config("preset-erm", dataset="tiny").config
    assert auto.preset == "synthetic" and auto.method["optimizer"] == "adam" and auto.train.epochs == 8
    file = tmp_path / "run.toml"
    file.write_text("[method]\nlr = 0.5\n[train]\nepochs = 4\n")
    mine = resolve_run_config(
        "preset-erm", dataset="tiny", config_file=str(file), sets=["lr=0.25"], flags={"epochs": 2}
    ).config
    assert mine.method["optimizer"] == "adam"  # from the preset
    assert mine.method["lr"] == 0.25  # --set beats the file
    assert mine.train.epochs == 2  # the flag beats both


def test_named_preset_and_unknown_preset():
    assert resolve_run_config("erm", dataset="tiny", sets=["preset=celeba"]).config.method["lr"] == 1e-4
    with pytest.raises(ConfigError, match=r"has no preset 'nope'.*celeba, synthetic, waterbirds"):
        resolve_run_config("erm", dataset="tiny", sets=["preset=nope"])


def test_set_routing():
    config = resolve_run_config(
        "erm", dataset="tiny", sets=["momentum=0.5", "batch_size=32", "dataset.spurious=0.7", "seed=7"]
    ).config
    assert config.method["momentum"] == 0.5 and config.train.batch_size == 32
    assert config.dataset["spurious"] == 0.7 and config.seed == 7


# --- bad config input: one paragraph naming the file and the key (issue 18) -------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[dataset]\nname = 5\n", r"dataset\.name must be a name .*got 5 \(int\)"),  # was AttributeError
        ('[dataset]\nname = ["a"]\n', r"dataset\.name must be a name"),  # was TypeError: unhashable
        ('preset = [1]\n[dataset]\nname = "tiny"\n', r"preset must be a name"),  # was TypeError
        ('[dataset]\nname = "tiny"\n[model]\nname = 3\n', r"model\.name must be a name"),
        ('[dataset]\nname = "tiny"\nn_train = "big"\n', r"'n_train'.*got 'big'"),
        ('[dataset]\nname = "tiny"\n[dataset.n_train]\nx = 1\n', r"'n_train'.*got \{'x': 1\}"),
        ("dataset = 3\n", r"'dataset' must be a table"),
        ('seed = -1\n[dataset]\nname = "tiny"\n', r"'seed': Input should be greater than or equal to 0"),
        (
            'seed = 99999999999999999999\n[dataset]\nname = "tiny"\n',
            r"'seed': Input should be less than or equal to 9223372036854775807",
        ),
        ("seed = [", r"not valid TOML"),
    ],
)
def test_bad_config_files_name_the_file_and_the_key(tmp_path, text, message):
    file = tmp_path / "bad.toml"
    file.write_text(text)
    with pytest.raises(ConfigError, match=message) as caught:
        resolve_run_config("erm", config_file=str(file))
    assert str(file) in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("seed=-5", r"'seed': Input should be greater than or equal to 0"),  # torch.manual_seed raised mid-run
        ("seed=1e400", r"'seed': Input should be a finite number"),
        ("preset=[1]", r"preset must be a name"),
        ("lr=" + "[" * 5000, r"'lr': Input should be a valid number"),  # RecursionError inside tomllib
        ("lr=1\nmomentum = 0.5", r"'lr': Input should be a valid number"),  # one literal, not a TOML document
        ("=1", r"Cannot parse --set '=1'"),
    ],
)
def test_malformed_set_values_are_config_errors(item, message):
    with pytest.raises(ConfigError, match=message):
        resolve_run_config("erm", dataset="tiny", sets=[item])
