"""The generation record, regeneration, best-of-N and the loading policy, through the library's public API
(``SounDiffPipeline``, ``GenerationRecord``, ``regenerate``) and the CLI entry point."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sound2image.cli.main import main
from sound2image.diffusion import (
    EmbeddingCalibration,
    GenerationRecord,
    SounDiffPipeline,
    encode_images,
    regenerate,
)
from sound2image.errors import UsageError
from sound2image.outputs import read_png_metadata
from sound2image.transformer.reranker import candidate_seed
from tests.diffusion.conftest import SAVED_CALIBRATION, STEPS

pytestmark = pytest.mark.numeric

#: A PNG written by `sound2image generate` before the record existed (main at 505d363, the tiny pipeline
#: saved with SAVED_CALIBRATION; 00017.wav of pseudo-advance/beach; --prompt "a red barn"
#: --negative-prompt fog --noise-level 100 --guidance-scale 4 --scheduler euler --seed 3 --steps 2).
OLD_PNG = Path(__file__).parent / "data" / "main_cli_00017_seed3.png"


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("SOUND2IMAGE_UNCLIP", raising=False)


def pixels(image_or_path) -> np.ndarray:
    if isinstance(image_or_path, Path):
        with Image.open(image_or_path) as image:
            return np.asarray(image.convert("RGB"))
    return np.asarray(image_or_path)


def plain_draw(plain, embeds, seed, **kwargs) -> np.ndarray:
    """Plain diffusers' image for this embedding and seed (the independent reference)."""
    generator = torch.Generator("cpu").manual_seed(seed)
    return np.asarray(plain(image_embeds=embeds, generator=generator, **kwargs).images[0])


# ---------------------------------------------------------------------- the record of a library call


def test_a_library_call_returns_each_image_with_its_record(pipe, plain, wavs):
    out = pipe(str(wavs[0]), seed=7, num_inference_steps=STEPS, prompt="a beach", guidance_scale=3.0)
    (record,) = out.records
    assert record.seed == 7 and record.draw_seed == 7 and record.best_of is None
    assert record.audio == [
        {
            "file": wavs[0].name,
            "path": str(wavs[0]),
            "sha256": hashlib.sha256(wavs[0].read_bytes()).hexdigest(),
            "weight": None,
        }
    ]
    settings = record.settings
    assert (settings.prompt, settings.num_inference_steps, settings.guidance_scale) == ("a beach", STEPS, 3.0)
    assert (settings.height, settings.width, settings.scheduler) == (32, 32, "ddim")
    assert (record.device, record.dtype) == ("cpu", "float32")
    assert record.calibration == {"target_norm": 20.0, "source": pipe.calibration.source, "num_images": 0}
    assert torch.equal(record.image_embeds, out.image_embeds)  # the exact conditioning, (1, D)
    # The record's seed and settings are what plain diffusers needs to draw the same pixels.
    expected = plain_draw(
        plain, record.image_embeds, 7, num_inference_steps=STEPS, prompt="a beach", guidance_scale=3.0
    )
    assert np.array_equal(pixels(out.images[0]), expected)


def test_blend_and_reference_image_are_recorded(pipe, wavs, photos):
    from sound2image.data import load_image

    out = pipe(
        [str(wavs[0]), str(wavs[2])],
        audio_weights=[0.7, 0.3],
        image=load_image(photos[0]),
        image_weight=0.25,
        seed=1,
        num_inference_steps=STEPS,
    )
    record = out.records[0]
    assert [a["file"] for a in record.audio] == [wavs[0].name, wavs[2].name]
    assert [a["weight"] for a in record.audio] == [0.7, 0.3]
    assert record.image == {"weight": 0.25}


def test_metadata_round_trip_keeps_every_field(pipe, wavs):
    record = pipe(str(wavs[1]), seed=11, num_inference_steps=STEPS, negative_prompt="fog").records[0]
    record.extra["storyboard"] = {"index": 0}
    metadata = record.to_metadata()
    back = GenerationRecord.from_metadata(metadata)
    assert torch.equal(back.image_embeds, record.image_embeds)  # exact float32 bytes
    back_dict, record_dict = vars(back).copy(), vars(record).copy()
    back_dict.pop("image_embeds"), record_dict.pop("image_embeds")
    assert back_dict == record_dict
    assert back.to_metadata() == metadata


