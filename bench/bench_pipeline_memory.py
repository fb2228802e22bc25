"""Peak GPU memory and speed of SounDiff at 768×768, with and without the low-memory options.

No weights are needed: the components are built with random weights from the published configs of
``stabilityai/stable-diffusion-2-1-unclip`` (U-Net, VAE, OpenCLIP-H text and ViT-H/14 image towers)
plus a full-size ImageBind-huge audio branch, so memory and time are those of the real model. The
question it answers: does 768×768 fit an 8 GB GPU with ``--cpu-offload --attention-slicing
--vae-tiling``? It also checks, on the tiny test pipeline, that our CUDA fp16 output equals the plain
diffusers output for the same embedding and seed.

    python bench/bench_pipeline_memory.py [--steps 5] [--size 768] [--dtype fp16]
    python bench/bench_pipeline_memory.py --tiny          # CPU smoke test of this script (no GPU)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

GIB = 1024**3


def sd21_unclip_h_components(tiny: bool) -> dict[str, Any]:
    """Random-weight components with the real model's architecture (``tiny``: small stand-ins)."""
    from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import (
        StableUnCLIPImageNormalizer,
    )
    from tests.dummies import get_dummy_tokenizer
    from transformers import (
        CLIPImageProcessor,
        CLIPTextConfig,
        CLIPTextModel,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    if tiny:
        from tests.dummies import get_dummy_unclip_components

        return get_dummy_unclip_components()
    # Configs as published in the model repository's */config.json (SD 2.1 unCLIP, the "H" variant).
    unet = UNet2DConditionModel(
        sample_size=96,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        attention_head_dim=(5, 10, 20, 20),
        cross_attention_dim=1024,
        use_linear_projection=True,
        upcast_attention=True,
        class_embed_type="projection",
        projection_class_embeddings_input_dim=2048,
    )
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
        sample_size=768,
    )
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=23,
            num_attention_heads=16,
            projection_dim=512,
            hidden_act="gelu",
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    image = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=1280,
            intermediate_size=5120,
            num_hidden_layers=32,
            num_attention_heads=16,
            patch_size=14,
            image_size=224,
            projection_dim=1024,
            hidden_act="gelu",
        )
    )
    return {
        "feature_extractor": CLIPImageProcessor(crop_size=224, size=224),
        "image_encoder": image.eval(),
        "image_normalizer": StableUnCLIPImageNormalizer(embedding_dim=1024).eval(),
        "image_noising_scheduler": DDPMScheduler(beta_schedule="squaredcos_cap_v2"),
        "tokenizer": get_dummy_tokenizer(),
        "text_encoder": text.eval(),
        "unet": unet.eval(),
        "scheduler": DDIMScheduler(
            beta_schedule="scaled_linear",
            beta_start=0.00085,
            beta_end=0.012,
            prediction_type="v_prediction",
            set_alpha_to_one=False,
            steps_offset=1,
            clip_sample=False,
        ),
        "vae": vae.eval(),
    }


def build(tiny: bool, build_device: str, dtype: torch.dtype) -> Any:
    """The SounDiff pipeline, built on ``build_device`` (fast random init on the GPU), cast, left on CPU."""
    from diffusers import StableUnCLIPImg2ImgPipeline

    from sound2image.diffusion import SounDiffPipeline
    from sound2image.encoders import ImageBindAudioConfig, ImageBindAudioEncoder

    torch.manual_seed(0)
    with torch.device(build_device):
        components = sd21_unclip_h_components(tiny)
        config = (
            ImageBindAudioConfig(embed_dim=32, num_blocks=1, num_heads=2) if tiny else ImageBindAudioConfig()
        )
        encoder = ImageBindAudioEncoder(config).eval()
    unclip = StableUnCLIPImg2ImgPipeline(**components).to("cpu", dtype)
    return SounDiffPipeline(unclip, encoder.to("cpu"))


