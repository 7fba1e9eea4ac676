"""The CLI as a user meets it: subprocesses, real entry points, real exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CMNIST_SMALL = ["--set", "dataset.n_train=300", "--set", "dataset.n_val=100", "--set", "dataset.n_test=100"]
WATERBIRDS_SMALL = ["--set", "dataset.scale=0.03"]


def robust(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "robust", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=600,
    )


def assert_clean_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Non-zero exit, one paragraph on stderr that starts with 'Error:', no traceback."""
    assert result.returncode != 0, result.stdout
    err = result.stderr.strip()
    assert "Traceback" not in err, err
    assert err.startswith("Error:"), err
    assert "\n\n" not in err, "one paragraph"
    for fragment in fragments:
        assert fragment in err, err


def test_help_and_version():
    assert "robust list" in robust("--help").stdout
    assert robust("--version").stdout.strip().startswith("robust, version")


HEAVY = ("torch", "numpy", "pydantic", "rich", "h5py", "submitit", "matplotlib", "sklearn", "timm")


def test_help_and_list_do_not_import_torch():
    """Nor anything heavy (issue 21: `robust --help` and `robust list` within 0.2 s with every package)."""
    for args in (["--help"], ["list"]):
        code = (
            f"import sys; sys.argv = ['robust', *{args!r}]\nfrom robust.cli import cli\ntry:\n    cli()\n"
            f"except SystemExit:\n    pass\nheavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
            "assert not heavy, f'imported: {heavy}'"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr


def test_a_reader_that_leaves_early_gets_no_error_message():
    """`robust list | head -1`: the pipe closes under robust; quiet, with the shell's 141, not a 'bug' report."""
    read, write = os.pipe()
    os.close(read)  # the reader has left before the first line: every write meets a closed pipe
    try:
        listing = subprocess.run(
            [sys.executable, "-m", "robust", "list"], stdout=write, stderr=subprocess.PIPE, timeout=60
        )
    finally:
        os.close(write)
    assert listing.stderr == b"" and listing.returncode == 141


def test_list_json_names_packages():
    listing = json.loads(robust("list", "--json").stdout)
    methods = {m["name"]: m["package"] for m in listing["methods"]}
    datasets = {d["name"]: d["package"] for d in listing["datasets"]}
    models = {m["name"] for m in listing["models"]}
    assert methods["erm"] == "robust-core"
    assert datasets["synthetic-cmnist"] == datasets["synthetic-waterbirds"] == "robust-datasets"
    assert {"mlp", "cnn", "resnet20", "resnet18", "resnet50"} <= models
    assert robust("list", "models", "resnet*", "--json").stdout.count('"name"') == 4


def test_list_filters_plugins_by_env():
    listing = json.loads(robust("list", "--json", env={"ROBUST_LOAD_PLUGINS": ""}).stdout)
    assert listing["datasets"] == [] and [m["name"] for m in listing["methods"]] == ["erm", "groupdro"]


def test_broken_plugin_is_listed_and_the_rest_work(tmp_path):
    dist = tmp_path / "broken_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[robust]\nbroken = no_such_module_for_robust\n")
    env = {"PYTHONPATH": str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    listing = json.loads(robust("list", "--json", env=env).stdout)
    broken = [p for p in listing["plugins"] if p["name"] == "broken"]
    assert broken and broken[0]["status"] == "broken" and "no_such_module_for_robust" in broken[0]["error"]
    assert any(d["name"] == "synthetic-cmnist" for d in listing["datasets"])


def test_trace_plugins_prints_hook_calls():
    result = robust("list", "methods", env={"ROBUST_TRACE_PLUGINS": "1"})
    assert "hook register_methods" in result.stderr


@pytest.mark.slow
def test_info_shows_options_and_defaults():
    out = robust("info", "erm").stdout
    assert "lr" in out and "weight_decay" in out and "0.001" in out
    out = robust("info", "synthetic-cmnist").stdout
    assert "conflict_pct" in out


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["run", "ermm", "--dataset", "synthetic-cmnist"], ["Unknown method 'ermm'", "Did you mean 'erm'"]),
        (["run", "erm", "--dataset", "synthetic-cmnst"], ["Unknown dataset", "synthetic-cmnist"]),
        (["run", "erm", "--dataset", "synthetic-cmnist", "--model", "resnet19"], ["Unknown model", "resnet18"]),
        (["run", "erm", "--dataset", "synthetic-cmnist", "--set", "lrr=0.1"], ["Unknown option 'lrr'", "lr"]),
        (["run", "erm", "--dataset", "synthetic-cmnist", "--set", "lr=fast"], ["'lr'", "valid number"]),
        (["run", "erm", "--dataset", "synthetic-cmnist", "--set", "lr"], ["KEY=VALUE"]),
        (["run", "erm", "--dataset", "synthetic-cmnist", "--set", "dataset.conflict_pct=150"], ["conflict_pct"]),
        (["run", "erm", "--dataset", "synthetic-cmnist", "--config", "/no/such/file.toml"], ["does not exist"]),
        (["run", "erm", "--dataset", "synthetic-cmnist", "--device", "tpu"], ["Unknown device 'tpu'", "cuda:N"]),
        (["run", "erm", "--dataset", "synthetic-cmnist", "--resume"], ["--resume needs --out"]),
        (["run", "erm"], ["No dataset given"]),
        (["info", "nothing-like-this"], ["Unknown"]),
        (["report", "/no/such/dir"], ["does not exist"]),
    ],
)
def test_bad_input_gives_one_paragraph(args, fragments):
    assert_clean_error(robust(*args), *fragments)


