"""The audio-conditioned Image Transformer: an encoder-decoder that writes a picture pixel by pixel.

Read top to bottom (nanoGPT style): the blocks, then the config, then the model.

- Encoder: FFT sections of the audio (B, S, F) -> linear embedding + sinusoidal positions -> pre-norm
  bidirectional self-attention blocks -> memory (B, S, C).
- Decoder: pixel tokens (0..255, plus a start token 256) -> embedding + sinusoidal positions -> pre-norm
  blocks of local 1-D causal self-attention, cross-attention to the memory *on the self-attention
  output* (the reference code fed it the block input), and an MLP -> logits over 256 pixel values.
- Utterance embedding (optional, ``embedding_dim`` > 0): a frozen copy of the best-of-N scorer's audio
  tower pools the whole recording into one unit vector; its projection is added to every memory position.
  The scorer learnt it contrastively against the images, so it carries what a sound and its picture share
  (on av-digits, the digit) more than who is speaking.
- Conditioning dropout: during training a random fraction of the batch sees a learned "null" memory
  instead of its audio, so the same model also knows p(image) and classifier-free guidance works.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sound2image.modules import (
    AudioTower,
    CrossAttention,
    HalfLinear,
    KVCache,
    LocalSelfAttention,
    SelfAttention,
    half_linears,
    linear,
    sinusoidal_positions,
    sinusoidal_positions_2d,
)
from sound2image.modules.half import HALF_DTYPES
from sound2image.persistence import (
    CONFIG_NAME,
    config_from_dict,
    load_model_dir,
    save_model_dir,
)

FORMAT = "sound2image-image-transformer"


class MLP(nn.Module):
    def __init__(self, d_model: int, ratio: int, dropout: float) -> None:
        super().__init__()
        self.fc = nn.Linear(d_model, ratio * d_model)
        self.proj = nn.Linear(ratio * d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class EncoderBlock(nn.Module):
    """Pre-norm: x + SelfAttention(LN(x)), then x + MLP(LN(x))."""

    def __init__(
        self, d_model: int, n_heads: int, mlp_ratio: int, dropout: float, attn_dropout: float
    ) -> None:
        super().__init__()
        self.ln_attn = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, n_heads, attn_dropout, dropout)
        self.ln_mlp = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, mlp_ratio, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_attn(x))
        return x + self.mlp(self.ln_mlp(x))


class DecoderBlock(nn.Module):
    """Pre-norm: local causal self-attention, then cross-attention, then MLP, each with a residual.

    The cross-attention reads the stream *after* the self-attention residual (``x`` below), not the
    block input — the reference implementation's bug.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        mlp_ratio: int,
        dropout: float,
        attn_dropout: float,
        block_size: int | None,
        memory_length: int | None,
    ) -> None:
        super().__init__()
        self.ln_self = nn.LayerNorm(d_model)
        self.self_attn = LocalSelfAttention(
            d_model, n_heads, block_size, memory_length, attn_dropout, dropout
        )
        self.ln_cross = nn.LayerNorm(d_model)
        self.cross_attn = CrossAttention(d_model, n_heads, attn_dropout, dropout)
        self.ln_mlp = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, mlp_ratio, dropout)

    def forward(
        self,
        x: torch.Tensor,
        memory_kv: tuple[torch.Tensor, torch.Tensor],
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        x = x + self.self_attn(self.ln_self(x), cache)
        x = x + self.cross_attn(self.ln_cross(x), memory_kv)
        return x + self.mlp(self.ln_mlp(x))

    def step(
        self,
        x: torch.Tensor,
        memory_kv: tuple[torch.Tensor, torch.Tensor],
        state: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        slot: torch.Tensor,
    ) -> torch.Tensor:
        """``forward`` for one new token per row in eval mode, ``x`` (B, 1, C) -> (B, 1, C).

        ``state`` and ``slot``: the self-attention cache's tensors and the slot reserved for this
        position (:meth:`LocalSelfAttention.reserve`). The same kernels as ``forward`` (``F.layer_norm``,
        ``F.linear``, ``F.gelu``) called directly, without the modules' call machinery: at batch 1 a step
        is bound by per-operation overhead and memory traffic.
        """
        width = (x.shape[-1],)
        h = F.layer_norm(x, width, self.ln_self.weight, self.ln_self.bias, self.ln_self.eps)
        x = x + self.self_attn.step(h, state, slot)
        h = F.layer_norm(x, width, self.ln_cross.weight, self.ln_cross.bias, self.ln_cross.eps)
        x = x + self.cross_attn.step(h, memory_kv)
        h = F.layer_norm(x, width, self.ln_mlp.weight, self.ln_mlp.bias, self.ln_mlp.eps)
        # GELU's output goes to the library's product: written out, inductor would compute GELU (an erf)
        # once per weight instead of once per input (HalfLinear.forward).
        return x + linear(F.gelu(linear(h, self.mlp.fc)), self.mlp.proj, write_out=False)


@dataclass
class ImageTransformerConfig:
    """Model shape. Defaults are the paper's size (512-d, 6 + 6 layers, 8 heads) on 32×32 images.

    ``query_block``/``memory_length`` set the decoder's local 1-D attention (``None`` = global causal).
    ``pixel_positions``: ``"1d"`` encodes the flattened index (the paper), ``"2d"`` half the channels
    for the row and half for the column (Parmar et al.), which learns vertical structure much sooner.
    ``dropout`` applies to embeddings and residual branches; ``attention_dropout`` to attention weights
    (off by default: on a CPU it costs a third of a training step). ``cond_dropout`` is the probability
    that a training example sees the null audio memory. ``embedding_dim`` > 0 adds the utterance embedding
    (module docstring): an ``AudioTower`` of ``embedding_channels`` channels and ``embedding_dim`` outputs,
    the shape of the scorer (:class:`~sound2image.transformer.reranker.RerankerConfig`) it is copied from.
    """

    image_size: int = 32
    pixel_levels: int = 256
    audio_sections: int = 500
    audio_bins: int = 220
    d_model: int = 512
    n_encoder_layers: int = 6
    n_decoder_layers: int = 6
    n_heads: int = 8
    mlp_ratio: int = 4
    dropout: float = 0.1
    attention_dropout: float = 0.0
    query_block: int | None = 64
    memory_length: int | None = 128
    cond_dropout: float = 0.1
    pixel_positions: str = "1d"
    embedding_dim: int = 0
    embedding_channels: int = 128

    @property
    def seq_len(self) -> int:
        return self.image_size * self.image_size

    @property
    def start_token(self) -> int:
        return self.pixel_levels

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ImageTransformerConfig:
        """Build from a stored dict, refusing unknown keys (see :mod:`sound2image.persistence`)."""
        return config_from_dict(cls, values, "Image Transformer config")


class ImageTransformer(nn.Module):
    """Encoder-decoder over FFT sections (audio) and flattened grayscale pixels (image)."""

    def __init__(self, config: ImageTransformerConfig) -> None:
        super().__init__()
        self.config = config
        #: The whole config.json when loaded with from_pretrained (extra keys included), else empty.
        self.saved_metadata: dict[str, Any] = {}
        #: ``"float32"``, or the dtype given to :meth:`half_decoder` (recorded with every image it draws).
        self.decoder_dtype = "float32"
        #: ``torch.compile`` of :meth:`_decode_core` once :meth:`compile_decode_step` was called.
        self._compiled_core: Callable[..., torch.Tensor] | None = None
        c = config
        # Per-bin feature statistics of the training set (identity until the trainer sets them); they
        # live in the state dict so that a saved model standardises its inputs the same way.
        self.register_buffer("feature_mean", torch.zeros(c.audio_bins))
        self.register_buffer("feature_std", torch.ones(c.audio_bins))
        self.register_buffer("audio_pos", sinusoidal_positions(c.audio_sections, c.d_model), persistent=False)
        if c.pixel_positions not in ("1d", "2d"):
            raise ValueError(f"pixel_positions must be '1d' or '2d', got {c.pixel_positions!r}")
        pixel_pos = (
            sinusoidal_positions_2d(c.image_size, c.image_size, c.d_model)
            if c.pixel_positions == "2d"
            else sinusoidal_positions(c.seq_len, c.d_model)
        )
        self.register_buffer("pixel_pos", pixel_pos, persistent=False)

        self.audio_in = nn.Linear(c.audio_bins, c.d_model)
        self.encoder = nn.ModuleList(
            EncoderBlock(c.d_model, c.n_heads, c.mlp_ratio, c.dropout, c.attention_dropout)
            for _ in range(c.n_encoder_layers)
        )
        self.ln_memory = nn.LayerNorm(c.d_model)
        # The utterance embedding: frozen (copied from a trained scorer, see :meth:`set_utterance_tower`).
        self.utterance: AudioTower | None = None
        self.utterance_in: nn.Linear | None = None
        if c.embedding_dim > 0:
            self.utterance = AudioTower(c.audio_bins, c.embedding_channels, c.embedding_dim)
            self.utterance.requires_grad_(False)
            self.utterance_in = nn.Linear(c.embedding_dim, c.d_model)
        self.null_memory = nn.Parameter(torch.zeros(1, c.audio_sections, c.d_model))

        self.pixel_in = nn.Embedding(c.pixel_levels + 1, c.d_model)  # + the start token
        self.decoder = nn.ModuleList(
            DecoderBlock(
                c.d_model,
                c.n_heads,
                c.mlp_ratio,
                c.dropout,
                c.attention_dropout,
                c.query_block,
                c.memory_length,
            )
            for _ in range(c.n_decoder_layers)
        )
        self.ln_out = nn.LayerNorm(c.d_model)
        self.head: nn.Module = nn.Linear(c.d_model, c.pixel_levels, bias=False)
        self.dropout = nn.Dropout(c.dropout)
        self._init_weights()

    def _init_weights(self) -> None:
        # GPT-2 initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2 · layers).
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
        n_layers = self.config.n_encoder_layers + self.config.n_decoder_layers
        for name, param in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(param, std=0.02 / math.sqrt(2 * max(n_layers, 1)))
        # Inputs at unit scale, like the sinusoidal positions they are added to (Vaswani et al. scale
        # their embeddings by sqrt(d_model) for the same reason): with GPT-2's 0.02 the positions drown
        # the pixel values and the audio, and the model learns to use its condition very slowly.
        nn.init.normal_(self.pixel_in.weight, std=1.0)
        nn.init.normal_(self.audio_in.weight, std=self.config.audio_bins**-0.5)
        nn.init.normal_(self.null_memory, std=0.02)
        if self.utterance_in is not None:  # a unit vector in -> channels at the memory's unit scale
            nn.init.normal_(self.utterance_in.weight, std=1.0)

    def train(self, mode: bool = True) -> ImageTransformer:
        """As ``nn.Module.train``, but the frozen utterance tower stays in eval mode: its batch norms use
        the scorer's running statistics, as when the scorer was trained."""
        super().train(mode)
        if self.utterance is not None:
            self.utterance.eval()
        return self

    def set_utterance_tower(self, tower: nn.Module) -> None:
        """Copy a trained scorer's audio tower (``scorer.audio``) into the frozen utterance embedding.

        Raises:
            ValueError: the model has no utterance embedding (``embedding_dim`` 0) or the shapes differ.
        """
        if self.utterance is None:
            raise ValueError("this Image Transformer has no utterance embedding (embedding_dim is 0)")
        try:
            self.utterance.load_state_dict(tower.state_dict())
        except RuntimeError as error:
            message = f"the scorer's audio tower does not fit the utterance embedding: {error}"
            raise ValueError(message) from None

    def half_decoder(self, dtype: str = "float16") -> ImageTransformer:
        """Keep the decoder's weights in half precision, in place, for faster sampling on a CPU; returns
        the model.

        Every linear layer a sampling step applies (the decoder blocks' projections and MLPs, and the
        output head: 22 M of the paper size's 45 M parameters) becomes a
        :class:`~sound2image.modules.HalfLinear`: half the bytes to read per pixel (89 -> 45 MB at paper
        size). The layer norms, residual stream, attention and KV cache stay in float32, as do the encoder,
        the utterance embedding and the cross-attention's memory projection (applied once per image). The
        pixels drawn differ from the float32 model's (products rounded to ``dtype``). The KV-cached and
        uncached paths draw the same tokens until, at some position, the two round a sum to neighbouring
        half-precision values (they sum in different orders: one row against the whole prefix): all of
        them for the test models and in the bench's paper-size sample, the first 72 of 1,024 in another
        (float32: all 1,024; bench/results/bench_kv_cache.txt). Pair it with :meth:`compile_decode_step`
        for speed: eagerly it is 1.08x float32 on an AVX-512 CPU, compiled 1.78-1.86x. Such a model
        samples; it cannot be trained or saved (convert after loading).

        Args:
            dtype: ``"float16"`` (default: 3 significant digits, the faster here) or ``"bfloat16"``.

        Raises:
            ValueError: another dtype, or a decoder already converted to a different one.
        """
        if dtype not in HALF_DTYPES:
            raise ValueError(f"decoder dtype must be float16 or bfloat16, got {dtype!r}")
        if self.decoder_dtype == dtype:
            return self
        if self.decoder_dtype != "float32":
            raise ValueError(f"the decoder is already {self.decoder_dtype}; load the model again")
        for block in self.decoder:
            half_linears(block, HALF_DTYPES[dtype], skip=("cross_attn.kv",))
        self.head = HalfLinear.from_linear(self.head, HALF_DTYPES[dtype])
        self.decoder_dtype = dtype
        return self.eval()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # --- audio -> memory --------------------------------------------------------------------------

    def encode(self, audio_features: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """``audio_features`` (B, S, F) -> memory (B, S, C), plus the utterance embedding's projection at
        every position when the model has one; rows where ``keep`` is False get the null memory."""
        c = self.config
        if audio_features.shape[1:] != (c.audio_sections, c.audio_bins):
            raise ValueError(
                f"audio features of shape {tuple(audio_features.shape[1:])}, "
                f"expected ({c.audio_sections}, {c.audio_bins})"
            )
        standard = (audio_features - self.feature_mean) / self.feature_std
        x = self.dropout(self.audio_in(standard) + self.audio_pos)  # (B, S, C)
        for block in self.encoder:
            x = block(x)
        memory = self.ln_memory(x)
        if self.utterance is not None and self.utterance_in is not None:
            memory = memory + self.utterance_in(self.utterance(standard))[:, None]  # (B, 1, C) to every S
        if keep is not None:
            memory = torch.where(keep[:, None, None], memory, self.null_memory.to(memory.dtype))
        return memory

    def null_memory_batch(self, batch: int) -> torch.Tensor:
        """The learned unconditional memory for ``batch`` rows: (B, S, C)."""
        return self.null_memory.expand(batch, -1, -1)

    def project_memory(self, memory: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Every decoder layer's cross-attention keys and values, computed once per image."""
        return [block.cross_attn.project_memory(memory) for block in self.decoder]

    # --- pixels -> logits -------------------------------------------------------------------------

    def decode(
        self,
        tokens: torch.Tensor,
        memory_kv: list[tuple[torch.Tensor, torch.Tensor]],
        caches: list[KVCache] | None = None,
    ) -> torch.Tensor:
        """``tokens`` (B, T) -> logits (B, T, 256) for the pixel *after* each token.

        Without ``caches`` the tokens start at position 0; with ``caches`` they continue from
        ``caches[0].length`` and the caches are updated in place. One token with caches in eval mode
        (sampling) takes the fast path, :meth:`decode_step`: the same operations, fewer of them.
        """
        if caches and tokens.shape[1] == 1 and not self.training:
            return self.decode_step(tokens, memory_kv, caches)[:, None]  # (B, 1, V)
        start = caches[0].length if caches else 0
        positions = self.pixel_pos[start : start + tokens.shape[1]]
        x = self.dropout(self.pixel_in(tokens) + positions)  # (B, T, C)
        for index, block in enumerate(self.decoder):
            x = block(x, memory_kv[index], caches[index] if caches else None)
        return self.head(self.ln_out(x))

    def decode_step(
        self, tokens: torch.Tensor, memory_kv: list[tuple[torch.Tensor, torch.Tensor]], caches: list[KVCache]
    ) -> torch.Tensor:
        """One cached sampling step: ``tokens`` (B, 1), the newest token per row -> logits (B, 256).

        The same computation as ``decode(tokens, memory_kv, caches)[:, -1]`` in eval mode (no dropout);
        updates ``caches`` in place. The caches' bookkeeping (Python integers) happens here; the arithmetic
        in :meth:`_decode_core`, which :meth:`compile_decode_step` can compile.
        """
        position = caches[0].length
        slots = [block.self_attn.reserve(cache) for block, cache in zip(self.decoder, caches, strict=True)]
        slot = slots[0]  # every layer's cache has the same window, hence the same slot
        index = torch.tensor([position, slot], device=tokens.device)  # tensors: no recompile per position
        states = [cache.state for cache in caches]
        if self._compiled_core is not None:
            try:
                # A copy with the standard strides: the graph is specialised on them, and a view into
                # the sampler's (B, 1 + steps) buffer has a row stride that depends on the image length.
                tokens = tokens.clone(memory_format=torch.contiguous_format)
                return self._compiled_core(tokens, index, states, memory_kv)
            except Exception as error:  # noqa: BLE001 - e.g. no C++ compiler for inductor: run eagerly
                self._compiled_core = None
                # One line: inductor's errors carry the whole compiler command and output.
                lines = [line.strip() for line in str(error).splitlines() if line.strip()]
                reason = " ".join(lines[:2])[:200] or type(error).__name__
                warnings.warn(f"compiled decoding step unavailable, sampling eagerly: {reason}", stacklevel=2)
        return self._decode_core(tokens, index, states, memory_kv)

    def _decode_core(
        self,
        tokens: torch.Tensor,
        index: torch.Tensor,
        states: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
        memory_kv: list[tuple[torch.Tensor, torch.Tensor]],
    ) -> torch.Tensor:
        """The arithmetic of :meth:`decode_step`: ``tokens`` (B, 1), ``index`` = (position, slot) -> (B, 256).

        Tensors only (no Python integer that changes from step to step), so one compiled graph serves
        every position.
        """
        position, slot = index[:1], index[1:]
        x = F.embedding(tokens, self.pixel_in.weight) + self.pixel_pos.index_select(0, position)  # (B, 1, C)
        for layer, block in enumerate(self.decoder):
            x = block.step(x, memory_kv[layer], states[layer], slot)
        ln = self.ln_out
        x = F.layer_norm(x, (x.shape[-1],), ln.weight, ln.bias, ln.eps)
        return linear(x[:, 0], self.head)

    def compile_decode_step(self) -> ImageTransformer:
        """Compile the sampling step's arithmetic with ``torch.compile`` (inductor); returns the model.

        Fuses the step's small operations (layer norms, residual adds, GELU, casts) and drops their
        dispatch; for one or two rows (batch 1, with or without guidance) it also writes the attention
        (:func:`~sound2image.modules.attention.one_query_attention`) and a half decoder's products
        (:func:`~sound2image.modules.half.summed_products`) out as fused loops, which read the keys, values
        and half-precision weights faster than the library's calls. On a 2-core Xeon (AVX-512) the
        paper-size model samples batch 1 1.17x faster in float32 (228 tokens/s), and with float16 decoder
        weights (:meth:`half_decoder`) at 353 tokens/s against 198 for the eager float32 model (1.78x, 2.9 s
        per image); batch 16 as eagerly (bench/results/bench_kv_cache.txt). The first step of each new batch
        size compiles (4-13 s on that CPU), so it pays off from a few images per process. The tokens drawn
        are the eager step's up to floating-point rounding (the fused kernels may sum in another order).
        Needs a C++ compiler; without one the first step warns and samples eagerly.
        """
        # emulate_precision_casts: keep the float16/bfloat16 roundings of a half decoder's written-out
        # products (summed_products), which inductor drops otherwise. deterministic: on a CPU its one
        # effect here is to compute a layer norm's output once before a written-out product reads it,
        # instead of once per output (measured: the float16 paper-size step 2x slower without it).
        options = {"emulate_precision_casts": True, "deterministic": True}
        self._compiled_core = torch.compile(self._decode_core, dynamic=False, options=options)
        return self

    def allocate_caches(
        self, batch: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> list[KVCache]:
        """One bounded ring-buffer cache per decoder layer."""
        c = self.config
        return [
            KVCache.allocate(
                batch,
                c.n_heads,
                block.self_attn.cache_window(c.seq_len),
                c.d_model // c.n_heads,
                device,
                dtype,
            )
            for block in self.decoder
        ]

    def decoder_inputs(self, pixels: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: (B, T) pixel values -> (B, T) inputs ``[start, p0, ..., p(T-2)]``."""
        start = torch.full_like(pixels[:, :1], self.config.start_token)
        return torch.cat([start, pixels[:, :-1]], dim=1)

    def forward(
        self,
        audio_features: torch.Tensor,
        pixels: torch.Tensor,
        targets: torch.Tensor | None = None,
        keep: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits for the next pixel after each input token, and the mean cross-entropy if ``targets``.

        Args:
            audio_features: (B, S, F) FFT-section features.
            pixels: (B, T) decoder inputs, starting with the start token (see :meth:`decoder_inputs`).
            targets: (B, T) pixel values 0..255 to predict, or None.
            keep: (B,) bool, which rows see their audio. In training mode, if None, each row keeps its
                audio with probability ``1 - cond_dropout``; in eval mode, if None, all rows do.
        """
        if keep is None and self.training and self.config.cond_dropout > 0:
            keep = torch.rand(pixels.shape[0], device=pixels.device) >= self.config.cond_dropout
        memory = self.encode(audio_features, keep)
        logits = self.decode(pixels, self.project_memory(memory))  # (B, T, 256)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        return logits, loss

    # --- persistence ------------------------------------------------------------------------------

    def save_pretrained(self, directory: str | os.PathLike[str], extra: dict[str, Any] | None = None) -> Path:
        """Write ``config.json`` (model config + ``extra``, e.g. feature settings) and ``model.safetensors``
        (see :mod:`sound2image.persistence`).

        Raises:
            ValueError: the decoder was converted (:meth:`half_decoder`): save the float32 model instead.
        """
        if self.decoder_dtype != "float32":
            what = f"an Image Transformer with a {self.decoder_dtype} decoder"
            raise ValueError(f"{what} cannot be saved; save the float32 one")
        return save_model_dir(directory, self, self.config, FORMAT, extra)

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike[str], map_location: str | torch.device = "cpu"
    ) -> ImageTransformer:
        """Load a saved model in eval mode; the whole config.json is its ``saved_metadata``.

        Raises:
            WeightsError: one line naming the file and the problem (see :mod:`sound2image.persistence`).
        """
        source = str(Path(directory) / CONFIG_NAME)
        model = load_model_dir(
            directory,
            FORMAT,
            lambda values: cls(config_from_dict(ImageTransformerConfig, values, source)),
            "Image Transformer",
        )
        return model.to(map_location).eval()
