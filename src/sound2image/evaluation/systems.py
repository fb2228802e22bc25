"""The systems an evaluation compares (its columns) and the fingerprint that keys their cached images.

A *system* is one generator with one condition: the zero-shot SounDiff baseline (``baseline``), a
fine-tuned SounDiff U-Net (a training export or run directory), or an Image Transformer
(``transformer:DIR``), each optionally with a text condition (SounDiff only). :func:`parse_systems`
turns the command's ``--systems`` / ``--conditions`` into :class:`SystemSpec` columns;
:func:`paper_table1` gives the paper's five columns (REFERENCE.md §1).

SounDiff systems run on a backbone (:mod:`sound2image.diffusion.backbones`): SD 2.1 unCLIP by default,
or, as in ``generate``, ``backbone="sd15-ip"``/``"sdxl-ip"`` (``--backbone``) with ``model`` the SD 1.5 /
SDXL pipeline, ``ip_adapter`` its ViT-H adapter (``--ip-adapter``; default h94/IP-Adapter's) and
``ip_scale`` (``--ip-scale``). There ``baseline`` is the zero-shot adapter and a DIR entry is an
adapter training run (``train soundiff --backbone ...``: its ``ip-adapter.safetensors`` replaces the
adapter) or an adapter weight file.

:func:`system_fingerprint` is what the image cache keys on besides the sound, the seed and the
settings. It covers: the system's kind; for SounDiff, the base pipeline (a hub id with the commit its
revision resolves to in the local cache, or a local directory's files) and the fine-tuned U-Net
directory's ``unet/`` folder, training record and calibration (a hub model not yet in the cache is
downloaded before it is fingerprinted, :func:`needs_download`); with an IP-Adapter backbone also the
backbone's name, the adapter (a local weight file with the calibration and image encoder beside it, a
local h94 copy's weights, or a hub id with its cached commit) and ``ip_scale``; for the Image
Transformer, its model directory (weights, config, scorer). A local file counts by its relative name
and size, plus the SHA-256 of its whole content when it is at most :data:`FULL_HASH_BYTES`, else the
SHA-256 of :data:`SAMPLED_BLOCKS` evenly spaced 1 MiB blocks and its modification time (so a 5 GB
weight file is not read whole at every start; a copied directory of such files therefore misses the
cache once). The ImageBind weights file, when the base directory holds no saved audio encoder, counts
by its path, size and modification time. The condition and the sampling settings are not part of the
fingerprint: they are keyed separately (:func:`sound2image.evaluation.generation.cache_key`), so
``baseline`` and ``baseline + condition`` share one fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sound2image.errors import UsageError

#: ``transformer:DIR`` selects an Image Transformer model directory.
TRANSFORMER_PREFIX = "transformer:"
#: The text condition of the paper's reference code (REFERENCE.md §1).
PAPER_CONDITION = "a satellite image with details on the ground"
#: Files up to this size are hashed whole for the fingerprint (64 MiB).
FULL_HASH_BYTES = 64 * 1024 * 1024
#: Larger files: this many evenly spaced 1 MiB blocks are hashed (with size and modification time).
SAMPLED_BLOCKS = 8
_BLOCK = 1024 * 1024
#: Folders of a run directory that never change what generation loads.
_RUN_ONLY = frozenset({"checkpoints", "cache", "logs", "validation"})

KINDS = ("soundiff", "transformer")
#: The adapter an IP-Adapter training run exports (``sound2image.training.export.IP_ADAPTER_FILE``).
TRAINED_ADAPTER = "ip-adapter.safetensors"


@dataclass(frozen=True)
class SystemSpec:
    """One column of the evaluation.

    Attributes:
        id: unique, stable, safe in file names and report keys (``baseline``, ``soundiff-s+cond``).
        label: the column's title (``SounDiff-S + condition``).
        kind: ``"soundiff"`` or ``"transformer"``.
        source: SounDiff: the base pipeline (hub id or directory; None: ``$SOUND2IMAGE_UNCLIP`` or the
            default); transformer: the model directory.
        unet: SounDiff: the fine-tuned U-Net directory (None: the base model's own, the baseline).
        condition: the text prompt (SounDiff only), None for none.
        candidates: best-of-N per image (1: plain draws).
        backbone: SounDiff: the generator (``unclip``, ``sd15-ip`` or ``sdxl-ip``).
        ip_adapter: SounDiff on an IP-Adapter backbone: the adapter (weight file, h94 copy or hub id;
            None: h94/IP-Adapter's ViT-H weights).
        ip_scale: SounDiff on an IP-Adapter backbone: the adapter's weight.
    """

    id: str
    label: str
    kind: str
    source: str | None
    unet: str | None = None
    condition: str | None = None
    candidates: int = 1
    backbone: str = "unclip"
    ip_adapter: str | None = None
    ip_scale: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SystemSpec:
        return cls(**{key: values[key] for key in cls.__dataclass_fields__ if key in values})

    @property
    def model_key(self) -> tuple[Any, ...]:
        """Systems with the same key use the same weights (one load serves them all)."""
        return (self.kind, self.source, self.unet, self.backbone, self.ip_adapter, self.ip_scale)


def parse_conditions(values: Sequence[str] | str | None) -> list[str | None]:
    """``--conditions``: ``none`` (or an empty string) is no condition, anything else a prompt.

    One value is split on commas (``none,"a satellite image"``); several values are taken as they are
    (a prompt holding a comma is given as its own value next to another one). Duplicates are dropped.

    Raises:
        UsageError: no condition at all.
    """
    if values is None:
        return [None]
    items = [values] if isinstance(values, str) else list(values)
    if len(items) == 1:
        items = items[0].split(",")
    out: list[str | None] = []
    for item in items:
        text = item.strip()
        value = None if text.lower() in ("", "none") else text
        if value not in out:
            out.append(value)
    if not out:
        raise UsageError("conditions: give at least one (none, or a prompt)", parameters=["conditions"])
    return out


def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.").lower()
    return slug or "system"


def parse_systems(
    text: str | Sequence[str],
    conditions: Sequence[str | None] = (None,),
    *,
    model: str | None = None,
    candidates: int = 1,
    backbone: str = "unclip",
    ip_adapter: str | None = None,
    ip_scale: float = 1.0,
) -> list[SystemSpec]:
    """The columns of ``--systems`` × ``--conditions``.

    Args:
        text: comma-separated entries (or a list of them): ``baseline`` (the zero-shot base model
            ``model``), a directory (a SounDiff fine-tuning export or run directory, loaded as
            ``--unet DIR`` over ``model``) or ``transformer:DIR`` (an Image Transformer model directory).
        conditions: each SounDiff system is evaluated once per condition (None: no prompt); the Image
            Transformer takes no text, so it is one column whatever the conditions.
        model: the SounDiff base pipeline (hub id or directory; None: the default, as ``generate``).
        candidates: best-of-N per image for every system.
        backbone: every SounDiff system's generator: ``unclip`` (default) or ``sd15-ip``/``sdxl-ip``;
            then ``model`` is the SD 1.5 / SDXL pipeline, ``baseline`` uses ``ip_adapter`` and a DIR
            entry is an adapter training run (its ``ip-adapter.safetensors``) or an adapter weight file.
        ip_adapter: the adapter of ``baseline`` on an IP-Adapter backbone (None: h94/IP-Adapter's).
        ip_scale: the adapter's weight on an IP-Adapter backbone, finite and >= 0.

    Raises:
        UsageError: an empty list, an entry that is neither ``baseline`` nor an existing directory (or,
            on an IP-Adapter backbone, a directory without ``ip-adapter.safetensors`` or an adapter file),
            a duplicate entry, ``candidates`` below 1, an unknown ``backbone``, ``ip_adapter``/``ip_scale``
            with unCLIP or a negative ``ip_scale`` (the message names the parameter).
    """
    from sound2image.diffusion.backbones import backbone_class
    from sound2image.validation import check_number

    backbone_class(backbone)
    ip = backbone != "unclip"
    if not ip and (ip_adapter is not None or ip_scale != 1.0):
        given = "ip_adapter" if ip_adapter is not None else "ip_scale"
        raise UsageError(
            f"{given} applies to the sd15-ip and sdxl-ip backbones, not unclip", parameters=[given]
        )
    ip_scale = check_number("ip_scale", ip_scale, minimum=0.0)
    entries = [
        part.strip() for item in ([text] if isinstance(text, str) else text) for part in item.split(",")
    ]
    entries = [entry for entry in entries if entry]
    if not entries:
        raise UsageError(
            "systems: give at least one (baseline, DIR or transformer:DIR)", parameters=["systems"]
        )
    if not isinstance(candidates, int) or candidates < 1:
        raise UsageError(f"candidates must be an integer >= 1, got {candidates}", parameters=["candidates"])
    if len(set(entries)) != len(entries):
        twice = next(e for e in entries if entries.count(e) > 1)
        raise UsageError(f"systems: {twice} is listed twice", parameters=["systems"])
    conditions = list(conditions) or [None]
    prompts = [c for c in conditions if c is not None]
    systems: list[SystemSpec] = []
    used: set[str] = set()

    def unique(base: str) -> str:
        name, n = base, 2
        while name in used:
            name, n = f"{base}-{n}", n + 1
        used.add(name)
        return name

    for entry in entries:
        if entry.startswith(TRANSFORMER_PREFIX):
            directory = entry[len(TRANSFORMER_PREFIX) :]
            if not directory or not Path(directory).is_dir():
                raise UsageError(
                    f"systems: {directory or entry}: no such model directory", parameters=["systems"]
                )
            name = _slug(_transformer_name(Path(directory)))
            ident = unique(name)
            systems.append(
                SystemSpec(
                    ident,
                    f"Image Transformer ({name})",
                    "transformer",
                    str(Path(directory)),
                    None,
                    None,
                    candidates,
                )
            )
            continue
        adapter = ip_adapter
        if entry == "baseline":
            base, label, unet = "baseline", "Baseline", None
        else:
            if not Path(entry).is_dir() and not (ip and Path(entry).is_file()):
                raise UsageError(
                    f"systems: {entry}: not 'baseline', 'transformer:DIR' nor an existing directory",
                    parameters=["systems"],
                )
            unet = None if ip else str(Path(entry))
            if ip:
                adapter = _trained_adapter(Path(entry), backbone)
            base = _slug(Path(entry).resolve().name)
            label = Path(entry).resolve().name
        stem = unique(base)
        extra = {"backbone": backbone, "ip_adapter": adapter, "ip_scale": ip_scale}
        for condition in conditions:
            if condition is None:
                systems.append(SystemSpec(stem, label, "soundiff", model, unet, None, candidates, **extra))
                continue
            tag = "cond" if len(prompts) == 1 else f"cond{prompts.index(condition) + 1}"
            title = "condition" if len(prompts) == 1 else f"condition {prompts.index(condition) + 1}"
            ident = unique(f"{stem}+{tag}")
            systems.append(
                SystemSpec(
                    ident, f"{label} + {title}", "soundiff", model, unet, condition, candidates, **extra
                )
            )
    return systems


def _trained_adapter(entry: Path, backbone: str) -> str:
    """An IP-Adapter system's adapter file: the entry itself, or a training run's export in it."""
    from sound2image.diffusion.backbones import WEIGHT_SUFFIXES

    if entry.is_file():
        if not entry.name.lower().endswith(WEIGHT_SUFFIXES):
            raise UsageError(
                f"systems: {entry}: not an IP-Adapter weight file ({', '.join(WEIGHT_SUFFIXES)})",
                parameters=["systems"],
            )
        return str(entry)
    file = entry / TRAINED_ADAPTER
    if not file.is_file():
        raise UsageError(
            f"systems: {entry}: no {TRAINED_ADAPTER} (a train soundiff --backbone {backbone} run) in this "
            "directory",
            parameters=["systems"],
        )
    return str(file)


def judge_backbone(specs: Sequence[SystemSpec]) -> dict[str, Any]:
    """``SounDiffPipeline.from_pretrained``'s backbone arguments for the judge pipeline (ImageBind audio
    against the conditioning space's image encoder): none for unCLIP systems; for IP-Adapter systems the
    backbone with the first adapter that has its ViT-H image encoder beside it (a trained adapter file
    usually has none; the zero-shot adapter does)."""
    from sound2image.diffusion.backbones import backbone_class, resolve_ip_adapter

    ip = [spec for spec in specs if spec.kind == "soundiff" and spec.backbone != "unclip"]
    if not ip:
        return {}
    default = backbone_class(ip[0].backbone).default_weight  # type: ignore[attr-defined]
    with_encoder = [s for s in ip if resolve_ip_adapter(s.ip_adapter, default).image_encoder_folder]
    chosen = (with_encoder or ip)[0]
    return {"backbone": chosen.backbone, "ip_adapter": chosen.ip_adapter, "ip_scale": chosen.ip_scale}


def _transformer_name(directory: Path) -> str:
    """``runs/it/model`` -> ``it`` (the run's name), else the directory's own name."""
    resolved = directory.resolve()
    return resolved.parent.name if resolved.name == "model" and resolved.parent.name else resolved.name


def paper_table1(
    soundiff_l: str | os.PathLike[str],
    soundiff_s: str | os.PathLike[str],
    *,
    model: str | None = None,
    condition: str = PAPER_CONDITION,
    candidates: int = 1,
) -> list[SystemSpec]:
    """The paper's Table 1 columns: Baseline, Baseline + condition, SounDiff-L, SounDiff-S and
    SounDiff-S + condition (the condition: "a satellite image with details on the ground").

    Raises:
        UsageError: a directory that does not exist (naming ``soundiff_l`` / ``soundiff_s``).
    """
    for name, value in (("soundiff_l", soundiff_l), ("soundiff_s", soundiff_s)):
        if not Path(value).is_dir():
            raise UsageError(f"{name}: {value}: no such directory", parameters=[name])
    large, small = str(Path(soundiff_l)), str(Path(soundiff_s))
    return [
        SystemSpec("baseline", "Baseline", "soundiff", model, None, None, candidates),
        SystemSpec("baseline+cond", "Baseline + condition", "soundiff", model, None, condition, candidates),
        SystemSpec("soundiff-l", "SounDiff-L", "soundiff", model, large, None, candidates),
        SystemSpec("soundiff-s", "SounDiff-S", "soundiff", model, small, None, candidates),
        SystemSpec(
            "soundiff-s+cond", "SounDiff-S + condition", "soundiff", model, small, condition, candidates
        ),
    ]


# ---------------------------------------------------------------------- fingerprint


def _file_entry(path: Path, root: Path) -> dict[str, Any]:
    size = path.stat().st_size
    entry: dict[str, Any] = {"name": path.relative_to(root).as_posix(), "size": size}
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        if size <= FULL_HASH_BYTES:
            while chunk := handle.read(_BLOCK):
                digest.update(chunk)
        else:
            for k in range(SAMPLED_BLOCKS):
                handle.seek((size - _BLOCK) * k // (SAMPLED_BLOCKS - 1))
                digest.update(handle.read(_BLOCK))
            entry["mtime_ns"] = path.stat().st_mtime_ns
    entry["sha256"] = digest.hexdigest()
    return entry


def directory_digest(root: str | os.PathLike[str], include: Sequence[str] | None = None) -> str:
    """SHA-256 over the files under ``root`` (or only the top-level names in ``include``), hidden files
    and a run's own folders (checkpoints, cache, logs, validation) left out; see the module docstring."""
    root = Path(root).resolve()
    files: list[Path] = []
    for folder, subfolders, names in os.walk(root):
        here = Path(folder)
        subfolders[:] = sorted(
            d for d in subfolders if not d.startswith(".") and not (here == root and d in _RUN_ONLY)
        )
        for name in sorted(names):
            path = here / name
            top = path.relative_to(root).parts[0]
            if name.startswith(".") or (include is not None and top not in include):
                continue
            files.append(path)
    entries = [_file_entry(path, root) for path in sorted(files)]
    return hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()


def _hub_commit(name: str) -> str | None:
    """The commit a hub id's ``main`` resolves to in the local cache (None: not cached)."""
    from huggingface_hub import try_to_load_from_cache

    from sound2image.diffusion.loading import hub_cache_dir

    cached = try_to_load_from_cache(name, "model_index.json", cache_dir=hub_cache_dir())
    return Path(cached).parent.name if isinstance(cached, str) else None


def _source(spec: SystemSpec) -> Any:
    """The SounDiff system's base pipeline source (the backbone's default model when none is given)."""
    from sound2image.diffusion.backbones import backbone_class
    from sound2image.diffusion.loading import resolve_pipeline_source

    if spec.backbone == "unclip":
        return resolve_pipeline_source(spec.source)
    generator = backbone_class(spec.backbone)
    return resolve_pipeline_source(spec.source, default=generator.default_model, what=generator.what)


def needs_download(spec: SystemSpec) -> bool:
    """Whether the system's base pipeline is a hub id not yet in the local cache: its fingerprint can
    name the exact commit only once it is downloaded (load it first, then fingerprint)."""
    if spec.kind != "soundiff":
        return False
    source = _source(spec)
    if spec.backbone != "unclip" and _adapter_part(spec).get("commit", "") is None:
        return True
    return source.path is None and _hub_commit(source.name) is None


def _adapter_part(spec: SystemSpec) -> dict[str, Any]:
    """What an IP-Adapter system's adapter is: a local file (with the calibration and image encoder
    beside it), a local h94 copy (its weight file and image encoders), or a hub id at its cached commit."""
    from huggingface_hub import try_to_load_from_cache

    from sound2image.diffusion.backbones import backbone_class, resolve_ip_adapter
    from sound2image.diffusion.loading import hub_cache_dir

    default = backbone_class(spec.backbone).default_weight  # type: ignore[attr-defined]
    source = resolve_ip_adapter(spec.ip_adapter, default)
    part: dict[str, Any] = {"backbone": spec.backbone, "ip_scale": spec.ip_scale, "file": source.file}
    if source.path is not None:
        top = source.file.split("/")[0]
        include = [top, "sound2image_calibration.json"]
        if source.image_encoder_folder:
            include.append(source.image_encoder_folder.split("/")[0])
        part["adapter"] = directory_digest(source.path, include)
    else:
        cached = try_to_load_from_cache(source.name, source.file, cache_dir=hub_cache_dir())
        part.update(
            adapter=source.name,
            commit=Path(cached).parts[-1 - len(source.file.split("/"))] if isinstance(cached, str) else None,
        )
    return part


def _pipeline_part(spec: SystemSpec, imagebind_weights: str | None) -> dict[str, Any]:
    source = _source(spec)
    if source.path is not None:
        part: dict[str, Any] = {"pipeline": "dir", "digest": directory_digest(source.path)}
        has_encoder = (source.path / "audio_encoder" / "config.json").is_file()
    else:
        part = {"pipeline": source.name, "commit": _hub_commit(source.name)}
        has_encoder = False
    if not has_encoder:
        weights = imagebind_weights or os.environ.get("SOUND2IMAGE_IMAGEBIND_WEIGHTS")
        if weights and Path(weights).is_file():
            stat = Path(weights).stat()
            part["imagebind"] = {
                "path": str(Path(weights).resolve()),
                "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns,
            }
        else:
            part["imagebind"] = "imagebind_huge (the encoder's own lookup)"
    return part


def system_fingerprint(spec: SystemSpec, *, imagebind_weights: str | None = None) -> str:
    """A 64-hex SHA-256 of what the system's weights are (see the module docstring for what it covers).

    Stable across processes and runs on the same files; the condition, seeds and sampling settings are
    keyed separately.

    Raises:
        WeightsError: the base pipeline cannot be found (as ``SounDiffPipeline.from_pretrained``).
    """
    if spec.kind == "transformer":
        parts: dict[str, Any] = {"kind": "transformer", "model": directory_digest(spec.source or ".")}
    elif spec.kind == "soundiff":
        parts = {"kind": "soundiff", **_pipeline_part(spec, imagebind_weights)}
        if spec.backbone != "unclip":  # unCLIP's fingerprint stays as it was before backbones
            parts["ip"] = _adapter_part(spec)
        if spec.unet is not None:
            unet = Path(spec.unet)
            if (unet / "unet").is_dir():  # an export / run directory, or a whole pipeline: only what loads
                include = ["unet", "sound2image_soundiff.json", "sound2image_calibration.json"]
                parts["unet"] = directory_digest(unet, include)
            else:
                parts["unet"] = directory_digest(unet)
    else:
        raise UsageError(f"kind must be one of {', '.join(KINDS)}, got {spec.kind!r}")
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
