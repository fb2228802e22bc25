"""Long audio -> a storyboard: one image per time window, plus a contact sheet.

Every window is embedded on its own (ImageBind looks at three 2 s clips inside each window) and every
image uses the same seed, so the differences between frames come from the sound, not from the noise.
Windows keep all the channels of the clip; the audio encoder's channel policy (default: their mean)
applies to each, as for any other input.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from sound2image.validation import check_number


@dataclass(frozen=True)
class StoryboardWindow:
    """One time window of the source audio."""

    index: int
    start: float  # seconds
    end: float  # seconds
    clip: Any  # AudioClip holding just this window
    length: float | None = None  # the storyboard's window length, seconds (as asked for)
    hop: float | None = None  # the storyboard's hop, seconds

    @property
    def tag(self) -> str:
        """File-name tag that sorts in time order: ``t0012.50-0017.50``."""
        return f"t{self.start:07.2f}-{self.end:07.2f}"

    @property
    def label(self) -> str:
        """Caption for the contact sheet: ``12.5-17.5 s``."""
        return f"{self.start:.1f}-{self.end:.1f} s"

    def metadata(self, window: float | None = None, hop: float | None = None) -> dict[str, Any]:
        """The frame's ``storyboard`` record entry (``window``/``hop`` default to the storyboard's)."""
        window = self.length if window is None else window
        hop = self.hop if hop is None else hop
        return {"index": self.index, "start": self.start, "end": self.end, "window": window, "hop": hop}


@dataclass(frozen=True)
class StoryboardFrame:
    """A generated frame: its window, image, the (1, D) conditioning used and the image's record."""

    window: StoryboardWindow
    image: Any
    image_embeds: torch.Tensor
    record: Any = None  # GenerationRecord


def storyboard_windows(clip: Any, window: float, hop: float | None = None) -> list[StoryboardWindow]:
    """Cut ``clip`` into windows of ``window`` seconds every ``hop`` seconds (default: no overlap).

    The last window is aligned to the end so no audio is left out; a clip shorter than one window is
    one window.
    """
    from sound2image.audio.length import iter_windows

    window = check_number("window", window, minimum=0.0, min_inclusive=False)  # seconds
    hop = window if hop is None else check_number("hop", hop, minimum=0.0, min_inclusive=False)
    return [
        StoryboardWindow(index, start, end, piece, window, hop)
        for index, (start, end, piece) in enumerate(iter_windows(clip, window, hop))
    ]


def iter_storyboard(
    pipe: Any,
    windows: Sequence[StoryboardWindow],
    seed: int,
    image_embed: torch.Tensor | None = None,
    image_weight: float = 0.5,
    batch_size: int = 8,
    **settings: Any,
) -> Iterator[StoryboardFrame]:
    """Generate one frame per window with the same ``seed``; ``settings`` go to ``pipe.__call__``.

    ``image_embed`` (1, D), when given, is mixed into every window with ``image_weight``. One seed of
    :func:`sound2image.diffusion.runner.iter_images`.
    """
    from sound2image.diffusion.runner import iter_images

    clip = windows[0].clip
    runs = iter_images(
        pipe,
        [clip],
        [seed],
        image=image_embed,
        image_weight=image_weight,
        windows=windows,
        batch_size=batch_size,
        **settings,
    )
    for _, draws in runs:
        for drawn in draws:
            yield StoryboardFrame(drawn.window, drawn.image, drawn.record.image_embeds, drawn.record)


def contact_sheet(frames: Sequence[StoryboardFrame], columns: int | None = None) -> Any:
    """All frames in time order on one sheet, each captioned with its time window."""
    from sound2image.outputs import make_grid

    return make_grid([f.image for f in frames], columns=columns, labels=[f.window.label for f in frames])


def sheet_record(frames: Sequence[StoryboardFrame], names: Sequence[str], source: dict[str, Any]) -> Any:
    """The contact sheet's record: the first frame's model and settings, the whole sound (``source``),
    the storyboard's ``window`` and ``hop`` and the frames' file ``names`` (no best-of-N scores; each
    frame's PNG keeps its own conditioning vector, so ``to_metadata()`` of this record may drop it)."""
    import dataclasses

    window = frames[0].window
    story = {"window": window.length, "hop": window.hop}
    return dataclasses.replace(
        frames[0].record,
        audio=[dict(source)],
        best_of=None,
        extra={"storyboard": story, "frames": list(names)},
    )


def storyboard_sheet(
    frames: Sequence[StoryboardFrame], names: Sequence[str], source: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """The contact sheet (:func:`contact_sheet`) and the PNG metadata of its record (:func:`sheet_record`),
    without the conditioning vector: each frame's own PNG (``names``) holds its vector."""
    metadata = sheet_record(frames, names, source).to_metadata()
    del metadata["embedding"]
    return contact_sheet(frames), metadata
