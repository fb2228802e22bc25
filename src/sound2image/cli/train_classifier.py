"""`sound2image train classifier`: a small CNN judge trained on a dataset's own labelled images."""

from __future__ import annotations

import argparse

EPILOG = """Examples:
  sound2image train classifier --data ../shared/data/av-digits --out runs/digit-judge
  sound2image train classifier --data ADVANCE/ --out runs/scene-judge --epochs 15

It trains on the training side of the same 90/10 split the trainers use (split_pairs, seed 42) and
prints its accuracy on the held-out real images: the judge behind AIC (the fraction of generated images
classified as their audio's label). Images are 32x32 grayscale, as the Image Transformer makes them.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `train classifier` to the `train` group."""
    parser = subparsers.add_parser(
        "classifier",
        help="train a small image classifier (the judge for AIC)",
        description="Train a small CNN on the labelled images of a dataset's training split.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", required=True, help="dataset folder or manifest with labels")
    parser.add_argument(
        "--out", "--output", "-o", required=True, dest="out", help="directory for the classifier"
    )
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing classifier in --out")
    parser.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from sound2image.data import scan_pairs, split_pairs
    from sound2image.errors import DataError, OutputExistsError
    from sound2image.metrics import ClassifierConfig, load_labelled_images
    from sound2image.metrics.classifier import CONFIG_NAME
    from sound2image.training.classifier import train_classifier

    out = Path(args.out)
    if (out / CONFIG_NAME).exists() and not args.overwrite:
        raise OutputExistsError(f"{out / CONFIG_NAME}: already exists (pass --overwrite to replace it)")
    scan = scan_pairs(args.data)
    split = split_pairs(scan.pairs, args.val_fraction, args.seed)
    train_x, train_y, problems = load_labelled_images(split.train, args.image_size)
    val_x, val_y, val_problems = load_labelled_images(split.val, args.image_size)
    for problem in [*scan.problems, *problems, *val_problems]:
        print(f"skipped: {problem}")
    if len(set(train_y)) < 2:
        raise DataError(
            f"{args.data}: a classifier needs at least 2 labelled classes, found {len(set(train_y))}"
        )
    config = ClassifierConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    classifier = train_classifier(train_x, train_y, config, progress=True)
    accuracy = classifier.accuracy(val_x, val_y) if val_y else float("nan")
    classifier.save_pretrained(out)
    summary = {"train_images": len(train_y), "val_images": len(val_y), "val_accuracy": accuracy}
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    print(
        f"classifier: {len(classifier.config.classes)} classes, {len(train_y)} training images; "
        f"accuracy on {len(val_y)} held-out real images: {accuracy:.4f}"
    )
    print(f"saved to {out}")
    return 0
