"""The audio-conditioned Image Transformer (model and sampling)."""

from sound2image.transformer.model import ImageTransformer, ImageTransformerConfig
from sound2image.transformer.sampling import SamplingConfig, generate, tokens_to_images

__all__ = ["ImageTransformer", "ImageTransformerConfig", "SamplingConfig", "generate", "tokens_to_images"]
