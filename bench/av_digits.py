"""av-digits end to end: train the Image Transformer on spoken digits, judge its images with a CNN.

Run by hand (it takes up to --max-minutes of training plus a few minutes):

    python bench/av_digits.py --max-minutes 30 --run-dir /tmp/s2i-av-digits

1. Scan ../shared/data/av-digits and split it 90/10 with ``split_pairs`` (seed 42).
2. Train the digit classifier on the *training* images; report its accuracy on the held-out real images.
3. Train the Image Transformer (preset ``av-digits``) under a hard wall-clock budget.
4. Generate one image per validation recording (with --candidates N: the best of N draws, ranked by the
   run's own label-free audio-image scorer); AIC = fraction the classifier labels with the spoken digit.
5. Write the numbers to bench/results/av_digits.txt and a sample grid to bench/results/av_digits_grid.png.

Unseen speakers (``--folds N``): leave-one-speaker-out over the speakers of pairs.csv (sorted by name; the
first N folds, all 5 for the reported numbers). Each fold trains the classifier and the Image Transformer
on the other speakers' pairs (``split_by_column(pairs, "speaker", held_out)``, the same split as
``train transformer --split-by speaker --holdout NAME``) under the same --max-minutes, then judges the
held-out speaker's recordings (all 500, or --limit-val of them, round-robin over the digits):

* best-of-N AIC: share of recordings whose kept image (the best of --candidates draws, ranked by the
  run's label-free scorer) the classifier labels with the spoken digit;
* single-draw AIC: the same for candidate 0 alone (seeded with --seed: what ``--candidates 1`` draws);
* scorer label match: for each held-out recording, the held-out real image (among those of the judged
  recordings) its scorer ranks highest shows the spoken digit (chance: about 10 %): best-of-N can only
  help when this is high on an unseen voice;
* oracle: at least one of the N draws is labelled right (what a perfect scorer could reach);
* with --adapt-scorer, ``adapted`` and ``scorer*``: best-of-N and the scorer's label match again, the same
  draws ranked by a copy of the scorer whose audio batch-norm statistics come from the judged held-out
  recordings themselves (AdaBN speaker adaptation, no labels; a paired comparison with the plain scorer).

The table gives each fold, the mean and the worst fold; --known-split adds the known-speaker row (the
90/10 grouped split, as without --folds) under the same settings, and the exact commands are written
with the numbers:

    python bench/av_digits.py --folds 5 --known-split --candidates 8 --max-minutes 30 \
        --preset av-digits-robust --run-dir /tmp/s2i-loso --tag av_digits
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("SOUND2IMAGE_SHARED", ROOT.parent / "shared")) / "data" / "av-digits"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--run-dir", default="/tmp/s2i-av-digits")
    parser.add_argument("--max-minutes", type=float, default=30.0)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--epochs", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--d-model", type=int, default=None)
    parser.add_argument("--decoder-layers", type=int, default=None)
    parser.add_argument("--encoder-layers", type=int, default=None)
    parser.add_argument("--warmup-steps", type=int, default=None)
    parser.add_argument("--pixel-positions", choices=("1d", "2d"), default=None)
    parser.add_argument("--min-lr", type=float, default=None)
    parser.add_argument("--train-seed", type=int, default=None, help="training seed (default 42)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-train", action="store_true", help="reuse the model in --run-dir/model")
    parser.add_argument("--classifier", default=None, help="reuse a saved classifier directory")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for training")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--guidance-scale", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--candidates",
        type=int,
        default=1,
        help="best-of-N: draw N images per recording, keep the one the run's own scorer ranks first",
    )
    parser.add_argument(
        "--tune", action="store_true", help="pick temperature/guidance on training recordings"
    )
    parser.add_argument(
        "--tune-per-digit", type=int, default=5, help="training recordings per digit for --tune"
    )
    parser.add_argument("--limit-val", type=int, default=None, help="judge only the first N (smoke tests)")
    parser.add_argument("--gen-batch", type=int, default=125)
    parser.add_argument("--results", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--tag", default="av_digits", help="name of the results files")
    parser.add_argument(
        "--folds",
        type=int,
        default=0,
        help="leave-one-speaker-out: run the first N folds (speakers sorted by name); 0: the 90/10 split",
    )
    parser.add_argument("--preset", default="av-digits", help="training preset (av-digits, av-digits-robust)")
    parser.add_argument("--no-augment", action="store_true", help="train without the preset's augmentation")
    parser.add_argument(
        "--utterance-embedding",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="condition the decoder on the scorer's audio embedding (as train --utterance-embedding)",
    )
    parser.add_argument(
        "--scorer-labels",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the scorer counts pairs that share a digit as matches (as train --scorer-labels)",
    )
    parser.add_argument(
        "--decoder-dtype",
        choices=("float32", "float16", "bfloat16"),  # sound2image.devices.DECODER_DTYPES
        default="float32",
        help="sample with the decoder's weights in this dtype (ImageTransformer.half_decoder, "
        "generate --decoder-dtype)",
    )
    parser.add_argument(
        "--adapt-scorer",
        action="store_true",
        help="also rank the same draws with the scorer's audio batch-norm statistics re-estimated on the "
        "held-out recordings (AdaBN: speaker adaptation without labels; bench/speaker_probe.py --adapt): "
        "extra columns best_adapted / scorer_adapted, paired with best / scorer",
    )
    parser.add_argument("--column", default="speaker", help="manifest column the folds hold out")
    parser.add_argument(
        "--reranker-epochs",
        type=int,
        default=None,
        help="scorer epochs (default: the preset's; fewer for smoke runs)",
    )
    parser.add_argument(
        "--known-split", action="store_true", help="with --folds: add the known-speaker (90/10) row"
    )
    parser.add_argument(
        "--holdouts",
        nargs="*",
        default=None,
        help="run these held-out values only (none: just --known-split), e.g. in two processes side by "
        "side, one core each; every run also writes <tag>.json for --merge",
    )
    parser.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="JSON",
        help="combine the <tag>.json files of separate --folds runs into one table (<results>/<tag>.txt)",
    )
    return parser.parse_args()


def main() -> int:
    from sound2image.data import scan_pairs, split_pairs
    from sound2image.metrics import (
        ImageClassifier,
        audio_image_consistency,
        load_labelled_images,
    )
    from sound2image.outputs import make_grid
    from sound2image.training.classifier import train_classifier
    from sound2image.training.transformer import load_pair_tensors, single_thread, train_transformer
    from sound2image.transformer import ImageTransformer, SamplingConfig, generate, tokens_to_images
    from sound2image.transformer.reranker import RERANKER_DIR, AudioImageScorer, generate_best_of

    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.merge:
        return merge_runs(args)
    if args.folds or args.holdouts is not None:
        return run_folds(args)
    run_dir = Path(args.run_dir)
    lines = [f"command: python {' '.join(sys.argv)}", f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}"]
    lines.append(f"torch threads: {torch.get_num_threads()}, cpu count: {os.cpu_count()}")
    lines.append(f"load average at start: {os.getloadavg()}")

    # 1. Split.
    pairs = scan_pairs(args.data).pairs
    split = split_pairs(pairs, 0.1, 42)
    lines.append(f"pairs: {len(pairs)} (train {len(split.train)}, val {len(split.val)}), split_pairs seed 42")

    # 2. The judge.
    t0 = time.monotonic()
    train_x, train_y, _ = load_labelled_images(split.train, 32)
    val_x, val_y, _ = load_labelled_images(split.val, 32)
    if args.classifier:
        judge = ImageClassifier.from_pretrained(args.classifier)
    else:
        judge = train_classifier(train_x, train_y)
        judge.save_pretrained(run_dir / "classifier")
    judge_acc = judge.accuracy(val_x, val_y)
    lines.append(
        f"classifier: {args.classifier or 'trained'} on {len(train_y)} training images "
        f"({time.monotonic() - t0:.0f} s); "
        f"accuracy on {len(val_y)} held-out real images: {judge_acc:.4f}"
    )

    # 3. The Image Transformer.
    config = train_config(args, run_dir, None, [])  # the preset with this bench's overrides
    if not args.skip_train:
        t0 = time.monotonic()
        result = train_transformer(config)
        wall = time.monotonic() - t0
        lines.append(f"transformer: {config.model}")
        lines.append(
            f"training: {result.steps} steps (batch {config.batch_size}), "
            f"{result.elapsed_s / 60:.1f} min in the "
            f"loop, {wall / 60:.1f} min wall including feature pre-computation and evaluations"
        )
        last = result.history[-1]
        lines.append(f"final train loss {result.train_loss:.4f} nats ({last['train_bpp']:.3f} bits/pixel), "
                     f"val {last.get('val_bpp', float('nan')):.3f} bits/pixel")  # fmt: skip
        for entry in result.history:
            lines.append(f"  history: {entry}")
        lines.append(f"load average after training: {os.getloadavg()}")
    model = ImageTransformer.from_pretrained(run_dir / "model", map_location=args.device)
    if args.decoder_dtype != "float32":
        model.half_decoder(args.decoder_dtype)
    scorer = None
    if (run_dir / "model" / RERANKER_DIR).is_dir():
        scorer = AudioImageScorer.from_pretrained(run_dir / "model" / RERANKER_DIR, args.device)
        scorer_record = scorer.saved_metadata
        lines.append(
            f"reranker (contrastive audio-image scorer, no labels): {scorer_record['train_seconds']:.0f} s "
            f"of the budget; last epoch {scorer_record['history'][-1]}"
        )
    if args.candidates > 1 and scorer is None:
        sys.exit(f"--candidates {args.candidates}: {run_dir / 'model'} has no reranker")
    extra: dict[str, float] = {}

    def judge_images(
        data, sampling: SamplingConfig, candidates: int = 1
    ) -> tuple[np.ndarray, list[str], float]:
        labels = [str(label) for label in data.labels]
        chunks, drawn = [], []
        with single_thread(torch.device(args.device)):
            for start in range(0, len(data), args.gen_batch):
                features = data.features[start : start + args.gen_batch].to(args.device)
                # Every recording's image is seeded with --seed on its own generator, as the library runner
                # (transformer.runner.iter_images) and `sound2image evaluate --seeds SEED` seed it, so this
                # bench and evaluate judge the same pixels (batching does not change them).
                seeds = [sampling.seed] * len(features)
                if candidates == 1:
                    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
                    chunks.append(generate(model, features, sampling, generator=generators))
                    continue
                best = generate_best_of(model, scorer, features, sampling, candidates, seeds=seeds)
                chunks.append(best.tokens)
                drawn.append(best.drawn)
        images = tokens_to_images(torch.cat(chunks), 32).numpy()
        predicted = judge.predict(images)
        if drawn:  # every candidate judged too: the single-draw AIC and the best a perfect reranker could do
            every = torch.cat(drawn)  # (N, K, L)
            hits = np.array(judge.predict(tokens_to_images(every.flatten(0, 1), 32).numpy()))
            hits = hits.reshape(every.shape[0], every.shape[1]) == np.array(labels)[:, None]
            extra.update(
                single=float(hits[:, 0].mean()), mean=float(hits.mean()), oracle=float(hits.any(1).mean())
            )
        return images, predicted, audio_image_consistency(predicted, labels)

    sampling = SamplingConfig(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                              guidance_scale=args.guidance_scale, seed=args.seed)  # fmt: skip

    # 4a. Optionally choose temperature and guidance on *training* recordings (never on validation).
    if args.tune:
        tune_pairs = [
            p
            for d in range(10)
            for p in [q for q in split.train if str(q.label) == str(d)][: args.tune_per_digit]
        ]
        tune, _ = load_pair_tensors(tune_pairs, config.features, 32)
        best = None
        for temperature in (0.8, 1.0):
            for guidance in (2.0, 3.0, 4.5, 6.0):
                candidate = dataclasses.replace(sampling, temperature=temperature, guidance_scale=guidance)
                score = judge_images(tune, candidate)[2]
                lines.append(
                    f"tuning on {len(tune)} training recordings: T={temperature} g={guidance} AIC {score:.3f}"
                )
                if best is None or score > best[0]:
                    best = (score, candidate)
        sampling = best[1]
        lines.append(f"chosen on training recordings: temperature {sampling.temperature}, "
                     f"guidance {sampling.guidance_scale}")  # fmt: skip

    # 4b. Generate from every validation recording and judge.
    val, _ = load_pair_tensors(split.val[: args.limit_val], config.features, 32)
    t0 = time.monotonic()
    images, predicted, aic = judge_images(val, sampling, args.candidates)
    gen_s = time.monotonic() - t0
    lines.append(f"sampling: {sampling} ({len(val)} images in {gen_s:.0f} s, cached)")
    if args.candidates > 1:
        lines.append(
            f"best of {args.candidates} draws per recording, ranked by the run's scorer: "
            f"single draw (candidate 0) AIC {extra['single']:.4f}, mean over all draws {extra['mean']:.4f}, "
            f"at least one draw right {extra['oracle']:.4f}"
        )
    hits = sum(p == str(t) for p, t in zip(predicted, val.labels, strict=True))
    lines.append(
        "AIC (classifier labels the generated image with the spoken digit): "
        f"{aic:.4f} ({hits}/{len(predicted)})"
    )
    confusion = np.zeros((10, 10), dtype=int)
    for p, t in zip(predicted, val.labels, strict=True):
        confusion[int(t), int(p)] += 1
    lines.append("confusion (rows: spoken digit, columns: classified as):")
    lines += ["  " + " ".join(f"{v:3d}" for v in row) for row in confusion]

    # 5. Results.
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    order = sorted(range(len(val)), key=lambda i: (str(val.labels[i]), i))
    picks = [i for d in range(10) for i in [j for j in order if str(val.labels[j]) == str(d)][:2]]
    tiles = [Image.fromarray(images[i]) for i in picks]
    make_grid(tiles, columns=10, labels=[f"{val.labels[i]}->{predicted[i]}" for i in picks], padding=2).save(
        results / f"{args.tag}_grid.png"
    )
    lines.append(f"grid: {results / (args.tag + '_grid.png')} (two per digit; label spoken->classified)")
    text = "\n".join(lines) + "\n"
    (results / f"{args.tag}.txt").write_text(text)
    print(text)
    return 0


# ------------------------------------------------------------------- leave one speaker out


def train_config(args: argparse.Namespace, run_dir: Path, split_by: str | None, holdout: list[str]):
    """The preset with this bench's overrides (the same flags as the 90/10 path)."""
    from sound2image.training.augment import AugmentConfig
    from sound2image.training.transformer import preset, with_scorer_labels, with_utterance_embedding

    config = preset(args.preset, args.data, str(run_dir))
    overrides = {"max_minutes": args.max_minutes, "device": args.device, "progress": False}
    for name in ("max_steps", "epochs", "batch_size", "lr", "warmup_steps", "min_lr"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.train_seed is not None:
        overrides["seed"] = args.train_seed
    if args.no_augment:
        overrides["augment"] = AugmentConfig()  # every option off, as train --no-augment
    if split_by is not None:
        overrides.update(split_by=split_by, holdout=holdout)
    if args.reranker_epochs is not None and config.reranker is not None:
        overrides["reranker"] = dataclasses.replace(config.reranker, epochs=args.reranker_epochs)
    model = {}
    for arg, name in (
        ("pixel_positions", "pixel_positions"),
        ("d_model", "d_model"),
        ("decoder_layers", "n_decoder_layers"),
        ("encoder_layers", "n_encoder_layers"),
    ):
        if getattr(args, arg) is not None:
            model[name] = getattr(args, arg)
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, **model), **overrides)
    if args.utterance_embedding is not None:
        config = with_utterance_embedding(config, args.utterance_embedding)
    if args.scorer_labels is not None:
        config = with_scorer_labels(config, args.scorer_labels)
    return config


