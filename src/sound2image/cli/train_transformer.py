"""`sound2image train transformer`: train the Image Transformer from scratch on audio/image pairs."""

from __future__ import annotations

import argparse

EPILOG = """Examples:
  # the small configuration that learns spoken digits -> handwritten digits on a CPU in 30 minutes
  sound2image train transformer --data ../shared/data/av-digits --preset av-digits \\
      --out runs/it-digits --max-minutes 30
  # leave one speaker out: train on the other speakers, validate on jackson (split.json says so)
  sound2image train transformer --data ../shared/data/av-digits --preset av-digits-robust \
      --split-by speaker --holdout jackson --out runs/it-no-jackson --max-minutes 30
  # the paper's configuration (500x220 FFT sections, 512-d, 6 + 6 layers) on an ADVANCE tree, on a GPU
  sound2image train transformer --data ADVANCE/ --preset paper --out runs/it-advance --epochs 50
  # continue the newest checkpoint with the settings the run was started with (training_config.json:
  # preset, data and options need not be repeated); only --max-steps, --epochs, --max-minutes, the
  # evaluation/checkpoint cadence and --device may change, anything else is refused and named
  sound2image train transformer --out runs/it-digits --resume latest --max-minutes 10

The run directory gets training_config.json, split.json, metrics.jsonl (one JSON line per update and
per evaluation), validation/step-*.png (real images on top, generated below), bad_items.txt (skipped
pairs, if any), checkpoints/checkpoint-<step>/ (a NaN/Inf loss stops the run and keeps the last good
one) and, at the end, model/ for
`sound2image generate --model transformer:runs/it-digits/model` (with model/reranker/, the
best-of-N scorer, when one was trained: `generate ... --candidates 8`).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `train transformer` to the `train` group."""
    parser = subparsers.add_parser(
        "transformer",
        help="train the audio-conditioned Image Transformer from scratch",
        description="Train the Image Transformer (encoder over FFT sections of the audio, decoder over "
        "32x32 grayscale pixels with local 1-D attention) on audio/image pairs.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data",
        default=None,
        help="dataset folder or manifest (see `sound2image data check`); required unless --resume",
    )
    parser.add_argument("--out", "--output", "-o", required=True, dest="output_dir", help="run directory")
    parser.add_argument(
        "--preset",
        choices=("paper", "av-digits", "av-digits-robust"),
        default=None,
        help="starting configuration (default: paper; with --resume: the run's saved settings; "
        "av-digits-robust: log-mel bands normalised per utterance and the decoder conditioned on the "
        "scorer's utterance embedding, for unseen speakers)",
    )
    parser.add_argument(
        "--resume",
        default=None,
        help="'latest' or a checkpoint directory: continue the run in --out with its saved settings",
    )
    run = parser.add_argument_group("run")
    run.add_argument("--epochs", type=float, default=None)
    run.add_argument("--max-steps", type=int, default=None)
    run.add_argument("--max-minutes", type=float, default=None, help="hard wall-clock budget for the loop")
    run.add_argument("--batch-size", type=int, default=None)
    run.add_argument("--lr", type=float, default=None, help="peak learning rate (after warm-up)")
    run.add_argument(
        "--min-lr", type=float, default=None, help="learning rate at the end of the cosine decay"
    )
    run.add_argument("--warmup-steps", type=int, default=None)
    run.add_argument("--weight-decay", type=float, default=None)
    run.add_argument("--val-fraction", type=float, default=None)
    run.add_argument(
        "--split-by",
        dest="split_by",
        default=None,
        metavar="COLUMN",
        help="validate on the pairs whose manifest COLUMN (e.g. speaker) has a --holdout value and train "
        "on all others (instead of the grouped --val-fraction split)",
    )
    run.add_argument(
        "--holdout", nargs="+", default=None, metavar="VALUE", help="held-out value(s) of --split-by"
    )
    run.add_argument("--seed", type=int, default=None)
    run.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:1 ...")
    run.add_argument("--mixed-precision", choices=("auto", "no", "bf16", "fp16"), default=None)
    run.add_argument("--eval-every", type=int, default=None, help="steps between validation + sample grids")
    run.add_argument("--checkpoint-every", type=int, default=None)
    run.add_argument("--checkpoints-total-limit", type=int, default=None)
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch (1 is best on a busy CPU)"
    )
    model = parser.add_argument_group("model")
    model.add_argument("--d-model", type=int, default=None)
    model.add_argument("--encoder-layers", type=int, default=None)
    model.add_argument("--decoder-layers", type=int, default=None)
    model.add_argument("--heads", type=int, default=None)
    model.add_argument("--query-block", type=int, default=None)
    model.add_argument("--memory-length", type=int, default=None)
    model.add_argument("--dropout", type=float, default=None)
    model.add_argument(
        "--cond-dropout", type=float, default=None, help="share of examples trained without audio"
    )
    rerank = parser.add_argument_group("best-of-N scorer")
    rerank.add_argument(
        "--reranker-epochs",
        type=int,
        default=None,
        metavar="N",
        help="train the contrastive audio-image scorer for N epochs before the transformer, inside the "
        "same --max-minutes (0 = none; preset av-digits: 30, paper: none); used by generate --candidates",
    )
    rerank.add_argument(
        "--utterance-embedding",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="condition the decoder on the scorer's audio embedding of the whole clip (a frozen copy; trains "
        "the default scorer if there is none)",
    )
    rerank.add_argument(
        "--scorer-labels",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the scorer counts every pair that shares the sound's manifest label as a match (supervised "
        "contrastive; every training pair needs a label; preset av-digits-robust: on)",
    )
    features = parser.add_argument_group("audio features")
    features.add_argument("--sample-rate", type=int, default=None)
    features.add_argument("--duration", type=float, default=None, help="seconds of audio used per clip")
    features.add_argument("--sections", type=int, default=None, help="number of FFT sections")
    features.add_argument("--log-magnitude", action=argparse.BooleanOptionalAction, default=None)
    features.add_argument("--standardize", action=argparse.BooleanOptionalAction, default=None)
    features.add_argument(
        "--frequency-scale",
        dest="frequency_scale",
        choices=("linear", "mel"),
        default=None,
        help="linear: the FFT bins (the paper); mel: --mel-bands log-mel bands",
    )
    features.add_argument("--mel-bands", dest="mel_bands", type=int, default=None, help="mel bands (40)")
    features.add_argument(
        "--normalize",
        choices=("none", "mean", "meanvar"),
        default=None,
        help="per-utterance normalisation of each band over time (after the log)",
    )
    augment = parser.add_argument_group("augmentation (training clips only; off unless a preset sets it)")
    augment.add_argument("--no-augment", action="store_true", help="turn every augmentation off")
    augment.add_argument("--time-shift", type=float, default=None, metavar="S", help="max shift, seconds")
    augment.add_argument("--gain-db", type=float, default=None, metavar="DB", help="max gain change, dB")
    augment.add_argument("--noise-snr-db", type=float, default=None, metavar="DB", help="white-noise SNR")
    augment.add_argument("--noise-prob", type=float, default=None, help="share of clips given noise")
    augment.add_argument(
        "--speed", type=float, default=None, help="max relative speed (and pitch) change, e.g. 0.1"
    )
    augment.add_argument("--time-masks", type=int, default=None, help="SpecAugment time masks")
    augment.add_argument("--time-mask-width", type=int, default=None, help="max sections per time mask")
    augment.add_argument("--freq-masks", type=int, default=None, help="SpecAugment frequency masks")
    augment.add_argument("--freq-mask-width", type=int, default=None, help="max bins per frequency mask")
    parser.set_defaults(func=handler)


