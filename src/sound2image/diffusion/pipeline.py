"""SounDiff: sound -> ImageBind audio embedding -> calibrated conditioning -> image.

The generator is a backbone (:mod:`sound2image.diffusion.backbones`): SD 2.1 unCLIP by default (the
conditioning goes in as ``image_embeds``), or SD 1.5 / SDXL with a ViT-H IP-Adapter
(``ip_adapter_image_embeds``); what follows describes the default, and holds for each backbone.

:class:`SounDiffPipeline` receives its three components — a diffusers
``StableUnCLIPImg2ImgPipeline``, an ImageBind audio encoder and an
:class:`~sound2image.diffusion.calibration.EmbeddingCalibration` — and never builds them while
generating. The denoising itself is diffusers' own ``StableUnCLIPImg2ImgPipeline.__call__`` (given
our embedding it produces bit-identical images; tests/diffusion checks this), so the pipeline adds
only the audio branch, the calibrated mixing and the bookkeeping around it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sound2image import __version__
from sound2image.diffusion.backbones import (
    Backbone,
    IPAdapterBackbone,
    UnCLIPBackbone,
    backbone_class,
    local_calibration_dirs,
)
from sound2image.diffusion.calibration import EmbeddingCalibration
from sound2image.diffusion.conditioning import encode_images, mix_embeddings
from sound2image.diffusion.loading import (
    DEFAULT_AUDIO_ENCODER,
    PIPELINE_CONFIG,
    TRAINING_CONFIG,
    ModelSource,
    hub_kwargs,
    is_offline,
    resolve_pipeline_source,
    resolve_unet_source,
    weights_error,
)
from sound2image.diffusion.record import (
    LOW_MEMORY_OPTIONS,
    GenerationRecord,
    GenerationSettings,
    describe_audio,
)
from sound2image.errors import Sound2ImageError, UsageError, WeightsError
from sound2image.hub import held_library_logs
from sound2image.seeds import candidate_seed
from sound2image.validation import check_finite_values, check_int, check_number, check_positive_int

AUDIO_ENCODER_FOLDER = "audio_encoder"

#: Scheduler names we accept -> (diffusers class, extra config). Each is built with ``from_config``
#: from the model's own scheduler config, so the prediction type (v-prediction for SD 2.1) carries over.
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpm++": ("DPMSolverMultistepScheduler", {}),
    "dpm++-karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "unipc": ("UniPCMultistepScheduler", {}),
}

AudioInput = Any  # path | bytes | file-like | AudioClip | (np.ndarray, sample_rate)

#: Seeds ``torch.Generator.manual_seed`` takes whatever the platform: 0 .. 2**63 - 1.
SEED_RANGE = {"minimum": 0, "maximum": 2**63 - 1}


@dataclass
class SounDiffOutput:
    """What one pipeline call returns.

    Attributes:
        images: the generated images (PIL images, or a (B, H, W, 3) float array for ``output_type="np"``).
        image_embeds: (N, D) float32 CPU tensor, the conditioning that was used (N = 1 for audio).
        records: one :class:`GenerationRecord` per image, in the order of ``images``.
        candidates: with ``candidates`` > 1, every draw (draw k at index k, in ``images``' type); else None.
    """

    images: Any
    image_embeds: torch.Tensor
    records: list[GenerationRecord] = field(default_factory=list)
    candidates: list[Any] | None = None


@dataclass
class PipelineInfo:
    """Provenance of a pipeline's weights, recorded in every image's metadata and in ``save_pretrained``."""

    model: str = "(in memory)"
    revision: str | None = None
    unet: str | None = None
    unet_revision: str | None = None
    audio_encoder: str = DEFAULT_AUDIO_ENCODER
    training_config: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _is_single_audio(audio: Any) -> bool:
    """One audio input (a path, bytes, a clip, an (array, rate) pair) rather than a list of them."""
    if isinstance(audio, tuple) and len(audio) == 2 and isinstance(audio[0], np.ndarray):
        return True
    return not isinstance(audio, (list, tuple))


class SounDiffPipeline:
    """Generate images from sounds with an image generator conditioned on ImageBind audio embeddings.

    The generator is a :class:`~sound2image.diffusion.backbones.Backbone`: SD 2.1 unCLIP (the default),
    or an SD 1.5 / SDXL pipeline with a ViT-H IP-Adapter; everything else (encoding, mixing,
    calibration, best-of-N, records) is the same for all of them.

    Args:
        unclip (`diffusers.StableUnCLIPImg2ImgPipeline`, *optional*): the unCLIP generator; its
            ``image_encoder`` must be present (diffusers needs it even when embeddings are passed, and
            image mixing uses it). Give this or ``backbone``.
        audio_encoder (`ImageBindAudioEncoder`, *optional*): turns sounds into (N, 1024) embeddings; only
            needed for audio inputs (not for regenerating from a stored embedding).
        calibration (`EmbeddingCalibration`, *optional*, defaults to ``EmbeddingCalibration()``): the norm
            the conditioning vectors are put on; the default (20, ImageBind's own scale) is uncalibrated.
        info (`PipelineInfo`, *optional*): where the weights came from, for metadata.
        backbone (`Backbone`, *optional*): the generator as a backbone (e.g. an ``SD15IPBackbone``);
            default: ``UnCLIPBackbone(unclip)``.
    """

    def __init__(
        self,
        unclip: Any = None,
        audio_encoder: Any = None,
        calibration: EmbeddingCalibration | None = None,
        info: PipelineInfo | None = None,
        *,
        backbone: Backbone | None = None,
    ) -> None:
        if (unclip is None) == (backbone is None):
            raise UsageError("give exactly one of unclip or backbone")
        self.backbone = backbone if backbone is not None else UnCLIPBackbone(unclip)
        self.audio_encoder = audio_encoder
        self.calibration = calibration or EmbeddingCalibration()
        self.info = info or PipelineInfo()
        #: Which low-memory options are on (recorded with every image: on a GPU they change the kernels).
        self.low_memory = dict.fromkeys(LOW_MEMORY_OPTIONS, False)
        # Our callers show their own progress (per item); the per-step bar would interleave with it.
        self.unclip.set_progress_bar_config(disable=True)

    # ------------------------------------------------------------------ properties and settings

    @property
    def unclip(self) -> Any:
        """The backbone's diffusers pipeline (the unCLIP pipeline for the default backbone; the name is
        kept so existing callers work with every backbone)."""
        return self.backbone.pipe

    @unclip.setter
    def unclip(self, pipe: Any) -> None:
        self.backbone.pipe = pipe

    @property
    def default_guidance_scale(self) -> float:
        """The backbone's usual guidance (10 for unCLIP, 7.5 for SD 1.5, 5 for SDXL)."""
        return self.backbone.default_guidance_scale

    @property
    def device(self) -> torch.device:
        """Where the denoising runs (honours model and sequential CPU offload)."""
        # diffusers' `_execution_device` walks every submodule (~4 ms on the tiny model, measured); without
        # offload hooks the U-Net's own device is the answer, so ask diffusers only when offloading.
        if getattr(self.unclip, "_offload_device", None) is not None:
            return self.unclip._execution_device
        return next(self.unclip.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unclip.unet.parameters()).dtype

    @property
    def default_size(self) -> int:
        """The model's native image size (768 for SD 2.1 unCLIP, 512 for SD 1.5, 1024 for SDXL)."""
        return self.backbone.default_size

    @property
    def embedding_dim(self) -> int:
        return self.backbone.embedding_dim

    @property
    def scheduler_name(self) -> str:
        """Our name of the current scheduler (the class name when it is not in ``SCHEDULERS``)."""
        scheduler = self.unclip.scheduler
        cls = type(scheduler).__name__
        for name, (class_name, extra) in SCHEDULERS.items():
            if class_name == cls and all(scheduler.config.get(k) == v for k, v in extra.items()):
                if not extra and scheduler.config.get("use_karras_sigmas"):
                    continue
                return name
        return cls

    def set_scheduler(self, name: str) -> str:
        """Swap the denoising scheduler by name (see ``SCHEDULERS``), keeping the model's config."""
        if name not in SCHEDULERS:
            raise UsageError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
        import diffusers

        class_name, extra = SCHEDULERS[name]
        # Karras sigmas are a per-name choice: do not inherit them from the scheduler being replaced.
        config = {k: v for k, v in self.unclip.scheduler.config.items() if k != "use_karras_sigmas"}
        self.unclip.scheduler = getattr(diffusers, class_name).from_config(config, **extra)
        return name

    def to(
        self, device: str | torch.device | None = None, dtype: torch.dtype | None = None
    ) -> SounDiffPipeline:
        """Move the generator (and cast it to ``dtype``); the audio encoder moves but stays float32."""
        self.unclip.to(device=device, dtype=dtype)
        if self.audio_encoder is not None and device is not None:
            self.audio_encoder.to(device)
        return self

    def enable_low_memory(
        self, cpu_offload: bool = False, attention_slicing: bool = False, vae_tiling: bool = False
    ) -> None:
        """Trade speed for memory so 768×768 fits an 8 GB GPU (model offload + slicing + tiling).

        Raises:
            UsageError: ``attention_slicing`` with an IP-Adapter backbone (diffusers' sliced attention
                processor replaces the adapter's, which drops the sound's image branch).
        """
        if attention_slicing and isinstance(self.backbone, IPAdapterBackbone):
            raise _slicing_error(self.backbone.name)
        if cpu_offload:
            self.unclip.enable_model_cpu_offload()
        if attention_slicing:
            self.unclip.enable_attention_slicing()
        if vae_tiling:
            self.unclip.vae.enable_tiling()
        for name, on in zip(LOW_MEMORY_OPTIONS, (cpu_offload, attention_slicing, vae_tiling), strict=True):
            self.low_memory[name] = self.low_memory[name] or bool(on)

    # ------------------------------------------------------------------ conditioning

    def encode_audio(
        self, audio: AudioInput | Sequence[AudioInput], batch_size: int = 8, channel: str | int | None = None
    ) -> torch.Tensor:
        """(K, D) raw ImageBind embeddings (norm 20) of one or several audio inputs.

        ``channel`` overrides the encoder's channel policy (default ``audio_encoder.config.channel``:
        "mean", the down-mix; "first" reads channel 0 as ImageBind's reference; or an index).
        """
        if self.audio_encoder is None:
            raise UsageError(
                "this pipeline was loaded without an audio encoder; it can only use stored embeddings"
            )
        batch_size = check_positive_int("batch_size", batch_size)
        items = [audio] if _is_single_audio(audio) else list(audio)
        device = next(self.audio_encoder.parameters()).device
        embeds = self.audio_encoder.embed(items, batch_size=batch_size, device=device, channel=channel)
        return embeds.float().cpu()

    def encode_image(self, image: Any) -> torch.Tensor:
        """(1, D) embedding of a PIL image through the pipeline's own image encoder (CLIP scale; for an
        IP-Adapter backbone, the adapter's ViT-H image encoder)."""
        return encode_images(self.backbone.image_encoder_owner, [image])

    def build_image_embeds(
        self,
        audio: AudioInput | Sequence[AudioInput],
        audio_weights: Sequence[float] | None = None,
        image: Any = None,
        image_weight: float = 0.5,
        batch_size: int = 8,
    ) -> torch.Tensor:
        """The calibrated (1, D) conditioning for audio (+ weights) and an optional reference image."""
        audio_embeds = self.encode_audio(audio, batch_size=batch_size)  # (K, D)
        image_embed = self.encode_image(image) if image is not None else None  # (1, D)
        return mix_embeddings(audio_embeds, self.calibration, audio_weights, image_embed, image_weight)

    # ------------------------------------------------------------------ generation

    def __call__(
        self,
        audio: AudioInput | Sequence[AudioInput] | None = None,
        *,
        audio_weights: Sequence[float] | None = None,
        image: Any = None,
        image_weight: float = 0.5,
        image_embeds: torch.Tensor | None = None,
        prompt: str = "",
        negative_prompt: str | None = None,
        num_inference_steps: int = 20,
        guidance_scale: float | None = None,
        noise_level: int = 0,
        height: int | None = None,
        width: int | None = None,
        num_images_per_prompt: int = 1,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        candidates: int = 1,
    ) -> SounDiffOutput:
        """Generate images from audio (or from a stored conditioning embedding).

        Args:
            audio (path, bytes, file-like, `AudioClip`, `(np.ndarray, int)`, or a list of them, *optional*):
                the sound(s); several are blended with ``audio_weights``. Give this or ``image_embeds``.
            audio_weights (`Sequence[float]`, *optional*, defaults to equal weights): one proportion
                per audio, each finite and >= 0, with a positive sum.
            image (`PIL.Image.Image`, *optional*, defaults to None): a reference image mixed into the
                conditioning through the pipeline's own image encoder.
            image_weight (`float`, *optional*, defaults to 0.5): the image's proportion of the mix, in [0, 1].
            image_embeds (`torch.Tensor` of shape (N, D), *optional*): ready conditioning vectors, used
                exactly as given (no calibration), e.g. one read back from an image's metadata. Each of the
                N rows gives ``num_images_per_prompt`` images, in row order (row 0's images first), and
                ``prompt``/``negative_prompt`` apply to every row — what plain diffusers'
                ``StableUnCLIPImg2ImgPipeline`` gives for these rows and ``prompt=[prompt] * N``.
            prompt (`str`, *optional*, defaults to ""): text prompt; "" is the unconditional prompt.
            negative_prompt (`str`, *optional*, defaults to None): what to steer away from (with guidance).
            num_inference_steps (`int`, *optional*, defaults to 20): denoising steps.
            guidance_scale (`float`, *optional*, defaults to the backbone's: 10.0 for unCLIP, 7.5 for
                SD 1.5, 5.0 for SDXL): classifier-free guidance, finite and >= 0; > 1 enables it.
            noise_level (`int`, *optional*, defaults to 0): unCLIP noise added to the embedding, an integer
                in 0..999 (0 .. the image noising scheduler's ``num_train_timesteps`` - 1).
            height (`int`, *optional*, defaults to the model's native size): a positive multiple of 8.
            width (`int`, *optional*, defaults to the model's native size): a positive multiple of 8.
            num_images_per_prompt (`int`, *optional*, defaults to 1): images per conditioning row, all
                drawn from one generator.
            seed (`int`, *optional*, defaults to None): seeds a CPU ``torch.Generator`` (ignored when
                ``generator`` is given); None draws from torch's global generator.
            generator (`torch.Generator` or a list of them, *optional*, defaults to None): the random
                source; a list holds one generator per image (N · ``num_images_per_prompt``), so each image
                depends only on its own generator (diffusers' convention).
            latents (`torch.Tensor`, *optional*, defaults to None): initial latents (finite).
            output_type (`str`, *optional*, defaults to "pil"): "pil", "np" or "latent".
            candidates (`int`, *optional*, defaults to 1): best-of-N. N > 1 draws N images of the one
                conditioning row — draw k seeded ``candidate_seed(seed, k)`` (draw 0 is the plain image of
                ``seed``), each exactly the single image of its own seed — and keeps the one whose
                embedding through the pipeline's own image encoder has the highest cosine with the
                conditioning vector. Needs ``seed``, one image per call and no ``generator``/``latents``.

        Returns:
            `SounDiffOutput` with ``images``, the ``image_embeds`` used and one ``records`` entry per image
            (a :class:`GenerationRecord`: settings, seed, model, sounds, conditioning, best-of-N scores).

        Raises:
            UsageError: one line naming the parameter, for a value that is not finite or out of range
                (e.g. ``guidance_scale must be finite and >= 0, got nan``) or a conditioning of the wrong
                shape or with NaN/infinity in it.
        """
        # 1. Check inputs (every number: finite and in range, the message names the parameter)
        if (audio is None) == (image_embeds is None):
            raise UsageError("give exactly one of audio or image_embeds")
        settings = self._check_call_settings(
            num_inference_steps=num_inference_steps,
            guidance_scale=self.default_guidance_scale if guidance_scale is None else guidance_scale,
            noise_level=noise_level,
            height=height,
            width=width,
            num_images_per_prompt=num_images_per_prompt,
            image_weight=image_weight,
            seed=seed,
        )
        if latents is not None:
            check_finite_values("latents", latents)
        candidates = check_positive_int("candidates", candidates)

        # 2. Build the conditioning: audio embeddings -> weighted mix (+ image) -> calibrated norm
        if image_embeds is None:
            image_embeds = self.build_image_embeds(audio, audio_weights, image, image_weight)
            check_finite_values("the conditioning built from audio", image_embeds)
        else:
            image_embeds = self._check_image_embeds(image_embeds)
        conditioning = image_embeds.detach().float().cpu()  # (N, D)
        rows = conditioning.shape[0]
        if candidates > 1:
            kept = self._best_of(conditioning, candidates, settings, prompt, negative_prompt, output_type)
            return self._with_records(kept, settings, prompt, negative_prompt, audio, audio_weights, image)

        # 3. Cast: diffusers does not move passed embeddings to the pipeline's device/dtype
        embeds = conditioning.to(device=self.device, dtype=self.dtype)

        # 4. Random source: a CPU generator gives the same noise on every device
        generator_given = generator
        if generator is None and seed is not None:
            generator = torch.Generator("cpu").manual_seed(settings["seed"])
        if isinstance(generator, (list, tuple)):
            images = rows * settings["num_images_per_prompt"]
            if len(generator) != images:
                raise UsageError(
                    f"generator: a list needs one generator per image ({rows} rows x "
                    f"{settings['num_images_per_prompt']} images = {images}), got {len(generator)}"
                )
            generator = list(generator)

        # 5. Prompts: diffusers batches prompts and repeats each embedding row num_images_per_prompt
        # times, so N rows need N prompts (a plain string stands for one row only).
        prompts: str | list[str] = prompt if rows == 1 else [prompt] * rows
        negatives: str | list[str] | None = negative_prompt
        if rows > 1 and negative_prompt is not None:
            negatives = [negative_prompt] * rows

        # 6. Denoise and decode with diffusers' own loop; the backbone turns the rows into its call's
        # conditioning (unCLIP: image_embeds; IP-Adapter: ip_adapter_image_embeds)
        conditioning_kwargs = self.backbone.call_kwargs(
            embeds,
            prompts,
            negatives,
            settings["num_images_per_prompt"],
            settings["guidance_scale"],
            settings["noise_level"],
        )
        result = self.unclip(
            num_inference_steps=settings["num_inference_steps"],
            guidance_scale=settings["guidance_scale"],
            height=settings["height"],
            width=settings["width"],
            generator=generator,
            latents=latents,
            output_type=output_type,
            **conditioning_kwargs,
        )

        # 7. Package the output with the conditioning that produced it and each image's record
        output = SounDiffOutput(images=result.images, image_embeds=conditioning)
        # A seed redraws an image on its own only when it seeded that one image alone.
        alone = rows * settings["num_images_per_prompt"] == 1 and generator_given is None and latents is None
        settings = {**settings, "seed": settings["seed"] if alone else None}
        return self._with_records(output, settings, prompt, negative_prompt, audio, audio_weights, image)

    def _best_of(
        self,
        conditioning: torch.Tensor,
        candidates: int,
        settings: dict[str, Any],
        prompt: str,
        negative_prompt: str | None,
        output_type: str,
    ) -> SounDiffOutput:
        """Draw ``candidates`` images (draw k seeded ``candidate_seed(seed, k)``, each a call of its own,
        so it is exactly the single image of that seed) and keep the one closest to the conditioning."""
        from PIL import Image

        if settings["seed"] is None or settings["num_images_per_prompt"] != 1 or conditioning.shape[0] != 1:
            raise UsageError(
                "candidates > 1 needs a seed (each draw's seed derives from it) and one image per call "
                "(one conditioning row, num_images_per_prompt=1)"
            )
        if output_type == "latent":
            raise UsageError('candidates > 1 scores decoded images; use output_type "pil" or "np"')
        seeds = [candidate_seed(settings["seed"], k) for k in range(candidates)]
        keys = ("num_inference_steps", "guidance_scale", "noise_level", "height", "width")
        kwargs = {k: settings[k] for k in keys}
        draws = [
            self(
                image_embeds=conditioning,
                prompt=prompt,
                negative_prompt=negative_prompt,
                seed=seed,
                output_type=output_type,
                **kwargs,
            ).images
            for seed in seeds
        ]
        pictures = [
            d[0] if output_type == "pil" else Image.fromarray((d[0] * 255).round().astype("uint8"))
            for d in draws
        ]
        embeds = encode_images(self.backbone.image_encoder_owner, pictures)  # (N, D), conditioning space
        scores = torch.nn.functional.cosine_similarity(embeds, conditioning, dim=-1)  # (N,)
        kept = int(scores.argmax())
        best_of = {"candidates": candidates, "seeds": seeds, "scores": [float(v) for v in scores]}
        best_of["kept"] = kept
        output = SounDiffOutput(draws[kept], conditioning, candidates=[d[0] for d in draws])
        output.records = [GenerationRecord(conditioning, best_of=best_of)]  # completed by _with_records
        return output

    def _with_records(
        self,
        output: SounDiffOutput,
        settings: dict[str, Any],
        prompt: str,
        negative_prompt: str | None,
        audio: Any,
        audio_weights: Sequence[float] | None,
        image: Any,
    ) -> SounDiffOutput:
        """``output`` with one :class:`GenerationRecord` per image (image i comes from row
        i // num_images_per_prompt of the conditioning)."""
        sounds: list[dict[str, Any]] = []
        if audio is not None:
            items = [audio] if _is_single_audio(audio) else list(audio)
            weights = list(audio_weights) if audio_weights is not None else [None] * len(items)
            sounds = [describe_audio(item, weight) for item, weight in zip(items, weights, strict=True)]
        encoder_config = getattr(self.audio_encoder, "config", None)
        clips = None
        if encoder_config is not None:
            names = ("clips_per_file", "clip_duration", "clip_layout")
            clips = {k: getattr(encoder_config, k, None) for k in names}
        best_of = output.records[0].best_of if output.records else None
        common = {
            "seed": settings["seed"],
            "settings": GenerationSettings(
                prompt=prompt,
                negative_prompt=negative_prompt,
                num_inference_steps=settings["num_inference_steps"],
                guidance_scale=settings["guidance_scale"],
                noise_level=settings["noise_level"],
                height=settings["height"],
                width=settings["width"],
                scheduler=self.scheduler_name,
            ),
            "model": {
                "pipeline": self.info.model,
                "revision": self.info.revision,
                "unet": self.info.unet,
                "unet_revision": self.info.unet_revision,
                "audio_encoder": self.info.audio_encoder,
                "training": self.info.training_config,
                **self.backbone.record(),
            },
            "calibration": dataclasses.asdict(self.calibration),
            "audio": sounds,
            "image": None if image is None else {"weight": settings["image_weight"]},
            "audio_encoder_clips": clips,
            "audio_channel": getattr(encoder_config, "channel", None),
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "low_memory": dict(self.low_memory),
            "best_of": best_of,
        }
        per_row = settings["num_images_per_prompt"]
        count = len(output.images)
        output.records = [
            GenerationRecord(output.image_embeds[i // per_row][None, :].clone(), **common)
            for i in range(count)
        ]
        return output

    def _check_call_settings(self, **values: Any) -> dict[str, Any]:
        """The numeric settings of :meth:`__call__`, checked (finite, in range) and converted."""
        checked = {
            "num_inference_steps": check_positive_int("num_inference_steps", values["num_inference_steps"]),
            "guidance_scale": check_number("guidance_scale", values["guidance_scale"], minimum=0.0),
            "noise_level": self._check_noise_level(values["noise_level"]),
            "num_images_per_prompt": check_positive_int(
                "num_images_per_prompt", values["num_images_per_prompt"]
            ),
            "image_weight": check_number("image_weight", values["image_weight"], minimum=0.0, maximum=1.0),
            "seed": None if values["seed"] is None else check_int("seed", values["seed"], **SEED_RANGE),
        }
        for name in ("height", "width"):
            value = values[name]
            size = self.default_size if value is None else check_positive_int(name, value)
            if size % 8:
                raise UsageError(f"{name} must be a positive multiple of 8, got {value}")
            checked[name] = size
        return checked

    def _check_noise_level(self, noise_level: Any) -> int:
        """unCLIP's noise level: 0 .. its noising scheduler's timesteps - 1; other backbones take 0 only."""
        if isinstance(self.backbone, UnCLIPBackbone):
            return check_int("noise_level", noise_level, minimum=0, maximum=self.backbone.max_noise_level)
        value = check_int("noise_level", noise_level, minimum=0)
        if value:
            raise UsageError(
                f"noise_level is unCLIP's; the {self.backbone.name} backbone takes 0, got {noise_level}",
                parameters=["noise_level"],
            )
        return value

    def _check_image_embeds(self, image_embeds: Any) -> torch.Tensor:
        """A (N, D) tensor with N >= 1 rows, all finite; UsageError naming ``image_embeds`` otherwise."""
        dim = self.embedding_dim
        if not isinstance(image_embeds, torch.Tensor):
            try:
                image_embeds = torch.as_tensor(np.asarray(image_embeds, dtype=np.float32))
            except (TypeError, ValueError) as error:
                raise UsageError(f"image_embeds must be a (N, {dim}) tensor ({error})") from None
        if image_embeds.ndim != 2 or image_embeds.shape[0] < 1 or image_embeds.shape[-1] != dim:
            raise UsageError(
                f"image_embeds must have shape (N, {dim}) with N >= 1, got {tuple(image_embeds.shape)}"
            )
        check_finite_values("image_embeds", image_embeds)
        return image_embeds

    # ------------------------------------------------------------------ saving and loading

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write a self-contained local pipeline: diffusers format + audio encoder + calibration.

        ``SounDiffPipeline.from_pretrained(directory)`` restores it offline.
        """
        if not isinstance(self.backbone, UnCLIPBackbone):
            raise UsageError(
                f"save_pretrained writes unCLIP pipelines; the {self.backbone.name} backbone is loaded from "
                "its model and adapter (model=..., ip_adapter=...) instead"
            )
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        self.unclip.save_pretrained(root, safe_serialization=True)
        if self.audio_encoder is not None:
            save_audio_encoder(self.audio_encoder, root / AUDIO_ENCODER_FOLDER)
        self.calibration.save(root)
        record = {"format": 1, "package_version": __version__, **dataclasses.asdict(self.info)}
        (root / PIPELINE_CONFIG).write_text(json.dumps(record, indent=2, default=str) + "\n")
        return root

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike[str] | None = None,
        *,
        unet: str | os.PathLike[str] | None = None,
        audio_encoder: Any = None,
        calibration: EmbeddingCalibration | str | os.PathLike[str] | None = None,
        dtype: torch.dtype | str | None = "auto",
        variant: str | None = None,
        revision: str | None = None,
        unet_revision: str | None = None,
        load_audio_encoder: bool = True,
        audio_encoder_weights: str | os.PathLike[str] | None = None,
        device: str | torch.device | None = "auto",
        cpu_offload: bool = False,
        attention_slicing: bool = False,
        vae_tiling: bool = False,
        channel: str | int | None = None,
        backbone: str = "unclip",
        ip_adapter: str | os.PathLike[str] | None = None,
        ip_adapter_revision: str | None = None,
        ip_scale: float = 1.0,
    ) -> SounDiffPipeline:
        """Load a pipeline; with no arguments, the zero-shot baseline (ImageBind-huge + SD 2.1 unCLIP).

        Args:
            model (`str` or path, *optional*, defaults to ``$SOUND2IMAGE_UNCLIP`` or
                ``stabilityai/stable-diffusion-2-1-unclip``): a hub id, a diffusers pipeline directory, or a
                directory written by :meth:`save_pretrained`. With another ``backbone``: its pipeline (any
                SD 1.5 / SDXL hub id or directory; default ``stable-diffusion-v1-5/stable-diffusion-v1-5``
                / ``stabilityai/stable-diffusion-xl-base-1.0``).
            backbone (`str`, *optional*, defaults to "unclip"): the generator: "unclip" (SD 2.1 unCLIP),
                "sd15-ip" or "sdxl-ip" (the pipeline ``model`` with a ViT-H IP-Adapter).
            ip_adapter (`str` or path, *optional*): the IP-Adapter of "sd15-ip"/"sdxl-ip": a weight file
                (its image encoder: ``image_encoder/`` beside it), a local copy of ``h94/IP-Adapter``, a hub
                id or a hub file (``org/name/folder/file.bin``); default ``h94/IP-Adapter`` with
                ``models/ip-adapter_sd15.bin`` / ``sdxl_models/ip-adapter_sdxl_vit-h.bin`` and the ViT-H
                encoder ``models/image_encoder``. A calibration stored beside the weight file is used.
            ip_adapter_revision (`str`, *optional*): hub revision of ``ip_adapter``.
            ip_scale (`float`, *optional*, defaults to 1.0): the adapter's weight, finite and >= 0.
            unet (`str` or path, *optional*): a fine-tuned U-Net — a training export directory, a whole
                pipeline directory or a hub id; its stored calibration is used (training and generation
                must agree on the scale).
            audio_encoder (`ImageBindAudioEncoder`, *optional*): use this encoder instead of loading one.
            calibration (`EmbeddingCalibration`, or a path to a ``sound2image_calibration.json`` file or its
                folder, *optional*): overrides every stored calibration.
            dtype (`torch.dtype` or `str`, *optional*, defaults to "auto"): weights dtype of the generator:
                "auto" (float16 on CUDA, else float32), "fp32"/"float32", "fp16"/"float16", "bf16"/"bfloat16"
                or a ``torch.dtype``; None keeps the weights' own dtype (or "auto" when ``device`` is given).
            variant (`str`, *optional*): diffusers weight variant (e.g. "fp16").
            revision (`str`, *optional*): hub revision of ``model``.
            unet_revision (`str`, *optional*): hub revision of ``unet``.
            load_audio_encoder (`bool`, *optional*, defaults to True): False to skip it (regeneration from
                stored embeddings needs no encoder).
            audio_encoder_weights (`str` or path, *optional*): ImageBind weights file (``imagebind_huge.pth``
                or its audio-only ``.safetensors``) when ``model`` holds no saved audio encoder; default: the
                encoder's own lookup (``$SOUND2IMAGE_IMAGEBIND_WEIGHTS``, its cache, a download).
            device (`str` or `torch.device`, *optional*, defaults to "auto"): where to run: "auto" (CUDA,
                else MPS, else CPU), "cpu", "cuda", "cuda:1", "mps"; None leaves the weights on the CPU as
                loaded (the caller places them, as the trainer does through accelerate).
            cpu_offload (`bool`, *optional*, defaults to False): keep idle models in CPU memory (CUDA only).
            attention_slicing (`bool`, *optional*, defaults to False): compute attention in slices
                (unCLIP only: diffusers' sliced processor would replace an IP-Adapter's).
            vae_tiling (`bool`, *optional*, defaults to False): decode the image in tiles.
            channel (`str` or `int`, *optional*): the audio encoder's channel policy ("mean", "first" or
                an index); default: the encoder's own, or the one a fine-tuned U-Net was trained with.

        Raises:
            UsageError: an unknown or absent device, a half-precision dtype on the CPU, ``cpu_offload``
                without a CUDA device, a calibration path holding no calibration, an unknown backbone,
                or ``unet``/``ip_adapter`` given to a backbone that does not take it.
            WeightsError: the model or adapter weights cannot be found or loaded (one line naming
                ``model`` or ``ip_adapter``), or the adapter is not a ViT-H global-embedding adapter.
        """
        _quiet_torchvision_notice()  # before diffusers imports its pipelines: the notice comes at import
        from diffusers import StableUnCLIPImg2ImgPipeline

        generator_class = backbone_class(backbone)
        if generator_class is not UnCLIPBackbone and unet is not None:
            raise UsageError(f"unet applies to the unclip backbone, not {backbone}", parameters=["unet"])
        if generator_class is UnCLIPBackbone and ip_adapter is not None:
            raise UsageError(
                "ip_adapter applies to the sd15-ip and sdxl-ip backbones, not unclip",
                parameters=["ip_adapter"],
            )

        from sound2image.devices import resolve_device, resolve_dtype

        target = None if device is None else resolve_device(device)
        if target is None:  # not placed: the CPU check applies when the pipeline is moved, not here
            weights_dtype = None if dtype is None else resolve_dtype(dtype, "unplaced")
        else:
            weights_dtype = resolve_dtype(dtype, target)
        if cpu_offload and not str(target).startswith("cuda"):
            # Offloading moves idle models between the GPU and CPU memory; recorded but not applied would lie.
            raise UsageError(
                f"cpu_offload needs a CUDA device (the device is {target or 'cpu'}); leave it out",
                parameters=["cpu_offload"],
            )
        calibration = load_calibration(calibration)
        dtype = weights_dtype
        _quiet_torchvision_notice()

        if issubclass(generator_class, IPAdapterBackbone):
            return cls._from_pretrained_ip(
                generator_class,
                model,
                ip_adapter=ip_adapter,
                ip_adapter_revision=ip_adapter_revision,
                ip_scale=ip_scale,
                audio_encoder=audio_encoder,
                calibration=calibration,
                dtype=dtype,
                variant=variant,
                revision=revision,
                load_audio_encoder=load_audio_encoder,
                audio_encoder_weights=audio_encoder_weights,
                target=target,
                cpu_offload=cpu_offload,
                attention_slicing=attention_slicing,
                vae_tiling=vae_tiling,
                channel=channel,
            )
        source = resolve_pipeline_source(None if model is None else str(model), revision)
        saved = _read_saved_config(source)
        components: dict[str, Any] = {}
        # A hub source without a revision is whatever "main" was at download time; record that much.
        info = PipelineInfo(model=source.name, revision=revision or (None if source.is_local else "main"))
        if saved:
            stored = PipelineInfo(
                **{k: v for k, v in saved.items() if k in PipelineInfo.__dataclass_fields__}
            )
            # The directory itself is the model (its unet/ included: that is what regenerates); keep
            # where its parts came from as provenance.
            extra = {**stored.extra, "saved_from": stored.model, "saved_from_revision": stored.revision}
            extra.update(saved_unet=stored.unet, saved_unet_revision=stored.unet_revision)
            info = dataclasses.replace(
                stored, model=source.name, revision=None, unet=None, unet_revision=None, extra=extra
            )
        export_calibration = None
        if unet is not None:
            components["unet"], info, export_calibration = _load_unet(str(unet), unet_revision, dtype, info)

        kwargs: dict[str, Any] = {**_dtype_kwarg(dtype), "variant": variant, "revision": revision}
        if not source.is_local:
            kwargs.update(hub_kwargs())
        with held_library_logs():  # a failed load says so in one line, without the hub's log lines
            try:
                unclip = StableUnCLIPImg2ImgPipeline.from_pretrained(source.location, **components, **kwargs)
            except (OSError, ValueError, RuntimeError) as error:
                raise weights_error(source, "unCLIP pipeline", error) from error

        if audio_encoder is None and load_audio_encoder:
            audio_encoder = _load_audio_encoder(source, audio_encoder_weights)
            _adopt_training_channel(audio_encoder, info.training_config)
        calibration = calibration or export_calibration
        if calibration is None and source.path is not None:
            calibration = EmbeddingCalibration.load(source.path)
        pipe = cls(unclip, audio_encoder, calibration, info)
        return pipe._placed(channel, target, cpu_offload, attention_slicing, vae_tiling)

    def _placed(
        self,
        channel: str | int | None,
        target: Any,
        cpu_offload: bool,
        attention_slicing: bool,
        vae_tiling: bool,
    ) -> SounDiffPipeline:
        """The last step of loading, for every backbone: the channel policy, the device (or CPU offload, with
        the audio encoder on the device) and the low-memory options; returns ``self``."""
        if self.audio_encoder is not None and channel is not None:
            self.audio_encoder.config = self.audio_encoder.sampling_config(channel=channel)
        if cpu_offload:
            self.enable_low_memory(cpu_offload=True)
            if self.audio_encoder is not None:
                self.audio_encoder.to(target)
        elif target is not None:
            self.to(target)
        self.enable_low_memory(attention_slicing=attention_slicing, vae_tiling=vae_tiling)
        return self

    @classmethod
    def _from_pretrained_ip(
        cls,
        generator_class: type[IPAdapterBackbone],
        model: str | os.PathLike[str] | None,
        *,
        ip_adapter: str | os.PathLike[str] | None,
        ip_adapter_revision: str | None,
        ip_scale: float,
        audio_encoder: Any,
        calibration: EmbeddingCalibration | None,
        dtype: torch.dtype | None,
        variant: str | None,
        revision: str | None,
        load_audio_encoder: bool,
        audio_encoder_weights: str | os.PathLike[str] | None,
        target: Any,
        cpu_offload: bool,
        attention_slicing: bool,
        vae_tiling: bool,
        channel: str | int | None,
    ) -> SounDiffPipeline:
        """:meth:`from_pretrained` for an IP-Adapter backbone (arguments already checked)."""
        if attention_slicing:
            raise _slicing_error(generator_class.name)
        source = resolve_pipeline_source(
            None if model is None else str(model),
            revision,
            default=generator_class.default_model,
            what=generator_class.what,
        )
        kwargs: dict[str, Any] = {**_dtype_kwarg(dtype), "variant": variant, "revision": revision}
        if not source.is_local:
            kwargs.update(hub_kwargs())
        generator = generator_class.load(source, ip_adapter, ip_adapter_revision, ip_scale, kwargs)
        info = PipelineInfo(model=source.name, revision=revision or (None if source.is_local else "main"))
        if generator.adapter is not None and generator.adapter.path is None:
            generator.adapter = dataclasses.replace(
                generator.adapter, revision=generator.adapter.revision or "main"
            )
        if audio_encoder is None and load_audio_encoder:
            audio_encoder = _load_audio_encoder(source, audio_encoder_weights)
        for folder in local_calibration_dirs(source, generator.adapter):
            if calibration is not None:
                break
            calibration = EmbeddingCalibration.load(folder)
        pipe = cls(audio_encoder=audio_encoder, calibration=calibration, info=info, backbone=generator)
        return pipe._placed(channel, target, cpu_offload, attention_slicing, vae_tiling)


# ---------------------------------------------------------------------- regeneration


def regenerate(
    source: GenerationRecord | dict[str, Any] | str | os.PathLike[str],
    pipe: SounDiffPipeline | None = None,
    *,
    model: str | os.PathLike[str] | None = None,
    unet: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = "auto",
    dtype: torch.dtype | str | None = "auto",
    cpu_offload: bool = False,
    attention_slicing: bool = False,
    vae_tiling: bool = False,
    variant: str | None = None,
    ip_adapter: str | os.PathLike[str] | None = None,
) -> SounDiffOutput:
    """Draw an image again from its record alone: bit-identical pixels on the recorded kind of device.

    Args:
        source: a :class:`GenerationRecord`, its ``to_metadata()`` dict, or a PNG written by
            ``sound2image generate`` (its metadata).
        pipe (`SounDiffPipeline`, *optional*): the pipeline to draw with; default: the recorded model
            (``model``/``unet`` override it) loaded without an audio encoder.
        device, dtype: as in :meth:`SounDiffPipeline.from_pretrained`; "auto" (the default) takes the
            recorded kind of device when this machine has one, and the recorded dtype when it runs there
            (a half-precision record falls back to float32 on the CPU). Other devices or dtypes give
            (slightly) different pixels.
        cpu_offload, attention_slicing, vae_tiling: low-memory options switched on besides the recorded
            ones (those are always switched on: on a GPU they change the kernels, so the last bits).
        variant: diffusers weight variant to load.
        ip_adapter: the IP-Adapter to load instead of the recorded one (an IP-Adapter backbone's record);
            the recorded ``ip_scale`` always applies, also to a given ``pipe``.

    Returns:
        `SounDiffOutput` whose ``records[0]`` is the source record with the device, dtype, low-memory
        options and model of this draw.

    Raises:
        UsageError: the source holds no stored conditioning or no seed, or a recorded setting is invalid.
    """
    if isinstance(source, GenerationRecord):
        record = source
    elif isinstance(source, dict):
        record = GenerationRecord.from_metadata(source)
    else:
        record = GenerationRecord.from_png(source)
    if record.draw_seed is None:
        raise UsageError("the record has no seed (its image came from a shared generator); cannot redraw it")
    if pipe is None:
        from sound2image.devices import DTYPES, resolve_device

        if device == "auto":
            kind = record.device.split(":")[0]
            available = {"cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available}
            if kind == "cpu" or (kind in available and available[kind]()):
                device = kind
        recorded = record.dtype in DTYPES.values()
        if dtype == "auto" and recorded and (resolve_device(device) != "cpu" or record.dtype == "float32"):
            dtype = record.dtype
        low = record.low_memory
        pipe = SounDiffPipeline.from_pretrained(
            model or record.model.get("pipeline"),
            unet=unet or record.model.get("unet"),
            revision=None if model else record.model.get("revision"),
            unet_revision=None if unet else record.model.get("unet_revision"),
            **_recorded_backbone(record, ip_adapter),
            dtype=dtype,
            device=device,
            variant=variant,
            load_audio_encoder=False,
            cpu_offload=cpu_offload or low.get("cpu_offload", False),
            attention_slicing=attention_slicing or low.get("attention_slicing", False),
            vae_tiling=vae_tiling or low.get("vae_tiling", False),
        )
    recorded_backbone = record.model.get("backbone", "unclip")
    if pipe.backbone.name != recorded_backbone:
        raise UsageError(
            f"the record was drawn with the {recorded_backbone} backbone; the pipeline given is "
            f"{pipe.backbone.name}"
        )
    previous = pipe.unclip.scheduler
    previous_scale = getattr(pipe.backbone, "ip_scale", None)
    try:
        if record.settings.scheduler and record.settings.scheduler != pipe.scheduler_name:
            pipe.set_scheduler(record.settings.scheduler)
        if previous_scale is not None and record.model.get("ip_scale") is not None:
            pipe.backbone.ip_scale = float(record.model["ip_scale"])
        settings = record.settings.call_kwargs()
        output = pipe(image_embeds=record.image_embeds, seed=record.draw_seed, **settings)
    finally:
        pipe.unclip.scheduler = previous
        if previous_scale is not None:
            pipe.backbone.ip_scale = previous_scale
    drawn = output.records[0]
    extra = {k: v for k, v in record.extra.items() if k != "package_version"}
    output.records = [
        dataclasses.replace(
            record,
            model=drawn.model,
            device=drawn.device,
            dtype=drawn.dtype,
            low_memory=drawn.low_memory,
            extra=extra,
        )
    ]
    return output


# ---------------------------------------------------------------------- loading helpers


def _slicing_error(backbone: str) -> UsageError:
    return UsageError(
        f"attention_slicing: not with the {backbone} backbone (diffusers' sliced attention replaces the "
        "IP-Adapter's attention processors, dropping the sound); leave it out (PyTorch 2's attention "
        "already avoids the full score matrix)",
        parameters=["attention_slicing"],
    )


def _recorded_backbone(record: GenerationRecord, ip_adapter: Any) -> dict[str, Any]:
    """:meth:`SounDiffPipeline.from_pretrained`'s backbone arguments for a record (none for unCLIP: its
    records predate backbones and name none); ``ip_adapter`` overrides the recorded adapter."""
    model = record.model
    name = model.get("backbone", "unclip")
    if name == "unclip":
        if ip_adapter is not None:
            raise UsageError("ip_adapter: the record was drawn with unclip, which takes no adapter")
        return {}
    revision = None
    if ip_adapter is None and model.get("ip_adapter"):
        revision = model.get("ip_adapter_revision")
        folder, weight = model.get("ip_adapter_subfolder") or "", model.get("ip_adapter_weight_name")
        base = Path(model["ip_adapter"])
        if base.is_absolute():  # a local adapter: the weight file itself
            ip_adapter = str(base / folder / weight) if weight else str(base)
        else:  # a hub adapter: org/name/folder/file
            ip_adapter = "/".join(part for part in (model["ip_adapter"], folder, weight) if part)
    return {
        "backbone": name,
        "ip_adapter": ip_adapter,
        "ip_adapter_revision": revision,
        "ip_scale": float(model.get("ip_scale", 1.0)),
    }


def load_calibration(calibration: EmbeddingCalibration | str | os.PathLike[str] | None) -> Any:
    """``calibration`` as an :class:`EmbeddingCalibration`: itself, or the one stored at a path (a
    ``sound2image_calibration.json`` file or its folder); None stays None (the model's own).

    Raises:
        UsageError: the path is another file, or its folder holds no calibration.
    """
    from sound2image.diffusion.calibration import CALIBRATION_FILE

    if calibration is None or isinstance(calibration, EmbeddingCalibration):
        return calibration
    path = Path(calibration)
    if path.is_file() and path.name != CALIBRATION_FILE:
        raise UsageError(f"{path}: expected a {CALIBRATION_FILE} file or its folder")
    loaded = EmbeddingCalibration.load(path if path.is_dir() else path.parent)
    if loaded is None:
        raise UsageError(f"{path}: no {CALIBRATION_FILE} here")
    return loaded


class _TorchvisionNoticeFilter(logging.Filter):
    """Drops transformers' notice that CLIPImageProcessor falls back to its PIL version without torchvision.

    We do not depend on torchvision and the PIL processor is the one we want, so the notice (printed on
    every load) is noise; every other transformers warning still shows.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision (not installed)" not in record.getMessage()


def _quiet_torchvision_notice() -> None:
    target = logging.getLogger("transformers.utils.import_utils")
    if not any(isinstance(f, _TorchvisionNoticeFilter) for f in target.filters):
        target.addFilter(_TorchvisionNoticeFilter())


def _dtype_kwarg(dtype: torch.dtype | None) -> dict[str, Any]:
    """The weights-dtype keyword of diffusers' ``from_pretrained``.

    diffusers 0.42 renamed ``torch_dtype`` to ``dtype`` (and warns on the old name); the older releases
    our pyproject still allows only know ``torch_dtype``.
    """
    from diffusers.utils import deprecation_utils

    return {"dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype": dtype}


def _read_saved_config(source: ModelSource) -> dict[str, Any] | None:
    """The ``sound2image_pipeline.json`` of a saved directory, if ``source`` is one."""
    if source.path is None or not (source.path / PIPELINE_CONFIG).is_file():
        return None
    path = source.path / PIPELINE_CONFIG
    try:
        return json.loads(path.read_text())
    except ValueError as error:
        raise WeightsError(f"{path}: not valid JSON ({error})") from error


def _load_unet(
    unet: str, revision: str | None, dtype: torch.dtype | None, info: PipelineInfo
) -> tuple[Any, PipelineInfo, EmbeddingCalibration | None]:
    """Load a fine-tuned U-Net and what its export says about training (prompt, calibration)."""
    from diffusers import UNet2DConditionModel

    source, subfolder = resolve_unet_source(unet, revision)
    kwargs: dict[str, Any] = {**_dtype_kwarg(dtype), "revision": revision}
    if subfolder:
        kwargs["subfolder"] = subfolder
    if not source.is_local:
        kwargs.update(hub_kwargs())
    with held_library_logs():  # a failed load says so in one line, without the hub's log lines
        try:
            model = UNet2DConditionModel.from_pretrained(source.location, **kwargs)
        except (OSError, ValueError, RuntimeError) as error:
            raise weights_error(source, "fine-tuned U-Net", error) from error
    training_config, calibration = None, None
    if source.path is not None:
        calibration = EmbeddingCalibration.load(source.path)
        if (source.path / TRAINING_CONFIG).is_file():
            training_config = json.loads((source.path / TRAINING_CONFIG).read_text())
    info = dataclasses.replace(
        info,
        unet=source.name,
        unet_revision=revision or (None if source.is_local else "main"),
        training_config=training_config,
    )
    return model, info, calibration


def _adopt_training_channel(encoder: Any, training_record: dict[str, Any] | None) -> None:
    """A fine-tuned U-Net learned on one channel policy (``audio_channel`` in its training config): the
    loaded encoder uses the same one, so generation conditions as training did (``--channel`` overrides)."""
    channel = ((training_record or {}).get("training_config") or {}).get("audio_channel")
    if channel is not None and encoder is not None and hasattr(encoder, "sampling_config"):
        encoder.config = encoder.sampling_config(channel=channel)


def save_audio_encoder(encoder: Any, directory: Path) -> None:
    """The audio encoder's own :meth:`~sound2image.encoders.ImageBindAudioEncoder.save_pretrained`
    directory: ``config.json`` (format marker + config) and ``model.safetensors``."""
    encoder.save_pretrained(directory)


def load_saved_audio_encoder(directory: Path) -> Any:
    """The inverse of :func:`save_audio_encoder` (strict: every key and shape must match)."""
    from sound2image.encoders import ImageBindAudioEncoder

    return ImageBindAudioEncoder.from_pretrained(directory)


def _check_imagebind_available(path: str | os.PathLike[str] | None) -> None:
    """Offline with no ImageBind weights anywhere: say so in our own terms (``from_pretrained``'s)."""
    from sound2image.encoders import weights

    if path is not None or os.environ.get(weights.WEIGHTS_ENV):
        return  # the encoder's loader checks those and names the bad path itself
    folder = weights.weights_cache_dir()
    if any((folder / name).is_file() for name in (weights.HUGE_AUDIO_NAME, weights.HUGE_CHECKPOINT_NAME)):
        return
    if weights.is_offline(is_offline()):
        raise WeightsError(
            f"{DEFAULT_AUDIO_ENCODER}: ImageBind audio weights are not in {folder} and downloads are off; "
            f"put {weights.HUGE_CHECKPOINT_NAME} there, pass audio_encoder_weights=FILE, or set "
            f"{weights.WEIGHTS_ENV}=FILE (one download of 4.5 GB: {weights.IMAGEBIND_HUGE_URL})",
            parameters=["audio_encoder_weights"],
        )


def _load_audio_encoder(source: ModelSource, path: str | os.PathLike[str] | None = None) -> Any:
    """The saved encoder of a local pipeline directory, else ImageBind-huge through the encoder's loader."""
    if (
        path is None
        and source.path is not None
        and (source.path / AUDIO_ENCODER_FOLDER / "config.json").is_file()
    ):
        return load_saved_audio_encoder(source.path / AUDIO_ENCODER_FOLDER)
    from sound2image.encoders import ImageBindAudioEncoder

    _check_imagebind_available(path)
    try:
        return ImageBindAudioEncoder.from_pretrained(path, local_files_only=is_offline())
    except Sound2ImageError:
        raise
    except (OSError, ValueError, RuntimeError) as error:
        raise WeightsError(
            f"{DEFAULT_AUDIO_ENCODER}: could not load the ImageBind-huge audio encoder ({error})"
        ) from error