def round_robin(pairs: list, limit: int | None) -> list:
    """Up to ``limit`` pairs taken one digit at a time (digits in order, each in key order), so a small
    smoke run still covers every digit; all of them, in key order, without a limit."""
    pairs = sorted(pairs, key=lambda pair: pair.key)
    if limit is None or limit >= len(pairs):
        return pairs
    queues: dict[str, list] = {}
    for pair in pairs:
        queues.setdefault(str(pair.label), []).append(pair)
    picked: list = []
    while len(picked) < limit:
        for label in sorted(queues):
            if queues[label] and len(picked) < limit:
                picked.append(queues[label].pop(0))
    return sorted(picked, key=lambda pair: pair.key)


def run_split(args: argparse.Namespace, name: str, split, run_dir: Path, split_by, holdout) -> dict:
    """Train the judge and the model on ``split.train``, judge ``split.val``; the row of the table."""
    from sound2image.metrics import ImageClassifier, load_labelled_images
    from sound2image.training.classifier import train_classifier
    from sound2image.training.reranker import evaluate_scorer
    from sound2image.training.transformer import load_pair_tensors, single_thread, train_transformer
    from sound2image.transformer import ImageTransformer, SamplingConfig, tokens_to_images
    from sound2image.transformer.reranker import (
        RERANKER_DIR,
        AudioImageScorer,
        generate_best_of,
        score_candidates,
    )

    row: dict = {"name": name}
    val_pairs = round_robin(split.val, args.limit_val)
    t0 = time.monotonic()
    if args.classifier:
        judge = ImageClassifier.from_pretrained(args.classifier)
    else:
        train_x, train_y, _ = load_labelled_images(split.train, 32)
        judge = train_classifier(train_x, train_y)
        judge.save_pretrained(run_dir / "classifier")
    val_x, val_y, _ = load_labelled_images(val_pairs, 32)
    row.update(judge_real=judge.accuracy(val_x, val_y), judge_s=time.monotonic() - t0)
    config = train_config(args, run_dir, split_by, holdout)
    if not args.skip_train:
        result = train_transformer(config)
        row.update(steps=result.steps, minutes=result.elapsed_s / 60, val_bpp=result.val_bpp)
    model = ImageTransformer.from_pretrained(run_dir / "model", map_location=args.device)
    if args.decoder_dtype != "float32":
        model.half_decoder(args.decoder_dtype)
    scorer = AudioImageScorer.from_pretrained(run_dir / "model" / RERANKER_DIR, args.device)
    data, _ = load_pair_tensors(val_pairs, config.features, 32)
    labels = np.array([str(label) for label in data.labels])
    sampling = SamplingConfig(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                              guidance_scale=args.guidance_scale, seed=args.seed)  # fmt: skip
    t0 = time.monotonic()
    kept, drawn, chosen = [], [], []
    with single_thread(torch.device(args.device)):
        for start in range(0, len(data), args.gen_batch):
            features = data.features[start : start + args.gen_batch].to(args.device)
            best = generate_best_of(
                model, scorer, features, sampling, args.candidates, seeds=[args.seed] * len(features)
            )
            kept.append(best.tokens)
            drawn.append(best.drawn)
            chosen.append(best.chosen)
    every = torch.cat(drawn)  # (N, K, L)
    hits = np.array(judge.predict(tokens_to_images(every.flatten(0, 1), 32).numpy()))
    hits = hits.reshape(every.shape[0], every.shape[1]) == labels[:, None]
    kept_hits = np.array(judge.predict(tokens_to_images(torch.cat(kept), 32).numpy())) == labels
    with torch.no_grad():
        images = data.pixels.reshape(-1, 32, 32)
        match = evaluate_scorer(scorer, data.features, images, torch.device(args.device), list(labels))
    match = match["val_label_match"]
    row.update(
        n=len(labels),
        best=float(kept_hits.mean()),
        single=float(hits[:, 0].mean()),
        oracle=float(hits.any(1).mean()),
        scorer_match=float(match),
        gen_s=time.monotonic() - t0,
    )
    if args.adapt_scorer:  # the same draws, ranked by the scorer adapted to the held-out voice
        unadapted = score_candidates(scorer, data.features, every).argmax(dim=1)
        if not torch.equal(unadapted, torch.cat(chosen)):  # the re-ranking sees what it should
            raise SystemExit("--adapt-scorer: re-ranking the draws does not reproduce the scorer's picks")
        adapted = adapt_audio_batch_norm(scorer, data.features.to(args.device))
        picked = score_candidates(adapted, data.features, every).argmax(dim=1).numpy()  # (N,)
        row.update(
            best_adapted=float(hits[np.arange(len(labels)), picked].mean()),
            scorer_adapted=float(
                evaluate_scorer(adapted, data.features, images, torch.device(args.device), list(labels))[
                    "val_label_match"
                ]
            ),
        )
    return row


