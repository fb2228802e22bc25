"""The training objective against an independent computation (REFERENCE.md §1, §2, §4)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sound2image.errors import UsageError
from sound2image.training.objective import ObjectiveConfig, SounDiffObjective
from tests.dummies import EMBED_DIM

pytestmark = pytest.mark.numeric


@pytest.fixture
def unclip(soundiff):
    pipe = soundiff.unclip
    # A non-identity normalizer, so that a missing scale/unscale would show.
    with torch.no_grad():
        pipe.image_normalizer.mean.copy_(torch.linspace(-0.5, 0.5, EMBED_DIM)[None])
        pipe.image_normalizer.std.copy_(torch.linspace(0.5, 2.0, EMBED_DIM)[None])
    return pipe


def _scaled_linear_alphas_cumprod(start: float, end: float, steps: int) -> np.ndarray:
    betas = np.linspace(math.sqrt(start), math.sqrt(end), steps, dtype=np.float64) ** 2
    return np.cumprod(1.0 - betas)


def _cosine_alphas_cumprod(steps: int) -> np.ndarray:
    """Nichol & Dhariwal's cosine schedule with betas capped at 0.999 ("squaredcos_cap_v2")."""

    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), 0.999) for i in range(steps)]
    return np.cumprod(1.0 - np.array(betas, dtype=np.float64))


def _sinusoid(levels: np.ndarray, dim: int) -> np.ndarray:
    """cos | sin embedding of integer levels, frequencies 10000^(-i/half) (flip_sin_to_cos, no shift)."""
    half = dim // 2
    freqs = np.exp(-math.log(10000.0) * np.arange(half) / half)
    angles = levels[:, None].astype(np.float64) * freqs[None]
    return np.concatenate([np.cos(angles), np.sin(angles)], axis=1)


def test_loss_equals_independent_v_prediction(unclip) -> None:
    objective = SounDiffObjective(unclip, ObjectiveConfig(conditioning_dropout=0.5))
    assert objective.prediction_type == "v_prediction"
    batch, latent_shape = 6, (4, 8, 8)
    mean, std = torch.randn(batch, *latent_shape), torch.rand(batch, *latent_shape) * 0.1
    embeds = torch.randn(batch, EMBED_DIM) * 3
    draw = objective.draw(batch, latent_shape, EMBED_DIM, torch.Generator().manual_seed(3))
    assert draw.drop.any() and not draw.drop.all()  # both kinds of sample are checked
    prompt = objective.encode_prompt("a satellite image", "cpu")
    empty = objective.encode_prompt("", "cpu")
    unet = unclip.unet
    with torch.no_grad():
        out = objective.loss(unet, mean, std, embeds, prompt, empty, draw)

    # Independent computation, float64 numpy, from the published formulas.
    t = draw.timesteps.numpy()
    ab = _scaled_linear_alphas_cumprod(0.00085, 0.012, 1000)[t][:, None, None, None]
    x0 = (mean.double().numpy() + std.double().numpy() * draw.latent_noise.double().numpy()) * 0.18215
    eps = draw.noise.double().numpy()
    x_t = np.sqrt(ab) * x0 + np.sqrt(1 - ab) * eps
    v = np.sqrt(ab) * eps - np.sqrt(1 - ab) * x0

    levels = draw.noise_levels.numpy()
    nm = unclip.image_normalizer.mean.detach().double().numpy()
    ns = unclip.image_normalizer.std.detach().double().numpy()
    ab_embed = _cosine_alphas_cumprod(1000)[levels][:, None]
    scaled = (embeds.double().numpy() - nm) / ns
    noised = np.sqrt(ab_embed) * scaled + np.sqrt(1 - ab_embed) * draw.embed_noise.double().numpy()
    label = np.concatenate([noised * ns + nm, _sinusoid(levels, EMBED_DIM)], axis=1)
    keep = ~draw.drop.numpy()
    label = label * keep[:, None]  # dropped samples: the all-zero unconditional label
    text = torch.where(
        torch.from_numpy(keep)[:, None, None], prompt.expand(batch, -1, -1), empty.expand(batch, -1, -1)
    )

    with torch.no_grad():
        pred = (
            unet(
                torch.from_numpy(x_t).float(),
                draw.timesteps,
                encoder_hidden_states=text,
                class_labels=torch.from_numpy(label).float(),
            )
            .sample.double()
            .numpy()
        )
    expected_per_sample = ((pred - v) ** 2).mean(axis=(1, 2, 3))
    # float32 code vs this float64 formula: alphas_cumprod is a float32 product of <= 1,000 factors (8 eps
    # from float64, measured), x_t and v carry a few eps each, and the U-Net sees x_t rounded either way.
    # The per-sample MSE's relative error is ~10 eps (6e-7 measured); 1e-4 leaves the U-Net's
    # amplification of its input rounding ~100x room.
    np.testing.assert_allclose(out.per_sample.numpy(), expected_per_sample, rtol=1e-4, atol=1e-6)
    assert float(out.loss) == pytest.approx(expected_per_sample.mean(), rel=1e-4)
    # v = sqrt(ab) eps - sqrt(1 - ab) x0 in float32: a few eps of terms <= ~3, so atol 1e-5 where they cancel
    # (5.6e-7 measured).
    np.testing.assert_allclose(out.target.double().numpy(), v, rtol=1e-4, atol=1e-5)


