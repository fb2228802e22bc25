"""SounDiff's one generation path: sounds -> conditioning (encoded and mixed once) -> one image per seed
(or per seed and time window, for a storyboard), each with its record.

The CLI, storyboards and any other caller (an evaluation harness, a web app) go through
:func:`iter_images`, so encode -> mix -> call -> record is written once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from sound2image.diffusion.conditioning import mix_embeddings
from sound2image.diffusion.record import GenerationRecord, describe_audio
from sound2image.errors import UsageError


@dataclass(frozen=True)
class Drawn:
    """One image of :func:`iter_images`: its seed, the storyboard window it shows (None for a whole
    sound), the image and its record (sounds and reference image filled in)."""

    seed: int
    image: Any
    record: GenerationRecord
    window: Any = None  # StoryboardWindow


def iter_images(
    pipe: Any,
    audio: Sequence[Any],
    seeds: Sequence[int],
    *,
    audio_weights: Sequence[float] | None = None,
    sources: Sequence[dict[str, Any]] | None = None,
    image: Any = None,
    image_record: dict[str, Any] | None = None,
    image_weight: float = 0.5,
    windows: Sequence[Any] | None = None,
    candidates: int = 1,
    batch_size: int = 8,
    **settings: Any,
) -> Iterator[tuple[int, Iterator[Drawn]]]:
    """The images of one job, seed by seed.

    Args:
        pipe (`SounDiffPipeline`): the pipeline.
        audio: the sounds (paths, clips, ...), blended into one conditioning with ``audio_weights``.
        seeds: one image (or one storyboard) per seed.
        audio_weights: one proportion per sound (default: equal).
        sources: each sound's record entry (default: :func:`describe_audio` of each sound).
        image: a reference image (a PIL image, or its (1, D) embedding from ``pipe.encode_image``) mixed
            into every conditioning with ``image_weight``; ``image_record`` is its record entry (default:
            ``{"weight": image_weight}``).
        windows: a storyboard: time windows of the one sound (``storyboard_windows``), each embedded on
            its own and drawn with the seed (so frames differ by their sound, not their noise); a frame's
            record holds the sound's entry with its ``window`` and ``extra["storyboard"]`` (index, start,
            end, window length and hop).
        candidates: best-of-N per image (see ``SounDiffPipeline.__call__``).
        batch_size: sounds (or windows) per audio-encoder pass.
        settings: the other keywords of ``SounDiffPipeline.__call__`` (prompt, steps, size, ...).

    Yields:
        ``(seed, draws)`` per seed; ``draws`` yields that seed's :class:`Drawn` images (one, or one per
        window). An error while drawing ends that seed's ``draws`` only: the caller may catch it and go on
        with the next seed. The sounds are encoded and mixed once, before the first seed.
    """
    items = list(audio)
    if windows is not None and len(items) != 1:
        raise UsageError("a storyboard takes one audio per image sequence; do not blend several")
    weights = list(audio_weights) if audio_weights is not None else None
    if sources is None:
        listed = weights or [None] * len(items)
        sources = [describe_audio(item, w) for item, w in zip(items, listed, strict=True)]
    image_embed = image
    if image is not None and not isinstance(image, torch.Tensor):
        image_embed = pipe.encode_image(image)  # (1, D)
    entry = None if image is None else (image_record or {"weight": image_weight})
    if windows is None:
        embeds = pipe.encode_audio(items, batch_size=batch_size)  # (K, D)
        conditions = [(None, mix_embeddings(embeds, pipe.calibration, weights, image_embed, image_weight))]
    else:
        embeds = pipe.encode_audio([w.clip for w in windows], batch_size=batch_size)  # (W, D)
        conditions = [
            (w, mix_embeddings(e[None, :], pipe.calibration, None, image_embed, image_weight))
            for w, e in zip(windows, embeds, strict=True)
        ]

    def draws(seed: int) -> Iterator[Drawn]:
        for window, conditioning in conditions:
            output = pipe(image_embeds=conditioning, seed=seed, candidates=candidates, **settings)
            heard, record = [dict(s) for s in sources], output.records[0]
            extra = dict(record.extra)
            if window is not None:
                heard = [{**heard[0], "window": [window.start, window.end]}]
                extra["storyboard"] = window.metadata()
            record = dataclasses.replace(record, audio=heard, image=entry, extra=extra)
            yield Drawn(seed, output.images[0], record, window)

    for seed in seeds:
        yield seed, draws(seed)
