"""Best-of-N: the contrastive scorer (shapes, persistence, learning without labels) and candidate choice."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from sound2image.errors import WeightsError
from sound2image.training.reranker import RerankerTrainConfig, contrastive_loss, train_reranker
from sound2image.training.transformer import train_transformer
from sound2image.transformer import ImageTransformer, SamplingConfig, generate
from sound2image.transformer.reranker import (
    RERANKER_DIR,
    AudioImageScorer,
    RerankerConfig,
    candidate_seed,
    generate_best_of,
)
from tests.transformer.test_training import make_dataset, tiny_run
from tests.transformer.tiny import tiny_model

pytestmark = pytest.mark.numeric


def tiny_scorer(seed: int = 0, **overrides: object) -> AudioImageScorer:
    values = dict(
        audio_sections=6, audio_bins=10, image_size=8, embed_dim=16, audio_channels=16, image_width=8
    )
    values.update(overrides)
    torch.manual_seed(seed)
    return AudioImageScorer(RerankerConfig(**values)).eval()


def test_embeddings_are_unit_vectors_for_any_number_of_sections() -> None:
    scorer = tiny_scorer()
    images = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    for sections in (6, 37):
        audio = scorer.embed_audio(torch.randn(3, sections, 10))
        assert audio.shape == (3, 16)
        torch.testing.assert_close(audio.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(scorer.embed_images(images).norm(dim=-1), torch.ones(3))
    # pixel tokens (B, H·W) and images (B, H, W) are the same input
    torch.testing.assert_close(scorer.embed_images(images.flatten(1)), scorer.embed_images(images))


def test_logits_are_the_scaled_cosines_and_score_is_their_diagonal() -> None:
    scorer = tiny_scorer()
    audio, images = torch.randn(4, 6, 10), torch.randint(0, 256, (4, 8, 8), dtype=torch.uint8)
    with torch.no_grad():
        logits = scorer(audio, images)
        cosines = scorer.embed_audio(audio) @ scorer.embed_images(images).T
    torch.testing.assert_close(logits, cosines * 10.0)  # CLIP's initial temperature: 1 / 0.1
    torch.testing.assert_close(scorer.score(audio, images), torch.diagonal(cosines))


def test_contrastive_loss_by_hand() -> None:
    # Perfect 2x2 logits [[a, 0], [0, a]]: each row and column is softmax-cross-entropy log(1 + e^-a).
    a = 3.0
    loss = contrastive_loss(torch.tensor([[a, 0.0], [0.0, a]]))
    # float32 log(1 + e^-3) = 0.0486: rounding 1 + e^-3 (eps / 2) is ~1.2e-6 relative after the log, plus
    # the log's own ulp (vectorised logf is 1-ulp accurate): ~3e-6 worst case (4.5e-7 measured).
    assert loss.item() == pytest.approx(np.log1p(np.exp(-a)), rel=3e-6)


def test_save_and_load_keep_the_scores(tmp_path) -> None:
    scorer = tiny_scorer()
    scorer.feature_mean.fill_(0.5)
    audio, images = torch.randn(2, 6, 10), torch.randint(0, 256, (2, 8, 8), dtype=torch.uint8)
    scorer.save_pretrained(tmp_path / "s", {"train_seconds": 1.0})
    loaded = AudioImageScorer.from_pretrained(tmp_path / "s")
    record = loaded.saved_metadata
    assert record["train_seconds"] == 1.0
    torch.testing.assert_close(loaded.score(audio, images), scorer.score(audio, images))
    (tmp_path / "s" / "model.safetensors").write_bytes(b"damaged")
    with pytest.raises(WeightsError, match=r"s/model\.safetensors: cannot read"):
        AudioImageScorer.from_pretrained(tmp_path / "s")
    (tmp_path / "s" / "config.json").write_text('{"format": "something else"}')
    with pytest.raises(WeightsError, match="not an audio-image scorer"):
        AudioImageScorer.from_pretrained(tmp_path / "s")


def class_pairs(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Pairs that share only a class (like av-digits): class c = energy in bins 2c..2c+1 of every
    section, and a bright quadrant c in an 8×8 image; everything else is noise, different in every pair."""
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, 4, count)
    audio = rng.normal(0, 1, (count, 6, 10)).astype(np.float32)
    images = rng.integers(0, 60, (count, 8, 8)).astype(np.uint8)
    for i, c in enumerate(classes):
        audio[i, :, 2 * c : 2 * c + 2] += 3.0
        images[i, 4 * (c // 2) : 4 * (c // 2) + 4, 4 * (c % 2) : 4 * (c % 2) + 4] = 255
    return torch.from_numpy(audio), torch.from_numpy(images), [str(c) for c in classes]


def test_training_without_labels_matches_sounds_to_images_of_their_class() -> None:
    audio, images, _ = class_pairs(128, seed=0)
    val_audio, val_images, val_labels = class_pairs(40, seed=1)
    config = RerankerTrainConfig(
        epochs=8, batch_size=32, lr=3e-3, warmup_steps=4, image_shift=0, time_shift=1
    )
    untrained = _label_match(tiny_scorer(), val_audio, val_images, val_labels)
    result = train_reranker(audio, images, config, val=(val_audio, val_images), val_labels=val_labels)
    assert untrained < 0.6  # chance is about 1/4
    assert result.history[-1]["val_label_match"] >= 0.9
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]
    assert _label_match(result.scorer, val_audio, val_images, val_labels) >= 0.9


def _label_match(
    scorer: AudioImageScorer, audio: torch.Tensor, images: torch.Tensor, labels: list[str]
) -> float:
    with torch.no_grad():
        best = (scorer.embed_audio(audio) @ scorer.embed_images(images).T).argmax(dim=1)
    return float(np.mean([labels[j] == labels[i] for i, j in enumerate(best.tolist())]))


def test_training_is_seeded_and_leaves_the_global_random_stream_alone() -> None:
    audio, images, _ = class_pairs(16, seed=0)
    config = RerankerTrainConfig(epochs=1, batch_size=8)
    torch.manual_seed(123)
    first = train_reranker(audio, images, config).scorer.state_dict()
    after = torch.rand(1)
    torch.manual_seed(123)
    second = train_reranker(audio, images, config).scorer.state_dict()
    assert torch.equal(torch.rand(1), after)
    for key, value in first.items():
        torch.testing.assert_close(second[key], value, msg=key)


def test_candidate_seeds() -> None:
    assert candidate_seed(7, 0) == 7  # best-of-1 is plain sampling
    seeds = {candidate_seed(s, k) for s in range(100) for k in range(8)}
    assert len(seeds) == 800  # no two (seed, candidate) pairs share a random stream
    assert all(0 <= s < 2**64 for s in seeds)


def test_best_of_keeps_the_top_scoring_draw_and_draw_zero_is_plain_sampling() -> None:
    model, scorer = tiny_model(seed=1), tiny_scorer(seed=2)
    audio = torch.randn(2, 6, 10)
    config = SamplingConfig(temperature=1.0, guidance_scale=2.0)
    best = generate_best_of(model, scorer, audio, config, candidates=3, seeds=[5, 9])
    assert best.drawn.shape == (2, 3, 64) and best.scores.shape == (2, 3)
    for row, seed in enumerate((5, 9)):
        for k in range(3):
            alone = generate(
                model,
                audio[row : row + 1],
                config,
                generator=torch.Generator().manual_seed(candidate_seed(seed, k)),
            )
            assert torch.equal(best.drawn[row, k], alone[0]), (row, k)
            torch.testing.assert_close(best.scores[row, k], scorer.score(audio[row : row + 1], alone)[0])
        assert best.chosen[row] == best.scores[row].argmax()
        assert torch.equal(best.tokens[row], best.drawn[row, best.chosen[row]])
    plain = generate(model, audio, config, generator=[torch.Generator().manual_seed(s) for s in (5, 9)])
    assert torch.equal(best.drawn[:, 0], plain)


def test_best_of_rejects_zero_candidates() -> None:
    from sound2image.errors import UsageError

    with pytest.raises(UsageError, match="^candidates must be an integer >= 1, got 0$"):
        generate_best_of(tiny_model(), tiny_scorer(), torch.randn(1, 6, 10), candidates=0)


def test_training_run_exports_the_scorer_and_resume_keeps_it(tmp_path) -> None:
    make_dataset(tmp_path, count=3)
    reranker = RerankerTrainConfig(epochs=2, batch_size=3)
    config = tiny_run(tmp_path, tmp_path / "run", max_steps=6, checkpoint_every=3, reranker=reranker)
    result = train_transformer(config)
    exported = result.model_dir / RERANKER_DIR
    scorer = AudioImageScorer.from_pretrained(exported)
    record = scorer.saved_metadata
    assert record["training"]["epochs"] == 2 and len(record["history"]) == 2
    assert scorer.config.audio_sections == 8 and scorer.config.image_size == 8
    model = ImageTransformer.from_pretrained(result.model_dir)
    # the scorer standardises its audio with the transformer's statistics
    torch.testing.assert_close(scorer.feature_mean, model.feature_mean)
    weights = (exported / "model.safetensors").read_bytes()
    resumed = train_transformer(
        dataclasses.replace(config, resume=str(tmp_path / "run" / "checkpoints" / "checkpoint-3"))
    )
    assert resumed.steps == 6
    assert (resumed.model_dir / RERANKER_DIR / "model.safetensors").read_bytes() == weights


def test_training_config_round_trips_with_and_without_a_scorer(tmp_path) -> None:
    from sound2image.training.transformer import TransformerTrainConfig, preset

    digits = preset("av-digits", "data", "out")
    assert digits.reranker == RerankerTrainConfig()
    for config in (digits, preset("paper", "data", "out")):
        assert TransformerTrainConfig.from_dict(config.to_dict()) == config