def adapt_audio_batch_norm(scorer, features):  # -> AudioImageScorer
    """A copy of ``scorer`` whose audio tower normalises with the batch-norm statistics of ``features``
    (B, S, F) alone, e.g. every recording of one new speaker (AdaBN: Li et al. 2016, "Revisiting Batch
    Normalization for Practical Domain Adaptation"); no labels are used."""
    import copy

    import torch

    adapted = copy.deepcopy(scorer).eval()
    for module in adapted.audio.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average: exactly these recordings' statistics
    adapted.audio.train()
    with torch.no_grad():
        adapted.embed_audio(features)
    return adapted.eval()


def run_folds(args: argparse.Namespace) -> int:
    """Leave-one-speaker-out (see the module docstring); writes ``<results>/<tag>.txt`` and
    ``<results>/<tag>.json`` (the rows, for ``--merge``)."""
    import json

    from sound2image.data import scan_pairs, split_pairs
    from sound2image.data.split import column_value, split_by_column

    run_root = Path(args.run_dir)
    pairs = scan_pairs(args.data).pairs
    groups = sorted({value for pair in pairs if (value := column_value(pair, args.column)) is not None})
    folds = groups[: args.folds] if args.holdouts is None else list(args.holdouts)
    unknown = sorted(set(folds) - set(groups))
    if unknown:
        sys.exit(f"--holdouts: no {args.column} {', '.join(unknown)} in {args.data} ({', '.join(groups)})")
    header = [
        f"command: python {' '.join(sys.argv)}",
        f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"torch threads: {torch.get_num_threads()}, cpu count: {os.cpu_count()}, "
        f"load average at start: {os.getloadavg()}",
        f"preset {args.preset}; {args.max_minutes} min per training run (scorer included); best of "
        f"{args.candidates}; seed {args.seed}; temperature {args.temperature}, guidance "
        f"{args.guidance_scale}; held-out recordings judged per fold: {args.limit_val or 'all'}"
        + ("" if args.decoder_dtype == "float32" else f"; {args.decoder_dtype} decoder weights"),
        f"{len(pairs)} pairs; {args.column}s: {', '.join(groups)}; folds run: {', '.join(folds) or '-'}",
    ]
    print("\n".join(header), flush=True)
    rows = []
    for held in folds:
        split = split_by_column(pairs, args.column, held)
        rows.append(run_split(args, held, split, run_root / f"fold-{held}", args.column, [held]))
        print(format_row(rows[-1]), flush=True)
    known = None
    if args.known_split:
        known = run_split(args, "known (90/10)", split_pairs(pairs, 0.1, 42), run_root / "known", None, [])
        print(format_row(known), flush=True)
    header.append(f"load average at end: {os.getloadavg()}")
    record = {"header": header, "rows": rows, "known": known, "commands": fold_commands(args, folds),
              "candidates": args.candidates}  # fmt: skip
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{args.tag}.json").write_text(json.dumps(record, indent=1))
    return write_report([record], args)


