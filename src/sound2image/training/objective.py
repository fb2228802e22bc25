"""The SounDiff fine-tuning objective (REFERENCE.md §1, §2, §4).

What the public reference code got wrong and this module gets right:

* the latents are noised with the DDPM forward process (``DDPMScheduler`` built from the pipeline's own
  scheduler config), not with an Euler scheduler's ``add_noise`` without input scaling;
* the target follows the scheduler's ``prediction_type``: ``get_velocity`` for ``v_prediction`` (SD 2.1
  unCLIP), the noise for ``epsilon``; anything else is refused;
* the image embedding gets unCLIP's noise augmentation with a random noise level *per sample*, through
  the pipeline's own ``noise_image_embeddings`` (``image_normalizer`` + ``image_noising_scheduler`` +
  the sinusoidal noise-level embedding), exactly as at inference;
* conditioning dropout replaces the whole class label by the all-zero vector that classifier-free
  guidance uses as its unconditional input at inference (p = 0.25 as in the original unCLIP training)
  and, optionally, the prompt by the empty-prompt encoding (the unconditional branch's text);
* the prompt is encoded by the pipeline's ``encode_prompt``, the function generation uses.

All randomness of one step is drawn up front into an :class:`ObjectiveDraw`, from a generator the
caller seeds, so a step can be replayed exactly (resume, multi-process equivalence, tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from sound2image.errors import UsageError

PREDICTION_TYPES = ("v_prediction", "epsilon")


@dataclass(frozen=True)
class ObjectiveConfig:
    """Settings of the loss.

    Attributes:
        conditioning_dropout: probability that a sample's class label (audio embedding + noise level)
            is replaced by the all-zero unconditional label (0.25 as in the original unCLIP training).
        drop_prompt_with_condition: when a sample's condition is dropped, also use the empty-prompt
            encoding, so the dropped sample sees exactly the unconditional branch of guidance.
        max_noise_level: noise levels for the embedding augmentation are drawn uniformly from
            ``[0, max_noise_level)``; 0 disables the augmentation (level 0 for every sample).
        snr_gamma: Min-SNR weighting (Hang et al. 2023) with this gamma; ``None`` for the plain MSE.
    """

    conditioning_dropout: float = 0.25
    drop_prompt_with_condition: bool = True
    max_noise_level: int = 1000
    snr_gamma: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.conditioning_dropout <= 1.0:
            raise UsageError(f"conditioning_dropout must be in [0, 1], got {self.conditioning_dropout}")
        if self.max_noise_level < 0:
            raise UsageError(f"max_noise_level must be >= 0, got {self.max_noise_level}")
        if self.snr_gamma is not None and not self.snr_gamma > 0:
            raise UsageError(f"snr_gamma must be positive, got {self.snr_gamma}")


@dataclass
class ObjectiveDraw:
    """Every random number one step needs, for a batch of B samples."""

    timesteps: torch.Tensor  # (B,) int64, DDPM timesteps of the latents
    noise: torch.Tensor  # (B, C, h, w) the latent noise ε
    latent_noise: torch.Tensor  # (B, C, h, w) sample from the VAE posterior: mean + std * latent_noise
    noise_levels: torch.Tensor  # (B,) int64, unCLIP noise augmentation level per sample
    embed_noise: torch.Tensor  # (B, D) noise for the embedding augmentation
    drop: torch.Tensor  # (B,) bool, condition replaced by the unconditional input

    def slice(self, start: int, stop: int) -> ObjectiveDraw:
        """The draw of samples ``start:stop`` (one process's share of a global batch)."""
        return ObjectiveDraw(**{name: value[start:stop] for name, value in vars(self).items()})

    def to(self, device: torch.device | str) -> ObjectiveDraw:
        return ObjectiveDraw(**{name: value.to(device) for name, value in vars(self).items()})


@dataclass
class ObjectiveOutput:
    """The scalar loss and what went into it (for logging and tests)."""

    loss: torch.Tensor  # () weighted mean over the batch
    per_sample: torch.Tensor  # (B,) unweighted MSE of each sample
    model_pred: torch.Tensor
    target: torch.Tensor


class _DiffusionObjective:
    """What every SounDiff objective shares: the DDPM forward process of the pipeline's own schedule,
    the prediction-type target, Min-SNR weights and the up-front draw of a step's randomness."""

    def __init__(self, pipeline: Any, config: ObjectiveConfig | None = None) -> None:
        from diffusers import DDPMScheduler

        self.pipeline = pipeline
        self.config = config or ObjectiveConfig()
        # Train with the DDPM forward process of the pipeline's own schedule (betas, prediction type).
        self.noise_scheduler = DDPMScheduler.from_config(pipeline.scheduler.config)
        self.prediction_type = self.noise_scheduler.config.prediction_type
        if self.prediction_type not in PREDICTION_TYPES:
            raise UsageError(
                f"scheduler prediction_type {self.prediction_type!r} is not supported for training "
                f"(supported: {', '.join(PREDICTION_TYPES)})"
            )
        self.num_train_timesteps = int(self.noise_scheduler.config.num_train_timesteps)

    def _noised(
        self, latent_mean: torch.Tensor, latent_std: torch.Tensor, draw: ObjectiveDraw
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(noisy latents, target): a VAE posterior sample scaled as the pipeline decodes, noised."""
        scaling = float(self.pipeline.vae.config.scaling_factor)
        latents = (latent_mean + latent_std * draw.latent_noise) * scaling  # (B, C, h, w)
        noisy = self.noise_scheduler.add_noise(latents, draw.noise, draw.timesteps)
        return noisy, self.target(latents, draw.noise, draw.timesteps)

    def _weighted(
        self, model_pred: torch.Tensor, target: torch.Tensor, timesteps: torch.Tensor
    ) -> ObjectiveOutput:
        per_sample = F.mse_loss(model_pred.float(), target.float(), reduction="none").mean(
            dim=(1, 2, 3)
        )  # (B,)
        loss = (per_sample * self.snr_weights(timesteps)).mean()
        return ObjectiveOutput(loss=loss, per_sample=per_sample, model_pred=model_pred, target=target)

    # --- randomness ------------------------------------------------------------------------------

    def draw(
        self, batch_size: int, latent_shape: tuple[int, ...], embed_dim: int, generator: torch.Generator
    ) -> ObjectiveDraw:
        """Draw the randomness of one batch on the CPU (device-independent, reproducible)."""
        shape = (batch_size, *latent_shape)
        timesteps = torch.randint(0, self.num_train_timesteps, (batch_size,), generator=generator)
        noise = torch.randn(shape, generator=generator)
        latent_noise = torch.randn(shape, generator=generator)
        if self.config.max_noise_level > 0:
            noise_levels = torch.randint(0, self.config.max_noise_level, (batch_size,), generator=generator)
        else:
            noise_levels = torch.zeros(batch_size, dtype=torch.long)
        embed_noise = torch.randn((batch_size, embed_dim), generator=generator)
        drop = torch.rand(batch_size, generator=generator) < self.config.conditioning_dropout
        return ObjectiveDraw(timesteps, noise, latent_noise, noise_levels, embed_noise, drop)

    def target(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The regression target the scheduler's prediction type asks for."""
        if self.prediction_type == "v_prediction":
            return self.noise_scheduler.get_velocity(latents, noise, timesteps)
        return noise

    def snr_weights(self, timesteps: torch.Tensor) -> torch.Tensor:
        """(B,) Min-SNR-γ loss weights (ones without ``snr_gamma``).

        Adapted from diffusers ``examples/text_to_image/train_text_to_image.py``: min(SNR, γ)/SNR for
        epsilon, min(SNR, γ)/(SNR + 1) for v-prediction.
        """
        if self.config.snr_gamma is None:
            return torch.ones(timesteps.shape[0], device=timesteps.device)
        from diffusers.training_utils import compute_snr

        snr = compute_snr(self.noise_scheduler, timesteps)
        clipped = torch.clamp(snr, max=self.config.snr_gamma)
        if self.prediction_type == "v_prediction":
            return clipped / (snr + 1)
        return clipped / snr


class SounDiffObjective(_DiffusionObjective):
    """The training loss of a ``StableUnCLIPImg2ImgPipeline``'s U-Net on cached latents and embeddings.

    Args:
        pipeline: the (frozen) unCLIP pipeline whose scheduler config, prompt encoder and embedding
            noising the loss uses. Its U-Net is not used: the trained one is passed to :meth:`loss`.
        config: the loss settings.
    """

    def __init__(self, pipeline: Any, config: ObjectiveConfig | None = None) -> None:
        super().__init__(pipeline, config)
        max_level = int(pipeline.image_noising_scheduler.config.num_train_timesteps)
        if self.config.max_noise_level > max_level:
            raise UsageError(
                f"max_noise_level {self.config.max_noise_level} exceeds the pipeline's {max_level}"
            )

    # --- conditioning ----------------------------------------------------------------------------

    @torch.no_grad()
    def encode_prompt(self, prompt: str, device: torch.device | str) -> torch.Tensor:
        """(1, L, D_text): the prompt encoded exactly as generation encodes its conditional branch."""
        prompt_embeds, _ = self.pipeline.encode_prompt(
            prompt=prompt, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        return prompt_embeds.float()

    def unconditional_prompt(self, device: torch.device | str) -> torch.Tensor:
        """(1, L, D_text): the empty prompt's encoding (guidance's unconditional text)."""
        return self.encode_prompt("", device)

    @torch.no_grad()  # the conditioning is an input: no gradient flows into the normalizer
    def class_labels(self, image_embeds: torch.Tensor, draw: ObjectiveDraw) -> torch.Tensor:
        """(B, 2D) class labels: noised embedding ‖ noise-level embedding, zeros where dropped.

        Reuses ``StableUnCLIPImg2ImgPipeline.noise_image_embeddings`` (one call per sample because it
        takes a single noise level per call) so training sees exactly what inference computes.
        """
        rows = [
            self.pipeline.noise_image_embeddings(
                image_embeds[i : i + 1], int(draw.noise_levels[i]), noise=draw.embed_noise[i : i + 1]
            )
            for i in range(image_embeds.shape[0])
        ]
        labels = torch.cat(rows, dim=0)  # (B, 2D)
        # The unconditional input of guidance is torch.zeros_like(class label) (pipeline._encode_image).
        return torch.where(draw.drop[:, None], torch.zeros_like(labels), labels)

    # --- loss ------------------------------------------------------------------------------------

    def loss(
        self,
        unet: torch.nn.Module,
        latent_mean: torch.Tensor,
        latent_std: torch.Tensor,
        image_embeds: torch.Tensor,
        prompt_embeds: torch.Tensor,
        empty_prompt_embeds: torch.Tensor,
        draw: ObjectiveDraw,
    ) -> ObjectiveOutput:
        """The loss of ``unet`` on one batch.

        Args:
            unet: the U-Net being trained (may be wrapped by DDP / peft).
            latent_mean, latent_std: (B, C, h, w) the VAE posterior of each image (unscaled).
            image_embeds: (B, D) calibrated audio embeddings.
            prompt_embeds: (1, L, D_text) or (B, L, D_text) training prompt encoding.
            empty_prompt_embeds: (1, L, D_text) the empty prompt's encoding (used for dropped samples).
            draw: the step's randomness (see :meth:`draw`), on the same device as the tensors.
        """
        batch = latent_mean.shape[0]
        noisy, target = self._noised(latent_mean, latent_std, draw)
        class_labels = self.class_labels(image_embeds.float(), draw)
        text = prompt_embeds.expand(batch, -1, -1)
        if self.config.drop_prompt_with_condition:
            text = torch.where(draw.drop[:, None, None], empty_prompt_embeds.expand(batch, -1, -1), text)

        model_pred = unet(noisy, draw.timesteps, encoder_hidden_states=text, class_labels=class_labels).sample
        return self._weighted(model_pred, target, draw.timesteps)


@dataclass
class PromptEncoding:
    """A prompt as an SD 1.5 / SDXL U-Net reads it: the token states and, for SDXL, the pooled
    embedding of the second text encoder (None for SD 1.5)."""

    embeds: torch.Tensor  # (1, L, D_text)
    pooled: torch.Tensor | None = None  # (1, D_pooled)


class IPAdapterObjective(_DiffusionObjective):
    """The training loss of an SD 1.5 / SDXL U-Net with a ViT-H IP-Adapter (only the adapter learns).

    The same conventions as :class:`SounDiffObjective`: the DDPM forward process and prediction type of
    the pipeline's own scheduler, Min-SNR weights, and conditioning dropout to exactly what guidance
    feeds its unconditional branch — the zero image embedding (diffusers' negative of an
    ``ip_adapter_image``) and the pipeline's own negative-prompt encoding (SD 1.5: the empty prompt;
    SDXL: zeros while ``force_zeros_for_empty_prompt``). The conditioning enters as generation passes
    it: ``added_cond_kwargs={"image_embeds": [cond[:, None, :]]}``, plus SDXL's pooled text embedding
    and micro-conditioning ``time_ids`` = (resolution, resolution, 0, 0, resolution, resolution)
    (original size, crop top-left (0, 0), target size; what the SDXL pipeline passes at that size and
    what diffusers' SDXL training script builds for an uncropped image).

    Args:
        pipeline: the (frozen) ``StableDiffusionPipeline`` / ``StableDiffusionXLPipeline`` with the adapter
            loaded; its U-Net is not used (the trained one is passed to :meth:`loss`).
        config: the loss settings (``max_noise_level`` is unCLIP's and must be 0).
        resolution: the training image size in pixels (SDXL's micro-conditioning).
    """

    def __init__(self, pipeline: Any, config: ObjectiveConfig | None = None, resolution: int = 512) -> None:
        super().__init__(pipeline, config)
        if self.config.max_noise_level:
            raise UsageError(
                "max_noise_level is unCLIP's embedding augmentation; an IP-Adapter takes 0",
                parameters=["max_noise_level"],
            )
        self.is_sdxl = getattr(pipeline.unet.config, "addition_embed_type", None) == "text_time"
        self.resolution = int(resolution)

    @torch.no_grad()
    def _encode(self, prompt: str, device: torch.device | str, negative: bool) -> PromptEncoding:
        out = self.pipeline.encode_prompt(
            prompt=prompt, device=device, num_images_per_prompt=1, do_classifier_free_guidance=negative
        )
        if self.is_sdxl:  # (prompt, negative, pooled, negative pooled)
            embeds, pooled = (out[1], out[3]) if negative else (out[0], out[2])
            return PromptEncoding(embeds.float(), pooled.float())
        return PromptEncoding((out[1] if negative else out[0]).float())

    def encode_prompt(self, prompt: str, device: torch.device | str) -> PromptEncoding:
        """The prompt encoded exactly as generation encodes its conditional branch."""
        return self._encode(prompt, device, negative=False)

    def unconditional_prompt(self, device: torch.device | str) -> PromptEncoding:
        """What guidance's unconditional branch reads when no negative prompt is given."""
        return self._encode("", device, negative=True)

    def time_ids(self, batch: int, device: torch.device | str) -> torch.Tensor:
        """(B, 6) SDXL micro-conditioning: original size, crop top-left (0, 0), target size."""
        size = self.resolution
        return torch.tensor([[size, size, 0, 0, size, size]], dtype=torch.float32, device=device).expand(
            batch, -1
        )

    def loss(
        self,
        unet: torch.nn.Module,
        latent_mean: torch.Tensor,
        latent_std: torch.Tensor,
        image_embeds: torch.Tensor,
        prompt_embeds: PromptEncoding,
        empty_prompt_embeds: PromptEncoding,
        draw: ObjectiveDraw,
    ) -> ObjectiveOutput:
        """The loss of ``unet`` on one batch.

        Args:
            unet: the U-Net being trained, adapter loaded (may be wrapped by DDP).
            latent_mean, latent_std: (B, C, h, w) the VAE posterior of each image (unscaled).
            image_embeds: (B, D) calibrated audio embeddings (D = 1,024, ViT-H).
            prompt_embeds: the training prompt (:meth:`encode_prompt`).
            empty_prompt_embeds: the unconditional branch's text (:meth:`unconditional_prompt`).
            draw: the step's randomness (see :meth:`draw`), on the same device as the tensors.
        """
        batch = latent_mean.shape[0]
        noisy, target = self._noised(latent_mean, latent_std, draw)
        cond = image_embeds.float()
        cond = torch.where(draw.drop[:, None], torch.zeros_like(cond), cond)  # (B, D)
        dropped = draw.drop if self.config.drop_prompt_with_condition else torch.zeros_like(draw.drop)
        text = torch.where(
            dropped[:, None, None],
            empty_prompt_embeds.embeds.expand(batch, -1, -1),
            prompt_embeds.embeds.expand(batch, -1, -1),
        )
        added: dict[str, Any] = {"image_embeds": [cond[:, None, :]]}  # one adapter, one image each
        if self.is_sdxl:
            assert prompt_embeds.pooled is not None and empty_prompt_embeds.pooled is not None
            added["text_embeds"] = torch.where(
                dropped[:, None],
                empty_prompt_embeds.pooled.expand(batch, -1),
                prompt_embeds.pooled.expand(batch, -1),
            )
            added["time_ids"] = self.time_ids(batch, noisy.device)
        model_pred = unet(noisy, draw.timesteps, encoder_hidden_states=text, added_cond_kwargs=added).sample
        return self._weighted(model_pred, target, draw.timesteps)
