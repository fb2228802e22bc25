"""SounDiffPipeline against the plain diffusers StableUnCLIPImg2ImgPipeline (the reference implementation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sound2image.audio import load_audio
from sound2image.diffusion import EmbeddingCalibration, SounDiffPipeline
from sound2image.errors import UsageError, WeightsError
from tests.diffusion.conftest import STEPS
from tests.dummies import get_dummy_audio_encoder, get_dummy_unclip_pipeline


def _reference(plain, embeds: torch.Tensor, seed: int, **kwargs) -> np.ndarray:
    generator = torch.Generator("cpu").manual_seed(seed)
    kwargs.setdefault("num_inference_steps", STEPS)
    return plain(image_embeds=embeds, generator=generator, output_type="np", **kwargs).images


def test_same_embedding_seed_and_settings_give_the_plain_diffusers_image_exactly(pipe, plain):
    embeds = torch.randn(1, 1024) * 20
    ours = pipe(image_embeds=embeds, seed=7, num_inference_steps=STEPS, output_type="np").images
    theirs = _reference(plain, embeds, seed=7)
    assert ours.shape == (1, 32, 32, 3)
    assert np.array_equal(ours, theirs)


def test_settings_are_passed_through_exactly(pipe, plain):
    embeds = torch.randn(1, 1024) * 5
    settings = {"prompt": "a red barn", "negative_prompt": "fog", "guidance_scale": 3.5, "noise_level": 250}
    ours = pipe(image_embeds=embeds, seed=1, num_inference_steps=STEPS, output_type="np", **settings).images
    theirs = _reference(plain, embeds, seed=1, num_inference_steps=STEPS, **settings)
    without_prompt = _reference(
        plain, embeds, seed=1, num_inference_steps=STEPS, guidance_scale=3.5, noise_level=250
    )
    assert np.array_equal(ours, theirs)
    assert not np.array_equal(ours, without_prompt)  # the prompt reaches the U-Net


def test_audio_is_embedded_then_calibrated_to_the_stored_norm(plain, wavs):
    calibration = EmbeddingCalibration(target_norm=7.5, source="test", num_images=3)
    torch.manual_seed(0)
    pipe = SounDiffPipeline(get_dummy_unclip_pipeline(), get_dummy_audio_encoder(), calibration)
    output = pipe(str(wavs[0]), seed=3, num_inference_steps=STEPS, output_type="np")
    # Independent route: the encoder's public API, then unit direction × 7.5 by hand.
    raw = get_dummy_audio_encoder().embed([load_audio(wavs[0])])  # (1, 1024), norm ≈ 20
    expected = raw / raw.norm(dim=-1, keepdim=True) * 7.5
    assert torch.allclose(output.image_embeds, expected, atol=1e-5)
    assert output.image_embeds.norm().item() == pytest.approx(7.5, rel=1e-6)
    assert np.array_equal(output.images, _reference(plain, output.image_embeds, seed=3))


def test_embeddings_are_cast_to_the_pipeline_dtype(pipe, plain):
    """diffusers does not cast passed embeddings; a float64 vector must still work and match."""
    embeds = torch.randn(1, 1024, dtype=torch.float64) * 20
    ours = pipe(image_embeds=embeds, seed=2, num_inference_steps=STEPS, output_type="np").images
    assert np.array_equal(ours, _reference(plain, embeds.float(), seed=2))


def test_several_images_per_call_follow_the_generator_like_diffusers(pipe, plain):
    embeds = torch.randn(1, 1024) * 20
    ours = pipe(
        image_embeds=embeds, seed=5, num_inference_steps=STEPS, num_images_per_prompt=2, output_type="np"
    )
    theirs = _reference(plain, embeds, seed=5, num_images_per_prompt=2)
    assert ours.images.shape == (2, 32, 32, 3)
    assert np.array_equal(ours.images, theirs)


def test_scheduler_swap_keeps_the_v_prediction_config():
    pipe = SounDiffPipeline(get_dummy_unclip_pipeline())
    assert pipe.scheduler_name == "ddim"
    pipe.set_scheduler("dpm++-karras")
    assert type(pipe.unclip.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert pipe.unclip.scheduler.config.use_karras_sigmas is True
    assert pipe.unclip.scheduler.config.prediction_type == "v_prediction"
    assert pipe.scheduler_name == "dpm++-karras"
    pipe.set_scheduler("euler")
    assert pipe.scheduler_name == "euler"
    image = pipe(
        image_embeds=torch.randn(1, 1024), seed=0, num_inference_steps=STEPS, output_type="np"
    ).images
    assert np.isfinite(image).all()
    with pytest.raises(UsageError, match="unknown scheduler 'k-lms'"):
        pipe.set_scheduler("k-lms")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of audio or image_embeds"),
        ({"image_embeds": torch.zeros(1, 1024), "noise_level": 1000}, "noise_level"),
        ({"image_embeds": torch.zeros(1, 1024), "height": 30}, "multiples of 8"),
        ({"image_embeds": torch.zeros(1, 1024), "num_inference_steps": 0}, "steps"),
        ({"image_embeds": torch.zeros(1, 512)}, r"shape \(N, 1024\)"),
    ],
)
def test_bad_arguments_are_one_line_usage_errors(pipe, kwargs, message):
    with pytest.raises(UsageError, match=message) as info:
        pipe(**kwargs)
    assert "\n" not in str(info.value)


def test_a_pipeline_without_image_encoder_is_refused():
    unclip = get_dummy_unclip_pipeline()
    unclip.image_encoder = None
    with pytest.raises(WeightsError, match="image_encoder"):
        SounDiffPipeline(unclip)


def test_regeneration_needs_no_audio_encoder(plain):
    pipe = SounDiffPipeline(get_dummy_unclip_pipeline())
    with pytest.raises(UsageError, match="without an audio encoder"):
        pipe("x.wav")
    embeds = torch.randn(1, 1024)
    ours = pipe(image_embeds=embeds, seed=4, num_inference_steps=STEPS, output_type="np").images
    assert np.array_equal(ours, _reference(plain, embeds, seed=4))


def test_call_mixes_weighted_audios_and_a_reference_image(pipe, wavs, photos):
    from sound2image.data import load_image

    picture = load_image(photos[1])
    output = pipe(
        [str(wavs[0]), str(wavs[2])],
        audio_weights=[0.7, 0.3],
        image=picture,
        image_weight=0.4,
        seed=0,
        num_inference_steps=1,
        output_type="np",
    )
    # Hand mix: unit audio vectors 70/30 -> unit; then 60/40 with the unit image vector -> unit × norm.
    a, b = (v / v.norm() for v in pipe.audio_encoder.embed([str(wavs[0]), str(wavs[2])]))
    audio = 0.7 * a + 0.3 * b
    pixels = pipe.unclip.feature_extractor(images=[picture], return_tensors="pt").pixel_values
    with torch.no_grad():
        image = pipe.unclip.image_encoder(pixels).image_embeds[0]
    mixed = 0.6 * audio / audio.norm() + 0.4 * image / image.norm()
    expected = mixed / mixed.norm() * pipe.calibration.target_norm
    assert torch.allclose(output.image_embeds[0], expected, atol=1e-5)
