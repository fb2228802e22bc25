"""Training step time with the cache vs recomputing VAE latents and audio embeddings every step (CPU).

Run by hand: ``python bench/bench_train_cache.py [--rounds 3] [--steps 3] [--batch-size 4]``.
Prints samples/s of both ways and their ratio, measured in the same run, interleaved (cached round,
uncached round, cached round, ...) so that load changes on a shared machine hit both alike.

Models (random weights, built from configs; CPU-sized stand-ins for the real ones):
* U-Net: block_out_channels (64, 128, 128), class-embedding projection of 2 x 1,024 (SD 2.1 unCLIP
  layout), cross-attention 1,024, 256x256 images -> 32x32 latents;
* VAE: the SD VAE's architecture (4 levels, x8 downsampling) at half width (64, 128, 256, 256);
* ImageBind audio: 6 blocks of width 384 (half the huge model's depth and width), 3 clips of 2 s.
Data: 16 real pseudo-ADVANCE pairs (512x512 JPEG + 10 s WAV), read from ../shared/data.

The uncached step does what the public reference code did every step: decode the images, resize,
encode with the VAE, load and embed the audio, then the same U-Net step.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.dummies import get_dummy_unclip_components  # noqa: E402
from tests.paths import PSEUDO_ADVANCE  # noqa: E402

from sound2image.data import Pair  # noqa: E402
from sound2image.training.cache import (  # noqa: E402
    AudioSettings,
    CachePass,
    LatentSettings,
    encode_latents,
    image_to_tensor,
    module_fingerprint,
)
from sound2image.training.objective import ObjectiveConfig, SounDiffObjective  # noqa: E402

RESOLUTION = 256


def build(seed: int = 0) -> tuple[object, object]:
    """A mid-size unCLIP pipeline and a mid-size ImageBind audio encoder (random weights)."""
    from diffusers import AutoencoderKL, StableUnCLIPImg2ImgPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from sound2image.encoders import ImageBindAudioConfig, ImageBindAudioEncoder

    parts = get_dummy_unclip_components()  # tokenizer, schedulers, normalizer, image encoder
    torch.manual_seed(seed)
    parts["text_encoder"] = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=1024, intermediate_size=64,
            num_attention_heads=8, num_hidden_layers=1, vocab_size=1000,
        )
    ).eval()  # fmt: skip
    parts["unet"] = UNet2DConditionModel(
        sample_size=RESOLUTION // 8,
        block_out_channels=(64, 128, 128),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=8,
        class_embed_type="projection",
        projection_class_embeddings_input_dim=2048,
        cross_attention_dim=1024,
        layers_per_block=1,
        use_linear_projection=True,
    )
    parts["vae"] = AutoencoderKL(
        block_out_channels=(64, 128, 256, 256),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=2,
        sample_size=RESOLUTION,
    ).eval()
    pipe = StableUnCLIPImg2ImgPipeline(**parts)
    config = ImageBindAudioConfig(embed_dim=384, num_blocks=6, num_heads=6, out_embed_dim=1024)
    return pipe, ImageBindAudioEncoder(config).eval()


def real_pairs(count: int) -> list[Pair]:
    pairs = []
    for scene in sorted(p.name for p in (PSEUDO_ADVANCE / "sound").iterdir()):
        for audio in sorted((PSEUDO_ADVANCE / "sound" / scene).glob("*.wav"))[:3]:
            image = PSEUDO_ADVANCE / "vision" / scene / f"{audio.stem}.jpg"
            pairs.append(Pair(audio=audio, image=image, label=scene, key=audio.stem, group=audio.stem))
    return pairs[:count]


def unet_step(objective, unet, optimizer, mean, std, embeds, prompt, empty, generator) -> float:
    draw = objective.draw(mean.shape[0], tuple(mean.shape[1:]), embeds.shape[1], generator)
    loss = objective.loss(unet, mean, std, embeds, prompt, empty, draw).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="steps per round and way")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: stable numbers on a shared, loaded machine)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    load_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    pipe, encoder = build()
    pairs = real_pairs(args.pairs)
    unet = pipe.unet.train()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-6, betas=(0.9, 0.999), weight_decay=0.01)
    objective = SounDiffObjective(pipe, ObjectiveConfig())
    prompt, empty = objective.encode_prompt("", "cpu"), objective.encode_prompt("", "cpu")
    calibrate = 20.0

    with tempfile.TemporaryDirectory(prefix="bench-train-cache-") as tmp:
        started = time.perf_counter()
        cache = CachePass(
            cache_root=Path(tmp),
            vae=pipe.vae,
            embed=lambda paths: encoder.embed([str(p) for p in paths]),
            latent_settings=LatentSettings(resolution=RESOLUTION, vae=module_fingerprint(pipe.vae)),
            audio_settings=AudioSettings(encoder=module_fingerprint(encoder, encoder.config)),
        )
        cached = cache.run(pairs)
        cache_seconds = time.perf_counter() - started

    def cached_step(index: torch.Tensor, generator: torch.Generator) -> float:
        embeds = torch.nn.functional.normalize(cached.audio_embeds[index], dim=-1) * calibrate
        mean, std = cached.latent_mean[index], cached.latent_std[index]
        return unet_step(objective, unet, optimizer, mean, std, embeds, prompt, empty, generator)

    def uncached_step(index: torch.Tensor, generator: torch.Generator) -> float:
        batch = [pairs[i] for i in index.tolist()]
        pixels = torch.stack([image_to_tensor(p.image, RESOLUTION) for p in batch])  # (B, 3, R, R)
        latents = encode_latents(pipe.vae, pixels, flip=False)
        raw = encoder.embed([str(p.audio) for p in batch])
        embeds = torch.nn.functional.normalize(raw, dim=-1) * calibrate
        return unet_step(
            objective, unet, optimizer, latents["mean"], latents["std"], embeds, prompt, empty, generator
        )

    # Both ways train the same U-Net state from the same start each round, so neither gets easier inputs.
    start_state = copy.deepcopy(unet.state_dict())
    start_optim = copy.deepcopy(optimizer.state_dict())
    rates: dict[str, list[float]] = {"cached": [], "uncached": []}
    for round_index in range(args.rounds):
        for name, step in (("cached", cached_step), ("uncached", uncached_step)):
            unet.load_state_dict(start_state)
            optimizer.load_state_dict(start_optim)
            order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(round_index))
            generator = torch.Generator().manual_seed(round_index)
            step(order[: args.batch_size], generator)  # warm-up step, not timed
            began = time.perf_counter()
            for k in range(args.steps):
                index = order[(k * args.batch_size) % len(pairs) :][: args.batch_size]
                step(index, generator)
            rates[name].append(args.steps * args.batch_size / (time.perf_counter() - began))

    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    cached_rate, uncached_rate = statistics.median(rates["cached"]), statistics.median(rates["uncached"])
    print(f"bench_train_cache  {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}")
    print(f"uptime before: {load_before}")
    print(f"uptime after:  {load}")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpus {os.cpu_count()}")
    print(
        f"U-Net (64,128,128) {sum(p.numel() for p in unet.parameters()) / 1e6:.1f}M params, "
        f"VAE {sum(p.numel() for p in pipe.vae.parameters()) / 1e6:.1f}M, "
        f"ImageBind-audio {sum(p.numel() for p in encoder.parameters()) / 1e6:.1f}M; "
        f"{RESOLUTION}x{RESOLUTION}, batch {args.batch_size}, {len(pairs)} real pairs"
    )
    print(
        f"one-off cache pass: {cache_seconds:.1f} s for {len(pairs)} pairs (latents + mirror latents + audio)"
    )
    print(f"rounds: {args.rounds} x {args.steps} timed steps per way, interleaved; samples/s per round:")
    for name in rates:
        print(f"  {name:9s} " + "  ".join(f"{rate:6.2f}" for rate in rates[name]))
    print(f"median samples/s: cached {cached_rate:.2f}, recomputed every step {uncached_rate:.2f}")
    print(f"speed-up with the cache: {cached_rate / uncached_rate:.2f}x (goal >= 2x)")


if __name__ == "__main__":
    main()
