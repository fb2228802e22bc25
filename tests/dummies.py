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


# ---------------------------------------------------------------------- SD 1.5 / SDXL with an IP-Adapter
#
# Built the way diffusers' own IP-Adapter tests build theirs (tests/models/unets/
# test_models_unet_2d_condition.py ``create_ip_adapter_state_dict``; tests/pipelines/test_pipelines_common.py
# ``IPAdapterTesterMixin``): random ``image_proj`` and ``ip_adapter`` state dicts with the shapes
# ``UNet2DConditionModel._load_ip_adapter_weights`` reads, here written to disk in h94/IP-Adapter's
# layout so the library's own loader (``load_ip_adapter``) is exercised too.

#: The U-Net cross-attention width of the tiny SDXL (two text encoders of 32 each, concatenated).
SDXL_CROSS_DIM = 64


def get_dummy_image_encoder() -> Any:
    """A tiny ``CLIPVisionModelWithProjection`` with the real 1,024-d ViT-H output (32×32 inputs)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(1)
    config = CLIPVisionConfig(
        hidden_size=32,
        projection_dim=EMBED_DIM,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        intermediate_size=37,
        patch_size=4,
    )
    return CLIPVisionModelWithProjection(config).eval()


def _text_encoder(with_projection: bool = False) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
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
        hidden_act="gelu",
    )
    torch.manual_seed(0)
    model = CLIPTextModelWithProjection(config) if with_projection else CLIPTextModel(config)
    return model.eval()


def _tiny_vae() -> Any:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        sample_size=32,
    ).eval()


def _scheduler(prediction_type: str = "epsilon") -> Any:
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        prediction_type=prediction_type,
        set_alpha_to_one=False,
        steps_offset=1,
        clip_sample=False,
    )


def get_dummy_sd15_components() -> dict[str, Any]:
    """Tiny ``StableDiffusionPipeline`` components (32×32 images), no safety checker, no image encoder."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64),
        attention_head_dim=(2, 4),
        cross_attention_dim=TEXT_DIM,
        layers_per_block=1,
        norm_num_groups=32,
    ).eval()
    return {
        "unet": unet,
        "scheduler": _scheduler(),
        "vae": _tiny_vae(),
        "text_encoder": _text_encoder(),
        "tokenizer": get_dummy_tokenizer(),
        "safety_checker": None,
        "feature_extractor": None,
        "image_encoder": None,
    }


def get_dummy_sdxl_components() -> dict[str, Any]:
    """Tiny ``StableDiffusionXLPipeline`` components (32×32 images; diffusers' SDXL test U-Net shape)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        # 6 micro-conditioning numbers × 8 + the pooled text embedding (32)
        projection_class_embeddings_input_dim=80,
        cross_attention_dim=SDXL_CROSS_DIM,
        norm_num_groups=1,
    ).eval()
    return {
        "unet": unet,
        "scheduler": _scheduler(),
        "vae": _tiny_vae(),
        "text_encoder": _text_encoder(),
        "text_encoder_2": _text_encoder(with_projection=True),
        "tokenizer": get_dummy_tokenizer(),
        "tokenizer_2": get_dummy_tokenizer(),
        "feature_extractor": None,
        "image_encoder": None,
    }


def get_dummy_ip_adapter_state_dict(unet: Any, image_embed_dim: int = EMBED_DIM, seed: int = 2) -> dict:
    """A random IP-Adapter state dict for ``unet`` in the original (h94) format.

    ``image_proj``: ``proj`` (Linear image_embed_dim -> 4 tokens × cross-attention width) and ``norm``
    (LayerNorm). ``ip_adapter``: ``{k}.to_k_ip.weight`` / ``{k}.to_v_ip.weight`` (hidden × cross width)
    for each cross-attention layer, k = 1, 3, 5, ... in ``unet.attn_processors`` order (the order
    ``_convert_ip_adapter_attn_to_diffusers`` reads them in).
    """
    generator = torch.Generator().manual_seed(seed)
    cross = int(unet.config.cross_attention_dim)
    channels = list(unet.config.block_out_channels)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * 0.1

    image_proj = {
        "proj.weight": rand(4 * cross, image_embed_dim),
        "proj.bias": rand(4 * cross),
        "norm.weight": 1 + rand(cross),
        "norm.bias": rand(cross),
    }
    ip_adapter, key = {}, 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        if name.startswith("mid_block"):
            hidden = channels[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(channels))[int(name[len("up_blocks.")])]
        else:
            hidden = channels[int(name[len("down_blocks.")])]
        ip_adapter[f"{key}.to_k_ip.weight"] = rand(hidden, cross)
        ip_adapter[f"{key}.to_v_ip.weight"] = rand(hidden, cross)
        key += 2
    return {"image_proj": image_proj, "ip_adapter": ip_adapter}


def write_dummy_ip_adapter(
    root: Any, unet: Any, weight_file: str, image_embed_dim: int = EMBED_DIM, with_encoder: bool = True
) -> Any:
    """Write a tiny IP-Adapter in ``h94/IP-Adapter``'s layout under ``root``: ``weight_file`` (a torch
    ``.bin`` of ``{"image_proj", "ip_adapter"}``) and the tiny ViT-H stand-in ``models/image_encoder``.
    Returns ``root``."""
    from pathlib import Path

    root = Path(root)
    target = root / weight_file
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(get_dummy_ip_adapter_state_dict(unet, image_embed_dim), target)
    if with_encoder:
        get_dummy_image_encoder().save_pretrained(root / "models" / "image_encoder")
    return root
