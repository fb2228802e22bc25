"""Best-of-N sampling: draw several images per sound, keep the one a learned audio-image scorer likes best.

An autoregressive sampler commits to a shape in its first rows and cannot take it back; a 32×32 digit
model that draws the spoken digit 60 % of the time draws it at least once in 4 tries ~90 % of the time.
DALL-E reranked its samples with CLIP for the same reason. Our scorer is a small CLIP trained on the
same audio/image pairs as the transformer, with the symmetric InfoNCE loss and, by default, **no labels**:
what a recording and its image share (on av-digits, the digit) is all it can learn to match. When the
manifest labels every pair, ``RerankerTrainConfig.label_positives`` (``train transformer --scorer-labels``)
counts every same-label pair in a batch as a match (:mod:`sound2image.training.reranker`).

- :class:`AudioImageScorer`: audio tower (B, S, F) FFT sections -> unit vector (B, E); image tower
  (B, H, W) uint8 grayscale -> unit vector (B, E); score = cosine similarity.
- :func:`generate_best_of`: ``candidates`` draws per row (candidate 0 is exactly what :func:`generate`
  draws with the row's seed), scored, best kept.
- :func:`score_candidates`: the scoring step alone, for draws already made.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sound2image.modules.towers import AudioTower, ImageTower
from sound2image.persistence import (
    CONFIG_NAME,
    config_from_dict,
    load_model_dir,
    read_model_config,
    save_model_dir,
)
from sound2image.seeds import candidate_seed  # re-exported: it lived here before sound2image.seeds
from sound2image.transformer.model import ImageTransformer
from sound2image.transformer.sampling import SamplingConfig, generate
from sound2image.validation import check_int

FORMAT = "sound2image-audio-image-scorer"
WHAT = "audio-image scorer"
#: Where a trained Image Transformer directory keeps its scorer.
RERANKER_DIR = "reranker"


@dataclass
class RerankerConfig:
    """Scorer shape. ``audio_sections``/``audio_bins``/``image_size`` must match the transformer's."""

    audio_sections: int = 500
    audio_bins: int = 220
    image_size: int = 32
    embed_dim: int = 64
    audio_channels: int = 128
    image_width: int = 32

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RerankerConfig:
        """Build from a stored dict, refusing unknown keys (see :mod:`sound2image.persistence`)."""
        return config_from_dict(cls, values, "audio-image scorer config")