def test_unknown_command_suggests():
    result = robust("rnu")
    assert result.returncode != 0 and "Did you mean 'run'" in result.stderr and "Traceback" not in result.stderr


def test_cuda_on_a_machine_without_one():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert_clean_error(robust("run", "erm", "--dataset", "synthetic-cmnist", "--device", "cuda"), "no usable CUDA")


@pytest.mark.slow
def test_invalid_toml_config(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[method\nlr = ")
    assert_clean_error(robust("run", "erm", "--dataset", "synthetic-cmnist", "--config", str(bad)), "not valid TOML")
    wrong = tmp_path / "wrong.toml"
    wrong.write_text("[train]\nepochs = 'many'\n")
    assert_clean_error(robust("run", "erm", "--dataset", "synthetic-cmnist", "--config", str(wrong)), "epochs")


@pytest.mark.slow
def test_end_to_end_erm_both_datasets_then_report(tmp_path):
    for name, small in (("synthetic-cmnist", CMNIST_SMALL), ("synthetic-waterbirds", WATERBIRDS_SMALL)):
        out = tmp_path / "runs" / name
        result = robust("run", "erm", "--dataset", name, *small, "--epochs", "1", "--out", str(out), "--quiet")
        assert result.returncode == 0, result.stderr
        summary = json.loads((out / "summary.json").read_text())
        assert summary["dataset"] == name and 0.0 <= summary["selection"]["last"]["metrics"]["test/avg_acc"] <= 1.0
    table = robust("report", str(tmp_path / "runs"), "--format", "markdown")
    assert table.returncode == 0 and "| erm | synthetic-cmnist |" in table.stdout
    rows = json.loads(robust("report", str(tmp_path / "runs"), "--format", "json").stdout)
    assert {r["dataset"] for r in rows} == {"synthetic-cmnist", "synthetic-waterbirds"}
    csv_out = robust("report", str(tmp_path / "runs"), "--format", "csv").stdout
    assert csv_out.splitlines()[0].startswith("method,dataset,model,selection,n,")


@pytest.mark.slow
def test_existing_run_dir_corrupt_checkpoint_and_non_finite_loss(tmp_path):
    out = tmp_path / "run"
    args = ["run", "erm", "--dataset", "synthetic-cmnist", *CMNIST_SMALL, "--out", str(out), "-q"]
    # lr=1e30 diverges: the run stops with a clear message after its first epoch's checkpoint at most.
    assert_clean_error(robust(*args, "--epochs", "2", "--set", "lr=1e30"), "non-finite")
    assert_clean_error(robust(*args, "--epochs", "2"), "already exists")
    (out / "checkpoints").mkdir(exist_ok=True)
    (out / "checkpoints" / "last.pt").write_bytes(b"\x00garbage")
    assert_clean_error(robust("run", "erm", "--out", str(out), "--resume", "-q"), "corrupt")


@pytest.mark.slow
def test_resume_from_cli_finishes_the_run(tmp_path):
    out = tmp_path / "run"
    common = ["--dataset", "synthetic-cmnist", *CMNIST_SMALL, "--out", str(out), "-q"]
    first = robust("run", "erm", *common, "--epochs", "2")
    assert first.returncode == 0, first.stderr
    (out / "summary.json").unlink()  # pretend it was interrupted after its last checkpoint
    again = robust("run", "erm", "--out", str(out), "--resume", "-q")
    assert again.returncode == 0, again.stderr
    assert (out / "summary.json").is_file()


@pytest.mark.slow
def test_a_misspelt_rerun_and_a_colliding_discover_lose_nothing(tmp_path):
    """Issue 18: `--rerun` of a phase that does not exist deleted summary.json and the best checkpoints
    before it found out; `discover --out RUN/summary.csv` wrote over the run's summary.json."""
    out = tmp_path / "run"
    first = robust(
        "run", "erm", "--dataset", "synthetic-cmnist", *CMNIST_SMALL, "--epochs", "1", "--out", str(out), "-q"
    )
    assert first.returncode == 0, first.stderr
    kept = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".run.pid"}
    assert_clean_error(robust("run", "erm", "--rerun", "trian", "--out", str(out), "-q"), "no phase 'trian'", "train")
    assert_clean_error(
        robust("discover", "--from", str(out), "--out", str(out / "summary.csv")), "summary.json", "robust run"
    )
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".run.pid"} == kept
