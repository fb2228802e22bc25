"""Decode sound from a path, bytes or a binary file object, with one clear error per kind of bad input.

Two back ends, tried in this order:

* **soundfile** (libsndfile): WAV (PCM 8/16/24/32-bit, float), FLAC, OGG/Vorbis/Opus, MP3, AIFF, CAF, AU …
* **PyAV** (FFmpeg, the optional ``av`` extra): M4A/AAC, WebM/Opus, Matroska, the audio track of a
  video (MP4, MOV, MKV, AVI) and anything else FFmpeg reads. Without PyAV such a file raises
  :class:`~sound2image.errors.MissingExtraError` naming ``pip install "sound2image[av]"``.

Checks, in order (each failure is its own :class:`~sound2image.errors.AudioError` subclass, with a one
line message that starts with the file's name): missing file → 0 bytes → not audio → damaged header
or truncated data (a WAV whose data chunk is shorter than its header says is caught from the header,
because libsndfile silently returns fewer frames) → longer than ``max_duration`` (from the header,
before decoding) → no samples → decoding errors and frame counts short of the header's → NaN/Inf. An
all-silent clip is not an error: it gets a warning in ``AudioClip.warnings`` and a
:class:`SilentAudioWarning`.

Nothing hangs or explodes on a hostile input: decoding goes block by block (never allocating what a
header claims), stops as soon as the decoded audio passes the duration limit, and a file object is read
in chunks up to ``MAX_STREAM_BYTES``.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import struct
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from sound2image.audio.files import AV_EXTRA_HINT, AV_SUFFIXES, SOUNDFILE_SUFFIXES
from sound2image.audio.length import LengthPolicy, apply_length, target_frames
from sound2image.audio.resample import resample
from sound2image.errors import (
    AudioError,
    AudioFileNotFoundError,
    AudioTooLongError,
    CorruptAudioError,
    EmptyAudioFileError,
    MissingExtraError,
    NonFiniteAudioError,
    NoSamplesError,
    NotAudioError,
    UsageError,
)
from sound2image.validation import check_int, check_number

AudioSource = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO

#: Default limit on a clip's duration (seconds); ``max_duration=None`` turns the check off.
DEFAULT_MAX_DURATION = 600.0
#: A file object is read in chunks up to this many bytes (a stream that never ends must not hang us).
MAX_STREAM_BYTES = 1 << 30
#: Frames decoded per block by soundfile.
BLOCK_FRAMES = 1 << 18
#: Peak level at or below which a clip counts as silent: -90 dBFS, about one 16-bit step.
SILENCE_PEAK = 10 ** (-90 / 20)
# Containers soundfile reads, recognised by their first bytes; and those that need PyAV (libsndfile
# cannot read them: its MPEG decoder would even take ADTS AAC for MPEG Layer I/II noise).
_SOUNDFILE_KINDS = {"WAV", "FLAC", "OGG", "AIFF", "CAF", "AU", "MP3"}
_AV_KINDS = {"MP4", "MATROSKA", "AVI", "AAC", "ASF", "FLV"}
# How a sniffed container is named in messages.
_KIND_NAMES = {
    "AAC": "AAC audio (ADTS)",
    "MP4": "an MP4/M4A container",
    "MATROSKA": "a Matroska/WebM container",
    "AVI": "an AVI container",
    "ASF": "an ASF/WMA container",
    "FLV": "an FLV container",
}
# Suffixes that only PyAV reads (one list with the folder scans: sound2image.audio.files).
_AV_EXTENSIONS = AV_SUFFIXES | {".opus"}
# PyAV containers whose header states the audio's duration (not estimated from the bit rate), so a
# decode far shorter than it means the file was cut.
_AV_DECLARED_LENGTH = {"mov", "mp4", "m4a", "matroska", "webm"}
# Formats whose header states the exact number of frames, so a shorter decode means truncation.
# (OGG and MP3 only estimate it from the stream; an MP3 with a Xing/Info tag is checked, give or
# take one MPEG frame, and an Ogg file must end with its end-of-stream page.)
_EXACT_LENGTH_FORMATS = {"WAV", "WAVEX", "RF64", "W64", "AIFF", "AU", "CAF", "FLAC", "IRCAM", "NIST", "VOC"}
_LENGTH_TOLERANCE = {"MP3": 1152}
_PCM_SUBTYPES = ("PCM_", "FLOAT", "DOUBLE", "ULAW", "ALAW")


class AudioWarning(UserWarning):
    """A non-fatal problem with a clip (also listed in ``AudioClip.warnings``)."""


class SilentAudioWarning(AudioWarning):
    """A clip whose peak level is at or below -90 dBFS (it decodes fine but carries no sound)."""


class UnfinishedAudioWarning(AudioWarning):
    """A WAV whose data-chunk size was never written (0 or 0xFFFFFFFF); it was read to the end of the file."""


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says, without decoding the audio.

    Attributes:
        name: the file's name (the path as given, or the name given for bytes/streams).
        format: container, e.g. ``"WAV"``, ``"FLAC"``, ``"OGG"``, ``"MP3"``, ``"MP4"``, ``"MATROSKA"``.
        codec: sample encoding or codec, e.g. ``"PCM_16"``, ``"FLOAT"``, ``"VORBIS"``, ``"aac"``.
        sample_rate: Hz.
        channels: number of channels.
        frames: samples per channel the header declares (estimated for MP3/OGG/PyAV; 0 if unknown).
        duration: ``frames / sample_rate`` in seconds (0.0 if unknown).
        exact_length: whether ``frames`` is a count the decoded audio must reach (within
            ``length_tolerance``); a shorter decode is reported as truncated.
        backend: ``"soundfile"`` or ``"av"``.
        length_tolerance: frames the decoded audio may fall short of ``frames`` without being called
            truncated (an MPEG frame for MP3; codec delay and padding for PyAV containers).
        warnings: non-fatal problems found in the header (an unfinished WAV read to the end).
    """

    name: str
    format: str
    codec: str
    sample_rate: int
    channels: int
    frames: int
    duration: float
    exact_length: bool = True
    backend: str = "soundfile"
    length_tolerance: int = 0
    warnings: tuple[str, ...] = ()


