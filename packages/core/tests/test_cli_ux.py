"""What a user of `robust` reads (issue 19 §6-§8): --print-config, presets and allowed values in
`robust info`, flags that win over presets, resume errors that name what changed, a missing dataset
reported before torch loads, which package provides a name, the end-of-run table, the progress
display, the start line, PruSC's kept weights, the csv default model
and the README's CPU-only install."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import tomllib
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar, Literal

import pytest
from click.testing import CliRunner
from rich.console import Console

from robust.config import _type_name
from robust.errors import ConfigError, DataError, UnknownNameError, first_party, install_hint
from robust.hookspecs import hookimpl
from robust.testing import TinyConfig, registered, tiny_dataset, tiny_run
from robust.toml_values import to_toml

REPO = Path(__file__).resolve().parents[3]


def invoke(*args: str, columns: int = 80):
    from robust.cli import cli

    return CliRunner().invoke(cli, list(args), catch_exceptions=False, env={"COLUMNS": str(columns)})


def rendered(renderable: Any, width: int) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=width, color_system=None, force_terminal=True).print(renderable)
    return buffer.getvalue()


# -- throwaway plugins ----------------------------------------------------------------------------


def _step_method():
    from robust.erm import ERM

    class StepPreset(ERM):
        """ERM with a step-based preset (as DisEnt's: train.steps=3000), picked for `tiny`."""

        presets: ClassVar[dict[str, dict[str, Any]]] = {
            "long": {"method": {"lr": 0.5}, "train": {"steps": 3000, "batch_size": 16}},
            "short": {"train": {"epochs": 2}},
        }
        dataset_presets: ClassVar[dict[str, str]] = {"tiny": "long"}

    return StepPreset


class StepPresetPlugin:
    @hookimpl
    def register_methods(self, register):
        register("step-preset", _step_method(), description="test: a preset that sets train.steps")


class BoomPlugin:
    """A tiny-shaped dataset whose loader must never run."""

    @hookimpl
    def register_datasets(self, register):
        def boom(config, data_root):
            raise AssertionError("the dataset was loaded")

        register("tiny-boom", boom, config=TinyConfig, description="test: never loaded", default_model="mlp")


@pytest.fixture
def tiny():
    with tiny_dataset():
        yield


@pytest.fixture
def step_method(tiny):
    with registered(StepPresetPlugin(), "test-step-preset"):
        yield "step-preset"


# -- 1. --print-config ------------------------------------------------------------------------------


def test_print_config_prints_the_resolved_toml_and_exits_without_data(tmp_path):
    from robust.resolve import resolve_run_config

    out = tmp_path / "run"
    with tiny_dataset(), registered(BoomPlugin(), "test-boom"):
        result = invoke(
            "run", "erm", "--dataset", "tiny-boom", "--epochs", "3", "--set", "lr=0.05", "--set",
            "dataset.n_train=50", "--out", str(out), "--print-config",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        printed = tomllib.loads(result.stdout)
        expected = resolve_run_config(
            "erm", dataset="tiny-boom", sets=["lr=0.05", "dataset.n_train=50"], flags={"epochs": 3}
        ).config.model_dump(mode="json")
        file = tmp_path / "printed.toml"
        file.write_text(result.stdout)
        again = resolve_run_config("erm", config_file=str(file)).config.model_dump(mode="json")
    assert not out.exists(), "nothing was trained nor written"
    assert printed["method"]["lr"] == 0.05 and printed["train"]["epochs"] == 3
    assert printed["dataset"] == {"name": "tiny-boom", "n_train": 50, "spurious": 0.9}
    assert "# steps = (not set)" in result.stdout  # TOML has no null: unset options are comments
    assert again == expected, "--config reads the printed file back to the same config"


def test_to_toml_comments_epochs_out_when_steps_replace_them():
    text = to_toml({"seed": 1, "preset": None, "train": {"epochs": 10, "steps": 5}, "method": {"name": "x"}})
    assert "# epochs = 10  (ignored: steps is set)" in text and "steps = 5" in text
    assert tomllib.loads(text) == {"seed": 1, "train": {"steps": 5}, "method": {"name": "x"}}


# -- 2. robust info: presets' contents, Literal values ---------------------------------------------


def test_info_shows_what_each_preset_sets(step_method):
    result = invoke("info", step_method)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "lr=0.5" in text and "train.steps=3000" in text and "train.batch_size=16" in text
    assert "train.epochs=2" in text
    assert "picked automatically: tiny -> long" in text


def test_literal_options_list_their_allowed_values():
    assert _type_name(Literal["auto", "off", "bf16", "fp16"]) == '"auto" | "off" | "bf16" | "fp16"'
    assert _type_name(Literal["a", "b"] | None) == '"a" | "b" | None'
    assert _type_name(int | None) == "int | None"
    assert _type_name(list[str]) == "list[str]"
    result = invoke("info", "train", columns=300)
    assert result.exit_code == 0
    assert '"auto" | "off" | "bf16" | "fp16"' in result.output


# -- 3. --epochs against a preset's steps ----------------------------------------------------------


def test_epochs_flag_replaces_the_presets_steps_and_says_so(step_method):
    from robust.resolve import resolve_run_config

    plain = resolve_run_config(step_method, dataset="tiny")
    assert plain.config.preset == "long" and plain.config.train.steps == 3000 and not plain.notes
    for flags, sets in (({"epochs": 1}, []), ({}, ["train.epochs=1"]), ({}, ["epochs=1"])):
        resolved = resolve_run_config(step_method, dataset="tiny", flags=flags, sets=sets)
        assert resolved.config.train.steps is None and resolved.config.train.epochs == 1, (flags, sets)
        assert resolved.config.train.batch_size == 16 and resolved.config.method["lr"] == 0.5  # the rest stays
        assert len(resolved.notes) == 1 and "3000" in resolved.notes[0] and "'long'" in resolved.notes[0]
    steps = resolve_run_config(step_method, dataset="tiny", flags={"steps": 7})
    assert steps.config.train.steps == 7 and not steps.notes
    result = invoke("run", step_method, "--dataset", "tiny", "--epochs", "1", "--print-config")
    assert result.exit_code == 0, result.output
    assert "Note:" in result.stderr and "3000" in result.stderr and "steps = (not set)" in result.stdout


def test_epochs_and_steps_both_given_are_refused(step_method):
    from robust.resolve import resolve_run_config

    for flags, sets in (({"epochs": 1, "steps": 5}, []), ({"epochs": 1}, ["train.steps=5"])):
        with pytest.raises(ConfigError, match=r"train\.epochs.*train\.steps"):
            resolve_run_config(step_method, dataset="tiny", flags=flags, sets=sets)
    result = invoke("run", "erm", "--dataset", "tiny", "--epochs", "1", "--steps", "4", "--print-config")
    assert result.exit_code == 2 and "train.epochs" in result.stderr and "train.steps" in result.stderr


def test_tiny_run_takes_steps_instead_of_epochs(tmp_path):
    summary = tiny_run("erm", tmp_path / "run", steps=2, sets=["train.batch_size=32"])
    assert summary["train"]["steps"] == 2


# -- 4. resume with a changed option ---------------------------------------------------------------


def test_resume_with_a_changed_option_names_only_what_changed(tmp_path, tiny):
    out = tmp_path / "run"
    tiny_run("erm", out, sets=["train.batch_size=32"])
    (out / "summary.json").unlink()  # as an interrupted run: resumable
    result = invoke(
        "run", "erm", "--dataset", "tiny", "--epochs", "3", "--set", "lr=0.5", "--device", "cpu",
        "--out", str(out), "--resume",
    )  # fmt: skip
    assert result.exit_code == 2
    error = " ".join(result.stderr.split())
    assert "train.epochs: 1 → 3" in error and "method.lr:" in error and "→ 0.5" in error
    assert "eval_batch_size" not in error and "'batch_size'" not in error, "not the whole train section"
    assert "--out" in error and "--rerun" in error and "drop" in error


def test_config_changes_are_dotted_paths():
    from robust.results import config_changes

    old = {"train": {"epochs": 1, "amp": "auto"}, "method": {"lr": 0.1}, "seed": 0}
    new = {"train": {"epochs": 2, "amp": "auto"}, "method": {"lr": 0.1, "wd": 1}, "seed": 0}
    assert config_changes(old, new) == [("train.epochs", "1", "2"), ("method.wd", "unset", "1")]


# -- 5. a missing dataset, before torch --------------------------------------------------------------


def test_missing_dataset_is_reported_without_importing_torch(tmp_path):
    code = textwrap.dedent(
        """
        import sys
        from robust.hookspecs import hookimpl
        from robust.testing import registered

        class OnDisk:
            @hookimpl
            def register_datasets(self, register):
                register("fake-ondisk", "no_such_module_xyz:load", description="on disk", folder="fake-folder",
                         files=["meta.csv"], source="example.org/fake", downloadable=True)

        with registered(OnDisk(), "test-fake-ondisk"):
            from robust.cli import cli
            try:
                cli(["run", "erm", "--dataset", "fake-ondisk", "--data-root", sys.argv[1]])
            except SystemExit as exc:
                print("exit", exc.code)
        assert "torch" not in sys.modules, "torch imported"
        """
    )
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "exit 2" in result.stdout
    error = " ".join(result.stderr.split())
    assert error.startswith("Error: Dataset 'fake-ondisk' is missing")
    assert str(tmp_path / "fake-folder") in error and "meta.csv" in error
    assert "robust data download fake-ondisk" in error and "example.org/fake" in error


def test_dataset_files_check_stands_aside_when_files_may_be_elsewhere(tmp_path):
    from robust.ondisk import check_dataset_files, missing_files

    entry = SimpleNamespace(
        name="fake", metadata={"folder": "f", "files": ["a.csv"], "folder_alternatives": ["alt/f"], "source": "s"}
    )
    assert missing_files(entry, {}, tmp_path) == (tmp_path / "f", ["f/ (the folder)"])
    with pytest.raises(DataError, match=r"Not found: f/ \(the folder\)"):
        check_dataset_files(entry, {}, tmp_path)
    assert missing_files(entry, {"root": "/somewhere"}, tmp_path) is None  # the loader checks its own root
    (tmp_path / "f").mkdir()
    assert missing_files(entry, {}, tmp_path) == (tmp_path / "f", ["a.csv"])
    (tmp_path / "alt" / "f").mkdir(parents=True)
    (tmp_path / "alt" / "f" / "a.csv").write_text("x")
    assert missing_files(entry, {}, tmp_path) is None  # found in the other layout
    cached = SimpleNamespace(name="other", metadata={"folder": "o", "files": []})
    assert missing_files(cached, {}, tmp_path) is not None
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "other-0123456789abcdef.h5").write_bytes(b"")
    assert missing_files(cached, {}, tmp_path) is None  # runs read the HDF5 cache
    assert missing_files(SimpleNamespace(name="gen", metadata={}), {}, tmp_path) is None  # generated data


# -- 6. which package provides a name ---------------------------------------------------------------


def test_unknown_first_party_names_say_which_package_to_install():
    message = UnknownNameError("method", "disent", [], ["erm", "groupdro"]).message
    assert "pip install robust-disent" in message and "pip install -e packages/methods-disent" in message
    assert "Unknown method 'disent'" in message
    assert "pip install robust-datasets" in UnknownNameError("dataset", "csv:x.csv", [], []).message
    assert "robust-rare" in UnknownNameError("name", "small-mlp", [], []).message  # robust info NAME
    plain = UnknownNameError("method", "not-ours", ["erm"], ["erm"]).message
    assert "Did you mean 'erm'" in plain and "pip install robust-" not in plain


def test_cli_names_the_package_of_a_missing_method_and_command():
    env = {**os.environ, "ROBUST_LOAD_PLUGINS": ""}  # only the core's built-ins
    run = [sys.executable, "-m", "robust"]
    method = subprocess.run([*run, "run", "disent", "--dataset", "x"], capture_output=True, text=True, env=env)
    assert method.returncode == 2 and "pip install robust-disent" in method.stderr, method.stderr
    command = subprocess.run([*run, "rare", "--help"], capture_output=True, text=True, env=env)
    assert command.returncode == 2 and "pip install robust-rare" in command.stderr, command.stderr
    report = subprocess.run([*run, "report", "runs"], capture_output=True, text=True, env=env)
    assert report.returncode == 2 and "pip install -e packages/report" in report.stderr, report.stderr


def test_first_party_table_matches_what_the_packages_register():
    from robust.cli import cli
    from robust.plugins import plugin_distribution
    from robust.registry import KINDS, get_registry

    table = first_party()
    registry = get_registry()
    for kind in KINDS:
        for entry in registry.entries(kind):
            distribution = plugin_distribution(entry.plugin)
            if distribution in table:
                assert entry.name in table[distribution].get(kind, []), (
                    f"{kind} {entry.name!r} of {distribution} is missing from robust/first_party.toml"
                )
    for distribution, names in table.items():
        folder = names["folder"]
        first = next(name for kind, listed in names.items() if kind != "folder" for name in listed)
        assert f"pip install {distribution}` (from a checkout of robust: `pip install -e packages/{folder}`" in (
            install_hint("name", first)
        )
        pyproject = REPO / "packages" / folder / "pyproject.toml"
        if pyproject.is_file():
            assert tomllib.loads(pyproject.read_text())["project"]["name"] == distribution
        try:
            metadata.distribution(distribution)
        except metadata.PackageNotFoundError:
            continue
        for kind, listed in names.items():
            for name in listed if kind != "folder" else ():
                if kind == "command":
                    assert name in cli.commands, f"command {name!r} of {distribution}"
                else:
                    assert registry.find(kind, name) is not None, f"{kind} {name!r} of {distribution}"


# -- 7. the end-of-run table -------------------------------------------------------------------------


def test_end_of_run_tables_keep_losses_out_of_accuracy_percent(tmp_path):
    from robust.summary_tables import summary_table, summary_tables

    summary = tiny_run("erm", tmp_path / "run", sets=["train.batch_size=32"])
    loss = summary["selection"]["last"]["metrics"]["val/loss"]
    accuracy_table, other_table = summary_tables(summary)
    accuracy = rendered(accuracy_table, 160)
    other = rendered(other_table, 160)
    assert "accuracy %" in accuracy and "loss" not in accuracy and "val/avg_acc" in accuracy
    assert "val/loss" in other and f"{loss:.4g}" in other and "accuracy %" not in other
    assert f"{100 * loss:.1f}" not in accuracy
    assert "val/loss" in rendered(summary_table(summary), 160)


# -- 8. the progress display -------------------------------------------------------------------------


CLP_LOGS = "loss=0.693 ce=0.689 sal=0.00123 delta=0.0456 meta_loss=0.702 meta_acc=0.5 weight_mean=1.02"


@pytest.mark.parametrize("width", [80, 120])
def test_progress_keeps_the_bar_count_and_eta_on_screen(width):
    from robust.engine import Run

    buffer = io.StringIO()
    console = Console(file=buffer, width=width, force_terminal=True, color_system=None)
    progress = Run._progress(SimpleNamespace(console=console, quiet=False))
    progress.add_task("a-long-phase-name-indeed", total=30000, completed=1234, loss=CLP_LOGS)
    for renderable in progress.get_renderables():
        console.print(renderable)
    lines = buffer.getvalue().splitlines()
    assert all(len(line) <= width for line in lines)
    bar = lines[0]
    assert "1234/30000" in bar and ("-:--:--" in bar or ":" in bar.split("1234/30000")[1])
    assert lines[1].strip().startswith("loss=0.693 ce=0.689"), "the losses on their own line"
    if width == 120:
        assert CLP_LOGS in lines[1]


def test_logged_losses_are_compact():
    import torch

    from robust.engine import _format_logs

    sums = {"loss": torch.tensor(2 * 0.693147), "kept": torch.tensor(2.0), "nan": torch.tensor(float("nan"))}
    assert _format_logs(sums, 2) == "loss=0.693 kept=1"


# -- 9. the start line --------------------------------------------------------------------------------


def test_a_run_starts_with_one_line_saying_what_it_does(tmp_path, tiny):
    out = tmp_path / "run"
    result = invoke(
        "run", "erm", "--dataset", "tiny", "--epochs", "1", "--device", "cpu", "--set", "train.batch_size=48",
        "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    text = " ".join(result.stderr.split())
    assert "Training erm on tiny: preset none, model mlp, 1 epoch, device cpu" in text
    assert f"run directory {out}" in text


def test_start_line_says_steps_and_the_preset(step_method, tmp_path):
    from robust.engine import Run
    from robust.resolve import resolve_run_config

    resolved = resolve_run_config(step_method, dataset="tiny", flags={"steps": 2, "device": "cpu"})
    run = Run(resolved, tmp_path / "run", quiet=True)
    line = run.start_line()
    run.release()
    assert line.startswith("Training step-preset on tiny: preset long, model mlp, 2 steps, device cpu")
    assert line.endswith(str(tmp_path / "run"))


# -- 10. robust report at 80 columns: robust-report's (packages/report/tests/test_render.py) --------


# -- 11. PruSC's kept weights ----------------------------------------------------------------------------


# -- 12. the csv dataset's default model --------------------------------------------------------------


# -- 13. the README's CPU-only install -------------------------------------------------------------------


def test_readme_shows_the_cpu_only_install_next_to_the_install_command():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    setup = readme[readme.index("## Set up") : readme.index("## A short tour")]
    assert "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu" in setup
    assert setup.index("whl/cpu") < setup.rindex("pip install -e packages/core")
