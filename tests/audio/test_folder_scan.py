"""One suffix list and one hidden-file rule behind every folder scan: generate, embed, dataset scanners."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sound2image.audio import (
    AV_SUFFIXES,
    SOUNDFILE_SUFFIXES,
    audio_suffixes,
    is_hidden,
    load_audio,
    scan_audio_folder,
)
from sound2image.audio.files import _SOUNDFILE_FORMAT_SUFFIXES, NEEDS_AV_REASON, NOT_AUDIO_REASON
from tests.audio.synth import av_bytes, sf_bytes, tone
from tests.audio.synth import write as _write


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return _write(path, data)


RATE = 8000
# The audio of the mixed folder: name -> (frames the file holds). 0.25 s of a 440 Hz tone each.
SECONDS = 0.25


def _mixed_folder(root: Path) -> dict[str, Path]:
    """a.wav, its AppleDouble twin ._a.wav, .DS_Store, b.au … h.mov, notes.txt and x.xyz."""
    x = tone(440, RATE, SECONDS)
    root.mkdir(parents=True, exist_ok=True)
    files = {
        "a.wav": sf_bytes(x, RATE, "WAV", "PCM_16"),
        "b.au": sf_bytes(x, RATE, "AU", "PCM_16"),
        "c.caf": sf_bytes(x, RATE, "CAF", "PCM_16"),
        "d.aifc": sf_bytes(x, RATE, "AIFF", "PCM_16"),
        "e.wave": sf_bytes(x, RATE, "WAV", "PCM_16"),
        "f.w64": sf_bytes(x, RATE, "W64", "PCM_16"),
        "g.mp4": av_bytes(x, RATE, "mp4", "aac"),
        "h.mov": av_bytes(x, RATE, "mov", "aac"),
    }
    paths = {name: write(root / name, data) for name, data in files.items()}
    # AppleDouble: magic 0x00051607, then resource-fork junk; .DS_Store: Finder's binary junk.
    write(root / "._a.wav", b"\x00\x05\x16\x07\x00\x02\x00\x00" + bytes(4000))
    write(root / ".DS_Store", b"\x00\x00\x00\x01Bud1" + bytes(100))
    (root / "notes.txt").write_text("recorded on the beach\n")
    write(root / "x.xyz", b"\x01\x02\x03" * 10)
    return paths


AUDIO_NAMES = ["a.wav", "b.au", "c.caf", "d.aifc", "e.wave", "f.w64", "g.mp4", "h.mov"]


SF_NAMED = [".au", ".snd", ".caf", ".aifc", ".aif", ".aiff", ".wave", ".wav", ".w64", ".rf64", ".flac"]
SF_NAMED += [".ogg", ".oga", ".opus", ".mp3"]
AV_NAMED = [".m4a", ".aac", ".mp4", ".mov", ".mkv", ".webm", ".avi"]


def test_suffix_lists_hold_what_the_issue_names() -> None:
    for suffix in SF_NAMED:
        assert suffix in SOUNDFILE_SUFFIXES
    for suffix in AV_NAMED:
        assert suffix in AV_SUFFIXES and suffix not in SOUNDFILE_SUFFIXES
    assert audio_suffixes(with_av=False) == SOUNDFILE_SUFFIXES
    assert audio_suffixes(with_av=True) == SOUNDFILE_SUFFIXES | AV_SUFFIXES
    assert audio_suffixes() == SOUNDFILE_SUFFIXES | AV_SUFFIXES  # PyAV is installed in dev


@pytest.mark.parametrize(
    ("fmt", "suffix"),
    [(fmt, suffix) for fmt, suffixes in _SOUNDFILE_FORMAT_SUFFIXES.items() for suffix in suffixes],
)
def test_every_soundfile_suffix_is_read_by_the_loader(tmp_path, fmt: str, suffix: str) -> None:
    # The list is derived from the loader: each suffix's format, written by soundfile, loads with its
    # sample count and rate intact (lossy formats: the count only).
    assert fmt in sf.available_formats()
    x = tone(440, RATE, SECONDS)
    subtype = {"OGG": "VORBIS", "MP3": "MPEG_LAYER_III", "WVE": "ALAW"}.get(fmt, "PCM_16")
    path = write(tmp_path / f"clip{suffix}", sf_bytes(x, RATE, fmt, subtype))
    clip = load_audio(path)
    assert clip.sample_rate == RATE
    assert clip.samples.shape == (len(x),)
    if subtype == "PCM_16":
        # 16-bit PCM, one step = 2**-15: libsndfile writes x * 32767 rounded (<= half a step) and reads
        # n / 32768 (a scale error <= |x| / 32768 = 0.5 * 2**-15 at amplitude 0.5): at most one step.
        assert np.max(np.abs(clip.samples - x)) <= 2.0**-15


def test_is_hidden_rule() -> None:
    assert is_hidden("music/._a.wav") and is_hidden(".DS_Store") and is_hidden("set/.git/objects/x.wav")
    assert is_hidden("Thumbs.db") and is_hidden("sub/desktop.ini")
    assert not is_hidden("music/a.wav") and not is_hidden("./a.wav") and not is_hidden("../up/a.wav")
    # Only the parts below the root count: a dataset kept under a hidden folder is not hidden as a whole.
    assert not is_hidden("/home/me/.local/data/a.wav", root="/home/me/.local")
    assert is_hidden("/home/me/.local/data/._a.wav", root="/home/me/.local")


def test_scan_takes_every_audio_suffix_skips_hidden_and_reports_unknown(tmp_path) -> None:
    _mixed_folder(tmp_path / "in")
    scan = scan_audio_folder(tmp_path / "in")
    assert [path.name for path in scan.files] == AUDIO_NAMES  # sorted; no ._a.wav, .DS_Store, notes.txt
    assert scan.skipped == [(tmp_path / "in" / "x.xyz", NOT_AUDIO_REASON)]  # hidden and .txt: silent


def test_scan_without_pyav_reports_the_video_files_naming_the_extra(tmp_path, monkeypatch) -> None:
    _mixed_folder(tmp_path / "in")
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` fails as if the extra were missing
    scan = scan_audio_folder(tmp_path / "in")
    assert [path.name for path in scan.files] == AUDIO_NAMES[:6]
    assert [(path.name, reason) for path, reason in scan.skipped] == [
        ("g.mp4", NEEDS_AV_REASON),
        ("h.mov", NEEDS_AV_REASON),
        ("x.xyz", NOT_AUDIO_REASON),
    ]
    assert 'pip install "sound2image[av]"' in NEEDS_AV_REASON


def test_hidden_folders_are_not_entered_and_subfolders_are(tmp_path) -> None:
    write(tmp_path / ".cache" / "old.wav", sf_bytes(tone(440, RATE, 0.1), RATE, "WAV", "PCM_16"))
    write(tmp_path / "sub" / "deep.flac", sf_bytes(tone(440, RATE, 0.1), RATE, "FLAC", "PCM_16"))
    scan = scan_audio_folder(tmp_path)
    assert scan.files == [tmp_path / "sub" / "deep.flac"] and scan.skipped == []


def test_generate_plan_sees_exactly_the_audio_set_and_names_a_wav_plainly(tmp_path) -> None:
    from sound2image.cli.jobs import find_audio, plan_jobs

    paths = _mixed_folder(tmp_path / "in")
    plan = plan_jobs([str(tmp_path / "in")], None, False)
    assert [job.audio for job in plan.jobs] == [[paths[name]] for name in AUDIO_NAMES]
    # No AppleDouble twin, so a.wav's images are a_seed<N>.png, not a-2_seed<N>.png.
    assert [job.name for job in plan.jobs] == ["a", "b", "c", "d", "e", "f", "g", "h"]
    assert plan.problems == []  # a file skipped for its suffix does not fail the run ...
    assert plan.skipped == [f"{tmp_path / 'in' / 'x.xyz'}: skipped: {NOT_AUDIO_REASON}"]  # ... it is reported
    assert find_audio(tmp_path / "in") == [paths[name] for name in AUDIO_NAMES]


def test_generate_plan_of_a_folder_without_audio_is_a_problem(tmp_path) -> None:
    from sound2image.cli.jobs import plan_jobs

    write(tmp_path / "x.xyz", b"junk")
    plan = plan_jobs([str(tmp_path)], None, False)
    assert plan.jobs == []
    assert plan.problems == [
        f"{tmp_path}: no audio files in this folder (1 file(s) skipped for their suffix)"
    ]


def test_generate_cli_warns_about_the_skipped_file_before_anything_else(tmp_path, capsys) -> None:
    from sound2image.cli.main import main

    _mixed_folder(tmp_path / "in")
    # No model can load here (an empty folder given as --model): the run stops after planning, having
    # printed the plan's warnings; only the skipped x.xyz is named, never ._a.wav.
    (tmp_path / "model").mkdir()
    main(["generate", str(tmp_path / "in"), "--model", str(tmp_path / "model"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert f"warning: {tmp_path / 'in' / 'x.xyz'}: skipped: {NOT_AUDIO_REASON}" in err.splitlines()
    assert "._a.wav" not in err and ".DS_Store" not in err and "notes.txt" not in err


def test_embed_collects_exactly_the_audio_set_and_warns_about_the_rest(tmp_path, capsys) -> None:
    from sound2image.cli.embed import collect_files
    from sound2image.encoders.preprocess import audio_files

    paths = _mixed_folder(tmp_path / "in")
    files, bad = collect_files([str(tmp_path / "in")])
    assert files == [(paths[name], name) for name in AUDIO_NAMES]
    assert bad == []
    assert capsys.readouterr().err.splitlines() == [
        f"warning: {tmp_path / 'in' / 'x.xyz'}: skipped: {NOT_AUDIO_REASON}"
    ]
    assert audio_files(tmp_path / "in") == [paths[name] for name in AUDIO_NAMES]


def test_dataset_folder_scanner_pairs_every_audio_suffix_and_no_hidden_file(tmp_path) -> None:
    from sound2image.data import scan_pairs
    from tests.data.builders import write_image

    paths = _mixed_folder(tmp_path / "set")
    for name in AUDIO_NAMES:
        write_image(tmp_path / "set" / f"{Path(name).stem}.png")
    write_image(tmp_path / "set" / "._a.png")  # AppleDouble twin of an image: hidden too
    scan = scan_pairs(tmp_path / "set")
    assert [(pair.audio, pair.image.name) for pair in scan.pairs] == [
        (paths[name], f"{Path(name).stem}.png") for name in AUDIO_NAMES
    ]
    assert scan.problems == [f"{tmp_path / 'set' / 'x.xyz'}: skipped: not an audio or image suffix"]


def test_advance_scanner_uses_the_same_suffixes_and_hidden_rule(tmp_path) -> None:
    from sound2image.data import scan_pairs
    from tests.data.builders import write_image

    x = tone(440, RATE, SECONDS)
    for item, (name, data) in enumerate(
        [("a.caf", sf_bytes(x, RATE, "CAF", "PCM_16")), ("b.mov", av_bytes(x, RATE, "mov", "aac"))]
    ):
        stem = f"0000{item}"
        write(tmp_path / "sound" / "beach" / f"{stem}{Path(name).suffix}", data)
        write_image(tmp_path / "vision" / "beach" / f"{stem}.jpg")
    write(tmp_path / "sound" / "beach" / "._00000.caf", b"\x00\x05\x16\x07" + bytes(100))
    scan = scan_pairs(tmp_path)
    assert [pair.audio.name for pair in scan.pairs] == ["00000.caf", "00001.mov"]
    assert scan.problems == []