@dataclass
class AudioClip:
    """Decoded audio plus what was done to it.

    Attributes:
        samples: float32, shape ``(n,)`` when mono, else ``(channels, n)``; in [-1, 1] for PCM sources.
        sample_rate: Hz of ``samples``.
        name: the file's name (or the name given) for display and error messages.
        original_sample_rate: the file's sample rate.
        original_channels: the file's number of channels.
        original_duration: the decoded duration in seconds, before resampling and the length policy.
        length_action: ``"none"``, ``"looped"``, ``"padded"`` or ``"cropped"`` (see ``LengthPolicy``).
        warnings: non-fatal problems, e.g. a silent clip.
    """

    samples: np.ndarray
    sample_rate: int
    name: str
    original_sample_rate: int
    original_channels: int
    original_duration: float
    length_action: str = "none"
    warnings: tuple[str, ...] = ()

    @property
    def duration(self) -> float:
        """Duration of ``samples`` in seconds."""
        return self.samples.shape[-1] / self.sample_rate

    @property
    def channels(self) -> int:
        """Number of channels of ``samples`` (1 when mono)."""
        return 1 if self.samples.ndim == 1 else self.samples.shape[0]


# --- sources ----------------------------------------------------------------------------------------


@dataclass
class _Source:
    """A path (read in place) or an in-memory buffer, with the name used in messages.

    ``patches`` are ``(offset, bytes)`` laid over the file for the decoders only (a WAV header whose
    data size was never written gets the real size); ``notes`` are warnings found on the way.
    """

    name: str
    path: Path | None = None
    data: bytes | None = None
    patches: tuple[tuple[int, bytes], ...] = ()
    notes: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return self.path.stat().st_size if self.path is not None else len(self.data or b"")

    def open(self) -> BinaryIO:
        """The file's own bytes (no patches)."""
        return open(self.path, "rb") if self.path is not None else io.BytesIO(self.data or b"")

    @contextlib.contextmanager
    def target(self) -> Iterator[str | BinaryIO]:
        """What soundfile and PyAV open: the path itself (fastest), an in-memory file, or the file
        with its patches laid over it; closed when the block ends."""
        if not self.patches and self.path is not None:
            yield str(self.path)
            return
        if self.path is None:
            data = bytearray(self.data or b"")
            for offset, patch in self.patches:
                data[offset : offset + len(patch)] = patch
            yield io.BytesIO(bytes(data))
            return
        with _PatchedFile(self.path, self.patches) as handle:
            yield handle

    def head(self, n: int = 64) -> bytes:
        with self.open() as handle:
            return handle.read(n)

    @property
    def suffix(self) -> str:
        return Path(self.name).suffix.lower()


class _PatchedFile(io.RawIOBase):
    """A file read in place with a few byte ranges replaced (never more than a header's worth)."""

    def __init__(self, path: Path, patches: tuple[tuple[int, bytes], ...]) -> None:
        super().__init__()
        self._file = open(path, "rb")  # noqa: SIM115 - closed in close()
        self._patches = patches

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        start = self._file.tell()
        count = self._file.readinto(buffer) or 0
        view = memoryview(buffer).cast("B")
        for offset, patch in self._patches:
            low, high = max(offset, start), min(offset + len(patch), start + count)
            if low < high:
                view[low - start : high - start] = patch[low - offset : high - offset]
        return count

    def close(self) -> None:
        self._file.close()
        super().close()


# --- C libraries' own messages ----------------------------------------------------------------------

# libmpg123 (inside libsndfile) prints "Note: Illegal Audio-MPEG-Header …", "error: …" and "Warning: Xing
# stream size off …" straight to file descriptor 2 while probing and decoding. While any libsndfile call
# runs, fd 2 points at a temporary file instead; the last call to finish puts it back. A counter under
# a lock lets threads decode at the same time (what other threads print in that window lands in the
# file too, so the window is kept to the library call itself).
_C_STDERR_LOCK = threading.Lock()
_c_stderr_users = 0
_c_stderr_saved: int | None = None
_c_stderr_sink: BinaryIO | None = None
#: Most characters of the libraries' text kept for one call.
_C_STDERR_KEEP = 4096


class _CapturedText:
    """What C libraries wrote on fd 2 during one :func:`_quiet_c_stderr` block (``text`` after it)."""

    def __init__(self) -> None:
        self.text = ""

    def gist(self) -> str:
        """The last line that names an error, without the library's source location; ``""`` when none."""
        lines = [line.strip() for line in self.text.splitlines() if "error" in line.lower()]
        if not lines:
            return ""
        line = lines[-1]
        line = re.sub(r"^\[[^\]]*\]\s*", "", line)  # "[src/libmpg123/parse.c:wetwork():1349] "
        line = re.sub(r"^error:\s*", "", line, flags=re.IGNORECASE)
        return line[:120].rstrip(" .")


