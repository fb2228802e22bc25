"""The ADVANCE layout (Hu et al. 2020): ``vision/<class>/<id>.jpg`` ↔ ``sound/<class>/<id>.wav``.

The authors' archive names the two folders ``Dataset_v3_vision`` and ``Dataset_v3_sound``; both
spellings are recognised, directly under the given folder or inside its only subfolder (an extracted
archive). Class folders may contain spaces (``sparse shrub land``). Ids are 5 digits with an optional
``_k`` suffix for extra views of the same location, so the split group is the id's first 5 characters.

Pairs are matched by their relative path (``<class>/<id>``), never by listing order — the public
reference code zipped two directory listings, which silently mispairs as soon as one file is missing.
Files on one side without a partner are reported as problems.
"""

from __future__ import annotations

from pathlib import Path

from sound2image.data.pairs import AUDIO_SUFFIXES, IMAGE_SUFFIXES, Pair, PairScan, make_scan, walk_files
from sound2image.errors import DataError

#: (vision folder, sound folder) names, in the order they are looked for.
FOLDER_NAMES = (("vision", "sound"), ("Dataset_v3_vision", "Dataset_v3_sound"))
#: Characters of an id that name its location (``01234_2`` → ``01234``).
LOCATION_CHARS = 5


def location_of(item_id: str) -> str:
    """The location (split group) of an ADVANCE id: its first 5 characters (``00017_3`` → ``00017``)."""
    return item_id[:LOCATION_CHARS]


def find_advance_folders(root: Path) -> tuple[Path, Path, Path] | None:
    """``(vision, sound, root)`` if ``root`` (or its only subfolder) is an ADVANCE tree, else ``None``.

    Raises:
        DataError: one of the two folders is there without the other.
    """
    candidates = [root]
    subfolders = [child for child in root.iterdir() if child.is_dir() and not child.name.startswith(".")]
    if len(subfolders) == 1:
        candidates.append(subfolders[0])
    for folder in candidates:
        for vision_name, sound_name in FOLDER_NAMES:
            vision, sound = folder / vision_name, folder / sound_name
            if vision.is_dir() and sound.is_dir():
                return vision, sound, folder
            if vision.is_dir() != sound.is_dir():
                present, absent = (vision, sound) if vision.is_dir() else (sound, vision)
                raise DataError(f"{present}: ADVANCE layout without its partner folder {absent.name}/")
    return None


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _index_side(folder: Path, suffixes: frozenset[str], kind: str, problems: list[str]) -> dict[str, Path]:
    """Map ``<class>/<id>`` to the file for one side of the tree, reporting files that do not fit."""
    index: dict[str, Path] = {}
    for path in walk_files(folder, problems):
        relative = path.relative_to(folder)
        if path.suffix.lower() not in suffixes:
            problems.append(f"{path}: not {_article(kind)} {kind} file (suffix {path.suffix or '(none)'!r})")
            continue
        if len(relative.parts) != 2:
            problems.append(
                f"{path}: {kind} file not directly inside a class folder ({folder.name}/<class>/)"
            )
            continue
        key = f"{relative.parts[0]}/{path.stem}"
        if key in index:
            problems.append(f"{path}: second {kind} file for id {key} (first: {index[key].name}); skipped")
            continue
        index[key] = path
    return index


def scan_advance(vision: Path, sound: Path, root: Path) -> PairScan:
    """Pair ``vision/<class>/<id>.*`` with ``sound/<class>/<id>.*`` by relative path.

    Args:
        vision: the image folder (``vision`` or ``Dataset_v3_vision``).
        sound: the sound folder (``sound`` or ``Dataset_v3_sound``).
        root: the folder holding both; keys are relative to it.
    """
    problems: list[str] = []
    images = _index_side(vision, IMAGE_SUFFIXES, "image", problems)
    sounds = _index_side(sound, AUDIO_SUFFIXES, "sound", problems)
    pairs: list[Pair] = []
    for key in sorted(images.keys() | sounds.keys()):
        image, audio = images.get(key), sounds.get(key)
        label, item_id = key.split("/", 1)
        if audio is None:
            problems.append(f"{image}: no matching sound file (looked for {sound.name}/{key}.*)")
        elif image is None:
            problems.append(f"{audio}: no matching image file (looked for {vision.name}/{key}.*)")
        else:
            pairs.append(Pair(audio=audio, image=image, label=label, group=location_of(item_id), key=key))
    return make_scan(pairs, problems, "advance", root, root)
