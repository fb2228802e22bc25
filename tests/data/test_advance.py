"""ADVANCE layout: pairing by relative path, the authors' folder names, problems for unmatched files."""

from __future__ import annotations

from pathlib import Path

import pytest

from sound2image.data import location_of, scan_pairs
from sound2image.errors import DataError
from tests.data.builders import advance_tree, write_image, write_wav
from tests.paths import PSEUDO_ADVANCE

# Class counts stated in /work/shared/data/README.md.
PSEUDO_ADVANCE_COUNTS = {
    "airport": 16,
    "beach": 8,
    "farmland": 44,
    "forest": 16,
    "lake": 16,
    "residential": 32,
}


def test_pseudo_advance_pairs_match_readme() -> None:
    scan = scan_pairs(PSEUDO_ADVANCE)
    assert scan.layout == "advance"
    assert scan.problems == []
    assert len(scan.pairs) == 132
    assert scan.class_counts == PSEUDO_ADVANCE_COUNTS
    for pair in scan.pairs:
        # The pair shares its relative path <class>/<id> on both sides.
        assert pair.audio.relative_to(PSEUDO_ADVANCE / "sound").with_suffix("") == pair.image.relative_to(
            PSEUDO_ADVANCE / "vision"
        ).with_suffix("")
        assert pair.key == f"{pair.label}/{pair.audio.stem}"
        assert pair.group == pair.audio.stem  # 5-digit ids without _k: the location is the id


def test_authors_tree_with_spaces_k_ids_and_unmatched_files(tmp_path: Path) -> None:
    root = advance_tree(
        tmp_path / "ADVANCE",
        {"sparse shrub land": ["00001", "00001_1", "00001_2", "00002"], "airport": ["00010", "00011_1"]},
        vision="Dataset_v3_vision",
        sound="Dataset_v3_sound",
    )
    unmatched_image = write_image(root / "Dataset_v3_vision" / "airport" / "00012.jpg")
    unmatched_sound = write_wav(root / "Dataset_v3_sound" / "sparse shrub land" / "00003_1.wav")

    scan = scan_pairs(root)

    assert scan.layout == "advance"
    assert [pair.key for pair in scan.pairs] == [
        "airport/00010",
        "airport/00011_1",
        "sparse shrub land/00001",
        "sparse shrub land/00001_1",
        "sparse shrub land/00001_2",
        "sparse shrub land/00002",
    ]
    assert scan.classes == ["airport", "sparse shrub land"]
    assert {pair.key: pair.group for pair in scan.pairs}["sparse shrub land/00001_2"] == "00001"
    assert {pair.key: pair.group for pair in scan.pairs}["airport/00011_1"] == "00011"
    assert len(scan.problems) == 2
    assert any(
        problem.startswith(str(unmatched_image)) and "no matching sound" in problem
        for problem in scan.problems
    )
    assert any(
        problem.startswith(str(unmatched_sound)) and "no matching image" in problem
        for problem in scan.problems
    )


def test_pairs_by_path_not_listing_order(tmp_path: Path) -> None:
    # One image missing at the start: zipping sorted listings (the reference code) would shift every pair.
    root = advance_tree(tmp_path, {"beach": ["00002", "00003", "00004"]})
    write_wav(root / "sound" / "beach" / "00001.wav")
    scan = scan_pairs(root)
    assert [(pair.audio.name, pair.image.name) for pair in scan.pairs] == [
        ("00002.wav", "00002.jpg"),
        ("00003.wav", "00003.jpg"),
        ("00004.wav", "00004.jpg"),
    ]
    assert scan.problems == [
        f"{root / 'sound' / 'beach' / '00001.wav'}: no matching image file (looked for vision/beach/00001.*)"
    ]


def test_tree_inside_single_extracted_folder(tmp_path: Path) -> None:
    advance_tree(
        tmp_path / "ADVANCE_v3", {"lake": ["00005"]}, vision="Dataset_v3_vision", sound="Dataset_v3_sound"
    )
    scan = scan_pairs(tmp_path)
    assert scan.layout == "advance"
    assert [pair.key for pair in scan.pairs] == ["lake/00005"]
    assert scan.root == tmp_path / "ADVANCE_v3"


def test_stray_files_are_problems_hidden_files_ignored(tmp_path: Path) -> None:
    root = advance_tree(tmp_path, {"forest": ["00001"]})
    (root / "vision" / "forest" / "notes.txt").write_text("hello")
    write_image(root / "vision" / "00009.jpg")  # not inside a class folder
    (root / "vision" / "forest" / ".DS_Store").write_bytes(b"\0")
    scan = scan_pairs(root)
    assert [pair.key for pair in scan.pairs] == ["forest/00001"]
    assert len(scan.problems) == 2
    assert any("notes.txt" in problem and "not an image file" in problem for problem in scan.problems)
    assert any("00009.jpg" in problem and "class folder" in problem for problem in scan.problems)


def test_vision_without_sound_is_an_error(tmp_path: Path) -> None:
    write_image(tmp_path / "vision" / "beach" / "00001.jpg")
    with pytest.raises(DataError, match=r"vision: ADVANCE layout without its partner folder sound/"):
        scan_pairs(tmp_path)


def test_location_is_first_five_characters() -> None:
    assert location_of("00017_3") == "00017"
    assert location_of("00017") == "00017"
    assert location_of("12345_10") == "12345"