def test_a_seed_that_did_not_seed_one_image_alone_is_not_recorded(pipe):
    embeds = torch.randn(1, 1024, generator=torch.Generator().manual_seed(0)) * 10
    out = pipe(image_embeds=embeds, seed=4, num_images_per_prompt=2, num_inference_steps=STEPS)
    assert [r.seed for r in out.records] == [None, None]  # both came from one generator
    with pytest.raises(UsageError, match="has no seed"):
        regenerate(out.records[0], pipe)


# ---------------------------------------------------------------------- regenerate


def test_regenerate_a_record_and_its_metadata_gives_identical_pixels(pipe, wavs):
    out = pipe(str(wavs[0]), seed=5, num_inference_steps=STEPS, noise_level=50, prompt="a red barn")
    pipe.set_scheduler("ddim")
    record = out.records[0]
    record.settings.scheduler = "euler"  # a recorded scheduler is switched on for the redraw ...
    euler = regenerate(record, pipe)
    assert pipe.scheduler_name == "ddim"  # ... and the pipeline's own is restored afterwards
    record.settings.scheduler = "ddim"
    again = regenerate(record, pipe)
    assert np.array_equal(pixels(again.images[0]), pixels(out.images[0]))
    assert not np.array_equal(pixels(euler.images[0]), pixels(out.images[0]))
    from_dict = regenerate(record.to_metadata(), pipe)
    assert np.array_equal(pixels(from_dict.images[0]), pixels(out.images[0]))
    assert again.records[0].audio == record.audio and again.records[0].seed == 5


def test_a_png_written_before_the_record_existed_still_reads_and_regenerates(saved_dir, tmp_path):
    metadata = read_png_metadata(OLD_PNG)
    record = GenerationRecord.from_png(OLD_PNG)
    assert record.to_metadata() == metadata  # every key of the old format survives, unchanged
    assert (record.seed, record.settings.scheduler, record.settings.prompt) == (3, "euler", "a red barn")
    assert record.audio[0]["file"] == "00017.wav" and record.calibration["target_norm"] == 12.5
    # The PNG names a model directory that no longer exists: --model / model= point at a copy of it.
    out = regenerate(OLD_PNG, model=saved_dir, device="cpu")
    from diffusers import EulerDiscreteScheduler, StableUnCLIPImg2ImgPipeline

    # Plain diffusers loading the same directory (its saved tokenizer is the one the PNG's prompt met).
    reference = StableUnCLIPImg2ImgPipeline.from_pretrained(saved_dir)
    reference.scheduler = EulerDiscreteScheduler.from_config(reference.scheduler.config)
    reference.set_progress_bar_config(disable=True)
    expected = plain_draw(
        reference,
        record.image_embeds,
        3,
        num_inference_steps=2,
        prompt="a red barn",
        negative_prompt="fog",
        noise_level=100,
        guidance_scale=4.0,
    )
    assert np.array_equal(pixels(out.images[0]), expected)
    # The PNG's own pixels (exact on the machine that wrote it; another CPU's kernels may round apart).
    assert np.abs(pixels(out.images[0]).astype(int) - pixels(OLD_PNG).astype(int)).mean() < 1.0
    # And through the CLI: --from-metadata with the model directory named.
    again = tmp_path / "again"
    args = ["generate", "--from-metadata", str(OLD_PNG), "--model", str(saved_dir), "-o", str(again)]
    assert main(args) == 0
    regen = again / f"{OLD_PNG.stem}_regen.png"
    assert np.array_equal(pixels(regen), expected)
    assert read_png_metadata(regen)["regenerated_from"] == OLD_PNG.name


# ---------------------------------------------------------------------- best of N


def _score(pipe, image, embeds) -> float:
    """Cosine of an image's embedding (the pipeline's own image encoder) with the conditioning, by hand."""
    vector = encode_images(pipe.unclip, [image])[0].double()
    target = embeds[0].double()
    return float(vector @ target / (vector.norm() * target.norm()))


