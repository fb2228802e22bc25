"""Linear layers that keep their weights in half precision: half the bytes per weight, for faster CPU
sampling.

At batch 1 a sampling step of the paper-size Image Transformer multiplies one row by 22 M weights. In
float32 that is 89 MB read from memory per pixel, more than this class of CPU's last-level cache, so the
step is bound by memory bandwidth (``bench/results/bench_kv_cache.txt``). In float16 the same products
read 45 MB and took 3.0 instead of 7.3 ms on the project's 2-core CPU. Weight-only int8 (PyTorch's
``_weight_int8pack_mm``) was measured too: 17 ms on this AVX2 CPU, slower than float32, so it is not
offered.

Only the matrix products run in half precision: a :class:`HalfLinear` casts its input to the weights'
dtype and its output back, so layer norms, residuals, attention and the KV cache stay in float32 (CPU
attention in half precision was 6-8× slower).

Inside a compiled sampling step (``ImageTransformer.compile_decode_step``) a product of one or two rows is
written out (:func:`summed_products`) instead of calling PyTorch's half-precision matrix product: inductor
then reads the half-precision weights in one fused, vectorised loop that converts and sums them in float32,
at close to the memory's speed, where the library's one-row product read them at about half of it (the
37 products of a paper-size step: 1.0 against 2.0 ms on a 2-core AVX-512 CPU,
``bench/results/bench_kv_cache.txt``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: The weight dtypes :class:`HalfLinear` takes, by name.
HALF_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}

#: Up to how many rows a compiled sampling step writes its products (:func:`summed_products`) and its
#: attention (``attention.one_query_attention``) out. Measured on the paper-size float16 step (2-core
#: AVX-512 CPU), the products: 1 row 1.27x, 2 rows (batch 1 with guidance) 1.08x faster than the
#: library's product, 4 rows 0.97x.
WRITTEN_OUT_ROWS = 2


def writes_out(rows: int) -> bool:
    """Whether this call, on ``rows`` rows, is being traced into a compiled step that writes it out."""
    return rows <= WRITTEN_OUT_ROWS and torch.compiler.is_compiling()


def summed_products(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """:class:`HalfLinear`'s arithmetic written out: ``x`` (..., K) -> (..., N) in ``x``'s dtype.

    The input rounded to the weights' dtype, each product of two half-precision numbers (exact in
    float32) summed in float32, the bias added, the sum rounded to the weights' dtype and cast back: what
    PyTorch's half-precision ``F.linear`` computes on a CPU (it sums in float32; measured: the two round to
    different neighbours in ~0.1 % of the outputs, from the order of the float32 sums). Materialises a
    (..., N, K) product when run eagerly: meant for a compiled graph, where inductor fuses it into one
    loop per output (compile with ``emulate_precision_casts`` so that it keeps the two roundings).
    """
    dtype = weight.dtype
    y = (x.to(dtype).float()[..., None, :] * weight.float()).sum(-1)  # (..., N)
    if bias is not None:
        y = y + bias.float()
    return y.to(dtype).to(x.dtype)


class HalfLinear(nn.Module):
    """``nn.Linear`` for inference with float16 or bfloat16 weights: ``x`` (..., K) -> (..., N), in
    ``x``'s dtype.

    Computes ``F.linear(x.to(dtype), weight, bias).to(x.dtype)``: each input is rounded to ``dtype``, the
    products are summed by PyTorch's half-precision kernel and the result is rounded to ``dtype`` before
    the cast back (float16: about 3 significant decimal digits, bfloat16: about 2). Each output row
    depends on its own input row only. Build one with :meth:`from_linear`; the module has buffers, no
    parameters (it is not trainable).
    """

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, dtype: torch.dtype = torch.float16
    ):
        super().__init__()
        if dtype not in HALF_DTYPES.values():
            raise ValueError(f"HalfLinear takes float16 or bfloat16 weights, not {dtype}")
        self.in_features = in_features
        self.out_features = out_features
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=dtype))
        self.register_buffer("bias", torch.zeros(out_features, dtype=dtype) if bias else None)

    @classmethod
    def from_linear(cls, linear: nn.Linear, dtype: torch.dtype = torch.float16) -> HalfLinear:
        """``linear``'s weights rounded to ``dtype`` (nearest), on the same device."""
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, dtype)
        layer.weight = linear.weight.detach().to(dtype).contiguous()
        if linear.bias is not None:
            layer.bias = linear.bias.detach().to(dtype)
        return layer.to(linear.weight.device)

    def forward(self, x: torch.Tensor, write_out: bool = True) -> torch.Tensor:
        """``x`` (..., K) -> (..., N). In a compiled graph, up to :data:`WRITTEN_OUT_ROWS` rows go through
        :func:`summed_products` (the same arithmetic) unless ``write_out`` is False: a caller whose input is
        an expensive elementwise function passes False, as inductor would fuse that function into the loop
        and compute it once per output instead of once per input."""
        if write_out and writes_out(x.numel() // max(1, x.shape[-1])):
            return summed_products(x, self.weight, self.bias)
        return F.linear(x.to(self.weight.dtype), self.weight, self.bias).to(x.dtype)

    def extra_repr(self) -> str:
        shape = f"in_features={self.in_features}, out_features={self.out_features}"
        return f"{shape}, bias={self.bias is not None}, dtype={self.weight.dtype}"


def linear(x: torch.Tensor, layer: nn.Module, write_out: bool = True) -> torch.Tensor:
    """Apply an ``nn.Linear`` or :class:`HalfLinear` ``layer`` to ``x`` (``write_out``: see
    :meth:`HalfLinear.forward`).

    For ``nn.Linear``, ``F.linear`` directly: the sampling step's fast path skips the module call.
    """
    if type(layer) is nn.Linear:
        return F.linear(x, layer.weight, layer.bias)
    return layer(x, write_out)


def half_linears(module: nn.Module, dtype: torch.dtype = torch.float16, skip: tuple[str, ...] = ()) -> int:
    """Replace every ``nn.Linear`` inside ``module`` by its :class:`HalfLinear`, in place.

    Args:
        module: the module to change (its submodules are replaced, ``module`` itself is not).
        dtype: ``torch.float16`` or ``torch.bfloat16``.
        skip: names (relative to ``module``, as ``named_modules`` gives them) to leave in float32.

    Returns:
        How many layers were replaced.
    """
    targets = [
        name
        for name, child in module.named_modules()
        if name and type(child) is nn.Linear and name not in skip  # not ``module`` itself
    ]
    for name in targets:
        parent_name, _, attribute = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, attribute, HalfLinear.from_linear(getattr(parent, attribute), dtype))
    return len(targets)
