"""Every `train soundiff` setting checked where it takes effect (issue #11 F), not where it is recorded.

The core check replays a short run by hand: the split from the data library, the data order and noise
from the documented seeds, the objective with the *test's* settings (never the config's), the Min-SNR
weights from the published formula, ``torch.optim.AdamW`` with the test's betas/eps/weight decay and
learning-rate schedule, ``clip_grad_norm_`` and diffusers' EMA formula; the trained (exported) weights and
the logged losses must equal the replay. A setting the trainer ignored changes its weights, not the
replay's. Settings without a numeric trace are checked by the state they must produce (bf16 autocast,
gradient checkpointing, LoRA adapters, the 8-bit optimizer, the cache dtype, TensorBoard's scalars).
"""

from __future__ import annotations

import copy
import json
import math
import re
import sys
import types
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sound2image.data import scan_pairs, split_pairs
from sound2image.diffusion.calibration import EmbeddingCalibration
from sound2image.training import soundiff as sd
from sound2image.training.objective import ObjectiveConfig, SounDiffObjective
from sound2image.training.soundiff import SATELLITE_PROMPT, SounDiffTrainConfig, train
from tests.paths import PSEUDO_ADVANCE

pytestmark = pytest.mark.numeric
RESOLUTION = 16  # latents 8 x 8 (the tiny VAE halves the size)


def hand_snr_weights(timesteps: torch.Tensor, gamma: float | None, v_prediction: bool = True) -> torch.Tensor:
    """Min-SNR-gamma weights (Hang et al. 2023, eq. in diffusers' train_text_to_image.py), float64 by hand.

    SNR(t) = alpha_bar_t / (1 - alpha_bar_t) of SD's "scaled_linear" schedule (betas from sqrt(0.00085)
    to sqrt(0.012), squared, 1000 steps); the weight is min(SNR, gamma) / SNR for epsilon and
    min(SNR, gamma) / (SNR + 1) for v-prediction.
    """
    if gamma is None:
        return torch.ones(timesteps.shape[0])
    betas = np.linspace(math.sqrt(0.00085), math.sqrt(0.012), 1000, dtype=np.float64) ** 2
    alpha_bar = np.cumprod(1.0 - betas)[timesteps.numpy()]
    snr = alpha_bar / (1.0 - alpha_bar)
    weight = np.minimum(snr, gamma) / (snr + 1.0 if v_prediction else snr)
    return torch.from_numpy(weight).float()


def hand_lr(step: int, total: int, lr: float, final: float, warmup: int, schedule: str) -> float:
    """Warm-up linear from lr/warmup to lr, then linear/cosine decay to ``final`` at the last update."""
    if step < warmup:
        return lr * (step + 1) / warmup
    if schedule == "constant":
        return lr
    progress = min(1.0, (step - warmup) / max(1, total - warmup - 1))
    if schedule == "cosine":
        return final + (lr - final) * (1 + math.cos(math.pi * progress)) / 2
    return lr + (final - lr) * progress