_RUN = (
    "epochs",
    "max_steps",
    "max_minutes",
    "batch_size",
    "lr",
    "min_lr",
    "warmup_steps",
    "weight_decay",
    "val_fraction",
    "split_by",
    "holdout",
    "seed",
    "device",
    "mixed_precision",
    "eval_every",
    "checkpoint_every",
    "checkpoints_total_limit",
    "resume",
)
_MODEL = {
    "d_model": "d_model",
    "encoder_layers": "n_encoder_layers",
    "decoder_layers": "n_decoder_layers",
    "heads": "n_heads",
    "query_block": "query_block",
    "memory_length": "memory_length",
    "dropout": "dropout",
    "cond_dropout": "cond_dropout",
}
_FEATURES = {
    "sample_rate": "sample_rate",
    "duration": "duration",
    "sections": "num_sections",
    "log_magnitude": "log_magnitude",
    "standardize": "standardize",
    "frequency_scale": "frequency_scale",
    "mel_bands": "mel_bands",
    "normalize": "normalize",
}
_AUGMENT = (
    "time_shift",
    "gain_db",
    "noise_snr_db",
    "noise_prob",
    "speed",
    "time_masks",
    "time_mask_width",
    "freq_masks",
    "freq_mask_width",
)


def base_config(args: argparse.Namespace):  # -> TransformerTrainConfig (imported lazily)
    """What the options apply to: the preset for a new run; for ``--resume`` without ``--preset``, the
    settings the run in ``--out`` was started with (so it resumes as it began, whatever the presets are
    today; an option given now that differs from them is refused by the trainer, named)."""
    import dataclasses

    from sound2image.errors import UsageError
    from sound2image.training.rundir import config_path
    from sound2image.training.transformer import load_run_config, preset

    saved = config_path(args.output_dir)
    started = load_run_config(saved) if args.resume and saved.is_file() else None
    data = args.data if args.data is not None or started is None else started.data
    if started is not None and args.preset is None:
        return dataclasses.replace(started, data=data, output_dir=args.output_dir)
    if data is None:
        hint = f" (no {saved.name} in {args.output_dir} to resume from)" if args.resume else ""
        raise UsageError(f"--data is required{hint}", parameters=["data"])
    return preset(args.preset or "paper", data, args.output_dir)