class AudioImageScorer(nn.Module):
    """A small CLIP for one dataset: how well does an image go with a sound (cosine, -1..1)."""

    def __init__(self, config: RerankerConfig) -> None:
        super().__init__()
        self.config = config
        #: The whole config.json when loaded with from_pretrained (extra keys included), else empty.
        self.saved_metadata: dict[str, Any] = {}
        # The training set's per-bin feature statistics (identity until the trainer sets them).
        self.register_buffer("feature_mean", torch.zeros(config.audio_bins))
        self.register_buffer("feature_std", torch.ones(config.audio_bins))
        self.audio = AudioTower(config.audio_bins, config.audio_channels, config.embed_dim)
        self.image = ImageTower(config.image_width, config.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))  # CLIP's learned temperature

    def embed_audio(self, features: torch.Tensor) -> torch.Tensor:
        """(B, S, F) raw FFT-section features -> (B, E) unit vectors."""
        if features.shape[-1] != self.config.audio_bins:
            raise ValueError(
                f"audio features with {features.shape[-1]} bins, expected {self.config.audio_bins}"
            )
        return self.audio((features - self.feature_mean) / self.feature_std)

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, H, W) uint8 (or (B, H·W) pixel tokens) -> (B, E) unit vectors."""
        size = self.config.image_size
        x = images.reshape(-1, 1, size, size).float() / 255.0
        return self.image(x)

    def forward(self, features: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """(B, B) logits: row i scores sound i against every image (CLIP's training view)."""
        scale = self.logit_scale.exp().clamp(max=100.0)
        return scale * self.embed_audio(features) @ self.embed_images(images).T

    @torch.no_grad()
    def score(self, features: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of each sound with its own image: (B,) for (B, S, F) and (B, H, W)."""
        self.eval()
        return (self.embed_audio(features) * self.embed_images(images)).sum(dim=-1)

    # --- persistence ------------------------------------------------------------------------------

    def save_pretrained(self, directory: str | os.PathLike[str], extra: dict[str, Any] | None = None) -> Path:
        """Write ``config.json`` (shape + ``extra``, e.g. training history) and ``model.safetensors``
        (see :mod:`sound2image.persistence`)."""
        return save_model_dir(directory, self, self.config, FORMAT, extra)

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike[str], map_location: str | torch.device = "cpu"
    ) -> AudioImageScorer:
        """Load a saved scorer in eval mode; the whole config.json is its ``saved_metadata``.

        Raises:
            WeightsError: one line naming the file and the problem (see :mod:`sound2image.persistence`).
        """
        source = str(Path(directory) / CONFIG_NAME)
        model = load_model_dir(
            directory, FORMAT, lambda values: cls(config_from_dict(RerankerConfig, values, source)), WHAT
        )
        return model.to(map_location).eval()


def read_scorer_record(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """A saved scorer's ``config.json`` (shape, training settings and history), without its weights."""
    return read_model_config(directory, FORMAT, WHAT)


@dataclass
class BestOf:
    """What :func:`generate_best_of` returns: the kept tokens (B, L), which candidate each row kept (B,),
    every candidate's score (B, N) and every candidate's tokens (B, N, L)."""

    tokens: torch.Tensor
    chosen: torch.Tensor
    scores: torch.Tensor
    drawn: torch.Tensor


@torch.no_grad()
def generate_best_of(
    model: ImageTransformer,
    scorer: AudioImageScorer,
    audio_features: torch.Tensor,
    config: SamplingConfig | None = None,
    candidates: int = 4,
    *,
    seeds: Sequence[int] | None = None,
    progress: bool = False,
) -> BestOf:
    """``candidates`` images per row of ``audio_features`` (B, S, F); keep the best-scoring one.

    Candidate ``k`` of a row seeded ``s`` is drawn from ``torch.Generator().manual_seed(candidate_seed(s,
    k))``, so a row's result depends only on its own seed and the number of candidates. ``seeds``
    defaults to ``config.seed`` for every row. All B · N draws run as one batch.
    """
    config = config or SamplingConfig()
    candidates = check_int("candidates", candidates, minimum=1)
    batch = audio_features.shape[0]
    seeds = list(seeds) if seeds is not None else [config.seed] * batch
    if len(seeds) != batch:
        raise ValueError(f"{len(seeds)} seeds for a batch of {batch}")
    # Row order: candidate-major, (N · B): rows k·B .. k·B + B - 1 are candidate k of every sound.
    repeated = audio_features.repeat(candidates, 1, 1)
    generators = [
        torch.Generator().manual_seed(candidate_seed(s, k)) for k in range(candidates) for s in seeds
    ]
    tokens = generate(model, repeated, config, generator=generators, progress=progress)  # (N·B, L)
    drawn = tokens.view(candidates, batch, -1).transpose(0, 1)  # (B, N, L)
    scores = score_candidates(scorer, audio_features, drawn)  # (B, N)
    chosen = scores.argmax(dim=1)  # (B,)
    kept = drawn[torch.arange(batch), chosen]  # (B, L)
    return BestOf(tokens=kept, chosen=chosen, scores=scores, drawn=drawn)


@torch.no_grad()
def score_candidates(
    scorer: AudioImageScorer, audio_features: torch.Tensor, drawn: torch.Tensor
) -> torch.Tensor:
    """How well each of N candidate images goes with its row's sound: (B, N) cosine scores on the CPU.

    ``audio_features`` (B, S, F); ``drawn`` (B, N, L) pixel tokens (or (B, N, H, W) uint8 images). The
    scoring runs on the scorer's device as one batch of B · N pairs. The ranking step of
    :func:`generate_best_of`, separate so that saved draws can be ranked again, e.g. by another scorer.

    Raises:
        ValueError: ``audio_features`` and ``drawn`` have different numbers of rows.
    """
    batch, candidates = drawn.shape[:2]
    if audio_features.shape[0] != batch:
        raise ValueError(f"{audio_features.shape[0]} sounds for {batch} rows of candidates")
    device = next(scorer.parameters()).device
    # Candidate-major (N · B) rows, as generate_best_of draws them.
    repeated = audio_features.repeat(candidates, 1, 1).to(device)
    images = drawn.transpose(0, 1).flatten(0, 1).to(device)
    return scorer.score(repeated, images).view(candidates, batch).T.cpu().contiguous()
