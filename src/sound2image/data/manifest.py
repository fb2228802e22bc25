"""Your own pairs: a manifest file (CSV, TSV or JSONL) or a folder of same-stem audio and image files.

Manifest columns: ``audio`` and ``image`` (required; paths relative to the manifest's folder, or
absolute), ``label``, ``prompt`` and ``group`` (optional). Other columns are kept in
:attr:`Pair.extra`. Column names are matched without regard to case or surrounding spaces.

A row whose file is missing is reported as a problem naming the file and the manifest line, and the
rest of the manifest is still read. A CSV without a required column cannot be read at all and raises
:class:`~sound2image.errors.DataError`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from sound2image.audio.files import classify_suffix
from sound2image.data.pairs import AUDIO_SUFFIXES, IMAGE_SUFFIXES, Pair, PairScan, make_scan, walk_files
from sound2image.errors import DataError

REQUIRED_COLUMNS = ("audio", "image")
KNOWN_COLUMNS = ("audio", "image", "label", "prompt", "group")


def scan_manifest(manifest: Path) -> PairScan:
    """Read a ``.csv``/``.tsv`` or ``.jsonl`` manifest into pairs; rows that cannot be used become problems.

    Raises:
        DataError: the file cannot be read, is empty, or (CSV) lacks the ``audio`` or ``image`` column.
    """
    rows = _jsonl_rows(manifest) if manifest.suffix.lower() in {".jsonl", ".ndjson"} else _csv_rows(manifest)
    pairs: list[Pair] = []
    problems: list[str] = []
    keys: set[str] = set()
    seen: set[tuple[Path, Path]] = set()
    for line, row in rows:
        if isinstance(row, str):  # a row that could not be parsed: the reader's problem line
            problems.append(f"{manifest} line {line}: {row}")
            continue
        pair = _row_to_pair(manifest, line, row, problems)
        if pair is None:
            continue
        # The same audio used twice is allowed (several images per sound); the same pair twice is not.
        if (pair.audio, pair.image) in seen:
            problems.append(f"{manifest} line {line}: duplicate of an earlier row ({pair.key}); skipped")
            continue
        seen.add((pair.audio, pair.image))
        if pair.key in keys:
            key = f"{pair.key}|{_relative_to(pair.image, manifest.parent)}"
            pair = Pair(pair.audio, pair.image, pair.label, pair.prompt, pair.group, key, pair.extra)
        keys.add(pair.key)
        pairs.append(pair)
    return make_scan(pairs, problems, "manifest", manifest.parent, manifest)


def _normalise(row: Mapping[str, Any]) -> dict[str, Any]:
    return {str(name).strip().lower() if name is not None else "": value for name, value in row.items()}


def _csv_rows(manifest: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """``(line number, row)`` for each data row; raises DataError for an unreadable file or header."""
    try:
        # utf-8-sig: spreadsheets often save a byte-order mark in front of the first column name.
        text = manifest.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(f"{manifest}: not a UTF-8 text file ({error.reason} at byte {error.start})") from None
    except OSError as error:
        raise DataError(f"{manifest}: cannot read manifest ({error.strerror})") from None
    # newline="": let the csv module handle quoted fields that span lines (multi-line prompts).
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=_delimiter(manifest, text))
    if not reader.fieldnames:
        raise DataError(f"{manifest}: empty manifest (expected a header with columns audio,image)")
    columns = [name.strip().lower() for name in reader.fieldnames]
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if missing:
        found = ", ".join(name for name in reader.fieldnames if name) or "none"
        raise DataError(f"{manifest}: missing required column {' and '.join(missing)} (found: {found})")
    try:
        for row in reader:
            if None in row:  # more fields than header columns
                yield reader.line_num, f"{len(row[None])} more fields than the header has columns"
            elif any(value is None for value in row.values()):
                yield reader.line_num, "fewer fields than the header has columns"
            else:
                yield reader.line_num, _normalise(row)
    except csv.Error as error:
        raise DataError(f"{manifest} line {reader.line_num}: malformed CSV ({error})") from None


def _delimiter(manifest: Path, text: str) -> str:
    """Tab for ``.tsv``; otherwise whichever of ``,`` ``;`` tab the header uses most (spreadsheets in
    many locales save CSV with semicolons)."""
    if manifest.suffix.lower() == ".tsv":
        return "\t"
    header = text.split("\n", 1)[0]
    return max((",", ";", "\t"), key=header.count)


def _jsonl_rows(manifest: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """``(line number, object)`` for each non-blank line; lines that are not JSON objects are problems."""
    try:
        lines = manifest.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as error:
        raise DataError(f"{manifest}: not a UTF-8 text file ({error.reason} at byte {error.start})") from None
    except OSError as error:
        raise DataError(f"{manifest}: cannot read manifest ({error.strerror})") from None
    if not any(line.strip() for line in lines):
        raise DataError(f"{manifest}: empty manifest (expected one JSON object per line)")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            yield number, f"not valid JSON ({error.msg} at column {error.colno})"
            continue
        if isinstance(value, dict):
            yield number, _normalise(value)
        else:
            yield number, f"expected a JSON object, got {type(value).__name__}"


def _text(value: Any) -> str | None:
    """A manifest cell as stripped text; empty cells and JSON null become ``None``."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _row_to_pair(manifest: Path, line: int, row: dict[str, Any], problems: list[str]) -> Pair | None:
    paths: dict[str, Path] = {}
    for column in REQUIRED_COLUMNS:
        value = _text(row.get(column))
        if value is None:
            state = "missing" if column not in row else "empty"
            problems.append(f"{manifest} line {line}: {state} {column!r} value")
            return None
        path = _resolve(manifest, value)
        if not path.is_file():
            what = "is a folder, not a file" if path.is_dir() else "not found"
            problems.append(f"{path}: {column} file {what} (listed in {manifest.name} line {line})")
            return None
        paths[column] = path
    extra = {
        name: "" if value is None else str(value) for name, value in row.items() if name not in KNOWN_COLUMNS
    }
    audio, image = paths["audio"], paths["image"]
    return Pair(
        audio=audio,
        image=image,
        label=_text(row.get("label")),
        prompt=_text(row.get("prompt")),
        group=_text(row.get("group")) or audio.stem,
        key=_relative_to(audio, manifest.parent),
        extra=extra,
    )