def merge_runs(args: argparse.Namespace) -> int:
    """One table from several ``--folds``/``--holdouts`` runs' JSON records (``--merge``)."""
    import json

    return write_report([json.loads(Path(path).read_text()) for path in args.merge], args)


def write_report(records: list[dict], args: argparse.Namespace) -> int:
    """``<results>/<tag>.txt``: each run's header, then one table of all their rows, then the commands."""
    text = "\n".join(report_lines(records, args.candidates)) + "\n"
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{args.tag}.txt").write_text(text)
    print(text)
    return 0


def report_lines(records: list[dict], default_candidates: int) -> list[str]:
    """Each run's header, then the combined table, then every run's commands."""
    counts = {record.get("candidates", default_candidates) for record in records}
    if len(counts) > 1:
        raise SystemExit(f"--merge: the runs drew different numbers of candidates ({sorted(counts)})")
    candidates = counts.pop()
    lines: list[str] = []
    for number, record in enumerate(records, 1):
        title = f"run {number}:" if len(records) > 1 else "run:"
        lines += [title, *(f"  {line}" for line in record["header"])]
    rows = [row for record in records for row in record["rows"]]
    knowns = [record["known"] for record in records if record.get("known")]
    if len(knowns) > 1:
        raise SystemExit("--merge: more than one run has a known-speaker row")
    known = knowns[0] if knowns else None
    lines += ["", *table(rows, known, candidates), "", "commands (the same runs, one fold):"]
    for record in records:
        lines += record["commands"]
    return lines


