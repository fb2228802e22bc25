"""Audio input: decode any sound file, resample it properly, fit it to a length.

>>> from sound2image.audio import load_audio
>>> clip = load_audio("beach.wav", 16000, duration=10.0)  # doctest: +SKIP
>>> clip.samples.shape, clip.length_action  # doctest: +SKIP
((160000,), 'looped')
"""

from sound2image.audio.io import (
    DEFAULT_MAX_DURATION,
    AudioClip,
    AudioInfo,
    AudioSource,
    AudioWarning,
    SilentAudioWarning,
    load_audio,
    peak_dbfs,
    probe_audio,
)
from sound2image.audio.length import LengthPolicy, apply_length, iter_windows
from sound2image.audio.resample import resample, resampled_length

__all__ = [
    "DEFAULT_MAX_DURATION",
    "AudioClip",
    "AudioInfo",
    "AudioSource",
    "AudioWarning",
    "LengthPolicy",
    "SilentAudioWarning",
    "apply_length",
    "iter_windows",
    "load_audio",
    "peak_dbfs",
    "probe_audio",
    "resample",
    "resampled_length",
]
