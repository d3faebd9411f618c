"""ONNX shape and indexing ops: Shape, Reshape, Squeeze, Transpose, Expand, Concat, Split, Slice, Gather, Scatter, Pad, ..."""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from fxopt.ir.capture.onnx_ops.base import (
    Ctx, KNOWN_LIMIT, Known, as_str, axes_arg, ints, norm_index, rule, scalar, tensor,
)


# ---------------------------------------------------------------------------------------------- shapes
@rule("Shape")
def _shape(ctx: Ctx, inputs: list, attrs: dict) -> list:
    x = inputs[0]
    dims = list(x.shape) if not isinstance(x, Known) else list(x.shape)
    start, end = attrs.get("start", 0), attrs.get("end", None)
    dims = dims[start:end]
    return [Known(dims, (len(dims),), torch.int64)]


@rule("Size")
def _size(ctx: Ctx, inputs: list, attrs: dict) -> list:
    x = inputs[0]
    n = len(x.data) if isinstance(x, Known) else x.numel()
    return [Known([n], (), torch.int64)]


@rule("ConstantOfShape")
def _constant_of_shape(ctx: Ctx, inputs: list, attrs: dict) -> list:
    shape = ints(inputs[0], "shape")
    value = attrs.get("value")
    fill, dtype = (0.0, torch.float32) if value is None else value  # (python scalar, dtype), see onnx_import
    if len(shape) <= 1 and all(isinstance(d, int) for d in shape) and not dtype.is_floating_point \
            and math.prod(shape) <= KNOWN_LIMIT:
        n = shape[0] if shape else 1
        return [Known([fill] * n, tuple(shape), dtype)]
    return [torch.full(shape, fill, dtype=dtype)]


@rule("Range")
def _range(ctx: Ctx, inputs: list, attrs: dict) -> list:
    start, limit, delta = (scalar(v, "bounds") for v in inputs)
    dtype = inputs[0].dtype
    return [torch.arange(start, limit, delta, dtype=dtype)]


@rule("Reshape")
def _reshape(ctx: Ctx, inputs: list, attrs: dict) -> list:
    x, shape = inputs[0], ints(inputs[1], "shape")
    if not attrs.get("allowzero", 0):
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    if isinstance(x, Known):
        n = len(x.data)
        if len(shape) <= 1:
            return [Known(list(x.data), (n,) if shape else (), x.dtype)]
        x = tensor(x)
    return [torch.reshape(x, shape)]


@rule("Flatten")
def _flatten(ctx: Ctx, inputs: list, attrs: dict) -> list:
    x = tensor(inputs[0])
    axis = attrs.get("axis", 1)
    axis = axis + x.dim() if axis < 0 else axis
    lead = math.prod(x.shape[:axis]) if axis else 1
    return [torch.reshape(x, (lead, -1))]


@rule("Unsqueeze")
def _unsqueeze(ctx: Ctx, inputs: list, attrs: dict) -> list:
    x, axes = inputs[0], axes_arg(inputs, attrs, 1)
    rank = len(x.shape) + len(axes)
    axes = sorted(a + rank if a < 0 else a for a in axes)
    if isinstance(x, Known) and rank <= 1:
        return [Known(list(x.data), (len(x.data),), x.dtype)]
    x = tensor(x)
    for a in axes:
        x = torch.unsqueeze(x, a)
    return [x]


@rule("Squeeze")
def _squeeze(ctx: Ctx, inputs: list, attrs: dict) -> list:
    x, axes = inputs[0], axes_arg(inputs, attrs, 1)
    if isinstance(x, Known):
        if x.shape == (1,) and (axes is None or axes in ([0], [-1])):
            return [Known(list(x.data), (), x.dtype)]
        x = tensor(x)
    if axes is None:
        return [torch.squeeze(x)]
    axes = [a + x.dim() if a < 0 else a for a in axes]
    return [torch.squeeze(x, tuple(axes))]


