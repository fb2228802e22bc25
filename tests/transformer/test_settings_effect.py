"""Every Image Transformer setting is tested where it takes effect, not where it is recorded (issue #11 F).

Each test compares against an independent reference: the library called directly with the same settings
(and not with the defaults), a step computed by hand from the model's own forward passes, or the state a
setting must produce (saved config *and* the module that uses it, e.g. the attention window measured by
gradients, the optimiser's learning rate at every step, the initial weights of a seeded model).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import sound2image.training.transformer as training_module
import sound2image.transformer.sampling as sampling_module
from sound2image.audio.sections import compute_section_features
from sound2image.cli.main import build_parser, main
from sound2image.outputs import read_png_metadata
from sound2image.training.rundir import read_metrics
from sound2image.training.transformer import preset
from sound2image.transformer import ImageTransformer, ImageTransformerConfig, SamplingConfig, generate
from sound2image.transformer.reranker import (
    RERANKER_DIR,
    AudioImageScorer,
    RerankerConfig,
    candidate_seed,
    generate_best_of,
)
from sound2image.transformer.sampling import choose_tokens
from tests.transformer.test_training import FEATURES, make_dataset
from tests.transformer.tiny import tiny_config, tiny_model

pytestmark = pytest.mark.numeric

# --------------------------------------------------------------------------------------------------
# helpers


def amplified(model: ImageTransformer, factor: float = 300.0) -> ImageTransformer:
    """At initialisation the audio barely moves the logits; scale the cross-attention output so that the
    condition (and hence guidance) changes the pixels."""
    with torch.no_grad():
        for block in model.decoder:
            block.cross_attn.proj.weight.mul_(factor)
    return model


def hand_cdf_tokens(
    logits: np.ndarray, uniforms: np.ndarray, temperature: float, top_k: int | None, top_p: float | None
) -> tuple[np.ndarray, float]:
    """Inverse-CDF sampling written out in float64 with loops: softmax(logits / T) restricted to the k
    likeliest values and to the smallest prefix (in descending order) whose mass reaches top_p.

    Returns the tokens and the margin: how close any uniform comes to a CDF step, or the mass before a
    token to top_p (where float32 rounding could tip a decision)."""
    scaled = logits.astype(np.float64) / temperature
    order = np.argsort(-scaled, kind="stable")
    keep = np.ones(len(scaled), dtype=bool)
    margin = np.inf
    if top_k is not None:
        keep[order[top_k:]] = False
    if top_p is not None:
        probabilities = np.exp(scaled[order] - scaled.max())
        probabilities /= probabilities.sum()
        mass = 0.0
        for rank, index in enumerate(order):
            margin = min(margin, abs(mass - top_p))
            if mass >= top_p:
                keep[index] = False
            mass += probabilities[rank]
    weights = np.where(keep, np.exp(scaled - scaled.max()), 0.0)
    cdf = np.cumsum(weights) / weights.sum()
    margin = min(margin, float(np.min(np.abs(uniforms[:, None] - cdf[None, :]))))
    return np.array([int(np.searchsorted(cdf, u)) for u in uniforms]), margin


def receptive_field(
    model: ImageTransformer, position: int, audio_sections: int, audio_bins: int
) -> torch.Tensor:
    """Which pixel inputs the logits at ``position`` depend on: (T,) bool, by gradient."""
    captured: dict[str, torch.Tensor] = {}

    def keep(_module: object, _inputs: object, output: torch.Tensor) -> torch.Tensor:
        output.retain_grad()
        captured["embedding"] = output
        return output

    tokens = torch.randint(0, 257, (1, model.config.seq_len), generator=torch.Generator().manual_seed(0))
    handle = model.pixel_in.register_forward_hook(keep)
    try:
        logits, _ = model(torch.randn(1, audio_sections, audio_bins), tokens)
        logits[:, position].sum().backward()
    finally:
        handle.remove()
    return captured["embedding"].grad.abs().sum(dim=-1)[0] > 0


def expected_window(seq_len: int, position: int, block: int | None, memory: int | None) -> torch.Tensor:
    """Parmar et al.'s local 1-D window for one query, by hand: keys start - memory .. position."""
    lowest = 0 if block is None or memory is None else max(0, (position // block) * block - memory)
    return torch.tensor([lowest <= j <= position for j in range(seq_len)])


# --------------------------------------------------------------------------------------------------
# sampling API: choose_tokens / generate keywords


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p"),
    [
        (1.0, None, None),
        (0.5, None, None),
        (2.0, None, None),
        (1.0, 3, None),
        (1.0, None, 0.6),
        (0.7, 4, 0.9),
    ],
)
def test_choose_tokens_samples_the_hand_computed_filtered_distribution(
    temperature: float, top_k: int | None, top_p: float | None
) -> None:
    """Each of temperature/top_k/top_p changes which token a given uniform picks, exactly as by hand."""
    logits = torch.log(torch.tensor([0.3, 0.05, 0.2, 0.12, 0.08, 0.15, 0.1]))
    rows = 400
    uniforms = torch.rand(rows, generator=torch.Generator().manual_seed(11)).double().numpy()
    expected, margin = hand_cdf_tokens(logits.numpy(), uniforms, temperature, top_k, top_p)
    # The sampler's float32 softmax/cumsum differ from these float64 ones by ~1e-7 (7 terms, eps 6e-8):
    # no decision of this case may sit closer than that to its threshold.
    assert margin > 1e-5
    plain, _ = hand_cdf_tokens(logits.numpy(), uniforms, 1.0, None, None)
    config = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p)
    got = choose_tokens(logits.expand(rows, -1), config, torch.Generator().manual_seed(11))
    assert got.tolist() == expected.tolist()
    if (temperature, top_k, top_p) != (1.0, None, None):
        assert (expected != plain).sum() > 20  # the setting matters for this vector


def test_greedy_is_argmax() -> None:
    logits = torch.randn(5, 256, generator=torch.Generator().manual_seed(3))
    got = choose_tokens(logits, SamplingConfig(temperature=0.0), torch.Generator().manual_seed(0))
    assert got.tolist() == [int(np.argmax(row)) for row in logits.numpy()]


@pytest.fixture
def recorded_logits(monkeypatch: pytest.MonkeyPatch) -> list[tuple[torch.Tensor, SamplingConfig]]:
    """Spy on what the sampler hands to ``choose_tokens`` at every step (then call the real one)."""
    calls: list[tuple[torch.Tensor, SamplingConfig]] = []
    real = sampling_module.choose_tokens

    def spy(logits: torch.Tensor, config: SamplingConfig, generator: Any) -> torch.Tensor:
        calls.append((logits.detach().clone(), config))
        return real(logits, config, generator)

    monkeypatch.setattr(sampling_module, "choose_tokens", spy)
    return calls


