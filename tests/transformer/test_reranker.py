"""Best-of-N: the contrastive scorer (shapes, persistence, learning without labels) and candidate choice."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from sound2image.errors import DataError, WeightsError
from sound2image.training.reranker import (
    RerankerTrainConfig,
    contrastive_loss,
    evaluate_scorer,
    train_reranker,
)
from sound2image.training.transformer import train_transformer
from sound2image.transformer import ImageTransformer, SamplingConfig, generate
from sound2image.transformer.reranker import (
    RERANKER_DIR,
    AudioImageScorer,
    RerankerConfig,
    candidate_seed,
    generate_best_of,
    score_candidates,
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


def test_label_positives_loss_by_hand() -> None:
    # Two pairs of one class, logits [[a, 0], [0, a]]: each row's target is (1/2, 1/2), so each row and
    # column costs -(1/2) log p - (1/2) log (1 - p) with p = e^a / (e^a + 1), i.e. log(1 + e^a) - a / 2.
    a = 3.0
    logits = torch.tensor([[a, 0.0], [0.0, a]])
    loss = contrastive_loss(logits, torch.tensor([4, 4]))
    # float32 log1p/exp/division: a few ulps of a value ~1.55 (see test_contrastive_loss_by_hand).
    assert loss.item() == pytest.approx(np.log1p(np.exp(a)) - a / 2, rel=3e-6)
    # Classes all different: exactly the plain InfoNCE (one-hot targets).
    logits = torch.randn(5, 5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(contrastive_loss(logits, torch.arange(5)), contrastive_loss(logits))


def test_label_positives_spread_the_target_over_the_class_in_both_directions() -> None:
    # Three pairs, classes (0, 0, 1): row 0's target is (1/2, 1/2, 0), row 2's is (0, 0, 1); the loss is
    # the mean of the row-wise and the column-wise soft cross-entropies, computed here with numpy.
    logits = torch.tensor([[2.0, 1.0, -1.0], [0.5, 3.0, 0.0], [-2.0, 1.5, 4.0]])
    target = np.array([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])

    def soft_ce(rows: np.ndarray) -> float:
        log_p = rows - np.log(np.exp(rows).sum(axis=1, keepdims=True))
        return float(-(target * log_p).sum(axis=1).mean())

    expected = (soft_ce(logits.double().numpy()) + soft_ce(logits.double().numpy().T)) / 2
    # float32 softmax over 3 logits of magnitude <= 4: a few ulps relative to a loss ~1.
    assert contrastive_loss(logits, torch.tensor([0, 0, 1])).item() == pytest.approx(expected, rel=1e-5)


def test_label_positives_needs_a_label_on_every_training_pair() -> None:
    audio, images, labels = class_pairs(8, seed=0)
    config = RerankerTrainConfig(epochs=1, batch_size=4, label_positives=True)
    for bad in (None, labels[:-1] + [None], labels[:-1] + [""]):
        with pytest.raises(DataError, match="label_positives needs a label on every training pair"):
            train_reranker(audio, images, config, labels=bad)


def test_label_positives_changes_training_only_where_pairs_share_a_label() -> None:
    audio, images, labels = class_pairs(16, seed=0)
    config = RerankerTrainConfig(epochs=2, batch_size=8)
    plain = train_reranker(audio, images, config, labels=labels).scorer.state_dict()
    on = dataclasses.replace(config, label_positives=True)
    distinct = train_reranker(audio, images, on, labels=[str(i) for i in range(16)]).scorer.state_dict()
    shared = train_reranker(audio, images, on, labels=labels).scorer.state_dict()
    for key, value in plain.items():  # one class per pair: the same targets, the same weights
        torch.testing.assert_close(distinct[key], value, msg=key)
    assert not torch.allclose(shared["audio.out.weight"], plain["audio.out.weight"])


def test_held_out_loss_is_the_loss_the_scorer_trains_on() -> None:
    # A scorer trained with label_positives reports the label-aware held-out loss (comparable with its
    # train_loss); without labels, or without label_loss, the plain InfoNCE. Both computed here from
    # the scorer's own logits with contrastive_loss, whose values the by-hand tests above pin.
    scorer = tiny_scorer()
    audio, images = torch.randn(6, 6, 10), torch.randint(0, 256, (6, 8, 8), dtype=torch.uint8)
    labels = ["a", "b", "a", "c", "b", "a"]
    with torch.no_grad():
        logits = scorer(audio, images)
    plain = contrastive_loss(logits).item()
    aware = contrastive_loss(logits, torch.tensor([0, 1, 0, 2, 1, 0])).item()
    assert abs(aware - plain) > 1e-3  # shared labels change the targets, so the two must differ here
    report = evaluate_scorer(scorer, audio, images, "cpu", labels, label_loss=True)
    # same float32 ops on the same logits: equal to rounding of a 6x6 softmax
    assert report["val_loss"] == pytest.approx(aware, rel=1e-6)
    assert evaluate_scorer(scorer, audio, images, "cpu", labels)["val_loss"] == pytest.approx(plain, rel=1e-6)
    unlabelled = evaluate_scorer(scorer, audio, images, "cpu", None, label_loss=True)
    assert unlabelled["val_loss"] == pytest.approx(plain, rel=1e-6)
    missing = evaluate_scorer(scorer, audio, images, "cpu", labels[:-1] + [None], label_loss=True)
    assert missing["val_loss"] == pytest.approx(plain, rel=1e-6)


def test_label_positives_learn_the_classes() -> None:
    # Same data and steps as the label-free test above: class-aware targets still match held-out sounds
    # to images of their class (chance 1/4), and the held-out loss falls.
    audio, images, labels = class_pairs(128, seed=0)
    val_audio, val_images, val_labels = class_pairs(40, seed=1)
    config = RerankerTrainConfig(
        epochs=8, batch_size=32, lr=3e-3, warmup_steps=4, image_shift=0, time_shift=1, label_positives=True
    )
    result = train_reranker(
        audio, images, config, labels=labels, val=(val_audio, val_images), val_labels=val_labels
    )
    assert result.history[-1]["val_label_match"] >= 0.9
    assert _label_match(result.scorer, val_audio, val_images, val_labels) >= 0.9


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


def test_score_candidates_scores_each_pair_as_alone_and_keeps_rows_apart() -> None:
    scorer = tiny_scorer(seed=3)
    generator = torch.Generator().manual_seed(0)
    audio = torch.randn(3, 6, 10, generator=generator)
    drawn = torch.randint(0, 256, (3, 4, 64), generator=generator)  # (B, N, L) pixel tokens
    scores = score_candidates(scorer, audio, drawn)
    assert scores.shape == (3, 4) and scores.device.type == "cpu"
    for row in range(3):
        for k in range(4):
            alone = scorer.score(audio[row : row + 1], drawn[row, k : k + 1])[0]
            # float32 cosines of unit vectors (|s| <= 1); a batch of 12 instead of 1 may only change
            # the rounding order of a few hundred products: 1e-5 absolute is ~100 ulps of slack.
            torch.testing.assert_close(scores[row, k], alone, rtol=0, atol=1e-5)
    # (B, N, H, W) uint8 images score like their pixel tokens.
    as_images = drawn.view(3, 4, 8, 8).to(torch.uint8)
    torch.testing.assert_close(score_candidates(scorer, audio, as_images), scores, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="^2 sounds for 3 rows of candidates$"):
        score_candidates(scorer, audio[:2], drawn)


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


def _relabel(root, labels: list[str]) -> None:
    """Rewrite make_dataset's manifest with these labels (in pair order)."""
    import csv

    with open(root / "pairs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row, label in zip(rows, labels, strict=True):
        row["label"] = label
    with open(root / "pairs.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["audio", "image", "label"])
        writer.writeheader()
        writer.writerows(rows)


def _trained_scorer(data, out, label_positives: bool) -> dict[str, torch.Tensor]:
    reranker = RerankerTrainConfig(epochs=2, batch_size=4, embed_dim=16, label_positives=label_positives)
    result = train_transformer(tiny_run(data, out, max_steps=1, reranker=reranker))
    return AudioImageScorer.from_pretrained(result.model_dir / RERANKER_DIR).state_dict()


def test_the_transformer_trainer_gives_the_scorer_the_manifests_labels(tmp_path) -> None:
    make_dataset(tmp_path, count=4)  # labels 0, 1, 2, 3: one pair per label
    plain = _trained_scorer(tmp_path, tmp_path / "plain", label_positives=False)
    distinct = _trained_scorer(tmp_path, tmp_path / "distinct", label_positives=True)
    _relabel(tmp_path, ["a", "a", "b", "b"])
    shared = _trained_scorer(tmp_path, tmp_path / "shared", label_positives=True)
    for key, value in plain.items():  # a label per pair: the targets of plain InfoNCE
        torch.testing.assert_close(distinct[key], value, rtol=0, atol=0, msg=key)
    assert not torch.equal(shared["audio.out.weight"], plain["audio.out.weight"])
    _relabel(tmp_path, ["a", "", "b", "b"])
    with pytest.raises(DataError, match="1 of 4 have none"):
        _trained_scorer(tmp_path, tmp_path / "missing", label_positives=True)


def test_scorer_labels_flag() -> None:
    from sound2image.cli.main import build_parser
    from sound2image.cli.train_transformer import build_config
    from sound2image.errors import UsageError

    def config(*flags: str):
        base = ["train", "transformer", "--data", "d", "--out", "o", "--preset", "av-digits"]
        return build_config(build_parser().parse_args([*base, *flags]))

    assert config().reranker.label_positives is False
    assert config("--scorer-labels").reranker.label_positives is True
    assert config("--scorer-labels", "--no-scorer-labels").reranker.label_positives is False
    assert config("--reranker-epochs", "0", "--no-scorer-labels").reranker is None
    with pytest.raises(UsageError, match="scorer labels are a setting of the best-of-N scorer"):
        config("--reranker-epochs", "0", "--scorer-labels")


def test_the_robust_preset_on_pairs_without_labels_is_one_line_and_a_nonzero_exit(tmp_path, capsys) -> None:
    from sound2image.cli.main import main

    (tmp_path / "data").mkdir()
    make_dataset(tmp_path / "data", count=4)
    _relabel(tmp_path / "data", ["a", "", "b", "b"])  # the preset's scorer needs a label on every pair
    args = ["train", "transformer", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
            "--preset", "av-digits-robust", "--no-progress", "--max-steps", "1"]  # fmt: skip
    assert main(args) != 0
    error = capsys.readouterr().err.strip()
    assert "1 of 4 have none" in error and "--no-scorer-labels" in error
    assert "Traceback" not in error and len(error.splitlines()) == 1
    assert not (tmp_path / "run").exists()  # refused before any feature is computed or file written
