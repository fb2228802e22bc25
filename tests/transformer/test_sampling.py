"""Sampling: the KV-cache path gives exactly the reference path's tokens; filters; seeds; batches."""

from __future__ import annotations

import pytest
import torch

from sound2image.errors import UsageError
from sound2image.transformer import SamplingConfig, generate, tokens_to_images
from sound2image.transformer.sampling import choose_tokens, filter_logits
from tests.transformer.tiny import tiny_model

pytestmark = pytest.mark.numeric
CASES = [
    SamplingConfig(temperature=0.0),  # greedy
    SamplingConfig(temperature=1.0, seed=3),
    SamplingConfig(temperature=0.7, top_k=20, seed=5),
    SamplingConfig(temperature=1.2, top_p=0.9, seed=7),
    SamplingConfig(temperature=0.9, top_k=50, top_p=0.8, guidance_scale=2.5, seed=11),
    SamplingConfig(temperature=0.0, guidance_scale=3.0),
]


@pytest.mark.parametrize(
    "config", CASES, ids=lambda c: f"t{c.temperature}-k{c.top_k}-p{c.top_p}-g{c.guidance_scale}"
)
def test_cached_sampling_equals_uncached_reference(config: SamplingConfig) -> None:
    model = tiny_model(seed=1)
    audio = torch.randn(3, 6, 10)
    cached = generate(model, audio, config)
    reference = generate(model, audio, config, use_cache=False)
    assert cached.shape == (3, 64)
    # Tokens are discrete: the two paths' logits differ by ~1e-7 relative (test_attention), which changes a
    # token only if a seeded draw lands that close to a CDF boundary (or a greedy tie): ~192 * 1e-6 odds.
    assert torch.equal(cached, reference)


def test_2d_positions_model_also_matches() -> None:
    model = tiny_model(seed=3, pixel_positions="2d")
    audio = torch.randn(2, 6, 10)
    config = SamplingConfig(temperature=1.0, top_k=30, seed=8)
    assert torch.equal(generate(model, audio, config), generate(model, audio, config, use_cache=False))


def test_global_attention_model_also_matches() -> None:
    model = tiny_model(seed=2, query_block=None, memory_length=None)
    audio = torch.randn(2, 6, 10)
    config = SamplingConfig(temperature=1.0, seed=4)
    assert torch.equal(generate(model, audio, config), generate(model, audio, config, use_cache=False))


def test_same_seed_same_image_different_seed_different_image() -> None:
    model = tiny_model()
    audio = torch.randn(1, 6, 10)
    a = generate(model, audio, SamplingConfig(seed=1))
    assert torch.equal(a, generate(model, audio, SamplingConfig(seed=1)))
    assert not torch.equal(a, generate(model, audio, SamplingConfig(seed=2)))


def test_per_row_generators_make_rows_independent_of_the_batch() -> None:
    model = tiny_model()
    audio = torch.randn(3, 6, 10)
    config = SamplingConfig(temperature=1.0)
    batch = generate(model, audio, config, generator=[torch.Generator().manual_seed(s) for s in (5, 6, 7)])
    alone = generate(model, audio[1:2], config, generator=[torch.Generator().manual_seed(6)])
    assert torch.equal(batch[1:2], alone)


def test_top_k_and_top_p_filters_by_hand() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    kept_k = torch.isfinite(filter_logits(logits, top_k=2))
    assert kept_k.tolist() == [[True, True, False, False, False]]
    # nucleus 0.8: 0.5 + 0.2 = 0.7 < 0.8, so 0.15 is still needed; 0.85 >= 0.8 drops the rest
    kept_p = torch.isfinite(filter_logits(logits, top_p=0.8))
    assert kept_p.tolist() == [[True, True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.01)).tolist() == [[True, False, False, False, False]]


def test_inverse_cdf_sampling_follows_the_distribution() -> None:
    probabilities = torch.tensor([0.1, 0.6, 0.3])
    logits = probabilities.log().expand(20000, 3)
    tokens = choose_tokens(logits, SamplingConfig(temperature=1.0), torch.Generator().manual_seed(0))
    frequencies = torch.bincount(tokens, minlength=3).float() / 20000
    # Binomial sampling error: std sqrt(0.6 * 0.4 / 20000) = 0.0035 at most, so 0.015 is > 4 sigma.
    torch.testing.assert_close(frequencies, probabilities, atol=0.015, rtol=0)


def test_guidance_scale_zero_is_unconditional_and_one_is_conditional() -> None:
    model = tiny_model()
    with torch.no_grad():  # at initialisation the audio barely moves the logits; make it matter
        for block in model.decoder:
            block.cross_attn.proj.weight.mul_(300)
    audio = torch.randn(2, 6, 10)
    config = {"temperature": 1.0}

    def same_seed() -> list[torch.Generator]:
        return [torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)]

    unconditional = generate(
        model, audio, SamplingConfig(guidance_scale=0.0, **config), generator=same_seed()
    )
    conditional = generate(model, audio, SamplingConfig(guidance_scale=1.0, **config), generator=same_seed())
    # scale 0 uses only the null memory: same seed, different audio -> the same image
    assert torch.equal(unconditional[0], unconditional[1])
    assert not torch.equal(conditional[0], conditional[1])


def test_bad_settings_are_usage_errors() -> None:
    for bad in (SamplingConfig(temperature=-1), SamplingConfig(top_k=0), SamplingConfig(top_p=1.5)):
        with pytest.raises(UsageError):
            bad.check()


def test_tokens_to_images_is_row_major() -> None:
    tokens = torch.arange(16).reshape(1, 16)
    image = tokens_to_images(tokens, 4)
    assert image.dtype == torch.uint8 and image[0, 1, 0].item() == 4 and image[0, 0, 3].item() == 3


NAN, INF = float("nan"), float("inf")

#: Every field of SamplingConfig: NaN, infinity and a value out of range (issue 11 C).
CONFIG_CASES = [
    ("temperature", NAN),
    ("temperature", INF),
    ("temperature", -0.5),
    ("top_k", NAN),
    ("top_k", INF),
    ("top_k", 0),
    ("top_p", NAN),
    ("top_p", INF),
    ("top_p", 0.0),
    ("top_p", 1.5),
    ("guidance_scale", NAN),
    ("guidance_scale", INF),
    ("guidance_scale", -1.0),
    ("seed", NAN),
    ("seed", -1),
    ("seed", 2**63),
]


@pytest.mark.parametrize(("name", "value"), CONFIG_CASES, ids=[f"{n}={v}" for n, v in CONFIG_CASES])
def test_every_sampling_setting_is_checked_naming_the_field(name, value) -> None:
    config = SamplingConfig(**{name: value})
    with pytest.raises(UsageError) as info:
        config.check()
    message = str(info.value)
    assert message.startswith(f"{name} must be ") and message.endswith(f"got {value}"), message
    assert "--" not in message  # a library error names the parameter, not a CLI flag
    with pytest.raises(UsageError, match=f"^{name} must be "):
        generate(tiny_model(), torch.randn(1, 6, 10), config)  # generate checks before sampling


@pytest.mark.parametrize("num_steps", [0, 65, NAN])
def test_num_steps_must_fit_the_image(num_steps) -> None:
    with pytest.raises(UsageError, match=r"^num_steps must be an integer in \[1, 64\], got "):
        generate(tiny_model(), torch.randn(1, 6, 10), SamplingConfig(), num_steps=num_steps)
