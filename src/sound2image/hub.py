"""One rule for "may we download model weights?" and quiet hub loading, for every loader in the package.

Both weight paths - the ImageBind checkpoint (:mod:`sound2image.encoders.weights`) and the diffusers /
unCLIP pipeline (:mod:`sound2image.diffusion.loading`) - ask :func:`is_offline`, so one variable stops
every download. Downloads are off when the caller passes ``local_files_only=True`` (the CLI's
``--offline``) or when any of :data:`OFFLINE_VARIABLES` holds a true value as huggingface_hub reads it
(``1``, ``true``, ``yes``, ``on``, any case). Everything is read at call time, not import time, so a
variable set by a caller or a test takes effect.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from sound2image.errors import Sound2ImageError

#: Variables that switch model downloads off, ours first. ``HF_DATASETS_OFFLINE`` is not one of them:
#: it is about data sets, and we download no data set.
OFFLINE_VARIABLES = ("SOUND2IMAGE_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "DIFFUSERS_OFFLINE")
#: huggingface_hub's ``ENV_VARS_TRUE_VALUES`` (compared upper-cased).
TRUE_VALUES = frozenset({"1", "ON", "YES", "TRUE"})
#: Loggers of the libraries that print while loading weights (each library's root logger).
LIBRARY_LOGGERS = ("huggingface_hub", "diffusers", "transformers")


def is_true(value: str | None) -> bool:
    """True for ``1``/``on``/``yes``/``true`` in any case (surrounding blanks ignored), as huggingface_hub."""
    return value is not None and value.strip().upper() in TRUE_VALUES


def offline_reason(local_files_only: bool = False) -> str | None:
    """Why downloads are off (``"local_files_only=True"`` or e.g. ``"SOUND2IMAGE_OFFLINE=1"``), or None
    when allowed. An error quoting the first should list ``local_files_only`` in its ``parameters``."""
    if local_files_only:
        return "local_files_only=True"
    for name in OFFLINE_VARIABLES:
        if is_true(os.environ.get(name)):
            return f"{name}={os.environ[name].strip()}"
    return None


def is_offline(local_files_only: bool = False) -> bool:
    """True when no weights may be downloaded: ``local_files_only`` or any of :data:`OFFLINE_VARIABLES`."""
    return offline_reason(local_files_only) is not None


class _Hold(logging.Handler):
    """Keeps the records it is given, to be replayed or dropped later."""

    def __init__(self) -> None:
        super().__init__(level=logging.NOTSET)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def held_library_logs(names: tuple[str, ...] = LIBRARY_LOGGERS) -> Iterator[None]:
    """Hold what huggingface_hub, diffusers and transformers log while weights load.

    When the block ends with one of our own errors (a :class:`~sound2image.errors.Sound2ImageError`,
    e.g. the one-line ``WeightsError`` for missing weights), the held lines are dropped: that error
    already says what went wrong, and the libraries' "Couldn't connect to the Hub" / "Will try to load
    from local cache" lines would only precede it on stderr. Otherwise (success, or any other exception)
    every held record is replayed through the loggers' usual handlers, in order, so no warning is lost.
    Our own loggers (``sound2image.*``) and ``print`` output are never touched.
    """
    hold = _Hold()
    saved = []
    for name in names:
        logger = logging.getLogger(name)
        saved.append((logger, logger.handlers[:], logger.propagate))
        logger.handlers = [hold]
        logger.propagate = False
    dropped = False
    try:
        yield
    except Sound2ImageError:
        dropped = True
        raise
    finally:
        for logger, handlers, propagate in saved:
            logger.handlers = handlers
            logger.propagate = propagate
        if not dropped:
            for record in hold.records:
                logging.getLogger(record.name).handle(record)
