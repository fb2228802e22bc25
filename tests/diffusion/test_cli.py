"""`sound2image generate` end to end on the tiny pipeline saved to a directory (offline, real audio)."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from sound2image.cli.main import main
from sound2image.data import load_image
from sound2image.devices import resolve_dtype
from sound2image.diffusion.conditioning import embedding_from_record, encode_images
from sound2image.errors import UsageError
from sound2image.outputs import read_png_metadata
from tests.diffusion.conftest import SAVED_CALIBRATION

pytestmark = pytest.mark.numeric
NORM = SAVED_CALIBRATION.target_norm


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    """Every CLI test runs offline with an empty cache: only --model DIR can work."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("SOUND2IMAGE_UNCLIP", raising=False)


def run(saved_dir: Path, *args: str) -> int:
    # --device cpu: the pixel comparisons are against the CPU reference even on a machine with a GPU.
    return main(["generate", "--model", str(saved_dir), "--steps", "2", "--device", "cpu", *map(str, args)])


def unit(vector: torch.Tensor) -> torch.Tensor:
    return vector / vector.norm()


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_real_wav_to_png_end_to_end(saved_dir, plain, wavs, tmp_path, monkeypatch, capsys):
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    out = tmp_path / "out"
    assert run(saved_dir, wavs[0], "--out", out, "--seed", 5) == 0
    png = out / f"{wavs[0].stem}_seed5.png"
    assert sorted(p.name for p in out.iterdir()) == [png.name]
    assert list(work.iterdir()) == []  # nothing written outside --out
    meta = read_png_metadata(png)
    assert meta["audio"][0]["sha256"] == hashlib.sha256(wavs[0].read_bytes()).hexdigest()
    assert meta["audio"][0]["file"] == wavs[0].name
    assert meta["audio"][0]["window"] == [0.0, 10.0]
    assert (meta["seed"], meta["num_inference_steps"], meta["guidance_scale"]) == (5, 2, 10.0)
    assert (meta["noise_level"], meta["scheduler"], meta["prompt"]) == (0, "ddim", "")
    assert meta["model"]["pipeline"] == str(saved_dir.resolve())
    assert meta["calibration"]["target_norm"] == NORM
    assert meta["package_version"]
    assert (meta["device"], meta["dtype"]) == ("cpu", "float32")
    assert meta["low_memory"] == {"cpu_offload": False, "attention_slicing": False, "vae_tiling": False}
    embeds = embedding_from_record(meta["embedding"])
    # The norm of a rescaled float32 1024-vector, taken twice (to rescale, and here): each within
    # (log2(1024) / 2 + 1) eps after the square root, plus the rescale: <= 13 eps ~ 1.6e-6 (2 eps measured).
    assert embeds.norm().item() == pytest.approx(NORM, rel=2e-6)
    # The PNG holds exactly what plain diffusers draws from that embedding and seed.
    generator = torch.Generator("cpu").manual_seed(5)
    expected = plain(image_embeds=embeds, generator=generator, num_inference_steps=2).images[0]
    assert np.array_equal(pixels(png), np.asarray(expected))
    assert "wrote 1 image(s)" in capsys.readouterr().out


