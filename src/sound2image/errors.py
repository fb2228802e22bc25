"""The error families of sound2image.

Every error a user can cause is a :class:`Sound2ImageError` whose message is one line naming the
file (or setting) and the problem. The CLI prints that line and exits with ``exit_code``; it only
shows a traceback with ``--debug``. This module imports nothing from the package.

Library messages name *parameters* (``batch_size must be >= 1``), never CLI flags: Python users have
no flags. An error lists the parameters its message names in ``parameters``; the CLI's one error
boundary (:mod:`sound2image.cli.main`) writes each as the flag of the command that ran
(``--batch-size must be >= 1``).
"""

from __future__ import annotations

from collections.abc import Iterable


class Sound2ImageError(Exception):
    """Base class: a one-line, user-facing problem.

    Args:
        *args: the message (one line).
        parameters: the library parameters the message names, as written in it (``"batch_size"``,
            ``"overwrite"`` in ``overwrite=True``); the CLI names the matching flags instead.
    """

    #: Process exit code the CLI uses for this error (2 = bad input or usage, 1 = failure).
    exit_code: int = 1
    #: The parameters the message names (see the module docstring).
    parameters: tuple[str, ...] = ()

    def __init__(self, *args: object, parameters: Iterable[str] = ()) -> None:
        super().__init__(*args)
        if parameters:
            self.parameters = tuple(parameters)


class UsageError(Sound2ImageError):
    """Bad arguments or settings (a value out of range, conflicting options)."""

    exit_code = 2


class OutputExistsError(UsageError):
    """An output file exists and overwriting was not requested."""


# --- audio input -------------------------------------------------------------------------------


class AudioError(Sound2ImageError):
    """A sound file (or buffer) cannot be used."""

    exit_code = 2


class AudioFileNotFoundError(AudioError):
    """The path does not exist or is not a file."""


class EmptyAudioFileError(AudioError):
    """The file has 0 bytes."""


class NotAudioError(AudioError):
    """The bytes are not a recognised audio format."""


class CorruptAudioError(AudioError):
    """The header is readable but the data is truncated or damaged."""


class NoSamplesError(AudioError):
    """The stream decodes to zero samples."""


class NonFiniteAudioError(AudioError):
    """The samples contain NaN or infinity."""


class AudioTooLongError(AudioError):
    """The duration (read from the header) exceeds the configured limit."""


class MissingExtraError(Sound2ImageError):
    """An optional dependency is needed; the message names the pip extra to install."""

    exit_code = 1


# --- datasets ----------------------------------------------------------------------------------


class DataError(Sound2ImageError):
    """A dataset root, manifest or item cannot be used."""

    exit_code = 2


class ImageError(DataError):
    """An image file is missing, empty, corrupt or not an image."""


# --- weights and models ------------------------------------------------------------------------


class WeightsError(Sound2ImageError):
    """Model weights are missing, unreachable, truncated or do not match the model."""

    exit_code = 1
