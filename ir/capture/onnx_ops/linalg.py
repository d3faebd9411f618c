"""ONNX linear algebra: MatMul, Gemm, Einsum, Det."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fxopt.ir.capture.onnx_ops.base import Ctx, as_str, rule, tensor


# ---------------------------------------------------------------------------------------------- linear algebra
@rule("MatMul")
def _matmul(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX MatMul (numpy matmul broadcasting)."""
    return [torch.matmul(tensor(inputs[0]), tensor(inputs[1]))]


@rule("Gemm")
def _gemm(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX Gemm: alpha * op(A) @ op(B) + beta * C, op transposing as transA / transB say."""
    a, b = tensor(inputs[0]), tensor(inputs[1])
    c = tensor(inputs[2]) if len(inputs) > 2 else None
    alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
    if attrs.get("transA", 0):
        a = a.t()
    if attrs.get("transB", 0) and alpha == 1.0 and (c is None or beta == 1.0):
        # the nn.Linear form: F.linear decomposes to permute(weight) + addmm, which passes recognise
        bias = c if c is not None and c.dim() == 1 and c.shape[0] == b.shape[0] else None
        out = F.linear(a, b, bias)
        return [out if c is None or bias is not None else out + c]
    if not attrs.get("transB", 0):
        out = torch.matmul(a, b)
    else:
        out = torch.matmul(a, b.t())
    if alpha != 1.0:
        out = out * alpha
    if c is not None and beta != 0.0:
        out = out + (c * beta if beta != 1.0 else c)
    return [out]


@rule("Einsum")
def _einsum(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX Einsum with its ``equation``."""
    return [torch.einsum(as_str(attrs["equation"]), *[tensor(v) for v in inputs])]


@rule("Det")
def _det(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX Det: the determinant of each [..., M, M] matrix (output shape [...])."""
    x = tensor(inputs[0])
    if not x.dtype.is_floating_point:
        raise ValueError(f"Det on {x.dtype} is not supported (floating-point types only)")
    if x.dtype in (torch.float16, torch.bfloat16):  # torch's LU has no half-precision kernels
        return [torch.linalg.det(x.float()).to(x.dtype)]
    return [torch.linalg.det(x)]
