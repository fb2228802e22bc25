"""One SounDiff update: the learning rate, this process's share of the batch, the objective, the
NaN/Inf guard, gradient clipping, the optimizer step and EMA."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from sound2image.training.checkpoints import check_finite
from sound2image.training.schedules import set_lr, warmup_then_decay
from sound2image.training.soundiff.config import SounDiffTrainConfig

if TYPE_CHECKING:
    from sound2image.training.soundiff.setup import Run


def learning_rate_at(config: SounDiffTrainConfig, step: int, total_steps: int) -> float:
    """The learning rate of update ``step`` (0-based): warm-up, then the ``lr_schedule`` decay from
    ``learning_rate`` to ``final_learning_rate``
    (:func:`~sound2image.training.schedules.warmup_then_decay`)."""
    return warmup_then_decay(
        step,
        total_steps,
        config.lr_warmup_steps,
        config.learning_rate,
        config.final_learning_rate,
        config.lr_schedule,
    )


def train_batch(run: Run, micro: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any]:
    """This process's share of global micro-batch ``micro``: latent mean/std, calibrated embeddings, draw."""
    plan, cached, device = run.plan, run.cached, run.accelerator.device
    rank = run.accelerator.process_index
    start, stop = rank * plan.batch_size, (rank + 1) * plan.batch_size
    generator = plan.generator(micro)
    draw = run.objective.draw(
        plan.global_batch, tuple(cached.latent_mean.shape[1:]), cached.audio_embeds.shape[1], generator
    )
    flips = torch.rand(plan.global_batch, generator=generator) < 0.5 if run.config.random_flip else None
    index = plan.global_indices(micro)[start:stop]  # (b,)
    mean, std = cached.latent_mean[index], cached.latent_std[index]  # (b, C, h, w)
    if flips is not None:
        flip = flips[start:stop][:, None, None, None]
        mean = torch.where(flip, cached.flip_mean[index], mean)
        std = torch.where(flip, cached.flip_std[index], std)
    embeds = run.calibration.apply(cached.audio_embeds[index])  # (b, D) on the calibrated scale
    return mean.to(device), std.to(device), embeds.to(device), draw.slice(start, stop).to(device)


def train_step(run: Run, step: int) -> float:
    """One optimizer update (``accumulation`` micro-batches); returns the loss averaged over processes."""
    accelerator, config = run.accelerator, run.config
    set_lr(run.optimizer, learning_rate_at(config, step, run.plan.total_steps))
    total = 0.0
    for k in range(run.plan.accumulation):
        mean, std, embeds, draw = train_batch(run, step * run.plan.accumulation + k)
        with accelerator.accumulate(run.unet):
            out = run.objective.loss(
                run.unet, mean, std, embeds, run.prompt_embeds, run.empty_prompt_embeds, draw
            )
            loss = accelerator.gather(out.loss.detach()[None]).mean().item()  # every process sees every loss
            check_finite(loss, "loss", run.run_dir, step + 1, _DIVERGED_HINT, _DIVERGED_PARAMETERS)
            accelerator.backward(out.loss)
            if accelerator.sync_gradients:
                _clip_and_check(run, step)
            run.optimizer.step()
            run.optimizer.zero_grad(set_to_none=True)
        total += loss
    if run.ema is not None:
        run.ema.step(run.params)
    return total / run.plan.accumulation


def _clip_and_check(run: Run, step: int) -> None:
    """Clip the gradient norm (after unscaling fp16 gradients) and stop on non-finite gradients.

    With fp16 the loss scaler skips steps with overflowing gradients by design; otherwise an infinite
    norm would turn the weights into NaN *before* the next loss shows it, and a checkpoint due at this
    step would save them: stop here instead.
    """
    max_norm = run.config.max_grad_norm if run.config.max_grad_norm > 0 else math.inf
    norm = run.accelerator.clip_grad_norm_(run.params, max_norm)  # accelerate unscales first
    if run.config.mixed_precision != "fp16" and norm is not None:
        check_finite(
            float(norm), "gradient norm", run.run_dir, step + 1, _DIVERGED_HINT, _DIVERGED_PARAMETERS
        )


_DIVERGED_HINT = "try a lower learning_rate or mixed_precision 'bf16' or 'no'"
_DIVERGED_PARAMETERS = ("learning_rate", "mixed_precision")
