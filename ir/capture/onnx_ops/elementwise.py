"""Elementwise ONNX ops: arithmetic, comparisons, logic, bitwise ops and shifts, activations, Clip, Where.

torch computes little on uint16/uint32/uint64 (no add, compare, divide, shift...): those operands are carried
as int64 holding the same 64-bit pattern (zero-extended for uint16/uint32, reinterpreted for uint64), computed
on there, and narrowed back, which wraps modulo 2**bits like ONNX's unsigned arithmetic."""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F

from fxopt.ir.capture.onnx_ops.base import (
    Ctx, Known, KNOWN_BINARY, all_known, as_str, bcast_known, binary_operands, known_binary, rule, tensor,
)


# ---------------------------------------------------------------------------------------------- unsigned ints
_WIDE_UNSIGNED = (torch.uint16, torch.uint32, torch.uint64)  # the unsigned dtypes torch barely computes on
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1


def _dtype_of(*vals) -> torch.dtype | None:
    """The dtype of the first tensor among ``vals`` (the others may be Python scalars)."""
    return next((v.dtype for v in vals if isinstance(v, torch.Tensor)), None)


def _is_wide_unsigned(*vals) -> bool:
    """True when the operands are uint16/uint32/uint64 tensors (or Python scalars next to one)."""
    return _dtype_of(*vals) in _WIDE_UNSIGNED


def _widen(v) -> torch.Tensor:
    """An unsigned tensor or Python int as int64 with the same 64-bit pattern (uint64 >= 2**63 goes negative)."""
    if not isinstance(v, torch.Tensor):
        v = int(v)
        return torch.tensor(v - (1 << 64) if v > _INT64_MAX else v, dtype=torch.int64)
    return v.view(torch.int64) if v.dtype == torch.uint64 else v.to(torch.int64)


