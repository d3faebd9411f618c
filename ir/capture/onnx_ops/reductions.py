"""ONNX reductions: Reduce*, ArgMax/ArgMin, TopK, CumSum/CumProd, Softmax/LogSoftmax/Hardmax."""
from __future__ import annotations

import math

import torch

from fxopt.ir.capture.onnx_ops.base import Ctx, axes_arg, rule, scalar, tensor


# ---------------------------------------------------------------------------------------------- reductions
def _reduce_axes(ctx: Ctx, inputs: list, attrs: dict) -> list | None:
    axes = axes_arg(inputs, attrs, 1)
    return axes


def _empty_extreme(x: torch.Tensor, axes: list, keep: bool, op: str) -> torch.Tensor:
    """ReduceMax/ReduceMin over an empty extent: the dtype's lowest/highest value (-inf/inf for floats)."""
    if x.dtype == torch.bool:
        fill = op != "ReduceMax"
    elif x.dtype.is_floating_point:
        fill = -math.inf if op == "ReduceMax" else math.inf
    else:
        info = torch.iinfo(x.dtype)
        fill = info.min if op == "ReduceMax" else info.max
    shape = [1 if i in axes else d for i, d in enumerate(x.shape) if keep or i not in axes]
    return torch.full(shape, fill, dtype=x.dtype)


@rule("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
      "ReduceSumSquare", "ReduceLogSumExp", "ReduceLogSum")
def _reduce(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX Reduce* ops: axes from the attribute or input; empty axes reduce everything unless
    noop_with_empty_axes; reductions over an empty extent give the op's identity value."""
    x = tensor(inputs[0])
    axes = _reduce_axes(ctx, inputs, attrs)
    keep = bool(attrs.get("keepdims", 1))
    if not axes:
        if attrs.get("noop_with_empty_axes", 0):
            return [x]
        axes = list(range(x.dim()))
    axes = [a + x.dim() if a < 0 else a for a in axes]
    op = ctx.op
    if op in ("ReduceMax", "ReduceMin") and any(isinstance(x.shape[a], int) and x.shape[a] == 0 for a in axes):
        return [_empty_extreme(x, axes, keep, op)]
    if op == "ReduceSum":
        return [torch.sum(x, axes, keepdim=keep)]
    if op == "ReduceMean":
        return [torch.mean(x, axes, keepdim=keep)]
    if op == "ReduceMax":
        return [torch.amax(x, axes, keepdim=keep)]
    if op == "ReduceMin":
        return [torch.amin(x, axes, keepdim=keep)]
    if op == "ReduceSumSquare":
        return [torch.sum(x * x, axes, keepdim=keep)]
    if op == "ReduceL1":
        return [torch.sum(torch.abs(x), axes, keepdim=keep)]
    if op == "ReduceL2":
        return [torch.sqrt(torch.sum(x * x, axes, keepdim=keep))]
    if op == "ReduceLogSum":
        return [torch.log(torch.sum(x, axes, keepdim=keep))]
    if op == "ReduceLogSumExp":
        return [torch.logsumexp(x, axes, keepdim=keep)]
    for a in sorted(axes, reverse=True):  # ReduceProd
        x = torch.prod(x, a, keepdim=keep)
    return [x]


@rule("ArgMax", "ArgMin")
def _argmax(ctx: Ctx, inputs: list, attrs: dict) -> list:
    x = tensor(inputs[0])
    axis, keep = attrs.get("axis", 0), bool(attrs.get("keepdims", 1))
    fn = torch.argmax if ctx.op == "ArgMax" else torch.argmin
    if attrs.get("select_last_index", 0):
        axis = axis + x.dim() if axis < 0 else axis
        flipped = fn(torch.flip(x, [axis]), axis, keepdim=keep)
        return [x.shape[axis] - 1 - flipped]
    return [fn(x, axis, keepdim=keep)]


@rule("TopK")
def _topk(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX TopK: the k largest/smallest along ``axis``; ties keep the lower index first (a stable sort,
    since torch.topk orders ties arbitrarily)."""
    x = tensor(inputs[0])
    k = scalar(inputs[1], "k") if len(inputs) > 1 else attrs["k"]
    axis = attrs.get("axis", -1)
    largest = bool(attrs.get("largest", 1))
    key, restore = _sort_key(x)
    values, indices = torch.sort(key, dim=axis, descending=largest, stable=True)
    values, indices = torch.narrow(values, axis, 0, k), torch.narrow(indices, axis, 0, k)
    return [restore(values), indices]


_INT64_MIN = torch.iinfo(torch.int64).min


def _sort_key(x: torch.Tensor) -> tuple:
    """A tensor torch can sort in ``x``'s order, and the function mapping sorted keys back to values
    (unsigned ints, which torch's sort lacks, go through int64; uint64 with its sign bit flipped)."""
    if x.dtype == torch.uint64:
        key = torch.bitwise_xor(x.to(torch.int64), _INT64_MIN)
        return key, lambda v: torch.bitwise_xor(v, _INT64_MIN).to(torch.uint64)
    if x.dtype in (torch.uint16, torch.uint32):
        return x.to(torch.int64), lambda v: v.to(x.dtype)
    return x, lambda v: v


@rule("CumSum", "CumProd")
def _cumulative(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX CumSum / CumProd along the ``axis`` input, with ``reverse`` and ``exclusive``."""
    x, axis = tensor(inputs[0]), scalar(inputs[1], "axis")
    axis = axis + x.dim() if axis < 0 else axis
    reverse = bool(attrs.get("reverse", 0))
    if reverse:
        x = torch.flip(x, [axis])
    if ctx.op == "CumSum":
        out = torch.cumsum(x, axis, dtype=x.dtype)
        if attrs.get("exclusive", 0):
            out = out - x
    else:
        out = torch.cumprod(x, axis, dtype=x.dtype)
        if attrs.get("exclusive", 0):  # shift by one: [1, p0, p0*p1, ...] (no division, x may hold zeros)
            first = torch.ones_like(torch.narrow(x, axis, 0, 1))
            out = torch.cat([first, torch.narrow(out, axis, 0, x.shape[axis] - 1)], axis)
    return [torch.flip(out, [axis]) if reverse else out]


def _hardmax(x: torch.Tensor, axis: int) -> torch.Tensor:
    """1 at the first maximum along ``axis``, 0 elsewhere."""
    axis = axis + x.dim() if axis < 0 else axis
    if x.shape[axis] == 0:
        return x
    idx = torch.argmax(x, axis, keepdim=True)
    return torch.zeros_like(x).scatter(axis, idx, torch.ones_like(idx, dtype=x.dtype))


@rule("Softmax", "LogSoftmax", "Hardmax")
def _softmax(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX Softmax / LogSoftmax / Hardmax along ``axis`` (before opset 13: over the dims from axis on,
    flattened)."""
    x = tensor(inputs[0])
    fn = {"Softmax": torch.softmax, "LogSoftmax": torch.log_softmax, "Hardmax": _hardmax}[ctx.op]
    if ctx.opset >= 13:
        return [fn(x, attrs.get("axis", -1))]
    axis = attrs.get("axis", 1)  # opset < 13: softmax over the dims from axis on, flattened
    axis = axis + x.dim() if axis < 0 else axis
    flat = torch.reshape(x, (math.prod(x.shape[:axis]) if axis else 1, -1))
    return [torch.reshape(fn(flat, 1), x.shape)]
