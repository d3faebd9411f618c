"""ONNX convolution, pooling and normalization ops.

Pooling takes torch's native kernels whenever their padding/ceil rules match ONNX exactly (symmetric pads of at
most half the window, no dilation for averages); other cases pad explicitly and pool over windows of exactly
the ONNX output size (window sums as a convolution with a ones kernel, divided by a window count)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fxopt.ir.capture.onnx_ops.base import Ctx, as_str, rule, tensor


# ---------------------------------------------------------------------------------------------- padding
def _spatial_pads(attrs: dict, x: torch.Tensor, kernel: list, strides: list, dilations: list) -> list:
    """ONNX pads ``[b1, b2, ..., e1, e2, ...]`` for the spatial dims, resolving ``auto_pad`` (a negative SAME
    total, stride > window, counts as 0 as in TensorFlow and onnxruntime's Conv)."""
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


def _torch_pads(begin: list, end: list) -> list:
    """Per-dim (begin, end) pads of the trailing dims in F.pad's order (last dim first)."""
    out = []
    for b, e in zip(reversed(begin), reversed(end)):
        out += [b, e]
    return out


def _pad_input(x: torch.Tensor, pads: list, value: float = 0.0) -> tuple[torch.Tensor, list]:
    """Symmetric pads stay for the op; asymmetric ones are applied with F.pad (returns x, per-dim pad)."""
    n = len(pads) // 2
    b, e = pads[:n], pads[n:]
    if b == e:
        return x, b
    return F.pad(x, _torch_pads(b, e), value=value), [0] * n


# ---------------------------------------------------------------------------------------------- conv
@rule("Conv")
def _conv(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX Conv (1-D/2-D/3-D, groups, dilations, explicit/auto pads)."""
    x, w = tensor(inputs[0]), tensor(inputs[1])
    bias = tensor(inputs[2]) if len(inputs) > 2 else None
    n = w.dim() - 2
    kernel = list(attrs.get("kernel_shape", w.shape[2:]))
    strides = list(attrs.get("strides", [1] * n))
    dilations = list(attrs.get("dilations", [1] * n))
    x, pad = _pad_input(x, _spatial_pads(attrs, x, kernel, strides, dilations))
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[n]
    return [fn(x, w, bias, strides, pad, dilations, attrs.get("group", 1))]


def _conv_transpose_pads(attrs: dict, x: torch.Tensor, full: list, out_pad: list, strides: list) -> tuple:
    """ConvTranspose's (begin pads, end pads) per spatial dim: from ``output_shape`` or ``auto_pad`` (the
    total split as the spec says) or the ``pads`` attribute. ``full`` = the unpadded output size."""
    n = len(full)
    auto = as_str(attrs.get("auto_pad", "NOTSET"))
    target = None
    if attrs.get("output_shape") is not None:
        target = list(attrs["output_shape"])[-n:]
    elif auto in ("SAME_UPPER", "SAME_LOWER"):
        target = [x.shape[2 + i] * strides[i] for i in range(n)]
    if target is not None:
        total = [full[i] + out_pad[i] - target[i] for i in range(n)]
        begin = [t // 2 if auto == "SAME_UPPER" else t - t // 2 for t in total]
        return begin, [t - b for t, b in zip(total, begin)]
    if auto == "VALID":
        return [0] * n, [0] * n
    pads = list(attrs.get("pads", [0] * (2 * n)))
    return pads[:n], pads[n:]


@rule("ConvTranspose")
def _conv_transpose(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX ConvTranspose: pads crop the full transposed convolution, output_padding/output_shape extend it
    at the end (with zeros + bias past the full result)."""
    x, w = tensor(inputs[0]), tensor(inputs[1])
    bias = tensor(inputs[2]) if len(inputs) > 2 and inputs[2] is not None else None
    n = w.dim() - 2
    strides = list(attrs.get("strides", [1] * n))
    dilations = list(attrs.get("dilations", [1] * n))
    group = attrs.get("group", 1)
    out_pad = list(attrs.get("output_padding", [0] * n))[:n]
    kernel = list(w.shape[2:])
    full = [strides[i] * (x.shape[2 + i] - 1) + (kernel[i] - 1) * dilations[i] + 1 for i in range(n)]
    begin, end = _conv_transpose_pads(attrs, x, full, out_pad, strides)
    fn = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[n]
    # torch crops `padding` at both ends and adds `output_padding` (< stride or dilation) at the end
    torch_out_pad = [out_pad[i] + begin[i] - end[i] for i in range(n)]
    native = all(0 <= p < max(s, d) for p, s, d in zip(torch_out_pad, strides, dilations))
    if native and all(b >= 0 for b in begin):
        return [fn(x, w, bias, strides, begin, torch_out_pad, group, dilations)]
    y = fn(x, w, None, strides, 0, 0, group, dilations)
    y = F.pad(y, _torch_pads([-b for b in begin], [out_pad[i] - end[i] for i in range(n)]))
    if bias is not None:
        y = y + bias.reshape([1, -1] + [1] * n)
    return [y]


# ---------------------------------------------------------------------------------------------- pooling
def _pool_params(attrs: dict, x: torch.Tensor) -> tuple:
    """(kernel, strides, dilations, begin pads, end pads, output sizes) of an ONNX pooling node."""
    kernel = list(attrs["kernel_shape"])
    n = len(kernel)
    strides = list(attrs.get("strides", [1] * n))
    dilations = list(attrs.get("dilations", [1] * n))
    pads = _spatial_pads(attrs, x, kernel, strides, dilations)
    begin, end = pads[:n], pads[n:]
    ceil = _ceil_mode(attrs)
    out = []
    for i in range(n):
        size = x.shape[2 + i]
        span = size + begin[i] + end[i] - (kernel[i] - 1) * dilations[i] - 1
        o = (-(-span // strides[i]) if ceil else span // strides[i]) + 1
        if ceil and (o - 1) * strides[i] >= size + begin[i]:
            o -= 1  # the last window must start inside the input or its begin padding
        out.append(o)
    return kernel, strides, dilations, begin, end, out


def _ceil_mode(attrs: dict) -> bool:
    """ceil_mode, which only applies with explicit pads."""
    return bool(attrs.get("ceil_mode", 0)) and as_str(attrs.get("auto_pad", "NOTSET")) == "NOTSET"


def _native_ok(kernel: list, dilations: list, begin: list, end: list) -> bool:
    """Whether torch's pooling kernels accept these pads (symmetric, at most half the window)."""
    return begin == end and all(0 <= b <= ((k - 1) * d + 1) // 2 for b, k, d in zip(begin, kernel, dilations))


def _window_frame(x: torch.Tensor, kernel, strides, dilations, begin, out, value: float) -> torch.Tensor:
    """``x`` padded (or cropped) at the end to exactly the extent the ``out`` windows cover."""
    n = len(kernel)
    need = [(out[i] - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 for i in range(n)]
    after = [need[i] - begin[i] - x.shape[2 + i] for i in range(n)]
    return F.pad(x, _torch_pads(begin, after), value=value)


def _window_sum(x: torch.Tensor, kernel, strides, dilations) -> torch.Tensor:
    """Sum over each pooling window (no padding) as a convolution with a ones kernel, per channel."""
    n = len(kernel)
    lead = list(x.shape[:2])
    flat = torch.reshape(x, [-1, 1] + list(x.shape[2:]))
    ones = torch.ones([1, 1] + kernel, dtype=x.dtype)
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[n]
    y = fn(flat, ones, None, strides, 0, dilations)
    return torch.reshape(y, lead + list(y.shape[2:]))


def _window_count(x: torch.Tensor, kernel, strides, dilations, begin, end, out, include_pad: bool):
    """How many elements each window averages over: input elements, plus pads when ``include_pad``
    (never the ceil-mode overhang past the end pads)."""
    ones = torch.ones([1, 1] + list(x.shape[2:]), dtype=x.dtype)
    mask = F.pad(ones, _torch_pads(begin, end), value=1.0 if include_pad else 0.0)
    mask = _window_frame(mask, kernel, strides, dilations, [0] * len(kernel), out, 0.0)
    return _window_sum(mask, kernel, strides, dilations)


@rule("MaxPool")
def _max_pool(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX MaxPool (dilations, ceil_mode, any pads) with its optional Indices output (flat indices
    into the input, row- or column-major per storage_order)."""
    x = tensor(inputs[0])
    kernel, strides, dilations, begin, end, out = _pool_params(attrs, x)
    n = len(kernel)
    fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[n]
    want_idx = ctx.n_outputs > 1
    if _native_ok(kernel, dilations, begin, end):
        res = fn(x, kernel, strides, begin, dilations, ceil_mode=_ceil_mode(attrs), return_indices=want_idx)
        frame, frame_begin = list(x.shape[2:]), [0] * n  # torch's indices are into the unpadded input
    else:
        lowest = float("-inf") if x.dtype.is_floating_point else torch.iinfo(x.dtype).min
        padded = _window_frame(x, kernel, strides, dilations, begin, out, lowest)
        res = fn(padded, kernel, strides, 0, dilations, return_indices=want_idx)
        frame, frame_begin = list(padded.shape[2:]), begin
    if not want_idx:
        return [res]
    y, idx = res
    return [y, _onnx_pool_indices(idx, x, frame, frame_begin, attrs.get("storage_order", 0))]


def _onnx_pool_indices(idx: torch.Tensor, x: torch.Tensor, frame: list, frame_begin: list, order: int):
    """torch's per-plane flat indices (into a frame of sizes ``frame`` starting ``frame_begin`` before the
    input) as ONNX's flat indices into the whole input tensor."""
    sizes = list(x.shape[2:])
    coords = []
    rest = idx
    for i in reversed(range(len(frame))):
        coords.append(torch.remainder(rest, frame[i]) - frame_begin[i])
        rest = torch.div(rest, frame[i], rounding_mode="floor")
    coords.reverse()
    flat = torch.zeros_like(idx)
    dims = range(len(sizes)) if order == 0 else reversed(range(len(sizes)))
    for i in dims:
        flat = flat * sizes[i] + coords[i]
    plane = math.prod(sizes)
    nc = torch.arange(x.shape[0] * x.shape[1], dtype=torch.int64).reshape(
        [x.shape[0], x.shape[1]] + [1] * len(sizes))
    return flat + nc * plane


@rule("AveragePool")
def _avg_pool(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX AveragePool (dilations, ceil_mode, asymmetric pads, count_include_pad)."""
    x = tensor(inputs[0])
    kernel, strides, dilations, begin, end, out = _pool_params(attrs, x)
    n = len(kernel)
    include = bool(attrs.get("count_include_pad", 0))
    if all(d == 1 for d in dilations) and _native_ok(kernel, dilations, begin, end):
        fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[n]
        return [fn(x, kernel, strides, begin, ceil_mode=_ceil_mode(attrs), count_include_pad=include)]
    padded = _window_frame(x, kernel, strides, dilations, begin, out, 0.0)
    total = _window_sum(padded, kernel, strides, dilations)
    return [total / _window_count(x, kernel, strides, dilations, begin, end, out, include)]


@rule("LpPool")
def _lp_pool(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX LpPool: (sum of |x|^p over each window, zero padding) ^ (1/p)."""
    x = tensor(inputs[0])
    kernel, strides, dilations, begin, _, out = _pool_params(attrs, x)
    p = attrs.get("p", 2)
    powered = x * x if p == 2 else torch.pow(torch.abs(x), p)
    total = _window_sum(_window_frame(powered, kernel, strides, dilations, begin, out, 0.0), kernel, strides,
                        dilations)
    return [torch.sqrt(total) if p == 2 else torch.pow(total, 1.0 / p)]


@rule("GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")
def _global_pool(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX GlobalAveragePool / GlobalMaxPool / GlobalLpPool over all spatial dims."""
    x = tensor(inputs[0])
    dims = list(range(2, x.dim()))
    if ctx.op == "GlobalAveragePool":
        return [torch.mean(x, dims, keepdim=True)]
    if ctx.op == "GlobalLpPool":
        p = attrs.get("p", 2)
        return [torch.pow(torch.sum(torch.pow(torch.abs(x), p), dims, keepdim=True), 1.0 / p)]
    return [torch.amax(x, dims, keepdim=True)]


# ---------------------------------------------------------------------------------------------- normalization
@rule("BatchNormalization")
def _batch_norm(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX BatchNormalization; with training_mode=1 (opset 14+) normalizes with the batch statistics and
    returns the updated running mean/var (input * momentum + batch * (1 - momentum))."""
    x, scale, bias, mean, var = (tensor(v) for v in inputs)
    eps = attrs.get("epsilon", 1e-5)
    training = bool(attrs.get("training_mode", 0))
    if not training:
        if ctx.n_outputs > 1:
            raise ValueError("BatchNormalization's mean/var outputs outside training_mode are not supported "
                             "(export the model in eval mode)")
        return [F.batch_norm(x, mean, var, scale, bias, False, 0.0, eps)]
    dims = [0] + list(range(2, x.dim()))
    batch_mean = torch.mean(x, dims)
    batch_var = torch.var(x, dims, correction=0)
    y = F.batch_norm(x, batch_mean, batch_var, scale, bias, False, 0.0, eps)
    momentum = attrs.get("momentum", 0.9)
    run_mean = mean * momentum + batch_mean * (1 - momentum)
    run_var = var * momentum + batch_var * (1 - momentum)
    return [y, run_mean, run_var][:max(ctx.n_outputs, 1)]


def _stash(x: torch.Tensor, attrs: dict) -> torch.Tensor:
    """``x`` in the stash_type precision (1 = float32, the default) for low-precision inputs."""
    if attrs.get("stash_type", 1) == 1 and x.dtype in (torch.float16, torch.bfloat16):
        return x.float()
    return x


@rule("LayerNormalization")
def _layer_norm(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX LayerNormalization over the dims from ``axis`` on, with optional Mean / InvStdDev outputs
    (shaped like X with the normalized dims kept as 1)."""
    x, scale = tensor(inputs[0]), tensor(inputs[1])
    bias = tensor(inputs[2]) if len(inputs) > 2 and inputs[2] is not None else None
    axis = attrs.get("axis", -1)
    axis = axis + x.dim() if axis < 0 else axis
    shape = list(x.shape[axis:])
    eps = attrs.get("epsilon", 1e-5)
    if ctx.n_outputs > 1:
        xs = _stash(x, attrs)
        dims = list(range(axis, x.dim()))
        mean = torch.mean(xs, dims, keepdim=True)
        inv_std = torch.rsqrt(torch.var(xs, dims, correction=0, keepdim=True) + eps)
        y = ((xs - mean) * inv_std).to(x.dtype) * scale
        y = y + bias if bias is not None else y
        return [y, mean, inv_std][:ctx.n_outputs]
    if list(scale.shape) == shape and (bias is None or list(bias.shape) == shape):
        return [F.layer_norm(x, shape, scale, bias, eps)]
    out = F.layer_norm(x, shape, None, None, eps) * scale
    return [out + bias if bias is not None else out]


@rule("InstanceNormalization")
def _instance_norm(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX InstanceNormalization (per-sample, per-channel over the spatial dims)."""
    x, scale, bias = (tensor(v) for v in inputs)
    return [F.instance_norm(x, weight=scale, bias=bias, eps=attrs.get("epsilon", 1e-5))]


@rule("GroupNormalization")
def _group_norm(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX GroupNormalization; scale/bias per channel (opset 21) or per group (opset 18, repeated)."""
    x, scale, bias = (tensor(v) for v in inputs)
    groups = attrs["num_groups"]
    channels = x.shape[1]
    if scale.shape[0] != channels:
        scale = torch.repeat_interleave(scale, channels // groups)
        bias = torch.repeat_interleave(bias, channels // groups)
    xs = _stash(x, attrs)
    y = F.group_norm(xs, groups, None, None, attrs.get("epsilon", 1e-5)).to(x.dtype)
    shape = [1, -1] + [1] * (x.dim() - 2)
    return [y * scale.reshape(shape) + bias.reshape(shape)]


@rule("MeanVarianceNormalization")
def _mvn(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX MeanVarianceNormalization: (X - E[X]) / (sqrt(E[X^2] - E[X]^2) + 1e-9) over ``axes``."""
    x = tensor(inputs[0])
    axes = list(attrs.get("axes", [0, 2, 3]))
    mean = torch.mean(x, axes, keepdim=True)
    var = torch.mean(x * x, axes, keepdim=True) - mean * mean
    return [(x - mean) / (torch.sqrt(var) + 1e-9)]


@rule("LpNormalization")
def _lp_norm(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX LpNormalization: x / ||x||_p along ``axis`` (p = 1 or 2), 0 where the norm is 0."""
    x = tensor(inputs[0])
    axis, p = attrs.get("axis", -1), attrs.get("p", 2)
    if p not in (1, 2):
        raise ValueError(f"LpNormalization with p={p} is not supported (p must be 1 or 2)")
    norm = torch.sum(torch.abs(x), axis, keepdim=True) if p == 1 else torch.sqrt(
        torch.sum(x * x, axis, keepdim=True))
    return [torch.where(norm == 0, torch.zeros_like(x), x / norm)]


@rule("LRN")
def _lrn(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX LRN: x / (bias + alpha / size * sum of x^2 over channels [c - floor((size-1)/2),
    c + ceil((size-1)/2)]) ^ beta."""
    x = tensor(inputs[0])
    size = attrs["size"]
    alpha, beta, bias = attrs.get("alpha", 1e-4), attrs.get("beta", 0.75), attrs.get("bias", 1.0)
    sq = torch.reshape(x * x, [x.shape[0], 1, x.shape[1], -1])
    sq = F.pad(sq, [0, 0, (size - 1) // 2, size // 2])
    total = torch.reshape(_window_sum(sq, [size, 1], [1, 1], [1, 1]), x.shape)
    return [x / torch.pow(bias + (alpha / size) * total, beta)]
