"""Atomic writes: all or nothing, and files get the permissions a plain open() would give them."""
import os

import pytest

from core.fileio import atomic_path, write_text_atomic


def test_atomic_write_replaces_whole_file_with_umask_permissions(tmp_path):
    target = tmp_path / "report.md"
    target.write_text("old")
    old_mask = os.umask(0o022)
    try:
        write_text_atomic(target, "new")
    finally:
        os.umask(old_mask)
    assert target.read_text() == "new"
    assert target.stat().st_mode & 0o777 == 0o644  # readable by a server running as another user
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_text("good")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("validation failed")
    assert target.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]
