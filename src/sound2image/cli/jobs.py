"""Inputs, seeds and devices shared by both generation paths (SounDiff and the Image Transformer)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sound2image.errors import UsageError

AUDIO_EXTENSIONS = (
    ".wav",
    ".flac",
    ".mp3",
    ".ogg",
    ".oga",
    ".opus",
    ".m4a",
    ".aac",
    ".aif",
    ".aiff",
    ".webm",
)


@dataclass
class Job:
    """One output group: one audio (or several blended), named by ``name``."""

    name: str
    audio: list[Path]
    weights: list[float] | None = None


@dataclass
class Plan:
    jobs: list[Job] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


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
    """Audio files in a folder (recursive, sorted)."""
    return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)


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
            found = find_audio(path)
            if not found:
                plan.problems.append(f"{path}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in this folder")
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


def expand_seeds(seeds: Sequence[int] | None, num_images: int) -> list[int]:
    """Each seed s gives ``num_images`` images with seeds s, s+1, ...; no seed: a random one (recorded)."""
    if num_images < 1:
        raise UsageError(f"--num-images must be at least 1, got {num_images}")
    base = list(seeds) if seeds else [secrets.randbelow(2**31)]
    return [s + i for s in base for i in range(num_images)]


def pick_device(name: str | None) -> str:
    """``--device``: ``auto``/None = cuda, else mps, else cpu; any other name is checked to exist here
    (a UsageError names it when it is unknown or absent)."""
    import torch

    if name is None or name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name}: unknown device (use auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {name}: Apple MPS is not available on this machine")
    return name


def audio_record(path: Path, clip: Any, weight: float | None) -> dict[str, Any]:
    from sound2image.outputs import file_sha256

    return {
        "file": path.name,
        "path": str(path),
        "sha256": file_sha256(path),
        "weight": weight,
        "duration": round(float(clip.duration), 6),
        "window": [0.0, round(float(clip.duration), 6)],
        "length_action": getattr(clip, "length_action", "none"),
    }
