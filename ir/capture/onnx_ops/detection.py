"""ONNX detection ops: RoiAlign, NonMaxSuppression, MaxUnpool, DeformConv.

Each follows the ONNX spec with gathers and small matrix products so that torch.export traces it: RoiAlign
builds per-roi bilinear sampling matrices, DeformConv samples its offset positions bilinearly and multiplies
by the weights as an im2col convolution, NonMaxSuppression runs its greedy selection unrolled over the
(static) number of boxes and returns the selected triples with a data-dependent row count.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fxopt.ir.capture.onnx_ops.base import Ctx, as_str, ints, rule, tensor

NMS_MAX_BOXES = 512  # the greedy selection is unrolled once per box (about 4 ops each): bounds the graph size


# ---------------------------------------------------------------------------------------------- RoiAlign
def _roi_axis(start: torch.Tensor, size: torch.Tensor, bins: int, grid: int, length: int, dtype) -> tuple:
    """The bilinear taps of RoiAlign's sample points along one axis, per roi: ``(index, weight)`` each
    ``(rois, bins, grid, 2)``, as the spec's pre-computation defines them (samples outside
    ``[-1, length]`` get weight 0, the others are clamped to the last pixel)."""
    bin_size = size / bins
    steps = torch.arange(bins, dtype=dtype)[:, None] * bin_size[:, None, None] \
        + (torch.arange(grid, dtype=dtype)[None, :] + 0.5) * (bin_size / grid)[:, None, None]
    pos = start[:, None, None] + steps  # (rois, bins, grid)
    outside = (pos < -1.0) | (pos > length)
    pos = torch.clamp(pos, min=0)
    low = torch.floor(pos)
    at_end = low >= length - 1
    low = torch.where(at_end, torch.full_like(low, length - 1), low)
    pos = torch.where(at_end, low, pos)
    high = torch.where(at_end, low, low + 1)
    frac = pos - low
    weight = torch.stack([1 - frac, frac], -1) * (~outside).to(dtype)[..., None]
    return torch.stack([low, high], -1).long(), weight


@rule("RoiAlign")
def _roi_align(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX RoiAlign (opsets 10, 16, 22): average or max of bilinear samples over each output bin of each
    roi, with a fixed ``sampling_ratio`` (the adaptive ``sampling_ratio=0`` depends on roi values)."""
    x, rois, batch = (tensor(v) for v in inputs[:3])
    ratio = int(attrs.get("sampling_ratio", 0))
    if ratio <= 0:
        raise ValueError("RoiAlign with sampling_ratio=0 (a sample count that depends on the roi sizes) is not "
                         "supported; export with a fixed sampling_ratio")
    out_h, out_w = int(attrs.get("output_height", 1)), int(attrs.get("output_width", 1))
    scale = float(attrs.get("spatial_scale", 1.0))
    default = "half_pixel" if ctx.opset >= 16 else "output_half_pixel"
    half_pixel = as_str(attrs.get("coordinate_transformation_mode", default)) == "half_pixel"
    mode = as_str(attrs.get("mode", "avg")).lower()
    h, w = x.shape[2], x.shape[3]
    dtype = x.dtype
    boxes = rois.to(dtype) * scale - (0.5 if half_pixel else 0.0)
    size_w, size_h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    if not half_pixel:
        size_w, size_h = torch.clamp(size_w, min=1.0), torch.clamp(size_h, min=1.0)
    iy, wy = _roi_axis(boxes[:, 1], size_h, out_h, ratio, h, dtype)
    ix, wx = _roi_axis(boxes[:, 0], size_w, out_w, ratio, w, dtype)
    feats = torch.index_select(x, 0, batch.long())  # (rois, C, H, W)
    r = feats.shape[0]
    if mode == "avg":
        # separable: (rois, out, pixel) matrices summing each bin's samples and taps
        my = torch.zeros(r, out_h, h, dtype=dtype).scatter_add(2, iy.reshape(r, out_h, -1), wy.reshape(r, out_h, -1))
        mx = torch.zeros(r, out_w, w, dtype=dtype).scatter_add(2, ix.reshape(r, out_w, -1), wx.reshape(r, out_w, -1))
        return [torch.einsum("rph,rchw,rqw->rcpq", my, feats, mx) / (ratio * ratio)]
    if mode != "max":
        raise ValueError(f"RoiAlign mode '{mode}' is not supported")
    # max: the largest weighted tap over every sample of the bin (the spec's max of w_i * v_i)
    ny, nx = out_h * ratio * 2, out_w * ratio * 2
    c = feats.shape[1]
    rows = torch.gather(feats, 2, iy.reshape(r, 1, ny, 1).expand(r, c, ny, w))
    taps = torch.gather(rows, 3, ix.reshape(r, 1, 1, nx).expand(r, c, ny, nx))
    taps = taps * wy.reshape(r, 1, ny, 1) * wx.reshape(r, 1, 1, nx)
    taps = taps.reshape(r, c, out_h, ratio * 2, out_w, ratio * 2)
    return [torch.amax(taps, dim=(3, 5))]


