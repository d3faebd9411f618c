"""Verification after a pass: the graph is well-formed and computes what it computed before.

Tolerances by dtype (relative, absolute): float32 (1e-4, 1e-5) — passes may reassociate sums, e.g. batching
matmuls; float64 (1e-9, 1e-12); float16/bfloat16 (1e-2, 1e-3); integers and bools must match exactly.
"""
from __future__ import annotations

import torch
import torch.fx

TOLERANCES = {
    torch.float64: (1e-9, 1e-12),
    torch.float32: (1e-4, 1e-5),
    torch.float16: (1e-2, 1e-3),
    torch.bfloat16: (2e-2, 1e-2),
}


def lint(gm: torch.fx.GraphModule) -> str | None:
    """Run ``graph.lint()``; returns the problem as one line, or None when the graph is well-formed."""
    try:
        gm.graph.lint()
    except Exception as exc:  # noqa: BLE001 - lint raises plain RuntimeErrors
        return str(exc).strip().splitlines()[0]
    return None


def first_difference(expected: tuple, actual: tuple, scaled: bool = False) -> str | None:
    """Compare two flat output tuples; returns a one-line description of the first output that differs
    (index, what differs, max abs error) or None when all match within the dtype's tolerance.

    ``scaled``: the absolute tolerance of a floating-point output grows to ``rtol * max|expected|`` (for
    comparing another runtime's kernels, whose rounding differs near zero; passes use the strict check)."""
    if len(expected) != len(actual):
        return f"the graph now has {len(actual)} outputs instead of {len(expected)}"
    for i, (e, a) in enumerate(zip(expected, actual)):
        problem = _differs(e, a, scaled)
        if problem:
            return f"output {i}: {problem}"
    return None


def _differs(e, a, scaled: bool = False) -> str | None:
    if isinstance(e, torch.Tensor) != isinstance(a, torch.Tensor):
        return f"expected {type(e).__name__}, got {type(a).__name__}"
    if not isinstance(e, torch.Tensor):
        return None if e == a else f"expected {e!r}, got {a!r}"
    if e.dtype != a.dtype:
        return f"dtype changed from {e.dtype} to {a.dtype}"
    if e.shape != a.shape:
        return f"shape changed from {tuple(e.shape)} to {tuple(a.shape)}"
    if not (e.dtype.is_floating_point or e.dtype.is_complex):
        if torch.equal(e, a):
            return None
        return f"{int((e != a).sum())} of {e.numel()} {e.dtype} values differ (exact match required)"
    rtol, atol = TOLERANCES.get(e.dtype, (1e-4, 1e-5))
    if scaled and e.numel():
        finite = e[torch.isfinite(e)]
        if finite.numel():
            atol = max(atol, rtol * float(finite.abs().max()))
    if torch.allclose(a, e, rtol=rtol, atol=atol, equal_nan=True):
        return None
    err = (a.double() - e.double()).abs()
    err = torch.nan_to_num(err, nan=float("inf"))
    return f"max abs error {err.max().item():.3g} exceeds rtol={rtol:g}, atol={atol:g}"
