"""Fine-tuning SounDiff: the unCLIP U-Net learns to follow ImageBind audio embeddings (paper §SounDiff).

>>> from sound2image.training.soundiff import SounDiffTrainConfig, train
>>> train(SounDiffTrainConfig(data="ADVANCE/", output_dir="runs/soundiff-l", variant="L"))

The run, as functions:

1. :func:`select_pairs` — scan the data, keep the chosen classes, the grouped 90/10 split (saved).
2. :func:`resolve_calibration` — the embedding scale (given, stored with the base model, or measured on
   the training images with the pipeline's own image encoder), saved with the run.
3. :func:`run_cache_pass` — VAE latents (+ mirror images) and audio embeddings, cached once.
4. :func:`prepare_unet` / :func:`make_optimizer` — trainable U-Net (full, or LoRA), AdamW (or 8-bit).
5. :func:`train` — the loop: Accelerate for devices, precision, accumulation and processes; checkpoints,
   validation images, logging, NaN guard; then :func:`~sound2image.training.export.export_soundiff`.

Determinism: the data order of epoch e and the noise of micro-batch m are drawn from generators seeded
by ``(seed, e)`` and ``(seed, m)``; each process takes its slice of the *global* batch. A resumed run
therefore replays exactly the steps an uninterrupted run takes, and N processes with batch b compute
the same steps as one process with batch N·b.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from sound2image.diffusion.calibration import EmbeddingCalibration
from sound2image.errors import DataError, MissingExtraError, UsageError
from sound2image.training.checkpoints import (
    TrainingDivergedError,  # noqa: F401 - raised by the loop; importable from here as before
    announce_processes,
    atomic_checkpoint,
    check_finite,
    check_run_dir,
)

SATELLITE_PROMPT = "a satellite image with details on the ground"
#: The paper's per-variant settings: batch size, epochs, training prompt.
VARIANTS: dict[str, dict[str, Any]] = {
    "L": {"batch_size": 4, "epochs": 80, "prompt": ""},
    "S": {"batch_size": 2, "epochs": 280, "prompt": SATELLITE_PROMPT},
}
CONFIG_FILE = "train_config.json"
STATE_FILE = "trainer_state.json"
METRICS_FILE = "metrics.jsonl"
SPLIT_FILE = "split.json"
BAD_ITEMS_FILE = "bad_items.txt"
LR_SCHEDULES = ("linear", "cosine", "constant")
MIXED_PRECISION = ("no", "fp16", "bf16")
#: Settings that may change between a run and its resumption (the rest must match).
RESUMABLE_CHANGES = {
    "resume",
    "max_steps",
    "epochs",
    "checkpointing_steps",
    "checkpoints_total_limit",
    "validation_steps",
    "validation_audios",
    "progress",
    "report_to",
    "cache_dir",
    "cache_batch_size",
}


@dataclass
class SounDiffTrainConfig:
    """Every setting of a SounDiff fine-tuning run; saved as JSON with the run and in every checkpoint.

    ``None`` means "the variant's default" for ``batch_size``, ``epochs`` and ``prompt`` (see
    :data:`VARIANTS`); :meth:`resolved` fills them in.
    """

    data: str = ""
    output_dir: str = ""
    variant: str = "L"
    base_model: str | None = None  # None: $SOUND2IMAGE_UNCLIP or stabilityai/stable-diffusion-2-1-unclip
    prompt: str | None = None
    classes: list[str] | None = None
    resolution: int = 768
    batch_size: int | None = None  # per process
    epochs: int | None = None
    max_steps: int | None = None  # optimizer updates; overrides epochs
    learning_rate: float = 1e-6
    final_learning_rate: float = 1e-7
    lr_schedule: str = "linear"
    lr_warmup_steps: int = 0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    weight_decay: float = 0.01
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    seed: int = 42
    val_fraction: float = 0.1
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    ema: bool = False
    ema_decay: float = 0.9999
    use_8bit_adam: bool = False
    lora_rank: int = 0  # 0: train the whole U-Net
    conditioning_dropout: float = 0.25
    drop_prompt_with_condition: bool = True
    max_noise_level: int = 1000
    snr_gamma: float | None = None
    random_flip: bool = True
    checkpointing_steps: int = 500
    checkpoints_total_limit: int | None = None
    resume: str | None = None
    validation_steps: int | None = None
    validation_audios: list[str] = field(default_factory=list)
    num_validation_audios: int = 4  # taken from the validation split when none are given
    validation_inference_steps: int = 20
    validation_guidance_scale: float = 10.0
    calibration: str | None = None  # a directory holding sound2image_calibration.json
    calibration_images: int = 256
    cache_dir: str | None = None  # None: <output_dir>/cache
    cache_batch_size: int = 8
    cache_dtype: str = "float32"
    audio_channel: str | int = "mean"  # channel policy of the audio encoder: "mean", "first" or an index
    report_to: str = "tensorboard"  # or "none"
    progress: bool = True

    def resolved(self) -> SounDiffTrainConfig:
        """A copy with the variant's defaults filled in and every value checked."""
        if self.variant not in VARIANTS:
            raise UsageError(f"variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        defaults = VARIANTS[self.variant]
        config = replace(
            self,
            batch_size=self.batch_size if self.batch_size is not None else defaults["batch_size"],
            epochs=self.epochs if self.epochs is not None else defaults["epochs"],
            prompt=self.prompt if self.prompt is not None else defaults["prompt"],
            classes=list(self.classes) if self.classes else None,
            validation_audios=[str(p) for p in self.validation_audios],
        )
        config.check()
        return config

    def check(self) -> None:
        """Raise UsageError naming the first bad setting."""
        positive = {
            "resolution": self.resolution,
            "batch_size": self.batch_size,
            "epochs": self.epochs,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "checkpointing_steps": self.checkpointing_steps,
            "cache_batch_size": self.cache_batch_size,
        }
        for name, value in positive.items():
            if value is not None and value < 1:
                raise UsageError(f"{name} must be at least 1, got {value}")
        if not self.data:
            raise UsageError("no training data given (--data ROOT_OR_MANIFEST)")
        if not self.output_dir:
            raise UsageError("no output directory given (--output DIR)")
        if self.resolution % 8:
            raise UsageError(f"resolution must be a multiple of 8, got {self.resolution}")
        if self.max_steps is not None and self.max_steps < 1:
            raise UsageError(f"max_steps must be at least 1, got {self.max_steps}")
        if not (self.learning_rate > 0 and self.final_learning_rate >= 0):
            raise UsageError(
                f"learning rates must be positive, got {self.learning_rate} -> {self.final_learning_rate}"
            )
        if self.lr_schedule not in LR_SCHEDULES:
            raise UsageError(
                f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}"
            )
        if self.mixed_precision not in MIXED_PRECISION:
            raise UsageError(
                f"mixed_precision must be one of {', '.join(MIXED_PRECISION)}, got {self.mixed_precision!r}"
            )
        if self.lora_rank < 0:
            raise UsageError(f"lora_rank must be >= 0, got {self.lora_rank}")
        if self.cache_dtype not in ("float32", "float16", "bfloat16"):
            raise UsageError(f"cache_dtype must be float32, float16 or bfloat16, got {self.cache_dtype!r}")
        if self.report_to not in ("tensorboard", "none"):
            raise UsageError(f"report_to must be 'tensorboard' or 'none', got {self.report_to!r}")
        if self.validation_steps is not None and self.validation_steps < 1:
            raise UsageError(f"validation_steps must be at least 1, got {self.validation_steps}")
        self.objective_config()  # checks dropout, noise level and SNR gamma
        from sound2image.audio.channels import check_channel

        self.audio_channel = check_channel(self.audio_channel, "audio_channel")

    def objective_config(self) -> Any:
        from sound2image.training.objective import ObjectiveConfig

        return ObjectiveConfig(
            conditioning_dropout=self.conditioning_dropout,
            drop_prompt_with_condition=self.drop_prompt_with_condition,
            max_noise_level=self.max_noise_level,
            snr_gamma=self.snr_gamma,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | os.PathLike[str]) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SounDiffTrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UsageError(f"unknown training settings: {', '.join(unknown)}")
        return cls(**values)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SounDiffTrainConfig:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError) as error:
            raise UsageError(f"{path}: not a valid training config ({error})") from error


