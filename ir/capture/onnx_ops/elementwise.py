"""Elementwise ONNX ops: arithmetic, comparisons, logic, activations, Clip, Where."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from fxopt.ir.capture.onnx_ops.base import (
    Ctx, Known, KNOWN_BINARY, all_known, as_str, bcast_known, binary_operands, known_binary, rule, tensor,
)


# ---------------------------------------------------------------------------------------------- elementwise
_BINARY_TORCH = {
    "Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Equal": torch.eq, "Less": torch.lt,
    "Greater": torch.gt, "LessOrEqual": torch.le, "GreaterOrEqual": torch.ge, "And": torch.logical_and,
    "Or": torch.logical_or, "Xor": torch.logical_xor, "Pow": torch.pow, "BitwiseAnd": torch.bitwise_and,
    "BitwiseOr": torch.bitwise_or,
}


@rule("Add", "Sub", "Mul", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor",
      "Pow", "BitwiseAnd", "BitwiseOr")
def _binary(ctx: Ctx, inputs: list, attrs: dict) -> list:
    a, b = inputs
    if ctx.op in KNOWN_BINARY and all_known(inputs):
        return [known_binary(ctx.op, a, b)]
    if ctx.op == "Pow":
        a, b = tensor(a), (tensor(b) if not isinstance(b, Known) or b.shape else b.scalar())
        return [torch.pow(a, b).to(a.dtype)]
    x, y = binary_operands(a, b)
    if not isinstance(x, torch.Tensor):  # python scalar op tensor
        x = torch.scalar_tensor(x, dtype=y.dtype)
    return [_BINARY_TORCH[ctx.op](x, y)]


@rule("Div")
def _div(ctx: Ctx, inputs: list, attrs: dict) -> list:
    if all_known(inputs):
        return [known_binary("Div", *inputs)]
    x, y = binary_operands(*inputs)
    if not isinstance(x, torch.Tensor):
        x = torch.scalar_tensor(x, dtype=y.dtype)
    if x.dtype.is_floating_point:
        return [torch.div(x, y)]
    return [torch.div(x, y, rounding_mode="trunc")]


@rule("Mod")
def _mod(ctx: Ctx, inputs: list, attrs: dict) -> list:
    x, y = binary_operands(*inputs)
    return [torch.fmod(x, y) if attrs.get("fmod", 0) else torch.remainder(x, y)]


@rule("Max", "Min", "Sum", "Mean")
def _variadic(ctx: Ctx, inputs: list, attrs: dict) -> list:
    if ctx.op in ("Max", "Min") and all_known(inputs):
        out = inputs[0]
        for v in inputs[1:]:
            out = known_binary(ctx.op, out, v)
        return [out]
    ts = [tensor(v) for v in inputs]
    out = ts[0]
    fn = {"Max": torch.maximum, "Min": torch.minimum, "Sum": torch.add, "Mean": torch.add}[ctx.op]
    for t in ts[1:]:
        out = fn(out, t)
    return [out / len(ts) if ctx.op == "Mean" else out]


_UNARY: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "Relu": torch.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Erf": torch.erf, "Exp": torch.exp,
    "Log": torch.log, "Sqrt": torch.sqrt, "Abs": torch.abs, "Reciprocal": torch.reciprocal,
    "Floor": torch.floor, "Ceil": torch.ceil, "Sin": torch.sin, "Cos": torch.cos, "Not": torch.logical_not,
    "Softplus": F.softplus, "Sign": torch.sign, "Round": torch.round, "IsNaN": torch.isnan,
    "Softsign": F.softsign, "Mish": F.mish,
}


@rule(*_UNARY)
def _unary(ctx: Ctx, inputs: list, attrs: dict) -> list:
    if ctx.op == "Not" and all_known(inputs):
        k = inputs[0]
        return [Known([not x for x in k.data], k.shape, torch.bool)]
    return [_UNARY[ctx.op](tensor(inputs[0]))]


@rule("Neg")
def _neg(ctx: Ctx, inputs: list, attrs: dict) -> list:
    x = inputs[0]
    if isinstance(x, Known):
        return [Known([-v for v in x.data], x.shape, x.dtype)]
    return [torch.neg(x)]


@rule("Gelu")
def _gelu(ctx: Ctx, inputs: list, attrs: dict) -> list:
    return [F.gelu(tensor(inputs[0]), approximate=as_str(attrs.get("approximate", "none")))]


@rule("LeakyRelu")
def _leaky(ctx: Ctx, inputs: list, attrs: dict) -> list:
    return [F.leaky_relu(tensor(inputs[0]), attrs.get("alpha", 0.01))]


@rule("Elu")
def _elu(ctx: Ctx, inputs: list, attrs: dict) -> list:
    return [F.elu(tensor(inputs[0]), attrs.get("alpha", 1.0))]


@rule("HardSigmoid")
def _hard_sigmoid(ctx: Ctx, inputs: list, attrs: dict) -> list:
    x = tensor(inputs[0])
    return [torch.clamp(x * attrs.get("alpha", 0.2) + attrs.get("beta", 0.5), 0.0, 1.0)]


@rule("HardSwish")
def _hard_swish(ctx: Ctx, inputs: list, attrs: dict) -> list:
    return [F.hardswish(tensor(inputs[0]))]


@rule("Clip")
def _clip(ctx: Ctx, inputs: list, attrs: dict) -> list:
    x = tensor(inputs[0])
    lo = inputs[1] if len(inputs) > 1 else None
    hi = inputs[2] if len(inputs) > 2 else None
    lo = attrs.get("min") if lo is None else lo
    hi = attrs.get("max") if hi is None else hi
    lo = lo.scalar() if isinstance(lo, Known) else lo
    hi = hi.scalar() if isinstance(hi, Known) else hi
    if lo is None and hi is None:
        return [x]
    return [torch.clamp(x, lo, hi)]


@rule("Where")
def _where(ctx: Ctx, inputs: list, attrs: dict) -> list:
    c, a, b = inputs
    if all_known(inputs):
        cs, xs, _ = bcast_known(c, a)
        cs2, ys, shape = bcast_known(Known(cs, c.shape if len(c.data) >= len(a.data) else a.shape, c.dtype), b)
        xs2 = xs if len(xs) == len(cs2) else xs * len(cs2)
        return [Known([x if bool(k) else y for k, x, y in zip(cs2, xs2, ys)], shape, a.dtype)]
    x, y = binary_operands(a, b)
    return [torch.where(tensor(c), x, y)]
