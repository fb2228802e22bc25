"""Checks of numeric parameters at the public API boundary, with one-line errors that name the parameter.

Library functions call :func:`check_number` / :func:`check_int` / :func:`check_finite_values` with the
*parameter* name (``guidance_scale must be finite and >= 0, got nan``); the CLI checks its flags with
:func:`check_flags` before anything is loaded, so the same requirement is said in the same words with
the *flag* named (``--guidance-scale must be finite and >= 0, got nan``).

NaN and infinity are never accepted: NaN compares false with everything, so a plain range check
(``if x < 0``) lets it through, and it ends up as a black image or a NaN in the metadata.

This module imports nothing heavy (no torch at import time): ``--help`` stays instant.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from typing import Any

from sound2image.errors import UsageError

__all__ = [
    "check_finite_values",
    "check_flags",
    "check_int",
    "check_number",
    "check_positive_int",
]


def _show(value: Any) -> str:
    """How a bad value is quoted: numbers as they print (``nan``, ``inf``, ``-1``), anything else repr'd."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return repr(value)


def _range_text(
    minimum: float | None, maximum: float | None, min_inclusive: bool, max_inclusive: bool
) -> str:
    """``>= 0``, ``> 0``, ``<= 1``, ``in [0, 1]``, ``in (0, 1]`` or "" (no bound)."""

    def show(bound: float) -> str:
        return str(bound) if isinstance(bound, int) else f"{bound:g}"

    if minimum is not None and maximum is not None:
        left, right = "[" if min_inclusive else "(", "]" if max_inclusive else ")"
        return f"in {left}{show(minimum)}, {show(maximum)}{right}"
    if minimum is not None:
        return f"{'>=' if min_inclusive else '>'} {show(minimum)}"
    if maximum is not None:
        return f"{'<=' if max_inclusive else '<'} {show(maximum)}"
    return ""


def _number_problem(
    value: Any,
    minimum: float | None,
    maximum: float | None,
    min_inclusive: bool,
    max_inclusive: bool,
) -> tuple[str, float | None]:
    """(requirement text, the value as a float or None when it is unusable)."""
    bounds = _range_text(minimum, maximum, min_inclusive, max_inclusive)
    requirement = f"finite and {bounds}" if bounds else "a finite number"
    # True is an int to Python and "7" converts with float(): neither is a number a caller meant here.
    if isinstance(value, (bool, str, bytes)):
        return requirement, None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return requirement, None
    if not math.isfinite(number):
        return requirement, None
    if minimum is not None and (number < minimum if min_inclusive else number <= minimum):
        return requirement, None
    if maximum is not None and (number > maximum if max_inclusive else number >= maximum):
        return requirement, None
    return requirement, number


def check_number(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    min_inclusive: bool = True,
    max_inclusive: bool = True,
) -> float:
    """``value`` as a float when it is finite and within the bounds.

    Args:
        name: the parameter's name, used in the message (``"guidance_scale"``).
        value: the number given (int, float, numpy or 0-d torch scalar).
        minimum, maximum: bounds (None: unbounded on that side).
        min_inclusive, max_inclusive: whether the bound itself is allowed.

    Raises:
        UsageError: one line, e.g. ``guidance_scale must be finite and >= 0, got nan``.
    """
    requirement, number = _number_problem(value, minimum, maximum, min_inclusive, max_inclusive)
    if number is None:
        raise UsageError(f"{name} must be {requirement}, got {_show(value)}")
    return number


def _int_problem(value: Any, minimum: int | None, maximum: int | None) -> tuple[str, int | None]:
    bounds = _range_text(minimum, maximum, True, True)
    requirement = f"an integer {bounds}" if bounds else "an integer"
    if isinstance(value, (bool, str, bytes)):
        return requirement, None
    try:
        number = operator.index(value)  # int, numpy integer, 0-d integer tensor
    except TypeError:
        try:  # an integral float (20.0, e.g. read back from JSON) is accepted; 2.5, nan and inf are not
            as_float = float(value)
        except (TypeError, ValueError):
            return requirement, None
        if not (math.isfinite(as_float) and as_float.is_integer()):
            return requirement, None
        number = int(as_float)
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        return requirement, None
    return requirement, number


def check_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int when it is integral and within ``[minimum, maximum]`` (None: unbounded).

    Raises:
        UsageError: one line, e.g. ``num_inference_steps must be an integer >= 1, got 0``.
    """
    requirement, number = _int_problem(value, minimum, maximum)
    if number is None:
        raise UsageError(f"{name} must be {requirement}, got {_show(value)}")
    return number


def check_positive_int(name: str, value: Any) -> int:
    """``check_int(name, value, minimum=1)``: counts such as steps, images and batch sizes."""
    return check_int(name, value, minimum=1)


def check_finite_values(name: str, values: Any) -> None:
    """Refuse an array or tensor that holds NaN or infinity, naming the parameter and the first bad row.

    Args:
        name: the parameter's name (``"image_embeds"``).
        values: a torch tensor or anything ``numpy.asarray`` takes; rows are the first axis.

    Raises:
        UsageError: ``image_embeds must be finite; row 1 holds NaN or infinity``.
    """
    import numpy as np

    try:
        import torch

        if isinstance(values, torch.Tensor):
            values = values.detach().float().cpu().numpy()
    except ImportError:  # pragma: no cover - torch is a dependency; keep the helper usable without it
        pass
    array = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(array)
    if finite.all():
        return
    if array.ndim == 0:
        raise UsageError(f"{name} must be finite, got {array.item()}")
    bad_rows = np.flatnonzero(~finite.reshape(array.shape[0], -1).all(axis=1))
    raise UsageError(
        f"{name} must be finite; row {int(bad_rows[0])} holds NaN or infinity "
        f"({len(bad_rows)} of {array.shape[0]} rows do)"
    )


# ---------------------------------------------------------------------- CLI flags


def check_flags(
    args: Any,
    numbers: Mapping[str, Mapping[str, Any]] | None = None,
    integers: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Check numeric command-line flags once, before any work, naming the flag in the error.

    Args:
        args: the parsed ``argparse.Namespace``; ``--guidance-scale`` is read from ``args.guidance_scale``.
            A flag whose value is None (not given, no default) is skipped; a list (``nargs="+"``) is
            checked value by value.
        numbers: flag -> the bounds of :func:`check_number` (``{"minimum": 0.0}``).
        integers: flag -> the bounds of :func:`check_int`.

    Raises:
        UsageError: ``--guidance-scale must be finite and >= 0, got nan`` (the CLI exits with status 2).
    """
    for table, check in ((numbers or {}, check_number), (integers or {}, check_int)):
        for flag, bounds in table.items():
            value = getattr(args, flag.lstrip("-").replace("-", "_"), None)
            for item in value if isinstance(value, (list, tuple)) else [value]:
                if item is not None:
                    check(flag, item, **bounds)