# ---------------------------------------------------------------------------------------------- NonMaxSuppression
def _box_corners(boxes: torch.Tensor, center: bool) -> tuple:
    """``(y_min, x_min, y_max, x_max)`` of boxes given as corners (either order) or as centre + size."""
    if center:
        xc, yc, bw, bh = boxes.unbind(-1)
        return yc - bh / 2, xc - bw / 2, yc + bh / 2, xc + bw / 2
    y1, x1, y2, x2 = boxes.unbind(-1)
    return torch.minimum(y1, y2), torch.minimum(x1, x2), torch.maximum(y1, y2), torch.maximum(x1, x2)


def _suppresses(boxes: torch.Tensor, center: bool, iou_threshold: torch.Tensor) -> torch.Tensor:
    """``(batch, n, n)`` bool: box i suppresses box j (their IoU exceeds the threshold, overlapping boxes of
    positive area only)."""
    y0, x0, y1, x1 = _box_corners(boxes, center)
    iw = torch.minimum(x1[:, :, None], x1[:, None, :]) - torch.maximum(x0[:, :, None], x0[:, None, :])
    ih = torch.minimum(y1[:, :, None], y1[:, None, :]) - torch.maximum(y0[:, :, None], y0[:, None, :])
    inter = iw * ih
    area = (x1 - x0) * (y1 - y0)
    union = area[:, :, None] + area[:, None, :] - inter
    valid = (iw > 0) & (ih > 0) & (area[:, :, None] > 0) & (area[:, None, :] > 0) & (union > 0)
    safe = torch.where(valid, union, torch.ones_like(union))
    return valid & (inter / safe > iou_threshold)


def _scalar_input(inputs: list, index: int, default, dtype) -> torch.Tensor:
    """Optional 1-element input ``index`` as a 0-d tensor (``default`` when absent)."""
    v = inputs[index] if len(inputs) > index else None
    if v is None:
        return torch.tensor(default, dtype=dtype)
    t = tensor(v)
    if t.numel() == 0:
        return torch.tensor(default, dtype=dtype)
    return t.reshape(()).to(dtype)


