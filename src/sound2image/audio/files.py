"""Which files in a folder are sound files: one suffix list and one hidden-file rule for every folder scan.

Every command that takes a folder (``generate``, ``embed``, the dataset scanners behind ``data check``,
``data split`` and the training caches) walks it with :func:`scan_audio_folder` or tests names with
:func:`audio_suffixes` and :func:`is_hidden`, so a file is either an input everywhere or nowhere.

The rules, in order, for each file below the folder (recursively):

1. **Hidden** — any part of its path below the folder starts with ``.`` (``.DS_Store``, the macOS
   AppleDouble twin ``._a.wav`` of ``a.wav``, anything inside ``.git/``), or its name is OS litter
   (``Thumbs.db``, ``desktop.ini``): skipped silently.
2. **Audio suffix** — its suffix (lower case) is one the loader reads: :data:`SOUNDFILE_SUFFIXES`
   through libsndfile, plus :data:`AV_SUFFIXES` when PyAV (the ``[av]`` extra) is installed: an input.
   Without PyAV, a file with an :data:`AV_SUFFIXES` suffix is reported as skipped, naming the extra.
3. **Known non-audio suffix** — images, text, tables, metadata and model files
   (:data:`NON_AUDIO_SUFFIXES`, e.g. ``.jpg .png .txt .md .json .csv .safetensors``): skipped silently,
   since datasets and output folders are full of them.
4. **Anything else** (``.xyz``, no suffix): reported as skipped, ``not an audio suffix``.

The suffix decides what is scanned; the content decides how it is decoded (a ``.mp3`` holding AAC is
read as AAC, see :func:`sound2image.audio.load_audio`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

#: The extra that adds PyAV (FFmpeg), as a user installs it.
AV_EXTRA_HINT = 'pip install "sound2image[av]"'

# libsndfile's format names (soundfile.available_formats()) -> the suffixes files of that format carry.
# The loader reads every one of them (tests/audio/test_files.py writes each with soundfile and loads it).
# RAW, MAT4/MAT5 (Matlab data), HTK and XI are left out: their suffixes name headerless or non-audio
# data far more often than sound, and XI does not keep the sample rate. SD2 is left out: its header lives
# in the resource fork (on other systems the hidden AppleDouble file ._name.sd2). MP3 needs libsndfile >= 1.1
# (soundfile >= 0.12 bundles it); with an older one a .mp3 is still scanned and its load error reported.
_SOUNDFILE_FORMAT_SUFFIXES: dict[str, tuple[str, ...]] = {
    "WAV": (".wav", ".wave", ".bwf"),
    "WAVEX": (".wav",),
    "RF64": (".rf64",),
    "W64": (".w64",),
    "FLAC": (".flac",),
    "OGG": (".ogg", ".oga", ".opus"),
    "MP3": (".mp3", ".mp2", ".mpga"),
    "AIFF": (".aif", ".aiff", ".aifc"),
    "CAF": (".caf",),
    "AU": (".au", ".snd"),
    "IRCAM": (".sf", ".ircam"),
    "NIST": (".sph", ".nist"),
    "VOC": (".voc",),
    "AVR": (".avr",),
    "PAF": (".paf",),
    "SVX": (".8svx", ".16svx", ".svx"),
    "WVE": (".wve",),
    "PVF": (".pvf",),
    "SDS": (".sds",),
}


#: Suffixes (lower case, with the dot) of files read through soundfile (libsndfile). Fixed here rather
#: than asked of libsndfile at import time, so that ``sound2image --help`` loads no native library.
SOUNDFILE_SUFFIXES: frozenset[str] = frozenset(
    suffix for suffixes in _SOUNDFILE_FORMAT_SUFFIXES.values() for suffix in suffixes
)
#: Suffixes of files read through PyAV (FFmpeg), the ``[av]`` extra: MP4/M4A/AAC, Matroska/WebM, the
#: audio track of videos, Windows Media, AMR, AC-3 …
AV_SUFFIXES: frozenset[str] = frozenset(
    {
        ".m4a", ".m4b", ".mp4", ".m4v", ".mov", ".3gp", ".3g2", ".aac", ".adts", ".webm", ".weba", ".mkv",
        ".mka", ".avi", ".wma", ".wmv", ".asf", ".flv", ".ac3", ".eac3", ".amr", ".mpg", ".mpeg", ".m2ts",
        ".alac", ".ape", ".wv", ".tta", ".dts",
    }
) - SOUNDFILE_SUFFIXES  # fmt: skip
#: Suffixes skipped silently in a folder scan: images, text, tables, metadata, checkpoints, archives.
NON_AUDIO_SUFFIXES: frozenset[str] = frozenset(
    {
        ".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".heic", ".svg", ".ico",
        ".txt", ".md", ".rst", ".pdf", ".html", ".htm", ".xml", ".log", ".json", ".jsonl", ".ndjson",
        ".csv", ".tsv", ".yaml", ".yml", ".toml", ".ini", ".cfg", ".py", ".ipynb", ".sh",
        ".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".npy", ".npz", ".pkl",
        ".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".md5", ".sha256", ".sha1", ".lock",
    }
)  # fmt: skip
#: File names (lower case) that operating systems leave in folders; treated as hidden.
OS_LITTER_NAMES: frozenset[str] = frozenset({"thumbs.db", "desktop.ini", "ehthumbs.db"})


def av_available() -> bool:
    """Whether PyAV (the ``[av]`` extra) can be imported (the loader's own test: ``import av``)."""
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def audio_suffixes(with_av: bool | None = None) -> frozenset[str]:
    """The suffixes a folder scan takes as sound files.

    Args:
        with_av: include :data:`AV_SUFFIXES`; ``None`` (default): when PyAV is installed.

    Returns:
        Lower-case suffixes with the dot, e.g. ``".wav"``.
    """
    if with_av is None:
        with_av = av_available()
    return SOUNDFILE_SUFFIXES | AV_SUFFIXES if with_av else SOUNDFILE_SUFFIXES


def is_hidden(path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> bool:
    """Whether a file is hidden: a part of its path (below ``root`` when given) starts with ``.``, or
    its name is OS litter (``Thumbs.db``, ``desktop.ini``).

    This covers ``.DS_Store``, macOS AppleDouble files (``._a.wav``, resource forks of ``a.wav``) and
    everything inside hidden folders (``.git/``, ``.cache/``). Parts above ``root`` are not looked at,
    so a dataset kept under ``~/.local/data`` is not hidden as a whole. ``.`` and ``..`` do not count.

    Raises:
        ValueError: ``path`` does not lie below ``root``.
    """
    path = Path(path)
    parts = path.relative_to(root).parts if root is not None else path.parts
    if path.name.lower() in OS_LITTER_NAMES:
        return True
    return any(part.startswith(".") and part not in (".", "..") for part in parts)


@dataclass
class AudioFolderScan:
    """What :func:`scan_audio_folder` found.

    Attributes:
        files: the sound files, sorted by path.
        skipped: ``(path, reason)`` for each file skipped for its suffix (unknown suffix, or one that
            needs the ``[av]`` extra) and each subfolder that could not be listed, sorted by path.
            Hidden files and known non-audio files (images, text …) are not listed.
    """

    files: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


#: Reason given for a file whose suffix is not a sound suffix.
NOT_AUDIO_REASON = "not an audio suffix"
#: Reason given for a file that only PyAV reads, when PyAV is missing.
NEEDS_AV_REASON = f"needs the [av] extra ({AV_EXTRA_HINT})"


def classify_suffix(path: str | os.PathLike[str], with_av: bool | None = None) -> str | None:
    """``None`` when ``path``'s suffix is a sound suffix, ``""`` when it is a known non-audio suffix
    (skip silently), else the reason to report (:data:`NOT_AUDIO_REASON` or :data:`NEEDS_AV_REASON`)."""
    suffix = Path(path).suffix.lower()
    if with_av is None:
        with_av = av_available()
    if suffix in audio_suffixes(with_av):
        return None
    if suffix in AV_SUFFIXES:
        return NEEDS_AV_REASON
    if suffix in NON_AUDIO_SUFFIXES:
        return ""
    return NOT_AUDIO_REASON


def scan_audio_folder(folder: str | os.PathLike[str], *, with_av: bool | None = None) -> AudioFolderScan:
    """Find the sound files below ``folder`` (recursive) by the rules in this module's docstring.

    Hidden folders are not entered. Symbolic links to files are followed; links to folders are not
    (a link loop cannot make the walk endless).

    Args:
        folder: the folder to walk.
        with_av: whether PyAV's suffixes count as sound; ``None``: when PyAV is installed.

    Returns:
        An :class:`AudioFolderScan`: sorted files, and the files skipped for their suffix with a reason.

    Raises:
        NotADirectoryError: ``folder`` is not a folder.
    """
    root = Path(folder)
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a folder")
    if with_av is None:
        with_av = av_available()
    scan = AudioFolderScan()

    def unreadable(error: OSError) -> None:
        scan.skipped.append((Path(error.filename or root), f"cannot list folder ({error.strerror})"))

    for current, subfolders, names in os.walk(root, onerror=unreadable):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        for name in names:
            path = Path(current) / name
            if is_hidden(path, root) or not path.is_file():
                continue
            reason = classify_suffix(path, with_av)
            if reason is None:
                scan.files.append(path)
            elif reason:
                scan.skipped.append((path, reason))
    scan.files.sort()
    scan.skipped.sort()
    return scan
