"""Mixing audio, weights and a reference image into one calibrated vector; calibration from real images."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from sound2image.data import load_image
from sound2image.diffusion import EmbeddingCalibration, measure_calibration, mix_embeddings
from sound2image.diffusion.conditioning import embedding_from_record, embedding_to_record, encode_images
from sound2image.errors import ImageError, UsageError
from tests.diffusion.conftest import STEPS

pytestmark = pytest.mark.numeric
CAL = EmbeddingCalibration(target_norm=10.0, source="test", num_images=1)


def _axis(index: int, scale: float) -> torch.Tensor:
    vector = torch.zeros(1024)
    vector[index] = scale
    return vector


def test_weights_are_true_proportions_whatever_the_norms():
    # Norms 20 and 3: a naive weighted sum would be dominated by the first vector.
    audio = torch.stack([_axis(0, 20.0), _axis(1, 3.0)])
    mixed = mix_embeddings(audio, CAL, weights=[0.7, 0.3])
    expected = torch.zeros(1024)
    expected[0], expected[1] = 0.7 / math.sqrt(0.58) * 10, 0.3 / math.sqrt(0.58) * 10  # hand-computed
    assert mixed.shape == (1, 1024)
    # About 5 float32 operations (unit, weight, sum, unit, scale) on entries <= 10: 5 eps * 10 ~ 6e-6.
    assert torch.allclose(mixed[0], expected, atol=1e-5)


def test_only_weight_ratios_matter_and_default_is_equal():
    audio = torch.stack([_axis(0, 20.0), _axis(1, 3.0)])
    assert torch.allclose(mix_embeddings(audio, CAL, [7, 3]), mix_embeddings(audio, CAL, [0.7, 0.3]))
    equal = mix_embeddings(audio, CAL)
    assert torch.allclose(equal[0, :2], torch.tensor([10 / math.sqrt(2)] * 2), atol=1e-5)


def test_image_weight_is_a_true_proportion():
    audio, image = _axis(0, 20.0)[None], _axis(1, 0.4)  # CLIP-like image vector of a very different norm
    only_audio = mix_embeddings(audio, CAL, image_embed=image, image_weight=0.0)
    only_image = mix_embeddings(audio, CAL, image_embed=image, image_weight=1.0)
    quarter = mix_embeddings(audio, CAL, image_embed=image, image_weight=0.25)
    # As above: a handful of float32 roundings, ~6e-6 absolute on 10 and 5 eps relative.
    assert torch.allclose(only_audio[0], _axis(0, 10.0), atol=1e-5)
    assert torch.allclose(only_image[0], _axis(1, 10.0), atol=1e-5)
    norm = math.sqrt(0.75**2 + 0.25**2)
    assert quarter[0, 0].item() == pytest.approx(0.75 / norm * 10, rel=1e-5)
    assert quarter[0, 1].item() == pytest.approx(0.25 / norm * 10, rel=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weights": [1.0]}, "2 audio inputs but 1 weights"),
        ({"weights": [1.0, -1.0]}, r"audio_weights\[1\] must be finite and >= 0, got -1.0"),
        ({"weights": [0.0, 0.0]}, "positive sum"),
        (
            {"image_embed": torch.ones(1024), "image_weight": 1.5},
            r"image_weight must be finite and in \[0, 1\]",
        ),
    ],
)
def test_bad_mixing_settings_are_usage_errors(kwargs, message):
    with pytest.raises(UsageError, match=message):
        mix_embeddings(torch.randn(2, 1024), CAL, **kwargs)


def test_image_embedding_is_the_pipelines_own(pipe, plain, photos):
    """Our image vector, passed as image_embeds, reproduces diffusers' own `image=` path exactly."""
    picture = load_image(photos[0])
    embeds = encode_images(pipe.unclip, [picture])
    ours = pipe(image_embeds=embeds, seed=11, num_inference_steps=STEPS, output_type="np").images
    generator = torch.Generator("cpu").manual_seed(11)
    theirs = plain(image=picture, generator=generator, num_inference_steps=STEPS, output_type="np").images
    assert np.array_equal(ours, theirs)


def test_calibration_is_the_mean_image_embedding_norm_and_skips_bad_images(pipe, photos, tmp_path):
    for index, photo in enumerate(photos):
        os.symlink(photo, tmp_path / f"{index}.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    calibration, problems = measure_calibration(pipe.unclip, tmp_path)
    # Independent: the CLIP vision tower's projected embedding, straight from transformers.
    pixels = pipe.unclip.feature_extractor(images=[load_image(p) for p in photos], return_tensors="pt")
    with torch.no_grad():
        norms = pipe.unclip.image_encoder(pixels.pixel_values).image_embeds.norm(dim=-1)
    assert calibration.num_images == 3
    # Per-image vs batched CLIP forward: matmuls may sum in another order, <= eps * K relative (K <= 64 in
    # the tiny tower, ~8e-6 worst case); the mean of norms does not enlarge it.
    assert calibration.target_norm == pytest.approx(norms.mean().item(), rel=1e-5)
    assert len(problems) == 1 and "broken.jpg" in problems[0]


def test_calibration_folder_without_images_is_an_image_error(pipe, tmp_path):
    with pytest.raises(ImageError, match="no image files"):
        measure_calibration(pipe.unclip, tmp_path)


def test_embedding_record_round_trip_is_bit_exact():
    embeds = torch.randn(1, 1024) * 13.7
    record = embedding_to_record(embeds)
    assert record["shape"] == [1, 1024]
    assert torch.equal(embedding_from_record(record), embeds)
    with pytest.raises(UsageError, match="unreadable"):
        embedding_from_record({"shape": [1, 1024], "base64": "AAAA"})


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weights": [NAN, 1.0]}, r"^audio_weights\[0\] must be finite and >= 0, got nan$"),
        ({"weights": [1.0, INF]}, r"^audio_weights\[1\] must be finite and >= 0, got inf$"),
        ({"weights": [1.0, -INF]}, r"^audio_weights\[1\] must be finite and >= 0, got -inf$"),
        ({"image_embed": torch.ones(1024), "image_weight": NAN}, r"^image_weight must be finite .*got nan$"),
        ({"image_embed": torch.ones(1024), "image_weight": INF}, r"^image_weight must be finite .*got inf$"),
        ({"image_embed": torch.full((1024,), NAN), "image_weight": 0.5}, "^image_embed must be finite"),
    ],
)
def test_non_finite_mixing_settings_name_the_parameter(kwargs, message):
    with pytest.raises(UsageError, match=message):
        mix_embeddings(torch.randn(2, 1024), CAL, **kwargs)


def test_non_finite_audio_embeddings_are_refused_not_mixed_into_nan():
    embeds = torch.randn(2, 1024)
    embeds[1, 3] = NAN
    with pytest.raises(UsageError, match=r"^audio_embeds must be finite; row 1 holds NaN or infinity"):
        mix_embeddings(embeds, CAL)


@pytest.mark.parametrize("batch_size", [0, NAN, 2.5])
def test_image_encoding_batch_size_is_checked(pipe, batch_size):
    with pytest.raises(UsageError, match=f"^batch_size must be an integer >= 1, got {batch_size}$"):
        encode_images(pipe.unclip, [object()], batch_size=batch_size)
