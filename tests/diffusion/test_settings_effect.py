"""Every SounDiff generation setting checked where it takes effect (issue #11 F), not where it is recorded.

The reference is plain diffusers: a ``StableUnCLIPImg2ImgPipeline`` with the same tiny weights, called with
the same ``image_embeds``, prompt, negative prompt, noise level, guidance, steps, scheduler, size and seed,
must draw exactly the CLI's / API's pixels. Each test also checks that the reference with the setting left
at its default draws *different* pixels, so a command that recorded a setting but did not apply it fails.
Settings with no pixel effect (low-memory options, dtype, batch size) are checked by the state they
must produce.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from sound2image.audio import load_audio
from sound2image.cli.main import main
from sound2image.data import load_image
from sound2image.diffusion import EmbeddingCalibration, SounDiffPipeline
from sound2image.diffusion.conditioning import embedding_from_record
from sound2image.outputs import read_png_metadata
from tests.diffusion.conftest import SAVED_CALIBRATION, STEPS
from tests.dummies import get_dummy_audio_encoder, get_dummy_unclip_pipeline

pytestmark = pytest.mark.numeric
NORM = SAVED_CALIBRATION.target_norm

#: Our scheduler names -> the diffusers class each must build (diffusers' documented names for the
#: k-diffusion/A1111 samplers: "DPM++ 2M" is DPMSolverMultistepScheduler, "Euler a" the ancestral Euler).
EXPECTED_SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "pndm": "PNDMScheduler",
    "lms": "LMSDiscreteScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler-a": "EulerAncestralDiscreteScheduler",
    "heun": "HeunDiscreteScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "dpm++-karras": "DPMSolverMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
}


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    """Offline with an empty cache: only --model DIR can work."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("SOUND2IMAGE_UNCLIP", raising=False)


@pytest.fixture(scope="module")
def reference():
    """A private plain diffusers pipeline (its scheduler is swapped in tests, so not the shared one)."""
    return get_dummy_unclip_pipeline()


@pytest.fixture(scope="module")
def loaded(saved_dir):
    """Plain diffusers' own load of the directory the CLI is given (``--model``).

    The reference for CLI runs: a scheduler swap builds from the *loaded* config, and a config written
    to disk lists ``timestep_spacing`` explicitly ("leading"), while one built in memory leaves it to the
    new class's default ("linspace" for Euler), so the in-memory pipeline is not the same model here.
    """
    from diffusers import StableUnCLIPImg2ImgPipeline

    unclip = StableUnCLIPImg2ImgPipeline.from_pretrained(saved_dir)
    unclip.set_progress_bar_config(disable=True)
    return unclip


def generate(model: Path, *args: Any) -> int:
    return main(["generate", "--model", str(model), "--device", "cpu", *map(str, args)])


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def unit(vector: torch.Tensor) -> torch.Tensor:
    return vector / vector.norm()


def with_scheduler(unclip: Any, name: str) -> Any:
    """A shallow copy of a plain pipeline using the diffusers scheduler class ``name`` stands for."""
    import diffusers

    other = copy.copy(unclip)
    config = {k: v for k, v in unclip.scheduler.config.items() if k != "use_karras_sigmas"}
    extra = {"use_karras_sigmas": True} if name == "dpm++-karras" else {}
    other.scheduler = getattr(diffusers, EXPECTED_SCHEDULERS[name]).from_config(config, **extra)
    return other


def plain_draw(unclip: Any, embeds: torch.Tensor, seed: int, output_type: str = "pil", **kwargs: Any) -> Any:
    generator = torch.Generator("cpu").manual_seed(seed)
    images = unclip(image_embeds=embeds, generator=generator, output_type=output_type, **kwargs).images
    return np.asarray(images[0]) if output_type == "pil" else images


# --- generate: sampling settings ---------------------------------------------------------------------

