"""What to do with clips shorter or longer than the duration a model wants, and windows over long audio.

The default follows the ADVANCE dataset: a short recording is *looped* to the wanted length (the
dataset's own 5 s recordings were looped to 10 s), a long one is *cropped* from its start.
:func:`apply_length` reports what it did ("none" | "looped" | "padded" | "cropped"), which
:func:`sound2image.audio.load_audio` stores in ``AudioClip.length_action``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from sound2image.errors import UsageError

if TYPE_CHECKING:
    from sound2image.audio.io import AudioClip

ShortAction = Literal["loop", "pad", "keep"]
LongAction = Literal["crop", "keep"]
CropAnchor = Literal["start", "centre"]

_SHORT = ("loop", "pad", "keep")
_LONG = ("crop", "keep")
_ANCHORS = ("start", "centre", "center")


@dataclass(frozen=True)
class LengthPolicy:
    """How :func:`apply_length` fits a clip to a wanted duration.

    Attributes:
        short: for a clip shorter than the duration — ``"loop"`` repeats it from its start (ADVANCE
            convention, default), ``"pad"`` appends zeros (silence), ``"keep"`` leaves it short.
        long: for a clip longer than the duration — ``"crop"`` (default) keeps one stretch of the
            duration, ``"keep"`` leaves it long (use :func:`iter_windows` to cover all of it).
        crop: where a crop is taken — ``"start"`` (default) or ``"centre"``.
    """

    short: ShortAction = "loop"
    long: LongAction = "crop"
    crop: CropAnchor = "start"

    def __post_init__(self) -> None:
        if self.short not in _SHORT:
            raise UsageError(f"length policy: short must be one of {', '.join(_SHORT)}, got {self.short!r}")
        if self.long not in _LONG:
            raise UsageError(f"length policy: long must be one of {', '.join(_LONG)}, got {self.long!r}")
        if self.crop not in _ANCHORS:
            raise UsageError(f"length policy: crop must be 'start' or 'centre', got {self.crop!r}")


def target_frames(duration: float, sample_rate: int) -> int:
    """Number of samples of ``duration`` seconds at ``sample_rate`` (rounded to the nearest sample)."""
    if not np.isfinite(duration) or duration <= 0:
        raise UsageError(f"duration must be a positive number of seconds, got {duration!r}")
    return max(1, int(round(duration * sample_rate)))


def apply_length(
    samples: np.ndarray, target: int, policy: LengthPolicy | None = None
) -> tuple[np.ndarray, str]:
    """Fit ``samples`` (shape ``(n,)`` or ``(channels, n)``) to ``target`` samples along the last axis.

    Returns the fitted array and what was done: ``"none"``, ``"looped"``, ``"padded"`` or ``"cropped"``.
    An empty input cannot be looped; it is zero-padded instead (the loader never passes one).
    """
    policy = policy or LengthPolicy()
    n = samples.shape[-1]
    if n == target:
        return samples, "none"
    if n > target:
        if policy.long == "keep":
            return samples, "none"
        start = 0 if policy.crop == "start" else (n - target) // 2
        return samples[..., start : start + target], "cropped"
    if policy.short == "keep":
        return samples, "none"
    if policy.short == "loop" and n > 0:
        repeats = -(-target // n)  # ceil: enough whole copies, then cut to the target
        tiled = np.tile(samples, (1,) * (samples.ndim - 1) + (repeats,))
        return tiled[..., :target], "looped"
    padding = [(0, 0)] * (samples.ndim - 1) + [(0, target - n)]
    return np.pad(samples, padding), "padded"


def window_starts(total: int, window: int, hop: int) -> list[int]:
    """Start indices of windows of ``window`` samples every ``hop`` samples over ``total`` samples.

    Windows lie wholly inside the audio; when the last hop leaves the end uncovered, one more window is
    aligned to the end (so it overlaps its neighbour more than the others). Audio shorter than one
    window gives a single window over all of it (start 0).
    """
    if total <= window:
        return [0]
    starts = list(range(0, total - window + 1, hop))
    if starts[-1] + window < total:
        starts.append(total - window)
    return starts


def iter_windows(clip: AudioClip, window: float, hop: float) -> Iterator[tuple[float, float, AudioClip]]:
    """Cut a long clip into windows of ``window`` seconds every ``hop`` seconds (for storyboards).

    Yields ``(start_s, end_s, window_clip)``; every window has exactly ``window`` seconds except when the
    whole clip is shorter (one window, the whole clip). The last window is aligned to the end of the clip
    so that no audio is left out. Each window clip keeps the source's metadata and is named
    ``"<name> [start-end s]"``.
    """
    if not (np.isfinite(window) and window > 0) or not (np.isfinite(hop) and hop > 0):
        raise UsageError(f"window and hop must be positive seconds, got window={window!r} hop={hop!r}")
    sr = clip.sample_rate
    total = clip.samples.shape[-1]
    win = target_frames(window, sr)
    step = target_frames(hop, sr)
    for start in window_starts(total, win, step):
        end = min(start + win, total)
        start_s, end_s = start / sr, end / sr
        piece = clip.samples[..., start:end]
        yield (
            start_s,
            end_s,
            dataclasses.replace(
                clip, samples=piece, name=f"{clip.name} [{start_s:.2f}-{end_s:.2f} s]", length_action="none"
            ),
        )