def fold_commands(args: argparse.Namespace, folds: list[str]) -> list[str]:
    """The library commands that train and evaluate each fold as this bench does."""
    data, out = args.data, Path(args.run_dir)

    def judge(held: str) -> str:
        return args.classifier or f"{out}/fold-{held}/classifier"

    extra = "" if args.reranker_epochs is None else f" --reranker-epochs {args.reranker_epochs}"
    extra += "" if args.train_seed is None else f" --seed {args.train_seed}"
    extra += "" if args.threads is None else f" --threads {args.threads}"
    extra += " --no-augment" if args.no_augment else ""
    if args.utterance_embedding is not None:
        extra += " --utterance-embedding" if args.utterance_embedding else " --no-utterance-embedding"
    if args.scorer_labels is not None:
        extra += " --scorer-labels" if args.scorer_labels else " --no-scorer-labels"
    lines = []
    for held in folds:
        lines += [
            f"  sound2image train transformer --data {data} --preset {args.preset} --split-by {args.column} "
            f"--holdout {held} --max-minutes {args.max_minutes} --out {out}/fold-{held}{extra}",
            f"  sound2image evaluate --data {data} --systems transformer:{out}/fold-{held}/model --split-by "
            f"{args.column} --holdout {held} --candidates {args.candidates} --seeds {args.seed} "
            f"--temperature {args.temperature} --guidance-scale {args.guidance_scale} "
            f"{'' if args.decoder_dtype == 'float32' else f'--decoder-dtype {args.decoder_dtype} '}"
            f"{'' if args.limit_val is None else f'--max-items {args.limit_val} '}"
            f"--classifier {judge(held)} --features classifier:{judge(held)} "
            f"--device cpu --out {out}/eval-{held}",
        ]
    return lines