# --- schedule and determinism ----------------------------------------------------------------------


def mix_seed(*parts: object) -> int:
    """A 63-bit seed from ``parts`` (stable across processes, unlike Python's salted ``hash``)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def learning_rate_at(config: SounDiffTrainConfig, step: int, total_steps: int) -> float:
    """The learning rate of update ``step`` (0-based): warm-up, then decay from lr to final lr."""
    lr, final = config.learning_rate, config.final_learning_rate
    if step < config.lr_warmup_steps:
        return lr * (step + 1) / config.lr_warmup_steps
    if config.lr_schedule == "constant":
        return lr
    span = max(1, total_steps - config.lr_warmup_steps - 1)
    progress = min(1.0, (step - config.lr_warmup_steps) / span)
    if config.lr_schedule == "cosine":
        return final + (lr - final) * 0.5 * (1 + math.cos(math.pi * progress))
    return lr + (final - lr) * progress


@dataclass(frozen=True)
class StepPlan:
    """Which samples each micro-batch uses and how many updates the run makes."""

    num_samples: int
    batch_size: int  # per process
    world_size: int
    accumulation: int
    total_steps: int
    seed: int

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    @property
    def batches_per_epoch(self) -> int:
        return self.num_samples // self.global_batch  # the last partial batch is dropped (fixed shapes)

    @classmethod
    def build(cls, config: SounDiffTrainConfig, num_samples: int, world_size: int) -> StepPlan:
        assert config.batch_size is not None and config.epochs is not None  # resolved config
        global_batch = config.batch_size * world_size
        if num_samples < global_batch:
            raise DataError(
                f"{config.data}: {num_samples} usable training pairs, fewer than one global batch of "
                f"{global_batch} (batch size {config.batch_size} x {world_size} processes)"
            )
        per_epoch = num_samples // global_batch
        total = config.max_steps or math.ceil(config.epochs * per_epoch / config.gradient_accumulation_steps)
        return cls(
            num_samples, config.batch_size, world_size, config.gradient_accumulation_steps, total, config.seed
        )

    def epoch_of(self, step: int) -> int:
        return (step * self.accumulation) // self.batches_per_epoch

    def global_indices(self, micro: int) -> torch.Tensor:
        """(G,) dataset rows of global micro-batch ``micro`` (epoch-wise seeded permutation)."""
        epoch, position = divmod(micro, self.batches_per_epoch)
        order = torch.randperm(
            self.num_samples, generator=torch.Generator().manual_seed(mix_seed(self.seed, "order", epoch))
        )
        return order[position * self.global_batch : (position + 1) * self.global_batch]

    def generator(self, micro: int) -> torch.Generator:
        """The generator of micro-batch ``micro``'s noise (same on every process)."""
        return torch.Generator().manual_seed(mix_seed(self.seed, "noise", micro))