@contextlib.contextmanager
def _quiet_c_stderr() -> Iterator[_CapturedText]:
    """Keep what C libraries print on fd 2 during the block out of the terminal.

    The text is kept in the yielded object's ``text`` (for our own messages). Python exceptions raised
    in the block pass through unchanged; fd 2 is restored in any case. Where fd 2 cannot be
    duplicated (no stderr at all), the block runs as it is.
    """
    global _c_stderr_users, _c_stderr_saved, _c_stderr_sink
    captured = _CapturedText()
    with _C_STDERR_LOCK:
        if _c_stderr_users == 0:
            with contextlib.suppress(AttributeError, OSError, ValueError):
                sys.stderr.flush()  # what Python already wrote goes to the real stderr first
            try:
                sink = tempfile.TemporaryFile()  # noqa: SIM115 - closed when the last user leaves
                saved = os.dup(2)
            except OSError:
                saved = None
            else:
                os.dup2(sink.fileno(), 2)
                _c_stderr_saved, _c_stderr_sink = saved, sink
        _c_stderr_users += 1
        sink = _c_stderr_sink
        start = os.fstat(sink.fileno()).st_size if sink is not None else 0
    try:
        yield captured
    finally:
        with _C_STDERR_LOCK:
            if sink is not None:
                end = os.fstat(sink.fileno()).st_size
                length = min(end - start, _C_STDERR_KEEP)
                captured.text = _read_at(sink, start, length).decode("utf-8", "replace")
            _c_stderr_users -= 1
            if _c_stderr_users == 0 and _c_stderr_saved is not None:
                os.dup2(_c_stderr_saved, 2)
                os.close(_c_stderr_saved)
                if _c_stderr_sink is not None:
                    _c_stderr_sink.close()
                _c_stderr_saved, _c_stderr_sink = None, None


def _read_at(handle: BinaryIO, offset: int, length: int) -> bytes:
    """``length`` bytes at ``offset`` without moving the offset the C library writes at."""
    if length <= 0:
        return b""
    if hasattr(os, "pread"):
        return os.pread(handle.fileno(), length, offset)
    return b""  # Windows: the text is still kept off the terminal, just not read back


def _read_stream(stream: BinaryIO, name: str) -> bytes:
    """Read a file object to the end in chunks; ``None`` (no data ready) counts as the end."""
    chunks: list[bytes] = []
    total = 0
    while True:
        try:
            chunk = stream.read(1 << 20)
        except OSError as error:
            raise AudioError(f"{name}: cannot be read ({error})") from error
        if not chunk:
            break
        if isinstance(chunk, str):
            raise UsageError(f"{name}: the file object is open in text mode; open it with 'rb'")
        chunks.append(bytes(chunk))
        total += len(chunk)
        if total > MAX_STREAM_BYTES:
            raise AudioTooLongError(f"{name}: stream is larger than {MAX_STREAM_BYTES >> 20} MiB")
    return b"".join(chunks)


