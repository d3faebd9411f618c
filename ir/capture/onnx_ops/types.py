"""ONNX ops that cast, reinterpret or produce values: Cast, CastLike, BitCast, Identity, Dropout, EyeLike,
Constant."""
from __future__ import annotations

from typing import Any

import torch

from fxopt.ir.capture.onnx_ops.base import (
    Ctx, DTYPES, NeedsValue, cast_known, known_value, rule, static_value, tensor,
)


@rule("Cast")
def _cast(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX Cast to the ``to`` dtype (Known in, Known out)."""
    to = DTYPES.get(attrs["to"])
    if to is None:
        raise ValueError(f"cast to ONNX dtype {attrs['to']} is not supported")
    x = inputs[0]
    known = static_value(x)
    if known is not None:
        return [cast_known(known, to)]
    return [x.to(to)]


@rule("CastLike")
def _cast_like(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX CastLike: Cast to the second input's dtype."""
    x, like = inputs
    known = static_value(x)
    if known is not None:
        return [cast_known(known, like.dtype)]
    return [x.to(like.dtype)]


@rule("BitCast")
def _bit_cast(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX BitCast: the same bits read as the ``to`` dtype, which must have the input's bit width."""
    to = DTYPES.get(attrs["to"])
    x = tensor(inputs[0])
    if to is None:
        raise ValueError(f"bit-cast to ONNX dtype {attrs['to']} is not supported")
    if to.itemsize != x.dtype.itemsize:
        raise ValueError(f"BitCast from {x.dtype} to {to}: the bit widths differ")
    return [x.view(to)]


@rule("Identity")
def _identity(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX Identity."""
    return [inputs[0]]


def _known_or_tensor(v: Any) -> Any:
    """A value's trace-time constant (a Python number) when it has one, else the tensor itself: a graph input
    stays a tensor, which the dropout below handles without specializing on it."""
    try:
        k = known_value(v)
    except NeedsValue:
        k = None
    return k.scalar() if k is not None else v


@rule("Dropout")
def _dropout(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX Dropout. Inference (no or false ``training_mode``, and every opset before 12): the identity with
    an all-true mask. Training mode: keep each element with probability 1 - ratio (torch's generator;
    the ``seed`` attribute is ignored), output = x * mask / (1 - ratio); ratio 0 keeps everything."""
    x = tensor(inputs[0])
    ratio = _known_or_tensor(inputs[1]) if len(inputs) > 1 and inputs[1] is not None else 0.5
    training = _known_or_tensor(inputs[2]) if len(inputs) > 2 and inputs[2] is not None else False
    inference = not isinstance(training, torch.Tensor) and not training
    if inference or (isinstance(ratio, (int, float)) and ratio == 0):
        out, mask = x, torch.ones_like(x, dtype=torch.bool)
    else:
        out, mask = _training_dropout(x, ratio, training)
    return [out, mask] if ctx.n_outputs > 1 else [out]


def _training_dropout(x: torch.Tensor, ratio: Any, training: Any) -> tuple:
    """Random dropout of ``x``; ``ratio`` is a Python number or a run-time scalar tensor, ``training`` is
    true or a run-time bool tensor (then selected with ``where``, so that no value is read while tracing)."""
    if isinstance(ratio, torch.Tensor):
        ratio = ratio.reshape(()).to(x.dtype)
    keep = torch.rand_like(x) >= ratio
    # where, not x * keep * scale: a dropped element stays 0 even when ratio is 1 (scale inf)
    out = torch.where(keep, x * (1.0 / (1.0 - ratio)), torch.zeros_like(x))
    if isinstance(training, torch.Tensor):
        training = training.reshape(()).to(torch.bool)
        return torch.where(training, out, x), keep | ~training
    return out, keep


@rule("EyeLike")
def _eye_like(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX EyeLike: a matrix of the input's 2-D shape with ones on diagonal ``k`` (above the main one for
    k > 0), in the ``dtype`` attribute's type or the input's."""
    x = tensor(inputs[0])
    if x.dim() != 2:
        raise ValueError(f"EyeLike needs a 2-D input, got rank {x.dim()}")
    dtype = DTYPES.get(attrs["dtype"]) if "dtype" in attrs else x.dtype
    if dtype is None:
        raise ValueError(f"EyeLike to ONNX dtype {attrs['dtype']} is not supported")
    rows = torch.arange(x.shape[0], device=x.device).unsqueeze(1)
    cols = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
    return [(cols - rows == attrs.get("k", 0)).to(dtype)]


@rule("Constant")
def _constant(ctx: Ctx, inputs: list, attrs: dict) -> list:
    return [ctx.constant()]
