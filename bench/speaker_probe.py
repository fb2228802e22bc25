"""How well does an audio representation name the digit of a voice it has never heard? (issue 15)

A fast stand-in for the whole leave-one-speaker-out run of bench/av_digits.py (about 37 minutes a fold):
the best-of-N scorer's label match on a new voice caps both the reranking and the utterance embedding
(bench/results/av_digits.txt), and it follows an audio-only digit classifier built on the same tower.
For every held-out speaker of av-digits this trains, on the other speakers' recordings:

* ``tower``: the scorer's audio tower (:class:`sound2image.modules.towers.AudioTower`, the preset's
  shape) plus a cosine-softmax head over the ten digits (scale 10), cross-entropy, AdamW, cosine
  decay, random time rolls of up to 5 sections: the scorer's recipe with the image side replaced by
  the label;
* ``linear``: multinomial logistic regression (L-BFGS, L2 ``--linear-decay``) on the flattened
  standardised features: how much a linear probe hears.

and reports accuracy on all the held-out speaker's recordings. Variants of the tower (issue 15 notes):

* ``--adapt N``: speaker adaptation at test time (AdaBN, Li et al. 2016, "Revisiting Batch Normalization
  for Practical Domain Adaptation"): the tower's batch-norm statistics are re-estimated on the held-out
  speaker's own recordings, N at a time (random groups of N; ``--adapt 0`` = all of them at once), no
  labels used; it needs several recordings of the new voice, so it is transductive;
* ``--ensemble K``: K towers (seeds ``100 * seed + k``) with their class probabilities summed;
* ``--channels C``: the tower's width (the preset's scorer: 128);
* ``--mixup A``: mixup of the standardised features and the targets, weights ~ Beta(A, A).

``--tta F1 F2 ...`` also scores the same
trained tower with test-time speed perturbation: the class probabilities averaged over the clip played at
1.0 and at each factor (``sound2image.training.augment.change_speed``: pitch, formants and duration
together, a different vocal-tract length). The two columns come from one trained model, so their
difference is paired (no seed noise in it).

    python bench/speaker_probe.py --seeds 0 1 --tta 0.9 1.1 --threads 2

Prints one row per fold and seed, then the means; writes nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
DEFAULT_DATA = Path(os.environ.get("SOUND2IMAGE_SHARED", ROOT.parent / "shared")) / "data" / "av-digits"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--preset", default="av-digits-robust", help="whose features and tower shape")
    parser.add_argument("--holdouts", nargs="*", default=None, help="speakers to hold out (default: all)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--tta", type=float, nargs="*", default=[], help="speed factors besides 1.0")
    parser.add_argument("--linear", action="store_true", help="also the linear probe")
    parser.add_argument("--linear-decay", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--adapt",
        type=int,
        default=None,
        metavar="N",
        help="re-estimate batch-norm statistics on the held-out speaker, N clips at a time (0: all)",
    )
    parser.add_argument(
        "--ensemble", type=int, default=1, help="towers per fold and seed, probabilities summed"
    )
    parser.add_argument(
        "--channels", type=int, default=None, help="tower width (default: the preset's scorer)"
    )
    parser.add_argument("--mixup", type=float, default=0.0, help="mixup Beta(A, A) while training (0: off)")
    return parser.parse_args()


def load(args: argparse.Namespace):
    """Features (N, S, F) at speed 1.0 and at each --tta factor, digit labels (N,), speakers (N,)."""
    from sound2image.audio.sections import section_spectra
    from sound2image.data import scan_pairs
    from sound2image.data.split import column_value
    from sound2image.training.augment import change_speed
    from sound2image.training.transformer import load_pair_tensors, preset

    config = preset(args.preset, args.data, "/nonexistent")
    scan = scan_pairs(args.data)
    data, problems = load_pair_tensors(scan.pairs, config.features, 32, keep_samples=True)
    if problems:
        raise SystemExit(f"{len(problems)} pairs failed: {problems[0]}")
    speakers = [column_value(pair, "speaker") for pair in scan.pairs]  # no pair failed: same order
    rate = config.features.sample_rate
    samples = data.samples.numpy()
    speeds = {1.0: data.features}
    for factor in args.tta:
        rows = [section_spectra(change_speed(clip, rate, factor), config.features) for clip in samples]
        speeds[factor] = torch.from_numpy(np.stack(rows))
    labels = torch.tensor([int(label) for label in data.labels])
    embed_dim = config.reranker.embed_dim if config.reranker else 64
    return speeds, labels, np.array(speakers), embed_dim


def train_tower(
    features: torch.Tensor, labels: torch.Tensor, seed: int, args: argparse.Namespace, embed_dim: int
):
    """The scorer's audio tower + a cosine head, trained on (N, S, F) features; returns probs(features)."""
    from sound2image.modules.towers import AudioTower
    from sound2image.transformer.reranker import RerankerConfig

    shape = RerankerConfig(audio_bins=features.shape[-1], embed_dim=embed_dim)
    if args.channels:
        shape = RerankerConfig(audio_bins=shape.audio_bins, embed_dim=embed_dim, audio_channels=args.channels)
    epochs = args.epochs
    mean, std = features.mean(dim=(0, 1)), features.std(dim=(0, 1)) + 1e-5
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    tower = AudioTower(shape.audio_bins, shape.audio_channels, shape.embed_dim)
    head = torch.nn.Linear(shape.embed_dim, 10, bias=False)
    optimizer = torch.optim.AdamW([*tower.parameters(), *head.parameters()], lr=2e-3, weight_decay=0.05)
    batch = 128
    steps_per_epoch = len(features) // batch
    total, step = epochs * steps_per_epoch, 0
    for _ in range(epochs):
        order = torch.randperm(len(features))
        for position in range(steps_per_epoch):
            index = order[position * batch : (position + 1) * batch]
            x = torch.roll((features[index] - mean) / std, int(rng.integers(-5, 6)), dims=1)  # (B, S, F)
            for group in optimizer.param_groups:
                group["lr"] = 2e-3 * 0.5 * (1 + np.cos(np.pi * step / total))
            targets = F.one_hot(labels[index], 10).float()  # (B, 10)
            if args.mixup:
                weight, partner = float(rng.beta(args.mixup, args.mixup)), torch.randperm(len(x))
                x = weight * x + (1 - weight) * x[partner]
                targets = weight * targets + (1 - weight) * targets[partner]
            logits = 10 * tower(x) @ F.normalize(head.weight, dim=-1).T  # (B, 10)
            loss = F.cross_entropy(logits, targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
    tower.eval()

    @torch.no_grad()
    def classify(x: torch.Tensor) -> torch.Tensor:
        return (10 * tower((x - mean) / std) @ F.normalize(head.weight, dim=-1).T).softmax(dim=-1)

    @torch.no_grad()
    def adapted(x: torch.Tensor) -> torch.Tensor:
        """AdaBN: each group's probabilities with the batch-norm statistics of that group alone."""
        trained = {name: value.clone() for name, value in tower.state_dict().items()}
        group = args.adapt or len(x)
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
        out = torch.empty(len(x), 10)
        for start in range(0, len(x), group):
            members = order[start : start + group]
            for module in tower.modules():
                if isinstance(module, torch.nn.BatchNorm1d):
                    module.reset_running_stats()
                    module.momentum = None  # cumulative average: exactly this group's statistics
            tower.train()
            tower((x[members] - mean) / std)
            tower.eval()
            out[members] = classify(x[members])
        tower.load_state_dict(trained)
        return out

    return classify if args.adapt is None else adapted


def linear_probe(train: torch.Tensor, labels: torch.Tensor, test: torch.Tensor, decay: float) -> torch.Tensor:
    """Logistic regression on flattened standardised features; predicted classes of ``test``."""
    x = train.flatten(1)
    mean, std = x.mean(dim=0), x.std(dim=0) + 1e-5
    x = (x - mean) / std
    weight = torch.zeros(x.shape[1], 10, requires_grad=True)
    bias = torch.zeros(10, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=300, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight + bias, labels) + decay * (weight**2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return (((test.flatten(1) - mean) / std) @ weight + bias).argmax(dim=1)


def accuracy(predicted: torch.Tensor, truth: torch.Tensor) -> float:
    return (predicted == truth).float().mean().item()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    speeds, labels, speakers, embed_dim = load(args)
    holdouts = args.holdouts or sorted(set(speakers))
    print(
        f"preset {args.preset}; {len(labels)} recordings; epochs {args.epochs}; tta speeds {args.tta}; "
        f"adapt {args.adapt}; ensemble {args.ensemble}; channels {args.channels or 'preset'}; "
        f"mixup {args.mixup}"
    )
    print("held out    seed  tower  tower+tta  linear   seconds")
    rows = []
    for held_out in holdouts:
        test = torch.from_numpy(speakers == held_out)
        train = ~test
        base = speeds[1.0]
        for seed in args.seeds:
            started = time.monotonic()
            plain = torch.zeros(int(test.sum()), 10)
            tta = torch.zeros_like(plain)
            for member in range(args.ensemble):
                member_seed = seed if args.ensemble == 1 else 100 * seed + member
                probabilities = train_tower(base[train], labels[train], member_seed, args, embed_dim)
                plain += probabilities(base[test])
                tta += torch.stack([probabilities(features[test]) for features in speeds.values()]).sum(0)
            truth = labels[test]
            row = [accuracy(plain.argmax(1), truth), accuracy(tta.argmax(1), truth)]
            if args.linear:
                predicted = linear_probe(base[train], labels[train], base[test], args.linear_decay)
                row.append(accuracy(predicted, truth))
            else:
                row.append(float("nan"))
            rows.append(row)
            print(
                f"{held_out:>10} {seed:>5} {row[0]:6.3f} {row[1]:10.3f} {row[2]:7.3f} "
                f"{time.monotonic() - started:9.0f}",
                flush=True,
            )
    mean = np.nanmean(np.array(rows), axis=0) if rows else [float("nan")] * 3
    print(f"{'mean':>10} {'':>5} {mean[0]:6.3f} {mean[1]:10.3f} {mean[2]:7.3f}")


if __name__ == "__main__":
    main()
