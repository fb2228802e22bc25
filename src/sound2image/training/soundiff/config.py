"""The settings of a SounDiff fine-tuning run (:class:`SounDiffTrainConfig`) and the paper's variants."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from sound2image.errors import UsageError
from sound2image.training.rundir import read_config
from sound2image.training.schedules import LR_SHAPES

SATELLITE_PROMPT = "a satellite image with details on the ground"
#: The paper's per-variant settings: batch size, epochs, training prompt.
VARIANTS: dict[str, dict[str, Any]] = {
    "L": {"batch_size": 4, "epochs": 80, "prompt": ""},
    "S": {"batch_size": 2, "epochs": 280, "prompt": SATELLITE_PROMPT},
}
LR_SCHEDULES = LR_SHAPES
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
    base_model: str | None = None  # None: the backbone's default model
    backbone: str = "unclip"  # "sd15-ip" / "sdxl-ip": train only the IP-Adapter of an SD 1.5 / SDXL pipeline
    ip_adapter: str | None = None  # the adapter to start from (IP backbones; None: h94/IP-Adapter's ViT-H)
    ip_scale: float = 1.0  # the adapter's weight in training (and validation)
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
    validation_guidance_scale: float | None = None  # None: the backbone's own (unclip 10, sd15 7.5, sdxl 5)
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
                raise UsageError(f"{name} must be at least 1, got {value}", parameters=[name])
        if not self.data:
            raise UsageError("no training data given (pass data=ROOT_OR_MANIFEST)", parameters=["data"])
        if not self.output_dir:
            raise UsageError("no output directory given (pass output_dir=DIR)", parameters=["output_dir"])
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
        self._check_backbone()
        self.objective_config()  # checks dropout, noise level and SNR gamma
        from sound2image.audio.channels import check_channel

        self.audio_channel = check_channel(self.audio_channel, "audio_channel")

    @property
    def is_ip_adapter(self) -> bool:
        """Whether the run trains an IP-Adapter (``sd15-ip``/``sdxl-ip``) rather than the unCLIP U-Net."""
        return self.backbone != "unclip"

    def _check_backbone(self) -> None:
        from sound2image.diffusion.backbones import backbone_class
        from sound2image.validation import check_number

        backbone_class(self.backbone)  # UsageError naming backbone
        self.ip_scale = check_number("ip_scale", self.ip_scale, minimum=0.0)
        if not self.is_ip_adapter and self.ip_adapter is not None:
            raise UsageError(
                "ip_adapter applies to the sd15-ip and sdxl-ip backbones, not unclip",
                parameters=["ip_adapter"],
            )
        if self.is_ip_adapter and self.lora_rank > 0:
            raise UsageError(
                f"lora_rank: the {self.backbone} backbone trains the IP-Adapter itself (about 22 M values "
                "for SD 1.5); leave lora_rank at 0",
                parameters=["lora_rank"],
            )

    def objective_config(self) -> Any:
        from sound2image.training.objective import ObjectiveConfig

        return ObjectiveConfig(
            conditioning_dropout=self.conditioning_dropout,
            drop_prompt_with_condition=self.drop_prompt_with_condition,
            # unCLIP's embedding noise augmentation; an IP-Adapter reads the embedding as it is.
            max_noise_level=0 if self.is_ip_adapter else self.max_noise_level,
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
            return cls.from_dict(read_config(path))
        except TypeError as error:
            raise UsageError(f"{path}: not a valid training config ({error})") from error
