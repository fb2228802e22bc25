"""Score generated images against a paired dataset: FID, KID, AIC, AIC@k, AIS, IIS, each with a bootstrap
interval over clips, plus the dataset's own ceiling (real pairs) and floor (shuffled pairs).

:func:`score` returns the ``metrics``, ``reference``, ``metric_notes`` and ``per_class_aic`` parts of
``results.json``. Its inputs are the dataset items, the PNG files each system generated for them (one per
seed) and the :class:`Judges` (feature extractor, classifier, pairing spaces). Every metric is an
:class:`~sound2image.metrics.Estimate`: the value on all clips and a percentile-bootstrap interval whose
resampling unit is the clip (all seeds of a drawn clip go together).

How each metric is computed (the protocol of REFERENCE.md §7):

- ``fid``, ``kid``: torchmetrics on ``judges.features`` of the real image of every scored clip against
  every generated image. Each bootstrap resample recomputes the statistic from the cached features, so
  their resamples are capped at ``judges.fidelity_resamples``.
- ``aic`` / ``aic@k``: the share of generated images whose audio's class is the classifier's top-1 / among
  its top k (omitted when k >= the number of classes: it would be 1 by construction).
- ``ais`` / ``iis``: mean win-rate (:func:`~sound2image.metrics.consistency.owned_win_rates`) of each
  generated image's cosine to its own clip's audio / real image against the other scored clips', in the
  system's :class:`Pairing` space. The win-rates are computed once against all N clips; the bootstrap
  resamples clips for the mean.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image

from sound2image.atomic import write_atomic
from sound2image.data import load_image, prepare_image
from sound2image.errors import UsageError
from sound2image.metrics import (
    Estimate,
    ImageClassifier,
    ImageFeatures,
    bootstrap,
    frechet_distance,
    kernel_distance,
    owned_win_rates,
    project_to_span,
    top_k_hits,
)

#: Images decoded and passed to an extractor at once.
BATCH = 64
#: The pairing name of SounDiff systems (ImageBind audio, the unCLIP pipeline's CLIP image encoder): a
#: pairing is circular when it says so (``circular = True``) or has this name prefix.
CIRCULAR_PREFIX = "imagebind-audio/"
#: KID subsets (torchmetrics' default) for the value, and for each bootstrap resample (their Monte-Carlo
#: noise only widens the interval slightly; 100 per resample would cost 100 × the resamples).
KID_SUBSETS = 100
KID_BOOTSTRAP_SUBSETS = 10


@dataclass(frozen=True)
class EvalItem:
    """One clip of the evaluation set.

    Attributes:
        id: unique and stable (relative audio path without suffix, e.g. ``"beach/00012"``).
        label: the class label, or None when the dataset has none.
        audio: the audio file.
        image: the real image paired with it.
        audio_sha256: the audio file's SHA-256 (hex).
    """

    id: str
    label: str | None
    audio: Path
    image: Path
    audio_sha256: str


@runtime_checkable
class Pairing(Protocol):
    """The AIS / IIS embedding spaces for one kind of system.

    Attributes:
        name: recorded in the report, e.g. ``"imagebind-audio/unclip-clip-image"`` or
            ``"transformer-scorer:<dir>"``. An optional ``circular: bool`` attribute says that the system
            was conditioned in this very space (default: the name starts with :data:`CIRCULAR_PREFIX`).
            Pairings with the same name are taken to be the same space: the real images and the audio are
            embedded once per name.
    """

    name: str

    def embed_audio(self, items: Sequence[EvalItem]) -> torch.Tensor:
        """(N, D) audio embeddings of the items, in item order."""
        ...

    def embed_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(N, D) image embeddings (the images are RGB)."""
        ...