# --- data, calibration, cache ----------------------------------------------------------------------


@dataclass
class SelectedData:
    train: list[Any]
    val: list[Any]
    problems: list[str]
    split: Any


def select_pairs(config: SounDiffTrainConfig, run_dir: Path) -> SelectedData:
    """Scan, keep ``config.classes``, and load the run's grouped split or make one (not saved here)."""
    from sound2image.data import load_or_create_split, scan_pairs, split_pairs

    scan = scan_pairs(config.data)
    pairs = scan.pairs
    if config.classes:
        available = sorted({p.label for p in pairs if p.label is not None})
        unknown = [name for name in config.classes if name not in available]
        if unknown:
            raise UsageError(
                f"{config.data}: no class {unknown[0]!r} "
                f"(classes: {', '.join(available) or 'none, the data is unlabelled'})"
            )
        pairs = [p for p in pairs if p.label in config.classes]
    if not pairs:
        raise DataError(f"{config.data}: no audio/image pairs found")
    path = run_dir / SPLIT_FILE
    if path.is_file():  # resuming: the same split, checked against the data and settings
        split = load_or_create_split(path, pairs, val_fraction=config.val_fraction, seed=config.seed)
    else:  # saved by the main process once the run starts (nothing is written for a failed start)
        split = split_pairs(pairs, val_fraction=config.val_fraction, seed=config.seed)
    return SelectedData(
        train=list(split.train), val=list(split.val), problems=list(scan.problems), split=split
    )


