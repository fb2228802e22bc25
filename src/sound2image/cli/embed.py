"""`sound2image embed`: ImageBind audio embeddings of sound files, one row per file, in a safetensors file."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from sound2image.audio.channels import parse_channel

EMBED_EPILOG = """\
Examples:
  sound2image embed examples/waves.flac forest.flac -o embeddings.safetensors
  sound2image embed ./ADVANCE/sound -o advance.safetensors --batch-size 16 --device cuda --dtype float16
  sound2image embed long_recording.wav -o e.safetensors --clips-per-file 5   # 5 x 2 s windows cover 10 s
  sound2image embed stereo.wav -o e.safetensors --channel first   # channel 0, exactly as ImageBind reads it

Channels: the mean of the channels by default (as generate, training and the Python API); the policy
used is recorded in the file's "encoder_config" ("channel").

The file holds a tensor "embeddings" (files x 1024, float32, norm <= 20) and, in its metadata, the
file names ("files", JSON list: paths relative to each folder argument, or the file arguments as
typed), the settings and the files that were skipped. Read it with
sound2image.encoders.imagebind.load_embeddings(path).

Weights: --weights PATH, else $SOUND2IMAGE_IMAGEBIND_WEIGHTS, else the cache
(~/.cache/sound2image/imagebind/), else the official checkpoint is downloaded there once (4.5 GB;
only the audio part, ~350 MB, is kept). ImageBind weights are licensed CC BY-NC-SA 4.0.
Bad files are reported and the others embedded; the exit code is then 2.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `embed` command."""
    parser = subparsers.add_parser(
        "embed",
        help="ImageBind audio embeddings of sound files (one row per file)",
        description="Compute the ImageBind-huge audio embedding of every sound file and save them together.",
        epilog=EMBED_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "inputs", nargs="+", metavar="AUDIO_OR_FOLDER", help="sound files and/or folders (recursive)"
    )
    parser.add_argument("--out", "-o", dest="out", required=True, help="output .safetensors file")
    parser.add_argument(
        "--weights",
        dest="path",  # the encoder's parameter, so that its errors name this flag
        default=None,
        metavar="PATH",
        help="imagebind_huge.pth or audio .safetensors",
    )
    parser.add_argument(
        "--batch-size", dest="batch_size", type=int, default=8, help="files per batch (default 8)"
    )
    parser.add_argument(
        "--device", default=None, help="auto (default: cuda, else mps, else cpu), cpu, cuda, cuda:1, mps"
    )
    parser.add_argument(
        "--dtype", default="float32", help="float32 (default), float16 or bfloat16 (or fp32, fp16, bf16)"
    )
    parser.add_argument(
        "--clips-per-file",
        dest="clips_per_file",
        type=int,
        default=None,
        metavar="N",
        help="cover each whole file with N evenly spread 2 s windows (default: ImageBind's 3 windows, "
        "which skip the last (duration - 2) / 3 s)",
    )
    parser.add_argument(
        "--channel",
        type=parse_channel,
        default=None,
        metavar="{mean,first,N}",
        help="channels embedded: mean (down-mix; default unless the weights file stores another policy), "
        "first (channel 0, exactly as ImageBind's reference) or N (channel N)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    parser.add_argument("--offline", action="store_true", help="never download weights")
    parser.set_defaults(func=run_embed)


def collect_files(inputs: list[str]) -> tuple[list[tuple[Path, str]], list[tuple[str, str]]]:
    """(path, stored name) of every audio file, and (input, problem) for inputs that are not usable.

    Names are paths relative to each folder argument, or the file argument as typed; if two inputs
    give the same name, folder files are named ``<folder argument>/<relative path>`` instead.
    """
    from sound2image.audio.files import scan_audio_folder

    found: list[tuple[Path, str, str | None]] = []  # (path, relative name, folder argument)
    bad: list[tuple[str, str]] = []
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            scan = scan_audio_folder(path)  # the same suffixes and hidden-file rule as generate
            for file, reason in scan.skipped:  # a warning, not a failure
                print(f"warning: {file}: skipped: {reason}", file=sys.stderr)
            files = scan.files
            if not files:
                bad.append((given, "folder holds no audio files"))
            found.extend((file, file.relative_to(path).as_posix(), given) for file in files)
        elif path.is_file():
            found.append((path, given, None))
        else:
            bad.append((given, "no such file or folder"))
    names = [name for _, name, _ in found]
    if len(set(names)) != len(names):
        names = [name if folder is None else f"{folder.rstrip('/')}/{name}" for _, name, folder in found]
    return [(path, name) for (path, _, _), name in zip(found, names, strict=True)], bad


def _drop_unreadable(
    files: list[tuple[Path, str]], bad: list[tuple[str, str]]
) -> tuple[list[tuple[Path, str]], list[tuple[str, str]]]:
    """Header-check every file before the encoder loads, so bad files are reported even without weights."""
    from sound2image.audio import DEFAULT_MAX_DURATION, probe_audio
    from sound2image.errors import Sound2ImageError

    kept = []
    for path, name in files:
        try:
            probe_audio(path, max_duration=DEFAULT_MAX_DURATION)  # the limit embedding applies too
        except Sound2ImageError as error:
            bad.append((str(path), str(error).removeprefix(f"{path}: ")))  # the line names the file once
        else:
            kept.append((path, name))
    return kept, bad


def run_embed(args: argparse.Namespace) -> int:
    """Handler of `embed`: 0 when every file was embedded, 2 when any input was bad."""
    from sound2image.errors import OutputExistsError, Sound2ImageError, UsageError

    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.clips_per_file is not None and args.clips_per_file < 1:
        raise UsageError(f"--clips-per-file must be >= 1, got {args.clips_per_file}")
    out = Path(args.out)
    if out.is_dir():
        raise UsageError(f"{out}: is a folder; give the output file name (e.g. {out}/embeddings.safetensors)")
    if out.exists() and not args.overwrite:
        raise OutputExistsError(f"{out}: already exists (pass --overwrite to replace it)")
    files, bad = collect_files(args.inputs)
    files, bad = _drop_unreadable(files, bad)
    for given, problem in bad:
        print(f"skipped {given}: {problem}", file=sys.stderr)
    if not files:
        raise UsageError("no audio files to embed")

    import torch

    from sound2image.cli.jobs import pick_device
    from sound2image.encoders.imagebind import ImageBindAudioEncoder, resolve_dtype, save_embeddings
    from sound2image.encoders.preprocess import preprocess_audio

    dtype = resolve_dtype(args.dtype)
    device = torch.device(pick_device(args.device))
    encoder = ImageBindAudioEncoder.from_pretrained(args.path, local_files_only=args.offline)
    encoder.to(device=device, dtype=dtype).eval()
    config = encoder.sampling_config(
        args.clips_per_file, "cover" if args.clips_per_file else None, channel=args.channel
    )  # its "channel" (the policy used) is recorded in the file's encoder_config

    from tqdm.auto import tqdm

    rows, names = [], []
    skipped = [{"file": given, "error": problem} for given, problem in bad]
    with tqdm(total=len(files), unit="file", desc="embedding", disable=not sys.stderr.isatty()) as bar:
        for start in range(0, len(files), args.batch_size):
            features, batch_names = [], []
            for path, name in files[start : start + args.batch_size]:
                try:
                    features.append(preprocess_audio(path, config))
                    batch_names.append(name)
                except Sound2ImageError as error:
                    _report(skipped, path, str(error))
                except Exception as error:  # noqa: BLE001 - one undecodable file must not stop the batch
                    _report(skipped, path, f"{type(error).__name__}: {error}")
                bar.update(1)
            if features:
                rows.append(encoder.embed_features(torch.cat(features), config.clips_per_file))
                names.extend(batch_names)
    if not rows:
        print(f"error: none of the {len(files)} files could be embedded; nothing written", file=sys.stderr)
        return 2
    metadata = {
        "encoder_config": config.to_dict(),
        "weights": encoder.weights_source,
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "skipped": skipped,
    }
    save_embeddings(out, torch.cat(rows), names, metadata)
    print(
        f"wrote {len(names)} embeddings to {out}" + (f" ({len(skipped)} inputs skipped)" if skipped else "")
    )
    return 2 if skipped else 0


def _report(skipped: list[dict[str, str]], path: os.PathLike[str] | str, problem: str) -> None:
    # Messages from our loaders already start with the file name; do not repeat it.
    line = problem if problem.startswith(str(path)) else f"{path}: {problem}"
    print(f"skipped {line}", file=sys.stderr)
    skipped.append({"file": str(path), "error": problem})