@rule("Transpose")
def _transpose(ctx: Ctx, inputs: list, attrs: dict) -> list:
    x = tensor(inputs[0])
    perm = attrs.get("perm") or list(reversed(range(x.dim())))
    return [torch.permute(x, list(perm))]


@rule("Expand")
def _expand(ctx: Ctx, inputs: list, attrs: dict) -> list:
    x, shape = tensor(inputs[0]), ints(inputs[1], "shape")
    rank = max(x.dim(), len(shape))
    xs = [1] * (rank - x.dim()) + list(x.shape)
    ss = [1] * (rank - len(shape)) + list(shape)
    out = [xd if isinstance(s, int) and s == 1 else s for xd, s in zip(xs, ss)]
    return [torch.reshape(x, xs).expand(out) if rank != x.dim() else x.expand(out)]


@rule("Tile")
def _tile(ctx: Ctx, inputs: list, attrs: dict) -> list:
    return [tensor(inputs[0]).repeat(ints(inputs[1], "repeats"))]


@rule("Concat")
def _concat(ctx: Ctx, inputs: list, attrs: dict) -> list:
    vals = [v for v in inputs if v is not None]
    if all(isinstance(v, Known) for v in vals) and all(len(v.shape) == 1 for v in vals):
        data = [x for v in vals for x in v.data]
        return [Known(data, (len(data),), vals[0].dtype)]
    ts = [tensor(v) for v in vals]
    dtype = next((t.dtype for v, t in zip(vals, ts) if not isinstance(v, Known)), ts[0].dtype)
    return [torch.cat([t.to(dtype) for t in ts], dim=attrs["axis"])]


