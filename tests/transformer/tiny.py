"""Tiny Image Transformer configurations for fast tests (built from configs, random weights)."""

from __future__ import annotations

import torch

from sound2image.transformer import ImageTransformer, ImageTransformerConfig


def tiny_config(**overrides: object) -> ImageTransformerConfig:
    values = dict(
        image_size=8,
        audio_sections=6,
        audio_bins=10,
        d_model=32,
        n_encoder_layers=1,
        n_decoder_layers=2,
        n_heads=4,
        mlp_ratio=2,
        dropout=0.0,
        query_block=8,
        memory_length=8,
        cond_dropout=0.0,
    )
    values.update(overrides)
    return ImageTransformerConfig(**values)


def tiny_model(seed: int = 0, **overrides: object) -> ImageTransformer:
    torch.manual_seed(seed)
    return ImageTransformer(tiny_config(**overrides)).eval()