def _narrow(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The int64 pattern ``t`` back in the unsigned ``dtype``, keeping the low bits (wrap-around)."""
    return t.view(torch.uint64) if dtype == torch.uint64 else t.to(dtype)


def _key(t: torch.Tensor) -> torch.Tensor:
    """A widened value whose signed order is the unsigned order of its 64-bit pattern (flip the sign bit)."""
    return torch.bitwise_xor(t, _INT64_MIN)


def _logical_shr(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``t >> s`` filling with zeros (``0 <= s < 64``); torch's int64 ``>>`` is arithmetic."""
    once = torch.bitwise_and(torch.bitwise_right_shift(t, 1), _INT64_MAX)
    return torch.where(s == 0, t, torch.bitwise_right_shift(once, torch.clamp(s - 1, min=0)))


def _udivmod(n: torch.Tensor, d: torch.Tensor) -> tuple:
    """Unsigned 64-bit quotient and remainder of the widened ``n`` and ``d`` with signed int64 ops only."""
    big = d < 0  # d >= 2**63: the quotient is 0 or 1
    d_pos = torch.where(big, 1, d)
    # halve n so that it is non-negative, divide, double; the remainder is then < 2 * d: one correction step
    q = torch.bitwise_left_shift(torch.div(_logical_shr(n, torch.ones_like(n)), d_pos, rounding_mode="trunc"), 1)
    q = q + (_key(n - q * d_pos) >= _key(d_pos)).to(torch.int64)
    q = torch.where(big, (_key(n) >= _key(d)).to(torch.int64), q)
    return q, n - q * d


def _unsigned_binary(op: str, a, b) -> torch.Tensor:
    """ONNX binary ``op`` on uint16/uint32/uint64 operands, computed on their int64 patterns."""
    dtype = _dtype_of(a, b)
    x, y = _widen(a), _widen(b)
    if op in _UNSIGNED_COMPARE:
        return _UNSIGNED_COMPARE[op](_key(x), _key(y))
    if op in ("Max", "Min"):
        pick_x = _key(x) >= _key(y) if op == "Max" else _key(x) <= _key(y)
        return _narrow(torch.where(pick_x, x, y), dtype)
    if op in ("Div", "Mod"):
        if dtype == torch.uint64:
            out = _udivmod(x, y)[0 if op == "Div" else 1]
        else:  # zero-extended values are non-negative: the signed ops are exact
            out = torch.div(x, y, rounding_mode="trunc") if op == "Div" else torch.remainder(x, y)
        return _narrow(out, dtype)
    return _narrow(_UNSIGNED_ARITH[op](x, y), dtype)


_UNSIGNED_COMPARE = {"Equal": torch.eq, "Less": torch.lt, "Greater": torch.gt, "LessOrEqual": torch.le,
                     "GreaterOrEqual": torch.ge}
_UNSIGNED_ARITH = {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "BitwiseAnd": torch.bitwise_and,
                   "BitwiseOr": torch.bitwise_or, "BitwiseXor": torch.bitwise_xor}
_UNSIGNED_BINARY = {*_UNSIGNED_COMPARE, *_UNSIGNED_ARITH}


# ---------------------------------------------------------------------------------------------- elementwise
_BINARY_TORCH = {
    "Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Equal": torch.eq, "Less": torch.lt,
    "Greater": torch.gt, "LessOrEqual": torch.le, "GreaterOrEqual": torch.ge, "And": torch.logical_and,
    "Or": torch.logical_or, "Xor": torch.logical_xor, "Pow": torch.pow, "BitwiseAnd": torch.bitwise_and,
    "BitwiseOr": torch.bitwise_or, "BitwiseXor": torch.bitwise_xor,
}


@rule("Add", "Sub", "Mul", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor",
      "Pow", "BitwiseAnd", "BitwiseOr", "BitwiseXor")
def _binary(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """The broadcasting binary arithmetic, comparison, logical and bitwise ops (Known in, Known out)."""
    a, b = inputs
    if ctx.op in KNOWN_BINARY and all_known(inputs):
        return [known_binary(ctx.op, a, b)]
    if ctx.op == "Pow":
        a, b = tensor(a), (tensor(b) if not isinstance(b, Known) or b.shape else b.scalar())
        return [torch.pow(a, b).to(a.dtype)]
    x, y = binary_operands(a, b)
    if _is_wide_unsigned(x, y) and ctx.op in _UNSIGNED_BINARY:
        return [_unsigned_binary(ctx.op, x, y)]
    if not isinstance(x, torch.Tensor):  # python scalar op tensor
        x = torch.scalar_tensor(x, dtype=y.dtype)
    return [_BINARY_TORCH[ctx.op](x, y)]


@rule("Div")
def _div(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX Div: true division for floats, truncating division for integers."""
    if all_known(inputs):
        return [known_binary("Div", *inputs)]
    x, y = binary_operands(*inputs)
    if _is_wide_unsigned(x, y):
        return [_unsigned_binary("Div", x, y)]
    if not isinstance(x, torch.Tensor):
        x = torch.scalar_tensor(x, dtype=y.dtype)
    if x.dtype.is_floating_point:
        return [torch.div(x, y)]
    return [torch.div(x, y, rounding_mode="trunc")]


@rule("Mod")
def _mod(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX Mod: the divisor's sign (integer ``fmod=0``) or the dividend's (``fmod=1``, C fmod)."""
    if not attrs.get("fmod", 0) and all_known(inputs) and all(
            isinstance(v, int) for k in inputs for v in k.data):
        return [known_binary("Mod", *inputs)]  # shape arithmetic (Python's % has the divisor's sign)
    x, y = binary_operands(*inputs)
    if _is_wide_unsigned(x, y):  # both conventions agree on unsigned values
        return [_unsigned_binary("Mod", x, y)]
    return [torch.fmod(x, y) if attrs.get("fmod", 0) else torch.remainder(x, y)]


@rule("Max", "Min", "Sum", "Mean")
def _variadic(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX Max/Min/Sum/Mean over any number of broadcasting inputs."""
    if ctx.op in ("Max", "Min") and all_known(inputs):
        out = inputs[0]
        for v in inputs[1:]:
            out = known_binary(ctx.op, out, v)
        return [out]
    ts = [tensor(v) for v in inputs]
    out = ts[0]
    fn = {"Max": torch.maximum, "Min": torch.minimum, "Sum": torch.add, "Mean": torch.add}[ctx.op]
    unsigned_op = {"Max": "Max", "Min": "Min", "Sum": "Add"}.get(ctx.op)
    for t in ts[1:]:
        out = _unsigned_binary(unsigned_op, out, t) if unsigned_op and _is_wide_unsigned(out, t) else fn(out, t)
    return [out / len(ts) if ctx.op == "Mean" else out]


_UNARY: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "Relu": torch.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Erf": torch.erf, "Exp": torch.exp,
    "Log": torch.log, "Sqrt": torch.sqrt, "Abs": torch.abs, "Reciprocal": torch.reciprocal,
    "Floor": torch.floor, "Ceil": torch.ceil, "Sin": torch.sin, "Cos": torch.cos, "Not": torch.logical_not,
    "Softplus": F.softplus, "Sign": torch.sign, "Round": torch.round, "IsNaN": torch.isnan,
    "Softsign": F.softsign, "Mish": F.mish, "Tan": torch.tan, "Asin": torch.asin, "Acos": torch.acos,
    "Atan": torch.atan, "Sinh": torch.sinh, "Cosh": torch.cosh, "Asinh": torch.asinh, "Acosh": torch.acosh,
    "Atanh": torch.atanh,
}


# unary ops computed in Python on Known values (Python's round() rounds half to even, as ONNX's Round does)
_KNOWN_UNARY: dict[str, Callable[[Any], Any]] = {
    "Ceil": math.ceil, "Floor": math.floor, "Abs": abs, "Round": round, "Relu": lambda v: max(v, 0),
    "Sign": lambda v: (v > 0) - (v < 0),
}


@rule(*_UNARY)
def _unary(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """The attribute-free unary math ops and activations (``Not`` on a Known stays Known)."""
    if ctx.op == "Not" and all_known(inputs):
        k = inputs[0]
        return [Known([not x for x in k.data], k.shape, torch.bool)]
    if ctx.op in _KNOWN_UNARY and all_known(inputs) and all(isinstance(v, (int, float)) for v in inputs[0].data):
        k = inputs[0]  # shape arithmetic in Python (Range's trip count: Ceil(Div(Sub(limit, start), delta)))
        data = [_KNOWN_UNARY[ctx.op](v) for v in k.data]
        return [Known([float(v) for v in data] if k.dtype.is_floating_point else [int(v) for v in data],
                      k.shape, k.dtype)]
    x = tensor(inputs[0])
    if _is_wide_unsigned(x) and ctx.op in ("Abs", "Sign"):  # torch has neither kernel for these dtypes
        return [x if ctx.op == "Abs" else (x != 0).to(x.dtype)]
    return [_UNARY[ctx.op](x)]


@rule("Neg")
def _neg(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX Neg (Known in, Known out)."""
    x = inputs[0]
    if isinstance(x, Known):
        return [Known([-v for v in x.data], x.shape, x.dtype)]
    return [torch.neg(x)]


@rule("Gelu")
def _gelu(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX Gelu, exact or tanh-approximated."""
    return [F.gelu(tensor(inputs[0]), approximate=as_str(attrs.get("approximate", "none")))]


@rule("LeakyRelu")
def _leaky(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX LeakyRelu."""
    return [F.leaky_relu(tensor(inputs[0]), attrs.get("alpha", 0.01))]


@rule("Elu")
def _elu(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX Elu."""
    return [F.elu(tensor(inputs[0]), attrs.get("alpha", 1.0))]


@rule("HardSigmoid")
def _hard_sigmoid(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX HardSigmoid: clamp(alpha * x + beta, 0, 1)."""
    x = tensor(inputs[0])
    return [torch.clamp(x * attrs.get("alpha", 0.2) + attrs.get("beta", 0.5), 0.0, 1.0)]


@rule("HardSwish")
def _hard_swish(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX HardSwish."""
    return [F.hardswish(tensor(inputs[0]))]


@rule("Clip")
def _clip(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX Clip: min/max as attributes (opset < 11) or optional inputs."""
    x = tensor(inputs[0])
    lo = inputs[1] if len(inputs) > 1 else None
    hi = inputs[2] if len(inputs) > 2 else None
    lo = attrs.get("min") if lo is None else lo
    hi = attrs.get("max") if hi is None else hi
    lo = lo.scalar() if isinstance(lo, Known) else lo
    hi = hi.scalar() if isinstance(hi, Known) else hi
    if lo is None and hi is None:
        return [x]
    if _is_wide_unsigned(x):
        for op, bound in (("Max", lo), ("Min", hi)):
            x = x if bound is None else _unsigned_binary(op, x, bound)
        return [x]
    return [torch.clamp(x, lo, hi)]


@rule("Where")
def _where(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX Where (Known in, Known out)."""
    c, a, b = inputs
    if all_known(inputs):
        cs, xs, _ = bcast_known(c, a)
        cs2, ys, shape = bcast_known(Known(cs, c.shape if len(c.data) >= len(a.data) else a.shape, c.dtype), b)
        xs2 = xs if len(xs) == len(cs2) else xs * len(cs2)
        return [Known([x if bool(k) else y for k, x, y in zip(cs2, xs2, ys)], shape, a.dtype)]
    x, y = binary_operands(a, b)
    return [torch.where(tensor(c), x, y)]


@rule("BitwiseNot")
def _bitwise_not(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX BitwiseNot: flip every bit (uint16/32/64 through their int64 pattern)."""
    x = tensor(inputs[0])
    if _is_wide_unsigned(x):
        return [_narrow(torch.bitwise_not(_widen(x)), x.dtype)]
    return [torch.bitwise_not(x)]


_BITS = {torch.uint8: 8, torch.int8: 8, torch.uint16: 16, torch.int16: 16, torch.uint32: 32, torch.int32: 32,
         torch.uint64: 64, torch.int64: 64}


@rule("BitShift")
def _bit_shift(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX BitShift: LEFT drops bits shifted out, RIGHT is logical for unsigned and arithmetic for signed
    types; a shift that is negative or >= the bit width gives the sign fill alone (0, or -1 for a negative
    value shifted right)."""
    a, b = binary_operands(*inputs)
    dtype = _dtype_of(a, b)
    if dtype not in _BITS:
        raise ValueError(f"BitShift on {dtype} is not supported (integer types only)")
    # every operand as int64: signed ones sign-extended, unsigned ones with their (zero-extended) bit pattern
    x, y = (_widen(v) if dtype in _WIDE_UNSIGNED else torch.as_tensor(v).to(torch.int64) for v in (a, b))
    bits = _BITS[dtype]
    in_range = (y >= 0) & (y < bits)
    s = torch.where(in_range, y, 0)
    if as_str(attrs["direction"]).upper() == "LEFT":
        out = torch.where(in_range, torch.bitwise_left_shift(x, s), 0)
    elif dtype == torch.uint64:
        out = torch.where(in_range, _logical_shr(x, s), 0)
    elif dtype.is_signed:  # shifting a sign-extended value by 63 leaves just the sign fill
        out = torch.bitwise_right_shift(x, torch.where(in_range, s, 63))
    else:  # zero-extended: the arithmetic shift is logical
        out = torch.where(in_range, torch.bitwise_right_shift(x, s), 0)
    return [_narrow(out, dtype) if dtype in _WIDE_UNSIGNED else out.to(dtype)]


@rule("IsInf")
def _is_inf(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX IsInf, detecting +inf and/or -inf as ``detect_positive`` / ``detect_negative`` say."""
    x = tensor(inputs[0])
    pos, neg = attrs.get("detect_positive", 1), attrs.get("detect_negative", 1)
    if pos and neg:
        return [torch.isinf(x)]
    if pos:
        return [torch.isposinf(x)]
    if neg:
        return [torch.isneginf(x)]
    return [torch.zeros_like(x, dtype=torch.bool)]


@rule("Celu")
def _celu(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX Celu: max(0, x) + min(0, alpha * (exp(x / alpha) - 1))."""
    return [F.celu(tensor(inputs[0]), attrs.get("alpha", 1.0))]


@rule("Selu")
def _selu(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX Selu: gamma * x for x > 0, gamma * alpha * (exp(x) - 1) otherwise."""
    x = tensor(inputs[0])
    alpha = attrs.get("alpha", 1.67326319217681884765625)
    gamma = attrs.get("gamma", 1.05070102214813232421875)
    return [gamma * torch.where(x > 0, x, alpha * torch.expm1(x))]


@rule("Shrink")
def _shrink(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX Shrink: x + bias below -lambd, x - bias above lambd, 0 in between (in x's dtype)."""
    x = tensor(inputs[0])
    lambd, bias = attrs.get("lambd", 0.5), attrs.get("bias", 0.0)
    out = torch.where(x < -lambd, x + bias, torch.where(x > lambd, x - bias, 0))
    return [out.to(x.dtype)]


@rule("ThresholdedRelu")
def _thresholded_relu(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX ThresholdedRelu: x where x > alpha, else 0."""
    x = tensor(inputs[0])
    return [torch.where(x > attrs.get("alpha", 1.0), x, 0).to(x.dtype)]


@rule("Swish")
def _swish(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX Swish: x * sigmoid(alpha * x)."""
    x = tensor(inputs[0])
    alpha = attrs.get("alpha", 1.0)
    return [x * torch.sigmoid(x * alpha if alpha != 1.0 else x)]


@rule("PRelu")
def _prelu(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX PRelu: slope * x where x < 0, x elsewhere (slope broadcasts to x)."""
    x, slope = binary_operands(*inputs)
    if isinstance(slope, torch.Tensor) and slope.dim() == 1 and x.dim() > 2 and slope.shape[0] == x.shape[1] \
            and slope.shape[0] != x.shape[-1] and slope.shape[0] != 1:
        # a per-channel slope of shape [C]: opset < 7 PRelu broadcast it over the channel dim (what
        # PyTorch's old exporter emits for nn.PReLU(C)); numpy broadcasting would fail on it
        slope = slope.reshape([-1] + [1] * (x.dim() - 2))
    return [torch.where(x < 0, x * slope, x)]
