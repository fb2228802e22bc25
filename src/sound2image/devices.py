"""Choosing the device and the weights dtype: one policy for every model family.

``"auto"`` means CUDA when there is a GPU, else Apple MPS, else the CPU, and float16 on CUDA, float32
elsewhere. torch is imported when a function is called, not when this module is imported.
"""

from __future__ import annotations

from typing import Any

from sound2image.errors import UsageError

#: Short dtype names -> torch attribute names (the long names are accepted too).
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
#: An Image Transformer decoder's weight dtypes (``--decoder-dtype``; see ``ImageTransformer.half_decoder``).
DECODER_DTYPES = ("float32", "float16", "bfloat16")


def resolve_device(device: Any = "auto", parameter: str = "device") -> str:
    """The device to use: ``"auto"``/None picks cuda, else mps, else cpu; any other name (or a
    ``torch.device``) is checked to exist here.

    Raises:
        UsageError: an unknown device, or one this machine lacks; the message starts with ``parameter``
            and the name (``device cuda:1: CUDA is not available on this machine``).
    """
    import torch

    if device is None or device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    name = str(device)
    try:
        parsed = torch.device(name)
    except RuntimeError:
        raise UsageError(
            f"{parameter} {name}: unknown device (use auto, cpu, cuda, cuda:N or mps)", parameters=[parameter]
        ) from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"{parameter} {name}: CUDA is not available on this machine", parameters=[parameter])
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(
            f"{parameter} {name}: Apple MPS is not available on this machine", parameters=[parameter]
        )
    return name


def resolve_dtype(dtype: Any, device: str, parameter: str = "dtype") -> Any:
    """The weights dtype: ``"auto"``/None is float16 on CUDA, else float32; ``"fp32"``, ``"fp16"``,
    ``"bf16"``, ``"float32"``, ... or a ``torch.dtype`` are taken as given.

    Raises:
        UsageError: an unknown name, or a half-precision dtype on the CPU (its kernels are missing or slow
            there): ``dtype fp16 is not supported on CPU; use fp32``.
    """
    import torch

    if dtype is None or dtype == "auto":
        dtype = "fp16" if str(device).startswith("cuda") else "fp32"
    if isinstance(dtype, torch.dtype):
        value, name = dtype, str(dtype).removeprefix("torch.")
    else:
        name = str(dtype)
        value = getattr(torch, DTYPES.get(name, name), None)
        if not isinstance(value, torch.dtype) or value not in (torch.float32, torch.float16, torch.bfloat16):
            raise UsageError(
                f"{parameter} {name}: unknown dtype (use auto, fp32, fp16 or bf16)", parameters=[parameter]
            )
    if str(device).startswith("cpu") and value != torch.float32:
        raise UsageError(f"{parameter} {name} is not supported on CPU; use fp32", parameters=[parameter])
    return value