@dataclass
class Judges:
    """What :func:`score` measures with.

    Attributes:
        features: image features for FID / KID (None: no FID / KID).
        classifier: the judge for AIC and AIC@k (None: none); item labels must be its classes.
        pairings: system id -> its AIS / IIS pairing (a system without one gets no AIS / IIS).
        k: the k of AIC@k.
        resamples: bootstrap resamples for every metric but FID / KID.
        level: interval coverage.
        seed: seeds the bootstrap, the KID subsets and the shuffled reference.
        fidelity_resamples: the cap on FID / KID bootstrap resamples (each recomputes the statistic).
    """

    features: ImageFeatures | None = None
    classifier: ImageClassifier | None = None
    pairings: dict[str, Pairing] = field(default_factory=dict)
    k: int = 3
    resamples: int = 1000
    level: float = 0.95
    seed: int = 0
    fidelity_resamples: int = 200


# --- image loading and feature caching ---------------------------------------------------------------


def _load(path: Path) -> Image.Image:
    return load_image(path, mode=None)  # each extractor converts as it was trained (L, RGB)


def _rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


def _embed(paths: Sequence[Path], function: Callable[[list[Image.Image]], torch.Tensor]) -> torch.Tensor:
    """Apply ``function`` to the images of ``paths`` in batches of :data:`BATCH` -> (N, ...) float64."""
    parts = []
    for start in range(0, len(paths), BATCH):
        images = [_load(p) for p in paths[start : start + BATCH]]
        parts.append(torch.as_tensor(function(images)).detach().to("cpu", torch.float64))
    return torch.cat(parts) if parts else torch.zeros((0, 0), dtype=torch.float64)


def _save_npy(path: str, array: np.ndarray) -> None:
    """``np.save`` to exactly ``path`` (given a name, np.save would append ``.npy`` to it)."""
    with open(path, "wb") as handle:
        np.save(handle, array)


def _cache_key(path: Path, features: ImageFeatures) -> str:
    stat = path.stat()
    text = json.dumps(
        [features.name, int(features.num_features), str(path.resolve()), stat.st_size, stat.st_mtime_ns]
    )
    return hashlib.sha256(text.encode()).hexdigest()


def cached_features(
    features: ImageFeatures, paths: Sequence[Path], cache_dir: Path | None = None
) -> torch.Tensor:
    """``features`` of the image files: (N, D) float64, reusing ``cache_dir`` when given.

    The cache holds one ``<sha256>.npy`` per image, keyed by the extractor's name and D and by the file's
    absolute path, size and modification time (a rewritten file is recomputed).

    Raises:
        ImageError: an image cannot be read.
    """
    paths = [Path(p) for p in paths]
    if cache_dir is None:
        out = _embed(paths, lambda images: features([_rgb(i) for i in images]))
        return out if len(paths) else torch.zeros((0, features.num_features), dtype=torch.float64)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    out = torch.zeros((len(paths), features.num_features), dtype=torch.float64)
    missing: list[int] = []
    for index, path in enumerate(paths):
        if not path.is_file():
            missing.append(index)  # _load reports it
            continue
        file = cache_dir / f"{_cache_key(path, features)}.npy"
        try:
            row = np.load(file)
        except (OSError, ValueError):
            missing.append(index)
            continue
        if row.shape != (features.num_features,):
            missing.append(index)
            continue
        out[index] = torch.from_numpy(row.astype(np.float64))
    if missing:
        computed = _embed([paths[i] for i in missing], lambda images: features([_rgb(i) for i in images]))
        for index, row in zip(missing, computed, strict=True):
            out[index] = row
            file = cache_dir / f"{_cache_key(paths[index], features)}.npy"
            write_atomic(file, lambda tmp, row=row: _save_npy(tmp, row.numpy()))
    return out


def _classifier_logits(classifier: ImageClassifier, paths: Sequence[Path]) -> torch.Tensor:
    size = classifier.config.image_size
    out = _embed(paths, lambda images: classifier.logits(np.stack([prepare_image(i, size) for i in images])))
    return out if len(paths) else torch.zeros((0, len(classifier.config.classes)), dtype=torch.float64)


# --- statistics ---------------------------------------------------------------------------------------