#: Every sampling flag away from its default, with the plain-diffusers keyword it must become.
SAMPLING_FLAGS = ["--prompt", "a red barn", "--negative-prompt", "fog", "--noise-level", 300]
SAMPLING_FLAGS += [
    "--guidance-scale",
    4.5,
    "--steps",
    3,
    "--scheduler",
    "euler",
    "--height",
    48,
    "--width",
    40,
]
SAMPLING_KWARGS = {
    "prompt": "a red barn",
    "negative_prompt": "fog",
    "noise_level": 300,
    "guidance_scale": 4.5,
    "num_inference_steps": 3,
    "height": 48,
    "width": 40,
}
#: What each keyword becomes when its flag is ignored (the CLI's defaults; steps: 2 stands for 20, which
#: costs 7x more, and any other count draws other pixels; a dropped size changes the shape, checked apart).
SAMPLING_DEFAULTS = {
    "prompt": "",
    "negative_prompt": None,
    "noise_level": 0,
    "guidance_scale": 10.0,
    "num_inference_steps": 2,
}


@pytest.fixture(scope="module")
def sampled(saved_dir, pipe, wavs, tmp_path_factory) -> dict[str, Any]:
    """One CLI run with every sampling flag set, seeds 3 and 4 (``--seed 3 --num-images 2``)."""
    out = tmp_path_factory.mktemp("sampled")
    code = main(
        ["generate", "--model", str(saved_dir), "--device", "cpu", str(wavs[0]), "--out", str(out)]
        + [str(a) for a in SAMPLING_FLAGS]
        + ["--seed", "3", "--num-images", "2"]
    )
    assert code == 0
    return {"out": out, "pngs": {seed: out / f"{wavs[0].stem}_seed{seed}.png" for seed in (3, 4)}}


def test_cli_pixels_equal_plain_diffusers_with_every_sampling_setting(sampled, loaded, pipe, wavs):
    euler = with_scheduler(loaded, "euler")
    raw = pipe.audio_encoder.embed([load_audio(wavs[0])])[0]  # (1024,) the encoder's public call
    for seed, png in sampled["pngs"].items():
        meta = read_png_metadata(png)
        embeds = embedding_from_record(meta["embedding"])
        # The conditioning: unit direction of the sound x the stored calibration (float32 rounding).
        torch.testing.assert_close(embeds[0], unit(raw) * NORM, atol=1e-5, rtol=0)
        expected = plain_draw(euler, embeds, seed, **SAMPLING_KWARGS)
        assert expected.shape == (48, 40, 3)
        assert np.array_equal(pixels(png), expected), f"seed {seed}"
    # Each setting matters: dropping any one of them (its default) gives other pixels.
    embeds = embedding_from_record(read_png_metadata(sampled["pngs"][3])["embedding"])
    ours = pixels(sampled["pngs"][3])
    for name, default in SAMPLING_DEFAULTS.items():
        other = plain_draw(euler, embeds, 3, **{**SAMPLING_KWARGS, name: default})
        assert other.shape != ours.shape or not np.array_equal(other, ours), name
    assert not np.array_equal(plain_draw(loaded, embeds, 3, **SAMPLING_KWARGS), ours)  # scheduler
    assert not np.array_equal(pixels(sampled["pngs"][4]), ours)  # the seed


def test_regeneration_from_metadata_equals_plain_diffusers(sampled, loaded, tmp_path):
    png = sampled["pngs"][4]
    assert main(["generate", "--from-metadata", str(png), "--out", str(tmp_path)]) == 0
    again = tmp_path / f"{png.stem}_regen.png"
    embeds = embedding_from_record(read_png_metadata(png)["embedding"])
    assert np.array_equal(
        pixels(again), plain_draw(with_scheduler(loaded, "euler"), embeds, 4, **SAMPLING_KWARGS)
    )


def test_size_flag_sets_both_sides(saved_dir, loaded, wavs, tmp_path):
    assert generate(saved_dir, wavs[1], "--size", 48, "--steps", STEPS, "--seed", 0, "--out", tmp_path) == 0
    png = tmp_path / f"{wavs[1].stem}_seed0.png"
    embeds = embedding_from_record(read_png_metadata(png)["embedding"])
    expected = plain_draw(loaded, embeds, 0, num_inference_steps=STEPS, height=48, width=48)
    assert expected.shape == (48, 48, 3) and np.array_equal(pixels(png), expected)


# --- generate: conditioning settings -----------------------------------------------------------------


