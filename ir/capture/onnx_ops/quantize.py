"""ONNX quantization ops: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, QLinearMatMul, QLinearConv,
MatMulInteger, ConvInteger.

Integer semantics are exact: rounding is half to even (``torch.round``), results saturate to the target type's
range. Integer matmuls and convolutions run in float64, which holds every int8/uint8/int16 product sum exactly
(up to 2**53) and, unlike integer matmul/conv, is supported by torch on every device.
"""
from __future__ import annotations

import torch

from fxopt.ir.capture.onnx_ops.base import DTYPES, RULES, Ctx, optional_input, rule, tensor

_RANGES: dict[torch.dtype, tuple[int, int]] = {
    torch.uint8: (0, 255), torch.int8: (-128, 127), torch.uint16: (0, 65535), torch.int16: (-32768, 32767),
}


def _quant_dtype(dtype: torch.dtype, what: str) -> tuple[int, int]:
    """The (min, max) range of a supported quantized integer type; ValueError for others."""
    if dtype not in _RANGES:
        raise ValueError(f"{what} of type {dtype} is not supported (only uint8, int8, uint16, int16)")
    return _RANGES[dtype]


def _onnx_dtype(code: int, what: str) -> torch.dtype:
    if code not in DTYPES:
        raise ValueError(f"{what} {code} (an ONNX TensorProto type torch cannot hold) is not supported")
    return DTYPES[code]


def _broadcast_param(p: torch.Tensor, x: torch.Tensor, axis: int, block_size: int) -> torch.Tensor:
    """A scale/zero point shaped to broadcast against ``x``: per tensor (one element), per axis (1-D along
    ``axis``) or blocked (same rank as ``x``, each element repeated ``block_size`` times along ``axis``)."""
    if p.numel() == 1:
        return p.reshape(())
    axis = axis + x.dim() if axis < 0 else axis
    if block_size:
        p = torch.repeat_interleave(p, block_size, dim=axis)
        return p.narrow(axis, 0, x.shape[axis])
    if p.dim() != 1:
        raise ValueError(f"a per-axis scale/zero point must be 1-D, got shape {tuple(p.shape)}")
    dims = [1] * x.dim()
    dims[axis] = p.shape[0]
    return p.reshape(dims)


