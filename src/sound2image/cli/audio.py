"""`sound2image audio` commands: `audio info` describes sound files, one line each."""

from __future__ import annotations

import argparse
import sys

INFO_EPILOG = """\
Examples:
  sound2image audio info examples/waves.flac
  sound2image audio info recordings/*.flac clip.m4a --max-duration 3600

One line per file: format, codec, sample rate, channels, duration, peak level (dBFS) and any
problem. Every file is reported; the exit code is 2 when any file is bad (0 when all are fine).
M4A/AAC, WebM/Opus and video files need the av extra: pip install "sound2image[av]".
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `audio` command group: `audio info`."""
    group = subparsers.add_parser(
        "audio",
        help="inspect sound files",
        description="Inspect sound files.",
        epilog="Example:\n  sound2image audio info examples/waves.flac",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = group.add_subparsers(dest="audio_command", metavar="COMMAND")
    info = commands.add_parser(
        "info",
        help="format, codec, rate, channels, duration, peak level and problems of each file",
        description="Describe each sound file on one line and report every problem found.",
        epilog=INFO_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    info.add_argument("files", nargs="+", metavar="FILE", help="sound files to describe")
    info.add_argument(
        "--max-duration",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="report files longer than this as bad (default 600; 0 = no limit)",
    )
    info.set_defaults(func=run_info)
    group.set_defaults(func=lambda args: _group_help(group))


def _group_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def describe_file(path: str, max_duration: float | None) -> str:
    """One line for a good file: ``path: WAV PCM_16, 22050 Hz, 1 ch, 10.000 s, peak -3.2 dBFS``.

    Raises the file's :class:`~sound2image.errors.Sound2ImageError` when it is bad.
    """
    from sound2image.audio import load_audio, peak_dbfs, probe_audio

    info = probe_audio(path)
    clip = load_audio(path, mono=False, max_duration=max_duration)  # decode fully: checks + peak level
    peak = peak_dbfs(clip.samples)
    parts = [
        f"{info.format} {info.codec}",
        f"{info.sample_rate} Hz",
        f"{info.channels} ch",
        f"{clip.original_duration:.3f} s",
        f"peak {round(peak, 1) + 0.0:.1f} dBFS" if peak > float("-inf") else "peak -inf dBFS",  # no "-0.0"
    ]
    line = f"{path}: " + ", ".join(parts)
    for warning in clip.warnings:
        # Warnings start with the file's name; keep only the problem.
        line += f"; warning: {warning.removeprefix(f'{path}: ')}"
    return line


def run_info(args: argparse.Namespace) -> int:
    """Handler of `audio info`: every file gets a line; 2 if any is bad, else 0."""
    import warnings

    from sound2image.audio import AudioWarning
    from sound2image.errors import AudioError, Sound2ImageError

    max_duration = args.max_duration if args.max_duration and args.max_duration > 0 else None
    exit_code = 0
    for path in args.files:
        try:
            with warnings.catch_warnings():
                # Warnings are already part of the line; do not repeat them on stderr.
                warnings.simplefilter("ignore", AudioWarning)
                print(describe_file(path, max_duration))
        except Sound2ImageError as error:
            print(f"{path}: error: {str(error).removeprefix(f'{path}: ')}")
            code = 2 if isinstance(error, AudioError) else error.exit_code
            exit_code = max(exit_code, code)
        sys.stdout.flush()
    return exit_code
