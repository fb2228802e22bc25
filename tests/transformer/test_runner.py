"""The Image Transformer's library runner (`transformer.runner.iter_images`) and its record."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from sound2image.errors import UsageError
from sound2image.transformer import SamplingConfig, generate, tokens_to_images
from sound2image.transformer.reranker import candidate_seed
from sound2image.transformer.runner import PreparedAudio, TransformerRecord, iter_images
from tests.transformer.test_reranker import tiny_scorer
from tests.transformer.tiny import tiny_model

pytestmark = pytest.mark.numeric

SAMPLING = SamplingConfig(temperature=1.0, top_k=40, guidance_scale=1.5)


def _items(count: int = 2) -> list[PreparedAudio]:
    torch.manual_seed(7)
    return [PreparedAudio(None, torch.randn(6, 10), {"file": f"s{i}.wav"}) for i in range(count)]


def _alone(model, features: torch.Tensor, seed: int) -> np.ndarray:
    """The image of one sound drawn on its own by `generate` (its default generator: the config's seed)."""
    tokens = generate(model, features[None], dataclasses.replace(SAMPLING, seed=seed))
    return tokens_to_images(tokens, model.config.image_size)[0].numpy()


def _all(runs) -> list:
    return [image for _, images in runs for image in images]


def test_each_image_equals_generate_with_its_own_seed_whatever_the_batch() -> None:
    model, items = tiny_model(seed=1), _items()
    drawn = _all(iter_images(model, items, [3, 4], SAMPLING, batch_size=3))
    assert [(d.index, d.seed) for d in drawn] == [(0, 3), (0, 4), (1, 3), (1, 4)]
    for d in drawn:
        assert d.image.dtype == np.uint8 and d.image.shape == (8, 8)
        assert np.array_equal(d.image, _alone(model, items[d.index].features, d.seed)), (d.index, d.seed)
        assert d.record.seed == d.seed and d.record.sampling == dataclasses.replace(SAMPLING, seed=d.seed)
        assert d.record.audio == [items[d.index].source] and d.record.best_of is None


def test_best_of_n_keeps_the_argmax_and_draw_zero_is_the_plain_image() -> None:
    model, scorer, items = tiny_model(seed=1), tiny_scorer(seed=2), _items()
    best = _all(iter_images(model, items, [5], SAMPLING, scorer=scorer, candidates=3, batch_size=2))
    plain = _all(iter_images(model, items, [5], SAMPLING))
    assert candidate_seed(5, 0) == 5
    for kept, single in zip(best, plain, strict=True):
        ranking = kept.record.best_of
        assert ranking["candidates"] == 3 and len(ranking["scores"]) == 3
        features = items[kept.index].features
        draws = [_alone(model, features, candidate_seed(5, k)) for k in range(3)]
        scores = [
            float(scorer.score(features[None], torch.from_numpy(d).reshape(1, -1).long())[0]) for d in draws
        ]
        assert ranking["scores"] == pytest.approx(scores, abs=1e-4)
        assert ranking["kept"] == int(np.argmax(scores))
        assert np.array_equal(kept.image, draws[ranking["kept"]])
        assert np.array_equal(draws[0], single.image)  # draw 0 is the plain image of the seed


def test_candidates_above_one_need_a_scorer() -> None:
    with pytest.raises(UsageError, match="candidates=2 needs a scorer"):
        next(iter_images(tiny_model(), _items(1), [0], SAMPLING, candidates=2))


def test_the_record_round_trips_through_the_png_metadata_keys() -> None:
    record = TransformerRecord(
        seed=9,
        sampling=dataclasses.replace(SAMPLING, seed=9),
        model={"type": "image-transformer", "path": "runs/t", "config": {}, "features": {}, "classes": None},
        audio=[{"file": "a.wav", "sha256": "0" * 64}],
        device="cpu",
        best_of={"candidates": 2, "kept": 1, "scores": [0.1, 0.2]},
        extra={"view": "upscaled x2 (nearest) of a_seed9.png"},
    )
    metadata = record.to_metadata()
    assert list(metadata) == [
        "tool", "model", "temperature", "top_k", "top_p", "guidance_scale", "seed", "best_of", "audio",
        "device", "view",
    ]  # fmt: skip
    assert metadata["tool"] == "sound2image generate" and metadata["temperature"] == 1.0
    assert metadata["top_k"] == 40 and metadata["guidance_scale"] == 1.5 and metadata["seed"] == 9
    assert TransformerRecord.from_metadata(metadata) == record
    plain = dataclasses.replace(record, best_of=None, extra={})
    assert "best_of" not in plain.to_metadata()
    with pytest.raises(UsageError, match="not an Image Transformer record"):
        TransformerRecord.from_metadata({"tool": "sound2image generate", "seed": 1, "model": {}})


def test_a_sound_file_is_prepared_with_its_features_and_its_file_record(tmp_path) -> None:
    import hashlib
    import math

    import soundfile as sf

    from sound2image.audio.sections import SectionFeatureConfig, compute_section_features
    from sound2image.transformer.runner import prepare_audio

    path = tmp_path / "tone.wav"
    sf.write(path, 0.5 * np.sin(2 * math.pi * 700 * np.arange(2000) / 8000), 8000)
    config = SectionFeatureConfig(sample_rate=8000, duration=0.128, num_sections=8, log_magnitude=True)
    prepared = prepare_audio(path, config)
    assert np.array_equal(prepared.features.numpy(), compute_section_features(path, config))
    source = prepared.source
    assert source["file"] == "tone.wav" and source["path"] == str(path)
    assert source["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert source["duration"] == pytest.approx(0.128) and source["length_action"] == "cropped"