def test_metadata_round_trip_regenerates_the_identical_image(saved_dir, wavs, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    settings = ["--prompt", "a red barn", "--negative-prompt", "fog", "--noise-level", 100]
    settings += ["--guidance-scale", 4, "--scheduler", "euler", "--seed", 3, "--save-embedding"]
    settings += ["--attention-slicing", "--vae-tiling"]
    assert run(saved_dir, wavs[1], "--out", first, *settings) == 0
    png = first / f"{wavs[1].stem}_seed3.png"
    stored = np.load(first / f"{wavs[1].stem}_seed3.npy")
    assert np.array_equal(stored, embedding_from_record(read_png_metadata(png)["embedding"]).numpy())
    # Only the PNG: no audio, no model or settings flags (the metadata names the model directory).
    assert main(["generate", "--from-metadata", str(png), "--out", str(second)]) == 0
    again = second / f"{wavs[1].stem}_seed3_regen.png"
    assert np.array_equal(pixels(again), pixels(png))
    meta = read_png_metadata(again)
    assert (meta["scheduler"], meta["prompt"], meta["regenerated_from"]) == ("euler", "a red barn", png.name)
    assert meta["low_memory"] == {"cpu_offload": False, "attention_slicing": True, "vae_tiling": True}


def test_batch_with_a_corrupt_file_reports_it_and_finishes_the_rest(saved_dir, wavs, tmp_path, capsys):
    folder = tmp_path / "batch"
    folder.mkdir()
    for wav in wavs[:2]:
        os.symlink(wav, folder / wav.name)
    (folder / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt this is not audio")
    (folder / "empty.wav").write_bytes(b"")
    out = tmp_path / "out"
    assert run(saved_dir, folder, tmp_path / "missing.wav", "--out", out, "--seed", 0) == 2
    assert sorted(p.name for p in out.iterdir()) == [f"{w.stem}_seed0.png" for w in wavs[:2]]
    captured = capsys.readouterr()
    assert "wrote 2 image(s)" in captured.out and "from 2 of 5 input(s)" in captured.out
    for bad in ("corrupt.wav", "empty.wav", "missing.wav"):
        assert bad in captured.err
    assert "3 input(s) failed" in captured.err


def test_refuses_to_overwrite_without_the_flag(saved_dir, wavs, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(saved_dir, wavs[0], "--out", out, "--seed", 1) == 0
    png = out / f"{wavs[0].stem}_seed1.png"
    before = png.read_bytes()
    png.write_bytes(b"user's own file")
    assert run(saved_dir, wavs[0], "--out", out, "--seed", 1) == 2
    assert png.read_bytes() == b"user's own file"
    assert "already exists (pass --overwrite to replace it)" in capsys.readouterr().err
    assert run(saved_dir, wavs[0], "--out", out, "--seed", 1, "--overwrite") == 0
    assert png.read_bytes() == before


def test_weighted_blend_of_two_sounds(saved_dir, pipe, wavs, tmp_path):
    out = tmp_path / "out"
    assert run(saved_dir, f"{wavs[0]}:0.7", f"{wavs[2]}:0.3", "--out", out, "--seed", 2) == 0
    png = out / f"mix_{wavs[0].stem}+{wavs[2].stem}_seed2.png"
    meta = read_png_metadata(png)
    assert [a["weight"] for a in meta["audio"]] == [0.7, 0.3]
    # Hand mix: unit vectors, 70/30, renormalised, times the stored norm.
    a, b = pipe.audio_encoder.embed([str(wavs[0]), str(wavs[2])])
    expected = unit(0.7 * unit(a) + 0.3 * unit(b)) * NORM
    # The CLI embeds each file through its own loaded copy and batch: kernels may block batches
    # differently, <= eps * K (K <= 256) relative per layer on entries ~0.4: ~1e-5 worst case.
    assert torch.allclose(embedding_from_record(meta["embedding"])[0], expected, atol=1e-4)
    # The same blend with --weights.
    assert (
        run(saved_dir, wavs[0], wavs[2], "--weights", 0.7, 0.3, "--out", out, "--seed", 2, "--overwrite") == 0
    )
    assert torch.allclose(embedding_from_record(read_png_metadata(png)["embedding"])[0], expected, atol=1e-4)


def test_audio_with_a_reference_image_and_prompt(saved_dir, pipe, wavs, photos, tmp_path):
    out = tmp_path / "out"
    args = ["--image", photos[0], "--image-weight", 0.4, "--prompt", "a satellite image", "--seed", 4]
    assert run(saved_dir, wavs[0], "--out", out, *args) == 0
    meta = read_png_metadata(out / f"{wavs[0].stem}_seed4.png")
    assert meta["image"]["weight"] == 0.4
    assert meta["image"]["sha256"] == hashlib.sha256(photos[0].read_bytes()).hexdigest()
    assert meta["prompt"] == "a satellite image"
    audio = pipe.audio_encoder.embed([str(wavs[0])])[0]
    image = encode_images(pipe.unclip, [load_image(photos[0])])[0]
    expected = unit(0.6 * unit(audio) + 0.4 * unit(image)) * NORM
    assert torch.allclose(embedding_from_record(meta["embedding"])[0], expected, atol=1e-4)  # as the blend


def test_storyboard_writes_one_frame_per_window_and_a_contact_sheet(saved_dir, wavs, tmp_path):
    out = tmp_path / "out"
    assert run(saved_dir, wavs[0], "--storyboard", "--window", 4, "--hop", 3, "--out", out, "--seed", 0) == 0
    stem = wavs[0].stem
    frames = [f"{stem}_t0000.00-0004.00_seed0.png", f"{stem}_t0003.00-0007.00_seed0.png"]
    frames.append(f"{stem}_t0006.00-0010.00_seed0.png")
    assert sorted(p.name for p in out.iterdir()) == sorted([*frames, f"{stem}_storyboard_seed0.png"])
    meta = read_png_metadata(out / frames[1])
    assert meta["storyboard"] == {"index": 1, "start": 3.0, "end": 7.0, "window": 4.0, "hop": 3.0}
    assert meta["audio"][0]["window"] == [3.0, 7.0]
    sheet = read_png_metadata(out / f"{stem}_storyboard_seed0.png")
    assert sheet["frames"] == frames
    with Image.open(out / f"{stem}_storyboard_seed0.png") as image:
        assert image.size == (2 * 36 + 4, 2 * 50 + 4)  # 3 tiles of 32 px -> 2 × 2 grid with labels


def test_calibrate_measures_the_mean_norm_of_real_images(saved_dir, pipe, photos, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in photos:
        os.symlink(photo, folder / photo.name)
    out = tmp_path / "cal"
    assert (
        main(
            [
                "generate",
                "--calibrate-images",
                str(folder),
                "--model",
                str(saved_dir),
                "-o",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    stored = json.loads((out / "sound2image_calibration.json").read_text())
    features = pipe.unclip.feature_extractor(images=[load_image(p) for p in photos], return_tensors="pt")
    with torch.no_grad():
        norms = pipe.unclip.image_encoder(features.pixel_values).image_embeds.norm(dim=-1)
    assert stored["num_images"] == 3
    # One batch of 3 vs the CLI's batches: CLIP's matmuls may sum in another order, <= eps * K relative
    # (K <= 64 in the tiny tower, ~8e-6 worst case), and norms average that down.
    assert math.isclose(stored["target_norm"], norms.mean().item(), rel_tol=1e-5)


def test_embedding_norm_override(saved_dir, wavs, tmp_path):
    out = tmp_path / "out"
    assert run(saved_dir, wavs[0], "--embedding-norm", 3.25, "--out", out, "--seed", 0) == 0
    meta = read_png_metadata(out / f"{wavs[0].stem}_seed0.png")
    # 13 eps ~ 1.6e-6: two float32 norms of 1024 terms and the rescale (see the first test).
    assert embedding_from_record(meta["embedding"]).norm().item() == pytest.approx(3.25, rel=2e-6)
    assert meta["calibration"]["source"] == "--embedding-norm override"


def test_missing_weights_error_through_the_cli(wavs, tmp_path, capsys):
    assert main(["generate", str(wavs[0]), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("error: stabilityai/stable-diffusion-2-1-unclip: ")
    assert not (tmp_path / "out").exists()


def test_transformer_model_dispatches_to_the_transformer_path(tmp_path, capsys):
    """``--model transformer:DIR`` runs the Image Transformer: driven through the entry point only, it
    writes the tiny model's image (its size, not SounDiff's) whose record names the transformer."""
    from tests.transformer.test_training import FEATURES
    from tests.transformer.tiny import tiny_model

    missing = tmp_path / "no-model"
    assert main(["generate", "a.wav", "--model", f"transformer:{missing}", "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {missing}: no such model directory (expected --model transformer:DIR)"
    model = tiny_model(seed=5, audio_sections=8, audio_bins=64)
    model.save_pretrained(tmp_path / "model", {"features": FEATURES.to_dict(), "classes": ["0"]})
    wav = tmp_path / "tone.wav"
    t = np.arange(int(0.2 * FEATURES.sample_rate)) / FEATURES.sample_rate
    sf.write(wav, 0.5 * np.sin(2 * np.pi * 900 * t), FEATURES.sample_rate)
    out = tmp_path / "out"
    args = [
        "generate",
        str(wav),
        "--model",
        f"transformer:{tmp_path / 'model'}",
        "--seed",
        "3",
        "-o",
        str(out),
    ]
    assert main(args) == 0
    png = out / "tone_seed3.png"
    assert Image.open(png).size == (8, 8)  # the tiny model's image_size
    meta = read_png_metadata(png)
    assert meta["model"]["type"] == "image-transformer" and meta["seed"] == 3


def test_usage_errors_exit_2(saved_dir, wavs, tmp_path, capsys):
    assert main(["generate", "--out", str(tmp_path)]) == 2
    assert run(saved_dir, wavs[0], "--image-weight", 1.5, "--image", wavs[0], "--out", tmp_path) == 2
    assert run(saved_dir, f"{wavs[0]}:0.5", "--weights", 1, "--out", tmp_path) == 2
    err = capsys.readouterr().err
    assert "no audio given" in err and "not both" in err
    with pytest.raises(SystemExit) as info:
        main(["generate", "--help"])
    assert info.value.code == 0
    assert "Examples:" in capsys.readouterr().out


def test_input_parsing_weights_seeds_and_names(saved_dir, wavs, tmp_path, capsys):
    with pytest.raises(UsageError, match="on CPU"):
        resolve_dtype("fp16", "cpu")
    # The same file name in two folders gives two distinct output names; seeds 5 20 x 2 images.
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        os.symlink(wavs[0], tmp_path / folder / "x.wav")
    out = tmp_path / "out"
    folders = [tmp_path / "a", tmp_path / "b"]
    assert run(saved_dir, *folders, "--seed", 5, 20, "--num-images", 2, "--size", 32, "-o", out) == 0
    expected = {f"{name}_seed{seed}.png" for name in ("x", "x-2") for seed in (5, 6, 20, 21)}
    assert {p.name for p in out.iterdir()} == expected
    capsys.readouterr()
    assert run(saved_dir, *folders, "--weights", 1, 2, 3, "-o", tmp_path / "o2") == 2
    assert "3 values for 2 audio files" in capsys.readouterr().err
    # A colon in a path is not a weight unless what follows is a number.
    assert run(saved_dir, "C:/sounds/rain.wav", "-o", tmp_path / "o3") == 2
    assert "C:/sounds/rain.wav" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()


def test_from_metadata_needs_our_metadata(tmp_path, capsys):
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    assert main(["generate", "--from-metadata", str(tmp_path / "plain.png"), "-o", str(tmp_path / "o")]) == 2
    assert "no sound2image metadata" in capsys.readouterr().err


def test_generate_command_module_imports_no_torch():
    """`sound2image generate --help` stays instant: heavy imports happen inside the handler."""
    import subprocess
    import sys

    code = "import sys, sound2image.cli.generate; print(sorted({'torch', 'diffusers'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_missing_imagebind_weights_offline_names_the_ways_to_supply_them(
    plain, wavs, tmp_path, monkeypatch, capsys
):
    plain.save_pretrained(tmp_path / "plain-unclip")  # a diffusers directory without our audio encoder
    monkeypatch.setenv("SOUND2IMAGE_CACHE", str(tmp_path / "cache"))  # an empty ImageBind cache
    monkeypatch.delenv("SOUND2IMAGE_IMAGEBIND_WEIGHTS", raising=False)
    capsys.readouterr()  # drop save_pretrained's progress output
    assert run(tmp_path / "plain-unclip", wavs[0], "--out", tmp_path / "out") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("error: imagebind_huge: ImageBind audio weights are not in ")
    assert "pass --imagebind-weights=FILE, or set SOUND2IMAGE_IMAGEBIND_WEIGHTS=FILE" in err
    assert not (tmp_path / "out").exists()


def test_bad_audio_is_reported_before_any_weights_are_needed(tmp_path, capsys):
    # No weights exist here (offline, empty HF cache): a bad file must still be named as the problem.
    empty, text = tmp_path / "empty.wav", tmp_path / "notes.wav"
    empty.write_bytes(b"")
    text.write_text("not audio\n")
    assert main(["generate", str(empty), str(text), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "empty.wav: file is empty" in err and "notes.wav: not a recognised audio format" in err
    assert "unCLIP" not in err and not (tmp_path / "out").exists()


# ---------------------------------------------------------------------- issue 11 C/D: flags, job accounting


def _written_count(stdout: str) -> int:
    """The N of the summary line "wrote N image(s) to ..."."""
    import re

    match = re.search(r"^wrote (\d+) image\(s\) to ", stdout, flags=re.MULTILINE)
    assert match, stdout
    return int(match.group(1))


@pytest.mark.parametrize(
    ("seed_args", "expected_seeds"),
    [(["--seed", 5, 5], [5]), (["--seed", 1, 2, "--num-images", 2], [1, 2, 3])],
    ids=["seed-5-5", "seed-1-2-num-images-2"],
)
def test_repeated_seeds_are_made_once_and_the_summary_counts_the_files(
    saved_dir, plain, wavs, tmp_path, capsys, seed_args, expected_seeds
):
    out = tmp_path / "out"
    assert run(saved_dir, wavs[0], "--out", out, *seed_args) == 0
    captured = capsys.readouterr()
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"{wavs[0].stem}_seed{s}.png" for s in expected_seeds)
    assert _written_count(captured.out) == len(names)
    assert "from 1 of 1 input(s)" in captured.out
    assert "repeat; each seed is made once" in captured.err and "already exists" not in captured.err
    # The last seed (3 was never made before) holds plain diffusers' image of that seed.
    last = out / f"{wavs[0].stem}_seed{expected_seeds[-1]}.png"
    meta = read_png_metadata(last)
    assert meta["seed"] == expected_seeds[-1]
    generator = torch.Generator("cpu").manual_seed(expected_seeds[-1])
    embeds = embedding_from_record(meta["embedding"])
    expected = plain(image_embeds=embeds, generator=generator, num_inference_steps=2).images[0]
    assert np.array_equal(pixels(last), np.asarray(expected))


def test_seed_flags_are_named_in_errors(saved_dir, wavs, tmp_path, capsys):
    """The library's seed errors (tests/test_seeds.py) reach the user as the flags' names."""
    assert run(saved_dir, wavs[0], "--seed", -1, "-o", tmp_path / "o") == 2
    assert capsys.readouterr().err.strip() == (
        "error: --seed must be an integer in [0, 9223372036854775807], got -1"
    )
    assert run(saved_dir, wavs[0], "--num-images", 0, "-o", tmp_path / "o") == 2
    assert capsys.readouterr().err.strip() == "error: --num-images must be an integer >= 1, got 0"


@pytest.mark.parametrize(
    "error",
    [RuntimeError("CUDA out of memory (injected)"), UsageError("injected failure")],
    ids=["runtime-error", "our-error"],
)
def test_a_failing_image_keeps_the_other_images_of_its_input(
    saved_dir, wavs, tmp_path, capsys, monkeypatch, error
):
    from sound2image.diffusion import SounDiffPipeline

    original = SounDiffPipeline.__call__

    def fail_on_seed_2(self, *args, **kwargs):
        if kwargs.get("seed") == 2:
            raise error
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SounDiffPipeline, "__call__", fail_on_seed_2)
    out = tmp_path / "out"
    assert run(saved_dir, wavs[0], wavs[2], "--out", out, "--seed", 1, 2, 3) == 2
    captured = capsys.readouterr()
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"{w.stem}_seed{s}.png" for w in (wavs[0], wavs[2]) for s in (1, 3))
    assert _written_count(captured.out) == len(names) == 4
    assert "from 2 of 2 input(s)" in captured.out
    assert "2 image(s) failed:" in captured.err and "input(s) failed" not in captured.err
    shown = f"{error}" if isinstance(error, UsageError) else f"RuntimeError: {error}"
    for wav in (wavs[0], wavs[2]):
        assert f"  {wav.stem} seed 2: {shown}" in captured.err


def test_a_png_written_before_a_failure_is_counted(saved_dir, wavs, tmp_path, capsys, monkeypatch):
    """--save-embedding: the .npy of seed 2 fails (disk full) after its PNG was written; the PNG counts."""
    real_save = np.save

    def disk_full_on_seed_2(target, *args, **kwargs):
        if "seed2" in str(target):
            raise OSError(28, "No space left on device (injected)")
        return real_save(target, *args, **kwargs)

    monkeypatch.setattr(np, "save", disk_full_on_seed_2)
    out = tmp_path / "out"
    assert run(saved_dir, wavs[0], "--out", out, "--seed", 1, 2, 3, "--save-embedding") == 2
    captured = capsys.readouterr()
    stem = wavs[0].stem
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == [f"{stem}_seed1.png", f"{stem}_seed2.png", f"{stem}_seed3.png"]
    assert sorted(p.name for p in out.glob("*.npy")) == [f"{stem}_seed1.npy", f"{stem}_seed3.npy"]
    assert _written_count(captured.out) == len(pngs) == 3
    assert "1 image(s) failed:" in captured.err and f"{stem} seed 2: OSError:" in captured.err


def test_a_failing_storyboard_seed_keeps_the_other_seeds(saved_dir, wavs, tmp_path, capsys, monkeypatch):
    from sound2image.diffusion import SounDiffPipeline

    original = SounDiffPipeline.__call__

    def fail_on_seed_2(self, *args, **kwargs):
        if kwargs.get("seed") == 2:
            raise RuntimeError("injected")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SounDiffPipeline, "__call__", fail_on_seed_2)
    out = tmp_path / "story"
    args = ["--storyboard", "--window", 5, "--out", out, "--seed", 1, 2]
    assert run(saved_dir, wavs[0], *args) == 2  # 10 s in 5 s windows: 2 frames per seed
    captured = capsys.readouterr()
    stem = wavs[0].stem
    names = sorted(p.name for p in out.iterdir())
    frames = [f"{stem}_t0000.00-0005.00_seed1.png", f"{stem}_t0005.00-0010.00_seed1.png"]
    assert names == sorted([*frames, f"{stem}_storyboard_seed1.png"])
    assert _written_count(captured.out) == len(names) == 3
    assert f"{stem} seed 2: RuntimeError: injected" in captured.err


#: Every numeric flag of the SounDiff path: NaN, infinity and a value out of range (printed as parsed).
FLAG_CASES = [
    ("--guidance-scale", "nan"),
    ("--guidance-scale", "inf"),
    ("--guidance-scale", "-1.0"),
    ("--image-weight", "nan"),
    ("--image-weight", "-inf"),
    ("--image-weight", "1.5"),
    ("--embedding-norm", "nan"),
    ("--embedding-norm", "inf"),
    ("--embedding-norm", "0.0"),
    ("--max-duration", "nan"),
    ("--max-duration", "inf"),
    ("--max-duration", "-1.0"),
    ("--weights", "nan"),
    ("--weights", "inf"),
    ("--weights", "-1.0"),
    ("--window", "nan"),
    ("--window", "inf"),
    ("--window", "0.0"),
    ("--hop", "nan"),
    ("--hop", "inf"),
    ("--hop", "-2.0"),
    ("--steps", "0"),
    ("--noise-level", "-1"),
    ("--noise-level", "1000"),
    ("--batch-size", "0"),
    ("--num-images", "0"),
    ("--seed", "-1"),
    ("--size", "0"),
    ("--size", "12"),
    ("--height", "-8"),
    ("--width", "36"),
]


@pytest.mark.parametrize(("flag", "value"), FLAG_CASES, ids=[f"{f}={v}" for f, v in FLAG_CASES])
def test_every_numeric_flag_is_refused_before_any_work_naming_the_flag(wavs, tmp_path, capsys, flag, value):
    # No --model: the weights are not available offline, so only a check before loading can answer.
    out = tmp_path / "out"
    assert main(["generate", str(wavs[0]), "--out", str(out), f"{flag}={value}"]) == 2  # "=": "-inf" too
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {flag} must be ") and err.endswith(f"got {value}"), err
    assert not out.exists()


def test_regeneration_refuses_a_non_finite_recorded_setting(saved_dir, wavs, tmp_path, capsys):
    """A PNG whose metadata says guidance_scale NaN (hand-edited or from an old version) is refused."""
    from sound2image.outputs import save_png

    first = tmp_path / "first"
    assert run(saved_dir, wavs[0], "--out", first, "--seed", 1) == 0
    png = first / f"{wavs[0].stem}_seed1.png"
    meta = read_png_metadata(png)
    meta["guidance_scale"] = float("nan")
    edited = tmp_path / "edited.png"
    with Image.open(png) as image:
        save_png(image.copy(), edited, meta)
    capsys.readouterr()
    assert main(["generate", "--from-metadata", str(edited), "--out", str(tmp_path / "again")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: guidance_scale must be finite and >= 0, got nan"
    assert not (tmp_path / "again").exists() or not any((tmp_path / "again").iterdir())


@pytest.mark.parametrize(
    "flag",
    [
        ["--temperature", "0.5"],
        ["--top-k", "3"],
        ["--top-p", "0.5"],
        ["--upscale", "2"],
        ["--decoder-dtype", "float16"],
        ["--compile"],
    ],
    ids=lambda f: f[0],
)
def test_image_transformer_flags_are_refused_by_soundiff_not_ignored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: list[str]
) -> None:
    """One rule for both paths: an option the chosen model family does not apply is an error."""
    audio = tmp_path / "a.wav"
    sf.write(audio, np.zeros(1600, dtype=np.float32), 16000)
    out = tmp_path / "out"
    assert main(["generate", str(audio), "--model", str(tmp_path / "no-model"), "-o", str(out), *flag]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: {flag[0]}: only for the Image Transformer (--model transformer:DIR), not used by SounDiff; "
        "leave it out"
    )
    assert not out.exists()