def test_cli_conditioning_flags_reach_the_pixels(saved_dir, loaded, pipe, wavs, photos, tmp_path):
    calibration_dir = tmp_path / "cal"
    EmbeddingCalibration(target_norm=4.0, source="test file", num_images=2).save(calibration_dir)
    out = tmp_path / "out"
    code = generate(
        saved_dir, f"{wavs[0]}:0.7", f"{wavs[2]}:0.3", "--image", photos[0], "--image-weight", 0.25,
        "--calibration", calibration_dir, "--steps", STEPS, "--seed", 1, "--out", out,
    )  # fmt: skip
    assert code == 0
    png = out / f"mix_{wavs[0].stem}+{wavs[2].stem}_seed1.png"
    embeds = embedding_from_record(read_png_metadata(png)["embedding"])
    a, b = (unit(v) for v in pipe.audio_encoder.embed([load_audio(wavs[0]), load_audio(wavs[2])]))
    features = pipe.unclip.feature_extractor(images=[load_image(photos[0])], return_tensors="pt")
    with torch.no_grad():
        image = unit(pipe.unclip.image_encoder(features.pixel_values).image_embeds[0])
    # Weights are proportions of unit vectors; the image takes 25 %; the result has the file's norm 4.
    expected = unit(0.75 * unit(0.7 * a + 0.3 * b) + 0.25 * image) * 4.0
    torch.testing.assert_close(embeds[0], expected, atol=1e-5, rtol=0)
    assert np.array_equal(pixels(png), plain_draw(loaded, embeds, 1, num_inference_steps=STEPS))
    # --embedding-norm beats --calibration, and reaches the pixels too.
    code = generate(
        saved_dir, wavs[0], "--calibration", calibration_dir, "--embedding-norm", 30, "--steps", STEPS,
        "--seed", 1, "--out", out,
    )  # fmt: skip
    assert code == 0
    png = out / f"{wavs[0].stem}_seed1.png"
    embeds = embedding_from_record(read_png_metadata(png)["embedding"])
    torch.testing.assert_close(embeds[0], unit(a) * 30.0, atol=1e-4, rtol=0)  # norm 30: eps x 30
    ours = pixels(png)
    assert np.array_equal(ours, plain_draw(loaded, embeds, 1, num_inference_steps=STEPS))
    assert not np.array_equal(ours, plain_draw(loaded, unit(embeds) * NORM, 1, num_inference_steps=STEPS))


def test_storyboard_frame_is_conditioned_on_its_own_window(saved_dir, loaded, pipe, wavs, tmp_path):
    args = ["--storyboard", "--window", 4, "--hop", 3, "--steps", STEPS, "--seed", 0, "--out", tmp_path]
    assert generate(saved_dir, wavs[0], *args) == 0
    png = tmp_path / f"{wavs[0].stem}_t0003.00-0007.00_seed0.png"
    embeds = embedding_from_record(read_png_metadata(png)["embedding"])
    clip = load_audio(wavs[0])
    rate = clip.sample_rate
    piece = (np.asarray(clip.samples)[..., 3 * rate : 7 * rate], rate)  # seconds 3..7 by hand
    torch.testing.assert_close(
        embeds[0], unit(pipe.audio_encoder.embed([piece])[0]) * NORM, atol=1e-5, rtol=0
    )
    assert np.array_equal(pixels(png), plain_draw(loaded, embeds, 0, num_inference_steps=STEPS))


def test_unet_flag_loads_the_fine_tuned_unet(saved_dir, loaded, wavs, tmp_path):
    tuned = copy.deepcopy(loaded.unet)
    with torch.no_grad():
        tuned.conv_out.weight.mul_(1.5)
    tuned.save_pretrained(tmp_path / "export" / "unet")
    (tmp_path / "export" / "sound2image_soundiff.json").write_text(json.dumps({"variant": "L"}))
    out = tmp_path / "out"
    assert (
        generate(saved_dir, wavs[0], "--unet", tmp_path / "export", "--steps", STEPS, "--seed", 2, "-o", out)
        == 0
    )
    png = out / f"{wavs[0].stem}_seed2.png"
    meta = read_png_metadata(png)
    assert meta["model"]["unet"] == str((tmp_path / "export").resolve())
    embeds = embedding_from_record(meta["embedding"])
    theirs = copy.copy(loaded)
    theirs.unet = tuned
    ours = pixels(png)
    assert np.array_equal(ours, plain_draw(theirs, embeds, 2, num_inference_steps=STEPS))
    assert not np.array_equal(ours, plain_draw(loaded, embeds, 2, num_inference_steps=STEPS))