def _ratio_estimate(per_sample: np.ndarray, owners: np.ndarray, n: int, judges: Judges) -> Estimate:
    """The mean of per-sample values, bootstrapped over the n clips that own them (owners: sample -> clip)."""
    sums = np.bincount(owners, weights=per_sample.astype(np.float64), minlength=n)
    counts = np.bincount(owners, minlength=n).astype(np.float64)
    return bootstrap(
        lambda idx: sums[idx].sum(axis=-1) / counts[idx].sum(axis=-1),
        n,
        resamples=judges.resamples,
        seed=judges.seed,
        level=judges.level,
        vectorized=True,
    )


def _fidelity_estimates(
    real: torch.Tensor, fake: torch.Tensor, owners: np.ndarray, judges: Judges, dimension: int
) -> dict[str, Estimate]:
    """FID and KID of one system, with intervals from clip resamples (real and generated rows go together)."""
    n = real.shape[0]
    real_p, fake_p = project_to_span(real, fake)  # exact for FID / KID, and cheap when N << D
    rows_of = [np.flatnonzero(owners == clip) for clip in range(n)]
    resamples = min(judges.resamples, judges.fidelity_resamples)

    def rows(idx: np.ndarray) -> np.ndarray:
        return np.concatenate([rows_of[i] for i in idx])

    gamma = 1.0 / dimension
    fid = bootstrap(
        lambda idx: frechet_distance(real_p[idx], fake_p[rows(idx)]),
        n,
        resamples=resamples,
        seed=judges.seed,
        level=judges.level,
    )
    kid = bootstrap(
        lambda idx: kernel_distance(
            real_p[idx], fake_p[rows(idx)], subsets=KID_BOOTSTRAP_SUBSETS, seed=judges.seed, gamma=gamma
        ),
        n,
        resamples=resamples,
        seed=judges.seed,
        level=judges.level,
    )
    point = kernel_distance(real_p, fake_p, subsets=KID_SUBSETS, seed=judges.seed, gamma=gamma)
    kid = replace(kid, value=point)
    return {"fid": fid, "kid": kid}


def derangement(n: int, seed: int) -> np.ndarray:
    """A uniformly random permutation of range(n) with no fixed point (n >= 2), by rejection (seeded)."""
    if n < 2:
        raise UsageError(f"a derangement needs n >= 2, got {n}", parameters=("n",))
    rng = np.random.default_rng(seed)
    while True:
        perm = rng.permutation(n)
        if not (perm == np.arange(n)).any():
            return perm


def _is_circular(pairing: Pairing) -> bool:
    return bool(getattr(pairing, "circular", str(pairing.name).startswith(CIRCULAR_PREFIX)))


def _check(judges: Judges) -> None:
    for name, value, least in (("resamples", judges.resamples, 1), ("k", judges.k, 1)):
        if not (isinstance(value, int) and value >= least):
            raise UsageError(f"{name} must be an integer >= {least}, got {value!r}", parameters=(name,))
    if not (isinstance(judges.fidelity_resamples, int) and judges.fidelity_resamples >= 1):
        raise UsageError(
            f"fidelity_resamples must be an integer >= 1, got {judges.fidelity_resamples!r}",
            parameters=("fidelity_resamples",),
        )
    if not (isinstance(judges.level, (int, float)) and 0 < judges.level < 1):
        raise UsageError(f"level must be in (0, 1), got {judges.level!r}", parameters=("level",))


# --- score ----------------------------------------------------------------------------------------------