def _resolve(manifest: Path, value: str) -> Path:
    """A manifest path: absolute, ``~``-relative or relative to the manifest's folder. Backslashes
    (a manifest written on Windows) are read as separators when the literal name does not exist."""
    path = Path(value).expanduser()
    path = path if path.is_absolute() else manifest.parent / path
    if "\\" in value and not path.exists():
        return _resolve(manifest, value.replace("\\", "/"))
    return path


def _relative_to(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` in POSIX form when it lies below it, else the path itself."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def scan_folder(folder: Path) -> PairScan:
    """Pair audio and image files that share their path without suffix (``a/dog.wav`` + ``a/dog.jpg``).

    Files in a subfolder take the first subfolder's name as their label. Files that are neither audio
    nor images are ignored when their suffix says what they are (READMEs, CSVs, JSON: see
    :data:`sound2image.audio.files.NON_AUDIO_SUFFIXES`) and reported otherwise (an unknown suffix);
    a sound without an image, or the reverse, is a problem.
    """
    audio: dict[str, list[Path]] = {}
    images: dict[str, list[Path]] = {}
    problems: list[str] = []
    for path in walk_files(folder, problems):
        suffix = path.suffix.lower()
        side = audio if suffix in AUDIO_SUFFIXES else images if suffix in IMAGE_SUFFIXES else None
        if side is not None:
            side.setdefault(path.relative_to(folder).with_suffix("").as_posix(), []).append(path)
        elif reason := classify_suffix(path, with_av=True):  # AV suffixes are audio here, see AUDIO_SUFFIXES
            problems.append(f"{path}: skipped: {reason.replace('audio suffix', 'audio or image suffix')}")
    pairs: list[Pair] = []
    for key in sorted(audio.keys() | images.keys()):
        sounds, pictures = audio.get(key, []), images.get(key, [])
        if len(sounds) > 1 or len(pictures) > 1:
            names = ", ".join(path.name for path in sounds + pictures)
            problems.append(f"{folder / key}.*: several files share this stem ({names}); skipped")
        elif not pictures:
            problems.append(f"{sounds[0]}: no image with the same stem (.jpg, .png, ...)")
        elif not sounds:
            problems.append(f"{pictures[0]}: no sound file with the same stem (.wav, .flac, ...)")
        else:
            parts = key.split("/")
            label = parts[0] if len(parts) > 1 else None
            pairs.append(Pair(sounds[0], pictures[0], label=label, group=parts[-1], key=key))
    return make_scan(pairs, problems, "folder", folder, folder)