def replay(
    base_unet: torch.nn.Module,
    unclip: Any,
    rows: dict[str, torch.Tensor],
    *,
    seed: int,
    batch: int,
    accumulation: int,
    lrs: list[float],
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    max_grad_norm: float,
    objective_config: ObjectiveConfig,
    flip: bool,
    prompt: str,
    ema_decay: float | None,
) -> tuple[dict[str, torch.Tensor], list[float]]:
    """The run by hand: the final weights (the EMA's when ``ema_decay``) and the loss of each update."""
    unet = copy.deepcopy(base_unet).train().requires_grad_(True)
    params = list(unet.parameters())
    ema = [p.detach().clone() for p in params] if ema_decay is not None else None
    objective = SounDiffObjective(unclip, objective_config)
    with torch.no_grad():  # diffusers' own prompt encoder, as generation calls it
        prompt_embeds = unclip.encode_prompt(prompt, "cpu", 1, do_classifier_free_guidance=False)[0]
        empty_embeds = unclip.encode_prompt("", "cpu", 1, do_classifier_free_guidance=False)[0]
    optimizer = torch.optim.AdamW(params, lr=lrs[0], betas=betas, eps=eps, weight_decay=weight_decay)
    count = rows["mean"].shape[0]
    per_epoch = count // batch
    losses = []
    for update, lr in enumerate(lrs):
        for group in optimizer.param_groups:
            group["lr"] = lr
        total = 0.0
        for k in range(accumulation):
            micro = update * accumulation + k
            epoch, position = divmod(micro, per_epoch)
            order = torch.randperm(
                count, generator=torch.Generator().manual_seed(sd.mix_seed(seed, "order", epoch))
            )
            index = order[position * batch : (position + 1) * batch]
            generator = torch.Generator().manual_seed(sd.mix_seed(seed, "noise", micro))
            draw = objective.draw(batch, tuple(rows["mean"].shape[1:]), rows["embeds"].shape[1], generator)
            mean, std = rows["mean"][index], rows["std"][index]
            if flip:
                mirrored = (torch.rand(batch, generator=generator) < 0.5)[:, None, None, None]
                mean = torch.where(mirrored, rows["flip_mean"][index], mean)
                std = torch.where(mirrored, rows["flip_std"][index], std)
            out = objective.loss(unet, mean, std, rows["embeds"][index], prompt_embeds, empty_embeds, draw)
            loss = (out.per_sample * hand_snr_weights(draw.timesteps, objective_config.snr_gamma)).mean()
            (loss / accumulation).backward()  # what accelerate's backward does under accumulation
            total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm > 0 else math.inf)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            # diffusers EMAModel: decay 0 at the first update, then min(decay, (1 + n) / (10 + n)).
            n = update
            decay = 0.0 if n == 0 else min(ema_decay, (1 + n) / (10 + n))
            with torch.no_grad():
                for shadow, param in zip(ema, params, strict=True):
                    shadow.sub_((1 - decay) * (shadow - param))
        losses.append(total / accumulation)
    final = ema if ema is not None else [p.detach() for p in params]
    names = [name for name, _ in unet.named_parameters()]
    return dict(zip(names, final, strict=True)), losses


