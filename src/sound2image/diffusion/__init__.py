"""SounDiff generation: ImageBind audio embeddings conditioning SD 2.1 unCLIP (or, through a ViT-H
IP-Adapter, SD 1.5 and SDXL: the backbones of :mod:`sound2image.diffusion.backbones`).

``SounDiffPipeline`` (the pipeline), ``EmbeddingCalibration`` (the stored embedding scale), the
conditioning helpers (mixing audio, weights and a reference image), storyboards for long audio, and
``GenerationRecord`` (every image's provenance) with ``regenerate`` (the same pixels again from it).
Importing this package is cheap: torch and diffusers load when a pipeline is built.
"""

from sound2image.diffusion.backbones import (
    BACKBONES,
    Backbone,
    IPAdapterBackbone,
    SD15IPBackbone,
    SDXLIPBackbone,
    UnCLIPBackbone,
)
from sound2image.diffusion.calibration import CALIBRATION_FILE, EmbeddingCalibration, blend, normalize
from sound2image.diffusion.conditioning import encode_images, measure_calibration, mix_embeddings
from sound2image.diffusion.loading import DEFAULT_AUDIO_ENCODER, DEFAULT_UNCLIP, UNCLIP_ENV
from sound2image.diffusion.pipeline import (
    SCHEDULERS,
    PipelineInfo,
    SounDiffOutput,
    SounDiffPipeline,
    load_calibration,
    regenerate,
)
from sound2image.diffusion.record import (
    GenerationRecord,
    GenerationSettings,
    describe_file,
    load_reference_image,
)
from sound2image.diffusion.runner import Drawn, iter_images

__all__ = [
    "BACKBONES",
    "Backbone",
    "IPAdapterBackbone",
    "SD15IPBackbone",
    "SDXLIPBackbone",
    "UnCLIPBackbone",
    "CALIBRATION_FILE",
    "DEFAULT_AUDIO_ENCODER",
    "DEFAULT_UNCLIP",
    "SCHEDULERS",
    "UNCLIP_ENV",
    "Drawn",
    "EmbeddingCalibration",
    "GenerationRecord",
    "GenerationSettings",
    "PipelineInfo",
    "SounDiffOutput",
    "SounDiffPipeline",
    "blend",
    "describe_file",
    "encode_images",
    "iter_images",
    "load_calibration",
    "load_reference_image",
    "measure_calibration",
    "mix_embeddings",
    "normalize",
    "regenerate",
]
