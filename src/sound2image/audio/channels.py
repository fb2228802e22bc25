"""The channel policy: how multichannel audio becomes the one signal an encoder or feature extractor sees.

One rule for every entry point (``generate``, ``embed``, the Python API, both training caches,
storyboards, the Image Transformer's features):

* ``"mean"`` (the default): the down-mix, the mean of all channels (``samples.mean(axis=0)`` in float32,
  exactly what :func:`sound2image.audio.load_audio` does with ``mono=True``);
* ``"first"``: channel 0 only, which is what ImageBind's reference preprocessing reads (exact parity with
  the official ``load_and_transform_audio_data``; the golden tests use it);
* an integer ``k >= 0``: channel ``k``.

A mono signal is used as it is by every policy (index 0 included).

:func:`select_channel` warns with :class:`SilentChannelWarning` when the signal it returns is silent
(peak at or below :data:`~sound2image.audio.io.SILENCE_PEAK`, -90 dBFS) while another channel is not:
a silent left channel read with ``"first"``, or channels in opposite phase that cancel in the mean.
"""

from __future__ import annotations

import warnings

import numpy as np

from sound2image.audio.io import SILENCE_PEAK, AudioWarning
from sound2image.errors import AudioError, UsageError

#: Channel policies by name; an integer index is also accepted.
CHANNEL_POLICIES = ("mean", "first")
#: The default policy everywhere.
DEFAULT_CHANNEL = "mean"

ChannelPolicy = str | int


class SilentChannelWarning(AudioWarning):
    """The signal the channel policy selects is silent while another channel carries sound."""


def check_channel(channel: object, what: str = "channel") -> ChannelPolicy:
    """Validate a channel policy: ``"mean"``, ``"first"`` or an integer index >= 0 (also as a digit string).

    Returns the policy as stored (a string name or an ``int``).

    Raises:
        UsageError: naming ``what`` (e.g. ``--channel``) and the bad value.
    """
    if isinstance(channel, str) and channel.strip().isdigit():
        channel = int(channel)
    if isinstance(channel, str) and channel in CHANNEL_POLICIES:
        return channel
    if isinstance(channel, (int, np.integer)) and not isinstance(channel, bool) and channel >= 0:
        return int(channel)
    raise UsageError(f"{what} must be 'mean', 'first' or a channel index >= 0, got {channel!r}")


def parse_channel(text: str) -> ChannelPolicy:
    """argparse ``type=`` for ``--channel``: ``mean``, ``first`` or a channel index."""
    import argparse

    try:
        return check_channel(text, "--channel")
    except UsageError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--channel ")) from None


def describe_channel(channel: ChannelPolicy) -> str:
    """Human wording of a policy, for messages: ``the mean of the channels``, ``channel 0``..."""
    if channel == "mean":
        return "the mean of the channels"
    return f"channel {0 if channel == 'first' else int(channel)}"


def select_channel(
    samples: np.ndarray, channel: ChannelPolicy = DEFAULT_CHANNEL, name: str = "audio"
) -> np.ndarray:
    """The signal a policy selects: ``(n,)`` or ``(channels, n)`` float samples -> float32 ``(n,)``.

    Args:
        samples: mono ``(n,)`` or ``(channels, n)``.
        channel: ``"mean"``, ``"first"`` or an integer index (see the module docstring).
        name: the file (or input) named in messages.
    Returns:
        float32 ``(n,)``; the down-mix is ``samples.mean(axis=0, dtype=float32)``.
    Raises:
        UsageError: an invalid policy.
        AudioError: an index beyond the channels of the input; samples that are not 1-D or 2-D.
    Warns:
        SilentChannelWarning: the selected signal is silent (peak <= -90 dBFS) but a channel is not.
    """
    channel = check_channel(channel)
    samples = np.asarray(samples)
    if samples.ndim == 1:
        if isinstance(channel, int) and channel > 0:
            raise AudioError(f"{name}: channel {channel} requested but the input is mono (1 channel)")
        return samples.astype(np.float32, copy=False)
    if samples.ndim != 2:
        raise AudioError(f"{name}: expected samples of shape (n,) or (channels, n), got {samples.shape}")
    count = samples.shape[0]
    index = 0 if channel == "first" else channel
    if isinstance(index, int) and index >= count:
        raise AudioError(f"{name}: channel {index} requested but the input has {count} channel(s)")
    if channel == "mean":
        out = samples.mean(axis=0, dtype=np.float32)  # (n,)
    else:
        out = samples[index].astype(np.float32, copy=False)  # (n,)
    if count > 1 and out.size and float(np.max(np.abs(out))) <= SILENCE_PEAK:
        peaks = np.max(np.abs(samples), axis=1)  # (channels,)
        loud = [k for k in range(count) if peaks[k] > SILENCE_PEAK]
        if loud:
            what = describe_channel(channel)
            if channel == "mean":
                cause, fix = "the channels cancel out: ", f"channel={loud[0]} (--channel {loud[0]})"
            else:
                cause, fix = "", "channel='mean' (--channel mean)"
            warnings.warn(
                f"{name}: {cause}{what} is silent (peak at or below -90 dBFS) but channel {loud[0]} "
                f"is not; {fix} uses the sound",
                SilentChannelWarning,
                stacklevel=2,
            )
    return out
