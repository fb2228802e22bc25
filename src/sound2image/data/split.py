"""A deterministic, grouped, stratified train/val split that can be saved, audited and reused.

How pairs are assigned (default 90/10, seed 42):

1. **Groups.** Pairs with the same :attr:`Pair.group` (an ADVANCE location: ids sharing their first 5
   characters) stay together; groups that share an audio or image file are merged as well, so no
   file ever appears on both sides.
2. **Strata.** When the pairs have labels, each group takes its most common label and the split is
   made within each label, so every class with enough groups is represented in validation.
3. **Order.** Within a stratum, groups are ordered by ``sha256(f"{seed}:{group}")``: the order does not
   depend on listing order, Python version or platform, and adding pairs does not reshuffle the rest.
   Groups are then taken into validation, in that order, while doing so brings the stratum's
   validation size closer to ``val_fraction`` of its pairs.

:meth:`Split.save` writes a JSON file with the settings, a fingerprint of the pair list and the keys
on each side; :meth:`Split.load` restores it for the same pairs.

:func:`split_by_column` makes a different kind of split: the pairs whose manifest column (``speaker``,
``label``, ``group`` or any extra column kept in :attr:`Pair.extra`) has one of the held-out values go
to validation, all others to training (leave-one-group-out, e.g. an unseen speaker). Groups are still
merged as above: a pair that shares a group or a file with a held-out pair is held out too, so no file
is on both sides.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sound2image.atomic import write_text_atomic
from sound2image.data.pairs import Pair
from sound2image.errors import DataError, UsageError

SPLIT_FORMAT = "sound2image-split"
SPLIT_VERSION = 1
DEFAULT_VAL_FRACTION = 0.1
DEFAULT_SEED = 42


@dataclass(frozen=True)
class SplitSettings:
    """The settings a split was made with (saved in its file)."""

    val_fraction: float = DEFAULT_VAL_FRACTION
    seed: int = DEFAULT_SEED
    #: ``split_by_column``: the column, and the held-out values (sorted); None / () for ``split_pairs``.
    split_by: str | None = None
    holdout: tuple[str, ...] = ()


@dataclass
class Split:
    """Train and validation pairs, plus what is needed to audit and reproduce them.

    Attributes:
        train: training pairs, sorted by key.
        val: validation pairs, sorted by key.
        settings: fraction and seed.
        fingerprint: hash of the pair list the split was made from (see :func:`pairs_fingerprint`).
        stratified: whether labels were used to stratify.
        unassigned: pairs given to :meth:`load` with ``allow_new=True`` that the file does not list.
    """

    train: list[Pair]
    val: list[Pair]
    settings: SplitSettings
    fingerprint: str
    stratified: bool
    unassigned: list[Pair] = field(default_factory=list)

    @property
    def seed(self) -> int:
        """The seed the split was made with."""
        return self.settings.seed

    @property
    def val_fraction(self) -> float:
        """The requested validation fraction (the achieved one is ``len(val) / (len(train) + len(val))``)."""
        return self.settings.val_fraction

    def to_dict(self) -> dict[str, object]:
        """The JSON record :meth:`save` writes."""
        from sound2image import __version__

        total = len(self.train) + len(self.val)
        return {
            "format": SPLIT_FORMAT,
            "version": SPLIT_VERSION,
            "package_version": __version__,
            "settings": self._settings_dict(),
            "grouping": "pair.group, merged where pairs share a file",
            "stratified": self.stratified,
            "fingerprint": self.fingerprint,
            "counts": {
                "pairs": total,
                "train": len(self.train),
                "val": len(self.val),
                "val_fraction_achieved": round(len(self.val) / total, 6) if total else 0.0,
            },
            "train": [pair.key for pair in self.train],
            "val": [pair.key for pair in self.val],
        }

    def _settings_dict(self) -> dict[str, object]:
        values: dict[str, object] = {"val_fraction": self.settings.val_fraction, "seed": self.settings.seed}
        if self.settings.split_by is not None:  # files of plain splits stay as they were
            values["split_by"] = self.settings.split_by
            values["holdout"] = list(self.settings.holdout)
        return values

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the split as JSON to ``path`` (atomically; parent folders are created)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        # Beside the target, then renamed: a crash never leaves a half-written split file.
        write_text_atomic(path, text)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], pairs: Sequence[Pair], *, allow_new: bool = False) -> Split:
        """Restore a split saved by :meth:`save` for ``pairs`` (matched by key).

        Args:
            path: the split file.
            pairs: the dataset's pairs (e.g. ``scan_pairs(root).pairs``).
            allow_new: accept pairs the file does not list (they go to ``unassigned``) instead of failing.

        Raises:
            DataError: unreadable file, not a split file, or pairs listed in the file are missing
                (or, without ``allow_new``, pairs are not listed in it or their labels/groups changed).
        """
        path = Path(path)
        record = _read_record(path)
        by_key = {pair.key: pair for pair in pairs}
        train_keys, val_keys = record["train"], record["val"]
        missing = [key for key in [*train_keys, *val_keys] if key not in by_key]
        if missing:
            raise DataError(
                f"{path}: {len(missing)} pair(s) listed in the split are missing from the dataset "
                f"(first: {missing[0]}); make a new split for this dataset"
            )
        listed = set(train_keys) | set(val_keys)
        new = sorted((pair for pair in pairs if pair.key not in listed), key=lambda pair: pair.key)
        if new and not allow_new:
            raise DataError(
                f"{path}: {len(new)} pair(s) of the dataset are not in the split (first: {new[0].key}); "
                "make a new split or allow new pairs"
            )
        fingerprint = str(record["fingerprint"])
        if not allow_new and pairs_fingerprint(pairs) != fingerprint:
            # Same keys but different labels or groups: the grouping the split relied on may not hold.
            raise DataError(
                f"{path}: the dataset's labels or groups changed since the split was made "
                "(fingerprint differs); make a new split"
            )
        settings = record["settings"]
        return cls(
            train=[by_key[key] for key in sorted(train_keys)],
            val=[by_key[key] for key in sorted(val_keys)],
            settings=SplitSettings(
                val_fraction=float(settings["val_fraction"]),
                seed=int(settings["seed"]),
                split_by=settings.get("split_by"),
                holdout=tuple(str(value) for value in settings.get("holdout", ())),
            ),
            fingerprint=fingerprint,
            stratified=bool(record.get("stratified", False)),
            unassigned=new,
        )


def _read_record(path: Path) -> dict:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: split file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read split file ({error})") from None
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not a split file (invalid JSON at line {error.lineno})") from None
    if not isinstance(record, dict) or record.get("format") != SPLIT_FORMAT:
        raise DataError(f'{path}: not a sound2image split file (no "format": "{SPLIT_FORMAT}")')
    if record.get("version") != SPLIT_VERSION:
        raise DataError(f"{path}: split file version {record.get('version')!r} is not supported")
    keys_ok = all(isinstance(record.get(side), list) for side in ("train", "val"))
    if not keys_ok or not isinstance(record.get("settings"), dict):
        raise DataError(f"{path}: split file lacks its train/val key lists or settings")
    overlap = set(record["train"]) & set(record["val"])
    if overlap:
        raise DataError(f"{path}: {len(overlap)} key(s) are on both sides (first: {sorted(overlap)[0]})")
    return record


def pairs_fingerprint(pairs: Iterable[Pair]) -> str:
    """A hash of the keys, labels and groups (not absolute paths, so a copied dataset matches)."""
    lines = sorted(f"{pair.key}\t{pair.label or ''}\t{pair.group}" for pair in pairs)
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def _merged_groups(pairs: Sequence[Pair]) -> list[list[Pair]]:
    """Pairs grouped by ``group``, with groups that share an audio or image file merged (union-find)."""
    parent: dict[str, str] = {}

    def find(node: str) -> str:
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]  # path halving
            node = parent[node]
        return node

    def union(a: str, b: str) -> None:
        root_a, root_b = find(a), find(b)
        if root_a != root_b:
            # Keep the smaller name as the root so the result does not depend on input order.
            parent[max(root_a, root_b)] = min(root_a, root_b)

    for pair in pairs:
        group = f"g:{pair.group or pair.key}"
        union(group, f"a:{pair.audio}")
        union(group, f"i:{pair.image}")
    merged: dict[str, list[Pair]] = {}
    for pair in pairs:
        merged.setdefault(find(f"g:{pair.group or pair.key}"), []).append(pair)
    return [sorted(members, key=lambda pair: pair.key) for _, members in sorted(merged.items())]


def _group_label(members: Sequence[Pair]) -> str | None:
    """The most common label of a group (ties: the smallest name); ``None`` when unlabelled."""
    counts = Counter(pair.label for pair in members if pair.label is not None)
    if not counts:
        return None
    return min(counts, key=lambda label: (-counts[label], label))


def _order_key(seed: int, members: Sequence[Pair]) -> str:
    name = members[0].group or members[0].key
    return hashlib.sha256(f"{seed}:{name}:{members[0].key}".encode()).hexdigest()


def _split_stratum(groups: list[list[Pair]], val_fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """Assign one stratum's groups: closest achievable val size to ``val_fraction`` of its pairs."""
    groups = sorted(groups, key=lambda members: _order_key(seed, members))
    total = sum(len(members) for members in groups)
    target = val_fraction * total
    train: list[Pair] = []
    val: list[Pair] = []
    for members in groups:
        if abs(len(val) + len(members) - target) < abs(len(val) - target):
            val.extend(members)
        else:
            train.extend(members)
    # Every stratum with n groups and n * val_fraction >= 1 gets at least one validation group: its
    # average group (total / n <= target) is smaller than 2 * target, and with an empty validation
    # side any group smaller than 2 * target brings it closer to the target, so one is taken.
    return train, val