@rule("Split")
def _split(ctx: Ctx, inputs: list, attrs: dict) -> list:
    x = tensor(inputs[0])
    axis = attrs.get("axis", 0)
    sizes = attrs.get("split")
    if sizes is None and len(inputs) > 1 and inputs[1] is not None:
        sizes = ints(inputs[1], "split")
    if sizes is not None:
        return list(torch.split(x, list(sizes), dim=axis))
    n = attrs.get("num_outputs", ctx.n_outputs)
    dim = x.shape[axis]
    return list(torch.split(x, -(-dim // n), dim=axis))


@rule("Slice")
def _slice(ctx: Ctx, inputs: list, attrs: dict) -> list:
    x = inputs[0]
    if "starts" in attrs:  # opset < 10
        starts, ends, axes, steps = attrs["starts"], attrs["ends"], attrs.get("axes"), None
    else:
        starts, ends = ints(inputs[1], "starts"), ints(inputs[2], "ends")
        axes = ints(inputs[3], "axes") if len(inputs) > 3 and inputs[3] is not None else None
        steps = ints(inputs[4], "steps") if len(inputs) > 4 and inputs[4] is not None else None
    axes = list(axes) if axes is not None else list(range(len(starts)))
    steps = list(steps) if steps is not None else [1] * len(starts)
    if isinstance(x, Known) and len(x.shape) == 1 and axes in ([0], [-1]):
        data = x.data[_clip_big(starts[0]):_clip_big(ends[0]):steps[0]]
        return [Known(data, (len(data),), x.dtype)]
    x = tensor(x)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = axis + x.dim() if axis < 0 else axis
        x = _slice_axis(x, axis, start, end, step)
    return [x]


_BIG = 2 ** 62


def _clip_big(i: int) -> int | None:
    return None if isinstance(i, int) and abs(i) >= _BIG and i > 0 else (
        -_BIG if isinstance(i, int) and i <= -_BIG else i)


def _slice_axis(x: torch.Tensor, axis: int, start: Any, end: Any, step: int) -> torch.Tensor:
    """ONNX (= Python) slicing of one axis; negative steps via flip, since torch slices only forwards."""
    if step > 0:
        s = _clip_big(start)
        e = _clip_big(end)
        index = [slice(None)] * axis + [slice(s, e, step)]
        return x[tuple(index)]
    dim = x.shape[axis]
    start = norm_index(start if abs(start) < _BIG else (dim - 1 if start > 0 else -1), dim)
    end = norm_index(end if abs(end) < _BIG else (dim if end > 0 else -1), dim)
    start = torch.sym_max(-1, torch.sym_min(start, dim - 1))
    end = torch.sym_max(-1, torch.sym_min(end, dim - 1))
    flipped = torch.flip(x, [axis])
    index = [slice(None)] * axis + [slice(dim - 1 - start, dim - 1 - end, -step)]
    return flipped[tuple(index)]


@rule("Gather")
def _gather(ctx: Ctx, inputs: list, attrs: dict) -> list:
    x, idx = inputs
    axis = attrs.get("axis", 0)
    if isinstance(x, Known) and isinstance(idx, Known) and len(x.shape) == 1:
        n = len(x.data)
        picked = [x.data[i + n if isinstance(i, int) and i < 0 else i] for i in idx.data]
        return [Known(picked, idx.shape, x.dtype)]
    x = tensor(x)
    axis = axis + x.dim() if axis < 0 else axis
    if isinstance(idx, Known):
        dim = x.shape[axis]
        fixed = [norm_index(i, dim) for i in idx.data]
        if idx.shape == ():
            return [torch.select(x, axis, fixed[0])]
        out = torch.index_select(x, axis, torch.tensor(fixed, dtype=torch.int64))
        return [out]
    if axis == 0 and x.dim() == 2 and not idx.dtype.is_floating_point:
        return [F.embedding(idx, x)]  # what nn.Embedding exports to (indices must be >= 0)
    index = [slice(None)] * axis + [idx]
    return [x[tuple(index)]]


@rule("GatherElements")
def _gather_elements(ctx: Ctx, inputs: list, attrs: dict) -> list:
    x, idx = tensor(inputs[0]), tensor(inputs[1])
    return [torch.gather(x, attrs.get("axis", 0), idx)]


@rule("ScatterND")
def _scatter_nd(ctx: Ctx, inputs: list, attrs: dict) -> list:
    data, idx, upd = (tensor(v) for v in inputs)
    red = as_str(attrs.get("reduction", "none"))
    if red not in ("none", "add"):
        raise ValueError(f"ScatterND reduction '{red}' is not supported (none, add are)")
    k = idx.shape[-1]
    index = tuple(idx[..., j] for j in range(k))
    return [torch.index_put(data, index, upd, accumulate=red == "add")]


@rule("ScatterElements")
def _scatter_elements(ctx: Ctx, inputs: list, attrs: dict) -> list:
    data, idx, upd = (tensor(v) for v in inputs)
    red = as_str(attrs.get("reduction", "none"))
    axis = attrs.get("axis", 0)
    if red == "none":
        return [torch.scatter(data, axis, idx, upd)]
    return [torch.scatter_reduce(data, axis, idx, upd, {"add": "sum", "mul": "prod", "max": "amax",
                                                         "min": "amin"}[red])]


@rule("Pad")
def _pad(ctx: Ctx, inputs: list, attrs: dict) -> list:
    x = tensor(inputs[0])
    pads = list(attrs["pads"]) if "pads" in attrs else ints(inputs[1], "pads")
    value = attrs.get("value", 0.0)
    if len(inputs) > 2 and inputs[2] is not None:
        value = scalar(inputs[2], "constant_value")
    axes = ints(inputs[3], "axes") if len(inputs) > 3 and inputs[3] is not None else list(range(x.dim()))
    axes = [a + x.dim() if a < 0 else a for a in axes]
    n = len(axes)
    per_dim = {a: (pads[i], pads[i + n]) for i, a in enumerate(axes)}
    last = max(per_dim) if per_dim else 0
    torch_pads = []
    for d in range(last, -1, -1):
        torch_pads += list(per_dim.get(d, (0, 0)))
    mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}[
        as_str(attrs.get("mode", "constant"))]
    if mode == "constant":
        return [F.pad(x, torch_pads, mode, value)]
    return [F.pad(x, torch_pads, mode)]
