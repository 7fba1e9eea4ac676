"""Atomic writes: all or nothing, with the usual file permissions."""

from __future__ import annotations

import os

import pytest

from robust.atomic import atomic_write, atomic_write_json


def test_failed_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "summary.json"
    atomic_write_json(target, {"a": 1})

    def half_write(tmp):
        tmp.write_text('{"a": 2, "trunc')
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, half_write)
    assert target.read_text().strip() == '{\n  "a": 1\n}'
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"], "no temporary file left behind"


def test_permissions_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "x.json", {})
    finally:
        os.umask(old)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o644
