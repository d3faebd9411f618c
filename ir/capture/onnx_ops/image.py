"""ONNX image ops: Resize, Upsample, GridSample, AffineGrid, CenterCropPad, DepthToSpace, SpaceToDepth, Col2Im.

Resize maps onto ``F.interpolate`` where that computes exactly the ONNX definition (nearest with
asymmetric/floor, linear and cubic with half_pixel / align_corners coordinates); every other combination of
mode, coordinate transformation, nearest rounding, cubic coefficient, exclude_outside, antialias and
tf_crop_and_resize follows the spec's separable definition directly: one axis at a time, each output position
gathers its taps (clamped to the edge) and sums them with weights computed from its source coordinate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.fx.experimental.symbolic_shapes import statically_known_true

from fxopt.ir.capture.onnx_ops.base import Ctx, Known, as_str, ints, rule, tensor


# ---------------------------------------------------------------------------------------------- helpers
def _given(v: Any) -> bool:
    """True when an optional input is present and not an empty tensor."""
    if v is None:
        return False
    if isinstance(v, Known):
        return len(v.data) > 0
    return v.numel() > 0


def _floats(v: Any, what: str) -> list | None:
    """An optional float-list input (scales, roi) as Python floats; None when absent or empty."""
    if not _given(v):
        return None
    return [float(x) for x in ints(v, what)]


def _norm_axes(axes: list, rank: int) -> list:
    return [a + rank if a < 0 else a for a in axes]


def _same(a: Any, b: Any) -> bool:
    """``a == b`` when provable without guarding on symbolic sizes (a guard would specialize them)."""
    return bool(statically_known_true(a == b))


# ---------------------------------------------------------------------------------------------- Resize
@dataclass
class _ResizeSpec:
    """Resize's attributes, defaults resolved for the node's opset."""

    mode: str = "nearest"
    coord: str = "half_pixel"
    nearest: str = "round_prefer_floor"
    cubic_a: float = -0.75
    exclude_outside: bool = False
    antialias: bool = False
    extrapolation: float = 0.0
    policy: str = "stretch"


def _resize_spec(attrs: dict, legacy: bool) -> _ResizeSpec:
    """The spec for Resize's attributes; ``legacy`` (Upsample, Resize-10): asymmetric coordinates and ORT's
    'simple' nearest rounding (floor when upsampling, ceil when downsampling)."""
    mode = as_str(attrs.get("mode", "nearest")).lower()
    mode = {"bilinear": "linear", "trilinear": "linear", "bicubic": "cubic"}.get(mode, mode)
    if mode not in ("nearest", "linear", "cubic"):
        raise ValueError(f"Resize mode '{mode}' is not supported")
    if legacy:
        return _ResizeSpec(mode=mode, coord="asymmetric", nearest="simple")
    return _ResizeSpec(
        mode=mode,
        coord=as_str(attrs.get("coordinate_transformation_mode", "half_pixel")),
        nearest=as_str(attrs.get("nearest_mode", "round_prefer_floor")),
        cubic_a=float(attrs.get("cubic_coeff_a", -0.75)),
        exclude_outside=bool(attrs.get("exclude_outside", 0)),
        antialias=bool(attrs.get("antialias", 0)) and mode != "nearest",
        extrapolation=float(attrs.get("extrapolation_value", 0.0)),
        policy=as_str(attrs.get("keep_aspect_ratio_policy", "stretch")),
    )


def _resize_targets(shape: list, scales: list | None, sizes: list | None, axes: list | None,
                    policy: str) -> tuple[list, list]:
    """Per-dim ``(scale, output size)`` from Resize's scales or sizes (for ``axes``, others unchanged)."""
    rank = len(shape)
    axes = _norm_axes(axes, rank) if axes else list(range(rank))
    scale, out = [1.0] * rank, list(shape)
    given = sizes if sizes is not None else scales
    if given is None:
        raise ValueError("Resize needs one of scales or sizes")
    if len(given) != len(axes):
        raise ValueError(f"Resize got {len(given)} scales/sizes for {len(axes)} axes")
    if sizes is not None:
        # an unchanged (possibly symbolic) size keeps the exact scale 1.0
        ratios = [1.0 if _same(sizes[i], shape[a]) else sizes[i] / shape[a] for i, a in enumerate(axes)]
        if policy == "stretch":
            for i, a in enumerate(axes):
                scale[a], out[a] = ratios[i], sizes[i]
        elif policy in ("not_larger", "not_smaller"):
            s = min(ratios) if policy == "not_larger" else max(ratios)
            for a in axes:
                scale[a], out[a] = s, int(s * shape[a] + 0.5)  # round half up, as the spec says
        else:
            raise ValueError(f"Resize keep_aspect_ratio_policy '{policy}' is not supported")
    else:
        for i, a in enumerate(axes):
            scale[a] = scales[i]
            out[a] = shape[a] if scales[i] == 1.0 else math.floor(scales[i] * shape[a])
    return scale, out


