"""`sound2image data` commands: check a paired dataset, make a train/val split file, download ADVANCE."""

from __future__ import annotations

import argparse
import json

CHECK_EPILOG = """\
Examples:
  sound2image data check ./ADVANCE                 # vision/<class>/<id>.jpg + sound/<class>/<id>.wav
  sound2image data check my_pairs.csv              # manifest with audio,image[,label,prompt] columns
  sound2image data check ./pairs_folder --decode   # same-stem files; decode every file too

Exit code 0 when no problem was found, 2 when any was (each is listed, one line per file).
"""

SPLIT_EPILOG = """\
Examples:
  sound2image data split ./ADVANCE --out runs/split.json
  sound2image data split my_pairs.csv --out split.json --val-fraction 0.2 --seed 7

The split is grouped (all views of one ADVANCE location on one side), stratified by label and
deterministic; the file lists the settings, a fingerprint of the pairs and the keys on each side.
"""


DOWNLOAD_EPILOG = """\
Examples:
  sound2image data download advance ./ADVANCE            # from Zenodo record 3828124 (several GB)
  sound2image data download advance ./ADVANCE --mirror http://mirror.example/advance/

Each archive goes to DIR/.download/, resumes when interrupted (run the command again), is checked
against its md5 sum before anything is unpacked, and unpacks into DIR/vision and DIR/sound; nothing
is written outside DIR. Offline: download ADVANCE_vision.zip and ADVANCE_sound.zip by hand, put them
in DIR/.download/ and run the command: they are verified and unpacked. It ends with `data check DIR`
(exit code 0 when no problem was found, 2 when any was).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `data` command group: `data check`, `data split`, `data download`."""
    group = subparsers.add_parser(
        "data",
        help="inspect paired audio/image datasets",
        description="Inspect paired audio/image datasets (ADVANCE tree, CSV/JSONL manifest, "
        "same-stem folder).",
        epilog="Examples:\n  sound2image data check ./ADVANCE\n"
        "  sound2image data split ./ADVANCE --out split.json\n"
        "  sound2image data download advance ./ADVANCE\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = group.add_subparsers(dest="data_command", metavar="COMMAND")

    check = commands.add_parser(
        "check",
        help="report classes, pair counts, durations, sample rates, image sizes and every problem",
        description="Report what a paired dataset holds and every problem found (reads file headers only "
        "unless --decode).",
        epilog=CHECK_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("source", metavar="ROOT_OR_MANIFEST", help="dataset folder or .csv/.jsonl manifest")
    check.add_argument(
        "--decode", action="store_true", help="fully decode every audio and image file (slower)"
    )
    check.add_argument("--json", action="store_true", help="print the report as JSON instead of text")
    check.set_defaults(func=run_check)

    split = commands.add_parser(
        "split",
        help="write a reproducible grouped, stratified train/val split file",
        description="Make the train/val split of a dataset and write it as JSON.",
        epilog=SPLIT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    split.add_argument("source", metavar="ROOT_OR_MANIFEST", help="dataset folder or .csv/.jsonl manifest")
    split.add_argument("--out", "-o", required=True, help="split file to write (JSON)")
    split.add_argument("--val-fraction", dest="val_fraction", type=float, default=0.1, help="default: 0.1")
    split.add_argument("--seed", type=int, default=42, help="default: 42")
    split.add_argument("--overwrite", action="store_true", help="replace an existing split file")
    split.set_defaults(func=run_split)

    download = commands.add_parser(
        "download",
        help="download, verify and unpack a dataset (ADVANCE), then check it",
        description="Download a dataset's archives (resumable), verify their md5 sums, unpack them safely "
        "and print the `data check` report.",
        epilog=DOWNLOAD_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    download.add_argument("dataset", choices=["advance"], help="the dataset: advance (Hu et al. 2020)")
    download.add_argument(
        "directory", metavar="DIR", help="folder to put the dataset in (created if missing)"
    )
    download.add_argument(
        "--mirror", metavar="BASE", help="download BASE/ADVANCE_vision.zip and BASE/ADVANCE_sound.zip instead"
    )
    download.add_argument("--url-vision", dest="url_vision", metavar="URL", help="URL of ADVANCE_vision.zip")
    download.add_argument("--url-sound", dest="url_sound", metavar="URL", help="URL of ADVANCE_sound.zip")
    download.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for the server (default: 60)"
    )
    download.add_argument(
        "--retries", type=int, default=2, help="resumes of an interrupted download per run (default: 2)"
    )
    download.add_argument(
        "--keep-archives", dest="keep_archives", action="store_true",
        help="keep the verified .zip files in DIR/.download after unpacking",
    )  # fmt: skip
    download.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    download.add_argument("--json", action="store_true", help="print the final check report as JSON")
    download.set_defaults(func=run_download)

    group.set_defaults(func=lambda args: _print_group_help(group))


def _print_group_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def run_check(args: argparse.Namespace) -> int:
    """`data check`: print the report; exit 2 when problems were found."""
    return _print_check(args.source, decode=args.decode, as_json=args.json)


def _print_check(source: str, *, decode: bool = False, as_json: bool = False) -> int:
    """Print `data check`'s report of ``source``; 0 when no problem was found, else 2."""
    from sound2image.data.check import check_dataset

    report = check_dataset(source, decode=decode)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print("\n".join(report.lines()))
    return 0 if report.ok else 2


def run_download(args: argparse.Namespace) -> int:
    """`data download advance DIR`: download, verify, unpack, then print the `data check` report."""
    from sound2image.data.download import download_advance, mirror_urls
    from sound2image.validation import check_flags

    check_flags(
        args,
        numbers={"--timeout": {"minimum": 0.0, "min_inclusive": False}},
        integers={"--retries": {"minimum": 0}},
    )
    urls = mirror_urls(args.mirror) if args.mirror else {}
    urls.update({name: url for name, url in (("vision", args.url_vision), ("sound", args.url_sound)) if url})
    log = (lambda line: None) if args.json else (lambda line: print(line, flush=True))
    root = download_advance(
        args.directory,
        urls=urls,
        progress=args.progress,
        timeout=args.timeout,
        retries=args.retries,
        keep_archives=args.keep_archives,
        log=log,
    )
    return _print_check(str(root), as_json=args.json)


def run_split(args: argparse.Namespace) -> int:
    """`data split`: make the split, write it, print counts per side and class."""
    from collections import Counter
    from pathlib import Path

    from sound2image.data import scan_pairs, split_pairs
    from sound2image.errors import OutputExistsError

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise OutputExistsError(f"{out}: already exists (pass --overwrite to replace it)")
    scan = scan_pairs(args.source)
    split = split_pairs(scan.pairs, val_fraction=args.val_fraction, seed=args.seed)
    split.save(out)
    share = len(split.val) / (len(split.train) + len(split.val))
    print(f"{out}: {len(split.train)} train, {len(split.val)} val ({share:.1%}), seed {split.seed}")
    if split.stratified:
        train, val = Counter(p.label for p in split.train), Counter(p.label for p in split.val)
        width = max(len(str(name)) for name in scan.classes)
        for name in scan.classes:
            print(f"  {name:<{width}}  train {train[name]:>5}  val {val[name]:>4}")
    for problem in scan.problems:
        print(f"skipped: {problem}")
    return 0