def test_best_of_n_keeps_the_argmax_and_each_draw_is_the_single_draw_of_its_seed(pipe, plain):
    embeds = torch.randn(1, 1024, generator=torch.Generator().manual_seed(3)) * 12
    out = pipe(image_embeds=embeds, seed=9, candidates=4, num_inference_steps=STEPS)
    best = out.records[0].best_of
    assert best["candidates"] == 4 and len(out.candidates) == 4
    assert best["seeds"] == [9, *(candidate_seed(9, k) for k in range(1, 4))]
    for k, seed in enumerate(best["seeds"]):
        single = pipe(image_embeds=embeds, seed=seed, num_inference_steps=STEPS).images[0]
        assert np.array_equal(pixels(out.candidates[k]), pixels(single))
        assert np.array_equal(pixels(single), plain_draw(plain, embeds, seed, num_inference_steps=STEPS))
        # CLIP's image tower on one image vs a batch of four: matmuls may sum in another order.
        assert best["scores"][k] == pytest.approx(_score(pipe, single, embeds), abs=1e-5)
    assert best["kept"] == int(np.argmax(best["scores"]))
    assert np.array_equal(pixels(out.images[0]), pixels(out.candidates[best["kept"]]))
    assert len(set(best["scores"])) == 4  # the draws differ, so the choice is a real one
    # The record redraws the kept image.
    record = out.records[0]
    assert record.seed == 9 and record.draw_seed == best["seeds"][best["kept"]]
    assert np.array_equal(pixels(regenerate(record, pipe).images[0]), pixels(out.images[0]))
    # Best-of-1 is plain sampling.
    one = pipe(image_embeds=embeds, seed=9, candidates=1, num_inference_steps=STEPS)
    assert np.array_equal(pixels(one.images[0]), pixels(out.candidates[0])) and one.records[0].best_of is None


def test_best_of_n_needs_a_seed_and_one_image(pipe):
    embeds = torch.randn(1, 1024, generator=torch.Generator().manual_seed(3))
    with pytest.raises(UsageError, match="candidates > 1 needs a seed"):
        pipe(image_embeds=embeds, candidates=2, num_inference_steps=STEPS)
    with pytest.raises(UsageError, match="candidates must be an integer >= 1, got 0"):
        pipe(image_embeds=embeds, seed=1, candidates=0, num_inference_steps=STEPS)


def test_cli_candidates_records_every_score_and_regenerates(saved_dir, wavs, tmp_path):
    out = tmp_path / "out"
    args = ["--model", str(saved_dir), "--steps", "2", "--device", "cpu", "--seed", "6", "--candidates", "3"]
    assert main(["generate", str(wavs[0]), "-o", str(out), *args]) == 0
    png = out / f"{wavs[0].stem}_seed6.png"
    assert sorted(p.name for p in out.iterdir()) == [png.name]  # one image per seed, the kept one
    meta = read_png_metadata(png)
    best = meta["best_of"]
    assert best["candidates"] == 3 and len(best["scores"]) == 3 and meta["seed"] == 6
    assert best["kept"] == int(np.argmax(best["scores"]))
    assert best["seeds"] == [6, candidate_seed(6, 1), candidate_seed(6, 2)]
    pipe = SounDiffPipeline.from_pretrained(saved_dir, device="cpu", load_audio_encoder=False)
    embeds = GenerationRecord.from_png(png).image_embeds
    single = pipe(image_embeds=embeds, seed=best["seeds"][best["kept"]], num_inference_steps=2).images[0]
    assert np.array_equal(pixels(png), pixels(single))
    for k, seed in enumerate(best["seeds"]):
        draw = pipe(image_embeds=embeds, seed=seed, num_inference_steps=2).images[0]
        assert best["scores"][k] == pytest.approx(_score(pipe, draw, embeds), abs=1e-5)
    again = tmp_path / "again"
    assert main(["generate", "--from-metadata", str(png), "-o", str(again)]) == 0
    assert np.array_equal(pixels(again / f"{png.stem}_regen.png"), pixels(png))


# ---------------------------------------------------------------------- loading policy


