"""ONNX convolution, pooling and normalization ops."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fxopt.ir.capture.onnx_ops.base import Ctx, as_str, rule, tensor


# ---------------------------------------------------------------------------------------------- conv / pool / norm
def _spatial_pads(attrs: dict, x: torch.Tensor, kernel: list, strides: list, dilations: list) -> list:
    """ONNX pads ``[b1, b2, ..., e1, e2, ...]`` for the spatial dims, resolving ``auto_pad``."""
    n = len(kernel)
    auto = as_str(attrs.get("auto_pad", "NOTSET"))
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads_b, pads_e = [], []
        for i in range(n):
            size = x.shape[2 + i]
            out = -(-size // strides[i])
            total = max((out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - size, 0)
            small, large = total // 2, total - total // 2
            pads_b.append(small if auto == "SAME_UPPER" else large)
            pads_e.append(large if auto == "SAME_UPPER" else small)
        return pads_b + pads_e
    if auto == "VALID":
        return [0] * (2 * n)
    return list(attrs.get("pads", [0] * (2 * n)))


def _pad_input(x: torch.Tensor, pads: list, value: float = 0.0) -> tuple[torch.Tensor, list]:
    """Symmetric pads stay for the op; asymmetric ones are applied with F.pad (returns x, per-dim pad)."""
    n = len(pads) // 2
    b, e = pads[:n], pads[n:]
    if b == e:
        return x, b
    torch_pads = []
    for i in reversed(range(n)):
        torch_pads += [b[i], e[i]]
    return F.pad(x, torch_pads, value=value), [0] * n


@rule("Conv")
def _conv(ctx: Ctx, inputs: list, attrs: dict) -> list:
    x, w = tensor(inputs[0]), tensor(inputs[1])
    bias = tensor(inputs[2]) if len(inputs) > 2 else None
    n = w.dim() - 2
    kernel = list(attrs.get("kernel_shape", w.shape[2:]))
    strides = list(attrs.get("strides", [1] * n))
    dilations = list(attrs.get("dilations", [1] * n))
    x, pad = _pad_input(x, _spatial_pads(attrs, x, kernel, strides, dilations))
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[n]
    return [fn(x, w, bias, strides, pad, dilations, attrs.get("group", 1))]


@rule("MaxPool", "AveragePool")
def _pool(ctx: Ctx, inputs: list, attrs: dict) -> list:
    x = tensor(inputs[0])
    kernel = list(attrs["kernel_shape"])
    n = len(kernel)
    strides = list(attrs.get("strides", [1] * n))
    dilations = list(attrs.get("dilations", [1] * n))
    ceil = bool(attrs.get("ceil_mode", 0))
    pads = _spatial_pads(attrs, x, kernel, strides, dilations)
    if ctx.op == "MaxPool":
        if ctx.n_outputs > 1:
            raise ValueError("MaxPool's Indices output is not supported")
        x, pad = _pad_input(x, pads, value=float("-inf"))
        fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[n]
        return [fn(x, kernel, strides, pad, dilations, ceil_mode=ceil)]
    include = bool(attrs.get("count_include_pad", 0))
    if any(d != 1 for d in dilations):
        raise ValueError("AveragePool with dilations is not supported")
    if pads[:n] != pads[n:] and not include:
        raise ValueError("AveragePool with asymmetric pads and count_include_pad=0 is not supported")
    x, pad = _pad_input(x, pads)
    fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[n]
    return [fn(x, kernel, strides, pad, ceil_mode=ceil, count_include_pad=include)]


@rule("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(ctx: Ctx, inputs: list, attrs: dict) -> list:
    x = tensor(inputs[0])
    dims = list(range(2, x.dim()))
    if ctx.op == "GlobalAveragePool":
        return [torch.mean(x, dims, keepdim=True)]
    return [torch.amax(x, dims, keepdim=True)]


@rule("BatchNormalization")
def _batch_norm(ctx: Ctx, inputs: list, attrs: dict) -> list:
    if attrs.get("training_mode", 0) or ctx.n_outputs > 1:
        raise ValueError("BatchNormalization in training mode is not supported (export the model in eval mode)")
    x, scale, bias, mean, var = (tensor(v) for v in inputs)
    return [F.batch_norm(x, mean, var, scale, bias, False, 0.0, attrs.get("epsilon", 1e-5))]


@rule("LayerNormalization")
def _layer_norm(ctx: Ctx, inputs: list, attrs: dict) -> list:
    if ctx.n_outputs > 1:
        raise ValueError("LayerNormalization's Mean/InvStdDev outputs are not supported")
    x, scale = tensor(inputs[0]), tensor(inputs[1])
    bias = tensor(inputs[2]) if len(inputs) > 2 else None
    axis = attrs.get("axis", -1)
    axis = axis + x.dim() if axis < 0 else axis
    shape = list(x.shape[axis:])
    eps = attrs.get("epsilon", 1e-5)
    if list(scale.shape) == shape and (bias is None or list(bias.shape) == shape):
        return [F.layer_norm(x, shape, scale, bias, eps)]
    out = F.layer_norm(x, shape, None, None, eps) * scale
    return [out + bias if bias is not None else out]


@rule("InstanceNormalization")
def _instance_norm(ctx: Ctx, inputs: list, attrs: dict) -> list:
    x, scale, bias = (tensor(v) for v in inputs)
    return [F.instance_norm(x, weight=scale, bias=bias, eps=attrs.get("epsilon", 1e-5))]