def resolve_calibration(
    config: SounDiffTrainConfig, pipe: Any, train_pairs: list[Any], run_dir: Path
) -> EmbeddingCalibration:
    """The run's stored calibration, else ``--calibration``, else the base model's measured one, else
    measured on (up to ``calibration_images``) training images with the pipeline's image encoder."""
    stored = EmbeddingCalibration.load(run_dir)
    if stored is not None:
        return stored
    if config.calibration:
        given = EmbeddingCalibration.load(config.calibration)
        if given is None:
            raise UsageError(f"{config.calibration}: no sound2image_calibration.json in this directory")
        return given
    if pipe.calibration.is_measured:
        return pipe.calibration
    from sound2image.diffusion.conditioning import embed_image_files

    count = min(len(train_pairs), config.calibration_images)
    step = len(train_pairs) / count
    paths = [train_pairs[int(i * step)].image for i in range(count)]  # evenly spread over the sorted keys
    result = embed_image_files(pipe.unclip, paths, batch_size=config.cache_batch_size)
    source = f"mean image-encoder embedding norm over {len(result.names)} training images of {config.data}"
    return EmbeddingCalibration.from_image_embeddings(result.embeds, source=source)


def make_cache_pass(config: SounDiffTrainConfig, pipe: Any, accelerator: Any, run_dir: Path) -> Any:
    """The :class:`~sound2image.training.cache.CachePass` for this run's settings and process."""
    from accelerate.utils import gather_object

    from sound2image.training.cache import AudioSettings, CachePass, LatentSettings, module_fingerprint

    encoder = pipe.audio_encoder
    if encoder is None:
        raise UsageError(f"{config.base_model}: the base model has no audio encoder")
    device = accelerator.device
    # The run's channel policy becomes the encoder's (so it is in the fingerprint, the cache key, and in
    # the validation pipeline); the export records it in its training config for generation.
    encoder.config = encoder.sampling_config(channel=config.audio_channel)

    def embed(paths: Any) -> torch.Tensor:
        return encoder.embed([str(p) for p in paths], batch_size=config.cache_batch_size, device=device)

    return CachePass(
        cache_root=Path(config.cache_dir) if config.cache_dir else run_dir / "cache",
        vae=pipe.unclip.vae,
        embed=embed,
        latent_settings=LatentSettings(
            resolution=config.resolution,
            vae=module_fingerprint(pipe.unclip.vae),
            dtype=config.cache_dtype,
            flip=config.random_flip,
        ),
        audio_settings=AudioSettings(
            encoder=module_fingerprint(encoder, extra=getattr(encoder, "config", None))
        ),
        batch_size=config.cache_batch_size,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        barrier=accelerator.wait_for_everyone,
        gather=gather_object,
        progress=config.progress and accelerator.is_main_process,
    )


# --- model and optimizer ---------------------------------------------------------------------------


