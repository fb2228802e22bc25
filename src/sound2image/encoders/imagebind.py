"""ImageBind's audio branch in plain torch: small modules, then the config, then the model.

A re-implementation of the audio tower of ImageBind (Girdhar et al. 2023, facebookresearch/ImageBind,
CC BY-NC-SA 4.0) that loads the official ``imagebind_huge.pth`` audio tensors, without the
``imagebind`` package and its torchvision / torchaudio / pytorchvideo dependencies.

    features (B, 1, 128, 204)
      -> conv 16x16 stride 10, no bias -> (B, D, 12, 19) -> 228 tokens -> LayerNorm     [stem]
      -> prepend cls token -> + learned positions (1, 229, D)
      -> N pre-norm blocks: x + attn(LN(x)), x + mlp(LN(x)); attention with add_bias_kv  [blocks]
      -> LayerNorm(eps 1e-6) -> token 0 -> Linear D -> out, no bias                       [head]
      -> L2-normalise, x exp(log_logit_scale) = 20                                        [postprocess]

Parameter names are ours (``stem.proj.weight``, ``blocks.3.attn.bias_k``, ...); ``OFFICIAL_KEY_PREFIXES``
is the one explicit mapping to the official checkpoint's names, applied by :func:`to_official_key` /
:func:`from_official_key` and by the loaders in :mod:`sound2image.encoders.weights`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: Format marker of an encoder directory written by :meth:`ImageBindAudioEncoder.save_pretrained`.
FORMAT = "sound2image-imagebind-audio"
CONFIG_NAME = "config.json"

# --- modules ------------------------------------------------------------------------------------


# Clips per model forward for float32 on a CPU (see ImageBindAudioEncoder.embed_features).
CPU_FLOAT32_FORWARD_CLIPS = 3


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch of a sample with probability ``p`` (training only)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)  # (B, 1, 1)
        return x * mask / keep


class BiasKVAttention(nn.Module):
    """Multi-head self-attention with ``nn.MultiheadAttention(add_bias_kv=True)`` semantics, batch first.

    ``add_bias_kv`` appends one learned key and one learned value (already in projected space) to every
    sequence, so each query can also attend to a "nothing" slot. Parameter names and shapes are those of
    ``nn.MultiheadAttention``, so the official weights load unchanged; the math is the same (checked
    against ``nn.MultiheadAttention`` in the tests) but runs through ``scaled_dot_product_attention``.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.bias_k = nn.Parameter(torch.empty(1, 1, dim))
        self.bias_v = nn.Parameter(torch.empty(1, 1, dim))
        self.out_proj = nn.Linear(dim, dim)
        # Same initialisation as nn.MultiheadAttention.
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.xavier_normal_(self.bias_k)
        nn.init.xavier_normal_(self.bias_v)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        H = self.num_heads
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)  # 3 x (B, T, D)
        k = torch.cat([k, self.bias_k.expand(B, 1, D)], dim=1)  # (B, T + 1, D)
        v = torch.cat([v, self.bias_v.expand(B, 1, D)], dim=1)  # (B, T + 1, D)
        q = q.view(B, T, H, D // H).transpose(1, 2)  # (B, H, T, head_dim)
        k = k.view(B, T + 1, H, D // H).transpose(1, 2)  # (B, H, T + 1, head_dim)
        v = v.view(B, T + 1, H, D // H).transpose(1, 2)  # (B, H, T + 1, head_dim)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, H, T, head_dim)
        y = y.transpose(1, 2).reshape(B, T, D)  # (B, T, D)
        return self.out_proj(y)


class Mlp(nn.Module):
    """Linear -> GELU (exact) -> Linear, named ``fc1``/``fc2`` like the official checkpoint."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block (ImageBind's ``BlockWithMasking`` without masks or layer scale)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop_path: float) -> None:
        super().__init__()
        self.norm_1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = BiasKVAttention(dim, num_heads)
        self.norm_2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(mlp_ratio * dim))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm_1(x)))
        return x + self.drop_path(self.mlp(self.norm_2(x)))


class AudioStem(nn.Module):
    """Patchify the (1, mel, frames) spectrogram with a strided conv, then LayerNorm (eps 1e-5) per token."""

    def __init__(self, dim: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, dim, kernel_size=kernel_size, stride=stride, bias=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # (B, D, mel_patches, frame_patches)
        x = x.flatten(2).transpose(1, 2)  # (B, tokens, D), tokens in row-major (mel, frame) order
        return self.norm(x)


class AudioHead(nn.Module):
    """LayerNorm(eps 1e-6) -> cls token -> Linear without bias."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.proj = nn.Linear(dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(x)[:, 0])  # (B, out_dim)


# --- configuration -------------------------------------------------------------------------------


@dataclass
class ImageBindAudioConfig:
    """Architecture and preprocessing of the audio branch; the defaults are ``imagebind_huge``.

    Preprocessing (see :mod:`sound2image.encoders.preprocess`): each file is resampled to
    ``sample_rate`` and cut into ``clips_per_file`` windows of ``clip_duration`` seconds, each turned
    into a ``num_mel_bins`` x ``target_length`` log-mel image normalised with ``mean``/``std``.
    ``clip_layout`` "imagebind" places window i at i * (duration - clip) / clips (ImageBind's sampler,
    which never reaches the end of a long file); "cover" spreads the windows from the very start to the
    very end (5 windows tile a 10 s file). ``channel`` is the channel policy (see
    :mod:`sound2image.audio.channels`): ``"mean"`` (default) down-mixes, ``"first"`` reads channel 0
    (ImageBind's reference, exact parity on multichannel files), an integer picks that channel.
    """

    embed_dim: int = 768
    num_blocks: int = 12
    num_heads: int = 12
    out_embed_dim: int = 1024
    kernel_size: int = 16
    stride: int = 10
    num_mel_bins: int = 128
    target_length: int = 204
    mlp_ratio: float = 4.0
    drop_path: float = 0.1
    logit_scale: float = 20.0
    # preprocessing
    sample_rate: int = 16000
    clip_duration: float = 2.0
    clips_per_file: int = 3
    clip_layout: str = "imagebind"
    resampler: str = "sinc"
    channel: str | int = "mean"
    mean: float = -4.268
    std: float = 9.138

    def __post_init__(self) -> None:
        if self.clip_layout not in ("imagebind", "cover"):
            raise ValueError(f"clip_layout must be 'imagebind' or 'cover', got {self.clip_layout!r}")
        if self.resampler not in ("sinc", "polyphase"):
            raise ValueError(f"resampler must be 'sinc' or 'polyphase', got {self.resampler!r}")
        if self.clips_per_file < 1:
            raise ValueError(f"clips_per_file must be >= 1, got {self.clips_per_file}")
        from sound2image.audio.channels import check_channel

        self.channel = check_channel(self.channel, "channel")

    @property
    def patch_grid(self) -> tuple[int, int]:
        """(mel patches, frame patches) produced by the conv stem: (12, 19) for the defaults."""
        rows = (self.num_mel_bins - self.kernel_size) // self.stride + 1
        cols = (self.target_length - self.kernel_size) // self.stride + 1
        return rows, cols

    @property
    def num_tokens(self) -> int:
        """Sequence length including the cls token: 229 for the defaults."""
        rows, cols = self.patch_grid
        return rows * cols + 1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(
        cls, values: dict[str, Any], source: str = "ImageBind audio config"
    ) -> ImageBindAudioConfig:
        """Build from a stored dict, refusing unknown keys (the one policy, :mod:`sound2image.persistence`).

        Raises:
            WeightsError: unknown keys or invalid values, naming ``source``.
        """
        from sound2image.persistence import config_from_dict

        return config_from_dict(cls, values, source)

    @classmethod
    def from_reference(cls, values: dict[str, Any]) -> ImageBindAudioConfig:
        """Build from the reference implementation's keyword names (``audio_embed_dim``, ...)."""
        renames = {
            "audio_embed_dim": "embed_dim",
            "audio_num_blocks": "num_blocks",
            "audio_num_heads": "num_heads",
            "audio_kernel_size": "kernel_size",
            "audio_stride": "stride",
            "audio_num_mel_bins": "num_mel_bins",
            "audio_target_len": "target_length",
            "audio_drop_path": "drop_path",
        }
        names = {field.name for field in dataclasses.fields(cls)}
        renamed = {renames.get(key, key): value for key, value in values.items()}
        return cls(**{key: value for key, value in renamed.items() if key in names})  # other modalities' keys


# --- the one mapping to the official checkpoint's names -------------------------------------------

# (our prefix, official prefix). Everything after the prefix is identical on both sides
# (e.g. "blocks.7.attn.in_proj_weight" <-> "modality_trunks.audio.blocks.7.attn.in_proj_weight").
OFFICIAL_KEY_PREFIXES: tuple[tuple[str, str], ...] = (
    ("stem.proj.", "modality_preprocessors.audio.rgbt_stem.proj."),
    ("stem.norm.", "modality_preprocessors.audio.rgbt_stem.norm_layer."),
    ("cls_token", "modality_preprocessors.audio.cls_token"),
    ("pos_embed", "modality_preprocessors.audio.pos_embedding_helper.pos_embed"),
    ("blocks.", "modality_trunks.audio.blocks."),
    ("head.norm.", "modality_heads.audio.0."),
    ("head.proj.", "modality_heads.audio.2."),
    ("log_logit_scale", "modality_postprocessors.audio.1.log_logit_scale"),
)


def to_official_key(key: str) -> str:
    """Our parameter name -> the official ``imagebind_huge.pth`` name."""
    for ours, official in OFFICIAL_KEY_PREFIXES:
        if key.startswith(ours):
            return official + key[len(ours) :]
    raise KeyError(f"no official name for parameter {key!r}")


def from_official_key(key: str) -> str | None:
    """Official name -> our parameter name, or None for tensors of other modalities."""
    for ours, official in OFFICIAL_KEY_PREFIXES:
        if key.startswith(official):
            return ours + key[len(official) :]
    return None


# --- the model -----------------------------------------------------------------------------------


class ImageBindAudioEncoder(nn.Module):
    """ImageBind's audio encoder: normalised log-mel clips in, one embedding per file out.

    Build it from a config (random weights) or with :meth:`from_pretrained` (official weights).
    ``forward`` maps clip features to head outputs; :meth:`embed` is the user-facing call that
    preprocesses audio, batches, post-processes and averages the clips of each file.
    """

    def __init__(self, config: ImageBindAudioConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ImageBindAudioConfig()
        #: The whole config.json when loaded with from_pretrained (extra keys included), else empty.
        self.saved_metadata: dict[str, Any] = {}
        D = config.embed_dim
        self.stem = AudioStem(D, config.kernel_size, config.stride)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_tokens, D))
        # Stochastic depth grows linearly with depth, as in ImageBind's trunk.
        n = config.num_blocks
        rates = [config.drop_path * i / (n - 1) if n > 1 else 0.0 for i in range(n)]  # linspace(0, p, n)
        self.blocks = nn.ModuleList(Block(D, config.num_heads, config.mlp_ratio, rate) for rate in rates)
        self.head = AudioHead(D, config.out_embed_dim)
        # A fixed (non-learnable) buffer in ImageBind, saved in the checkpoint: log(20).
        self.register_buffer("log_logit_scale", torch.tensor(float(config.logit_scale)).log())
        self.weights_source: str | None = None  # where from_pretrained found the weights
        self._init_weights()

    def _apply(self, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        """``.to(dtype)`` and friends, except that the logit scale stays float32 (moved, never cast).

        log 20 rounded to bfloat16 is 3.0, whose exp is 20.09 (20.125 in bfloat16): a bfloat16 encoder
        would give vectors of norm 20.125 instead of ImageBind's 20.
        """
        scale = self.log_logit_scale
        module = super()._apply(fn, *args, **kwargs)
        self.log_logit_scale = scale.to(self.log_logit_scale.device, torch.float32)
        return module

    def _init_weights(self) -> None:
        # ImageBind: truncated normal (std 0.02) for positions, cls token and linear layers.
        for tensor in (self.cls_token, self.pos_embed):
            nn.init.trunc_normal_(tensor, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    # -- forward -------------------------------------------------------------------------------

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Head outputs before post-processing.

        Args:
            features: normalised log-mel clips ``(B, 1, num_mel_bins, target_length)``.
        Returns:
            ``(B, out_embed_dim)``.
        """
        x = self.stem(features)  # (B, tokens - 1, D)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, tokens, D)
        x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    def postprocess(self, head_output: torch.Tensor) -> torch.Tensor:
        """L2-normalise and scale by exp(log_logit_scale) (20, capped at 100 like ImageBind)."""
        scale = self.log_logit_scale.exp().clamp(max=100.0)  # float32 (see _apply)
        return F.normalize(head_output, dim=-1) * scale

    @torch.inference_mode()
    def embed_features(self, features: torch.Tensor, clips_per_file: int | None = None) -> torch.Tensor:
        """Embeddings of already preprocessed files: ``(files * clips, 1, mel, frames) -> (files, out)``.

        Runs in the model's device and dtype; returns float32 on CPU. The clip embeddings of each file
        are post-processed, then averaged (so the norm is <= 20, equal when the clips agree).
        """
        clips = clips_per_file or self.config.clips_per_file
        if features.ndim != 4 or features.shape[0] % clips:
            raise ValueError(
                f"features of shape {tuple(features.shape)} are not (files * {clips}, 1, mel, frames)"
            )
        param = self.head.proj.weight
        features = features.to(param.device, param.dtype)
        # float32 on a CPU runs fastest per clip in small forwards (bench/bench_embed.py: 24 clips at once
        # were ~10 % slower per clip than 3, the activations no longer fit the caches); bf16 (AMX) and
        # GPUs gain from large ones, so only that case is split.
        step = (
            CPU_FLOAT32_FORWARD_CLIPS if (param.device.type, param.dtype) == ("cpu", torch.float32) else None
        )
        heads = torch.cat([self(part) for part in features.split(step)]) if step else self(features)
        out = self.postprocess(heads.float())  # (files * clips, out)
        return out.view(-1, clips, out.shape[-1]).mean(dim=1).cpu()  # (files, out)

    def embed(
        self,
        inputs: Any,
        batch_size: int = 8,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        progress: bool = False,
        *,
        clips_per_file: int | None = None,
        clip_layout: str | None = None,
        resampler: str | None = None,
        channel: str | int | None = None,
    ) -> torch.Tensor:
        """Embed audio: one ``out_embed_dim`` vector per input, float32 on CPU.

        Args:
            inputs: a path, bytes, binary file object, ``AudioClip`` or ``(samples, sample_rate)`` tuple,
                or a list mixing them.
            batch_size: files per forward pass (each contributes ``clips_per_file`` clips).
            device: where to run ("cpu", "cuda", "mps"); default: where the model is. The model is moved.
            dtype: "float32", "float16", "bfloat16" (or a torch dtype); default: the model's. The model is
                cast in place and stays so (like ``module.to``): casting back to float32 does not restore
                the lost precision, so keep a separate instance per precision.
            progress: show a tqdm progress bar over files.
            clips_per_file, clip_layout, resampler, channel: override the config's preprocessing (see
                :class:`ImageBindAudioConfig`); default: the config's (ImageBind's 3 windows, torchaudio's
                resampler, the mean of the channels; ``channel="first"`` reads channel 0 as ImageBind).
        Returns:
            ``(len(inputs), out_embed_dim)`` float32.
        Raises:
            AudioError: for an input that cannot be used (the message names it); nothing is returned then.
            UsageError: an invalid ``channel``.
        Warns:
            SilentChannelWarning: (sound2image.audio.channels) the selected channel, or the mean, is silent
                while another channel is not.
        """
        from sound2image.encoders.preprocess import as_input_list, preprocess_audio

        items = as_input_list(inputs)
        self._move(device, dtype)
        from sound2image.validation import check_positive_int  # issue 11 C: one-line UsageError

        batch_size = check_positive_int("batch_size", batch_size)
        if clips_per_file is not None:
            clips_per_file = check_positive_int("clips_per_file", clips_per_file)
        config = self.sampling_config(clips_per_file, clip_layout, resampler, channel)
        rows = []
        with _progress_bar(len(items), progress) as bar:
            for start in range(0, len(items), batch_size):
                chunk = items[start : start + batch_size]
                features = torch.cat(
                    [preprocess_audio(item, config) for item in chunk]
                )  # (B * clips, 1, mel, T)
                rows.append(self.embed_features(features, config.clips_per_file))
                bar.update(len(chunk))
        if not rows:
            return torch.zeros(0, self.config.out_embed_dim)
        return torch.cat(rows)

    def sampling_config(
        self,
        clips_per_file: int | None = None,
        clip_layout: str | None = None,
        resampler: str | None = None,
        channel: str | int | None = None,
    ) -> ImageBindAudioConfig:
        """The config with the preprocessing overridden where the arguments are not None (validated)."""
        changes = {
            key: value
            for key, value in (
                ("clips_per_file", clips_per_file),
                ("clip_layout", clip_layout),
                ("resampler", resampler),
                ("channel", channel),
            )
            if value is not None
        }
        return dataclasses.replace(self.config, **changes) if changes else self.config

    def _move(self, device: str | torch.device | None, dtype: str | torch.dtype | None) -> None:
        if device is not None:
            self.to(torch.device(device))
        if dtype is not None:
            self.to(resolve_dtype(dtype))
        self.eval()

    # -- weights -------------------------------------------------------------------------------

    def official_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights under the official checkpoint's names (what the audio-only cache file holds)."""
        return {to_official_key(key): value for key, value in self.state_dict().items()}

    def load_official_state_dict(
        self, state: dict[str, torch.Tensor], source: str = "state dict", assign: bool = False
    ) -> None:
        """Load official-named tensors (other modalities' tensors are ignored), checking every name and shape.

        Raises:
            WeightsError: naming ``source`` and the missing or mis-shaped tensors.
        """
        from sound2image.encoders.weights import check_official_state_dict

        expected = {key: value.shape for key, value in self.official_state_dict().items()}
        ours = check_official_state_dict(state, expected, source)
        self.load_state_dict({from_official_key(key): value for key, value in ours.items()}, assign=assign)

    def save_pretrained(self, path: str | os.PathLike[str]) -> Path:
        """Save the encoder for :meth:`from_pretrained`, in one of two layouts chosen by ``path``:

        - a directory (the package's contract, :mod:`sound2image.persistence`): ``config.json`` (format
          marker, the whole config, preprocessing included) and ``model.safetensors`` (our tensor names);
        - a path ending in ``.safetensors``: one file with the official tensor names and the config in its
          metadata (the layout of the audio-only cache file, see :mod:`sound2image.encoders.weights`).
        """
        from sound2image.persistence import save_model_dir

        path = Path(path)
        if path.suffix != ".safetensors":
            return save_model_dir(path, self, self.config, FORMAT, {"weights_source": self.weights_source})
        from sound2image.encoders.weights import write_audio_safetensors

        state = {key: value.detach().cpu() for key, value in self.official_state_dict().items()}
        return write_audio_safetensors(
            state, path, self.config, source=self.weights_source or "save_pretrained"
        )

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        config: ImageBindAudioConfig | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool = False,
        progress: bool = True,
    ) -> ImageBindAudioEncoder:
        """The encoder with pretrained weights (default: the official ``imagebind_huge``), in eval mode.

        Weights are looked up in this order: ``path`` (a directory written by :meth:`save_pretrained`, a
        ``.pth``/``.pt`` checkpoint or a ``.safetensors`` file), the ``SOUND2IMAGE_IMAGEBIND_WEIGHTS``
        environment variable, the audio-only file in the cache, then a download of the official
        checkpoint into the cache (unless offline). See :mod:`sound2image.encoders.weights`.

        Args:
            path: weights file; optional.
            config: architecture; default: the one stored with the weights, else inferred from the
                tensor shapes (heads of 64 dims, like every official ImageBind model).
            cache_dir: overrides the cache folder.
            local_files_only: never download.
            progress: progress bar for a download.
        Raises:
            WeightsError: missing, truncated or mismatched weights (one line naming the file).
        """
        from sound2image.encoders.weights import load_audio_state_dict

        if path is not None and (Path(path) / CONFIG_NAME).is_file():
            return cls._from_directory(Path(path), config)
        state, stored_config, source = load_audio_state_dict(
            path, cache_dir=cache_dir, local_files_only=local_files_only, progress=progress
        )
        # Built on the meta device: no time spent on a random initialisation that is overwritten anyway.
        with torch.device("meta"):
            model = cls(config or stored_config or infer_config(state))
        model.load_official_state_dict(state, source=source, assign=True)
        model.weights_source = source
        return model.eval()

    @classmethod
    def _from_directory(cls, directory: Path, config: ImageBindAudioConfig | None) -> ImageBindAudioEncoder:
        """A directory of the persistence contract; its ``config.json`` without a format marker is the
        audio encoder folder that ``SounDiffPipeline.save_pretrained`` wrote before the contract."""
        from sound2image.persistence import config_from_dict, load_model_dir

        source = str(directory / CONFIG_NAME)
        model = load_model_dir(
            directory,
            FORMAT,
            lambda values: cls(config or config_from_dict(ImageBindAudioConfig, values, source)),
            "ImageBind audio encoder",
            accept_unmarked=True,
        )
        model.weights_source = str(directory)
        return model.eval()


def infer_config(state: dict[str, Any]) -> ImageBindAudioConfig:
    """Architecture from official-named tensor shapes; heads are assumed to be 64-dimensional."""
    prefix = "modality_trunks.audio.blocks."
    try:
        dim = state["modality_preprocessors.audio.cls_token"].shape[-1]
        kernel = state["modality_preprocessors.audio.rgbt_stem.proj.weight"].shape[-1]
        out_dim = state["modality_heads.audio.2.weight"].shape[0]
        hidden = state[prefix + "0.mlp.fc1.weight"].shape[0]
    except (KeyError, AttributeError, IndexError):
        return ImageBindAudioConfig()  # let the name/shape check report what is missing
    blocks = {key[len(prefix) :].split(".", 1)[0] for key in state if key.startswith(prefix)}
    return ImageBindAudioConfig(
        embed_dim=dim,
        num_blocks=len(blocks),
        num_heads=max(1, dim // 64),
        out_embed_dim=out_dim,
        kernel_size=kernel,
        mlp_ratio=hidden / dim,
    )


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"fp16"``/``"float16"``/``torch.float16`` ... -> torch dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {
        "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
        "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
        "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    }  # fmt: skip
    try:
        return names[str(dtype).lower()]
    except KeyError:
        from sound2image.errors import UsageError

        raise UsageError(f"unknown dtype {dtype!r}: use float32, float16 or bfloat16") from None


def _progress_bar(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="file", desc="embedding", disable=not enabled or total <= 1)


def config_json(config: ImageBindAudioConfig) -> str:
    """The config as compact JSON (stored in safetensors metadata)."""
    return json.dumps(config.to_dict(), sort_keys=True)


# --- embedding files (written by `sound2image embed`) -------------------------------------------------

EMBEDDINGS_FORMAT = "sound2image.embeddings/1"


def save_embeddings(
    path: str | os.PathLike[str], embeddings: torch.Tensor, files: Sequence[str], metadata: dict[str, Any]
) -> None:
    """Write ``embeddings`` (N, D) and the N file names (JSON in the safetensors metadata), atomically.

    ``metadata`` values are stored as JSON under their keys (settings, weights source, skipped files).
    """
    from safetensors.torch import save_file

    from sound2image.atomic import write_atomic

    if embeddings.shape[0] != len(files):
        raise ValueError(f"{embeddings.shape[0]} embeddings for {len(files)} file names")
    header = {key: json.dumps(value, sort_keys=True) for key, value in metadata.items()}
    header.update(format=EMBEDDINGS_FORMAT, files=json.dumps(list(files)))
    tensors = {"embeddings": embeddings.float().contiguous()}
    write_atomic(path, lambda tmp: save_file(tensors, tmp, metadata=header))


def load_embeddings(path: str | os.PathLike[str]) -> tuple[torch.Tensor, list[str], dict[str, Any]]:
    """Read a file written by :func:`save_embeddings`: (embeddings (N, D), file names, metadata).

    Raises:
        DataError: not an embeddings file (the message names it).
    """
    from safetensors import safe_open

    from sound2image.errors import DataError

    try:
        with safe_open(os.fspath(path), framework="pt") as handle:
            header = handle.metadata() or {}
            embeddings = handle.get_tensor("embeddings")
    except Exception as error:  # noqa: BLE001 - SafetensorError, OSError, missing key
        raise DataError(f"{path}: not a sound2image embeddings file ({error})") from None
    if header.get("format") != EMBEDDINGS_FORMAT or "files" not in header:
        raise DataError(f"{path}: not a sound2image embeddings file (no file names in its metadata)")
    files = json.loads(header.pop("files"))
    header.pop("format")
    return embeddings, files, {key: json.loads(value) for key, value in header.items()}


__all__: Sequence[str] = (
    "ImageBindAudioConfig",
    "ImageBindAudioEncoder",
    "OFFICIAL_KEY_PREFIXES",
    "from_official_key",
    "infer_config",
    "load_embeddings",
    "resolve_dtype",
    "save_embeddings",
    "to_official_key",
)
