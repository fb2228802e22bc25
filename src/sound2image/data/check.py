"""The report behind ``sound2image data check``: what a dataset holds and everything wrong with it.

By default only headers are read — audio through :func:`sound2image.audio.probe_audio`, images through
PIL's lazy ``Image.open`` — so 2,500 pairs take about a second. ``decode=True`` also decodes every file
(:func:`sound2image.audio.load_audio`, :func:`load_image`), which finds damage a header does not show.
"""

from __future__ import annotations

import os
import statistics
import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sound2image.data.images import load_image, probe_image
from sound2image.data.pairs import PairScan, scan_pairs
from sound2image.errors import Sound2ImageError

if TYPE_CHECKING:
    from sound2image.audio import AudioInfo

#: How many distinct values a "sizes: ..." line shows before summarising the rest.
MAX_VALUES_SHOWN = 6


@dataclass
class CheckReport:
    """Statistics and problems of one dataset (see :func:`check_dataset`)."""

    source: Path
    layout: str
    pairs: int
    class_counts: dict[str, int]
    durations: list[float] = field(default_factory=list)
    sample_rates: Counter[int] = field(default_factory=Counter)
    channels: Counter[int] = field(default_factory=Counter)
    audio_formats: Counter[str] = field(default_factory=Counter)
    image_sizes: Counter[str] = field(default_factory=Counter)
    image_modes: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    usable_pairs: int = 0
    decoded: bool = False

    @property
    def ok(self) -> bool:
        """True when no problem was found (warnings do not count)."""
        return not self.problems

    def summary(self) -> str:
        """``"pseudo-advance: 132 pairs in 6 classes (advance layout), no problems"``."""
        classes = f"in {len(self.class_counts)} classes" if self.class_counts else "without labels"
        found = (
            f"{len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}"
            if self.problems
            else "no problems"
        )
        source = self.source.resolve()  # "." and ".." have no name of their own
        name = source.name if source.is_dir() else f"{source.parent.name}/{source.name}"
        return f"{name}: {self.pairs} pairs {classes} ({self.layout} layout), {found}"

    def lines(self) -> list[str]:
        """The human-readable report, one string per line."""
        out = [self.summary(), f"source: {self.source}", f"layout: {self.layout}", f"pairs: {self.pairs}"]
        if self.pairs != self.usable_pairs:
            out.append(f"usable pairs: {self.usable_pairs} (the others have an unreadable file)")
        if self.class_counts:
            out.append(f"classes: {len(self.class_counts)}")
            width = max(len(name) for name in self.class_counts)
            out.extend(f"  {name:<{width}}  {count}" for name, count in self.class_counts.items())
        else:
            out.append("classes: none (no labels)")
        out.append(f"audio: {sum(self.sample_rates.values())} files read" + _duration_text(self.durations))
        out.append(f"  sample rates: {_counts_text(self.sample_rates, '{} Hz')}")
        out.append(f"  channels: {_counts_text(self.channels, '{}')}")
        out.append(f"  formats: {_counts_text(self.audio_formats, '{}')}")
        out.append(f"images: {sum(self.image_sizes.values())} files read")
        out.append(f"  sizes: {_counts_text(self.image_sizes, '{}')}")
        out.append(f"  modes: {_counts_text(self.image_modes, '{}')}")
        out.append(
            "checked: every file decoded"
            if self.decoded
            else "checked: headers only (--decode reads every file)"
        )
        for warning in self.warnings:
            out.append(f"warning: {warning}")
        out.append(f"problems: {len(self.problems)}" if self.problems else "problems: none")
        out.extend(f"  {problem}" for problem in self.problems)
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form of the report."""
        durations = sorted(self.durations)
        return {
            "source": str(self.source),
            "layout": self.layout,
            "pairs": self.pairs,
            "usable_pairs": self.usable_pairs,
            "classes": self.class_counts,
            "audio": {
                "files": sum(self.sample_rates.values()),
                "duration_min": durations[0] if durations else None,
                "duration_median": statistics.median(durations) if durations else None,
                "duration_max": durations[-1] if durations else None,
                "sample_rates": {str(rate): count for rate, count in self.sample_rates.most_common()},
                "channels": {str(channels): count for channels, count in self.channels.most_common()},
                "formats": dict(self.audio_formats.most_common()),
            },
            "images": {
                "files": sum(self.image_sizes.values()),
                "sizes": dict(self.image_sizes.most_common()),
                "modes": dict(self.image_modes.most_common()),
            },
            "decoded": self.decoded,
            "warnings": self.warnings,
            "problems": self.problems,
        }


def _duration_text(durations: list[float]) -> str:
    if not durations:
        return ""
    low, middle, high = min(durations), statistics.median(durations), max(durations)
    return f", duration min {low:.2f} s, median {middle:.2f} s, max {high:.2f} s"


def _counts_text(counts: Counter, template: str) -> str:
    """``"22050 Hz (130), 16000 Hz (2)"``, most common first, the tail summarised."""
    if not counts:
        return "-"
    common = counts.most_common()
    shown = [f"{template.format(value)} ({count})" for value, count in common[:MAX_VALUES_SHOWN]]
    if len(common) > MAX_VALUES_SHOWN:
        rest = sum(count for _, count in common[MAX_VALUES_SHOWN:])
        shown.append(f"{len(common) - MAX_VALUES_SHOWN} other values ({rest})")
    return ", ".join(shown)


def _problem_line(path: Path, error: Exception) -> str:
    """Our errors already name the file; anything else is unexpected and says so."""
    if isinstance(error, Sound2ImageError):
        return str(error)
    return f"{path}: unexpected {type(error).__name__} while reading ({error}); please report this"


def _check_audio(paths: Iterable[Path], report: CheckReport, decode: bool) -> set[Path]:
    """Probe (and optionally decode) each sound file once; return the paths that failed."""
    from sound2image.audio import AudioWarning, load_audio, probe_audio

    failed: set[Path] = set()
    for path in paths:
        try:
            info = probe_audio(path)
            if decode:
                with warnings.catch_warnings():
                    # Recorded in the report below instead of being printed once per file.
                    warnings.simplefilter("ignore", AudioWarning)
                    clip = load_audio(path, sample_rate=None, mono=False)
                report.warnings.extend(w if str(path) in w else f"{path}: {w}" for w in clip.warnings)
        except Exception as error:  # noqa: BLE001 - one odd file must not end the check of the rest
            report.problems.append(_problem_line(path, error))
            failed.add(path)
            continue
        report.durations.append(float(info.duration))
        report.sample_rates[int(info.sample_rate)] += 1
        report.channels[int(info.channels)] += 1
        report.audio_formats[_format_name(info)] += 1
    return failed


def _format_name(info: AudioInfo) -> str:
    """``"WAV PCM_16"``: container and codec."""
    return " ".join(part for part in (info.format, info.codec) if part) or "?"


def _check_images(paths: Iterable[Path], report: CheckReport, decode: bool) -> set[Path]:
    """Read each image's header (or decode it); return the paths that failed."""
    failed: set[Path] = set()
    for path in paths:
        try:
            info = probe_image(path)
            if decode:
                load_image(path, mode=None)
        except Exception as error:  # noqa: BLE001 - one odd file must not end the check of the rest
            report.problems.append(_problem_line(path, error))
            failed.add(path)
            continue
        report.image_sizes[f"{info.width}x{info.height}"] += 1
        report.image_modes[info.mode] += 1
    return failed


def check_scan(scan: PairScan, *, decode: bool = False) -> CheckReport:
    """Read every file of an already scanned dataset and collect statistics and problems."""
    report = CheckReport(
        source=scan.source,
        layout=scan.layout,
        pairs=len(scan.pairs),
        class_counts=scan.class_counts,
        problems=list(scan.problems),
        decoded=decode,
    )
    # Each file once, even when several pairs share it (one sound with several images).
    audio_paths = sorted({pair.audio for pair in scan.pairs})
    image_paths = sorted({pair.image for pair in scan.pairs})
    bad = _check_audio(audio_paths, report, decode) | _check_images(image_paths, report, decode)
    report.usable_pairs = sum(1 for pair in scan.pairs if pair.audio not in bad and pair.image not in bad)
    return report


def check_dataset(source: str | os.PathLike[str], *, decode: bool = False) -> CheckReport:
    """Scan ``source`` (folder or manifest, see :func:`scan_pairs`) and check every file it pairs.

    Raises:
        DataError: ``source`` is not a dataset at all (problems with single items are in the report).
    """
    report = check_scan(scan_pairs(source, allow_empty=True), decode=decode)
    if not report.pairs:
        report.problems.append(f"{source}: no audio/image pairs found")
    return report