def test_from_pretrained_device_dtype_low_memory_and_calibration_policy(saved_dir, tmp_path):
    with pytest.raises(UsageError, match=r"^dtype fp16 is not supported on CPU; use fp32$"):
        SounDiffPipeline.from_pretrained(saved_dir, device="cpu", dtype="fp16")
    offload = r"^cpu_offload needs a CUDA device \(the device is cpu\); leave it out$"
    with pytest.raises(UsageError, match=offload):
        SounDiffPipeline.from_pretrained(saved_dir, device="cpu", cpu_offload=True)
    with pytest.raises(UsageError, match="^device warp-drive: unknown device"):
        SounDiffPipeline.from_pretrained(saved_dir, device="warp-drive")
    pipe = SounDiffPipeline.from_pretrained(
        saved_dir, device="cpu", dtype="auto", load_audio_encoder=False, attention_slicing=True
    )
    assert (str(pipe.device), pipe.dtype) == ("cpu", torch.float32)
    assert pipe.low_memory == {"cpu_offload": False, "attention_slicing": True, "vae_tiling": False}
    # A calibration file (or its folder) overrides the stored one; another file is refused.
    other = EmbeddingCalibration(target_norm=7.5, source="elsewhere", num_images=2)
    path = other.save(tmp_path / "cal")
    for given in (path, path.parent, other):
        loaded = SounDiffPipeline.from_pretrained(
            saved_dir, device="cpu", load_audio_encoder=False, calibration=given
        )
        assert loaded.calibration == other
    stored = SounDiffPipeline.from_pretrained(saved_dir, device="cpu", load_audio_encoder=False).calibration
    assert stored == SAVED_CALIBRATION
    stray = tmp_path / "notes.json"
    stray.write_text("{}")
    with pytest.raises(UsageError, match="expected a sound2image_calibration.json file or its folder"):
        SounDiffPipeline.from_pretrained(saved_dir, device="cpu", load_audio_encoder=False, calibration=stray)
    shutil.rmtree(tmp_path / "cal")
    (tmp_path / "cal").mkdir()
    with pytest.raises(UsageError, match="no sound2image_calibration.json here"):
        SounDiffPipeline.from_pretrained(
            saved_dir, device="cpu", load_audio_encoder=False, calibration=tmp_path / "cal"
        )


def test_readme_python_example(saved_dir, wavs, monkeypatch):
    """README: ``pipe = SounDiffPipeline.from_pretrained(); out = pipe(...); regenerate(out.records[0])``."""
    monkeypatch.setenv("SOUND2IMAGE_UNCLIP", str(saved_dir))  # the default model, offline
    pipe = SounDiffPipeline.from_pretrained()
    out = pipe(str(wavs[0]), seed=7, num_inference_steps=STEPS)
    image, record = out.images[0], out.records[0]
    assert record.seed == 7
    assert np.array_equal(pixels(regenerate(record).images[0]), pixels(image))


# ---------------------------------------------------------------------- the one runner


def test_iter_images_encodes_once_and_draws_each_seed_as_a_single_call_would(pipe, plain, wavs, monkeypatch):
    from sound2image.diffusion import iter_images

    calls = []
    original = type(pipe).encode_audio

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(pipe), "encode_audio", counted)
    sounds = [str(wavs[0]), str(wavs[2])]
    runs = iter_images(pipe, sounds, [3, 4], audio_weights=[0.7, 0.3], num_inference_steps=STEPS)
    drawn = [(seed, list(draws)) for seed, draws in runs]
    assert calls == [1]  # two seeds, one audio-encoder pass
    expected_embeds = pipe.build_image_embeds(sounds, [0.7, 0.3])
    for seed, (image,) in drawn:
        assert (image.seed, image.record.seed, image.window) == (seed, seed, None)
        assert torch.equal(image.record.image_embeds, expected_embeds)
        assert [a["weight"] for a in image.record.audio] == [0.7, 0.3]
        reference = plain_draw(plain, expected_embeds, seed, num_inference_steps=STEPS)
        assert np.array_equal(pixels(image.image), reference)


def test_iter_images_a_failing_seed_leaves_the_next_one(pipe, wavs, monkeypatch):
    from sound2image.diffusion import iter_images

    original = type(pipe).__call__

    def fail_on_seed_2(self, *args, **kwargs):
        if kwargs.get("seed") == 2:
            raise RuntimeError("injected")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(pipe), "__call__", fail_on_seed_2)
    made, failed = [], []
    for seed, draws in iter_images(pipe, [str(wavs[0])], [1, 2, 3], num_inference_steps=STEPS):
        try:
            made += [d.seed for d in draws]
        except RuntimeError:
            failed.append(seed)
    assert (made, failed) == ([1, 3], [2])


def test_cli_names_its_flags_for_the_library_policy(saved_dir, wavs, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["generate", str(wavs[0]), "--model", str(saved_dir), "--device", "cpu", "-o", str(out)]
    assert main([*base, "--dtype", "fp16"]) == 2
    assert capsys.readouterr().err.strip() == "error: --dtype fp16 is not supported on CPU; use fp32"
    assert main([*base, "--cpu-offload"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --cpu-offload needs a CUDA device (the device is cpu); leave it out"
    assert main([*base, "--candidates", "0"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: --candidates must be ")
    assert not out.exists()
