"""`sound2image data check` and `data split` through the CLI root, on real and on broken datasets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sound2image.cli.main import main
from sound2image.data import Split, scan_pairs
from sound2image.data.check import check_dataset
from tests.data.builders import advance_tree, truncated_jpeg, write_image, write_wav
from tests.paths import AV_DIGITS, PSEUDO_ADVANCE


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_check_names_the_folder_when_given_as_dot(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(PSEUDO_ADVANCE)
    code, out, _ = run(capsys, "data", "check", ".")
    assert code == 0
    assert out.splitlines()[0] == "pseudo-advance: 132 pairs in 6 classes (advance layout), no problems"


def test_check_pseudo_advance(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "data", "check", str(PSEUDO_ADVANCE))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "pseudo-advance: 132 pairs in 6 classes (advance layout), no problems"
    assert "pairs: 132" in lines and "classes: 6" in lines
    # Class counts and file facts as stated in the shared data README.
    for name, count in {"airport": 16, "beach": 8, "farmland": 44, "residential": 32}.items():
        assert any(line.split() == [name, str(count)] for line in lines)
    assert "audio: 132 files read, duration min 10.00 s, median 10.00 s, max 10.00 s" in lines
    assert "  sample rates: 22050 Hz (132)" in lines
    assert "  sizes: 512x512 (132)" in lines
    assert "problems: none" in lines


def test_check_av_digits_manifest(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "data", "check", str(AV_DIGITS / "pairs.csv"))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "av-digits/pairs.csv: 2500 pairs in 10 classes (manifest layout), no problems"
    assert "pairs: 2500" in lines and "classes: 10" in lines
    assert all(any(line.split() == [str(digit), "250"] for line in lines) for digit in range(10))
    # README: 8 kHz mono, 0.14-1.3 s; 28x28 grayscale MNIST.
    assert "  sample rates: 8000 Hz (2500)" in lines and "  channels: 1 (2500)" in lines
    duration_line = next(line for line in lines if line.startswith("audio: 2500 files read"))
    assert "min 0.14 s" in duration_line and "max 1.31 s" in duration_line
    assert "  sizes: 28x28 (2500)" in lines and "  modes: L (2500)" in lines


def test_check_broken_advance_tree_reports_everything_exit_2(tmp_path: Path, capsys) -> None:
    root = advance_tree(
        tmp_path / "tree",
        {"sparse shrub land": ["00001", "00001_1", "00002"], "harbour": ["00003", "00004_2"]},
        vision="Dataset_v3_vision",
        sound="Dataset_v3_sound",
    )
    vision, sound = root / "Dataset_v3_vision", root / "Dataset_v3_sound"
    unmatched_image = write_image(vision / "harbour" / "00005.jpg")
    unmatched_sound = write_wav(sound / "harbour" / "00006_1.wav")
    corrupt_image = vision / "harbour" / "00003.jpg"
    corrupt_image.write_bytes(b"this is not a jpeg")
    corrupt_sound = sound / "sparse shrub land" / "00002.wav"
    corrupt_sound.write_bytes(b"not a wav file at all, just text")

    code, out, _ = run(capsys, "data", "check", str(root))

    assert code == 2
    lines = out.splitlines()
    assert lines[0] == "tree: 5 pairs in 2 classes (advance layout), 4 problems"
    assert "usable pairs: 3 (the others have an unreadable file)" in lines
    assert "  harbour            2" in lines and "  sparse shrub land  3" in lines
    problems = lines[lines.index("problems: 4") + 1 :]
    assert len(problems) == 4
    for path in (unmatched_image, unmatched_sound, corrupt_image, corrupt_sound):
        assert sum(line.strip().startswith(str(path)) for line in problems) == 1, path
    assert "audio: 4 files read" in out and "images: 4 files read" in out


def test_truncated_image_needs_decode(tmp_path: Path, capsys) -> None:
    write_wav(tmp_path / "a.wav")
    cut = truncated_jpeg(tmp_path / "a.jpg")
    assert run(capsys, "data", "check", str(tmp_path))[0] == 0  # the header is intact
    code, out, _ = run(capsys, "data", "check", str(tmp_path), "--decode")
    assert code == 2
    assert f"  {cut}: corrupt or truncated image" in out
    assert "checked: every file decoded" in out


def test_silent_clip_is_a_warning_not_a_problem(tmp_path: Path, capsys) -> None:
    import numpy as np
    import soundfile

    soundfile.write(tmp_path / "quiet.wav", np.zeros(800, dtype=np.float32), 8000)
    write_image(tmp_path / "quiet.png")
    report = check_dataset(tmp_path, decode=True)
    assert report.ok and report.usable_pairs == 1
    assert len(report.warnings) == 1 and "quiet.wav" in report.warnings[0] and "silent" in report.warnings[0]


def test_check_json_and_errors(tmp_path: Path, capsys) -> None:
    code, out, _ = run(capsys, "data", "check", str(PSEUDO_ADVANCE), "--json")
    record = json.loads(out)
    assert code == 0 and record["pairs"] == 132 and record["audio"]["sample_rates"] == {"22050": 132}
    code, out, err = run(capsys, "data", "check", str(tmp_path / "nowhere"))
    assert code == 2 and out == "" and err == f"error: {tmp_path / 'nowhere'}: no such file or folder\n"


def test_help_has_examples(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "check", "--help"])
    assert exit_info.value.code == 0
    assert "sound2image data check ./ADVANCE" in capsys.readouterr().out


def test_split_command_writes_a_loadable_file(tmp_path: Path, capsys) -> None:
    out_file = tmp_path / "runs" / "split.json"
    code, out, _ = run(capsys, "data", "split", str(PSEUDO_ADVANCE), "--out", str(out_file), "--seed", "7")
    assert code == 0 and out.startswith(f"{out_file}: ")
    split = Split.load(out_file, scan_pairs(PSEUDO_ADVANCE).pairs)
    assert split.seed == 7 and len(split.train) + len(split.val) == 132
    code, _, err = run(capsys, "data", "split", str(PSEUDO_ADVANCE), "--out", str(out_file))
    assert code == 2 and "already exists" in err
    assert sorted(path.name for path in tmp_path.rglob("*")) == ["runs", "split.json"]  # nothing else written


def test_check_without_any_pair_still_lists_every_problem(tmp_path: Path, capsys) -> None:
    lonely = [write_wav(tmp_path / "a.wav"), write_image(tmp_path / "b.png")]
    code, out, _ = run(capsys, "data", "check", str(tmp_path))
    assert code == 2
    assert out.splitlines()[0].endswith(": 0 pairs without labels (folder layout), 3 problems")
    assert all(f"  {path}: no " in out for path in lonely)
    assert f"  {tmp_path}: no audio/image pairs found" in out


def test_an_unexpected_reader_failure_is_reported_not_fatal(tmp_path: Path, monkeypatch) -> None:
    import sound2image.audio

    for stem in ("a", "b"):
        write_wav(tmp_path / f"{stem}.wav")
        write_image(tmp_path / f"{stem}.png")
    real_probe = sound2image.audio.probe_audio

    def flaky_probe(source, **kwargs):
        if Path(source).name == "a.wav":
            raise RuntimeError("libsndfile hiccup")
        return real_probe(source, **kwargs)

    monkeypatch.setattr(sound2image.audio, "probe_audio", flaky_probe)
    report = check_dataset(tmp_path)
    assert report.usable_pairs == 1 and sum(report.sample_rates.values()) == 1
    assert report.problems == [
        f"{tmp_path / 'a.wav'}: unexpected RuntimeError while reading (libsndfile hiccup); please report this"
    ]


def test_unlistable_folder_is_a_problem(tmp_path: Path, monkeypatch) -> None:
    import os

    from sound2image.data.pairs import walk_files

    real_walk = os.walk

    def walk_with_error(top, onerror=None, **kwargs):
        onerror(PermissionError(13, "Permission denied", str(tmp_path / "locked")))
        yield from real_walk(top, onerror=onerror, **kwargs)

    monkeypatch.setattr(os, "walk", walk_with_error)
    problems: list[str] = []
    walk_files(tmp_path, problems)
    assert problems == [f"{tmp_path / 'locked'}: cannot list folder (Permission denied)"]
