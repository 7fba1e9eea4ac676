"""Damaged run directories and full disks: one paragraph naming the file (and the key) and what to do;
what was written before is never lost."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from robust.checkpoint import load_checkpoint
from robust.errors import CheckpointError, RobustError, RunDirError
from robust.results import RunDir, read_history
from robust.testing import Crash, CrashAt

from .test_engine import final_weights, make_run
from .tiny import TinyPlugin


@pytest.fixture(autouse=True)
def tiny(register_plugin):
    with register_plugin(TinyPlugin(), "tiny-test-plugin"):
        yield


@pytest.fixture
def interrupted(tmp_path, register_plugin) -> Path:
    with register_plugin(CrashAt(evaluation=2), "crash"), pytest.raises(Crash):
        make_run(tmp_path / "run").fit()
    return tmp_path / "run"


def one_paragraph(result) -> str:
    assert result.exit_code == 2, result.output
    err = result.output.strip()
    assert err.startswith("Error:") and "Traceback" not in err and "\n\n" not in err, err
    return err


def resume_cli(out: Path):
    from robust.cli import cli

    return CliRunner().invoke(cli, ["run", "erm", "--resume", "--out", str(out), "-q"])


CONFIGS = {
    "truncated": (b'{"method": {"name": "erm", "lr"', "truncated or not JSON"),
    "a list": (b"[1, 2, 3]", "JSON list"),
    "non-UTF-8": (b'{"method": "\xff\xfe"}', "truncated or not JSON"),
    "missing key": (
        json.dumps({"method": {"name": "erm"}, "dataset": {"name": "tiny"}}).encode(),
        "'model' is missing",
    ),
    "wrong type": (
        json.dumps(
            {"method": {"name": "erm"}, "dataset": {"name": "tiny"}, "model": {}, "seed": 1, "train": {}}
        ).encode(),
        "model.name",
    ),
}


@pytest.mark.parametrize("damage", CONFIGS)
def test_a_damaged_config_is_named_by_resume_rerun_and_init_from(interrupted, damage):
    content, fragment = CONFIGS[damage]
    (interrupted / "config.json").write_bytes(content)
    err = one_paragraph(resume_cli(interrupted))
    assert "config.json" in err and fragment in err, err
    from robust.cli import cli

    err = one_paragraph(CliRunner().invoke(cli, ["run", "erm", "--rerun", "train", "--out", str(interrupted)]))
    assert "config.json" in err and fragment in err, err
    with pytest.raises(RunDirError, match=r"config\.json"):
        make_run(interrupted.parent / "next", sets=[f"train.init_from={interrupted}"])
    assert not (interrupted.parent / "next").exists()


def test_a_checkpoint_of_another_model_is_named(interrupted, tmp_path, register_plugin):
    with register_plugin(CrashAt(evaluation=2), "crash"), pytest.raises(Crash):
        make_run(tmp_path / "other", method="two-phase").fit()  # one more buffer: another model's state
    shutil.copyfile(tmp_path / "other" / "checkpoints" / "last.pt", interrupted / "checkpoints" / "last.pt")
    with pytest.raises(CheckpointError, match=r"last\.pt' does not fit this run's 'erm' method"):
        make_run(interrupted, resume=True).fit()


def test_a_weights_only_checkpoint_cannot_be_resumed_from(interrupted):
    best = interrupted / "checkpoints" / "best_val_avg.pt"
    shutil.copyfile(best, interrupted / "checkpoints" / "last.pt")
    err = one_paragraph(resume_cli(interrupted))
    assert "last.pt" in err and "cannot be resumed from" in err and "engine." in err, err


@pytest.mark.parametrize("content", [b"", b"[]", b"\xff\xfe{", b'{"selection": '])
def test_a_damaged_summary_is_named(tmp_path, content):
    make_run(tmp_path / "run", epochs=1).fit()
    (tmp_path / "run" / "summary.json").write_bytes(content)
    with pytest.raises(RunDirError, match=r"summary\.json' is damaged"):
        RunDir(tmp_path / "run").read_summary()
    err = one_paragraph(resume_cli(tmp_path / "run"))  # it exists: finished, or delete it to resume
    assert "delete it and resume" in err


def test_a_damaged_history_is_named_and_rewritten_by_a_resume(interrupted):
    history = interrupted / "history.h5"
    history.write_bytes(history.read_bytes()[:100])
    with pytest.raises(RunDirError, match=r"history\.h5' is damaged"):
        read_history(history)
    make_run(interrupted, resume=True).fit()
    assert list(read_history(history)["epoch"]) == [1, 2, 3]


def test_history_with_a_missing_dataset_is_named(tmp_path):
    import h5py

    make_run(tmp_path / "run", epochs=1).fit()
    with h5py.File(tmp_path / "run" / "history.h5", "a") as handle:
        del handle["step"]
    with pytest.raises(RunDirError, match="no dataset 'step'"):
        read_history(tmp_path / "run" / "history.h5")


@pytest.mark.parametrize("target", ["last.pt", "history.h5"])
def test_a_full_disk_is_named_and_loses_nothing(tmp_path, monkeypatch, target):
    """ENOSPC on the second write of ``target``: a one-paragraph error naming it, the first version
    intact and loadable, no temporary file; the run then resumes to the end."""
    import robust.atomic

    real = robust.atomic.os.fsync
    writes = []

    def fsync(fd):
        name = Path(f"/proc/self/fd/{fd}").resolve().name
        if name.startswith(f".{target}."):
            writes.append(name)
            if len(writes) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(robust.atomic.os, "fsync", fsync)
    run = tmp_path / "run"
    with pytest.raises(RobustError, match=rf"Cannot write '.*{target}': No space left on device") as info:
        make_run(run).fit()
    assert "nothing already written was lost" in str(info.value)
    monkeypatch.undo()
    assert not [p for p in run.rglob("*.tmp")]
    if target == "last.pt":
        assert load_checkpoint(run / "checkpoints" / "last.pt")["engine"]["epoch"] == 1
    else:
        assert list(read_history(run / "history.h5")["epoch"]) == [1]
    make_run(run, resume=True).fit()
    full = make_run(tmp_path / "full").fit()
    assert json.loads((run / "summary.json").read_text())["selection"]["last"] == {
        **full["selection"]["last"],
        "metrics": json.loads((run / "summary.json").read_text())["selection"]["last"]["metrics"],
    }
    for key, value in final_weights(tmp_path / "full").items():
        assert torch.equal(value, final_weights(run)[key]), key


def test_torch_save_on_a_full_disk_is_a_write_error(tmp_path, monkeypatch):
    """torch.save reports the failure as a RuntimeError with the errno's text in its message."""
    from robust.checkpoint import save_checkpoint

    def full(obj, path):
        raise RuntimeError(
            "[enforce fail at inline_container.cc:595] . PytorchStreamWriter failed writing file "
            "data/0: file write failed (No space left on device)"
        )

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(RobustError, match=r"Cannot write .*x\.pt.*No space left"):
        save_checkpoint(tmp_path / "x.pt", {})
    assert list(tmp_path.iterdir()) == []
