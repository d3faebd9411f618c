"""Operators fxopt's rewrites emit that ATen lacks in a traceable form, registered as ``torch.ops.fxopt.*``.

``fxopt::grouped_mm(rows [N, in], weights [E, in, out], ends [E] int32) -> [N, out]``: rows sorted by group,
group ``e`` owns rows ``ends[e-1]:ends[e]`` and is multiplied by ``weights[e]`` (a segment matmul, as routed
mixture-of-experts layers need). ATen's ``_grouped_mm`` computes exactly this and has a CPU kernel, but its
meta function accepts only bfloat16, so a float32 graph using it cannot be shape-propagated (FakeTensor) or
exported; this op wraps it with a dtype-agnostic fake implementation, and falls back to one ``mm`` per group
where the ATen kernel does not apply (no ``_grouped_mm`` in this PyTorch, another dtype, a stride not a
multiple of 16 bytes). Registering happens on import of :mod:`fxopt.ir`, so saved graphs that use the op
load wherever fxopt is installed.
"""
from __future__ import annotations

import torch

_KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _aten_kernel_applies(rows: torch.Tensor, weights: torch.Tensor) -> bool:
    if not hasattr(torch.ops.aten, "_grouped_mm") or rows.dtype not in _KERNEL_DTYPES:
        return False
    if weights.dtype != rows.dtype or rows.device != weights.device:
        return False
    size = rows.element_size()
    return all(s * size % 16 == 0 for s in (*rows.stride()[:-1], *weights.stride()) if s != 1)


def grouped_mm(rows: torch.Tensor, weights: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    """Takes rows [N, in] sorted by group, weights [E, in, out] and each group's int32 end offset [E] (the
    last equal to N); returns [N, out], row ``i`` of group ``e`` times ``weights[e]``."""
    if _aten_kernel_applies(rows, weights):
        try:
            return torch.ops.aten._grouped_mm.default(rows, weights, ends)
        except RuntimeError:   # a layout rule of the kernel's (checked before it computes): loop instead
            pass
    out = rows.new_empty(rows.shape[0], weights.shape[2])
    start = 0
    for e, end in enumerate(ends.tolist()):
        torch.mm(rows[start:end], weights[e], out=out[start:end])
        start = end
    return out


def _grouped_mm_fake(rows: torch.Tensor, weights: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    return rows.new_empty(rows.shape[0], weights.shape[2])


# torch.library.custom_op would do, but its Python wrappers cost ~55 us a call here (measured); a plain
# library definition with one kernel for every backend costs ~1 us over the ATen call
_LIB = torch.library.Library("fxopt", "DEF")
_LIB.define("grouped_mm(Tensor rows, Tensor weights, Tensor ends) -> Tensor")
_LIB.impl("grouped_mm", grouped_mm, "CompositeExplicitAutograd")
torch.library.register_fake("fxopt::grouped_mm", _grouped_mm_fake, lib=_LIB)