def test_imagebind_weights_flag_loads_that_encoder(reference, wavs, tmp_path, monkeypatch):
    reference.save_pretrained(tmp_path / "plain-unclip")  # a diffusers directory without an audio encoder
    monkeypatch.setenv("SOUND2IMAGE_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("SOUND2IMAGE_IMAGEBIND_WEIGHTS", raising=False)
    encoder = get_dummy_audio_encoder()
    with torch.no_grad():
        encoder.head.proj.weight.mul_(-1.0)  # a different encoder from the saved pipeline's
    encoder.save_pretrained(tmp_path / "audio.safetensors")
    out = tmp_path / "out"
    args = ["--imagebind-weights", tmp_path / "audio.safetensors", "--steps", STEPS, "--seed", 0, "-o", out]
    assert generate(tmp_path / "plain-unclip", wavs[0], *args) == 0
    embeds = embedding_from_record(read_png_metadata(out / f"{wavs[0].stem}_seed0.png")["embedding"])
    raw = encoder.embed([load_audio(wavs[0])])[0]
    torch.testing.assert_close(embeds[0], unit(raw) * 20.0, atol=1e-5, rtol=0)  # uncalibrated: x20


def test_variant_flag_loads_the_variant_files(saved_dir, loaded, wavs, tmp_path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(saved_dir, model)
    tuned = copy.deepcopy(loaded.unet)
    with torch.no_grad():
        tuned.conv_out.weight.mul_(1.5)
    tuned.save_pretrained(model / "unet", variant="fp16")  # diffusion_pytorch_model.fp16.safetensors
    out = tmp_path / "out"
    assert generate(model, wavs[0], "--variant", "fp16", "--steps", STEPS, "--seed", 2, "-o", out) == 0
    png = out / f"{wavs[0].stem}_seed2.png"
    embeds = embedding_from_record(read_png_metadata(png)["embedding"])
    theirs = copy.copy(loaded)
    theirs.unet = tuned
    assert np.array_equal(pixels(png), plain_draw(theirs, embeds, 2, num_inference_steps=STEPS))


def test_batch_size_and_mix_flags(saved_dir, pipe, wavs, tmp_path, monkeypatch):
    from sound2image.encoders import ImageBindAudioEncoder

    seen: list[int] = []
    original = ImageBindAudioEncoder.embed_features

    def spy(self, features, clips_per_file=None):
        seen.append(features.shape[0] // (clips_per_file or self.config.clips_per_file))  # files
        return original(self, features, clips_per_file)

    monkeypatch.setattr(ImageBindAudioEncoder, "embed_features", spy)
    assert (
        generate(saved_dir, *wavs, "--mix", "--batch-size", 2, "--steps", 1, "--seed", 0, "-o", tmp_path) == 0
    )
    assert seen == [2, 1]
    # --mix: one image from the equal blend of the three sounds' unit vectors.
    (png,) = tmp_path.glob("*.png")
    vectors = pipe.audio_encoder.embed([load_audio(w) for w in wavs])
    expected = unit(sum(unit(v) for v in vectors)) * NORM
    torch.testing.assert_close(
        embedding_from_record(read_png_metadata(png)["embedding"])[0], expected, atol=1e-5, rtol=0
    )


def test_encode_images_batch_size_sets_images_per_forward(pipe, photos):
    from sound2image.diffusion.conditioning import encode_images

    seen: list[int] = []
    encoder = pipe.unclip.image_encoder
    handle = encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    try:
        embeds = encode_images(pipe.unclip, [load_image(p) for p in photos], batch_size=2)
    finally:
        handle.remove()
    assert seen == [2, 1] and embeds.shape == (3, 1024)


def test_max_duration_flag_refuses_longer_audio(saved_dir, wavs, tmp_path, capsys):
    # The recordings last 10 s: a 5 s limit refuses them (exit 2, nothing written), 0 lifts the limit.
    assert generate(saved_dir, wavs[0], "--max-duration", 5, "--steps", 1, "-o", tmp_path / "a") == 2
    err = capsys.readouterr().err
    assert wavs[0].name in err and "more than the 5 s limit" in err
    assert not (tmp_path / "a").exists() or not list((tmp_path / "a").iterdir())
    assert generate(saved_dir, wavs[0], "--max-duration", 0, "--steps", 1, "-o", tmp_path / "b") == 0
    assert len(list((tmp_path / "b").glob(f"{wavs[0].stem}_seed*.png"))) == 1


def test_low_memory_flags_produce_their_state(saved_dir):
    from diffusers.models.attention_processor import AttnProcessor2_0, SlicedAttnProcessor

    from sound2image.diffusion import SounDiffPipeline

    def loaded(**options: bool) -> Any:
        pipe = SounDiffPipeline.from_pretrained(saved_dir, device="cpu", load_audio_encoder=False, **options)
        return pipe.unclip

    plain = loaded()
    assert all(isinstance(p, AttnProcessor2_0) for p in plain.unet.attn_processors.values())
    assert plain.vae.use_tiling is False
    sliced = loaded(attention_slicing=True, vae_tiling=True)
    assert all(isinstance(p, SlicedAttnProcessor) for p in sliced.unet.attn_processors.values())
    assert sliced.vae.use_tiling is True


# --- the Python API ---------------------------------------------------------------------------------


def _latents() -> torch.Tensor:
    return torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(99))


#: One keyword at a time away from its default; (ours, plain diffusers) get the same value.
API_SETTINGS = {
    "prompt": "a red barn",
    "negative_prompt": "fog",
    "num_inference_steps": 3,
    "guidance_scale": 3.0,
    "noise_level": 200,
    "height": 48,
    "width": 40,
    "num_images_per_prompt": 2,
    "latents": "fixed",
}


@pytest.mark.parametrize("name", list(API_SETTINGS))
def test_call_keyword_gives_the_plain_diffusers_image(pipe, plain, name):
    value = _latents() if name == "latents" else API_SETTINGS[name]
    embeds = torch.randn(1, 1024, generator=torch.Generator().manual_seed(5)) * 10
    common = {"num_inference_steps": STEPS, "output_type": "np"}
    ours = pipe(image_embeds=embeds, seed=8, **{**common, name: value}).images
    theirs = plain_draw(plain, embeds, 8, **{**common, name: value})
    default = plain_draw(plain, embeds, 8, **common)
    assert np.array_equal(ours, theirs)
    assert ours.shape != default.shape or not np.array_equal(ours, default)


def test_seed_generator_and_output_type_keywords(pipe, plain):
    embeds = torch.randn(1, 1024, generator=torch.Generator().manual_seed(6)) * 10
    seeded = pipe(image_embeds=embeds, seed=3, num_inference_steps=STEPS, output_type="np").images
    assert np.array_equal(seeded, plain_draw(plain, embeds, 3, "np", num_inference_steps=STEPS))
    assert not np.array_equal(seeded, plain_draw(plain, embeds, 4, "np", num_inference_steps=STEPS))
    # An explicit generator wins over the seed.
    generated = pipe(
        image_embeds=embeds, seed=3, generator=torch.Generator().manual_seed(4), num_inference_steps=STEPS,
        output_type="np",
    ).images  # fmt: skip
    assert np.array_equal(generated, plain_draw(plain, embeds, 4, "np", num_inference_steps=STEPS))
    latent = pipe(image_embeds=embeds, seed=3, num_inference_steps=STEPS, output_type="latent").images
    assert latent.shape == (1, 4, 16, 16)
    assert torch.equal(latent, plain_draw(plain, embeds, 3, "latent", num_inference_steps=STEPS))
    image = pipe(image_embeds=embeds, seed=3, num_inference_steps=STEPS).images[0]
    assert isinstance(image, Image.Image)
    assert np.array_equal(np.asarray(image), plain_draw(plain, embeds, 3, num_inference_steps=STEPS))


def test_audio_keywords_reach_the_pixels(pipe, plain, wavs, photos):
    picture = load_image(photos[1])
    output = pipe(
        [str(wavs[0]), str(wavs[2])], audio_weights=[0.2, 0.8], image=picture, image_weight=0.6, seed=0,
        num_inference_steps=STEPS, output_type="np",
    )  # fmt: skip
    a, b = (unit(v) for v in pipe.audio_encoder.embed([load_audio(wavs[0]), load_audio(wavs[2])]))
    features = pipe.unclip.feature_extractor(images=[picture], return_tensors="pt")
    with torch.no_grad():
        image = unit(pipe.unclip.image_encoder(features.pixel_values).image_embeds[0])
    expected = unit(0.4 * unit(0.2 * a + 0.8 * b) + 0.6 * image) * pipe.calibration.target_norm
    torch.testing.assert_close(output.image_embeds[0], expected, atol=1e-5, rtol=0)
    assert np.array_equal(
        output.images, plain_draw(plain, output.image_embeds, 0, "np", num_inference_steps=STEPS)
    )


@pytest.mark.parametrize("name", list(EXPECTED_SCHEDULERS))
def test_every_scheduler_name_builds_its_class_with_v_prediction(name, reference):
    pipe = SounDiffPipeline(copy.copy(reference))
    original = dict(reference.scheduler.config)
    assert pipe.set_scheduler(name) == name
    scheduler = pipe.unclip.scheduler
    assert type(scheduler).__name__ == EXPECTED_SCHEDULERS[name]
    assert scheduler.config.prediction_type == "v_prediction"
    for key in ("beta_schedule", "beta_start", "beta_end", "num_train_timesteps"):
        assert scheduler.config[key] == original[key], key
    assert bool(scheduler.config.get("use_karras_sigmas", False)) is (name == "dpm++-karras")
    assert pipe.scheduler_name == name
    embeds = torch.randn(1, 1024, generator=torch.Generator().manual_seed(2)) * 10
    steps = 4 if name == "pndm" else STEPS  # PNDM's Runge-Kutta warm-up needs 4 steps (skip_prk_steps off)
    ours = pipe(image_embeds=embeds, seed=1, num_inference_steps=steps, output_type="np").images
    theirs = plain_draw(with_scheduler(reference, name), embeds, 1, "np", num_inference_steps=steps)
    assert np.array_equal(ours, theirs)


def test_from_pretrained_keywords_take_effect(saved_dir, reference, tmp_path):
    given = EmbeddingCalibration(target_norm=3.0, source="given", num_images=1)
    pipe = SounDiffPipeline.from_pretrained(saved_dir, device="cpu", calibration=given)
    assert pipe.calibration == given  # beats the directory's stored 12.5
    assert SounDiffPipeline.from_pretrained(saved_dir, device="cpu").calibration == SAVED_CALIBRATION
    assert (
        SounDiffPipeline.from_pretrained(saved_dir, device="cpu", load_audio_encoder=False).audio_encoder
        is None
    )
    encoder = get_dummy_audio_encoder()
    assert (
        SounDiffPipeline.from_pretrained(saved_dir, device="cpu", audio_encoder=encoder).audio_encoder
        is encoder
    )
    half = SounDiffPipeline.from_pretrained(  # device=None: left unplaced, so bfloat16 may load on the CPU
        saved_dir, device=None, dtype=torch.bfloat16, load_audio_encoder=False
    )
    for part in ("unet", "vae", "text_encoder", "image_encoder"):
        assert {p.dtype for p in getattr(half.unclip, part).parameters()} == {torch.bfloat16}, part
    # unet= and audio_encoder_weights=: the given weights, exactly.
    tuned = copy.deepcopy(reference.unet)
    with torch.no_grad():
        tuned.conv_out.weight.mul_(1.5)
    tuned.save_pretrained(tmp_path / "export" / "unet")
    other = get_dummy_audio_encoder()
    with torch.no_grad():
        other.head.proj.weight.mul_(-1.0)
    other.save_pretrained(tmp_path / "audio.safetensors")
    reference.save_pretrained(tmp_path / "plain-unclip")
    loaded = SounDiffPipeline.from_pretrained(
        tmp_path / "plain-unclip",
        device="cpu",
        unet=tmp_path / "export",
        audio_encoder_weights=tmp_path / "audio.safetensors",
    )
    assert torch.equal(loaded.unclip.unet.conv_out.weight, tuned.conv_out.weight)
    assert torch.equal(loaded.audio_encoder.head.proj.weight, other.head.proj.weight)