def score(
    items: Sequence[EvalItem],
    generated: Mapping[str, Mapping[str, Sequence[Path]]],
    judges: Judges,
    *,
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    """Score every system's generated images.

    Args:
        items: the evaluation clips (unique ids).
        generated: system id -> item id -> the PNG paths of that item (one per seed). Items missing for a
            system (or with no paths) are left out of that system's N.
        judges: what to measure with (see :class:`Judges`).
        cache_dir: where to keep image features between calls (see :func:`cached_features`); None: no cache.

    Returns:
        ``{"metrics": {system: {metric: Estimate dict}}, "reference": {"real": {...}, "shuffled": {...}},
        "metric_notes": {metric: sentence}, "per_class_aic": {system: {class: Estimate dict}}}``: the parts
        of ``results.json`` with those names. A metric that cannot be computed (no judge, fewer than 2 clips,
        no labels) is absent.

    Raises:
        UsageError: duplicate item ids, a generated item id that is not an item, a label that is not a class
            of the classifier, a bad judge setting.
        ImageError: an image file cannot be read.
    """
    _check(judges)
    items = list(items)
    position = {item.id: i for i, item in enumerate(items)}
    if len(position) != len(items):
        raise UsageError("items: item ids must be unique", parameters=("items",))
    for system, per_item in generated.items():
        for item_id in per_item:
            if item_id not in position:
                raise UsageError(
                    f"generated[{system!r}]: {item_id!r} is not an item id", parameters=("generated",)
                )

    classifier = judges.classifier
    classes = list(classifier.config.classes) if classifier is not None else []
    label_index: dict[int, int] = {}  # item position -> class index (labelled items only)
    if classifier is not None:
        for i, item in enumerate(items):
            if item.label is None:
                continue
            if str(item.label) not in classes:
                known = ", ".join(classes)
                raise UsageError(
                    f"item {item.id}: label {item.label!r} is not a class of the classifier ({known})"
                )
            label_index[i] = classes.index(str(item.label))
    top_k = judges.k if classifier is not None and judges.k < len(classes) else None
    aic_k = f"aic@{judges.k}"

    real_paths = [Path(item.image) for item in items]
    real_features = (
        cached_features(judges.features, real_paths, cache_dir)
        if judges.features is not None and items
        else None
    )
    pairings = {p.name: p for p in judges.pairings.values() if p is not None}
    audio_emb: dict[str, torch.Tensor] = {}
    real_emb: dict[str, torch.Tensor] = {}
    for name, pairing in pairings.items():
        if len(items) >= 2:
            audio_emb[name] = torch.as_tensor(pairing.embed_audio(items)).detach().cpu().double()
            real_emb[name] = _embed(
                real_paths, lambda images, p=pairing: p.embed_images([_rgb(i) for i in images])
            )

    metrics: dict[str, dict[str, Any]] = {}
    per_class: dict[str, dict[str, Any]] = {}
    counts: dict[str, tuple[int, int, int, int]] = {}
    for system, per_item in generated.items():
        clips = sorted(position[i] for i, paths in per_item.items() if len(paths))
        paths = [Path(p) for c in clips for p in per_item[items[c].id]]
        owners = np.array([k for k, c in enumerate(clips) for _ in per_item[items[c].id]], dtype=np.int64)
        n = len(clips)
        per_clip = np.bincount(owners, minlength=n) if n else np.zeros(1, dtype=np.int64)
        counts[system] = (n, len(paths), int(per_clip.min()), int(per_clip.max()))
        out: dict[str, Estimate] = {}
        if judges.features is not None and real_features is not None and n >= 2:
            fake = cached_features(judges.features, paths, cache_dir)
            out.update(
                _fidelity_estimates(real_features[clips], fake, owners, judges, judges.features.num_features)
            )
        if classifier is not None:
            labelled = [k for k, c in enumerate(clips) if c in label_index]
            if labelled:
                keep = np.isin(owners, labelled)
                renumber = {k: j for j, k in enumerate(labelled)}
                owners_l = np.array([renumber[k] for k in owners[keep]], dtype=np.int64)
                logits = _classifier_logits(
                    classifier, [p for p, kept in zip(paths, keep, strict=True) if kept]
                )
                targets = [label_index[clips[labelled[j]]] for j in owners_l]
                hits = top_k_hits(logits, targets, 1)
                out["aic"] = _ratio_estimate(hits, owners_l, len(labelled), judges)
                if top_k is not None:
                    out[aic_k] = _ratio_estimate(
                        top_k_hits(logits, targets, top_k), owners_l, len(labelled), judges
                    )
                clip_class = np.array([label_index[clips[k]] for k in labelled])
                per_class[system] = {}
                for c, name in enumerate(classes):
                    members = np.flatnonzero(clip_class == c)
                    if not members.size:
                        continue
                    renumber_c = {k: j for j, k in enumerate(members)}
                    mask = np.isin(owners_l, members)
                    owners_c = np.array([renumber_c[k] for k in owners_l[mask]], dtype=np.int64)
                    per_class[system][name] = _ratio_estimate(
                        hits[mask], owners_c, members.size, judges
                    ).to_dict()
        pairing = judges.pairings.get(system)
        if pairing is not None and n >= 2:
            generated_emb = _embed(paths, lambda images, p=pairing: p.embed_images([_rgb(i) for i in images]))
            ais = owned_win_rates(generated_emb, audio_emb[pairing.name][clips], owners)
            iis = owned_win_rates(generated_emb, real_emb[pairing.name][clips], owners)
            out["ais"] = _ratio_estimate(ais, owners, n, judges)
            out["iis"] = _ratio_estimate(iis, owners, n, judges)
        metrics[system] = {key: value.to_dict() for key, value in out.items()}

    reference = _reference(items, classifier, label_index, real_paths, audio_emb, real_emb, top_k, judges)
    notes = _notes(items, generated, judges, counts, classes, top_k, label_index)
    return {"metrics": metrics, "reference": reference, "metric_notes": notes, "per_class_aic": per_class}


def _reference(
    items: Sequence[EvalItem],
    classifier: ImageClassifier | None,
    label_index: Mapping[int, int],
    real_paths: Sequence[Path],
    audio_emb: Mapping[str, torch.Tensor],
    real_emb: Mapping[str, torch.Tensor],
    top_k: int | None,
    judges: Judges,
) -> dict[str, dict[str, Any]]:
    """Ceiling (real images with their own audio / labels) and floor (a seeded derangement of both)."""
    real: dict[str, Estimate] = {}
    shuffled: dict[str, Estimate] = {}
    if classifier is not None and label_index:
        labelled = sorted(label_index)
        logits = _classifier_logits(classifier, [real_paths[i] for i in labelled])
        targets = np.array([label_index[i] for i in labelled])
        owners = np.arange(len(labelled))
        real["aic"] = _ratio_estimate(top_k_hits(logits, targets, 1), owners, len(labelled), judges)
        if top_k is not None:
            real[f"aic@{judges.k}"] = _ratio_estimate(
                top_k_hits(logits, targets, top_k), owners, len(labelled), judges
            )
        if len(labelled) >= 2:
            wrong = targets[derangement(len(labelled), judges.seed)]
            shuffled["aic"] = _ratio_estimate(top_k_hits(logits, wrong, 1), owners, len(labelled), judges)
            if top_k is not None:
                shuffled[f"aic@{judges.k}"] = _ratio_estimate(
                    top_k_hits(logits, wrong, top_k), owners, len(labelled), judges
                )
    n = len(items)
    for name in audio_emb:
        owners = np.arange(n)
        real[f"ais:{name}"] = _ratio_estimate(
            owned_win_rates(real_emb[name], audio_emb[name], owners), owners, n, judges
        )
        shuffled_audio = audio_emb[name][derangement(n, judges.seed)]
        shuffled[f"ais:{name}"] = _ratio_estimate(
            owned_win_rates(real_emb[name], shuffled_audio, owners), owners, n, judges
        )
    return {
        "real": {key: value.to_dict() for key, value in real.items()},
        "shuffled": {key: value.to_dict() for key, value in shuffled.items()},
    }


def _notes(
    items: Sequence[EvalItem],
    generated: Mapping[str, Mapping[str, Sequence[Path]]],
    judges: Judges,
    counts: Mapping[str, tuple[int, int, int, int]],
    classes: Sequence[str],
    top_k: int | None,
    label_index: Mapping[int, int],
) -> dict[str, str]:
    """One sentence per metric: what was measured, on what N, with which encoders and seeds."""

    def seeds(low: int, high: int) -> str:
        return f"{low} seed" if low == high == 1 else f"{low} seeds" if low == high else f"{low}-{high} seeds"

    sizes = (
        "; ".join(
            f"{system}: N = {n} clips, {m} images ({seeds(low, high)} per clip)"
            for system, (n, m, low, high) in counts.items()
        )
        or "no systems"
    )
    interval = (
        f"{judges.level:.0%} percentile-bootstrap interval over clips ({{resamples}} resamples, "
        f"seed {judges.seed})"
    )
    plain = interval.format(resamples=judges.resamples)
    notes: dict[str, str] = {}
    if judges.features is not None:
        capped = interval.format(resamples=min(judges.resamples, judges.fidelity_resamples))
        cap = (
            f", capped at {judges.fidelity_resamples} because each resample recomputes the statistic"
            if judges.resamples > judges.fidelity_resamples
            else ""
        )
        space = f"{judges.features.name} features ({judges.features.num_features}-D)"
        notes["fid"] = (
            f"FID by torchmetrics (float64) on {space} of each scored clip's real image against its "
            f"generated images ({sizes}); biased upward for small N; {capped}{cap}."
        )
        notes["kid"] = (
            f"KID by torchmetrics: unbiased MMD² with the kernel (x·y/{judges.features.num_features} + 1)³, "
            f"mean over {KID_SUBSETS} subsets of min(N, M, 1000) images (subset seed {judges.seed}; "
            f"{KID_BOOTSTRAP_SUBSETS} per resample), on the same {space} and images as FID; {capped}{cap}."
        )
    if judges.classifier is not None:
        config = judges.classifier.config
        size = f"{config.image_size}×{config.image_size}"
        judge = f"the classifier ({len(classes)} classes, {size} grayscale, width {config.width})"
        labelled = f"{len(label_index)} of {len(items)} items labelled"
        notes["aic"] = (
            f"AIC: share of generated images that {judge} labels with the audio's class (top-1), over the "
            f"labelled clips ({sizes}; {labelled}); {plain}."
        )
        if top_k is not None:
            notes[f"aic@{judges.k}"] = (
                f"AIC@{judges.k}: as AIC, the audio's class among the classifier's top {judges.k}; {plain}."
            )
        else:
            notes[f"aic@{judges.k}"] = (
                f"AIC@{judges.k} not computed: {len(classes)} classes, so the top {judges.k} always hold "
                "the class."
            )
        notes["per_class_aic"] = f"Per-class AIC: AIC over the clips of each audio class; {plain}."
    scored = {s: p for s, p in judges.pairings.items() if p is not None and s in generated}
    if scored:
        spaces = "; ".join(f"{s}: {p.name}" for s, p in scored.items())
        circular = [s for s, p in scored.items() if _is_circular(p)]
        caveat = (
            f" For {', '.join(circular)} the audio and image embeddings share a space by construction (the "
            "conditioning vector lives in it), so AIS is circular there, and best-of-N generation ranks its "
            "candidates with this same cosine, so best-of-N results are favoured by it."
            if circular
            else ""
        )
        notes["ais"] = (
            "AIS: win-rate of cos(generated image, its own audio) against the other scored clips' audio, "
            f"ties 1/2, chance 0.5, in each system's pairing space ({spaces}) ({sizes}); {plain}.{caveat}"
        )
        notes["iis"] = (
            "IIS: win-rate of cos(generated image, its own clip's real image) against the other scored "
            f"clips' real images, ties 1/2, chance 0.5, in the same image space as AIS ({sizes}); {plain}."
        )
    notes["reference"] = (
        f"Reference on all {len(items)} items: real = each real image with its own audio and label (the "
        f"ceiling); shuffled = the real images with a seeded derangement (seed {judges.seed}) of the audio "
        f"and of the labels (the floor); {plain}."
    )
    return notes
