"""ONNX reductions: Reduce*, ArgMax/ArgMin, TopK, CumSum, Softmax/LogSoftmax."""
from __future__ import annotations

import math

import torch

from fxopt.ir.capture.onnx_ops.base import Ctx, axes_arg, rule, scalar, tensor


# ---------------------------------------------------------------------------------------------- reductions
def _reduce_axes(ctx: Ctx, inputs: list, attrs: dict) -> list | None:
    axes = axes_arg(inputs, attrs, 1)
    return axes


@rule("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
      "ReduceSumSquare", "ReduceLogSumExp")
def _reduce(ctx: Ctx, inputs: list, attrs: dict) -> list:
    x = tensor(inputs[0])
    axes = _reduce_axes(ctx, inputs, attrs)
    keep = bool(attrs.get("keepdims", 1))
    if not axes:
        if attrs.get("noop_with_empty_axes", 0):
            return [x]
        axes = list(range(x.dim()))
    axes = [a + x.dim() if a < 0 else a for a in axes]
    op = ctx.op
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
    x = tensor(inputs[0])
    k = scalar(inputs[1], "k") if len(inputs) > 1 else attrs["k"]
    values, indices = torch.topk(x, k, dim=attrs.get("axis", -1), largest=bool(attrs.get("largest", 1)),
                                 sorted=bool(attrs.get("sorted", 1)))
    return [values, indices]


@rule("CumSum")
def _cumsum(ctx: Ctx, inputs: list, attrs: dict) -> list:
    x, axis = tensor(inputs[0]), scalar(inputs[1], "axis")
    if attrs.get("reverse", 0):
        out = torch.flip(torch.cumsum(torch.flip(x, [axis]), axis), [axis])
    else:
        out = torch.cumsum(x, axis)
    if attrs.get("exclusive", 0):
        out = out - x
    return [out]


@rule("Softmax", "LogSoftmax")
def _softmax(ctx: Ctx, inputs: list, attrs: dict) -> list:
    x = tensor(inputs[0])
    fn = torch.softmax if ctx.op == "Softmax" else torch.log_softmax
    if ctx.opset >= 13:
        return [fn(x, attrs.get("axis", -1))]
    axis = attrs.get("axis", 1)  # opset < 13: softmax over the dims from axis on, flattened
    axis = axis + x.dim() if axis < 0 else axis
    flat = torch.reshape(x, (math.prod(x.shape[:axis]) if axis else 1, -1))
    return [torch.reshape(fn(flat, 1), x.shape)]