def test_epsilon_target_is_the_noise_and_other_types_are_refused(unclip) -> None:
    from diffusers import DDIMScheduler

    original = unclip.scheduler
    try:
        unclip.scheduler = DDIMScheduler.from_config(original.config, prediction_type="epsilon")
        objective = SounDiffObjective(unclip)
        noise = torch.randn(2, 4, 4, 4)
        assert torch.equal(objective.target(torch.randn(2, 4, 4, 4), noise, torch.tensor([5, 900])), noise)
        unclip.scheduler = DDIMScheduler.from_config(original.config, prediction_type="sample")
        with pytest.raises(UsageError, match="prediction_type 'sample'"):
            SounDiffObjective(unclip)
    finally:
        unclip.scheduler = original


def test_dropout_rate_and_noise_levels_follow_the_config(unclip) -> None:
    objective = SounDiffObjective(unclip, ObjectiveConfig(conditioning_dropout=0.25, max_noise_level=300))
    draw = objective.draw(8000, (1, 1, 1), 4, torch.Generator().manual_seed(0))
    # Binomial(8000, 0.25): std 0.0048, so +-0.02 is > 4 sigma.
    assert abs(draw.drop.float().mean().item() - 0.25) < 0.02
    assert int(draw.noise_levels.min()) == 0 and int(draw.noise_levels.max()) == 299
    none = SounDiffObjective(unclip, ObjectiveConfig(conditioning_dropout=0.0, max_noise_level=0))
    draw = none.draw(100, (1, 1, 1), 4, torch.Generator().manual_seed(0))
    assert not draw.drop.any() and not draw.noise_levels.any()


def test_dropped_label_is_the_unconditional_input_of_guidance(unclip) -> None:
    objective = SounDiffObjective(unclip, ObjectiveConfig(conditioning_dropout=1.0))
    embeds = torch.randn(3, EMBED_DIM)
    draw = objective.draw(3, (4, 2, 2), EMBED_DIM, torch.Generator().manual_seed(1))
    labels = objective.class_labels(embeds, draw)
    # diffusers' _encode_image builds the unconditional class label as torch.zeros_like(image_embeds).
    reference = unclip._encode_image(
        image=None,
        device="cpu",
        batch_size=1,
        num_images_per_prompt=1,
        do_classifier_free_guidance=True,
        noise_level=0,
        generator=None,
        image_embeds=embeds[:1],
    )
    unconditional = reference[:1]
    assert labels.shape == (3, 2 * EMBED_DIM)
    assert torch.equal(labels, unconditional.expand(3, -1))


def test_kept_label_equals_inference_conditioning_at_the_same_level(unclip) -> None:
    objective = SounDiffObjective(unclip, ObjectiveConfig(conditioning_dropout=0.0, max_noise_level=0))
    embeds = torch.randn(2, EMBED_DIM)
    draw = objective.draw(2, (4, 2, 2), EMBED_DIM, torch.Generator().manual_seed(1))
    labels = objective.class_labels(embeds, draw)
    # At noise level 0 inference adds sqrt(1 - alpha_bar_0) * noise; pass the same noise explicitly.
    expected = unclip.noise_image_embeddings(embeds, 0, noise=draw.embed_noise)
    torch.testing.assert_close(labels, expected)


def test_prompt_encoding_is_the_one_generation_uses(unclip) -> None:
    objective = SounDiffObjective(unclip)
    cond, uncond = unclip.encode_prompt(
        "a satellite image with details on the ground", "cpu", 1, do_classifier_free_guidance=True
    )
    assert torch.equal(objective.encode_prompt("a satellite image with details on the ground", "cpu"), cond)
    # The unconditional branch of guidance encodes the empty prompt: dropped samples train on it.
    assert torch.equal(objective.encode_prompt("", "cpu"), uncond)


def test_min_snr_weights_by_hand(unclip) -> None:
    objective = SounDiffObjective(unclip, ObjectiveConfig(snr_gamma=5.0))
    t = torch.tensor([0, 250, 999])
    ab = _scaled_linear_alphas_cumprod(0.00085, 0.012, 1000)[t.numpy()]
    snr = ab / (1 - ab)
    expected = np.minimum(snr, 5.0) / (snr + 1)  # v-prediction form
    # float32 schedule: at t = 0, 1 - alpha_bar = 8.5e-4 inherits alpha_bar's rounding near 1 (<= 3e-8),
    # <= 3.5e-5 relative (2.6e-5 measured).
    np.testing.assert_allclose(objective.snr_weights(t).numpy(), expected, rtol=1e-4)
    assert torch.equal(SounDiffObjective(unclip).snr_weights(t), torch.ones(3))


def test_bad_objective_settings_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="conditioning_dropout"):
        ObjectiveConfig(conditioning_dropout=1.5)
    with pytest.raises(UsageError, match="snr_gamma"):
        ObjectiveConfig(snr_gamma=0)
