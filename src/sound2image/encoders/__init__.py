"""Audio encoders: ImageBind's audio branch (our own implementation, loading the official weights)."""

from sound2image.encoders.imagebind import (
    ImageBindAudioConfig,
    ImageBindAudioEncoder,
    load_embeddings,
    save_embeddings,
)

__all__ = ["ImageBindAudioConfig", "ImageBindAudioEncoder", "load_embeddings", "save_embeddings"]
