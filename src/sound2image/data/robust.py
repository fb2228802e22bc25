"""Loops over data that survive bad items: :class:`BadItems` and :func:`load_each`.

A training run over 5,000 pairs should not die on pair 4,312 because one JPEG is truncated. Loaders
raise :class:`~sound2image.errors.Sound2ImageError` one-liners; these helpers record them with the
item's path, skip the item and carry on, and the caller reports ``bad.lines()`` at the end.
Any other exception is a bug and is not swallowed.

Example::

    bad = BadItems()
    for pair, (clip, image) in load_each(scan.pairs, load_pair, bad=bad):
        ...
    for line in bad.lines():
        print(line, file=sys.stderr)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from sound2image.errors import DataError, Sound2ImageError

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class BadItems:
    """A log of items that could not be used: ``(path, message)`` in the order they were met."""

    entries: list[tuple[str, str]] = field(default_factory=list)

    def record(self, path: str | os.PathLike[str], error: BaseException | str) -> None:
        """Note that the item at ``path`` failed with ``error`` (an exception or a message)."""
        self.entries.append((os.fspath(path), str(error)))

    @property
    def count(self) -> int:
        """How many items were recorded."""
        return len(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def lines(self) -> list[str]:
        """One line per bad item, naming its path (not repeated when the message already names it)."""
        return [message if path in message else f"{path}: {message}" for path, message in self.entries]

    def summary(self) -> str:
        """``"3 bad items skipped"`` (or ``"no bad items"``)."""
        if not self.entries:
            return "no bad items"
        return f"{self.count} bad item{'s' if self.count != 1 else ''} skipped"


def item_path(item: object) -> str:
    """How an item is named in the log: a pair's audio and image paths, else the item itself."""
    audio, image = getattr(item, "audio", None), getattr(item, "image", None)
    if audio is not None and image is not None:
        return f"{os.fspath(audio)} + {os.fspath(image)}"
    return os.fspath(item) if isinstance(item, (str, os.PathLike)) else str(item)


def load_each(
    items: Iterable[Item],
    load: Callable[[Item], Result],
    *,
    bad: BadItems | None = None,
    path_of: Callable[[Item], str] = item_path,
    max_bad: int | None = None,
) -> Iterator[tuple[Item, Result]]:
    """Yield ``(item, load(item))`` for every item that loads; record and skip those that raise.

    Args:
        items: anything iterable (pairs, paths).
        load: the loader; it signals a bad item by raising a ``Sound2ImageError`` (AudioError, ImageError...).
        bad: where failures are recorded (a fresh log is used if omitted, but then the caller cannot read it).
        path_of: how to name an item in the log.
        max_bad: stop with a DataError once more than this many items failed (``None``: never).

    Raises:
        DataError: more than ``max_bad`` items failed.
    """
    bad = BadItems() if bad is None else bad
    for item in items:
        try:
            result = load(item)
        except Sound2ImageError as error:
            bad.record(path_of(item), error)
            if max_bad is not None and bad.count > max_bad:
                raise DataError(
                    f"{bad.count} bad items, more than the allowed {max_bad}; last: {bad.lines()[-1]}"
                ) from error
            continue
        yield item, result


def load_all(
    items: Iterable[Item],
    load: Callable[[Item], Result],
    *,
    bad: BadItems | None = None,
    path_of: Callable[[Item], str] = item_path,
    max_bad: int | None = None,
) -> tuple[list[tuple[Item, Result]], BadItems]:
    """Eager :func:`load_each`: ``([(item, result), ...], bad_items)``."""
    bad = BadItems() if bad is None else bad
    loaded = list(load_each(items, load, bad=bad, path_of=path_of, max_bad=max_bad))
    return loaded, bad
