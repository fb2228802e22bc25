"""sound2image.atomic: whole files or nothing, each writer its own temporary name, open()'s permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sound2image import atomic
from sound2image.atomic import FILE_MODE, write_atomic, write_bytes_atomic, write_text_atomic


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_a_write_creates_the_folders_and_the_whole_file_with_open_s_permissions(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "results.json"
    assert write_text_atomic(target, "{}\n") == target
    assert target.read_text(encoding="utf-8") == "{}\n"
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # what open() gives a new file here
    assert stat.S_IMODE(target.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o666 & ~_umask()
    assert 0o666 & ~_umask() == FILE_MODE
    assert sorted(p.name for p in target.parent.iterdir()) == ["results.json"]  # no temporary left


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "model.safetensors"
    write_bytes_atomic(target, b"old")

    def half_then_fail(tmp: str) -> None:
        Path(tmp).write_bytes(b"ne")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_atomic(target, half_then_fail)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_ctrl_c_during_the_write_leaves_no_temporary(tmp_path: Path) -> None:
    def interrupted(tmp: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "image.png", interrupted)
    assert list(tmp_path.iterdir()) == []


def test_a_second_writer_finishing_first_does_not_break_either(tmp_path: Path, monkeypatch) -> None:
    """Two processes writing the same report: the other one renames its whole file into place between our
    write and our rename. Both renames succeed (their temporary names differ) and the last one wins."""
    real_replace = os.replace
    other_wrote: list[bool] = []

    def replace_after_the_other_writer(source: str, target: str) -> None:
        if not other_wrote:
            other_wrote.append(True)
            write_text_atomic(target, "other")  # the other process, start to finish
        real_replace(source, target)

    monkeypatch.setattr(atomic.os, "replace", replace_after_the_other_writer)
    write_text_atomic(tmp_path / "report.html", "ours")
    assert other_wrote and (tmp_path / "report.html").read_text(encoding="utf-8") == "ours"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
