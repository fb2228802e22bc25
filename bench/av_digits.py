"""av-digits end to end: train the Image Transformer on spoken digits, judge its images with a CNN.

Run by hand (it takes up to --max-minutes of training plus a few minutes):

    python bench/av_digits.py --max-minutes 30 --run-dir /tmp/s2i-av-digits

1. Scan ../shared/data/av-digits and split it 90/10 with ``split_pairs`` (seed 42).
2. Train the digit classifier on the *training* images; report its accuracy on the held-out real images.
3. Train the Image Transformer (preset ``av-digits``) under a hard wall-clock budget.
4. Generate one image per validation recording (with --candidates N: the best of N draws, ranked by the
   run's own label-free audio-image scorer); AIC = fraction the classifier labels with the spoken digit.
5. Write the numbers to bench/results/av_digits.txt and a sample grid to bench/results/av_digits_grid.png.
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
    from sound2image.training.transformer import load_pair_tensors, preset, single_thread, train_transformer
    from sound2image.transformer import ImageTransformer, SamplingConfig, generate, tokens_to_images
    from sound2image.transformer.reranker import RERANKER_DIR, AudioImageScorer, generate_best_of

    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
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
    config = preset("av-digits", args.data, str(run_dir))
    overrides = {"max_minutes": args.max_minutes, "device": args.device, "progress": False}
    for name in ("max_steps", "epochs", "batch_size", "lr", "warmup_steps", "min_lr"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.train_seed is not None:
        overrides["seed"] = args.train_seed
    model_overrides = {}
    for arg, name in (
        ("pixel_positions", "pixel_positions"),
        ("d_model", "d_model"),
        ("decoder_layers", "n_decoder_layers"),
        ("encoder_layers", "n_encoder_layers"),
    ):
        if getattr(args, arg) is not None:
            model_overrides[name] = getattr(args, arg)
    config = dataclasses.replace(
        config, model=dataclasses.replace(config.model, **model_overrides), **overrides
    )
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


if __name__ == "__main__":
    sys.exit(main())
