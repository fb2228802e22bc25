"""One persistence contract for every model: a directory with ``config.json`` and ``model.safetensors``.

Every model, scorer and classifier of the package saves through :func:`save_model_dir` (its
``save_pretrained(dir)``) and loads through :func:`load_model_dir` (its ``from_pretrained(dir)``, which
returns the model itself). The rules, written once here:

- ``config.json`` holds ``format`` (a marker naming the model class, e.g.
  ``"sound2image-image-transformer"``), ``format_version`` (:data:`FORMAT_VERSION`; a missing version reads
  as 1, the layout written before the field existed), ``model`` (the config dataclass as a dict) and the
  caller's ``extra`` keys (feature settings, class names, training history). The loaded model keeps the
  whole file as its ``saved_metadata`` attribute.
- **Weights are safetensors only.** A pickle (``torch.save``) is refused with a one-line
  :class:`~sound2image.errors.WeightsError` naming the file, whether it sits in ``model.safetensors``
  itself or beside it (``pytorch_model.bin``, ``*.pt``, ``*.pth``, ``*.ckpt``, ``*.pkl``): unpickling runs
  code from the file.
- **Strict keys and shapes.** Every tensor the model has must be in the file with the same shape, and the
  file holds nothing else; one line lists what is missing, unexpected and mis-shaped, e.g.
  ``DIR/model.safetensors: 2 missing (a.w, b.w), 1 unexpected (c.w), 1 mis-shaped (d.w: (3, 4) vs (4, 4))``.
- **Unknown config keys are refused** (one policy for every model): a ``model`` entry with a key that the
  config dataclass does not know raises ``WeightsError`` naming the keys, rather than silently dropping a
  setting that changes what the model computes. Such a file was written by a newer sound2image.

This module sits at the bottom of the package: it imports torch, safetensors, json, the errors and
:mod:`sound2image.atomic` only.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch

from sound2image.atomic import write_atomic, write_text_atomic
from sound2image.errors import WeightsError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
#: Version of the directory layout; bumped when an older reader could not read a newer directory.
FORMAT_VERSION = 1
#: Files that hold pickles (``torch.save``), refused by :func:`load_model_dir`.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
#: How many names each part of a key/shape error lists before "...".
LISTED = 5

__all__ = [
    "CONFIG_NAME",
    "FORMAT_VERSION",
    "WEIGHTS_NAME",
    "check_state_dict",
    "config_from_dict",
    "load_model_dir",
    "read_model_config",
    "save_model_dir",
]


class Stateful(Protocol):
    """What :func:`load_model_dir` needs of a model: ``state_dict`` and ``load_state_dict``."""

    def state_dict(self) -> Mapping[str, torch.Tensor]: ...

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = ...) -> Any: ...


M = TypeVar("M", bound=Stateful)
C = TypeVar("C")


def save_model_dir(
    directory: str | os.PathLike[str],
    model: Stateful,
    config: Mapping[str, Any] | Any,
    marker: str,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``directory/config.json`` and ``directory/model.safetensors``, each atomically.

    Args:
        directory: created if needed.
        model: anything with ``state_dict()``; its tensors are written detached, on the CPU, contiguous.
        config: the model's config, a dataclass or a dict; stored under ``"model"``.
        marker: the format marker of the model class (checked by :func:`load_model_dir`).
        extra: more top-level keys (feature settings, class names, history); must not reuse
            ``format``, ``format_version`` or ``model``.
    Returns:
        ``directory`` as a Path.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    values = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    extra = dict(extra or {})
    clash = sorted(set(extra) & {"format", "format_version", "model"})
    if clash:
        raise ValueError(f"extra must not set the reserved keys {clash}")
    record = {"format": marker, "format_version": FORMAT_VERSION, "model": values, **extra}
    text = json.dumps(record, indent=2, sort_keys=True, default=str) + "\n"
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    write_atomic(directory / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, metadata={"format": marker}))
    write_text_atomic(directory / CONFIG_NAME, text)
    return directory


def read_model_config(
    directory: str | os.PathLike[str], marker: str, what: str, accept_unmarked: bool = False
) -> dict[str, Any]:
    """The ``config.json`` of a saved model directory, checked for its format ``marker`` and version.

    Args:
        directory: a directory written by :func:`save_model_dir`.
        marker: the expected format marker.
        what: the model's name in messages ("Image Transformer").
        accept_unmarked: read a ``config.json`` without a ``format`` key as the bare model config (the
            layout of a model class that saved directories before this contract existed).
    Raises:
        WeightsError: missing or unreadable file, another format, a newer format version.
    """
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise WeightsError(f"{path}: missing (not {_article(what)} directory?)")
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise WeightsError(f"{path}: cannot read ({error})") from error
    if accept_unmarked and isinstance(record, dict) and "format" not in record:
        record = {"format": marker, "format_version": 1, "model": record}
    found = record.get("format") if isinstance(record, dict) else None
    if found != marker or not isinstance(record.get("model"), dict):
        raise WeightsError(f"{path}: not {_article(what)} config (format {found!r}, expected {marker!r})")
    version = record.get("format_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= FORMAT_VERSION:
        raise WeightsError(
            f"{path}: format version {version!r}, this sound2image reads 1..{FORMAT_VERSION} (upgrade it)"
        )
    return record


def config_from_dict(config_type: Callable[..., C], values: Mapping[str, Any], source: str) -> C:
    """``config_type(**values)`` for a dataclass, refusing unknown keys (the one policy, see module doc).

    Args:
        config_type: a dataclass.
        values: the stored ``"model"`` dict.
        source: the file named in errors.
    Raises:
        WeightsError: unknown keys, or values the dataclass rejects.
    """
    known = {field.name for field in dataclasses.fields(config_type)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        raise WeightsError(
            f"{source}: unknown config keys {', '.join(unknown)} (written by a newer sound2image?)"
        )
    try:
        return config_type(**values)
    except (TypeError, ValueError) as error:
        raise WeightsError(f"{source}: invalid model config ({error})") from None


def check_state_dict(
    source: str, state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor | torch.Size]
) -> None:
    """Raise one ``WeightsError`` line listing missing, unexpected and mis-shaped tensors, if any.

    Args:
        source: the file named in the message.
        state: the tensors read from the file.
        expected: the model's tensors (or their shapes).
    """
    shapes = {key: tuple(getattr(value, "shape", value)) for key, value in expected.items()}
    missing = sorted(set(shapes) - set(state))
    unexpected = sorted(set(state) - set(shapes))
    misshaped = [
        f"{key}: {tuple(state[key].shape)} vs {shapes[key]}"
        for key in sorted(set(state) & set(shapes))
        if tuple(state[key].shape) != shapes[key]
    ]
    parts = [
        f"{len(items)} {label} ({_listed(items)})"
        for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped))
        if items
    ]
    if parts:
        raise WeightsError(f"{source}: {', '.join(parts)}")


def load_model_dir(
    directory: str | os.PathLike[str],
    marker: str,
    build: Callable[[dict[str, Any]], M],
    what: str = "sound2image model",
    accept_unmarked: bool = False,
) -> M:
    """Build a model from a saved directory and load its weights, strictly.

    Args:
        directory: a directory written by :func:`save_model_dir`.
        marker: the expected format marker.
        build: the stored ``"model"`` dict -> a freshly built model (use :func:`config_from_dict` in it,
            so unknown keys are refused).
        what: the model's name in messages.
        accept_unmarked: see :func:`read_model_config`.
    Returns:
        The model, with the whole ``config.json`` as its ``saved_metadata`` attribute.
    Raises:
        WeightsError: one line naming the file and the problem (see the module docstring).
    """
    # 1. The config: marker, version, keys.
    directory = Path(directory)
    record = read_model_config(directory, marker, what, accept_unmarked)
    model = build(record["model"])
    # 2. The weights file: present and safetensors, never a pickle.
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        pickles = sorted(p.name for p in directory.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        if pickles:
            raise WeightsError(
                f"{directory / pickles[0]}: a pickle file; only {WEIGHTS_NAME} (safetensors) is loaded"
            )
        raise WeightsError(f"{weights}: missing (not {_article(what)} directory?)")
    if _is_pickle(weights):
        raise WeightsError(f"{weights}: a pickle (torch.save) file, not safetensors; pickles are not loaded")
    state = _read_safetensors(weights)
    # 3. Strict keys and shapes, then load.
    check_state_dict(str(weights), state, model.state_dict())
    model.load_state_dict(state)
    model.saved_metadata = record  # type: ignore[attr-defined]
    return model


# --- helpers ---------------------------------------------------------------------------------------


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as error:  # noqa: BLE001 - safetensors raises several types for damaged files
        raise WeightsError(f"{path}: cannot read (not a complete safetensors file: {error})") from None


def _is_pickle(path: Path) -> bool:
    """True for a ``torch.save`` file: a zip archive (``PK``) or a raw pickle (protocol byte ``0x80``)."""
    with open(path, "rb") as handle:
        head = handle.read(2)
    return head == b"PK" or head[:1] == b"\x80"


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:LISTED])
    return shown + (f", ... {len(items) - LISTED} more" if len(items) > LISTED else "")


def _article(what: str) -> str:
    return f"{'an' if what[:1].lower() in 'aeiou' else 'a'} {what}"
