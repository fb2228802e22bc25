"""Everything before a SounDiff run's first update: the trainable U-Net, the optimizer, the
``Accelerator``, the base pipeline, the resume check, and :class:`Run` (the live objects)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sound2image.diffusion.calibration import EmbeddingCalibration
from sound2image.errors import MissingExtraError, UsageError
from sound2image.training.checkpoints import check_run_dir
from sound2image.training.rundir import config_path
from sound2image.training.soundiff.checkpoint import register_adapter_checkpoints
from sound2image.training.soundiff.config import RESUMABLE_CHANGES, SounDiffTrainConfig
from sound2image.training.soundiff.data import (
    SelectedData,
    StepPlan,
    make_cache_pass,
    resolve_calibration,
    validation_inputs,
)


def prepare_unet(config: SounDiffTrainConfig, unet: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Make ``unet`` trainable (whole, LoRA adapters only, or — IP backbones — the IP-Adapter only:
    its image projection and decoupled ``to_k_ip``/``to_v_ip``); returns the trainable parameters."""
    unet.train()
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    if config.is_ip_adapter:
        from sound2image.diffusion.backbones import ip_adapter_parameters

        unet.requires_grad_(False)
        params = ip_adapter_parameters(unet)
        for param in params:
            param.requires_grad_(True)
        return params
    if config.lora_rank > 0:
        try:
            from peft import LoraConfig
        except ImportError as error:
            raise MissingExtraError(
                "lora_rank > 0 needs peft: pip install 'sound2image[lora]'", parameters=["lora_rank"]
            ) from error
        unet.requires_grad_(False)
        # Attention projections (as diffusers' LoRA scripts) plus the class-embedding projection, the
        # layers through which the audio embedding enters the U-Net.
        targets = ["to_q", "to_k", "to_v", "to_out.0", "class_embedding.linear_1", "class_embedding.linear_2"]
        unet.add_adapter(
            LoraConfig(
                r=config.lora_rank,
                lora_alpha=config.lora_rank,
                init_lora_weights="gaussian",
                target_modules=targets,
            )
        )
    else:
        unet.requires_grad_(True)
    return [p for p in unet.parameters() if p.requires_grad]


