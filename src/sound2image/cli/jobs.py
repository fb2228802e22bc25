"""Inputs, seeds and devices shared by both generation paths (SounDiff and the Image Transformer)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sound2image.audio.files import AV_SUFFIXES, SOUNDFILE_SUFFIXES, scan_audio_folder
from sound2image.errors import UsageError

#: Suffixes a folder scan takes (sorted): the loader's own list (sound2image.audio.files); PyAV's
#: formats count only when the [av] extra is installed, otherwise such files are reported as skipped.
AUDIO_EXTENSIONS = tuple(sorted(SOUNDFILE_SUFFIXES | AV_SUFFIXES))


@dataclass
class Job:
    """One output group: one audio (or several blended), named by ``name``."""

    name: str
    audio: list[Path]
    weights: list[float] | None = None


@dataclass
class Plan:
    """Jobs to run; ``problems``: inputs that failed (they make the run exit 2); ``skipped``: files in a
    folder left out for their suffix, one line each (reported as warnings, they do not fail the run)."""

    jobs: list[Job] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def split_weight(item: str) -> tuple[str, float | None]:
    """``"rain.wav:0.7"`` -> ``("rain.wav", 0.7)``; anything else is a plain path."""
    path, sep, suffix = item.rpartition(":")
    if sep and path and not Path(item).exists():
        try:
            return path, float(suffix)
        except ValueError:
            pass
    return item, None


def find_audio(path: Path) -> list[Path]:
    """Audio files in a folder (recursive, sorted; hidden files left out), see
    :func:`sound2image.audio.files.scan_audio_folder`."""
    return scan_audio_folder(path).files


def report_skipped(plan: Plan) -> None:
    """Print one ``warning:`` line on stderr for each file a folder scan left out for its suffix."""
    import sys

    for line in plan.skipped:
        print(f"warning: {line}", file=sys.stderr)


def _safe_stem(path: Path) -> str:
    return re.sub(r"[^\w.+-]+", "_", path.stem).strip("._") or "audio"


def plan_jobs(inputs: Sequence[str], weights: Sequence[float] | None, mix: bool) -> Plan:
    """Expand files and folders into jobs; a missing path or empty folder is a problem, not a crash."""
    plan = Plan()
    files: list[Path] = []
    inline: list[float | None] = []
    for item in inputs:
        text, weight = split_weight(item)
        path = Path(text)
        if path.is_dir():
            scan = scan_audio_folder(path)
            found = scan.files
            plan.skipped += [f"{file}: skipped: {reason}" for file, reason in scan.skipped]
            if not found:
                others = f" ({len(scan.skipped)} file(s) skipped for their suffix)" if scan.skipped else ""
                plan.problems.append(f"{path}: no audio files in this folder{others}")
            files += found
            inline += [weight] * len(found)
        elif path.exists():
            files.append(path)
            inline.append(weight)
        else:
            plan.problems.append(f"{path}: no such file or folder")
    if any(w is not None for w in inline) and weights:
        raise UsageError("give weights either as FILE:W or with --weights, not both")
    if any(w is not None for w in inline):
        weights = [1.0 if w is None else w for w in inline]
    if weights and len(weights) != len(files):
        raise UsageError(f"--weights has {len(weights)} values for {len(files)} audio files")
    if (weights or mix) and files:
        name = (
            "mix_"
            + "+".join(_safe_stem(p) for p in files[:3])
            + (f"+{len(files) - 3}" if len(files) > 3 else "")
        )
        plan.jobs.append(Job(name, files, list(weights) if weights else None))
        return plan
    used: set[str] = set()
    for path in files:
        name, n = _safe_stem(path), 2
        while name in used:  # same stem in two folders: keep both
            name, n = f"{_safe_stem(path)}-{n}", n + 1
        used.add(name)
        plan.jobs.append(Job(name, [path]))
    return plan


def pick_device(name: str | None) -> str:
    """``--device``: ``auto``/None = cuda, else mps, else cpu; any other name is checked to exist here
    (a UsageError names the flag when it is unknown or absent): :func:`sound2image.devices.resolve_device`."""
    from sound2image.devices import resolve_device

    return resolve_device(name, "--device")
