"""Paired audio/image datasets: the :class:`Pair` record, the :class:`PairScan` result and
:func:`scan_pairs`, which recognises the layout of a dataset and dispatches to its reader.

Three layouts are understood:

* ``advance`` — the ADVANCE tree ``vision/<class>/<id>.jpg`` ↔ ``sound/<class>/<id>.wav`` (or the
  authors' own folder names ``Dataset_v3_vision`` / ``Dataset_v3_sound``), see :mod:`.advance`;
* ``manifest`` — a CSV or JSONL file with ``audio`` and ``image`` columns, see :mod:`.manifest`;
* ``folder`` — a folder of audio and image files that share a stem (``dog.wav`` + ``dog.jpg``).

Scanning never opens the files' contents: it pairs names and checks that files exist. Whatever
cannot be paired is reported in :attr:`PairScan.problems` (one line each, naming the path) instead
of being dropped silently; ``sound2image data check`` reads the files themselves.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sound2image.audio.files import AV_SUFFIXES, SOUNDFILE_SUFFIXES
from sound2image.audio.files import is_hidden as is_hidden
from sound2image.errors import DataError

#: File suffixes (lower case) treated as sound files when pairing by name: the loader's own list, the
#: same as every other folder scan (:mod:`sound2image.audio.files`). PyAV's formats are paired even
#: without the [av] extra: reading such a pair then fails with the error that names the extra.
AUDIO_SUFFIXES = SOUNDFILE_SUFFIXES | AV_SUFFIXES
#: File suffixes (lower case) treated as images when pairing by name.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})
#: File names looked for when a folder holds a manifest (first match wins).
MANIFEST_NAMES = (
    "pairs.csv",
    "pairs.tsv",
    "pairs.jsonl",
    "manifest.csv",
    "manifest.jsonl",
    "metadata.csv",
    "metadata.jsonl",
)
#: Manifest suffixes recognised by :func:`scan_pairs` when given a file.
MANIFEST_SUFFIXES = frozenset({".csv", ".tsv", ".jsonl", ".ndjson"})


@dataclass(frozen=True)
class Pair:
    """One sound and the image that goes with it.

    Attributes:
        audio: path of the sound file (absolute when the scan root was absolute).
        image: path of the image file.
        label: class name (ADVANCE scene, manifest ``label`` column), or ``None``.
        prompt: text prompt for this pair (manifest ``prompt`` column), or ``None``.
        group: split-group key — pairs with the same group always fall on the same side of a
            train/val split (ADVANCE: the location, the first 5 characters of the id; otherwise the
            manifest's ``group`` column or the audio file's stem).
        key: unique id of the pair relative to the dataset root (``airport/00001``); what a split file stores.
        extra: other manifest columns, as strings (not part of equality or hashing).
    """

    audio: Path
    image: Path
    label: str | None = None
    prompt: str | None = None
    group: str = ""
    key: str = ""
    extra: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)


@dataclass
class PairScan:
    """What :func:`scan_pairs` found.

    Attributes:
        pairs: the matched pairs, sorted by ``key``.
        problems: one line per problem, each naming the path (unmatched files, missing files, bad rows).
        layout: ``"advance"``, ``"manifest"`` or ``"folder"``.
        classes: sorted distinct labels (empty when the dataset has none).
        root: the folder that relative paths and keys refer to.
        source: the path that was scanned (the folder, or the manifest file).
    """

    pairs: list[Pair]
    problems: list[str]
    layout: str
    classes: list[str]
    root: Path
    source: Path

    @property
    def class_counts(self) -> dict[str, int]:
        """Pairs per label, in label order (pairs without a label are not counted)."""
        counts = Counter(pair.label for pair in self.pairs if pair.label is not None)
        return {label: counts[label] for label in self.classes}

    @property
    def ok(self) -> bool:
        """True when nothing was reported."""
        return not self.problems


def make_scan(pairs: list[Pair], problems: list[str], layout: str, root: Path, source: Path) -> PairScan:
    """Build a :class:`PairScan` with pairs sorted by key and the class list derived from the labels."""
    pairs = sorted(pairs, key=lambda pair: pair.key)
    classes = sorted({pair.label for pair in pairs if pair.label is not None})
    return PairScan(pairs=pairs, problems=problems, layout=layout, classes=classes, root=root, source=source)


def walk_files(root: Path, problems: list[str] | None = None) -> list[Path]:
    """Every non-hidden file below ``root``, sorted, skipping hidden folders (the one hidden-file rule,
    :func:`sound2image.audio.files.is_hidden`: ``.DS_Store``, ``._x.wav``, ``Thumbs.db`` …).

    A folder that cannot be listed is reported in ``problems`` (``os.walk`` would skip it silently).
    """

    def report(error: OSError) -> None:
        if problems is not None:
            problems.append(f"{error.filename}: cannot list folder ({error.strerror})")

    found: list[Path] = []
    for folder, subfolders, files in os.walk(root, onerror=report):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        found.extend(path for name in files if not is_hidden(path := Path(folder) / name, root))
    return sorted(found)


def scan_pairs(root_or_manifest: str | os.PathLike[str], *, allow_empty: bool = False) -> PairScan:
    """Find the audio/image pairs of a dataset folder or manifest file.

    Args:
        root_or_manifest: an ADVANCE-style folder (``vision/`` + ``sound/`` or
            ``Dataset_v3_vision/`` + ``Dataset_v3_sound/``), a manifest (``.csv`` / ``.jsonl``), a folder
            holding a manifest named ``pairs.csv`` (or ``pairs.jsonl``, ``manifest.csv`` ...), or a folder of
            same-stem audio and image files.

        allow_empty: return a scan without pairs (its problems say why) instead of raising.

    Returns:
        A :class:`PairScan`; unmatched or missing files are listed in ``problems``, not raised.

    Raises:
        DataError: the path does not exist, is not a dataset, a manifest lacks a required column, or
            (unless ``allow_empty``) nothing at all could be paired.
    """
    # Imported here: the layout readers import Pair/make_scan from this module.
    from sound2image.data.advance import find_advance_folders, scan_advance
    from sound2image.data.manifest import scan_folder, scan_manifest

    source = Path(root_or_manifest)
    if not source.exists():
        raise DataError(f"{source}: no such file or folder")
    if source.is_file():
        if source.suffix.lower() not in MANIFEST_SUFFIXES:
            raise DataError(
                f"{source}: not a manifest (expected .csv, .tsv or .jsonl) and not a dataset folder"
            )
        scan = scan_manifest(source)
    elif (folders := find_advance_folders(source)) is not None:
        scan = scan_advance(*folders)
    elif (manifest := _find_manifest(source)) is not None:
        scan = scan_manifest(manifest)
    else:
        scan = scan_folder(source)
    if not scan.pairs and not allow_empty:
        detail = f" ({len(scan.problems)} problems, first: {scan.problems[0]})" if scan.problems else ""
        raise DataError(f"{source}: no audio/image pairs found in the {scan.layout} layout{detail}")
    return scan


def _find_manifest(folder: Path) -> Path | None:
    for name in MANIFEST_NAMES:
        if (folder / name).is_file():
            return folder / name
    return None