def build_config(args: argparse.Namespace):  # -> TransformerTrainConfig (imported lazily)
    """The preset (or, resuming, the run's saved settings) with every option the user gave on top."""
    import dataclasses

    from sound2image.audio.sections import SectionFeatureConfig
    from sound2image.errors import UsageError
    from sound2image.training.augment import AugmentConfig
    from sound2image.training.reranker import RerankerTrainConfig
    from sound2image.training.transformer import with_scorer_labels, with_utterance_embedding

    config = base_config(args)
    features = dataclasses.replace(
        config.features, **{f: getattr(args, a) for a, f in _FEATURES.items() if getattr(args, a) is not None}
    )
    features = SectionFeatureConfig.from_dict(dataclasses.asdict(features))  # re-validate
    model = dataclasses.replace(
        config.model,
        audio_sections=features.num_sections,
        audio_bins=features.num_bins,
        **{f: getattr(args, a) for a, f in _MODEL.items() if getattr(args, a) is not None},
    )
    run = {name: getattr(args, name) for name in _RUN if getattr(args, name) is not None}
    if args.reranker_epochs is not None:
        if args.reranker_epochs < 0:
            raise UsageError(f"--reranker-epochs must be >= 0, got {args.reranker_epochs}")
        base = config.reranker or RerankerTrainConfig()
        run["reranker"] = (
            dataclasses.replace(base, epochs=args.reranker_epochs) if args.reranker_epochs else None
        )
    augment = AugmentConfig() if args.no_augment else config.augment
    augment = dataclasses.replace(
        augment, **{name: getattr(args, name) for name in _AUGMENT if getattr(args, name) is not None}
    )
    augment.check()
    config = dataclasses.replace(
        config, features=features, model=model, augment=augment, progress=not args.no_progress, **run
    )
    if args.utterance_embedding and args.reranker_epochs == 0:
        raise UsageError("--utterance-embedding is the scorer's: it cannot go with --reranker-epochs 0")
    if args.utterance_embedding is not None:
        config = with_utterance_embedding(config, args.utterance_embedding)
    if args.scorer_labels is not None:
        config = with_scorer_labels(config, args.scorer_labels)
    return config


def handler(args: argparse.Namespace) -> int:
    import torch

    from sound2image.training.transformer import train_transformer
    from sound2image.transformer.reranker import RERANKER_DIR, read_scorer_record

    if args.threads:
        torch.set_num_threads(args.threads)
    config = build_config(args)
    result = train_transformer(config)
    for problem in result.problems:
        print(f"skipped: {problem}")
    val = f"{result.val_bpp:.3f}" if result.val_bpp is not None else "n/a"
    print(
        f"trained {result.steps} steps in {result.elapsed_s / 60:.1f} min; "
        f"train loss {result.train_loss:.4f}, "
        f"validation {val} bits/pixel"
    )
    print(
        f"model: {result.model_dir}  (sound2image generate --model transformer:{result.model_dir} AUDIO...)"
    )
    scorer = result.model_dir / RERANKER_DIR
    if (scorer / "config.json").is_file():
        last = read_scorer_record(scorer)["history"][-1]
        report = ", ".join(f"{k} {v:.3f}" for k, v in last.items() if k.startswith("val_"))
        print(f"best-of-N scorer: {scorer} ({report}); use generate ... --candidates N")
    return 0