def _unrounded(scale: Any, in_len: Any, out_len: Any) -> bool:
    """True when ``scale * in_len`` is the output length itself (known without guarding on symbolic sizes)."""
    if isinstance(scale, float) and scale.is_integer():
        return True
    return isinstance(in_len, int) and isinstance(out_len, int) and math.isclose(scale * in_len, out_len)


def _interpolate_mode(x: torch.Tensor, spec: _ResizeSpec, scale: list, out: list, stretched: bool) -> tuple | None:
    """``(mode, align_corners)`` for F.interpolate when it computes this Resize exactly, else None
    (``stretched``: the scales are output / input sizes)."""
    rank = x.dim()
    if not 3 <= rank <= 5 or not x.dtype.is_floating_point or spec.antialias or spec.exclude_outside:
        return None
    if scale[:2] != [1.0, 1.0] or not all(_same(o, d) for o, d in zip(out[:2], x.shape[:2])):
        return None
    if spec.mode == "nearest":
        floor = spec.nearest == "floor" or (spec.nearest == "simple" and all(s >= 1 for s in scale))
        return ("nearest", None) if spec.coord == "asymmetric" and floor else None
    coords = {"half_pixel": False}
    if stretched or all(_unrounded(scale[a], x.shape[a], out[a]) for a in range(2, rank)):
        coords["align_corners"] = True  # ONNX divides by the unrounded output length, torch by the rounded one
    if spec.coord == "pytorch_half_pixel" and all(statically_known_true(o > 1) for o in out[2:]):
        coords["pytorch_half_pixel"] = False  # same as half_pixel unless an output dim is 1
    if spec.coord not in coords:
        return None
    if spec.mode == "linear":
        return {3: "linear", 4: "bilinear", 5: "trilinear"}[rank], coords[spec.coord]
    if rank == 4 and spec.cubic_a == -0.75:
        return "bicubic", coords[spec.coord]
    return None


def _source_coords(spec: _ResizeSpec, out_len: Any, in_len: Any, scale: float, roi: tuple | None):
    """The source coordinate of each output index along one axis (float64), as the spec's
    coordinate_transformation_mode maps it."""
    y = torch.arange(out_len, dtype=torch.float64)
    width = scale * in_len  # the unrounded output length
    coord = spec.coord
    if coord == "half_pixel":
        return (y + 0.5) / scale - 0.5
    if coord == "asymmetric":
        return y / scale
    if coord == "align_corners":
        return y * 0.0 if width == 1 else y * (in_len - 1) / (width - 1)
    if coord == "pytorch_half_pixel":
        return y * 0.0 - 0.5 if width == 1 else (y + 0.5) / scale - 0.5
    if coord == "half_pixel_symmetric":
        offset = in_len / 2 * (1 - out_len / width)
        return offset + (y + 0.5) / scale - 0.5
    if coord == "tf_half_pixel_for_nn":
        return (y + 0.5) / scale
    if coord == "tf_crop_and_resize":
        start, end = (np.float32(v) for v in roi)  # the spec computes these in the roi's float32
        span = float(end - start)
        first = float(start * np.float32(in_len - 1))
        if width == 1:
            return y * 0.0 + span * (in_len - 1) / 2 + first
        return y * span * (in_len - 1) / (width - 1) + first
    raise ValueError(f"Resize coordinate_transformation_mode '{coord}' is not supported")


def _nearest_index(src: torch.Tensor, spec: _ResizeSpec, scale: float) -> torch.Tensor:
    """The input index nearest_mode picks for each source coordinate (before clamping)."""
    low = torch.floor(src)
    frac = src - low
    rounding = spec.nearest
    if rounding == "simple":
        rounding = "ceil" if scale < 1 else "floor"
    if rounding == "round_prefer_floor":
        return (low + (frac > 0.5).to(low.dtype)).long()
    if rounding == "round_prefer_ceil":
        return (low + (frac >= 0.5).to(low.dtype)).long()
    if rounding == "floor":
        return low.long()
    if rounding == "ceil":
        return torch.ceil(src).long()
    raise ValueError(f"Resize nearest_mode '{rounding}' is not supported")