def split_pairs(
    pairs: Sequence[Pair], val_fraction: float = DEFAULT_VAL_FRACTION, seed: int = DEFAULT_SEED
) -> Split:
    """Split pairs into train and validation, grouped by location and stratified by label.

    Args:
        pairs: the pairs (any order: the result does not depend on it).
        val_fraction: share of pairs for validation, in ``[0, 1)``; 0 puts everything in train.
        seed: changes which groups go to validation.

    Raises:
        UsageError: ``val_fraction`` outside ``[0, 1)``.
        DataError: duplicate pair keys.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise UsageError(f"val_fraction must be in [0, 1), got {val_fraction}")
    keys = Counter(pair.key for pair in pairs)
    duplicates = [key for key, count in keys.items() if count > 1]
    if duplicates:
        raise DataError(f"{len(duplicates)} duplicate pair key(s), first: {sorted(duplicates)[0]}")
    strata: dict[str | None, list[list[Pair]]] = {}
    for members in _merged_groups(pairs):
        strata.setdefault(_group_label(members), []).append(members)
    stratified = any(label is not None for label in strata)
    train: list[Pair] = []
    val: list[Pair] = []
    for label in sorted(strata, key=lambda name: (name is None, name or "")):
        stratum_train, stratum_val = _split_stratum(strata[label], val_fraction, seed)
        train.extend(stratum_train)
        val.extend(stratum_val)
    return Split(
        train=sorted(train, key=lambda pair: pair.key),
        val=sorted(val, key=lambda pair: pair.key),
        settings=SplitSettings(val_fraction=val_fraction, seed=seed),
        fingerprint=pairs_fingerprint(pairs),
        stratified=stratified,
    )


def column_value(pair: Pair, column: str) -> str | None:
    """The value of a manifest ``column`` for ``pair``: ``label`` and ``group`` are :class:`Pair` fields,
    any other name is looked up in :attr:`Pair.extra` (case-insensitively, as manifest columns are read);
    ``None`` when the pair has no such column or it is empty."""
    if column == "label":
        return pair.label
    if column == "group":
        return pair.group or None
    wanted = column.strip().lower()
    for name, value in pair.extra.items():
        if name.strip().lower() == wanted:
            return value if value != "" else None
    return None


def split_by_column(pairs: Sequence[Pair], column: str, holdout: str | Sequence[str]) -> Split:
    """Hold out every pair whose ``column`` equals one of the ``holdout`` values; train on the rest.

    For leave-one-speaker-out on av-digits: ``split_by_column(pairs, "speaker", "jackson")`` puts the
    500 ``jackson`` recordings in ``val`` and the other 2,000 in ``train``. Grouping is kept: a pair that
    shares its group or a file with a held-out pair is held out too (so no file is on both sides).

    Args:
        pairs: the pairs (any order).
        column: ``label``, ``group``, or a manifest column kept in :attr:`Pair.extra` (e.g. ``speaker``).
        holdout: one value or several; values are compared as strings, exactly.

    Returns:
        A :class:`Split` whose settings record ``split_by`` and ``holdout`` (``val_fraction`` is the
        achieved share, ``seed`` 0: neither is used).

    Raises:
        UsageError: no holdout value, or no pair has the column, or a holdout value matches no pair
            (the message lists the values present).
        DataError: duplicate pair keys.
    """
    values = sorted({holdout} if isinstance(holdout, str) else {str(value) for value in holdout})
    if not values or any(value == "" for value in values):
        raise UsageError(f"holdout: give at least one non-empty value of {column!r}", parameters=["holdout"])
    keys = Counter(pair.key for pair in pairs)
    duplicates = [key for key, count in keys.items() if count > 1]
    if duplicates:
        raise DataError(f"{len(duplicates)} duplicate pair key(s), first: {sorted(duplicates)[0]}")
    present = sorted({value for pair in pairs if (value := column_value(pair, column)) is not None})
    if not present:
        raise UsageError(f"split_by: no pair has a value in column {column!r}", parameters=["split_by"])
    unknown = [value for value in values if value not in present]
    if unknown:
        shown = ", ".join(present[:20]) + (" ..." if len(present) > 20 else "")
        raise UsageError(
            f"holdout: {column} {unknown[0]!r} matches no pair (values: {shown})", parameters=["holdout"]
        )
    wanted = set(values)
    train: list[Pair] = []
    val: list[Pair] = []
    for members in _merged_groups(pairs):
        held = any(column_value(pair, column) in wanted for pair in members)
        (val if held else train).extend(members)
    total = len(train) + len(val)
    return Split(
        train=sorted(train, key=lambda pair: pair.key),
        val=sorted(val, key=lambda pair: pair.key),
        settings=SplitSettings(
            val_fraction=round(len(val) / total, 6) if total else 0.0,
            seed=0,
            split_by=column,
            holdout=tuple(values),
        ),
        fingerprint=pairs_fingerprint(pairs),
        stratified=False,
    )


def load_or_create_split(
    path: str | os.PathLike[str],
    pairs: Sequence[Pair],
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = DEFAULT_SEED,
) -> Split:
    """Reuse the split file at ``path`` if there is one (e.g. when resuming), else make and save it.

    Raises:
        UsageError: the existing file was made with a different fraction or seed.
        DataError: the existing file does not fit ``pairs`` (see :meth:`Split.load`).
    """
    path = Path(path)
    if not path.exists():
        split = split_pairs(pairs, val_fraction=val_fraction, seed=seed)
        split.save(path)
        return split
    split = Split.load(path, pairs)
    if split.settings != SplitSettings(val_fraction=val_fraction, seed=seed):
        raise UsageError(
            f"{path}: existing split was made with val_fraction={split.val_fraction}, seed={split.seed}; "
            f"asked for val_fraction={val_fraction}, seed={seed} (delete the file or use those settings)"
        )
    return split