@pytest.mark.parametrize("scale", [0.0, 2.5, 4.0])
def test_guided_logits_are_uncond_plus_scale_times_difference_by_hand(
    scale: float, recorded_logits: list[tuple[torch.Tensor, SamplingConfig]]
) -> None:
    """CFG by hand from the model's two teacher-forced forward passes (audio, null memory):
    ``u + g (c - u)`` at every step of the generated sequence."""
    model = amplified(tiny_model(seed=4))
    audio = torch.randn(2, 6, 10)
    config = SamplingConfig(temperature=1.0, guidance_scale=scale, seed=3)
    tokens = generate(model, audio, config)
    assert len(recorded_logits) == 64 and all(c.guidance_scale == scale for _, c in recorded_logits)
    inputs = model.decoder_inputs(tokens)
    with torch.no_grad():
        conditional, _ = model(audio, inputs)  # eval mode: every row sees its audio
        unconditional, _ = model(audio, inputs, keep=torch.tensor([False, False]))
    # guidance has something to scale: a wrong scale would move the logits by ~0.1, far above the tolerance
    assert (conditional - unconditional).abs().amax() > 0.1
    for step in (0, 1, 17, 63):
        by_hand = unconditional[:, step] + scale * (conditional[:, step] - unconditional[:, step])
        # Cached one-token steps vs a full teacher-forced pass: float32 sums in a different order,
        # ~1e-6 on logits of size < 1, amplified at most (1 + 2g) <= 9 by the combination.
        torch.testing.assert_close(recorded_logits[step][0], by_hand, atol=1e-4, rtol=1e-4)


def test_no_guidance_at_scale_one_uses_the_conditional_logits(
    recorded_logits: list[tuple[torch.Tensor, SamplingConfig]],
) -> None:
    model = amplified(tiny_model(seed=4))
    audio = torch.randn(2, 6, 10)
    tokens = generate(model, audio, SamplingConfig(temperature=1.0, seed=1))
    with torch.no_grad():
        conditional, _ = model(audio, model.decoder_inputs(tokens))
    for step in (0, 30, 63):
        torch.testing.assert_close(recorded_logits[step][0], conditional[:, step], atol=1e-4, rtol=1e-4)


def test_generate_passes_temperature_top_k_top_p_to_every_step(
    recorded_logits: list[tuple[torch.Tensor, SamplingConfig]],
) -> None:
    config = SamplingConfig(temperature=0.7, top_k=40, top_p=0.9, guidance_scale=1.5, seed=2)
    generate(tiny_model(), torch.randn(1, 6, 10), config)
    assert len(recorded_logits) == 64
    assert {(c.temperature, c.top_k, c.top_p) for _, c in recorded_logits} == {(0.7, 40, 0.9)}


def test_seed_generator_num_steps_and_use_cache_keywords() -> None:
    model = tiny_model(seed=2)
    audio = torch.randn(1, 6, 10)
    config = SamplingConfig(temperature=1.0, seed=5)
    seeded = generate(model, audio, config)
    # config.seed is the seed of a fresh CPU generator ...
    assert torch.equal(seeded, generate(model, audio, config, generator=torch.Generator().manual_seed(5)))
    assert not torch.equal(seeded, generate(model, audio, SamplingConfig(temperature=1.0, seed=6)))
    # ... and an explicit generator wins over it
    explicit = generate(model, audio, config, generator=torch.Generator().manual_seed(9))
    assert torch.equal(explicit, generate(model, audio, dataclasses.replace(config, seed=9)))
    # num_steps: that many pixels, the prefix of the full image
    short = generate(model, audio, config, num_steps=10)
    assert short.shape == (1, 10) and torch.equal(short, seeded[:, :10])


def test_use_cache_false_recomputes_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference path feeds the whole prefix at every step; the cached one only the newest token."""
    model = tiny_model()
    lengths: list[int] = []
    real = model.decode

    def spy(tokens: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        lengths.append(tokens.shape[1])
        return real(tokens, *args, **kwargs)

    monkeypatch.setattr(model, "decode", spy)
    generate(model, torch.randn(1, 6, 10), SamplingConfig(seed=1), num_steps=5)
    assert lengths == [1, 1, 1, 1, 1]
    lengths.clear()
    generate(model, torch.randn(1, 6, 10), SamplingConfig(seed=1), num_steps=5, use_cache=False)
    assert lengths == [1, 2, 3, 4, 5]


def test_progress_keyword_shows_a_bar(capsys: pytest.CaptureFixture[str]) -> None:
    model = tiny_model()
    generate(model, torch.randn(1, 6, 10), num_steps=3)
    assert "pixels" not in capsys.readouterr().err
    generate(model, torch.randn(1, 6, 10), num_steps=3, progress=True)
    assert "pixels" in capsys.readouterr().err
    small = tiny_model()
    generate_best_of(small, tiny_scorer(), torch.randn(1, 6, 10), candidates=2)
    assert "pixels" not in capsys.readouterr().err
    generate_best_of(small, tiny_scorer(), torch.randn(1, 6, 10), candidates=2, progress=True)
    assert "pixels" in capsys.readouterr().err


def test_best_of_passes_the_sampling_config_and_seeds_to_every_candidate() -> None:
    model = amplified(tiny_model(seed=1))
    scorer = tiny_scorer(seed=2)
    audio = torch.randn(2, 6, 10)
    config = SamplingConfig(temperature=0.7, top_k=30, top_p=0.95, guidance_scale=2.0, seed=4)
    best = generate_best_of(model, scorer, audio, config, candidates=3)  # seeds default to config.seed
    for k in range(3):
        rows = [torch.Generator().manual_seed(candidate_seed(4, k)) for _ in range(2)]  # one per row
        assert torch.equal(best.drawn[:, k], generate(model, audio, config, generator=rows)), k
    # draw 0 is always the plain draw of the row's seed, whichever candidate wins
    plain = generate(model, audio, config, generator=[torch.Generator().manual_seed(s) for s in (4, 4)])
    assert torch.equal(best.drawn[:, 0], plain)
    defaults = generate(
        model, audio, SamplingConfig(), generator=[torch.Generator().manual_seed(4) for _ in "ab"]
    )
    assert not torch.equal(best.drawn[:, 0], defaults)
    # candidates=N gives N draws; greedy sampling makes them all the same image
    greedy = generate_best_of(model, scorer, audio, SamplingConfig(temperature=0.0), candidates=4)
    assert greedy.drawn.shape == (2, 4, 64)
    assert all(torch.equal(greedy.drawn[:, k], greedy.drawn[:, 0]) for k in range(4))


def tiny_scorer(seed: int = 0, sections: int = 6, bins: int = 10) -> AudioImageScorer:
    torch.manual_seed(seed)
    config = RerankerConfig(
        audio_sections=sections, audio_bins=bins, image_size=8, embed_dim=16, audio_channels=16, image_width=8
    )
    return AudioImageScorer(config).eval()


# --------------------------------------------------------------------------------------------------
# model config fields


@pytest.mark.parametrize(("block", "memory"), [(8, 8), (16, 4), (4, 0), (None, None)])
def test_query_block_and_memory_length_set_the_attention_window(
    block: int | None, memory: int | None
) -> None:
    """One decoder layer: the logits at a position depend on exactly the local window's inputs."""
    model = tiny_model(n_decoder_layers=1, query_block=block, memory_length=memory)
    attention = model.decoder[0].self_attn
    assert (attention.block_size, attention.memory_length) == (block, memory)
    for position in (5, 37, 63):
        field = receptive_field(model, position, 6, 10)
        assert torch.equal(field, expected_window(64, position, block, memory)), position
    window = 64 if block is None else block + memory
    assert [cache.window for cache in model.allocate_caches(1)] == [window]


