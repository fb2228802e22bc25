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

pytestmark = pytest.mark.numeric


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
    # Same encoder call on the same samples; only the rescale's rounding differs: a few eps on entries
    # <= 7.5 (~1e-6).
    assert torch.allclose(output.image_embeds, expected, atol=1e-5)
    # Two float32 norms of 1024 terms, (log2(1024) / 2 + 1) eps each, and the rescale: <= 13 eps ~ 1.6e-6.
    assert output.image_embeds.norm().item() == pytest.approx(7.5, rel=2e-6)
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
        (
            {"image_embeds": torch.zeros(1, 1024), "height": 30},
            "height must be a positive multiple of 8, got 30",
        ),
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
    assert torch.allclose(output.image_embeds[0], expected, atol=1e-5)  # a few eps of entries <= norm 12.5


# ---------------------------------------------------------------------- issue 11 C: checks at the boundary


def test_n_embedding_rows_give_n_images_exactly_as_plain_diffusers(pipe, plain):
    """(N, D) rows: N · num_images_per_prompt images, each row's images in row order, the prompt on every row.

    The reference is plain diffusers given the same rows, ``prompt=[prompt] * N`` (diffusers itself needs
    one prompt per row; a single string crashed with a size mismatch) and the same generator.
    """
    embeds = torch.randn(2, 1024) * 20
    settings = {"guidance_scale": 3.0, "noise_level": 50}
    ours = pipe(
        image_embeds=embeds,
        prompt="a red barn",
        negative_prompt="fog",
        seed=9,
        num_inference_steps=STEPS,
        num_images_per_prompt=2,
        output_type="np",
        **settings,
    )
    theirs = _reference(
        plain,
        embeds,
        seed=9,
        prompt=["a red barn"] * 2,
        negative_prompt=["fog"] * 2,
        num_images_per_prompt=2,
        **settings,
    )
    assert ours.images.shape == (4, 32, 32, 3)
    assert np.array_equal(ours.images, theirs)
    assert torch.equal(ours.image_embeds, embeds)


def test_one_generator_per_row_gives_each_row_its_single_row_image(pipe):
    """With a list of generators, row i depends on its own generator only: it is the image of the
    one-row call with that seed. Not bit-identical: the batched U-Net/VAE kernels sum in another order
    than the one-row ones (float32 rounding, measured max 5e-6 here). Half an 8-bit level (0.5 / 255)
    bounds what can change the saved PNG by more than one rounding flip, and is 400× the measured gap.
    """
    embeds = torch.randn(2, 1024) * 20
    generators = [torch.Generator().manual_seed(s) for s in (3, 4)]
    settings = {"num_inference_steps": STEPS, "noise_level": 100, "output_type": "np"}
    rows = pipe(image_embeds=embeds, generator=generators, **settings).images
    singles = [
        pipe(image_embeds=embeds[i : i + 1], seed=s, **settings).images[0] for i, s in enumerate((3, 4))
    ]
    for row, single in zip(rows, singles, strict=True):
        np.testing.assert_allclose(row, single, rtol=0, atol=0.5 / 255)
    assert np.abs(rows[0] - rows[1]).max() > 0.05  # two different rows/seeds: clearly different pictures


def test_a_generator_list_of_the_wrong_length_is_a_usage_error(pipe):
    generators = [torch.Generator().manual_seed(s) for s in (1, 2, 3)]
    with pytest.raises(
        UsageError, match=r"^generator: a list needs one generator per image .* = 4\), got 3$"
    ):
        pipe(image_embeds=torch.zeros(2, 1024), generator=generators, num_images_per_prompt=2)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_image_embeds_are_refused_naming_the_parameter(pipe, bad):
    embeds = torch.randn(3, 1024)
    embeds[1, 17] = bad
    with pytest.raises(UsageError) as info:
        pipe(image_embeds=embeds, num_inference_steps=STEPS)
    assert str(info.value) == "image_embeds must be finite; row 1 holds NaN or infinity (1 of 3 rows do)"


def test_non_finite_latents_are_refused(pipe):
    latents = torch.zeros(1, 4, 16, 16)
    latents[0, 0, 0, 0] = float("nan")
    with pytest.raises(UsageError, match="^latents must be finite"):
        pipe(image_embeds=torch.zeros(1, 1024), latents=latents, num_inference_steps=STEPS)


def test_an_empty_or_misshapen_image_embeds_is_refused(pipe):
    for shape in ((0, 1024), (1024,), (1, 2, 1024)):
        with pytest.raises(UsageError, match=r"^image_embeds must have shape \(N, 1024\) with N >= 1"):
            pipe(image_embeds=torch.zeros(shape))


NAN, INF = float("nan"), float("inf")

#: Every numeric keyword of SounDiffPipeline.__call__: non-finite values and one out of range each.
CALL_CASES = [
    ("num_inference_steps", NAN),
    ("num_inference_steps", INF),
    ("num_inference_steps", 0),
    ("num_inference_steps", 2.5),
    ("guidance_scale", NAN),
    ("guidance_scale", INF),
    ("guidance_scale", -1.0),
    ("noise_level", NAN),
    ("noise_level", INF),
    ("noise_level", -1),
    ("noise_level", 1000),  # the tiny model's image noising scheduler has 1,000 timesteps, like SD 2.1's
    ("height", NAN),
    ("height", INF),
    ("height", 0),
    ("height", 36),
    ("width", NAN),
    ("width", -8),
    ("width", 12),
    ("num_images_per_prompt", NAN),
    ("num_images_per_prompt", INF),
    ("num_images_per_prompt", 0),
    ("image_weight", NAN),
    ("image_weight", INF),
    ("image_weight", 1.5),
    ("image_weight", -0.1),
    ("seed", NAN),
    ("seed", INF),
    ("seed", -1),
    ("seed", 2**63),
]


@pytest.mark.parametrize(("name", "value"), CALL_CASES, ids=[f"{n}={v}" for n, v in CALL_CASES])
def test_every_numeric_call_parameter_is_checked_naming_it(pipe, name, value, monkeypatch):
    # Nothing may be computed for a refused call: the denoising loop is never reached.
    monkeypatch.setattr(pipe, "unclip", _NoCall(pipe.unclip))
    with pytest.raises(UsageError) as info:
        pipe(image_embeds=torch.zeros(1, 1024), **{name: value})
    message = str(info.value)
    assert message.startswith(f"{name} must be ") and message.endswith(f"got {value}"), message
    assert "\n" not in message


class _NoCall:
    """Wraps the unCLIP pipeline: attributes pass through, calling it fails the test."""

    def __init__(self, unclip):
        self._unclip = unclip

    def __getattr__(self, name):
        return getattr(self._unclip, name)

    def __call__(self, *args, **kwargs):
        raise AssertionError("the unCLIP pipeline ran although the arguments were refused")


@pytest.mark.parametrize(
    ("weights", "message"), [([NAN], r"audio_weights\[0\]"), ([INF], r"audio_weights\[0\]")]
)
def test_non_finite_audio_weights_are_refused(pipe, wavs, weights, message):
    with pytest.raises(UsageError, match=f"^{message} must be finite and >= 0, got"):
        pipe(str(wavs[0]), audio_weights=weights, num_inference_steps=STEPS)


def test_encode_audio_batch_size_is_checked(pipe, wavs):
    with pytest.raises(UsageError, match="^batch_size must be an integer >= 1, got 0$"):
        pipe.encode_audio(str(wavs[0]), batch_size=0)