def assert_weights_equal(trained: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    ours = dict(trained.named_parameters())
    assert ours.keys() == expected.keys()
    # The same float32 operations as the trainer except the SNR weights (float64 here, float32 there:
    # relative 1e-7 on the loss and the gradients). Adam's steps are ~lr x grad / |grad|, so that moves a
    # weight by a few float32 ulps at most: 1e-6 x |w| + 1e-7 is ~8 ulps (eps 1.2e-7). A changed setting
    # moves weights by >= 1e-5 (weight decay 0.1 x lr 1e-3 x |w| ~ 0.1, or a different lr/step/gradient).
    for key in ours:
        torch.testing.assert_close(ours[key].detach().float(), expected[key].float(), rtol=1e-6, atol=1e-7)


def hand_rows(pipe: Any, cached: Any, train_pairs: list[Any], target_norm: float) -> dict[str, torch.Tensor]:
    """Training rows in the split's order; audio embeddings by the encoder's public call, on the norm."""
    assert [p.key for p in cached.pairs] == [p.key for p in train_pairs]
    raw = pipe.audio_encoder.embed([str(p.audio) for p in train_pairs])  # (N, D), norm 20
    torch.testing.assert_close(cached.audio_embeds, raw, atol=1e-5, rtol=0)
    assert cached.latent_mean.shape[-2:] == (RESOLUTION // 2, RESOLUTION // 2)
    return {
        "mean": cached.latent_mean.float(),
        "std": cached.latent_std.float(),
        "flip_mean": None if cached.flip_mean is None else cached.flip_mean.float(),
        "flip_std": None if cached.flip_std is None else cached.flip_std.float(),
        "embeds": raw / raw.norm(dim=-1, keepdim=True) * target_norm,
    }


def _no_more_than(updates: int):
    """A step hook that stops a run which makes more updates than the settings ask for (fail fast)."""

    def hook(done: int, loss: float, run: Any) -> None:
        assert done <= updates, f"update {done} of a run that should make {updates}"

    return hook


# --- the replay: optimisation, objective, data, calibration, EMA, validation, logging ---------------


def test_run_a_equals_the_replay(tmp_path, manifest8, shared_cache, soundiff, _base_soundiff, capsys) -> None:
    """L, no flip, 4 updates of batch 2, warm-up, linear decay, Min-SNR, clipping, EMA, given calibration."""
    base_unet = copy.deepcopy(_base_soundiff.unclip.unet)
    calibration_dir = tmp_path / "calibration"
    EmbeddingCalibration(target_norm=5.0, source="test", num_images=3).save(calibration_dir)
    run_dir = tmp_path / "run"
    settings = {
        "prompt": "a red barn", "seed": 7, "batch_size": 2, "max_steps": 4, "learning_rate": 1e-3,
        "final_learning_rate": 2e-4, "lr_warmup_steps": 2, "adam_beta1": 0.8, "adam_beta2": 0.95,
        "adam_epsilon": 1e-5, "weight_decay": 0.1, "max_grad_norm": 0.05, "conditioning_dropout": 0.5,
        "drop_prompt_with_condition": False, "max_noise_level": 100, "snr_gamma": 2.0, "random_flip": False,
        "ema": True, "ema_decay": 0.1, "val_fraction": 0.5, "validation_steps": 4,
        "num_validation_audios": 1, "validation_inference_steps": 1,
    }  # fmt: skip
    config = SounDiffTrainConfig(
        data=str(manifest8), output_dir=str(run_dir), resolution=RESOLUTION, cache_dir=str(shared_cache),
        calibration=str(calibration_dir), report_to="none", progress=False, checkpointing_steps=100,
        **settings,
    )  # fmt: skip
    result = train(config, pipeline=soundiff, on_step_end=_no_more_than(4))

    split = split_pairs(scan_pairs(manifest8).pairs, val_fraction=0.5, seed=7)
    assert len(split.val) == 4 and len(result.run.cached) == 4  # one of the 2 pairs of each scene
    rows = hand_rows(_base_soundiff, result.run.cached, split.train, target_norm=5.0)
    lrs = [5e-4, 1e-3, 1e-3, 2e-4]  # warm-up 1/2, 2/2; then linear from 1e-3 (update 3) to 2e-4 (update 4)
    assert [hand_lr(s, 4, 1e-3, 2e-4, 2, "linear") for s in range(4)] == pytest.approx(lrs)
    expected, losses = replay(
        base_unet, soundiff.unclip, rows, seed=7, batch=2, accumulation=1, lrs=lrs, betas=(0.8, 0.95),
        eps=1e-5, weight_decay=0.1, max_grad_norm=0.05, flip=False, prompt="a red barn", ema_decay=0.1,
        objective_config=ObjectiveConfig(
            conditioning_dropout=0.5, drop_prompt_with_condition=False, max_noise_level=100, snr_gamma=2.0
        ),
    )  # fmt: skip
    assert result.losses == pytest.approx(losses, rel=1e-5)
    assert_weights_equal(result.model, expected)  # the EMA weights: what the export holds
    metrics = [json.loads(line) for line in (run_dir / sd.METRICS_FILE).read_text().splitlines()]
    assert [m["lr"] for m in metrics] == pytest.approx(lrs)
    # The validation grid of update 4 took one audio from the validation split.
    meta = json.loads(json.dumps(_png_meta(run_dir / "validation" / "step-0000004.png")))
    assert meta["audios"] == [split.val[0].audio.name] and meta["steps"] == 1
    assert not (run_dir / "logs").exists() or not list((run_dir / "logs").rglob("events.out.tfevents.*"))
    assert not (run_dir / "cache").exists() and any(shared_cache.iterdir())  # --cache-dir
    assert not re.search(r"\d+%\|", capsys.readouterr().err)  # --no-progress: no bars at all


def _png_meta(path: Path) -> dict[str, Any]:
    from sound2image.outputs import read_png_metadata

    return read_png_metadata(path)


def test_run_b_equals_the_replay(tmp_path, manifest8, shared_cache, soundiff, _base_soundiff, capsys) -> None:
    """S, flips, 2 epochs of 2 micro-batches of 4 (accumulation 2), constant lr, no clipping, measured
    calibration on 3 images, validation pixels, TensorBoard scalars."""
    from diffusers import StableUnCLIPImg2ImgPipeline
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    base_unet = copy.deepcopy(_base_soundiff.unclip.unet)
    run_dir = tmp_path / "run"
    val_audio = PSEUDO_ADVANCE / "sound" / "beach" / "00017.wav"
    settings = {
        "variant": "S", "batch_size": 4, "epochs": 2, "gradient_accumulation_steps": 2,
        "learning_rate": 1e-3, "lr_schedule": "constant", "max_grad_norm": 0.0, "calibration_images": 3,
        "validation_steps": 2, "validation_audios": [str(val_audio)], "validation_inference_steps": 3,
        "validation_guidance_scale": 3.0, "report_to": "tensorboard", "progress": True,
    }  # fmt: skip
    config = SounDiffTrainConfig(
        data=str(manifest8), output_dir=str(run_dir), resolution=RESOLUTION, cache_dir=str(shared_cache),
        val_fraction=0.0, checkpointing_steps=100, **settings,
    )  # fmt: skip
    result = train(config, pipeline=soundiff, on_step_end=_no_more_than(2))
    assert result.steps == 2  # 2 epochs x (8 pairs / 4) micro-batches / 2 per update

    split = split_pairs(scan_pairs(manifest8).pairs, val_fraction=0.0, seed=42)
    # The scale, measured by hand: mean image-encoder norm of 3 training images spread over the split.
    images = [split.train[i].image for i in (0, 2, 5)]  # int(i * 8 / 3) for i = 0, 1, 2
    from sound2image.data import load_image

    unclip = _base_soundiff.unclip
    features = unclip.feature_extractor(images=[load_image(p) for p in images], return_tensors="pt")
    with torch.no_grad():
        target = float(unclip.image_encoder(features.pixel_values).image_embeds.norm(dim=-1).mean())
    assert result.run.calibration.target_norm == pytest.approx(target, rel=1e-6)
    assert result.run.calibration.num_images == 3
    rows = hand_rows(_base_soundiff, result.run.cached, split.train, target_norm=target)
    expected, losses = replay(
        base_unet, soundiff.unclip, rows, seed=42, batch=4, accumulation=2, lrs=[1e-3, 1e-3],
        betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, max_grad_norm=0.0, flip=True,
        prompt=SATELLITE_PROMPT, ema_decay=None,
        objective_config=ObjectiveConfig(),
    )  # fmt: skip
    assert result.losses == pytest.approx(losses, rel=1e-5)
    assert_weights_equal(result.model, expected)

    # Validation: plain diffusers with the trained U-Net, the prompt, size, steps, guidance and seed.
    raw = _base_soundiff.audio_encoder.embed([str(val_audio)])
    plain = StableUnCLIPImg2ImgPipeline(**{**unclip.components, "unet": copy.deepcopy(result.model).eval()})
    plain.set_progress_bar_config(disable=True)
    image = plain(
        image_embeds=raw / raw.norm() * target, prompt=SATELLITE_PROMPT, height=RESOLUTION, width=RESOLUTION,
        num_inference_steps=3, guidance_scale=3.0, generator=torch.Generator().manual_seed(42),
    ).images[0]  # fmt: skip
    from PIL import Image

    with Image.open(run_dir / "validation" / "step-0000002.png") as grid:
        tile = np.asarray(grid.convert("RGB"))[4 : 4 + RESOLUTION, 4 : 4 + RESOLUTION]  # padding 4
    assert np.array_equal(tile, np.asarray(image))

    # TensorBoard holds the same scalars as metrics.jsonl.
    metrics = [json.loads(line) for line in (run_dir / sd.METRICS_FILE).read_text().splitlines()]
    events = [p.parent for p in (run_dir / "logs").rglob("events.out.tfevents.*")]
    assert events
    scalars: dict[str, list[tuple[int, float]]] = {}
    for folder in set(events):
        accumulator = EventAccumulator(str(folder))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in accumulator.Scalars(tag))
    assert {"train/loss", "train/lr"} <= scalars.keys()
    for tag, key in (("train/loss", "loss"), ("train/lr", "lr")):
        steps, values = zip(*sorted(scalars[tag]), strict=True)
        assert list(steps) == [m["step"] for m in metrics] == [1, 2]
        assert list(values) == pytest.approx([m[key] for m in metrics], rel=1e-6)  # stored as float32
    assert re.search(r"SounDiff-S: +\d+%\|", capsys.readouterr().err)  # the progress bar


# --- state the settings must produce ------------------------------------------------------------------


def test_bf16_mixed_precision_and_gradient_checkpointing_are_on_in_the_step(
    tmp_path, manifest8, shared_cache, soundiff
) -> None:
    seen: dict[str, Any] = {}
    unet = soundiff.unclip.unet

    def remember(module: Any, inputs: Any, output: torch.Tensor) -> None:
        seen.setdefault("conv_in", output.dtype)

    handle = unet.conv_in.register_forward_hook(remember)

    def inspect(done: int, loss: float, run: Any) -> None:
        model = run.accelerator.unwrap_model(run.unet)
        seen["checkpointing"] = model.is_gradient_checkpointing
        seen["params"] = {p.dtype for p in model.parameters()}
        seen["precision"] = run.accelerator.mixed_precision

    config = SounDiffTrainConfig(
        data=str(manifest8), output_dir=str(tmp_path / "run"), resolution=RESOLUTION, batch_size=4,
        max_steps=1, learning_rate=1e-3, val_fraction=0.0, report_to="none", progress=False,
        cache_dir=str(shared_cache), mixed_precision="bf16", gradient_checkpointing=True,
    )  # fmt: skip
    try:
        train(config, pipeline=soundiff, on_step_end=inspect)
    finally:
        handle.remove()
    assert seen["conv_in"] == torch.bfloat16  # the forward ran under bf16 autocast
    assert seen["params"] == {torch.float32}  # master weights stay float32
    assert seen["precision"] == "bf16" and seen["checkpointing"] is True


def test_without_those_flags_the_step_is_float32_without_checkpointing(
    tmp_path, manifest8, shared_cache, soundiff
) -> None:
    seen: dict[str, Any] = {}

    def remember(module: Any, inputs: Any, output: torch.Tensor) -> None:
        seen.setdefault("dtype", output.dtype)

    handle = soundiff.unclip.unet.conv_in.register_forward_hook(remember)

    def inspect(done: int, loss: float, run: Any) -> None:
        seen["checkpointing"] = run.accelerator.unwrap_model(run.unet).is_gradient_checkpointing

    config = SounDiffTrainConfig(
        data=str(manifest8), output_dir=str(tmp_path / "run"), resolution=RESOLUTION, batch_size=4,
        max_steps=1, learning_rate=1e-3, val_fraction=0.0, report_to="none", progress=False,
        cache_dir=str(shared_cache),
    )  # fmt: skip
    try:
        train(config, pipeline=soundiff, on_step_end=inspect)
    finally:
        handle.remove()
    assert seen == {"dtype": torch.float32, "checkpointing": False}


def test_lora_rank_trains_adapters_of_that_rank_only(tmp_path, manifest8, shared_cache, soundiff) -> None:
    before = {k: v.detach().clone() for k, v in soundiff.unclip.unet.state_dict().items()}
    seen: dict[str, Any] = {}

    def inspect(done: int, loss: float, run: Any) -> None:
        model = run.accelerator.unwrap_model(run.unet)
        seen["r"] = model.peft_config["default"].r
        seen["trainable"] = [n for n, p in model.named_parameters() if p.requires_grad]
        seen["ranks"] = {p.shape[0] for n, p in model.named_parameters() if "lora_A" in n}
        seen["state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    config = SounDiffTrainConfig(
        data=str(manifest8), output_dir=str(tmp_path / "run"), resolution=RESOLUTION, batch_size=4,
        max_steps=1, learning_rate=1e-2, val_fraction=0.0, report_to="none", progress=False,
        cache_dir=str(shared_cache), lora_rank=3,
    )  # fmt: skip
    train(config, pipeline=soundiff, on_step_end=inspect)
    assert seen["r"] == 3 and seen["ranks"] == {3}
    assert seen["trainable"] and all("lora_" in name for name in seen["trainable"])
    # The base weights did not move (their names gain a ".base_layer" under peft).
    for key, value in seen["state"].items():
        plain_key = key.replace(".base_layer", "")
        if "lora_" not in key:
            assert torch.equal(value, before[plain_key]), key


def test_use_8bit_adam_builds_bitsandbytes_adamw8bit(monkeypatch) -> None:
    class AdamW8bit(torch.optim.AdamW):
        """Stands in for bitsandbytes' optimizer (not installed on CPU test machines)."""

    fake = types.ModuleType("bitsandbytes")
    fake.optim = types.SimpleNamespace(AdamW8bit=AdamW8bit)
    monkeypatch.setitem(sys.modules, "bitsandbytes", fake)
    params = [torch.nn.Parameter(torch.zeros(2))]
    values = {
        "learning_rate": 3e-4,
        "adam_beta1": 0.7,
        "adam_beta2": 0.9,
        "weight_decay": 0.2,
        "adam_epsilon": 1e-6,
    }
    config = SounDiffTrainConfig(data="d", output_dir="o", use_8bit_adam=True, **values).resolved()
    optimizer = sd.make_optimizer(config, params)
    assert type(optimizer) is AdamW8bit
    group = optimizer.param_groups[0]
    assert (group["lr"], group["betas"], group["weight_decay"], group["eps"]) == (3e-4, (0.7, 0.9), 0.2, 1e-6)
    plain = sd.make_optimizer(SounDiffTrainConfig(data="d", output_dir="o").resolved(), params)
    assert type(plain) is torch.optim.AdamW


def test_cache_dtype_and_batch_size_reach_the_cache_pass(tmp_path, soundiff) -> None:
    from accelerate import Accelerator

    from sound2image.data import Pair

    config = SounDiffTrainConfig(
        data="d", output_dir=str(tmp_path), resolution=RESOLUTION, cache_dtype="bfloat16", cache_batch_size=3,
        cache_dir=str(tmp_path / "cache"),
    ).resolved()  # fmt: skip
    cache = sd.make_cache_pass(config, soundiff, Accelerator(), tmp_path)
    assert cache.cache_root == tmp_path / "cache" and cache.batch_size == 3
    audios = sorted((PSEUDO_ADVANCE / "sound" / "farmland").glob("*.wav"))[:2]
    pairs = [
        Pair(
            audio=a, image=PSEUDO_ADVANCE / "vision" / "farmland" / f"{a.stem}.jpg", key=a.stem, group=a.stem
        )
        for a in audios
    ]
    cached = cache.run(pairs)
    # The stored values are the float32 VAE posterior rounded to bfloat16 (read back as float32).
    from sound2image.training.cache import image_to_tensor

    pixels = torch.stack([image_to_tensor(p.image, RESOLUTION) for p in pairs])  # (2, 3, 16, 16)
    with torch.no_grad():
        mean = soundiff.unclip.vae.encode(pixels).latent_dist.mean
    assert torch.equal(cached.latent_mean, mean.to(torch.bfloat16).float())
    assert not torch.equal(cached.latent_mean, mean)  # bfloat16 keeps 8 bits: the rounding shows


# --- the objective: Min-SNR and the prompt of dropped samples -----------------------------------------


@pytest.mark.parametrize("prediction_type", ["v_prediction", "epsilon"])
def test_min_snr_weights_are_applied_in_the_loss(soundiff, prediction_type: str) -> None:
    from diffusers import DDIMScheduler

    unclip = copy.copy(soundiff.unclip)
    unclip.scheduler = DDIMScheduler.from_config(unclip.scheduler.config, prediction_type=prediction_type)
    objective = SounDiffObjective(unclip, ObjectiveConfig(snr_gamma=2.0, conditioning_dropout=0.0))
    batch, shape = 6, (4, 8, 8)
    generator = torch.Generator().manual_seed(0)
    mean, std = (
        torch.randn(batch, *shape, generator=generator),
        torch.rand(batch, *shape, generator=generator),
    )
    embeds = torch.randn(batch, 1024, generator=generator)
    draw = objective.draw(batch, shape, 1024, torch.Generator().manual_seed(4))
    draw.timesteps = torch.tensor([0, 10, 100, 300, 600, 999])  # both sides of SNR = 2
    prompt = objective.encode_prompt("", "cpu")
    with torch.no_grad():
        out = objective.loss(unclip.unet, mean, std, embeds, prompt, prompt, draw)
    weights = hand_snr_weights(draw.timesteps, 2.0, v_prediction=prediction_type == "v_prediction")
    assert weights.min() < 0.5 and weights.max() > 0.5  # clipped and unclipped steps: not a constant
    assert float(out.loss) == pytest.approx(
        float((out.per_sample.double() * weights.double()).mean()), rel=1e-5
    )
    assert float(out.loss) != pytest.approx(float(out.per_sample.mean()), rel=1e-2)


@pytest.mark.parametrize("drop_prompt", [True, False])
def test_dropped_samples_get_the_empty_prompt_unless_kept(soundiff, drop_prompt: bool) -> None:
    unclip = soundiff.unclip
    objective = SounDiffObjective(
        unclip, ObjectiveConfig(conditioning_dropout=0.5, drop_prompt_with_condition=drop_prompt)
    )
    batch, shape = 6, (4, 8, 8)
    generator = torch.Generator().manual_seed(1)
    mean, std = (
        torch.randn(batch, *shape, generator=generator),
        torch.rand(batch, *shape, generator=generator),
    )
    embeds = torch.randn(batch, 1024, generator=generator)
    draw = objective.draw(batch, shape, 1024, torch.Generator().manual_seed(3))
    assert draw.drop.any() and not draw.drop.all()
    with torch.no_grad():
        prompt = unclip.encode_prompt("a red barn", "cpu", 1, do_classifier_free_guidance=False)[0]
        empty = unclip.encode_prompt("", "cpu", 1, do_classifier_free_guidance=False)[0]
        out = objective.loss(unclip.unet, mean, std, embeds, prompt, empty, draw)
        # By hand: diffusers' DDPM noising, the prompt (or the empty prompt where dropped and not kept).
        latents = (mean + std * draw.latent_noise) * unclip.vae.config.scaling_factor
        noisy = objective.noise_scheduler.add_noise(latents, draw.noise, draw.timesteps)
        use_empty = draw.drop if drop_prompt else torch.zeros_like(draw.drop)
        text = torch.where(
            use_empty[:, None, None], empty.expand(batch, -1, -1), prompt.expand(batch, -1, -1)
        )
        labels = objective.class_labels(embeds, draw)
        expected = unclip.unet(noisy, draw.timesteps, encoder_hidden_states=text, class_labels=labels).sample
    torch.testing.assert_close(out.model_pred, expected)


# --- the command line and the schedule -----------------------------------------------------------------


def test_every_flag_reaches_its_config_field() -> None:
    from sound2image.cli.main import build_parser
    from sound2image.cli.train_soundiff import config_from_args

    flags = {
        "--variant": ("S", "variant", "S"),
        "--classes": ("beach, lake", "classes", ["beach", "lake"]),
        "--prompt": ("aerial", "prompt", "aerial"),
        "--model": ("base/", "base_model", "base/"),
        "--calibration": ("cal/", "calibration", "cal/"),
        "--calibration-images": ("7", "calibration_images", 7),
        "--val-fraction": ("0.3", "val_fraction", 0.3),
        "--seed": ("5", "seed", 5),
        "--resolution": ("64", "resolution", 64),
        "--batch-size": ("3", "batch_size", 3),
        "--epochs": ("9", "epochs", 9),
        "--max-steps": ("11", "max_steps", 11),
        "--learning-rate": ("2e-5", "learning_rate", 2e-5),
        "--final-learning-rate": ("3e-6", "final_learning_rate", 3e-6),
        "--lr-schedule": ("cosine", "lr_schedule", "cosine"),
        "--lr-warmup-steps": ("4", "lr_warmup_steps", 4),
        "--weight-decay": ("0.2", "weight_decay", 0.2),
        "--adam-beta1": ("0.8", "adam_beta1", 0.8),
        "--adam-beta2": ("0.95", "adam_beta2", 0.95),
        "--adam-epsilon": ("1e-6", "adam_epsilon", 1e-6),
        "--max-grad-norm": ("0.5", "max_grad_norm", 0.5),
        "--gradient-accumulation-steps": ("2", "gradient_accumulation_steps", 2),
        "--conditioning-dropout": ("0.1", "conditioning_dropout", 0.1),
        "--keep-prompt-on-dropout": (None, "drop_prompt_with_condition", False),
        "--max-noise-level": ("500", "max_noise_level", 500),
        "--snr-gamma": ("5", "snr_gamma", 5.0),
        "--no-flip": (None, "random_flip", False),
        "--mixed-precision": ("bf16", "mixed_precision", "bf16"),
        "--gradient-checkpointing": (None, "gradient_checkpointing", True),
        "--ema": (None, "ema", True),
        "--ema-decay": ("0.99", "ema_decay", 0.99),
        "--use-8bit-adam": (None, "use_8bit_adam", True),
        "--lora-rank": ("8", "lora_rank", 8),
        "--cache-dir": ("cache/", "cache_dir", "cache/"),
        "--cache-batch-size": ("3", "cache_batch_size", 3),
        "--cache-dtype": ("bfloat16", "cache_dtype", "bfloat16"),
        "--checkpointing-steps": ("7", "checkpointing_steps", 7),
        "--checkpoints-total-limit": ("2", "checkpoints_total_limit", 2),
        "--resume": ("latest", "resume", "latest"),
        "--validation-steps": ("5", "validation_steps", 5),
        "--num-validation-audios": ("2", "num_validation_audios", 2),
        "--validation-inference-steps": ("6", "validation_inference_steps", 6),
        "--validation-guidance-scale": ("4", "validation_guidance_scale", 4.0),
        "--report-to": ("none", "report_to", "none"),
        "--no-progress": (None, "progress", False),
    }
    names = {f.name for f in fields(SounDiffTrainConfig)}
    names -= {"backbone", "ip_adapter", "ip_scale"}  # tests/training/test_ip_adapter_training.py (#16)
    if "audio_channel" in names:  # the channel policy (issue #11 B), where this tree has it
        flags["--channel"] = ("first", "audio_channel", "first")
    argv = ["train", "soundiff", "--data", "d", "--output", "o", "--validation-audios", "a.wav", "b.wav"]
    for flag, (value, _, _) in flags.items():
        argv += [flag] if value is None else [flag, value]
    config = config_from_args(build_parser().parse_args(argv))
    covered = {field for _, field, _ in flags.values()} | {"data", "output_dir", "validation_audios"}
    assert covered == names, f"settings without a flag check: {sorted(names - covered)}"
    defaults = SounDiffTrainConfig()
    for flag, (_, field, expected) in flags.items():
        assert getattr(config, field) == expected, flag
        assert getattr(defaults, field) != expected, f"{flag}: the test value must differ from the default"
    assert (config.data, config.output_dir, config.validation_audios) == ("d", "o", ["a.wav", "b.wav"])


@pytest.mark.parametrize("schedule", ["linear", "cosine", "constant"])
def test_learning_rate_schedule_matches_the_formula(schedule: str) -> None:
    config = SounDiffTrainConfig(
        data="d",
        output_dir="o",
        learning_rate=1e-3,
        final_learning_rate=1e-5,
        lr_warmup_steps=3,
        lr_schedule=schedule,
    ).resolved()
    total = 12  # 3 warm-up updates, then 9: the decay runs over 8 intervals
    ours = [sd.learning_rate_at(config, step, total) for step in range(total)]
    assert ours == pytest.approx(
        [hand_lr(s, total, 1e-3, 1e-5, 3, schedule) for s in range(total)], rel=1e-12
    )
    # Half-way through the decay: linear 5.05e-4, cosine the same (cos 90 deg = 0), quarter-way they differ.
    quarter = 5  # 2 of the 8 intervals
    expected_quarter = {
        "linear": 1e-3 + (1e-5 - 1e-3) * 0.25,
        "cosine": 1e-5 + (1e-3 - 1e-5) * (1 + math.cos(math.pi / 4)) / 2,
    }
    assert ours[quarter] == pytest.approx(expected_quarter.get(schedule, 1e-3), rel=1e-12)
    assert ours[:3] == pytest.approx([1e-3 / 3, 2e-3 / 3, 1e-3], rel=1e-12)
