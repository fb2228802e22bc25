"""Audio input: decode any sound file, resample it properly, fit it to a length.

>>> from sound2image.audio import load_audio
>>> clip = load_audio("beach.wav", 16000, duration=10.0)  # doctest: +SKIP
>>> clip.samples.shape, clip.length_action  # doctest: +SKIP
((160000,), 'looped')
"""

from sound2image.audio.files import (
    AV_SUFFIXES,
    SOUNDFILE_SUFFIXES,
    AudioFolderScan,
    audio_suffixes,
    is_hidden,
    scan_audio_folder,
)
from sound2image.audio.io import (
    DEFAULT_MAX_DURATION,
    AudioClip,
    AudioInfo,
    AudioSource,
    AudioWarning,
    SilentAudioWarning,
    UnfinishedAudioWarning,
    load_audio,
    peak_dbfs,
    probe_audio,
)
from sound2image.audio.length import LengthPolicy, apply_length, iter_windows
from sound2image.audio.resample import resample, resampled_length

__all__ = [
    "AV_SUFFIXES",
    "DEFAULT_MAX_DURATION",
    "SOUNDFILE_SUFFIXES",
    "AudioFolderScan",
    "AudioClip",
    "AudioInfo",
    "AudioSource",
    "AudioWarning",
    "LengthPolicy",
    "SilentAudioWarning",
    "UnfinishedAudioWarning",
    "apply_length",
    "audio_suffixes",
    "is_hidden",
    "iter_windows",
    "load_audio",
    "peak_dbfs",
    "probe_audio",
    "resample",
    "resampled_length",
    "scan_audio_folder",
]
