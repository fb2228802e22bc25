"""Tiny random-weight pipelines built from configs, offline, for fast tests.

Adapted from diffusers' ``tests/pipelines/stable_unclip/test_stable_unclip_img2img.py``
(``get_dummy_components``), with three changes: the image-embedding width is the real 1,024 of
SD 2.1 unCLIP H / ImageBind-huge, the tokenizer is built from an in-memory vocabulary (the hub is not
reachable), and the VAE has two blocks so latents are 16×16 at a 32×32 output (faster).
Every component is built after ``torch.manual_seed(0)`` so two calls give identical weights.
"""

from __future__ import annotations

from typing import Any

import torch

#: The real embedding width of ImageBind-huge and of SD 2.1 unCLIP H's class-label input (one half).
EMBED_DIM = 1024
#: Text hidden size of the tiny text encoder (= the U-Net's cross-attention width).
TEXT_DIM = 32


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character map (same table the real tokenizer uses)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


def get_dummy_tokenizer() -> Any:
    """A ``CLIPTokenizer`` over single byte-characters (plus a few merges), built without the hub.

    Ids: 0 = ``<|startoftext|>``, 1 = ``<|endoftext|>`` (also padding); the vocabulary stays below the
    tiny text encoder's ``vocab_size`` of 1,000.
    """
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in _bytes_to_unicode().values():
        vocab.setdefault(char, len(vocab))
        vocab.setdefault(char + "</w>", len(vocab))
    merges = ["t h", "th e</w>", "a n", "i n", "e r</w>"]
    for merge in merges:
        vocab.setdefault(merge.replace(" ", ""), len(vocab))
    pairs = [tuple(merge.split(" ")) for merge in merges]
    return CLIPTokenizer(vocab=vocab, merges=pairs, model_max_length=77)


def get_dummy_unclip_components() -> dict[str, Any]:
    """Tiny ``StableUnCLIPImg2ImgPipeline`` components (32×32 images, 1,024-d image embeddings)."""
    from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import (
        StableUnCLIPImageNormalizer,
    )
    from transformers import (
        CLIPImageProcessor,
        CLIPTextConfig,
        CLIPTextModel,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    feature_extractor = CLIPImageProcessor(crop_size=32, size=32)

    torch.manual_seed(0)
    image_encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32,
            projection_dim=EMBED_DIM,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            intermediate_size=37,
            patch_size=4,
        )
    )

    torch.manual_seed(0)
    image_normalizer = StableUnCLIPImageNormalizer(embedding_dim=EMBED_DIM)
    image_noising_scheduler = DDPMScheduler(beta_schedule="squaredcos_cap_v2")

    tokenizer = get_dummy_tokenizer()

    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            hidden_size=TEXT_DIM,
            projection_dim=32,
            intermediate_size=37,
            layer_norm_eps=1e-05,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=1000,
        )
    )

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64),
        attention_head_dim=(2, 4),
        class_embed_type="projection",
        # The class label is the (noised) image embedding concatenated with a sinusoidal embedding of the
        # noise level, both EMBED_DIM wide.
        projection_class_embeddings_input_dim=EMBED_DIM * 2,
        cross_attention_dim=TEXT_DIM,
        layers_per_block=1,
        upcast_attention=True,
        use_linear_projection=True,
    )

    torch.manual_seed(0)
    scheduler = DDIMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        prediction_type="v_prediction",
        set_alpha_to_one=False,
        steps_offset=1,
    )

    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        sample_size=32,
    )

    return {
        "feature_extractor": feature_extractor,
        "image_encoder": image_encoder.eval(),
        "image_normalizer": image_normalizer.eval(),
        "image_noising_scheduler": image_noising_scheduler,
        "tokenizer": tokenizer,
        "text_encoder": text_encoder.eval(),
        "unet": unet.eval(),
        "scheduler": scheduler,
        "vae": vae.eval(),
    }


def get_dummy_unclip_pipeline() -> Any:
    """The plain diffusers ``StableUnCLIPImg2ImgPipeline`` over :func:`get_dummy_unclip_components`."""
    from diffusers import StableUnCLIPImg2ImgPipeline

    pipe = StableUnCLIPImg2ImgPipeline(**get_dummy_unclip_components())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def get_dummy_audio_encoder() -> Any:
    """A tiny random ImageBind audio encoder with the real 1,024-d output."""
    from sound2image.encoders import ImageBindAudioConfig, ImageBindAudioEncoder

    torch.manual_seed(0)
    config = ImageBindAudioConfig(embed_dim=32, num_blocks=1, num_heads=2, out_embed_dim=EMBED_DIM)
    return ImageBindAudioEncoder(config).eval()


def get_dummy_soundiff_pipeline(calibration: Any = None) -> Any:
    """A ``SounDiffPipeline`` over the tiny unCLIP components and the tiny audio encoder."""
    from sound2image.diffusion import PipelineInfo, SounDiffPipeline

    return SounDiffPipeline(
        unclip=get_dummy_unclip_pipeline(),
        audio_encoder=get_dummy_audio_encoder(),
        calibration=calibration,
        info=PipelineInfo(model="tests/dummies:tiny-random", audio_encoder="tests/dummies:tiny-random"),
    )
