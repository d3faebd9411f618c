"""ONNX ops that cast or produce values: Cast, CastLike, Identity, Dropout, Constant."""
from __future__ import annotations

import torch

from fxopt.ir.capture.onnx_ops.base import Ctx, DTYPES, Known, cast_known, rule, tensor


@rule("Cast")
def _cast(ctx: Ctx, inputs: list, attrs: dict) -> list:
    to = DTYPES.get(attrs["to"])
    if to is None:
        raise ValueError(f"cast to ONNX dtype {attrs['to']} is not supported")
    x = inputs[0]
    if isinstance(x, Known):
        return [cast_known(x, to)]
    return [x.to(to)]


@rule("CastLike")
def _cast_like(ctx: Ctx, inputs: list, attrs: dict) -> list:
    x, like = inputs
    if isinstance(x, Known):
        return [cast_known(x, like.dtype)]
    return [x.to(like.dtype)]


@rule("Identity", "Dropout")
def _identity(ctx: Ctx, inputs: list, attrs: dict) -> list:
    outs = [inputs[0]]
    if ctx.op == "Dropout" and ctx.n_outputs > 1:
        outs.append(torch.ones_like(tensor(inputs[0]), dtype=torch.bool))
    return outs


@rule("Constant")
def _constant(ctx: Ctx, inputs: list, attrs: dict) -> list:
    return [ctx.constant()]