def prepare_unet(config: SounDiffTrainConfig, unet: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Make ``unet`` trainable (whole, or LoRA adapters only); returns the trainable parameters."""
    unet.train()
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    if config.lora_rank > 0:
        try:
            from peft import LoraConfig
        except ImportError as error:
            raise MissingExtraError("--lora-rank needs peft: pip install 'sound2image[lora]'") from error
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
                "--use-8bit-adam needs bitsandbytes: pip install 'sound2image[bnb]'"
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
    """The base ``SounDiffPipeline`` (unCLIP + audio encoder + any stored calibration)."""
    from sound2image.diffusion import SounDiffPipeline

    return SounDiffPipeline.from_pretrained(config.base_model)


# --- the run ---------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What a finished run leaves: the losses of every update (mean over processes) and the export."""

    losses: list[float]
    steps: int
    export_dir: Path | None
    unet: torch.nn.Module
    bad_items: list[str]
    run: Any = None  # the live run objects (objective, cached data, prompt encodings), for inspection


@dataclass
class _Run:
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
    prompt_embeds: torch.Tensor
    empty_prompt_embeds: torch.Tensor
    validation_embeds: torch.Tensor | None
    validation_names: list[str]
    losses: list[float] = field(default_factory=list)


def check_output_dir(config: SounDiffTrainConfig, run_dir: Path) -> Path | None:
    """The checkpoint to resume from, or None; refuse to mix a new run into an old one, or to resume with
    changed settings (the rule every trainer shares: :func:`sound2image.training.checkpoints.check_run_dir`).
    """
    return check_run_dir(
        run_dir,
        config.resume,
        run_dir / CONFIG_FILE,
        config.to_dict(),
        lambda path: SounDiffTrainConfig.load(path).to_dict(),
        RESUMABLE_CHANGES,
    )


def setup_run(
    config: SounDiffTrainConfig, data: SelectedData, pipe: Any, accelerator: Any, run_dir: Path
) -> _Run:
    """Everything else before the first step: calibration, cache, model, optimizer, conditioning."""
    from sound2image.training.objective import SounDiffObjective

    pipe.unclip.to(accelerator.device)
    for frozen in ("vae", "text_encoder", "image_encoder", "image_normalizer"):
        getattr(pipe.unclip, frozen).requires_grad_(False)  # only the U-Net is trained (paper)
    calibration = resolve_calibration(config, pipe, data.train, run_dir)
    if accelerator.is_main_process:
        calibration.save(run_dir)
    cache = make_cache_pass(config, pipe, accelerator, run_dir)
    cached = cache.run(data.train)
    cached.bad.entries[:0] = [(line, line) for line in data.problems]
    validation_embeds, validation_names = _validation_inputs(config, cache, data.val)
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
    objective = SounDiffObjective(pipe.unclip, config.objective_config())
    return _Run(
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
        empty_prompt_embeds=objective.encode_prompt("", accelerator.device),
        validation_embeds=validation_embeds,
        validation_names=validation_names,
    )


def _make_ema(config: SounDiffTrainConfig, params: list[torch.nn.Parameter]) -> Any:
    if not config.ema:
        return None
    from diffusers.training_utils import EMAModel

    return EMAModel(params, decay=config.ema_decay)


def _validation_inputs(
    config: SounDiffTrainConfig, cache: Any, val_pairs: list[Any]
) -> tuple[torch.Tensor | None, list[str]]:
    """(K, D) raw embeddings of the fixed validation audios and their names (None when validation is off)."""
    if config.validation_steps is None:
        return None, []
    paths = [Path(p) for p in config.validation_audios]
    if not paths and val_pairs:
        count = min(config.num_validation_audios, len(val_pairs))
        paths = [
            val_pairs[int(i * len(val_pairs) / count)].audio for i in range(count)
        ]  # spread over classes
    if not paths:
        if cache.rank == 0:
            print(
                "warning: no validation images (the validation split is empty and no --validation-audios)",
                file=sys.stderr,
            )
        return None, []
    return cache.embed_paths(paths), [p.name for p in paths]


def train_batch(run: _Run, micro: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any]:
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


def train_step(run: _Run, step: int) -> float:
    """One optimizer update (``accumulation`` micro-batches); returns the loss averaged over processes."""
    accelerator, config = run.accelerator, run.config
    lr = learning_rate_at(config, step, run.plan.total_steps)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    total = 0.0
    for k in range(run.plan.accumulation):
        mean, std, embeds, draw = train_batch(run, step * run.plan.accumulation + k)
        with accelerator.accumulate(run.unet):
            out = run.objective.loss(
                run.unet, mean, std, embeds, run.prompt_embeds, run.empty_prompt_embeds, draw
            )
            loss = accelerator.gather(out.loss.detach()[None]).mean().item()  # every process sees every loss
            check_finite(loss, "loss", run.run_dir, step + 1, _DIVERGED_HINT)
            accelerator.backward(out.loss)
            if accelerator.sync_gradients:
                _clip_and_check(run, step)
            run.optimizer.step()
            run.optimizer.zero_grad(set_to_none=True)
        total += loss
    if run.ema is not None:
        run.ema.step(run.params)
    return total / run.plan.accumulation


def _clip_and_check(run: _Run, step: int) -> None:
    """Clip the gradient norm (after unscaling fp16 gradients) and stop on non-finite gradients.

    With fp16 the loss scaler skips steps with overflowing gradients by design; otherwise an infinite
    norm would turn the weights into NaN *before* the next loss shows it, and a checkpoint due at this
    step would save them: stop here instead.
    """
    max_norm = run.config.max_grad_norm if run.config.max_grad_norm > 0 else math.inf
    norm = run.accelerator.clip_grad_norm_(run.params, max_norm)  # accelerate unscales first
    if run.config.mixed_precision != "fp16" and norm is not None:
        check_finite(float(norm), "gradient norm", run.run_dir, step + 1, _DIVERGED_HINT)


_DIVERGED_HINT = "try a lower --learning-rate or --mixed-precision bf16/no"


# --- checkpoints ----------------------------------------------------------------------------------


def save_checkpoint(run: _Run, step: int) -> None:
    """``checkpoints/checkpoint-<step>``: accelerate state (+ EMA) and trainer state, written atomically."""
    from accelerate.utils import broadcast_object_list

    accelerator = run.accelerator
    if accelerator.is_main_process:
        with atomic_checkpoint(run.run_dir, step, run.config.checkpoints_total_limit) as tmp:
            broadcast_object_list([str(tmp)])
            _fill_checkpoint(run, tmp, step)
        accelerator.wait_for_everyone()
    else:
        holder = [None]
        broadcast_object_list(holder)
        _fill_checkpoint(run, Path(str(holder[0])), step)
        accelerator.wait_for_everyone()


def _fill_checkpoint(run: _Run, directory: Path, step: int) -> None:
    run.accelerator.save_state(str(directory))  # model, optimizer, scaler, RNG (one file per process)
    if run.accelerator.is_main_process:
        write_trainer_state(directory, run, step)
    run.accelerator.wait_for_everyone()


def write_trainer_state(directory: Path, run: _Run, step: int) -> None:
    """What the loop needs besides accelerate's state: the step (hence epoch and data position) and config."""
    state = {
        "step": step,
        "epoch": run.plan.epoch_of(step),
        "micro_step": step * run.plan.accumulation,
        "global_batch": run.plan.global_batch,
        "seed": run.config.seed,
        "losses": run.losses,
        "config": run.config.to_dict(),
    }
    (directory / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")


def load_checkpoint(run: _Run, path: Path) -> int:
    """Restore a checkpoint; returns the number of updates already done."""
    state_path = path / STATE_FILE
    if not state_path.is_file():
        raise UsageError(f"{path}: not a SounDiff checkpoint (no {STATE_FILE})")
    state = json.loads(state_path.read_text())
    run.accelerator.load_state(str(path))
    run.losses = list(state.get("losses", []))[: int(state["step"])]
    if state.get("global_batch") != run.plan.global_batch:
        print(
            f"warning: {path}: saved with a global batch of {state.get('global_batch')}, "
            f"now {run.plan.global_batch}; "
            "the data order after resuming differs from an uninterrupted run",
            file=sys.stderr,
        )
    return int(state["step"])


# --- validation and logging ------------------------------------------------------------------------


@torch.no_grad()
def validation_images(run: _Run) -> list[Any]:
    """Images from the fixed validation audios with the current (EMA) U-Net, fixed seed."""
    from diffusers import StableUnCLIPImg2ImgPipeline

    unet = run.accelerator.unwrap_model(run.unet)
    if run.ema is not None:
        run.ema.store(run.params)
        run.ema.copy_to(run.params)
    unet.eval()
    try:
        pipe = StableUnCLIPImg2ImgPipeline(**{**run.pipe.unclip.components, "unet": unet})
        pipe.set_progress_bar_config(disable=True)
        embeds = run.calibration.apply(run.validation_embeds).to(run.accelerator.device)
        images = []
        for i in range(embeds.shape[0]):
            generator = torch.Generator("cpu").manual_seed(run.config.seed)
            with run.accelerator.autocast():
                result = pipe(
                    image_embeds=embeds[i : i + 1],
                    prompt=run.config.prompt or "",
                    height=run.config.resolution,
                    width=run.config.resolution,
                    num_inference_steps=run.config.validation_inference_steps,
                    guidance_scale=run.config.validation_guidance_scale,
                    generator=generator,
                )
            images.append(result.images[0])
    finally:
        unet.train()
        if run.ema is not None:
            run.ema.restore(run.params)
    return images


def log_validation(run: _Run, step: int) -> Path:
    """Save the validation grid as PNG (with settings) and log it to TensorBoard."""
    import numpy as np

    from sound2image.outputs import make_grid, save_png

    images = validation_images(run)
    grid = make_grid(images, labels=run.validation_names)
    path = run.run_dir / "validation" / f"step-{step:07d}.png"
    metadata = {
        "step": step,
        "audios": run.validation_names,
        "prompt": run.config.prompt,
        "seed": run.config.seed,
        "guidance_scale": run.config.validation_guidance_scale,
        "steps": run.config.validation_inference_steps,
    }
    save_png(grid, path, metadata, overwrite=True)
    if run.accelerator.trackers:
        tracker = run.accelerator.get_tracker("tensorboard", unwrap=True)
        tracker.add_images(
            "validation", np.stack([np.asarray(im) for im in images]), step, dataformats="NHWC"
        )
    return path


def append_metrics(run: _Run, step: int, loss: float, lr: float) -> None:
    with open(run.run_dir / METRICS_FILE, "a") as handle:
        handle.write(json.dumps({"step": step, "loss": loss, "lr": lr}) + "\n")


def _truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop metric lines after the resumed checkpoint (they are recomputed)."""
    path = run_dir / METRICS_FILE
    if path.is_file():
        lines = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in lines))


def report_bad_items(run: _Run) -> list[str]:
    lines = run.cached.bad.lines()
    if lines and run.accelerator.is_main_process:
        (run.run_dir / BAD_ITEMS_FILE).write_text("".join(line + "\n" for line in lines))
        print(f"{run.cached.bad.summary()} (listed in {run.run_dir / BAD_ITEMS_FILE}):", file=sys.stderr)
        for line in lines[:10]:
            print(f"  {line}", file=sys.stderr)
    return lines


# --- the loop -------------------------------------------------------------------------------------


def export_run(run: _Run, steps: int) -> Path | None:
    """Write the export (main process) with EMA weights if used; returns its directory."""
    from sound2image.training.export import export_soundiff

    run.accelerator.wait_for_everyone()
    if not run.accelerator.is_main_process:
        return None
    unet = run.accelerator.unwrap_model(run.unet)
    if run.ema is not None:
        run.ema.copy_to(run.params)
    record = {
        "base_model": run.config.base_model or getattr(run.pipe.info, "model", None),
        "variant": run.config.variant,
        "prompt": run.config.prompt,
        "steps": steps,
        "epochs": run.plan.epoch_of(steps - 1) + 1 if steps else 0,
        "ema": run.config.ema,
        "lora_rank": run.config.lora_rank,
        "calibration": asdict(run.calibration),
        "training_config": run.config.to_dict(),
    }
    return export_soundiff(unet, run.run_dir, calibration=run.calibration, record=record)


StepHook = Callable[[int, float, Any], None]


def train(
    config: SounDiffTrainConfig,
    *,
    pipeline: Any | None = None,
    on_step_end: StepHook | None = None,
) -> TrainResult:
    """Run (or resume) a fine-tuning run and export the result.

    Args:
        config: the settings (variant defaults are filled in).
        pipeline: a ready ``SounDiffPipeline`` to fine-tune (tests, notebooks); by default the base model
            ``config.base_model`` is loaded.
        on_step_end: called as ``hook(step, loss, run)`` after every update (after its checkpoint).

    Raises:
        TrainingDivergedError: the loss became NaN/Inf (nothing is saved after it).
        Sound2ImageError: bad data, settings or weights (one line naming the problem).
    """
    config = config.resolved()
    run_dir = Path(config.output_dir)
    accelerator = make_accelerator(config, run_dir)
    resume = check_output_dir(config, run_dir)
    announce_processes(  # refuses a launch whose processes do not form one run
        "train soundiff",
        accelerator.num_processes,
        accelerator.device.type,
        config.batch_size,
        accumulation=config.gradient_accumulation_steps,
        is_main_process=accelerator.is_main_process,
        label=f"SounDiff-{config.variant}",
    )
    # Data and weights are checked before anything is written: a failed start leaves no run behind.
    data = select_pairs(config, run_dir)
    pipe = pipeline if pipeline is not None else load_base_pipeline(config)
    accelerator.wait_for_everyone()  # every process has checked before the main one writes
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        config.save(run_dir / CONFIG_FILE)
        if not (run_dir / SPLIT_FILE).is_file():
            data.split.save(run_dir / SPLIT_FILE)
    accelerator.wait_for_everyone()
    run = setup_run(config, data, pipe, accelerator, run_dir)
    bad_lines = report_bad_items(run)
    start = load_checkpoint(run, resume) if resume is not None else 0
    if accelerator.is_main_process:
        _truncate_metrics(run_dir, start)
    if accelerator.trackers == [] and accelerator.log_with:
        accelerator.init_trackers("soundiff", config={k: str(v) for k, v in config.to_dict().items()})
    _loop(run, start, on_step_end)
    export_dir = export_run(run, run.plan.total_steps)
    accelerator.end_training()
    unet = accelerator.unwrap_model(run.unet)
    return TrainResult(run.losses, run.plan.total_steps, export_dir, unet, bad_lines, run)


def _loop(run: _Run, start: int, on_step_end: StepHook | None) -> None:
    from tqdm.auto import tqdm

    config, accelerator, plan = run.config, run.accelerator, run.plan
    bar = tqdm(
        total=plan.total_steps,
        initial=start,
        desc=f"SounDiff-{config.variant}",
        unit="step",
        disable=not (config.progress and accelerator.is_main_process),
    )
    for step in range(start, plan.total_steps):
        loss = train_step(run, step)
        run.losses.append(loss)
        done = step + 1
        lr = learning_rate_at(config, step, plan.total_steps)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", epoch=plan.epoch_of(step))
        accelerator.log({"train/loss": loss, "train/lr": lr}, step=done)
        if accelerator.is_main_process:
            append_metrics(run, done, loss, lr)
        if done % config.checkpointing_steps == 0 or done == plan.total_steps:
            save_checkpoint(run, done)
        if (
            config.validation_steps
            and run.validation_embeds is not None
            and done % config.validation_steps == 0
        ):
            if accelerator.is_main_process:
                log_validation(run, done)
            accelerator.wait_for_everyone()
        if on_step_end is not None:
            on_step_end(done, loss, run)
    bar.close()
