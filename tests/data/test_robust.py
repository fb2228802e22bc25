"""BadItems and load_each: bad items are recorded with their paths and skipped, never crash the loop."""

from __future__ import annotations

from pathlib import Path

import pytest

from sound2image.data import BadItems, Pair, load_all, load_each, load_image
from sound2image.errors import AudioError, DataError
from tests.data.builders import write_image


def test_loop_skips_and_records_bad_images(tmp_path: Path) -> None:
    good = [write_image(tmp_path / f"{i}.png") for i in range(3)]
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    missing = tmp_path / "missing.png"
    items = [good[0], corrupt, good[1], missing, good[2]]

    bad = BadItems()
    loaded = [item for item, _ in load_each(items, load_image, bad=bad)]

    assert loaded == good
    assert bad.count == 2 and len(bad) == 2
    lines = bad.lines()
    assert lines[0].startswith(f"{corrupt}: ") and lines[1] == f"{missing}: image file not found"
    assert bad.summary() == "2 bad items skipped"


def test_pairs_are_named_by_both_files_and_message_path_not_repeated() -> None:
    pair = Pair(Path("s/a.wav"), Path("v/a.jpg"), key="a")

    def fail(item: Pair) -> None:
        raise AudioError("truncated data")

    _, bad = load_all([pair], fail)
    assert bad.lines() == ["s/a.wav + v/a.jpg: truncated data"]
    log = BadItems()
    log.record("x.wav", AudioError("x.wav: not audio"))
    assert log.lines() == ["x.wav: not audio"]


def test_bugs_are_not_swallowed() -> None:
    def broken(item: str) -> None:
        raise KeyError(item)

    with pytest.raises(KeyError):
        list(load_each(["a"], broken))


def test_max_bad_stops_a_hopeless_loop() -> None:
    def always_bad(item: str) -> None:
        raise AudioError(f"{item}: not audio")

    bad = BadItems()
    with pytest.raises(DataError, match=r"3 bad items, more than the allowed 2; last: c: not audio"):
        list(load_each(["a", "b", "c", "d"], always_bad, bad=bad, max_bad=2))
    assert bad.count == 3
    assert BadItems().summary() == "no bad items"