def _kernel(spec: _ResizeSpec, d: torch.Tensor) -> torch.Tensor:
    """The linear (triangle) or cubic (Keys, ``cubic_coeff_a``) filter at distances ``d``."""
    d = d.abs()
    if spec.mode == "linear":
        return torch.clamp(1 - d, 0, 1)
    a = spec.cubic_a
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return torch.where(d <= 1, near, torch.where(d < 2, far, torch.zeros_like(d)))


def _taps(spec: _ResizeSpec, src: torch.Tensor, in_len: Any, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(indices, weights)``, each ``(out, n)``: the input positions each output position reads (not yet
    clamped) and their weights."""
    # antialias widens the filter by 1/scale when downsampling
    support = 1 if spec.mode == "linear" else 2
    s = min(scale, 1.0) if spec.antialias else 1.0
    start = math.floor(-support / s) + 1
    n = 2 - 2 * start
    low = torch.floor(src)
    ratio = src - low
    exact = ratio == 0  # an exact source position counts as ratio 1 from the pixel on its left
    ratio = torch.where(exact, torch.ones_like(ratio), ratio)
    low = torch.where(exact, low - 1, low)
    offsets = torch.arange(start, start + n, dtype=torch.float64)
    weights = _kernel(spec, (offsets[None, :] - ratio[:, None]) * s)
    if spec.antialias:
        weights = weights / weights.sum(-1, keepdim=True)
    index = (low[:, None] + offsets[None, :]).long()
    if spec.exclude_outside:
        weights = torch.where((index < 0) | (index >= in_len), torch.zeros_like(weights), weights)
        total = weights.sum(-1, keepdim=True)
        weights = weights / torch.where(total == 0, torch.ones_like(total), total)
    return index, weights


def _resize_axis(x: torch.Tensor, axis: int, out_len: Any, scale: float, roi: tuple | None,
                 spec: _ResizeSpec) -> torch.Tensor:
    """``x`` resized along ``axis`` to ``out_len`` (the spec's 1-D interpolation, for every other index)."""
    in_len = x.shape[axis]
    src = _source_coords(spec, out_len, in_len, scale, roi)
    trail = (1,) * (x.dim() - axis - 1)
    if spec.mode == "nearest":
        index = torch.clamp(_nearest_index(src, spec, scale), 0, in_len - 1)
        y = torch.index_select(x, axis, index)
    else:
        index, weights = _taps(spec, src, in_len, scale)
        n = index.shape[1]
        taps = torch.index_select(x, axis, torch.clamp(index, 0, in_len - 1).reshape(-1))
        taps = taps.reshape(*x.shape[:axis], out_len, n, *x.shape[axis + 1:])
        y = (taps * weights.to(x.dtype).reshape(out_len, n, *trail)).sum(axis + 1)
    if spec.coord == "tf_crop_and_resize":
        outside = ((src < 0) | (src > in_len - 1)).reshape(out_len, *trail)
        y = torch.where(outside, torch.full_like(y, spec.extrapolation), y)
    return y


def _resize_by_axes(x: torch.Tensor, spec: _ResizeSpec, scale: list, out: list, roi: list | None) -> torch.Tensor:
    """Resize ``x`` one axis at a time (skipping axes left unchanged), computing in float."""
    rank = x.dim()
    dtype = x.dtype
    work = x
    if spec.mode != "nearest" and dtype not in (torch.float32, torch.float64):
        work = x.to(torch.float64 if not dtype.is_floating_point else torch.float32)
    for axis in range(rank):
        axis_roi = None if roi is None else (roi[axis], roi[axis + rank])
        same = isinstance(scale[axis], float) and math.isclose(scale[axis], 1.0) and _same(out[axis], x.shape[axis])
        if same and (axis_roi is None or (math.isclose(axis_roi[0], 0.0) and math.isclose(axis_roi[1], 1.0))):
            continue
        work = _resize_axis(work, axis, out[axis], scale[axis], axis_roi, spec)
    if work.dtype == dtype:
        return work
    if not dtype.is_floating_point:
        info = torch.iinfo(dtype)
        work = torch.clamp(torch.round(work), info.min, info.max)
    return work.to(dtype)


def _full_roi(roi: list, axes: list | None, rank: int) -> list:
    """An roi given for ``axes`` as the full ``[starts..., ends...]`` over every dim."""
    if not axes:
        return roi
    axes = _norm_axes(axes, rank)
    full = [0.0] * rank + [1.0] * rank
    for i, a in enumerate(axes):
        full[a], full[rank + a] = roi[i], roi[len(axes) + i]
    return full


def resize(x: torch.Tensor, spec: _ResizeSpec, scales: list | None, sizes: list | None,
           axes: list | None = None, roi: list | None = None) -> torch.Tensor:
    """ONNX Resize of ``x`` (scales or sizes, for ``axes`` or all dims)."""
    scale, out = _resize_targets(list(x.shape), scales, sizes, axes, spec.policy)
    if spec.coord == "tf_crop_and_resize":
        if roi is None:
            raise ValueError("Resize with tf_crop_and_resize needs its roi input")
        roi = _full_roi(roi, axes, x.dim())
    else:
        roi = None
    fast = _interpolate_mode(x, spec, scale, out, sizes is not None and spec.policy == "stretch")
    if fast is None:
        return _resize_by_axes(x, spec, scale, out, roi)
    mode, align = fast
    if sizes is not None:
        return F.interpolate(x, size=list(out[2:]), mode=mode, align_corners=align)
    return F.interpolate(x, scale_factor=scale[2:], mode=mode, align_corners=align, recompute_scale_factor=False)


@rule("Resize")
def _resize(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX Resize: opset 10 (X, scales; asymmetric) and 11+ (X, roi, scales, sizes; every mode,
    coordinate_transformation_mode, nearest_mode, cubic_coeff_a, exclude_outside, antialias,
    keep_aspect_ratio_policy and axes)."""
    x = tensor(inputs[0])
    extra = list(inputs[1:]) + [None] * 3
    if ctx.opset < 11:
        spec = _resize_spec(attrs, legacy=True)
        return [resize(x, spec, _floats(extra[0], "scales"), None)]
    spec = _resize_spec(attrs, legacy=False)
    scales = _floats(extra[1], "scales")
    sizes = ints(extra[2], "sizes") if _given(extra[2]) else None
    if sizes is not None:
        scales = None  # sizes win when both are given (the spec allows only one)
    roi = _floats(extra[0], "roi") if spec.coord == "tf_crop_and_resize" else None
    return [resize(x, spec, scales, sizes, attrs.get("axes"), roi)]


@rule("Upsample")
def _upsample(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX Upsample (opsets 7-9, deprecated since 10): Resize-10 semantics, scales as attribute or input."""
    x = tensor(inputs[0])
    scales = list(attrs["scales"]) if "scales" in attrs else _floats(inputs[1] if len(inputs) > 1 else None,
                                                                     "scales")
    return [resize(x, _resize_spec(attrs, legacy=True), scales, None)]


# ---------------------------------------------------------------------------------------------- sampling grids
@rule("GridSample")
def _grid_sample(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX GridSample (opset 16: bilinear/bicubic/nearest, 20+: linear/cubic/nearest, 2-D and 3-D):
    ``F.grid_sample``, which the spec follows."""
    x, grid = tensor(inputs[0]), tensor(inputs[1])
    mode = as_str(attrs.get("mode", "bilinear" if ctx.opset < 20 else "linear"))
    mode = {"linear": "bilinear", "cubic": "bicubic"}.get(mode, mode)
    padding = as_str(attrs.get("padding_mode", "zeros"))
    if x.dim() not in (4, 5) or (mode == "bicubic" and x.dim() != 4):
        raise ValueError(f"GridSample mode '{mode}' on a rank-{x.dim()} input is not supported "
                         "(2-D all modes, 3-D nearest/linear)")
    return [F.grid_sample(x, grid.to(x.dtype), mode=mode, padding_mode=padding,
                          align_corners=bool(attrs.get("align_corners", 0)))]


@rule("AffineGrid")
def _affine_grid(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX AffineGrid (opset 20): the 2-D or 3-D sampling grid of affine matrices ``theta`` for ``size``."""
    theta = tensor(inputs[0])
    size = ints(inputs[1], "size")
    return [F.affine_grid(theta, size, align_corners=bool(attrs.get("align_corners", 0)))]


# ---------------------------------------------------------------------------------------------- crop / rearrange
@rule("CenterCropPad")
def _center_crop_pad(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX CenterCropPad (opset 18): crop or zero-pad each of ``axes`` to ``shape``, centred (the extra
    element of an odd difference goes to the end)."""
    x = tensor(inputs[0])
    shape = ints(inputs[1], "shape")
    axes = _norm_axes(list(attrs.get("axes", range(x.dim()))), x.dim())
    if len(axes) != len(shape):
        raise ValueError(f"CenterCropPad got {len(shape)} sizes for {len(axes)} axes")
    pads = [0] * (2 * x.dim())
    for axis, size in zip(axes, shape):
        dim = x.shape[axis]
        if size < dim:
            x = torch.narrow(x, axis, (dim - size) // 2, size)
        elif size > dim:
            begin = (size - dim) // 2
            at = 2 * (x.dim() - 1 - axis)  # F.pad lists the last dim first
            pads[at], pads[at + 1] = begin, size - dim - begin
    return [F.pad(x, pads) if any(pads) else x]


@rule("DepthToSpace")
def _depth_to_space(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX DepthToSpace: rearrange channel blocks into ``blocksize`` x ``blocksize`` spatial blocks
    (mode DCR, the default, or CRD)."""
    x = tensor(inputs[0])
    b = attrs["blocksize"]
    n, c, h, w = x.shape
    if as_str(attrs.get("mode", "DCR")) == "CRD":
        y = x.reshape(n, c // (b * b), b, b, h, w).permute(0, 1, 4, 2, 5, 3)
    else:
        y = x.reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
    return [y.reshape(n, c // (b * b), h * b, w * b)]


@rule("SpaceToDepth")
def _space_to_depth(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX SpaceToDepth: move ``blocksize`` x ``blocksize`` spatial blocks into channels (the inverse of
    DepthToSpace; mode DCR, the default, or CRD)."""
    x = tensor(inputs[0])
    b = attrs["blocksize"]
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // b, b, w // b, b)
    if as_str(attrs.get("mode", "DCR")) == "CRD":
        y = y.permute(0, 1, 3, 5, 2, 4)
    else:
        y = y.permute(0, 3, 5, 1, 2, 4)
    return [y.reshape(n, c * b * b, h // b, w // b)]


# ---------------------------------------------------------------------------------------------- Col2Im
def _col2im_nd(x: torch.Tensor, image: list, block: list, strides: list, dilations: list, pads: list) -> torch.Tensor:
    """Col2Im for any number of spatial dims: every column entry is added into its padded-image position
    (an index_add over the flattened padded image), then the pads are cut off."""
    k = len(image)
    padded = [image[i] + pads[i] + pads[k + i] for i in range(k)]
    counts = [(padded[i] - dilations[i] * (block[i] - 1) - 1) // strides[i] + 1 for i in range(k)]
    n, cols, length = x.shape
    c = cols // math.prod(block)
    # flat padded-image index of (kernel offset, block position) pairs, one spatial dim at a time
    index = torch.zeros((1, 1), dtype=torch.int64)
    for i in range(k):
        kern = torch.arange(block[i]) * dilations[i]
        pos = torch.arange(counts[i]) * strides[i]
        along = kern[:, None] + pos[None, :]  # (block_i, count_i)
        index = (index[:, None, :, None] * padded[i] + along[None, :, None, :])
        index = index.reshape(index.shape[0] * block[i], -1)
    if index.shape[1] != length:
        raise ValueError(f"Col2Im input has {length} blocks, the image and block shapes give {index.shape[1]}")
    src = x.reshape(n, c, math.prod(block) * length)
    out = torch.zeros(n, c, math.prod(padded), dtype=x.dtype).index_add(2, index.reshape(-1), src)
    out = out.reshape(n, c, *padded)
    for i in range(k):
        out = torch.narrow(out, 2 + i, pads[i], image[i])
    return out


@rule("Col2Im")
def _col2im(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX Col2Im (opset 18): sum sliding-block columns back into an image (``F.fold`` for 2-D images
    with symmetric pads, an index_add otherwise)."""
    x = tensor(inputs[0])
    image, block = ints(inputs[1], "image_shape"), ints(inputs[2], "block_shape")
    k = len(image)
    strides = list(attrs.get("strides", [1] * k))
    dilations = list(attrs.get("dilations", [1] * k))
    pads = list(attrs.get("pads", [0] * (2 * k)))
    if k == 2 and pads[:2] == pads[2:]:
        return [F.fold(x, image, block, dilation=dilations, padding=pads[:2], stride=strides)]
    return [_col2im_nd(x, image, block, strides, dilations, pads)]