def make_optimizer(config: SounDiffTrainConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """AdamW with the paper's betas and weight decay (bitsandbytes' 8-bit AdamW on request)."""
    kwargs = {
        "lr": config.learning_rate,
        "betas": (config.adam_beta1, config.adam_beta2),
        "weight_decay": config.weight_decay,
        "eps": config.adam_epsilon,
    }
    if config.use_8bit_adam:
        try:
            import bitsandbytes as bnb
        except ImportError as error:
            raise MissingExtraError(
                "use_8bit_adam=True needs bitsandbytes: pip install 'sound2image[bnb]'",
                parameters=["use_8bit_adam"],
            ) from error
        return bnb.optim.AdamW8bit(params, **kwargs)
    return torch.optim.AdamW(params, **kwargs)


def make_accelerator(config: SounDiffTrainConfig, run_dir: Path) -> Any:
    """An ``Accelerator`` for the run; TensorBoard logging when requested and installed."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, is_tensorboard_available

    log_with = "tensorboard" if config.report_to == "tensorboard" and is_tensorboard_available() else None
    return Accelerator(
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        mixed_precision=config.mixed_precision,
        log_with=log_with,
        project_config=ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir / "logs")),
    )


def load_base_pipeline(config: SounDiffTrainConfig) -> Any:
    """The base ``SounDiffPipeline`` (the backbone — unCLIP, or SD 1.5 / SDXL with ``config.ip_adapter``
    — + audio encoder + any stored calibration), in float32 on the CPU: training keeps float32 master
    weights (``mixed_precision`` autocasts) and :func:`setup_run` moves the models to the accelerator's
    device itself."""
    from sound2image.diffusion import SounDiffPipeline

    if not config.is_ip_adapter:
        return SounDiffPipeline.from_pretrained(config.base_model, device="cpu", dtype="float32")
    return SounDiffPipeline.from_pretrained(
        config.base_model,
        device="cpu",
        dtype="float32",
        backbone=config.backbone,
        ip_adapter=config.ip_adapter,
        ip_scale=config.ip_scale,
    )


def check_pipeline_backbone(config: SounDiffTrainConfig, pipe: Any) -> None:
    """Refuse a given pipeline whose backbone is not ``config.backbone`` (UsageError naming it)."""
    name = pipe.backbone.name
    if name != config.backbone:
        raise UsageError(
            f"backbone is {config.backbone!r} but the pipeline given is a {name} pipeline",
            parameters=["backbone"],
        )


@dataclass
class Run:
    """The live objects of a run (kept together so the loop's helpers stay small)."""

    config: SounDiffTrainConfig
    run_dir: Path
    accelerator: Any
    pipe: Any
    unet: Any  # prepared (maybe DDP-wrapped)
    params: list[torch.nn.Parameter]
    optimizer: Any
    ema: Any
    objective: Any
    cached: Any
    calibration: EmbeddingCalibration
    plan: StepPlan
    prompt_embeds: Any  # the objective's prompt encoding (a tensor, or a PromptEncoding for IP backbones)
    empty_prompt_embeds: Any
    validation_embeds: torch.Tensor | None
    validation_names: list[str]
    losses: list[float] = field(default_factory=list)
    elapsed_before: float = 0.0  # seconds trained before a resume (from the checkpoint)
    started: float = field(default_factory=time.monotonic)

    def elapsed_s(self) -> float:
        """Seconds trained so far, the time before a resume included."""
        return self.elapsed_before + time.monotonic() - self.started


def check_output_dir(config: SounDiffTrainConfig, run_dir: Path) -> Path | None:
    """The checkpoint to resume from, or None; refuse to mix a new run into an old one, or to resume with
    changed settings (the rule every trainer shares: :func:`sound2image.training.checkpoints.check_run_dir`).
    """
    return check_run_dir(
        run_dir,
        config.resume,
        config_path(run_dir),
        config.to_dict(),
        lambda path: SounDiffTrainConfig.load(path).to_dict(),
        RESUMABLE_CHANGES,
    )


def setup_run(
    config: SounDiffTrainConfig, data: SelectedData, pipe: Any, accelerator: Any, run_dir: Path
) -> Run:
    """Everything else before the first step: calibration, cache, model, optimizer, conditioning."""
    from sound2image.training.objective import IPAdapterObjective, SounDiffObjective

    pipe.unclip.to(accelerator.device)
    for name, component in pipe.unclip.components.items():  # only the U-Net (or its adapter) is trained
        if name != "unet" and isinstance(component, torch.nn.Module):
            component.requires_grad_(False)
    if config.is_ip_adapter:
        pipe.backbone.ip_scale = config.ip_scale
    calibration = resolve_calibration(config, pipe, data.train, run_dir)
    if accelerator.is_main_process:
        calibration.save(run_dir)
    cache = make_cache_pass(config, pipe, accelerator, run_dir)
    cached = cache.run(data.train)
    cached.bad.entries[:0] = [(line, line) for line in data.problems]
    validation_embeds, validation_names = validation_inputs(config, cache, data.val)
    if pipe.audio_encoder is not None:
        pipe.audio_encoder.to("cpu")  # only needed for the cache pass: free the accelerator's memory

    unet = pipe.unclip.unet
    params = prepare_unet(config, unet)
    optimizer = make_optimizer(config, params)
    ema = _make_ema(config, params)
    unet, optimizer = accelerator.prepare(unet, optimizer)
    if ema is not None:
        ema.to(accelerator.device)
        accelerator.register_for_checkpointing(ema)
    if config.is_ip_adapter:
        register_adapter_checkpoints(accelerator)  # checkpoints hold the adapter's tensors, not the U-Net
        objective: Any = IPAdapterObjective(pipe.unclip, config.objective_config(), config.resolution)
    else:
        objective = SounDiffObjective(pipe.unclip, config.objective_config())
    return Run(
        config=config,
        run_dir=run_dir,
        accelerator=accelerator,
        pipe=pipe,
        unet=unet,
        params=params,
        optimizer=optimizer,
        ema=ema,
        objective=objective,
        cached=cached,
        calibration=calibration,
        plan=StepPlan.build(config, len(cached), accelerator.num_processes),
        prompt_embeds=objective.encode_prompt(config.prompt or "", accelerator.device),
        empty_prompt_embeds=objective.unconditional_prompt(accelerator.device),
        validation_embeds=validation_embeds,
        validation_names=validation_names,
    )


def _make_ema(config: SounDiffTrainConfig, params: list[torch.nn.Parameter]) -> Any:
    if not config.ema:
        return None
    from diffusers.training_utils import EMAModel

    return EMAModel(params, decay=config.ema_decay)