def hand_sinusoid(length: int, dim: int) -> np.ndarray:
    table = np.zeros((length, dim))
    for pos in range(length):
        for i in range(0, dim, 2):
            table[pos, i] = math.sin(pos / 10000 ** (i / dim))
            table[pos, i + 1] = math.cos(pos / 10000 ** (i / dim))
    return table


@pytest.mark.parametrize("kind", ["1d", "2d"])
def test_pixel_positions_choose_the_table_the_decoder_adds(kind: str) -> None:
    model = tiny_model(pixel_positions=kind)
    if kind == "1d":
        expected = hand_sinusoid(64, 32)
    else:  # first half of the channels encode the row, the second half the column
        rows, cols = hand_sinusoid(8, 16), hand_sinusoid(8, 16)
        expected = np.array([np.concatenate([rows[p // 8], cols[p % 8]]) for p in range(64)])
    # sin/cos of arguments up to 63 in float64, stored as float32: 1e-6 covers the rounding
    np.testing.assert_allclose(model.pixel_pos.numpy(), expected, atol=1e-6)
    # and decode adds exactly that table: zero it and the logits change by the table's contribution
    tokens, audio = torch.randint(0, 257, (1, 64)), torch.randn(1, 6, 10)
    with torch.no_grad():
        before, _ = model(audio, tokens)
        model.pixel_pos.zero_()
        after, _ = model(audio, tokens)
    assert (before - after).abs().amax() > 1e-2


def test_model_shape_fields_build_the_modules_they_name() -> None:
    config = tiny_config(
        image_size=4,
        pixel_levels=16,
        audio_sections=5,
        audio_bins=7,
        d_model=24,
        n_encoder_layers=3,
        n_decoder_layers=2,
        n_heads=3,
        mlp_ratio=3,
        dropout=0.25,
        attention_dropout=0.125,
    )
    model = ImageTransformer(config)
    assert len(model.encoder) == 3 and len(model.decoder) == 2
    assert model.decoder[0].self_attn.n_heads == 3 and model.encoder[0].attn.n_heads == 3
    assert model.decoder[0].mlp.fc.out_features == 72 and model.encoder[0].mlp.fc.out_features == 72
    assert model.head.out_features == 16 and model.pixel_in.num_embeddings == 17
    assert model.audio_in.in_features == 7 and model.null_memory.shape == (1, 5, 24)
    assert model.dropout.p == 0.25 and model.decoder[1].mlp.dropout.p == 0.25
    assert model.decoder[0].self_attn.dropout == 0.125 and model.encoder[0].attn.dropout == 0.125
    assert model.decoder[0].cross_attn.dropout == 0.125
    tokens = generate(model, torch.randn(2, 5, 7), SamplingConfig(seed=0))
    assert tokens.shape == (2, 16) and int(tokens.max()) < 16


@pytest.mark.parametrize(("dropout", "attention_dropout"), [(0.3, 0.0), (0.0, 0.5)])
def test_dropouts_act_in_training_mode_only(dropout: float, attention_dropout: float) -> None:
    model = tiny_model(dropout=dropout, attention_dropout=attention_dropout)
    audio, tokens = torch.randn(2, 6, 10), torch.randint(0, 257, (2, 64))
    keep = torch.tensor([True, True])
    with torch.no_grad():
        evaluated = model(audio, tokens, keep=keep)[0]
        model.train()
        trained = model(audio, tokens, keep=keep)[0]
        model.eval()
        assert not torch.allclose(trained, evaluated)
        # the same weights without dropout: training mode changes nothing
        plain = tiny_model()
        plain.load_state_dict(model.state_dict())
        plain.train()
        torch.testing.assert_close(plain(audio, tokens, keep=keep)[0], evaluated)


def test_cond_dropout_is_the_share_of_rows_that_see_the_null_memory() -> None:
    """cond_dropout 1: every training row sees the null memory; 0: none does; 0.25 on 4,000 rows: about a
    quarter (binomial sd 0.007, so 0.22..0.28 is > 4 sd)."""
    audio, tokens = torch.randn(2, 6, 10), torch.randint(0, 257, (2, 64))
    with torch.no_grad():
        reference = tiny_model()
        null = reference(audio, tokens, keep=torch.tensor([False, False]))[0]
        conditioned = reference(audio, tokens)[0]
        for share, expected in ((1.0, null), (0.0, conditioned)):
            model = tiny_model(cond_dropout=share).train()
            torch.testing.assert_close(model(audio, tokens)[0], expected)
        model = tiny_model(cond_dropout=0.25, n_decoder_layers=1).train()
        seen: list[torch.Tensor] = []
        real = model.encode

        def spy(features: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
            seen.append(keep)
            return real(features, keep)

        model.encode = spy  # type: ignore[method-assign]
        model(torch.randn(4000, 6, 10), torch.randint(0, 257, (4000, 1)))
    share = 1 - seen[0].float().mean().item()
    assert 0.22 < share < 0.28


# --------------------------------------------------------------------------------------------------
# `generate --model transformer:DIR`: the CLI's pixels are the library's pixels for the same settings

SAVED_SAMPLING = {"temperature": 0.9, "top_k": 100, "top_p": None, "guidance_scale": 1.5, "seed": 0}
RECORDED = {k: v for k, v in SAVED_SAMPLING.items() if k != "seed"}  # what generate falls back to


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny model (8×8 images over 8 × 64 features) whose audio matters, with a scorer and a
    recorded default sampling config that differs from SamplingConfig()'s."""
    root = tmp_path_factory.mktemp("model")
    make_dataset(root, count=2)
    model = amplified(tiny_model(seed=5, audio_sections=8, audio_bins=64))
    record = {"features": FEATURES.to_dict(), "sampling": SAVED_SAMPLING, "classes": ["0", "1"]}
    model.save_pretrained(root / "model", record)
    scorer = tiny_scorer(seed=6, sections=8, bins=64)
    scorer.save_pretrained(root / "model" / RERANKER_DIR, {"history": [{"epoch": 1}]})
    return root


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _library(model_dir: Path, audio: str, seed: int, **settings: Any) -> np.ndarray:
    """The reference: load the model, compute the features with the recorded settings, call generate."""
    model = ImageTransformer.from_pretrained(model_dir / "model")
    features = torch.from_numpy(compute_section_features(model_dir / audio, FEATURES))[None]
    config = SamplingConfig(seed=seed, **settings)
    tokens = generate(model, features, config, generator=torch.Generator().manual_seed(seed))
    return tokens.reshape(8, 8).to(torch.uint8).numpy()


def _generate(model_dir: Path, out: Path, *extra: str, audio: str = "tone0.wav") -> None:
    args = ["generate", str(model_dir / audio), "--model", f"transformer:{model_dir / 'model'}"]
    assert main([*args, "--out", str(out), *extra]) == 0


FLAG_CASES = {
    "temperature-top-k": (["--temperature", "0.7", "--top-k", "40"], dict(temperature=0.7, top_k=40)),
    "top-p": (["--top-p", "0.5"], dict(top_p=0.5)),
    "guidance": (["--guidance-scale", "3"], dict(guidance_scale=3.0)),
    "greedy-guided": (
        ["--temperature", "0", "--guidance-scale", "2"],
        dict(temperature=0.0, guidance_scale=2.0),
    ),
    "all": (
        ["--temperature", "1.3", "--top-k", "7", "--top-p", "0.8", "--guidance-scale", "0"],
        dict(temperature=1.3, top_k=7, top_p=0.8, guidance_scale=0.0),
    ),
}


@pytest.mark.parametrize("case", list(FLAG_CASES))
def test_generate_samples_with_the_given_flags(model_dir: Path, tmp_path: Path, case: str) -> None:
    """CLI pixels == the library's with the same settings (flags win over the model's recorded sampling
    defaults, each unset one falls back to them), != the library's with the recorded defaults alone."""
    flags, settings = FLAG_CASES[case]
    _generate(model_dir, tmp_path, "--seed", "3", *flags)
    got = _png(tmp_path / "tone0_seed3.png")
    merged = RECORDED | settings
    assert np.array_equal(got, _library(model_dir, "tone0.wav", 3, **merged))
    assert not np.array_equal(got, _library(model_dir, "tone0.wav", 3, **RECORDED))
    meta = read_png_metadata(tmp_path / "tone0_seed3.png")
    assert {k: meta[k] for k in merged} == merged


def test_generate_without_flags_uses_the_models_recorded_sampling(model_dir: Path, tmp_path: Path) -> None:
    _generate(model_dir, tmp_path, "--seed", "3")
    got = _png(tmp_path / "tone0_seed3.png")
    assert np.array_equal(got, _library(model_dir, "tone0.wav", 3, **RECORDED))
    assert not np.array_equal(got, _library(model_dir, "tone0.wav", 3))  # SamplingConfig()'s defaults


def test_seed_num_images_and_batch_size(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--seed 3 --num-images 2 and two inputs: four images, each the library's for its own seed, drawn in
    batches of --batch-size rows."""
    import sound2image.transformer.runner as transformer_package  # the library runner the CLI calls

    rows: list[int] = []
    real = transformer_package.generate

    def spy(model: Any, features: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        rows.append(features.shape[0])
        return real(model, features, *args, **kwargs)

    monkeypatch.setattr(transformer_package, "generate", spy)
    args = ["generate", str(model_dir / "tone0.wav"), str(model_dir / "tone1.wav")]
    model = f"transformer:{model_dir / 'model'}"
    flags = ["--seed", "3", "--num-images", "2", "--batch-size", "3", "--temperature", "1"]
    assert main([*args, "--model", model, "--out", str(tmp_path), *flags]) == 0
    assert rows == [3, 1]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["tone0_seed3.png", "tone0_seed4.png", "tone1_seed3.png", "tone1_seed4.png"]
    settings = {"temperature": 1.0, "top_k": 100, "guidance_scale": 1.5}
    images = {name: _png(tmp_path / name) for name in names}
    for name in names:
        audio, seed = name.split("_seed")
        assert np.array_equal(images[name], _library(model_dir, f"{audio}.wav", int(seed[:-4]), **settings))
    assert not np.array_equal(images["tone0_seed3.png"], images["tone0_seed4.png"])


@pytest.mark.parametrize("factor", [2, 5])
def test_upscale_writes_the_nearest_neighbour_view(model_dir: Path, tmp_path: Path, factor: int) -> None:
    _generate(model_dir, tmp_path, "--seed", "1", "--upscale", str(factor))
    small, big = _png(tmp_path / "tone0_seed1.png"), _png(tmp_path / f"tone0_seed1_x{factor}.png")
    assert big.shape == (8 * factor, 8 * factor)
    assert np.array_equal(big, np.kron(small, np.ones((factor, factor), dtype=np.uint8)))
    assert read_png_metadata(tmp_path / f"tone0_seed1_x{factor}.png")["view"].startswith(
        f"upscaled x{factor}"
    )


def test_overwrite_replaces_the_image(model_dir: Path, tmp_path: Path) -> None:
    _generate(model_dir, tmp_path, "--seed", "2", "--temperature", "1.5")
    _generate(model_dir, tmp_path, "--seed", "2", "--temperature", "0", "--overwrite")
    greedy = _library(model_dir, "tone0.wav", 2, temperature=0.0, top_k=100, guidance_scale=1.5)
    assert np.array_equal(_png(tmp_path / "tone0_seed2.png"), greedy)
    assert read_png_metadata(tmp_path / "tone0_seed2.png")["temperature"] == 0.0


@pytest.mark.parametrize("flag", [["--mix"], ["--weights", "1"]])
def test_mix_and_weights_are_refused_not_ignored(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: list[str]
) -> None:
    args = ["generate", str(model_dir / "tone0.wav"), "--model", f"transformer:{model_dir / 'model'}"]
    assert main([*args, "--out", str(tmp_path / "out"), *flag]) == 2
    err = capsys.readouterr().err
    assert f"{flag[0]}: only for SounDiff, not used by the Image Transformer" in err
    assert not (tmp_path / "out").exists()


SOUNDIFF_ONLY = [
    ["--storyboard"],
    ["--save-embedding"],
    ["--prompt", "a cat"],
    ["--negative-prompt", "blurry"],
    ["--steps", "5"],
    ["--noise-level", "500"],
    ["--size", "512"],
    ["--image", "reference.png"],
    ["--dtype", "fp16"],
    ["--max-duration", "0.01"],
]


@pytest.mark.parametrize("flag", SOUNDIFF_ONLY, ids=lambda f: f[0])
def test_flags_the_transformer_path_cannot_apply_are_refused(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: list[str]
) -> None:
    args = ["generate", str(model_dir / "tone0.wav"), "--model", f"transformer:{model_dir / 'model'}"]
    assert main([*args, "--out", str(tmp_path / "out"), "--seed", "1", *flag]) == 2
    assert flag[0] in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("candidates", [2, 4])
def test_candidates_keep_the_best_scored_of_n_draws_and_draw_zero_is_the_plain_image(
    model_dir: Path, tmp_path: Path, candidates: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every draw the CLI made is captured (a spy on generate_best_of): draw 0 is the plain image of the
    seed, ALWAYS, whichever candidate wins; draw k is the library's draw with candidate_seed(seed, k);
    the recorded scores are the saved scorer's, computed here one draw at a time; the kept image is the
    best-scored draw."""
    import sound2image.transformer.reranker as reranker_module

    captured = []
    real = reranker_module.generate_best_of

    def spy(*args: Any, **kwargs: Any) -> Any:
        captured.append(real(*args, **kwargs))
        return captured[-1]

    monkeypatch.setattr(reranker_module, "generate_best_of", spy)
    flags = ["--seed", "2", "--temperature", "1.2", "--guidance-scale", "2"]
    _generate(model_dir, tmp_path / "best", *flags, "--candidates", str(candidates))
    _generate(model_dir, tmp_path / "plain", *flags)
    plain = _png(tmp_path / "plain" / "tone0_seed2.png")
    assert len(captured) == 1 and captured[0].drawn.shape == (1, candidates, 64)
    drawn = captured[0].drawn[0].reshape(candidates, 8, 8).to(torch.uint8).numpy()
    assert np.array_equal(drawn[0], plain)  # unconditional: not only when draw 0 wins

    settings = dict(temperature=1.2, top_k=100, guidance_scale=2.0)
    assert np.array_equal(plain, _library(model_dir, "tone0.wav", 2, **settings))
    model = ImageTransformer.from_pretrained(model_dir / "model")
    scorer = AudioImageScorer.from_pretrained(model_dir / "model" / RERANKER_DIR)
    features = torch.from_numpy(compute_section_features(model_dir / "tone0.wav", FEATURES))[None]
    for k in range(1, candidates):
        generator = torch.Generator().manual_seed(candidate_seed(2, k))
        alone = generate(model, features, SamplingConfig(**settings), generator=generator)
        assert np.array_equal(drawn[k], alone.reshape(8, 8).numpy()), k
    assert len({d.tobytes() for d in drawn}) == candidates  # distinct draws: the choice is visible
    scores = np.array([float(scorer.score(features, torch.tensor(d)[None])[0]) for d in drawn])
    ranking = read_png_metadata(tmp_path / "best" / "tone0_seed2.png")["best_of"]
    assert ranking["candidates"] == candidates
    # the CLI rounds to 4 decimals (5e-5) and scores the draws as one batch (float32 order, ~1e-7)
    assert ranking["scores"] == pytest.approx(scores.tolist(), abs=6e-5)
    assert np.sort(scores)[-1] - np.sort(scores)[-2] > 1e-6  # a unique best, well above float noise
    assert ranking["kept"] == int(np.argmax(scores))
    assert np.array_equal(_png(tmp_path / "best" / "tone0_seed2.png"), drawn[ranking["kept"]])


# --------------------------------------------------------------------------------------------------
# `train transformer`: every flag reaches the saved config AND the run (optimiser, batches, modules)

TRAIN_FLAGS = [
    "--preset", "paper",
    "--sample-rate", "8000", "--duration", "0.128", "--sections", "8", "--log-magnitude", "--no-standardize",
    "--d-model", "24", "--encoder-layers", "2", "--decoder-layers", "1", "--heads", "3",
    "--query-block", "16", "--memory-length", "4", "--dropout", "0.05", "--cond-dropout", "0.3",
    "--max-steps", "6", "--batch-size", "2", "--lr", "5e-3", "--min-lr", "1e-4", "--warmup-steps", "3",
    "--weight-decay", "0.02", "--val-fraction", "0", "--seed", "7", "--device", "cpu",
    "--mixed-precision", "no", "--eval-every", "2", "--checkpoint-every", "2",
    "--checkpoints-total-limit", "1", "--reranker-epochs", "2", "--no-progress", "--threads", "2",
]  # fmt: skip

#: make_dataset's image i has top half 20 + 60 i and bottom half 240 - 60 i: its brightest pixel names it
BRIGHTEST_TO_INDEX = {240: 0, 180: 1, 140: 2, 200: 3}


class _TrainSpy:
    """Records what a training run really did: the model's initial weights, the pair indices of every
    training batch, the conditioning-dropout keep masks, and each optimiser step's (lr, weight decay)."""

    def __init__(self) -> None:
        self.initial: list[dict[str, torch.Tensor]] = []
        self.batches: list[list[int]] = []
        self.optimizer_steps: list[list[tuple[float, float]]] = []
        self.stderr = ""
        self.threads = 0

    def install(self, patch: pytest.MonkeyPatch) -> None:
        spy = self
        real_adamw = training_module.make_adamw

        class Recorded(ImageTransformer):
            def __init__(self, config: ImageTransformerConfig) -> None:
                super().__init__(config)
                spy.initial.append({k: v.clone() for k, v in self.state_dict().items()})

            def forward(self, audio_features: torch.Tensor, pixels: torch.Tensor, *args: Any, **kwargs: Any):  # type: ignore[override]
                if self.training:
                    targets = args[0] if args else kwargs["targets"]
                    spy.batches.append([BRIGHTEST_TO_INDEX[int(row.max())] for row in targets])
                return super().forward(audio_features, pixels, *args, **kwargs)

        def make_adamw(*args: Any, **kwargs: Any) -> torch.optim.AdamW:
            optimizer = real_adamw(*args, **kwargs)

            def record(opt: torch.optim.Optimizer, *_: Any) -> None:
                spy.optimizer_steps.append([(g["lr"], g["weight_decay"]) for g in opt.param_groups])

            optimizer.register_step_pre_hook(record)
            return optimizer

        patch.setattr(training_module, "ImageTransformer", Recorded)
        patch.setattr(training_module, "make_adamw", make_adamw)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, _TrainSpy]:
    import contextlib
    import io

    root = tmp_path_factory.mktemp("train")
    make_dataset(root, count=4)
    spy = _TrainSpy()
    threads = torch.get_num_threads()
    stderr = io.StringIO()
    try:
        torch.set_num_threads(3)  # neither the machine's default nor the flag: --threads 2 must set it
        with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stderr(stderr):
            spy.install(patch)
            assert (
                main(["train", "transformer", "--data", str(root), "--out", str(root / "run"), *TRAIN_FLAGS])
                == 0
            )
        spy.threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(threads)
    spy.stderr = stderr.getvalue()
    return root / "run", spy


def test_train_model_flags_reach_the_saved_config_and_the_modules(
    trained_run: tuple[Path, _TrainSpy],
) -> None:
    run, _ = trained_run
    model = ImageTransformer.from_pretrained(run / "model")
    record = model.saved_metadata
    expected = dict(
        d_model=24, n_encoder_layers=2, n_decoder_layers=1, n_heads=3, query_block=16, memory_length=4,
        dropout=0.05, cond_dropout=0.3, audio_sections=8, audio_bins=64,
    )  # fmt: skip
    assert {k: record["model"][k] for k in expected} == expected
    assert len(model.encoder) == 2 and len(model.decoder) == 1 and model.dropout.p == 0.05
    assert model.decoder[0].self_attn.n_heads == 3 and model.encoder[0].attn.n_heads == 3
    assert model.audio_in.in_features == 64 and model.null_memory.shape == (1, 8, 24)
    # --query-block 16 --memory-length 4: position 37 (block [32, 48)) sees inputs 28..37 only
    field = receptive_field(model, 37, 8, 64)
    assert torch.equal(field, expected_window(1024, 37, 16, 4))
    assert [cache.window for cache in model.allocate_caches(1)] == [20]
    training = json.loads((run / "training_config.json").read_text())
    assert training["model"] == record["model"]


def test_train_feature_flags_set_the_features_and_the_standardisation(
    trained_run: tuple[Path, _TrainSpy],
) -> None:
    run, _ = trained_run
    model = ImageTransformer.from_pretrained(run / "model")
    record = model.saved_metadata
    features = record["features"]
    assert (features["sample_rate"], features["duration"], features["num_sections"]) == (8000, 0.128, 8)
    assert features["log_magnitude"] is True and features["standardize"] is False
    # --no-standardize (the preset standardises): the model's input statistics stay the identity
    assert torch.equal(model.feature_mean, torch.zeros(64)) and torch.equal(model.feature_std, torch.ones(64))


def test_train_max_minutes_stops_the_loop_after_the_feature_statistics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--max-minutes 1e-9: the budget is spent before the first step, so 0 steps; the preset's
    standardize=True has put the per-bin mean/std of the training features (by hand here) in the model."""
    make_dataset(tmp_path, count=2)
    flags = ["--max-steps", "50", "--max-minutes", "1e-9", "--val-fraction", "0", "--no-progress"]
    run = tmp_path / "r"
    assert main(["train", "transformer", "--data", str(tmp_path), "--out", str(run), *SMALL, *flags]) == 0
    assert "trained 0 steps" in capsys.readouterr().out
    model = ImageTransformer.from_pretrained(run / "model")
    record = model.saved_metadata
    assert record["features"]["standardize"] is True and record["features"]["log_magnitude"] is False
    plain = dataclasses.replace(FEATURES, log_magnitude=False)
    rows = np.concatenate([compute_section_features(tmp_path / f"tone{i}.wav", plain) for i in range(2)])
    # float64 statistics on both sides, stored as float32: relative 1e-6; 1e-5 leaves room
    np.testing.assert_allclose(model.feature_mean.numpy(), rows.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.feature_std.numpy(), rows.std(axis=0), rtol=1e-5, atol=1e-6)


def test_train_optimiser_flags_drive_every_step(trained_run: tuple[Path, _TrainSpy]) -> None:
    """--lr 5e-3 --min-lr 1e-4 --warmup-steps 3 --max-steps 6: linear warm-up times a cosine from the
    peak to the floor over the run, by hand; --weight-decay 0.02 on the matrices, 0 on the rest."""
    _, spy = trained_run
    assert len(spy.optimizer_steps) == 6
    for step, groups in enumerate(spy.optimizer_steps):
        warm = min(1.0, (step + 1) / 3)
        lr = warm * (1e-4 + 0.5 * (5e-3 - 1e-4) * (1 + math.cos(math.pi * step / 6)))
        assert groups == [(pytest.approx(lr, rel=1e-12), 0.02), (pytest.approx(lr, rel=1e-12), 0.0)], step


def test_train_seed_and_batch_size_set_the_initial_weights_and_the_data_order(
    trained_run: tuple[Path, _TrainSpy],
) -> None:
    """--seed 7: the model starts from the weights torch.manual_seed(7) gives and visits the pairs in the
    order a generator seeded 7 permutes them, one permutation per epoch; --batch-size 2: 2 pairs a step."""
    run, spy = trained_run
    record = ImageTransformer.from_pretrained(run / "model").saved_metadata
    torch.manual_seed(7)
    reference = ImageTransformer(ImageTransformerConfig.from_dict(record["model"])).state_dict()
    for key, value in reference.items():
        assert torch.equal(spy.initial[0][key], value), key
    generator = torch.Generator().manual_seed(7)
    expected = []
    for _ in range(3):  # 4 pairs / batch 2 = 2 steps an epoch, 6 steps
        order = torch.randperm(4, generator=generator).tolist()
        expected += [order[:2], order[2:]]
    assert spy.batches == expected


def test_train_run_flags_set_evaluation_checkpoints_scorer_threads_and_progress(
    trained_run: tuple[Path, _TrainSpy],
) -> None:
    run, spy = trained_run
    log = read_metrics(run, "eval")
    assert [entry["step"] for entry in log if "step" in entry] == [2, 4, 6]  # --eval-every 2
    # --checkpoint-every 2 wrote checkpoints 2, 4 and 6; --checkpoints-total-limit 1 (preset: 2) kept the last
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint-6"]
    scorer = json.loads((run / "model" / RERANKER_DIR / "config.json").read_text())
    assert scorer["training"]["epochs"] == 2 and len(scorer["history"]) == 2  # --reranker-epochs 2
    assert spy.threads == 2  # --threads 2
    assert "training" not in spy.stderr  # --no-progress
    training = json.loads((run / "training_config.json").read_text())
    assert (training["device"], training["mixed_precision"], training["val_fraction"]) == ("cpu", "no", 0.0)


SMALL = [
    "--preset", "paper", "--sample-rate", "8000", "--duration", "0.128", "--sections", "8",
    "--d-model", "16", "--encoder-layers", "1", "--decoder-layers", "1", "--heads", "2",
    "--query-block", "32", "--memory-length", "32", "--batch-size", "2",
]  # fmt: skip


def _relabel(root: Path, classes: int) -> None:
    """Give make_dataset's pairs ``classes`` labels (index % classes), so that a split has a stratum
    of several pairs to hold out from."""
    import csv

    with open(root / "pairs.csv") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["label"] = str(int(row["label"]) % classes)
    with open(root / "pairs.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["audio", "image", "label"])
        writer.writeheader()
        writer.writerows(rows)


@pytest.mark.filterwarnings("ignore:.*silent")  # tone5 is 4 kHz sampled at 8 kHz: zeros; any pair will do
def test_train_epochs_val_fraction_and_progress(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--epochs 1.5 over 4 training pairs in batches of 2: int(1.5 · 2) = 3 steps; --val-fraction 0.3
    holds out the pairs split_pairs(…, 0.3, 42) names, and they are evaluated; progress bars by default."""
    from sound2image.data import scan_pairs, split_pairs

    make_dataset(tmp_path, count=6)
    _relabel(tmp_path, 2)
    run = tmp_path / "run"
    flags = ["--epochs", "1.5", "--val-fraction", "0.3", "--eval-every", "1000"]
    assert main(["train", "transformer", "--data", str(tmp_path), "--out", str(run), *SMALL, *flags]) == 0
    captured = capsys.readouterr()
    assert "trained 3 steps" in captured.out
    assert "training" in captured.err  # the progress bar, on without --no-progress
    expected = split_pairs(scan_pairs(str(tmp_path)).pairs, 0.3, 42)
    split = json.loads((run / "split.json").read_text())
    assert split["settings"]["val_fraction"] == 0.3
    assert (
        (split["counts"]["train"], split["counts"]["val"])
        == (4, 2)
        == (len(expected.train), len(expected.val))
    )
    assert sorted(split["val"]) == sorted(pair.key for pair in expected.val)
    history = read_metrics(run, "eval")
    assert history[-1]["step"] == 3 and "val_bpp" in history[-1]
    assert (run / "validation" / "step-0000003.png").is_file()


def test_train_resume_continues_from_the_named_checkpoint(tmp_path: Path) -> None:
    """--resume checkpoint-2 runs steps 3 and 4 only (metrics.jsonl drops the lines of 3 and 4 and logs
    them again, as SounDiff's does: it reads as one run, 1..4), and ends where the straight run ended."""
    make_dataset(tmp_path, count=4)
    run = tmp_path / "run"
    flags = [
        "--max-steps",
        "4",
        "--eval-every",
        "1",
        "--checkpoint-every",
        "2",
        "--val-fraction",
        "0",
        "--no-progress",
    ]
    base = ["train", "transformer", "--data", str(tmp_path), "--out", str(run), *SMALL, *flags]
    assert main(base) == 0
    straight = (run / "model" / "model.safetensors").read_bytes()
    kept = read_metrics(run)[:4]  # train and eval lines of steps 1 and 2
    assert main([*base, "--resume", str(run / "checkpoints" / "checkpoint-2")]) == 0
    steps = [entry["step"] for entry in read_metrics(run, "eval")]
    assert steps == [1, 2, 3, 4]
    assert [entry["step"] for entry in read_metrics(run, "train")] == [1, 2, 3, 4]
    assert read_metrics(run)[:4] == kept and [e["step"] for e in kept] == [1, 1, 2, 2]
    resumed = (run / "model" / "model.safetensors").read_bytes()
    for key, value in _load_weights(straight).items():
        torch.testing.assert_close(_load_weights(resumed)[key], value, msg=key)


def _load_weights(blob: bytes) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    return load(blob)


@pytest.mark.parametrize("name", ["paper", "av-digits"])
def test_train_preset_is_the_starting_config_and_flags_override_only_their_field(name: str) -> None:
    from sound2image.cli.train_transformer import build_config

    parser = build_parser()
    plain = build_config(
        parser.parse_args(["train", "transformer", "--data", "d", "--out", "o", "--preset", name])
    )
    assert plain == dataclasses.replace(preset(name, "d", "o"), progress=True)
    changed = build_config(
        parser.parse_args(
            [
                "train",
                "transformer",
                "--data",
                "d",
                "--out",
                "o",
                "--preset",
                name,
                "--heads",
                "2",
                "--lr",
                "1e-2",
            ]
        )
    )
    reference = preset(name, "d", "o")
    assert changed == dataclasses.replace(
        reference, lr=1e-2, model=dataclasses.replace(reference.model, n_heads=2), progress=True
    )


def test_autocast_follows_mixed_precision_on_a_gpu_and_is_off_on_a_cpu() -> None:
    from sound2image.training.transformer import _autocast_dtype

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert _autocast_dtype("bf16", cuda) == torch.bfloat16 and _autocast_dtype("fp16", cuda) == torch.float16
    assert _autocast_dtype("no", cuda) is None
    assert all(_autocast_dtype(mode, cpu) is None for mode in ("auto", "no", "bf16", "fp16"))


# --------------------------------------------------------------------------------------------------
# the best-of-N scorer's trainer (training/reranker.py)


def _scorer_pairs(count: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    audio = torch.randn(count, 6, 10, generator=generator)
    images = torch.randint(0, 256, (count, 8, 8), generator=generator, dtype=torch.uint8)
    return audio, images


def _scorer_weights(config: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
    from sound2image.training.reranker import train_reranker

    audio, images = _scorer_pairs()
    return train_reranker(audio, images, config, **kwargs).scorer.state_dict()


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[key], b[key]) for key in a)


SMALL_SCORER = dict(epochs=2, batch_size=4, embed_dim=8)


def test_scorer_training_neither_reads_nor_moves_the_global_random_stream() -> None:
    """The caller's global stream is untouched (state before == after), and the weights do not depend on
    it: two different global seeds give identical weights; the config's seed does change them."""
    from sound2image.training.reranker import RerankerTrainConfig

    config = RerankerTrainConfig(**SMALL_SCORER)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    first = _scorer_weights(config)
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.manual_seed(456)
    _ = torch.rand(17)  # and a stream already drawn from
    assert _same(_scorer_weights(config), first)
    assert not _same(_scorer_weights(dataclasses.replace(config, seed=43)), first)


def test_scorer_training_settings_drive_the_optimiser(monkeypatch: pytest.MonkeyPatch) -> None:
    """epochs × (pairs // batch) optimiser steps, each at the hand-computed warm-up + cosine rate from lr to
    min_lr, with weight_decay on the matrices; embed_dim sets the embedding width; seed the initial
    weights."""
    import sound2image.training.reranker as reranker_module
    from sound2image.training.reranker import RerankerTrainConfig

    steps: list[list[tuple[float, float]]] = []
    real = reranker_module.make_adamw

    def make_adamw(*args: Any, **kwargs: Any) -> torch.optim.AdamW:
        optimizer = real(*args, **kwargs)
        optimizer.register_step_pre_hook(
            lambda opt, *_: steps.append([(g["lr"], g["weight_decay"]) for g in opt.param_groups])
        )
        return optimizer

    monkeypatch.setattr(reranker_module, "make_adamw", make_adamw)
    initial: list[dict[str, torch.Tensor]] = []

    class Recorded(AudioImageScorer):
        def __init__(self, config: RerankerConfig) -> None:
            super().__init__(config)
            initial.append({k: v.clone() for k, v in self.state_dict().items()})

    monkeypatch.setattr(reranker_module, "AudioImageScorer", Recorded)
    config = RerankerTrainConfig(
        epochs=3, batch_size=5, lr=4e-3, min_lr=1e-4, warmup_steps=2, weight_decay=0.3, embed_dim=8, seed=43
    )
    audio, images = _scorer_pairs(12)
    result = reranker_module.train_reranker(audio, images, config)
    total = 3 * (12 // 5)  # the last partial batch of each epoch is dropped
    assert len(steps) == total and len(result.history) == 3
    for step, groups in enumerate(steps):
        warm = min(1.0, (step + 1) / 2)
        lr = warm * (1e-4 + 0.5 * (4e-3 - 1e-4) * (1 + math.cos(math.pi * step / total)))
        assert groups == [(pytest.approx(lr, rel=1e-12), 0.3), (pytest.approx(lr, rel=1e-12), 0.0)], step
    assert result.scorer.config.embed_dim == 8
    assert result.scorer.embed_images(images[:2]).shape == (2, 8)
    # seed 43: the scorer starts from the weights torch.manual_seed(43) gives its shape
    torch.manual_seed(43)
    reference = AudioImageScorer(dataclasses.replace(result.scorer.config)).state_dict()
    assert len(initial) == 1 and all(torch.equal(initial[0][k], v) for k, v in reference.items())


@pytest.mark.parametrize("shift", [{"image_shift": 2}, {"time_shift": 3}])
def test_scorer_augmentation_shifts_change_the_training(shift: dict[str, int]) -> None:
    """With both shifts 0 the batches are the pairs as given; each shift alone changes the weights."""
    from sound2image.training.reranker import RerankerTrainConfig

    none = RerankerTrainConfig(**SMALL_SCORER, image_shift=0, time_shift=0)
    assert not _same(_scorer_weights(dataclasses.replace(none, **shift)), _scorer_weights(none))


def test_scorer_feature_stats_standardise_its_audio() -> None:
    from sound2image.training.reranker import RerankerTrainConfig, train_reranker

    audio, images = _scorer_pairs()
    mean, std = torch.linspace(-1, 1, 10), torch.linspace(0.5, 2, 10)
    scorer = train_reranker(
        audio, images, RerankerTrainConfig(**SMALL_SCORER), feature_stats=(mean, std)
    ).scorer
    assert torch.equal(scorer.feature_mean, mean) and torch.equal(scorer.feature_std, std)
    with torch.no_grad():  # embed_audio standardises: identical to the audio tower on (x - mean) / std
        torch.testing.assert_close(scorer.embed_audio(audio), scorer.audio((audio - mean) / std))


@pytest.mark.filterwarnings("ignore:.*silent")  # tone5 is 4 kHz sampled at 8 kHz: zeros; any pair will do
def test_library_train_settings_grad_clip_max_pairs_split_seed_and_sample_grid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TransformerTrainConfig fields the CLI does not expose: grad_clip is the clipping norm of every step;
    max_pairs/split_seed choose the pairs and the split (split_pairs on the first 5 keys, seed 3);
    num_sample_images/sample: the grid has that many columns and its generated tile is what generate
    draws with that sampling config from the final model."""
    from sound2image.data import scan_pairs, split_pairs
    from sound2image.training.transformer import sample_indices, train_transformer
    from tests.transformer.test_training import tiny_run

    make_dataset(tmp_path, count=6)
    _relabel(tmp_path, 2)
    norms: list[float] = []
    real = torch.nn.utils.clip_grad_norm_

    def clip(parameters: Any, max_norm: float, *args: Any, **kwargs: Any) -> torch.Tensor:
        norms.append(max_norm)
        return real(parameters, max_norm, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    sample = SamplingConfig(temperature=0.0)
    config = tiny_run(
        tmp_path, tmp_path / "run", max_steps=2, eval_every=2, grad_clip=0.25, max_pairs=5,
        val_fraction=0.3, split_seed=3, num_sample_images=1, sample=sample,
    )  # fmt: skip
    result = train_transformer(config)
    assert norms == [0.25, 0.25]
    pairs = sorted(scan_pairs(str(tmp_path)).pairs, key=lambda p: p.key)[:5]
    expected = split_pairs(pairs, 0.3, 3)
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert split["counts"]["pairs"] == 5 and split["settings"]["seed"] == 3
    assert split["val"] == [p.key for p in expected.val] and len(expected.val) >= 2
    model = ImageTransformer.from_pretrained(result.model_dir)
    record = model.saved_metadata
    assert record["sampling"] == dataclasses.asdict(sample)
    index = sample_indices([p.label for p in expected.val], 1)
    assert len(index) == 1
    features = torch.from_numpy(compute_section_features(expected.val[index[0]].audio, FEATURES))[None]
    drawn = generate(model, features, sample).reshape(8, 8).numpy()
    grid = np.asarray(Image.open(tmp_path / "run" / "validation" / "step-0000002.png"))
    # make_grid: 16-pixel tiles (8×8 shown twice as large), padding 4, a 14-pixel label under each tile
    assert grid.shape[1] == 4 + 1 * (16 + 4)  # one column: num_sample_images=1
    tile = grid[4 + 16 + 14 + 4 :, 4 : 4 + 16, 0][:16]  # second row: the generated image
    assert np.array_equal(tile[::2, ::2], drawn)


def test_transformer_training_leaves_the_callers_random_stream_alone(tmp_path: Path) -> None:
    """The run is seeded by its config; the caller's global stream is neither reseeded nor advanced."""
    from sound2image.training.transformer import train_transformer
    from tests.transformer.test_training import tiny_run

    make_dataset(tmp_path, count=6)
    torch.manual_seed(12)
    before = torch.random.get_rng_state()
    train_transformer(tiny_run(tmp_path, tmp_path / "run", max_steps=1, eval_every=1))
    assert torch.equal(torch.random.get_rng_state(), before)