def measure(pipe: Any, device: str, audio: Any, size: int, steps: int) -> tuple[float, float, float]:
    """(seconds, peak allocated GiB, peak reserved GiB) of one audio -> image call."""
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    image = pipe(audio, seed=0, num_inference_steps=steps, height=size, width=size).images[0]
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    assert image.size == (size, size)
    if not cuda:
        return seconds, float("nan"), float("nan")
    return seconds, torch.cuda.max_memory_allocated() / GIB, torch.cuda.max_memory_reserved() / GIB


def check_tiny_matches_diffusers(device: str, dtype: torch.dtype) -> bool:
    """Our output on ``device``/``dtype`` equals plain diffusers for the same embedding and seed."""
    from tests.dummies import get_dummy_unclip_pipeline

    from sound2image.diffusion import SounDiffPipeline

    ours = SounDiffPipeline(get_dummy_unclip_pipeline()).to(device, dtype)
    plain = get_dummy_unclip_pipeline().to(device, dtype)
    embeds = torch.randn(1, 1024, generator=torch.Generator().manual_seed(1)) * 20
    mine = ours(image_embeds=embeds, seed=3, num_inference_steps=4, output_type="np").images
    generator = torch.Generator("cpu").manual_seed(3)
    theirs = plain(
        image_embeds=embeds.to(device, dtype), generator=generator, num_inference_steps=4, output_type="np"
    ).images
    return bool(np.array_equal(mine, theirs))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--size", type=int, default=768)
    parser.add_argument("--dtype", choices=("fp16", "bf16", "fp32"), default="fp16")
    parser.add_argument("--tiny", action="store_true", help="tiny stand-in model on CPU (checks the script)")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.dummies
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()
    device = "cpu" if args.tiny else "cuda"
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    if args.tiny:
        dtype, args.size = torch.float32, 32
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(f"device {name}, torch {torch.__version__}, {dtype}, {args.size}x{args.size}, {args.steps} steps")
    for check_dtype in (torch.float32, dtype):
        same = check_tiny_matches_diffusers(device, check_dtype)
        print(f"tiny pipeline on {device} {check_dtype}: ours == diffusers: {same}")

    start = time.perf_counter()
    pipe = build(args.tiny, device, dtype)
    params = sum(p.numel() for p in pipe.unclip.components["unet"].parameters())
    seconds = time.perf_counter() - start
    print(f"built random SD 2.1 unCLIP H + ImageBind-huge audio: {seconds:.1f} s (U-Net {params / 1e6:.0f}M)")
    rng = np.random.default_rng(0)
    audio = ((rng.standard_normal(160000) * 0.1).astype(np.float32), 16000)  # 10 s of noise at 16 kHz

    print(f"{'mode':<48} {'seconds':>8} {'peak alloc GiB':>15} {'peak reserved GiB':>18}")
    pipe.to(device)
    measure(pipe, device, audio, args.size, 1)  # warm-up (kernels, allocator)
    rows = [("all on GPU", measure(pipe, device, audio, args.size, args.steps))]
    pipe.enable_low_memory(attention_slicing=True, vae_tiling=True)
    rows.append(
        ("all on GPU + attention slicing + VAE tiling", measure(pipe, device, audio, args.size, args.steps))
    )
    if device == "cuda":
        pipe.to("cpu")
        pipe.audio_encoder.to(device)
        pipe.enable_low_memory(cpu_offload=True)
        label = "cpu offload + attention slicing + VAE tiling"
        rows.append((label, measure(pipe, device, audio, args.size, args.steps)))
    for label, (seconds, alloc, reserved) in rows:
        print(f"{label:<48} {seconds:>8.2f} {alloc:>15.2f} {reserved:>18.2f}")
    if device == "cuda":
        fits = rows[-1][1][2] < 8 - 0.6  # leave room for the CUDA context (~0.5 GiB) on an 8 GB card
        print(
            f"fits an 8 GB GPU with the low-memory options (peak reserved + 0.6 GiB context < 8 GiB): {fits}"
        )


if __name__ == "__main__":
    main()