@rule("NonMaxSuppression")
def _nms(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX NonMaxSuppression (opsets 10, 11): per batch and class, greedily keep the highest-scoring boxes
    not overlapping a kept one by more than iou_threshold (scores above score_threshold, at most
    max_output_boxes_per_class); returns ``(selected, 3)`` int64 ``[batch, class, box]`` rows."""
    boxes, scores = tensor(inputs[0]), tensor(inputs[1])
    limit = _scalar_input(inputs, 2, 0, torch.int64)
    iou = _scalar_input(inputs, 3, 0.0, boxes.dtype)
    n = boxes.shape[1]
    if not isinstance(n, int) or n > NMS_MAX_BOXES:
        raise ValueError(f"NonMaxSuppression over {n} boxes is not supported (at most {NMS_MAX_BOXES}, static)")
    candidate = torch.ones_like(scores, dtype=torch.bool)
    if len(inputs) > 4 and inputs[4] is not None:
        candidate = scores > _scalar_input(inputs, 4, 0.0, scores.dtype)
    # highest score first, ties by lower box index (a stable sort)
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices  # (B, C, n)
    sup = _suppresses(boxes, bool(attrs.get("center_point_box", 0)), iou)  # (B, n, n)
    b, c = scores.shape[0], scores.shape[1]
    sup = sup[:, None].expand(b, c, n, n)
    rows = order[..., :, None].expand(b, c, n, n)
    sup = torch.gather(torch.gather(sup, 2, rows), 3, order[..., None, :].expand(b, c, n, n))
    keep = torch.gather(candidate, 2, order)
    # box i suppressed by an earlier kept box: sup[..., j, i] for j < i, read row-wise
    pos = torch.arange(n)  # not torch.eye: its decomposition makes a uint16 arange past 255, which CPU lacks
    earlier = torch.transpose(sup, -1, -2) & (pos[None, :] < pos[:, None])
    for i in range(1, n):
        hit = (keep & earlier[..., i, :]).any(-1, keepdim=True)
        keep = keep & ~(hit & (pos == i))
    keep = keep & (torch.cumsum(keep.long(), -1) <= limit)
    where = torch.nonzero(keep)  # (selected, 3): batch, class, rank in score order
    box = order[where[:, 0], where[:, 1], where[:, 2]]
    return [torch.stack([where[:, 0], where[:, 1], box], 1)]


# ---------------------------------------------------------------------------------------------- MaxUnpool
@rule("MaxUnpool")
def _max_unpool(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX MaxUnpool (opsets 9, 11, 22): scatter X into zeros at MaxPool's flat indices (over the whole
    tensor) of the inferred unpooled shape; an ``output_shape`` larger than that pads at the end."""
    x, index = tensor(inputs[0]), tensor(inputs[1])
    kernel = list(attrs["kernel_shape"])
    k = len(kernel)
    strides = list(attrs.get("strides", [1] * k))
    pads = list(attrs.get("pads", [0] * (2 * k)))
    inferred = list(x.shape[:2]) + [(x.shape[2 + i] - 1) * strides[i] - pads[i] - pads[k + i] + kernel[i]
                                    for i in range(k)]
    flat = torch.zeros(math.prod(inferred), dtype=x.dtype).scatter(0, index.reshape(-1).long(), x.reshape(-1))
    y = flat.reshape(inferred)
    if len(inputs) > 2 and inputs[2] is not None:
        shape = ints(inputs[2], "output_shape")
        if any(s < d for s, d in zip(shape, inferred)):
            raise ValueError(f"MaxUnpool output_shape {shape} is smaller than the unpooled shape {inferred}")
        pad = []
        for s, d in reversed(list(zip(shape, inferred))):
            pad += [0, s - d]
        y = F.pad(y, pad)
    return [y]


# ---------------------------------------------------------------------------------------------- DeformConv
def _bilinear_zero(x: torch.Tensor, py: torch.Tensor, px: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of ``x`` ``(N, G, Cg, H, W)`` at positions ``py``/``px`` ``(N, G, P)``, taps outside
    the image reading 0; returns ``(N, G, Cg, P)``."""
    n, g, cg, h, w = x.shape
    flat = x.reshape(n, g, cg, h * w)
    y0, x0 = torch.floor(py), torch.floor(px)
    out = 0
    for dy in (0, 1):
        for dx in (0, 1):
            yy, xx = y0 + dy, x0 + dx
            weight = (1 - (py - yy).abs()) * (1 - (px - xx).abs())
            inside = (yy >= 0) & (yy <= h - 1) & (xx >= 0) & (xx <= w - 1)
            weight = weight * inside.to(x.dtype)
            idx = (torch.clamp(yy, 0, h - 1) * w + torch.clamp(xx, 0, w - 1)).long()
            taps = torch.gather(flat, 3, idx[:, :, None, :].expand(n, g, cg, idx.shape[-1]))
            out = out + taps * weight[:, :, None, :]
    return out


@rule("DeformConv")
def _deform_conv(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX DeformConv (opsets 19, 22), 2-D: a convolution whose kernel taps are moved by ``offset`` (per
    offset group, output position and tap) and sampled bilinearly (zeros outside), optionally scaled by
    ``mask``."""
    x, weight, offset = (tensor(v) for v in inputs[:3])
    bias = tensor(inputs[3]) if len(inputs) > 3 and inputs[3] is not None else None
    mask = tensor(inputs[4]) if len(inputs) > 4 and inputs[4] is not None else None
    if x.dim() != 4:
        raise ValueError(f"DeformConv on a rank-{x.dim()} input is not supported (2-D only)")
    n, ic, h, w = x.shape
    oc = weight.shape[0]
    kh, kw = list(attrs.get("kernel_shape", weight.shape[2:]))
    sh, sw = list(attrs.get("strides", [1, 1]))
    dh, dw = list(attrs.get("dilations", [1, 1]))
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    group, og = int(attrs.get("group", 1)), int(attrs.get("offset_group", 1))
    oh, ow = offset.shape[2], offset.shape[3]
    dtype = x.dtype
    off = offset.reshape(n, og, kh, kw, 2, oh, ow).to(dtype)
    base_y = (torch.arange(oh, dtype=dtype) * sh - pads[0])[None, :, None] \
        + (torch.arange(kh, dtype=dtype) * dh)[:, None, None]  # (kh, oh, 1)
    base_x = (torch.arange(ow, dtype=dtype) * sw - pads[1])[None, None, :] \
        + (torch.arange(kw, dtype=dtype) * dw)[:, None, None]  # (kw, 1, ow)
    py = off[:, :, :, :, 0] + base_y[None, None, :, None, :, :]  # (n, og, kh, kw, oh, ow)
    px = off[:, :, :, :, 1] + base_x[None, None, None, :, :, :]
    sampled = _bilinear_zero(x.reshape(n, og, ic // og, h, w), py.reshape(n, og, -1), px.reshape(n, og, -1))
    sampled = sampled.reshape(n, og, ic // og, kh * kw, oh * ow)
    if mask is not None:
        sampled = sampled * mask.reshape(n, og, 1, kh * kw, oh * ow).to(dtype)
    cols = sampled.reshape(n, group, (ic // group) * kh * kw, oh * ow)
    wmat = weight.reshape(group, oc // group, (ic // group) * kh * kw)
    y = torch.einsum("gok,ngkl->ngol", wmat, cols).reshape(n, oc, oh, ow)
    if bias is not None:
        y = y + bias.reshape(1, oc, 1, 1)
    return [y]
