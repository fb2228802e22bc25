"""Manifests (CSV, JSONL) with relative paths, and the same-stem folder layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sound2image.data import scan_pairs
from sound2image.errors import DataError
from tests.data.builders import write_image, write_wav
from tests.paths import AV_DIGITS


@pytest.fixture
def media(tmp_path: Path) -> Path:
    """tmp_path/data/{audio/a.wav, audio/b.wav, img/a.png, img/b.png}."""
    for stem in ("a", "b"):
        write_wav(tmp_path / "data" / "audio" / f"{stem}.wav")
        write_image(tmp_path / "data" / "img" / f"{stem}.png")
    return tmp_path / "data"


def test_av_digits_manifest() -> None:
    scan = scan_pairs(AV_DIGITS / "pairs.csv")
    assert scan.layout == "manifest"
    assert scan.problems == []
    assert len(scan.pairs) == 2500
    assert scan.classes == [str(digit) for digit in range(10)]
    first = scan.pairs[0]
    # pairs.csv row 2: audio/0_george_0.wav,images/mnist_0095.png,0,george
    assert first.audio == AV_DIGITS / "audio" / "0_george_0.wav"
    assert first.image == AV_DIGITS / "images" / "mnist_0095.png"
    assert (first.label, first.extra["speaker"], first.key) == ("0", "george", "audio/0_george_0.wav")
    # The file name starts with the spoken digit; the label column must agree for every pair.
    assert all(pair.audio.name.split("_")[0] == pair.label for pair in scan.pairs)


def test_folder_with_pairs_csv_uses_the_manifest() -> None:
    assert len(scan_pairs(AV_DIGITS).pairs) == 2500


def test_csv_relative_paths_extra_columns_and_bom(media: Path) -> None:
    manifest = media / "lists" / "pairs.csv"
    manifest.parent.mkdir()
    # Byte-order mark and a spreadsheet's capitalised, padded header; paths relative to lists/.
    manifest.write_text(
        "\ufeffAudio , Image,label,prompt,speaker\n"
        '../audio/a.wav,../img/a.png,dog,"a dog, barking",ann\n'
        "../audio/b.wav,../img/b.png,,,bob\n",
        encoding="utf-8",
    )
    scan = scan_pairs(manifest)
    assert scan.problems == []
    a, b = scan.pairs
    assert a.audio.resolve() == (media / "audio" / "a.wav").resolve()
    assert a.image.resolve() == (media / "img" / "a.png").resolve()
    assert (a.label, a.prompt, a.extra) == ("dog", "a dog, barking", {"speaker": "ann"})
    assert (b.label, b.prompt) == (None, None)
    assert a.group == "a"  # no group column: the audio stem
    assert scan.classes == ["dog"]


def test_csv_missing_column_is_an_error(media: Path) -> None:
    manifest = media / "pairs.csv"
    manifest.write_text("audio,label\naudio/a.wav,dog\n")
    with pytest.raises(DataError, match=r"pairs\.csv: missing required column image \(found: audio, label\)"):
        scan_pairs(manifest)


def test_csv_missing_file_is_a_problem_rest_is_read(media: Path) -> None:
    manifest = media / "pairs.csv"
    manifest.write_text(
        "audio,image\naudio/a.wav,img/a.png\naudio/zzz.wav,img/b.png\naudio/b.wav,img/b.png\n"
    )
    scan = scan_pairs(manifest)
    assert [pair.key for pair in scan.pairs] == ["audio/a.wav", "audio/b.wav"]
    assert scan.problems == [
        f"{media / 'audio' / 'zzz.wav'}: audio file not found (listed in pairs.csv line 3)"
    ]


def test_csv_ragged_rows_and_empty_cells(media: Path) -> None:
    manifest = media / "pairs.csv"
    manifest.write_text("audio,image\naudio/a.wav,img/a.png,extra\naudio/b.wav\n,img/b.png\n")
    with pytest.raises(DataError, match="no audio/image pairs found"):
        scan_pairs(manifest)
    from sound2image.data.manifest import scan_manifest

    problems = scan_manifest(manifest).problems
    assert problems == [
        f"{manifest} line 2: 1 more fields than the header has columns",
        f"{manifest} line 3: fewer fields than the header has columns",
        f"{manifest} line 4: empty 'audio' value",
    ]


def test_jsonl_relative_paths_bad_lines_and_missing_key(media: Path) -> None:
    manifest = media / "pairs.jsonl"
    lines = [
        json.dumps({"audio": "audio/a.wav", "image": "img/a.png", "label": 3, "prompt": "x", "group": "g1"}),
        "",
        "{not json",
        json.dumps({"audio": "audio/b.wav"}),
        json.dumps(["audio/b.wav", "img/b.png"]),
        json.dumps({"audio": "audio/b.wav", "image": "img/missing.png"}),
    ]
    manifest.write_text("\n".join(lines) + "\n")
    scan = scan_pairs(manifest)
    assert len(scan.pairs) == 1
    pair = scan.pairs[0]
    assert (pair.audio, pair.label, pair.prompt, pair.group) == (media / "audio" / "a.wav", "3", "x", "g1")
    assert scan.problems[0].startswith(f"{manifest} line 3: not valid JSON")
    assert scan.problems[1:] == [
        f"{manifest} line 4: missing 'image' value",
        f"{manifest} line 5: expected a JSON object, got list",
        f"{media / 'img' / 'missing.png'}: image file not found (listed in pairs.jsonl line 6)",
    ]


def test_same_audio_with_two_images_gets_distinct_keys_duplicates_reported(media: Path) -> None:
    manifest = media / "pairs.csv"
    manifest.write_text("audio,image\naudio/a.wav,img/a.png\naudio/a.wav,img/b.png\naudio/a.wav,img/a.png\n")
    scan = scan_pairs(manifest)
    assert [pair.key for pair in scan.pairs] == ["audio/a.wav", "audio/a.wav|img/b.png"]
    assert scan.problems == [f"{manifest} line 4: duplicate of an earlier row (audio/a.wav); skipped"]


def test_empty_and_wrong_suffix_manifests(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match=r"empty\.csv: empty manifest"):
        scan_pairs(tmp_path / "empty.csv")
    (tmp_path / "list.txt").write_text("audio,image\n")
    with pytest.raises(DataError, match=r"list\.txt: not a manifest"):
        scan_pairs(tmp_path / "list.txt")
    with pytest.raises(DataError, match=r"nope: no such file or folder"):
        scan_pairs(tmp_path / "nope")


def test_same_stem_folder(tmp_path: Path) -> None:
    write_wav(tmp_path / "dog.wav")
    write_image(tmp_path / "dog.jpg")
    write_wav(tmp_path / "birds" / "robin.flac")
    write_image(tmp_path / "birds" / "robin.png")
    lonely_sound = write_wav(tmp_path / "cat.wav")
    lonely_image = write_image(tmp_path / "birds" / "owl.jpg")
    write_image(tmp_path / "twin.jpg")
    write_image(tmp_path / "twin.png")
    write_wav(tmp_path / "twin.wav")
    (tmp_path / "README.md").write_text("ignored")

    scan = scan_pairs(tmp_path)

    assert scan.layout == "folder"
    assert [(pair.key, pair.audio.name, pair.image.name, pair.label) for pair in scan.pairs] == [
        ("birds/robin", "robin.flac", "robin.png", "birds"),
        ("dog", "dog.wav", "dog.jpg", None),
    ]
    assert sorted(scan.problems) == sorted(
        [
            f"{lonely_image}: no sound file with the same stem (.wav, .flac, ...)",
            f"{lonely_sound}: no image with the same stem (.jpg, .png, ...)",
            f"{tmp_path / 'twin'}.*: several files share this stem (twin.wav, twin.jpg, twin.png); skipped",
        ]
    )


def test_folder_without_pairs_is_an_error(tmp_path: Path) -> None:
    write_wav(tmp_path / "alone.wav")
    with pytest.raises(DataError, match=r"no audio/image pairs found in the folder layout \(1 problems"):
        scan_pairs(tmp_path)


def test_semicolon_csv_tsv_and_windows_separators(media: Path) -> None:
    (media / "semi.csv").write_text("audio;image;label\naudio\\a.wav;img\\a.png;x\n")
    (media / "pairs.tsv").write_text("audio\timage\naudio/b.wav\timg/b.png\n")
    semi = scan_pairs(media / "semi.csv")
    assert semi.problems == []
    assert (semi.pairs[0].audio, semi.pairs[0].image, semi.pairs[0].label) == (
        media / "audio" / "a.wav",
        media / "img" / "a.png",
        "x",
    )
    assert [pair.image.name for pair in scan_pairs(media / "pairs.tsv").pairs] == ["b.png"]
