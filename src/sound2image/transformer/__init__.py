"""The audio-conditioned Image Transformer (model, sampling; the runner and record: `transformer.runner`)."""

from sound2image.transformer.model import ImageTransformer, ImageTransformerConfig
from sound2image.transformer.sampling import SamplingConfig, generate, tokens_to_images

__all__ = ["ImageTransformer", "ImageTransformerConfig", "SamplingConfig", "generate", "tokens_to_images"]