def _resolve(source: AudioSource, name: str | None) -> _Source:
    """Turn any accepted input into a :class:`_Source`; raise for a missing or empty one."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        label = name or str(source)
        if not path.exists():
            raise AudioFileNotFoundError(f"{label}: file not found")
        if not path.is_file():
            raise AudioFileNotFoundError(f"{label}: not a file (a directory or a special file)")
        try:
            with path.open("rb"):
                pass
        except OSError as error:
            raise AudioError(f"{label}: cannot be read ({error.strerror or error})") from error
        resolved = _Source(label, path=path)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        resolved = _Source(name or "<bytes>", data=bytes(source))
    elif hasattr(source, "read"):
        label = name or str(getattr(source, "name", "") or "<stream>")
        resolved = _Source(label, data=_read_stream(source, label))
    else:
        raise UsageError(
            f"cannot read audio from a {type(source).__name__}; give a path, bytes or a binary file object"
        )
    if resolved.size == 0:
        raise EmptyAudioFileError(f"{resolved.name}: file is empty (0 bytes)")
    return resolved


def _sniff(head: bytes) -> str | None:
    """Name the container from its first bytes (``None`` when unknown)."""
    if head[:4] in (b"RIFF", b"RIFX", b"RF64") and head[8:12] == b"WAVE":
        return "WAV"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "AVI"
    if head[:4] == b"fLaC":
        return "FLAC"
    if head[:4] == b"OggS":
        return "OGG"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "AIFF"
    if head[:4] == b"caff":
        return "CAF"
    if head[:4] == b".snd":
        return "AU"
    if head[4:8] == b"ftyp":
        return "MP4"
    if head[:4] == b"\x1aE\xdf\xa3":
        return "MATROSKA"
    if head[:4] == b"0&\xb2u":
        return "ASF"
    if head[:3] == b"FLV":
        return "FLV"
    if head[:3] == b"ID3":
        return "MP3"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        # MPEG audio frame sync; layer bits 00 mean an ADTS AAC stream instead.
        return "AAC" if head[1] & 0x06 == 0 else "MP3"
    return None


def _id3_size(head: bytes) -> int:
    """Bytes an ID3v2 tag at the start takes (0 when there is none)."""
    if head[:3] != b"ID3" or len(head) < 10:
        return 0
    # ID3v2 size: 4 "syncsafe" bytes of 7 bits each, plus the 10-byte header (and a footer).
    size = 10 + sum((byte & 0x7F) << (7 * (3 - i)) for i, byte in enumerate(head[6:10]))
    return size + (10 if head[5] & 0x10 else 0)


def _sniff_source(source: _Source) -> str | None:
    """Name the container from the content; an ID3 tag is looked past (ADTS AAC can carry one too)."""
    head = source.head()
    kind = _sniff(head)
    offset = _id3_size(head)
    if kind == "MP3" and offset:
        with source.open() as handle:
            handle.seek(offset)
            after = handle.read(64)
        return _sniff(after) or kind
    return kind


def _looks_like_text(head: bytes) -> bool:
    """Whether the first bytes are printable UTF-8 text (AMR's "#!AMR" magic excepted)."""
    if head.startswith(b"#!AMR"):
        return False
    for cut in range(4):  # the 64-byte head may end inside a multi-byte character
        try:
            text = head[: len(head) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        return bool(text) and all(ch.isprintable() or ch in "\r\n\t\f" for ch in text)
    return False


def _not_audio_hint(head: bytes) -> str:
    """A few words on what a non-audio file looks like, for the error message."""
    known = {
        b"\x89PNG": "a PNG image",
        b"\xff\xd8\xff": "a JPEG image",
        b"GIF8": "a GIF image",
        b"%PDF": "a PDF document",
        b"PK\x03\x04": "a ZIP archive",
    }
    for magic, what in known.items():
        if head.startswith(magic):
            return f"looks like {what}"
    return "looks like text" if _looks_like_text(head) else "unknown binary data"


# --- header parsing ---------------------------------------------------------------------------------


#: Data-chunk sizes that mean "not written": 0 (a recorder that crashed before closing the file) and
#: 0xFFFFFFFF (a writer that streamed and never came back to the header).
_UNSET_DATA_SIZES = (0, 0xFFFFFFFF)


@dataclass(frozen=True)
class _WavLayout:
    """Where a RIFF/WAVE file's data chunk is and what its header says (byte counts)."""

    declared: int  # data bytes the chunk header declares
    present: int  # bytes in the file after the chunk header
    block_align: int  # bytes per frame
    offset: int  # file offset of the data chunk's header ("data" + size)
    endian: str  # struct byte order: "<" (RIFF) or ">" (RIFX)
    sample_rate: int


def _wav_layout(handle: BinaryIO, size: int) -> _WavLayout | None:
    """Walk a RIFF/WAVE file's chunks up to its data chunk.

    ``None`` when the layout is not plain RIFF (RF64 keeps its sizes elsewhere), the format chunk is
    missing before the data chunk, or there is no data chunk.
    """
    handle.seek(0)
    riff = handle.read(12)
    if riff[:4] not in (b"RIFF", b"RIFX") or riff[8:12] != b"WAVE":
        return None
    endian = "<" if riff[:4] == b"RIFF" else ">"
    position, block_align, sample_rate = 12, 0, 0
    for _ in range(4096):  # a bounded walk: a garbage header cannot loop us forever
        handle.seek(position)
        header = handle.read(8)
        if len(header) < 8:
            return None
        chunk_id, chunk_size = header[:4], struct.unpack(endian + "I", header[4:])[0]
        if chunk_id == b"fmt ":
            body = handle.read(16)
            if len(body) >= 14:
                sample_rate = struct.unpack(endian + "I", body[4:8])[0]
                block_align = struct.unpack(endian + "H", body[12:14])[0]
        elif chunk_id == b"data":
            if block_align == 0:
                return None
            return _WavLayout(chunk_size, size - position - 8, block_align, position, endian, sample_rate)
        position += 8 + chunk_size + (chunk_size & 1)  # chunks are word-aligned
    return None


def _plausible_chunk(header: bytes, room: int) -> bool:
    """Whether 8 bytes look like a RIFF chunk header (4 printable ASCII characters, a size that fits)."""
    if len(header) < 8 or not all(32 <= byte < 127 for byte in header[:4]):
        return False
    return struct.unpack("<I", header[4:])[0] <= room - 8


def _prepare_unfinished_wav(source: _Source) -> None:
    """A WAV whose data-chunk size was never written is read to the end of the file, with a warning.

    Size 0 with bytes after the chunk header (that are not simply the next chunk): the decoders see a
    header patched with the real size, rounded down to whole frames (libsndfile would read 0 frames).
    Size 0xFFFFFFFF: libsndfile already reads to the end; only the warning is added.
    """
    with source.open() as handle:
        layout = _wav_layout(handle, source.size)
        if layout is None or layout.declared not in _UNSET_DATA_SIZES:
            return
        handle.seek(layout.offset + 8)
        following = handle.read(8)
    frames = max(layout.present, 0) // layout.block_align
    if frames == 0 or (layout.declared == 0 and _plausible_chunk(following, layout.present)):
        return  # a genuinely empty data chunk (perhaps followed by other chunks)
    seconds = f" ({frames / layout.sample_rate:.3f} s)" if layout.sample_rate else ""
    if layout.declared == 0:
        data_bytes = min(frames * layout.block_align, 0xFFFFFFFF - 36)
        riff_bytes = min(source.size - 8, 0xFFFFFFFF)
        source.patches = (
            (4, struct.pack(layout.endian + "I", riff_bytes)),
            (layout.offset + 4, struct.pack(layout.endian + "I", data_bytes)),
        )
        what = "is 0 (an unfinished recording?)"
    else:
        what = "is not set (0xFFFFFFFF, written while streaming)"
    source.notes.append(
        f"{source.name}: the WAV data chunk's size {what}; "
        f"read {frames} frames{seconds} to the end of the file"
    )


def _check_wav_truncation(source: _Source, sample_rate: int) -> None:
    """Raise :class:`CorruptAudioError` when a WAV's data chunk is shorter than its header declares."""
    with source.open() as handle:
        layout = _wav_layout(handle, source.size)
    if layout is None or layout.declared in _UNSET_DATA_SIZES:
        return
    declared, present, block_align = layout.declared, layout.present, layout.block_align
    if max(present, 0) // block_align < declared // block_align:  # a missing pad byte is not a lost frame
        declared_frames, present_frames = declared // block_align, max(present, 0) // block_align
        # Frame counts too: 1 frame short reads "1.000 s ... 1.000 s" in seconds alone.
        raise CorruptAudioError(
            f"{source.name}: truncated: the header declares {declared_frames / sample_rate:.3f} s "
            f"({declared_frames} frames) of audio but the file holds {present_frames / sample_rate:.3f} s "
            f"({present_frames} frames)"
        )


def _ogg_truncated(source: _Source) -> bool:
    """Whether an Ogg file does not end with a complete end-of-stream page (so it was cut short).

    libsndfile reports 0 frames for such a file and decodes nothing, which would otherwise look like
    a valid but empty stream.
    """
    size = source.size
    with source.open() as handle:
        handle.seek(max(0, size - 70_000))  # an Ogg page is at most 65,307 bytes
        tail = handle.read()
    start = tail.rfind(b"OggS")
    if start < 0 or len(tail) - start < 27:
        return True
    header_type, segments = tail[start + 5], tail[start + 26]
    lacing = tail[start + 27 : start + 27 + segments]
    page_end = start + 27 + segments + sum(lacing)
    return not (header_type & 0x04) or len(lacing) < segments or page_end != len(tail)


def _mp3_has_frame_count(source: _Source) -> bool:
    """Whether an MP3 starts with a Xing/Info/VBRI tag, whose frame count makes its length exact."""
    with source.open() as handle:
        offset = _id3_size(handle.read(10))
        handle.seek(offset)
        frame = handle.read(200)
    return any(tag in frame for tag in (b"Xing", b"Info", b"VBRI"))


_SHOULD_BE = re.compile(r"^\s*(data|SSND|Data Size|riff)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
# AIFF: "Frame count read from 'COMM' chunk (16000) not equal to frame count … 'SSND' chunk (7986)".
_AIFF_MISMATCH = re.compile(
    r"from '\w+' chunk \((\d+)\) not equal to frame count\s+\*\*\* calculated .*?\((\d+)\)"
)
# RF64: "Calculated frame count 7974 does not match value from 'ds64' chunk of 16000".
_RF64_MISMATCH = re.compile(r"Calculated frame count (\d+) does not match value from '\w+' chunk of (\d+)")


def _log_says_truncated(log: str, fmt: str) -> bool:
    """Whether libsndfile's header log shows a data size larger than the file (AIFF, AU, W64, RF64 …).

    libsndfile clamps such a file's frame count to what is present and says so only in its log
    (``SoundFile.extra_info``): ``SSND : 32008 (should be 15981)`` or a frame-count mismatch line.
    """
    for chunk, declared, actual in _SHOULD_BE.findall(log):
        # The outer RIFF size is often wrong in complete files; only W64 has no other size to go by.
        if (chunk != "riff" or fmt == "W64") and int(actual) < int(declared):
            return True
    for declared, present in _AIFF_MISMATCH.findall(log):
        if int(present) < int(declared):
            return True
    return any(int(present) < int(declared) for present, declared in _RF64_MISMATCH.findall(log))


def _probe_soundfile(source: _Source) -> AudioInfo:
    import soundfile as sf

    with source.target() as target, _quiet_c_stderr():
        info = sf.info(target)
    fmt = str(info.format)
    sample_rate, frames = int(info.samplerate), int(info.frames)
    if fmt in ("WAV", "WAVEX"):
        _check_wav_truncation(source, sample_rate)
    elif fmt in _EXACT_LENGTH_FORMATS and fmt != "FLAC":  # FLAC's decoder reports damage itself
        with source.target() as target, _quiet_c_stderr(), sf.SoundFile(target) as sound:
            log = sound.extra_info
        if _log_says_truncated(log, fmt):
            raise CorruptAudioError(
                f"{source.name}: truncated: the {fmt} header declares more audio than the file holds"
            )
    if fmt == "OGG" and _ogg_truncated(source):
        raise CorruptAudioError(
            f"{source.name}: truncated Ogg stream (it does not end with a complete last page)"
        )
    # Frame counts are exact for PCM and FLAC; a WAV may also hold a compressed codec (MP3, GSM …).
    pcm = fmt == "FLAC" or str(info.subtype).startswith(_PCM_SUBTYPES)
    exact = (fmt in _EXACT_LENGTH_FORMATS and pcm) or (fmt == "MP3" and _mp3_has_frame_count(source))
    return AudioInfo(
        name=source.name,
        format=fmt,
        codec=str(info.subtype),
        sample_rate=sample_rate,
        channels=int(info.channels),
        frames=frames,
        duration=frames / sample_rate if sample_rate else 0.0,
        exact_length=exact,
        backend="soundfile",
        length_tolerance=_LENGTH_TOLERANCE.get(fmt, 0),
        warnings=tuple(source.notes),
    )


def _import_av(source: _Source, reason: str = "reading this format needs PyAV (FFmpeg)"):
    try:
        import av
    except ImportError as error:
        raise MissingExtraError(f"{source.name}: {reason}; install it with {AV_EXTRA_HINT}") from error
    return av


@contextlib.contextmanager
def _open_av(source: _Source):  # -> Iterator[av.container.InputContainer]
    """Open with PyAV, from the path or an in-memory buffer; both are closed when the block ends."""
    av = _import_av(source)
    with source.target() as target, av.open(target, mode="r", metadata_errors="ignore") as container:
        yield container


def _tag_seconds(text: str | None) -> float | None:
    """Matroska's per-track ``DURATION`` tag (``"00:00:03.072000000"``) in seconds; ``None`` if absent."""
    match = re.fullmatch(r"\s*(\d+):(\d{1,2}):(\d{1,2}(?:\.\d*)?)\s*", text or "")
    if match is None:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _av_info(source: _Source, container) -> AudioInfo:
    names = container.format.name.split(",")  # e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    fmt = source.suffix[1:] if source.suffix[1:] in names else names[0]
    if not container.streams.audio:
        hint = _not_audio_hint(source.head())
        what = hint if hint.startswith("looks like") else f"a {fmt} file"
        raise NotAudioError(f"{source.name}: not audio: no audio track ({what})")
    stream = container.streams.audio[0]
    context = stream.codec_context
    sample_rate = int(context.sample_rate or stream.rate or 0)
    channels = int(getattr(context, "channels", 0) or context.layout.nb_channels)
    # The audio track's own duration: MP4 states it per track, Matroska writers (FFmpeg, mkvmerge) put a
    # DURATION tag on each track. The container's duration is the audio's only without a video track.
    tagged = _tag_seconds(stream.metadata.get("DURATION") or stream.metadata.get("duration"))
    track_length = True
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif tagged is not None:
        duration = tagged
    elif container.duration is not None:
        duration = container.duration / 1_000_000  # AV_TIME_BASE is microseconds
        track_length = not container.streams.video
    else:
        duration, track_length = 0.0, False
    if sample_rate <= 0:
        raise CorruptAudioError(f"{source.name}: the audio track has no sample rate")
    frames = int(round(duration * sample_rate))
    # A declared length (not one estimated from the bit rate) is checked after decoding. The decoded
    # audio may fall short of it by the codec's delay and padding (AAC primes with 1024-2112 samples,
    # Opus pre-skips 312, a Vorbis block is up to 8192): allow four codec frames, the delay plus a
    # frame, 100 ms or 1 % of the length, whichever is largest. A file cut in half is far outside.
    declared = track_length and frames > 0 and bool(_AV_DECLARED_LENGTH & set(names))
    frame_size = int(getattr(context, "frame_size", 0) or 0) or 1024
    delay = int(getattr(context, "delay", 0) or 0)
    tolerance = max(4 * frame_size, delay + frame_size, sample_rate // 10, frames // 100)
    return AudioInfo(
        name=source.name,
        format=fmt.upper(),
        codec=str(context.name),
        sample_rate=sample_rate,
        channels=channels,
        frames=frames,
        duration=duration,
        exact_length=declared,
        backend="av",
        length_tolerance=tolerance if declared else 0,
        warnings=tuple(source.notes),
    )


def _probe_av(source: _Source, kind: str | None, first_error: BaseException | None = None) -> AudioInfo:
    """Header information through PyAV; ``first_error`` is libsndfile's, reported for its own formats."""
    import av

    try:
        with _open_av(source) as container:
            return _av_info(source, container)
    except av.error.FFmpegError as error:
        if kind is not None:
            reason = _short(first_error or error)
            raise CorruptAudioError(f"{source.name}: damaged {kind} file ({reason})") from error
        raise NotAudioError(
            f"{source.name}: not a recognised audio format ({_not_audio_hint(source.head())})"
        ) from error


def _short(error: BaseException) -> str:
    """The gist of a back end's exception: libsndfile's or FFmpeg's reason, without file names."""
    strerror = getattr(error, "strerror", None)  # FFmpegError: "[Errno N] reason: 'file'" → "reason"
    text = strerror if isinstance(strerror, str) and strerror else str(error).strip()
    text = text.splitlines()[0] if text else type(error).__name__
    if text.startswith("Error opening") and ": " in text:  # libsndfile: "Error opening <file>: reason"
        text = text.split(": ", 1)[1]
    return text.removeprefix("Error : ").rstrip(".")


def _content_mismatch(source: _Source, kind: str) -> str:
    """``"named .mp3 but holds AAC audio (ADTS); "`` when the suffix promises another format, else ``""``."""
    suffix = source.suffix
    if suffix in SOUNDFILE_SUFFIXES or (suffix in AV_SUFFIXES and kind in ("AAC", "FLV", "ASF", "AVI")):
        return f"named {suffix} but holds {_KIND_NAMES.get(kind, kind)}; "
    return ""


def _probe(source: _Source) -> AudioInfo:
    """Header information from soundfile, falling back to PyAV; raises the specific AudioError.

    The content decides the decoder, not the name: a container only PyAV reads (ADTS AAC, MP4/M4A,
    Matroska/WebM …) goes to PyAV whatever its suffix, or, without PyAV, is refused with a message
    naming both the suffix and the content.
    """
    import soundfile as sf

    head = source.head()
    kind = _sniff_source(source)
    if kind in _AV_KINDS:
        try:
            import av  # noqa: F401 - only to learn whether the extra is installed
        except ImportError:
            reason = f"{_content_mismatch(source, kind)}reading it needs PyAV (FFmpeg)"
            _import_av(source, reason)  # raises MissingExtraError naming the extra
        return _probe_av(source, kind)
    if kind is None and _not_audio_hint(head).startswith(("looks like a ", "looks like an ")):
        # A known non-audio file (PNG, JPEG, PDF, ZIP …): never let the MPEG decoder hunt for frames in it.
        raise NotAudioError(f"{source.name}: not a recognised audio format ({_not_audio_hint(head)})")
    if kind == "WAV":
        _prepare_unfinished_wav(source)
    try:
        return _probe_soundfile(source)
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        sf_error = error
    if "malformed" in str(sf_error).lower():  # libsndfile knows the container and found it damaged
        raise CorruptAudioError(
            f"{source.name}: damaged {kind or 'audio'} file ({_short(sf_error)})"
        ) from sf_error
    if kind is None and _looks_like_text(head):
        # Never hand text to FFmpeg: playlists (HLS, concat) would make it open other files.
        raise NotAudioError(f"{source.name}: not a recognised audio format (looks like text)") from sf_error
    try:
        import av  # noqa: F401 - only to learn whether the extra is installed
    except ImportError:
        if source.suffix in _AV_EXTENSIONS:
            _import_av(source)  # raises MissingExtraError naming the extra
        if kind is not None:
            raise CorruptAudioError(f"{source.name}: damaged {kind} file ({_short(sf_error)})") from sf_error
        raise NotAudioError(
            f"{source.name}: not a recognised audio format ({_not_audio_hint(head)})"
        ) from sf_error
    # A codec libsndfile lacks (an Ogg/Speex stream, a WAV holding AC-3 …): FFmpeg may still read it.
    return _probe_av(source, kind, sf_error if kind in _SOUNDFILE_KINDS else None)


# --- decoding ---------------------------------------------------------------------------------------


def _decode_soundfile(source: _Source, info: AudioInfo, max_frames: int | None) -> np.ndarray:
    """Decode block by block to float32 ``(channels, n)``."""
    import soundfile as sf

    blocks: list[np.ndarray] = []
    total = 0
    library = _CapturedText()
    try:
        with source.target() as target, _quiet_c_stderr() as library, sf.SoundFile(target) as sound:
            while True:
                block = sound.read(BLOCK_FRAMES, dtype="float32", always_2d=True)  # (frames, channels)
                if len(block) == 0:
                    break
                blocks.append(block)
                total += len(block)
                _check_running_length(source, info, total, max_frames)
    except (sf.LibsndfileError, RuntimeError) as error:
        where = f" after {total / info.sample_rate:.3f} s" if total else ""
        said = library.gist()  # libmpg123's own reason, when it printed one
        reason = f"{_short(error)}; {said}" if said else _short(error)
        raise CorruptAudioError(
            f"{source.name}: damaged or truncated audio data{where} ({reason})"
        ) from error
    if not blocks:
        return np.zeros((info.channels, 0), dtype=np.float32)
    return np.concatenate(blocks, axis=0).T  # (channels, n)


def _decode_av(source: _Source, info: AudioInfo, max_frames: int | None) -> np.ndarray:
    """Decode the first audio track with PyAV to float32 ``(channels, n)`` at its own rate."""
    import av

    chunks: list[np.ndarray] = []
    total = 0
    try:
        with _open_av(source) as container:
            stream = container.streams.audio[0]
            # Planar float32 at the stream's own rate and layout; the resampler only converts the format.
            converter = av.AudioResampler(format="fltp")
            for packet in container.demux(stream):
                for frame in packet.decode():
                    for converted in converter.resample(frame):
                        chunk = converted.to_ndarray()  # (channels, n)
                        chunks.append(chunk.reshape(chunk.shape[0], -1).astype(np.float32, copy=False))
                        total += chunks[-1].shape[1]
                        _check_running_length(source, info, total, max_frames)
    except av.error.FFmpegError as error:
        where = f" after {total / info.sample_rate:.3f} s" if total else ""
        raise CorruptAudioError(
            f"{source.name}: damaged or truncated audio data{where} ({_short(error)})"
        ) from error
    if not chunks:
        return np.zeros((info.channels, 0), dtype=np.float32)
    channels = min(chunk.shape[0] for chunk in chunks)  # a layout change mid-stream keeps the common ones
    samples = np.concatenate([chunk[:channels] for chunk in chunks], axis=1)
    if info.frames and samples.shape[1] > info.frames:
        samples = samples[:, : info.frames]  # drop the codec's end padding (AAC frames are 1024 samples)
    return samples


def _check_running_length(source: _Source, info: AudioInfo, total: int, max_frames: int | None) -> None:
    """Stop decoding as soon as the audio passes the limit (a header may understate the length)."""
    if max_frames is not None and total > max_frames:
        limit = max_frames / info.sample_rate
        raise AudioTooLongError(f"{source.name}: longer than the {limit:g} s limit (found while decoding)")


def _limit_frames(info: AudioInfo, max_duration: float | None) -> int | None:
    if max_duration is None:
        return None
    # A little slack so that a stream whose header is a few frames short is not rejected at the edge.
    return int(max_duration * info.sample_rate) + info.sample_rate // 10 + 1


# --- public API -------------------------------------------------------------------------------------


def probe_audio(
    source: AudioSource, *, name: str | None = None, max_duration: float | None = None
) -> AudioInfo:
    """Read a sound file's header only: container, codec, sample rate, channels, frames, duration.

    Raises the specific :class:`~sound2image.errors.AudioError` for a missing, empty, non-audio,
    damaged or (WAV) truncated file, or one longer than ``max_duration`` seconds when given, and
    :class:`~sound2image.errors.MissingExtraError` when the format needs PyAV and it is not installed.
    A file object is read to its end (then closed by the caller as usual).
    """
    _check_max_duration_argument(max_duration)
    src = _resolve(source, name)
    info = _probe(src)
    _check_max_duration(src.name, info, max_duration)
    return info


def _check_max_duration_argument(max_duration: float | None) -> None:
    """UsageError unless ``max_duration`` is None (no limit) or finite positive seconds."""
    if max_duration is not None:
        check_number("max_duration", max_duration, minimum=0, min_inclusive=False)


def _check_max_duration(name: str, info: AudioInfo, max_duration: float | None) -> None:
    if max_duration is not None and info.duration > max_duration:
        # With frame counts where the header gives them: 600.01 s would read "600.0 s" against "600 s".
        known = info.frames > 0 and info.sample_rate > 0
        frames = f" ({info.frames} frames at {info.sample_rate} Hz)" if known else ""
        limit = f" ({int(max_duration * info.sample_rate)} frames" if known else " ("
        raise AudioTooLongError(
            f"{name}: {info.duration:.1f} s long{frames}, more than the {max_duration:g} s limit"
            f"{limit}{'; ' if known else ''}max_duration)"
        )


def load_audio(
    source: AudioSource,
    sample_rate: int | None = None,
    *,
    mono: bool = True,
    duration: float | None = None,
    policy: LengthPolicy | None = None,
    max_duration: float | None = DEFAULT_MAX_DURATION,
    name: str | None = None,
) -> AudioClip:
    """Decode a sound to float32 samples, optionally resampled and fitted to a duration.

    Args:
        source: a path, ``bytes`` (or ``bytearray``/``memoryview``) or a binary file object.
        sample_rate: wanted rate in Hz; ``None`` keeps the file's. Resampling is anti-aliased
            (see :func:`sound2image.audio.resample`).
        mono: ``True`` (default) averages the channels → shape ``(n,)``; ``False`` keeps them →
            shape ``(channels, n)`` (also for a mono file: ``(1, n)``).
        duration: wanted length in seconds; the clip is then looped/padded/cropped by ``policy``.
            ``None`` keeps the decoded length.
        policy: what to do with short and long clips (default ``LengthPolicy()``: loop short ones,
            crop long ones from the start). Only used when ``duration`` is given.
        max_duration: reject files longer than this many seconds, checked from the header before
            decoding (default 600 s); ``None`` for no limit.
        name: how the source is named in messages (default: the path, or ``<bytes>``/the stream name).

    Returns:
        An :class:`AudioClip`; ``length_action`` says what the length policy did and ``warnings``
        lists non-fatal problems (a silent clip also emits :class:`SilentAudioWarning`).

    Raises:
        AudioFileNotFoundError, EmptyAudioFileError, NotAudioError, CorruptAudioError,
        AudioTooLongError, NoSamplesError, NonFiniteAudioError (all ``AudioError``);
        MissingExtraError when the format needs the ``av`` extra; UsageError for bad arguments.
    """
    # 1. Check the arguments and the source.
    if sample_rate is not None:
        sample_rate = check_int("sample_rate", sample_rate, minimum=1)
    if duration is not None:
        check_number("duration", duration, minimum=0, min_inclusive=False)
    _check_max_duration_argument(max_duration)
    src = _resolve(source, name)

    # 2. Read the header; reject what is too long before decoding anything.
    info = _probe(src)
    _check_max_duration(src.name, info, max_duration)
    if info.exact_length and info.frames == 0:
        raise NoSamplesError(f"{src.name}: the file holds no audio samples (0 frames)")

    # 3. Decode and check what came out.
    decode = _decode_soundfile if info.backend == "soundfile" else _decode_av
    samples = decode(src, info, _limit_frames(info, max_duration))  # (channels, n)
    _check_decoded(src, info, samples)
    clip_warnings = [(message, UnfinishedAudioWarning) for message in info.warnings]
    clip_warnings += _level_warnings(src.name, samples)

    # 4. Channels, rate, length.
    original_frames = samples.shape[1]
    if mono:
        samples = samples.mean(axis=0, dtype=np.float32)  # (n,)
    target_sr = int(sample_rate) if sample_rate is not None else info.sample_rate
    samples = resample(samples, info.sample_rate, target_sr)
    action = "none"
    if duration is not None:
        samples, action = apply_length(samples, target_frames(duration, target_sr), policy)

    for message, category in clip_warnings:
        warnings.warn(message, category, stacklevel=2)
    return AudioClip(
        samples=np.ascontiguousarray(samples, dtype=np.float32),
        sample_rate=target_sr,
        name=src.name,
        original_sample_rate=info.sample_rate,
        original_channels=info.channels,
        original_duration=original_frames / info.sample_rate,
        length_action=action,
        warnings=tuple(message for message, _ in clip_warnings),
    )


def _check_decoded(source: _Source, info: AudioInfo, samples: np.ndarray) -> None:
    """No samples, fewer frames than an exact header declares, or NaN/Inf → the specific error."""
    frames = samples.shape[1]
    if frames == 0 and info.frames > 0:
        raise CorruptAudioError(
            f"{source.name}: damaged: none of the {info.duration:.3f} s the header declares could be decoded"
        )
    if frames == 0:
        raise NoSamplesError(f"{source.name}: the file holds no audio samples (0 frames decoded)")
    if info.exact_length and frames + info.length_tolerance < info.frames:
        raise CorruptAudioError(  # frame counts too: seconds alone can round to the same number
            f"{source.name}: truncated: the header declares {info.duration:.3f} s ({info.frames} frames) "
            f"but only {frames / info.sample_rate:.3f} s ({frames} frames) could be decoded"
        )
    finite = np.isfinite(samples)
    if not finite.all():
        bad = int(samples.size - np.count_nonzero(finite))
        first = int(np.argmin(finite.all(axis=0)))
        raise NonFiniteAudioError(
            f"{source.name}: {bad} NaN or infinite sample(s), the first at {first / info.sample_rate:.3f} s"
        )


def _level_warnings(name: str, samples: np.ndarray) -> list[tuple[str, type[AudioWarning]]]:
    """Warnings about the level: a silent clip.

    Float sources may exceed full scale and lossy decoders overshoot it a little; both are kept as
    they are (not clipped) and are not warned about.
    """
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    if peak <= SILENCE_PEAK:
        return [(f"{name}: the clip is silent (peak at or below -90 dBFS)", SilentAudioWarning)]
    return []


def peak_dbfs(samples: np.ndarray) -> float:
    """Peak level in dB relative to full scale (1.0); ``-inf`` for digital silence."""
    peak = float(np.max(np.abs(samples))) if np.size(samples) else 0.0
    return 20.0 * float(np.log10(peak)) if peak > 0 else float("-inf")
