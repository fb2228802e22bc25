"""The utterance embedding (``embedding_dim`` > 0): a frozen copy of the scorer's audio tower whose
projection is added to every memory position. Checked where it acts: the memory (against the sum written
out by hand), the logits, the weights after training (the scorer's, unchanged), the batch-norm statistics,
the null memory, the saved model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from sound2image.errors import UsageError
from sound2image.modules import AudioTower
from sound2image.training.reranker import RerankerTrainConfig
from sound2image.training.transformer import train_transformer
from sound2image.transformer import ImageTransformer
from sound2image.transformer.reranker import RERANKER_DIR, AudioImageScorer, RerankerConfig
from tests.transformer.test_training import make_dataset, tiny_run
from tests.transformer.tiny import tiny_config

pytestmark = pytest.mark.numeric


def _model(seed: int = 0, **overrides: object) -> ImageTransformer:
    torch.manual_seed(seed)
    values: dict[str, object] = dict(embedding_dim=16, embedding_channels=8)
    values.update(overrides)
    return ImageTransformer(tiny_config(**values)).eval()


def _plain_memory(model: ImageTransformer, features: torch.Tensor) -> torch.Tensor:
    """The encoder's memory without the embedding, from the model's own modules (eval: no dropout)."""
    x = (features - model.feature_mean) / model.feature_std
    x = model.audio_in(x) + model.audio_pos
    for block in model.encoder:
        x = block(x)
    return model.ln_memory(x)


@torch.no_grad()
def test_memory_is_the_encoders_plus_the_projected_utterance_vector_at_every_position() -> None:
    model = _model()
    with torch.no_grad():  # non-trivial statistics, so the tower must see standardised features
        model.feature_mean.uniform_(-1, 1)
        model.feature_std.uniform_(0.5, 2)
    features = torch.randn(3, 6, 10)
    standard = (features - model.feature_mean) / model.feature_std
    vector = model.utterance(standard)  # (3, 16) unit vectors
    torch.testing.assert_close(vector.norm(dim=-1), torch.ones(3))
    projected = vector @ model.utterance_in.weight.T + model.utterance_in.bias  # (3, C)
    by_hand = _plain_memory(model, features) + projected[:, None]
    torch.testing.assert_close(model.encode(features), by_hand)
    keep = torch.tensor([True, False, True])
    memory = model.encode(features, keep)
    torch.testing.assert_close(memory[1], model.null_memory[0])  # the null row has no utterance vector
    torch.testing.assert_close(memory[0], by_hand[0])


@torch.no_grad()
def test_a_different_utterance_tower_changes_the_logits_and_a_copied_one_reproduces_them() -> None:
    model, other = _model(seed=0), _model(seed=1)
    features, tokens = torch.randn(2, 6, 10), torch.randint(0, 256, (2, 64))
    before, _ = model(features, tokens)
    model.set_utterance_tower(other.utterance)
    changed, _ = model(features, tokens)
    assert (changed - before).abs().max() > 1e-3  # the tower acts on the pixels' logits
    for name, value in other.utterance.state_dict().items():
        torch.testing.assert_close(model.utterance.state_dict()[name], value, rtol=0, atol=0)


def test_the_tower_is_frozen_and_its_batch_norms_stay_in_eval_mode() -> None:
    model = _model().train()
    assert not model.utterance.training and model.decoder.training
    assert all(not p.requires_grad for p in model.utterance.parameters())
    running = model.utterance.net[1].running_mean.clone()
    _, loss = model(torch.randn(4, 6, 10), torch.randint(0, 256, (4, 64)), torch.randint(0, 256, (4, 64)))
    loss.backward()
    assert all(p.grad is None for p in model.utterance.parameters())
    assert model.utterance_in.weight.grad is not None  # its projection learns
    torch.testing.assert_close(model.utterance.net[1].running_mean, running, rtol=0, atol=0)


def test_set_utterance_tower_refuses_a_model_without_one_and_a_wrong_shape() -> None:
    with pytest.raises(ValueError, match="no utterance embedding"):
        _model(embedding_dim=0).set_utterance_tower(AudioTower(10, 8, 16))
    with pytest.raises(ValueError, match="does not fit"):
        _model().set_utterance_tower(AudioTower(10, 8, 32))


def test_saved_model_keeps_the_tower(tmp_path) -> None:
    model = _model()
    model.save_pretrained(tmp_path / "m")
    loaded = ImageTransformer.from_pretrained(tmp_path / "m")
    features = torch.randn(2, 6, 10)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(features), model.encode(features), rtol=0, atol=0)


def test_training_copies_the_scorers_audio_tower_and_never_updates_it(tmp_path) -> None:
    make_dataset(tmp_path, count=3)
    reranker = RerankerTrainConfig(epochs=2, batch_size=3, embed_dim=16)
    config = tiny_run(tmp_path, tmp_path / "run", max_steps=6, reranker=reranker)
    config = dataclasses.replace(
        config, model=dataclasses.replace(config.model, embedding_dim=16, embedding_channels=128)
    )
    result = train_transformer(config)
    model = ImageTransformer.from_pretrained(result.model_dir)
    scorer = AudioImageScorer.from_pretrained(result.model_dir / RERANKER_DIR)
    tower = model.utterance.state_dict()
    for name, value in scorer.audio.state_dict().items():  # weights and batch-norm statistics alike
        torch.testing.assert_close(tower[name], value, rtol=0, atol=0, msg=name)
    untrained = ImageTransformer(config.model)  # and the tower is not what a fresh model starts with
    assert not torch.equal(untrained.utterance.out.weight, tower["out.weight"])

    # `generate` draws from the exported model exactly as the library does with the same seed
    from PIL import Image

    from sound2image.audio.sections import compute_section_features
    from sound2image.cli.main import main
    from sound2image.transformer import SamplingConfig, generate
    from tests.transformer.test_training import FEATURES

    out = tmp_path / "drawn"
    args = ["generate", str(tmp_path / "tone1.wav"), "--model", f"transformer:{result.model_dir}"]
    assert main([*args, "--out", str(out), "--seed", "5", "--temperature", "1", "--guidance-scale", "1"]) == 0
    (png,) = sorted(out.glob("*.png"))
    features = torch.from_numpy(compute_section_features(tmp_path / "tone1.wav", FEATURES))[None]
    tokens = generate(model, features, SamplingConfig(seed=5), generator=torch.Generator().manual_seed(5))
    assert (np.asarray(Image.open(png)) == tokens.reshape(8, 8).numpy()).all()


@pytest.mark.parametrize(
    ("reranker", "dim", "message"),
    [
        (None, 64, "copied from the best-of-N scorer"),
        (RerankerTrainConfig(embed_dim=32), 64, "must have the scorer's shape"),
    ],
)
def test_an_utterance_embedding_without_a_matching_scorer_is_refused(
    tmp_path, reranker: RerankerTrainConfig | None, dim: int, message: str
) -> None:
    config = tiny_run(tmp_path, tmp_path / "run", reranker=reranker)
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, embedding_dim=dim))
    with pytest.raises(UsageError, match=message):
        config.check()


@pytest.mark.parametrize("name", ["paper", "av-digits-robust"])
def test_train_flag_sets_the_scorers_shape_and_adds_a_scorer_where_there_is_none(name: str) -> None:
    from sound2image.cli.main import build_parser
    from sound2image.cli.train_transformer import build_config
    from sound2image.training.transformer import preset

    def config(*flags: str):
        base = ["train", "transformer", "--data", "d", "--out", "o", "--preset", name]
        return build_config(build_parser().parse_args([*base, *flags]))

    reference = preset(name, "d", "o")
    on = config("--utterance-embedding")
    assert on.reranker == (reference.reranker or RerankerTrainConfig())  # paper has none: the default one
    assert (on.model.embedding_dim, on.model.embedding_channels) == (on.reranker.embed_dim, 128)
    on.check()
    # the model it builds has the tower, in the scorer's shape
    scorer = AudioImageScorer(
        RerankerConfig(on.model.audio_sections, on.model.audio_bins, embed_dim=on.reranker.embed_dim)
    )
    ImageTransformer(on.model).set_utterance_tower(scorer.audio)
    off = config("--utterance-embedding", "--no-utterance-embedding")
    assert off.model.embedding_dim == 0 and ImageTransformer(off.model).utterance is None
    assert config("--reranker-epochs", "5", "--utterance-embedding").reranker.epochs == 5
    with pytest.raises(UsageError, match="cannot go with --reranker-epochs 0"):
        config("--reranker-epochs", "0", "--utterance-embedding")