def format_row(row: dict) -> str:
    bpp = row.get("val_bpp")
    bpp_text = "-" if bpp is None else f"{bpp:.3f}"
    adapted = ""
    if "best_adapted" in row:  # --adapt-scorer
        adapted = f" {row['best_adapted']:9.4f} {row['scorer_adapted']:8.4f}"
    return (
        f"{row['name']:>14} {row['n']:5d} {row.get('steps', '-'):>6} {bpp_text:>7} "
        f"{row['best']:9.4f} {row['single']:9.4f} {row['oracle']:8.4f} {row['scorer_match']:8.4f} "
        f"{row['judge_real']:8.4f}{adapted}"
    )


def table(rows: list[dict], known: dict | None, candidates: int) -> list[str]:
    """The fold rows, then mean and worst over folds (and the known-speaker row)."""
    header = (
        f"{'held out':>14} {'n':>5} {'steps':>6} {'val bpp':>7} {f'best-of-{candidates}':>9} "
        f"{'single':>9} {'oracle':>8} {'scorer':>8} {'judge':>8}"
    )
    keys = ["best", "single", "oracle", "scorer_match", "judge_real"]
    if rows and all("best_adapted" in row for row in rows):
        header += f" {'adapted':>9} {'scorer*':>8}"
        keys += ["best_adapted", "scorer_adapted"]
    out = [header, *(format_row(row) for row in rows)]
    if rows:
        for name, pick in (("mean", np.mean), ("worst", np.min)):
            summary = {"name": name, "n": sum(row["n"] for row in rows)}
            for key in keys:
                summary[key] = float(pick([row[key] for row in rows]))
            out.append(format_row(summary))
    if known is not None:
        out.append(format_row(known))
    out.append(
        "columns: best-of-N and single-draw AIC, oracle (some draw right), scorer = its label match on the "
        "held-out real images, judge = the classifier's accuracy on the held-out real images"
        + (
            "; adapted, scorer* = the same two with the scorer's audio batch-norm statistics taken from "
            "the held-out recordings (--adapt-scorer, AdaBN), the same draws"
            if "best_adapted" in keys
            else ""
        )
    )
    return out


if __name__ == "__main__":
    sys.exit(main())
