"""`sound2image evaluate`: score generators on a paired dataset and write results.json + report.html.

The command only parses its flags into an :class:`~sound2image.evaluation.run.EvaluationConfig` and calls
:func:`~sound2image.evaluation.run.evaluate`; everything else (items, cached generation, sharding over
``accelerate launch`` processes, scoring, the report) is the library's.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from sound2image.cli.options import INT_FLAGS, NUMBER_FLAGS, SCHEDULER_NAMES
from sound2image.devices import DECODER_DTYPES, DTYPES
from sound2image.errors import UsageError

PRESETS = ("paper-table1",)

EPILOG = """\
Examples:
  sound2image evaluate --data ADVANCE/ --preset paper-table1 --soundiff-l runs/l --soundiff-s runs/s \\
      --seeds 1 2 3 --out report/
  sound2image evaluate --data ADVANCE/ --systems baseline,runs/soundiff-l \\
      --conditions none,"a satellite image with details on the ground" --features clip --out report/
  sound2image evaluate --data ../shared/data/av-digits/pairs.csv --systems transformer:runs/it/model \\
      --classifier runs/judge --features classifier:runs/judge --out report/
  sound2image evaluate --data ADVANCE/ --backbone sdxl-ip --systems baseline,runs/sdxl-ip --out report/
      (SDXL with h94's ViT-H adapter against the adapter trained by train soundiff --backbone sdxl-ip)
  accelerate launch --multi_gpu --num_processes 4 -m sound2image.cli.main evaluate ...   (shards items)

Images are cached in OUT/cache by system fingerprint, audio SHA-256, seed and settings: a killed run
resumes where it stopped, and adding a system draws only that system's images.
"""

#: Flags bounded like `generate`'s (the same tables), plus this command's own.
_NUMBERS = {flag: NUMBER_FLAGS[flag] for flag in ("--guidance-scale",)}
_NUMBERS.update(
    {"--temperature": {"minimum": 0.0}, "--top-p": {"minimum": 0.0, "maximum": 1.0, "min_inclusive": False}}
)
_INTS = {
    flag: INT_FLAGS[flag] for flag in ("--batch-size", "--candidates", "--steps", "--noise-level", "--size")
}
_INTS.update(
    {
        "--seeds": {"minimum": 0, "maximum": 2**63 - 1},
        "--max-items": {"minimum": 1},
        "--resamples": {"minimum": 1},
        "--k": {"minimum": 1},
        "--top-k": {"minimum": 1},
    }
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `evaluate` command."""
    parser = subparsers.add_parser(
        "evaluate",
        help="score generators on a paired dataset (FID, KID, AIC, AIS, IIS) and write a report",
        description="Generate images for the validation split with each system (cached, resumable), score "
        "them with 95 % bootstrap intervals over clips and write OUT/results.json and OUT/report.html.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = parser.add_argument_group("what to evaluate")
    what.add_argument("--data", required=True, help="paired dataset: ADVANCE-style folder or manifest")
    what.add_argument(
        "--split",
        default="val",
        metavar="val|FILE",
        help="val (default): the validation split a system's run directory holds (split.json), else the "
        "dataset's own grouped 90/10 split; or a split file",
    )
    what.add_argument(
        "--split-by",
        dest="split_by",
        metavar="COLUMN",
        help="evaluate on the pairs whose manifest COLUMN (e.g. speaker, label, group) has a --holdout "
        "value, e.g. a speaker the model never heard (instead of --split)",
    )
    what.add_argument(
        "--holdout",
        nargs="+",
        metavar="VALUE",
        help="the held-out value(s) of --split-by (e.g. --split-by speaker --holdout jackson)",
    )
    what.add_argument(
        "--systems",
        help="comma-separated: baseline (the zero-shot --model), DIR (a SounDiff fine-tuning run/export) "
        "or transformer:DIR (an Image Transformer model)",
    )
    what.add_argument(
        "--conditions",
        nargs="+",
        metavar="TEXT",
        help='text conditions for the SounDiff systems: none,"a prompt" (one value is split on commas)',
    )
    what.add_argument("--preset", choices=PRESETS, help="paper-table1: the paper's five columns")
    what.add_argument("--soundiff-l", dest="soundiff_l", metavar="DIR", help="SounDiff-L run (paper-table1)")
    what.add_argument("--soundiff-s", dest="soundiff_s", metavar="DIR", help="SounDiff-S run (paper-table1)")
    what.add_argument("--seeds", type=int, nargs="+", default=[1], help="one image per item and seed (1)")
    what.add_argument(
        "--max-items", dest="max_items", type=int, help="at most N items (round-robin over classes)"
    )
    what.add_argument("--out", "-o", required=True, help="output folder (cache, results.json, report.html)")

    judges = parser.add_argument_group("judges")
    judges.add_argument(
        "--features",
        default="inception",
        metavar="inception|clip|classifier:DIR",
        help="FID/KID features: inception (default; needs its weights), clip (the pipeline's image encoder) "
        "or classifier:DIR (penultimate features of a trained classifier)",
    )
    judges.add_argument("--classifier", metavar="DIR", help="image classifier (train classifier) for AIC")
    judges.add_argument("--k", type=int, default=3, help="AIC@k (3)")
    judges.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples over clips (1000)")
    judges.add_argument(
        "--bootstrap-seed", dest="bootstrap_seed", type=int, default=0, help="bootstrap seed (0)"
    )

    sampling = parser.add_argument_group("generation")
    sampling.add_argument("--steps", type=int, default=20, help="SounDiff denoising steps (20)")
    sampling.add_argument("--guidance-scale", dest="guidance_scale", type=float, help="default: the model's")
    sampling.add_argument(
        "--size", type=int, help="SounDiff image size in pixels (default: the model's, 768)"
    )
    sampling.add_argument("--scheduler", choices=SCHEDULER_NAMES, help="SounDiff scheduler (the model's own)")
    sampling.add_argument(
        "--noise-level", dest="noise_level", type=int, default=0, help="unCLIP noise level (0)"
    )
    sampling.add_argument("--temperature", type=float, help="Image Transformer temperature")
    sampling.add_argument("--top-k", dest="top_k", type=int, help="Image Transformer top-k")
    sampling.add_argument("--top-p", dest="top_p", type=float, help="Image Transformer top-p")
    sampling.add_argument(
        "--decoder-dtype",
        dest="decoder_dtype",
        choices=DECODER_DTYPES,
        default="float32",
        help="Image Transformer decoder weights (float16: faster batch-1 sampling on a CPU)",
    )
    sampling.add_argument(
        "--compile",
        action="store_true",
        help="compile the Image Transformer's sampling step (torch.compile: ~10 s once, then faster)",
    )
    sampling.add_argument(
        "--candidates", type=int, default=1, metavar="N", help="best-of-N per image (flagged)"
    )
    sampling.add_argument("--batch-size", dest="batch_size", type=int, default=8, help="encoder batch (8)")

    model = parser.add_argument_group("model and device")
    model.add_argument("--model", help="SounDiff base pipeline: hub id or dir (default as generate)")
    model.add_argument(
        "--backbone",
        choices=("unclip", "sd15-ip", "sdxl-ip"),
        default="unclip",
        help="SounDiff systems' generator, as generate: unclip (default), or sd15-ip / sdxl-ip (--model is "
        "then the SD 1.5 / SDXL pipeline, baseline the zero-shot adapter, DIR an adapter training run)",
    )
    model.add_argument("--ip-adapter", help="baseline's IP-Adapter (default: h94/IP-Adapter's ViT-H)")
    model.add_argument("--ip-scale", type=float, default=1.0, help="the IP-Adapter's weight (1.0)")
    model.add_argument(
        "--imagebind-weights", metavar="FILE", help="imagebind_huge.pth (or audio .safetensors)"
    )
    model.add_argument("--variant", help='weight variant to download, e.g. "fp16"')
    model.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cuda, cuda:1, mps, cpu")
    model.add_argument(
        "--dtype", choices=("auto", *DTYPES), default="auto", help="auto: fp16 on CUDA, else fp32"
    )
    parser.set_defaults(func=handler, evaluate_defaults={a.dest: a.default for a in parser._actions})


def _systems(args: argparse.Namespace) -> list[Any]:
    from sound2image.evaluation.systems import paper_table1, parse_conditions, parse_systems

    if args.preset == "paper-table1":
        given = [
            flag for flag, value in (("--systems", args.systems), ("--conditions", args.conditions)) if value
        ]
        if given:
            raise UsageError(
                f"{', '.join(given)}: --preset paper-table1 sets the systems and conditions; leave out"
            )
        missing = [
            flag
            for flag, value in (("--soundiff-l", args.soundiff_l), ("--soundiff-s", args.soundiff_s))
            if not value
        ]
        if missing:
            raise UsageError(f"--preset paper-table1 needs {' and '.join(missing)} DIR")
        if args.backbone != "unclip":
            raise UsageError("--backbone: --preset paper-table1 compares the paper's unCLIP systems")
        return paper_table1(args.soundiff_l, args.soundiff_s, model=args.model, candidates=args.candidates)
    extra = [
        flag
        for flag, value in (("--soundiff-l", args.soundiff_l), ("--soundiff-s", args.soundiff_s))
        if value
    ]
    if extra:
        raise UsageError(f"{', '.join(extra)}: only with --preset paper-table1")
    if not args.systems:
        raise UsageError(
            "--systems is required (e.g. --systems baseline,runs/soundiff-l) unless --preset is given"
        )
    return parse_systems(
        args.systems,
        parse_conditions(args.conditions),
        model=args.model,
        candidates=args.candidates,
        backbone=args.backbone,
        ip_adapter=args.ip_adapter,
        ip_scale=args.ip_scale,
    )


def _command(args: argparse.Namespace) -> str:
    """The command line as given (options away from their defaults), for results.json."""
    parts = ["sound2image", "evaluate"]
    for dest, default in args.evaluate_defaults.items():
        value = getattr(args, dest, None)
        if dest in ("help", "func", "evaluate_defaults") or value == default or value is None:
            continue
        flag = "--" + dest.replace("_", "-")
        if value is True:  # a switch: the flag alone
            parts.append(flag)
            continue
        values = value if isinstance(value, list) else [value]
        parts += [flag, *(str(v) for v in values)]
    return shlex.join(parts)


def handler(args: argparse.Namespace) -> int:
    """Parse -> :class:`EvaluationConfig` -> :func:`evaluate`; exit 2 when items were skipped."""
    from sound2image.validation import check_flags

    check_flags(args, _NUMBERS, _INTS)
    if args.size is not None and args.size % 8:
        raise UsageError(f"--size must be a positive multiple of 8, got {args.size}")
    from sound2image.cli.jobs import pick_device
    from sound2image.devices import resolve_dtype

    resolve_dtype(args.dtype, pick_device(args.device), "--dtype")  # checks --device on the way
    from sound2image.evaluation.generation import GenerationOptions
    from sound2image.evaluation.run import EvaluationConfig, evaluate

    config = EvaluationConfig(
        data=args.data,
        out=args.out,
        systems=_systems(args),
        split=args.split,
        split_by=args.split_by,
        holdout=list(args.holdout or []),
        seeds=list(args.seeds),
        max_items=args.max_items,
        features=args.features,
        classifier=args.classifier,
        model=args.model,
        generation=GenerationOptions(
            steps=args.steps,
            guidance_scale=args.guidance_scale,
            size=args.size,
            scheduler=args.scheduler,
            noise_level=args.noise_level,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            decoder_dtype=args.decoder_dtype,
            compile=args.compile,
            batch_size=args.batch_size,
            device=args.device,
            dtype=args.dtype,
            variant=args.variant,
            imagebind_weights=args.imagebind_weights,
        ),
        k=args.k,
        resamples=args.resamples,
        bootstrap_seed=args.bootstrap_seed,
        command=_command(args),
    )
    results = evaluate(config)
    if not results:  # not the main process of a multi-process launch
        return 0
    bad = results.get("bad_items", [])
    print(f"wrote {args.out}/results.json and {args.out}/report.html ({len(results['items'])} items)")
    if bad:
        print(f"{len(bad)} item(s) skipped:", file=sys.stderr)
        for entry in bad:
            print(f"  {entry['item']}: {entry['problem']}", file=sys.stderr)
        return 2
    return 0