def _saturate(v: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Integer-valued float ``v`` clamped to ``dtype``'s range and cast."""
    lo, hi = _quant_dtype(dtype, "output")
    return v.clamp(lo, hi).to(dtype)


def _wide(v: torch.Tensor) -> torch.Tensor:
    """``v`` in a float type that holds the quantized ranges' integers exactly (at least float32)."""
    return v if v.dtype in (torch.float32, torch.float64) else v.float()


@rule("QuantizeLinear")
def _quantize_linear(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """y = saturate(round_half_even(x / y_scale) + y_zero_point); per tensor, per axis or blocked; the output
    type is the zero point's, else ``output_dtype``, else uint8 (``precision`` sets the division's type)."""
    x, scale, zp = tensor(inputs[0]), tensor(inputs[1]), optional_input(inputs, 2)
    axis, block = attrs.get("axis", 1), attrs.get("block_size", 0)
    dtype = _onnx_dtype(attrs["output_dtype"], "output_dtype") if attrs.get("output_dtype") else torch.uint8
    if zp is not None:
        dtype = zp.dtype
    _quant_dtype(dtype, "QuantizeLinear output")
    if attrs.get("precision"):
        prec = _onnx_dtype(attrs["precision"], "precision")
        x, scale = x.to(prec), scale.to(prec)
    q = _wide(torch.round(x / _broadcast_param(scale, x, axis, block)))
    if zp is not None:
        q = q + _broadcast_param(zp, x, axis, block).to(q.dtype)
    return [_saturate(q, dtype)]


@rule("DequantizeLinear")
def _dequantize_linear(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """y = (float32(x) - x_zero_point) * x_scale, in the scale's type (or ``output_dtype``)."""
    x, scale, zp = tensor(inputs[0]), tensor(inputs[1]), optional_input(inputs, 2)
    if not (x.dtype in _RANGES or x.dtype == torch.int32):
        raise ValueError(f"DequantizeLinear of a {x.dtype} input is not supported")
    axis, block = attrs.get("axis", 1), attrs.get("block_size", 0)
    out = _onnx_dtype(attrs["output_dtype"], "output_dtype") if attrs.get("output_dtype") else scale.dtype
    dx = x.to(torch.float32)
    if zp is not None:
        dx = dx - _broadcast_param(zp, x, axis, block).to(torch.float32)
    y = dx * _broadcast_param(scale, x, axis, block)
    return [y.to(out)]


@rule("DynamicQuantizeLinear")
def _dynamic_quantize_linear(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """uint8 quantization with scale and zero point computed from x's range (widened to include 0);
    outputs y, y_scale, y_zero_point."""
    x = tensor(inputs[0]).to(torch.float32)
    hi = torch.clamp(torch.max(x), min=0.0)
    lo = torch.clamp(torch.min(x), max=0.0)
    # onnxruntime's choice where the range is empty (x all zeros): scale 1
    scale = torch.where(hi == lo, torch.ones_like(hi), (hi - lo) / 255.0)
    zp = torch.round(torch.clamp(-lo / scale, 0.0, 255.0))
    y = _saturate(torch.round(x / scale) + zp, torch.uint8)
    return [y, scale, zp.to(torch.uint8)]


def _centered(v: torch.Tensor, zp: torch.Tensor | None) -> torch.Tensor:
    """Integer ``v`` minus its zero point, in float64 (exact)."""
    v = v.to(torch.float64)
    return v if zp is None else v - zp.to(torch.float64)


def _row_param(p: torch.Tensor | None, a: torch.Tensor) -> torch.Tensor | None:
    """A per-row parameter of a matmul's left operand: a 1-D vector of M elements becomes [M, 1]."""
    if p is not None and p.dim() == 1 and p.numel() > 1 and a.dim() >= 2:
        return p.reshape(-1, 1)
    return p


@rule("MatMulInteger")
def _matmul_integer(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """int32 (A - a_zero_point) @ (B - b_zero_point); a's zero point may be per row, b's per column."""
    a, b = tensor(inputs[0]), tensor(inputs[1])
    azp, bzp = _row_param(optional_input(inputs, 2), a), optional_input(inputs, 3)
    return [torch.matmul(_centered(a, azp), _centered(b, bzp)).to(torch.int32)]


@rule("QLinearMatMul")
def _qlinear_matmul(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """Quantized matmul: saturate(round((a - a_zp) @ (b - b_zp) * (a_scale * b_scale / y_scale)) + y_zp)."""
    a, a_scale, a_zp, b, b_scale, b_zp, y_scale = (tensor(v) if v is not None else None for v in inputs[:7])
    y_zp = optional_input(inputs, 7)
    c = torch.matmul(_centered(a, _row_param(a_zp, a)), _centered(b, b_zp))
    scale = _row_param(a_scale, a) * b_scale / _row_param(y_scale, a)
    d = torch.round(c * scale.to(torch.float64))
    if y_zp is not None:
        d = d + _row_param(y_zp, a).to(torch.float64)
    return [_saturate(d, y_zp.dtype if y_zp is not None else a.dtype)]


def _channel_param(p: torch.Tensor | None, w: torch.Tensor) -> torch.Tensor | None:
    """A per-output-channel parameter of a conv weight: a 1-D vector of M elements becomes [M, 1, 1, ...]."""
    if p is not None and p.dim() == 1 and p.numel() > 1:
        return p.reshape([-1] + [1] * (w.dim() - 1))
    return p


def _int_conv(ctx: Ctx, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, attrs: dict) -> torch.Tensor:
    """The Conv rule on float64 operands (the centered integers; padding adds zeros after centering)."""
    ins = [x, w] + ([bias.to(torch.float64)] if bias is not None else [])
    return RULES["Conv"](ctx, ins, attrs)[0]


@rule("ConvInteger")
def _conv_integer(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """int32 Conv of (x - x_zero_point) and (w - w_zero_point); w's zero point may be per output channel."""
    x, w = tensor(inputs[0]), tensor(inputs[1])
    xzp, wzp = optional_input(inputs, 2), _channel_param(optional_input(inputs, 3), w)
    return [_int_conv(ctx, _centered(x, xzp), _centered(w, wzp), None, attrs).to(torch.int32)]


@rule("QLinearConv")
def _qlinear_conv(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """Quantized Conv: saturate(round((conv(x - x_zp, w - w_zp) + B) * x_scale * w_scale / y_scale) + y_zp);
    w's scale and zero point may be per output channel."""
    x, x_scale, x_zp, w, w_scale, w_zp, y_scale = (tensor(v) if v is not None else None for v in inputs[:7])
    y_zp, bias = optional_input(inputs, 7), optional_input(inputs, 8)
    res = _int_conv(ctx, _centered(x, x_zp), _centered(w, _channel_param(w_zp, w)), bias, attrs)
    scale = x_scale * w_scale / y_scale
    if scale.numel() > 1:
        scale = scale.reshape([1, -1] + [1] * (res.dim() - 2))
    d = torch.round(res * scale.to(torch.float64))
    if y_zp is not None:
        d = d + y_zp.to(torch.float64)
    return [_saturate(d, y_zp.dtype if y_zp is not None else x.dtype)]
