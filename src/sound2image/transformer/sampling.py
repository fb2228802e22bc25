"""Autoregressive sampling for the Image Transformer: 1,024 steps from a start token.

Two paths give the same tokens for the same seed:

- cached (default): each step feeds only the newest token; self-attention keys/values live in a
  ring buffer bounded by the local window, cross-attention keys/values are computed once.
  Cost O(L · window) per image.
- uncached reference (``use_cache=False``): every step re-runs the decoder over the whole prefix, as
  the paper's reference code did. Cost O(L²) decoder positions (O(L³) with global attention). Kept for
  the equivalence test and the benchmark.

Randomness: one uniform number per image per step is drawn from a CPU ``torch.Generator`` and turned
into a token by inverting the filtered distribution's CDF, so both paths (and any device) consume the
random stream identically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from sound2image.transformer.model import ImageTransformer
from sound2image.validation import check_int, check_number


@dataclass
class SamplingConfig:
    """How pixels are drawn. ``temperature=0`` is greedy; ``guidance_scale=1`` means no guidance."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    guidance_scale: float = 1.0
    seed: int = 0

    def check(self) -> None:
        """Raise UsageError, naming the field, for a value that is not finite or out of range.

        ``temperature`` and ``guidance_scale``: finite and >= 0; ``top_k``: an integer >= 1; ``top_p``:
        finite and in (0, 1]; ``seed``: an integer in 0 .. 2**63 - 1 (what ``manual_seed`` takes).
        """
        check_number("temperature", self.temperature, minimum=0.0)
        if self.top_k is not None:
            check_int("top_k", self.top_k, minimum=1)
        if self.top_p is not None:
            check_number("top_p", self.top_p, minimum=0.0, maximum=1.0, min_inclusive=False)
        check_number("guidance_scale", self.guidance_scale, minimum=0.0)
        check_int("seed", self.seed, minimum=0, maximum=2**63 - 1)


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Set to -inf every logit outside the top-k and outside the nucleus of mass ``top_p``; (B, V)."""
    logits = logits.clone()
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits[logits < kth] = float("-inf")
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token when the mass *before* it already reaches top_p; the most likely one always stays.
        drop_sorted = (cumulative - sorted_logits.softmax(dim=-1)) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits[drop] = float("-inf")
    return logits


Generators = torch.Generator | Sequence[torch.Generator] | None


def _uniform(batch: int, generator: Generators) -> torch.Tensor:
    """(B,) uniforms on the CPU: from one generator, or one per row (then a row's pixels depend only
    on its own seed, not on what else is in the batch)."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.rand(batch, generator=generator)
    if len(generator) != batch:
        raise ValueError(f"{len(generator)} generators for a batch of {batch}")
    return torch.cat([torch.rand(1, generator=g) for g in generator])


def choose_tokens(logits: torch.Tensor, config: SamplingConfig, generator: Generators) -> torch.Tensor:
    """(B, V) logits -> (B,) tokens: argmax if temperature is 0, else inverse-CDF sampling."""
    if config.temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float()
    if config.temperature != 1:  # dividing by 1 is exact: skipping it changes no bit
        logits = logits / config.temperature
    if config.top_k is not None or config.top_p is not None:
        logits = filter_logits(logits, config.top_k, config.top_p)
    cdf = logits.softmax(dim=-1).cumsum_(dim=-1)  # (B, V)
    uniform = _uniform(logits.shape[0], generator).to(logits.device)  # (B,)
    tokens = torch.searchsorted(cdf, (uniform * cdf[:, -1])[:, None]).squeeze(1)
    return tokens.clamp_max_(logits.shape[-1] - 1)


@torch.inference_mode()  # not just no_grad: it also skips version counting, ~15 % of a batch-1 cached step
def generate(
    model: ImageTransformer,
    audio_features: torch.Tensor,
    config: SamplingConfig | None = None,
    *,
    use_cache: bool = True,
    num_steps: int | None = None,
    generator: Generators = None,
    progress: bool = False,
) -> torch.Tensor:
    """Sample pixel tokens for each row of ``audio_features`` (B, S, F).

    Args:
        model: the Image Transformer (put in eval mode here).
        audio_features: FFT-section features, already on the model's device.
        config: temperature, top-k, top-p, guidance scale and seed (defaults: plain sampling, seed 0).
        use_cache: False runs the uncached reference path (recompute the prefix at every step).
        num_steps: how many pixels to generate (default: the whole image); fewer is for benchmarks.
        generator: a CPU generator to draw from, or one per row (default: a fresh one seeded with
            ``config.seed``).
        progress: show a tqdm bar over the steps.

    Returns:
        (B, num_steps) long tensor of pixel values 0..255, on the CPU.
    """
    config = config or SamplingConfig()
    config.check()
    model.eval()
    c = model.config
    steps = c.seq_len
    if num_steps is not None:
        steps = check_int("num_steps", num_steps, minimum=1, maximum=c.seq_len)
    if generator is None:
        generator = torch.Generator().manual_seed(config.seed)
    batch = audio_features.shape[0]

    # 1. Memory: the audio, plus the null memory when guiding (one batch of 2B rows).
    memory = model.encode(audio_features)
    guided = config.guidance_scale != 1.0
    if guided:
        memory = torch.cat([memory, model.null_memory_batch(batch).to(memory.dtype)], dim=0)  # (2B, S, C)
    memory_kv = model.project_memory(memory)

    # 2. Decode pixel by pixel from the start token, into a preallocated (B', 1 + steps) buffer.
    rows = memory.shape[0]
    tokens = torch.empty((rows, steps + 1), dtype=torch.long, device=memory.device)
    tokens[:, 0] = c.start_token
    caches = model.allocate_caches(rows, memory.device, memory.dtype) if use_cache else None
    for step in tqdm(range(steps), disable=not progress, desc="pixels", leave=False):
        if caches is not None:
            logits = model.decode(tokens[:, step : step + 1], memory_kv, caches)[:, -1]  # (B', V)
        else:
            logits = model.decode(tokens[:, : step + 1], memory_kv)[:, -1]  # whole prefix again
        if guided:
            conditional, unconditional = logits.float().chunk(2, dim=0)
            logits = unconditional + config.guidance_scale * (conditional - unconditional)  # (B, V)
        chosen = choose_tokens(logits, config, generator)
        tokens[:batch, step + 1] = chosen
        if guided:
            tokens[batch:, step + 1] = chosen  # both halves continue with the same pixel
    return tokens[:batch, 1:].cpu()


def tokens_to_images(tokens: torch.Tensor, image_size: int) -> torch.Tensor:
    """(B, image_size²) pixel tokens -> (B, image_size, image_size) uint8."""
    return tokens.reshape(-1, image_size, image_size).clamp(0, 255).to(torch.uint8)
