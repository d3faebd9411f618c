"""ONNX shape and indexing ops: Shape, Reshape, Squeeze, Transpose, Expand, Concat, Split, Slice, Pad, Trilu,
Gather/GatherElements/GatherND, Scatter/ScatterElements/ScatterND, and the data-dependent Compress, NonZero,
Unique (their output sizes are unbacked sizes in torch.export)."""
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
    """ONNX Range(start, limit, delta); integer bounds giving at most KNOWN_LIMIT elements stay Known
    (RMSNormalization's expanded form computes its ReduceMean axes with Range)."""
    start, limit, delta = (scalar(v, "bounds") for v in inputs)
    dtype = inputs[0].dtype
    if all(isinstance(v, int) for v in (start, limit, delta)) and not dtype.is_floating_point and delta:
        values = list(range(start, limit, delta))
        if len(values) <= KNOWN_LIMIT:
            return [Known(values, (len(values),), dtype)]
    return [torch.arange(start, limit, delta, dtype=dtype)]


@rule("Reshape")
def _reshape(ctx: Ctx, inputs: list, attrs: dict) -> list:
    x, shape = inputs[0], ints(inputs[1], "shape")
    if not attrs.get("allowzero", 0):
        rank = len(x.shape)
        if any(isinstance(d, int) and d == 0 and i >= rank for i, d in enumerate(shape)):
            raise ValueError(f"Reshape's shape {shape} copies (0) a dim past the input's rank {rank}")
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
    """ONNX Split into given sizes or ``num_outputs`` near-equal parts; a 1-D Known splits into Knowns."""
    axis = attrs.get("axis", 0)
    sizes = attrs.get("split")
    if sizes is None and len(inputs) > 1 and inputs[1] is not None:
        sizes = ints(inputs[1], "split")
    x = inputs[0]
    if isinstance(x, Known) and len(x.shape) == 1 and axis in (0, -1):
        dim = len(x.data)
        if sizes is None:  # near-equal parts, the last one smaller (what torch.split with one size gives)
            part = -(-dim // attrs.get("num_outputs", ctx.n_outputs))
            sizes = [min(part, dim - i) for i in range(0, dim, part)]
        bounds = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
        return [Known(x.data[a:b], (b - a,), x.dtype) for a, b in zip(bounds, bounds[1:])]
    x = tensor(x)
    if sizes is not None:
        return list(torch.split(x, list(sizes), dim=axis))
    n = attrs.get("num_outputs", ctx.n_outputs)
    return list(torch.split(x, -(-x.shape[axis] // n), dim=axis))


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
    # INT64 sentinels mean "from the last element" / "through the first"; -1 is then already an end point
    # past the front, not an index to wrap
    start = dim - 1 if abs(start) >= _BIG and start > 0 else (-1 if abs(start) >= _BIG else norm_index(start, dim))
    end = dim if abs(end) >= _BIG and end > 0 else (-1 if abs(end) >= _BIG else norm_index(end, dim))
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
    """ONNX GatherElements (torch.gather; negative indices count from the end)."""
    x, idx = tensor(inputs[0]), tensor(inputs[1]).to(torch.int64)
    axis = attrs.get("axis", 0)
    return [torch.gather(x, axis, _nonneg(idx, x.shape[axis]))]


@rule("ScatterND")
def _scatter_nd(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX ScatterND: updates written (none) or combined (add/mul/max/min) at index tuples."""
    data, idx, upd = (tensor(v) for v in inputs)
    red = as_str(attrs.get("reduction", "none"))
    if red in ("mul", "max", "min"):
        return [_scatter_nd_reduce(data, idx.to(torch.int64), upd, red)]
    if red not in ("none", "add"):
        raise ValueError(f"ScatterND reduction '{red}' is not supported (none, add, mul, max, min are)")
    k = idx.shape[-1]
    index = tuple(idx[..., j] for j in range(k))
    return [torch.index_put(data, index, upd, accumulate=red == "add")]


@rule("ScatterElements")
def _scatter_elements(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX ScatterElements (torch.scatter / scatter_reduce; negative indices count from the end)."""
    data, idx, upd = (tensor(v) for v in inputs)
    red = as_str(attrs.get("reduction", "none"))
    axis = attrs.get("axis", 0)
    idx = _nonneg(idx.to(torch.int64), data.shape[axis])
    if red == "none":
        return [torch.scatter(data, axis, idx, upd)]
    return [torch.scatter_reduce(data, axis, idx, upd, {"add": "sum", "mul": "prod", "max": "amax",
                                                         "min": "amin"}[red])]


@rule("Pad")
def _pad(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX Pad (constant / reflect / edge / wrap; pads from the attribute or input, optional axes)."""
    x = tensor(inputs[0])
    pads = list(attrs["pads"]) if "pads" in attrs else ints(inputs[1], "pads")
    value = attrs.get("value", 0.0)
    if len(inputs) > 2 and inputs[2] is not None:
        value = scalar(inputs[2], "constant_value")
    axes = ints(inputs[3], "axes") if len(inputs) > 3 and inputs[3] is not None else list(range(x.dim()))
    axes = [a + x.dim() if a < 0 else a for a in axes]
    n = len(axes)
    per_dim = {a: (pads[i], pads[i + n]) for i, a in enumerate(axes)}
    torch_pads = []
    for d in range(x.dim() - 1, -1, -1):  # F.pad lists the last dim first
        torch_pads += list(per_dim.get(d, (0, 0)))
    while torch_pads[-2:] == [0, 0]:  # leading unpadded dims need no entry
        torch_pads = torch_pads[:-2]
    if not torch_pads:
        return [x]
    mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}[
        as_str(attrs.get("mode", "constant"))]
    if mode == "constant":
        return [F.pad(x, torch_pads, mode, value)]
    return [_pad_non_constant(x, torch_pads, mode)]


def _pad_non_constant(x: torch.Tensor, torch_pads: list, mode: str) -> torch.Tensor:
    """F.pad's reflect/replicate/circular modes, which take 1-3 padded trailing dims after one or two
    leading dims: the leading dims are folded into one (or one is added) around the call; more padded
    dims go one at a time."""
    k = len(torch_pads) // 2
    if k > 3:  # these modes pad each dim independently: one dim at a time, moved last
        for i in range(k):
            d = x.dim() - 1 - i
            moved = torch.movedim(x, d, -1)
            x = torch.movedim(_pad_non_constant(moved, torch_pads[2 * i:2 * i + 2], mode), -1, d)
        return x
    lead = list(x.shape[:x.dim() - k])
    folded = torch.reshape(x, [math.prod(lead) if lead else 1, 1] + list(x.shape[x.dim() - k:]))
    out = F.pad(folded, torch_pads, mode)
    return torch.reshape(out, lead + list(out.shape[2:]))


# ---------------------------------------------------------------------------------------------- indexing
def _nonneg(idx: torch.Tensor, dim: Any) -> torch.Tensor:
    """Indices with negative entries counted from the end of a dim of size ``dim``."""
    return torch.where(idx < 0, idx + dim, idx)


@rule("GatherND")
def _gather_nd(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX GatherND: index the first ``k = indices.shape[-1]`` dims after ``batch_dims`` leading batch
    dims shared by data and indices."""
    data, idx = tensor(inputs[0]), tensor(inputs[1]).to(torch.int64)
    b = attrs.get("batch_dims", 0)
    k = idx.shape[-1]
    batch = list(data.shape[:b])
    nb = math.prod(batch)
    flat_data = torch.reshape(data, [nb] + list(data.shape[b:]))
    flat_idx = torch.reshape(idx, [nb, -1, k])
    picks = [torch.arange(nb, dtype=torch.int64).reshape(nb, 1)]
    picks += [_nonneg(flat_idx[..., j], data.shape[b + j]) for j in range(k)]
    out = flat_data[tuple(picks)]
    return [torch.reshape(out, batch + list(idx.shape[b:-1]) + list(data.shape[b + k:]))]


@rule("Scatter")
def _scatter_old(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX Scatter (deprecated since opset 11): ScatterElements without reduction."""
    return _scatter_elements(ctx, inputs, {"axis": attrs.get("axis", 0)})


def _scatter_nd_reduce(data: torch.Tensor, idx: torch.Tensor, upd: torch.Tensor, red: str) -> torch.Tensor:
    """ScatterND with a mul/max/min reduction: rows of data (the first k dims flattened) combined with
    their updates by scatter_reduce."""
    k = idx.shape[-1]
    lead = list(data.shape[:k])
    lin = torch.zeros(list(idx.shape[:-1]), dtype=torch.int64)
    for j in range(k):
        lin = lin * lead[j] + _nonneg(idx[..., j], lead[j])
    rows = torch.reshape(data, [math.prod(lead), -1])
    flat_upd = torch.reshape(upd, [-1, rows.shape[1]])
    where = torch.reshape(lin, [-1, 1]).expand(flat_upd.shape)
    out = torch.scatter_reduce(rows, 0, where, flat_upd, {"mul": "prod", "max": "amax", "min": "amin"}[red])
    return torch.reshape(out, data.shape)


@rule("Compress")
def _compress(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX Compress: the slices along ``axis`` (of the flattened input when absent) where the 1-D
    condition is true; a condition shorter than the axis leaves the rest out."""
    x, cond = tensor(inputs[0]), inputs[1]
    axis = attrs.get("axis")
    if axis is None:
        x, axis = torch.reshape(x, [-1]), 0
    axis = axis + x.dim() if axis < 0 else axis
    if isinstance(cond, Known):
        picked = torch.tensor([i for i, c in enumerate(cond.data) if c], dtype=torch.int64)
    else:
        picked = torch.nonzero(cond.to(torch.bool)).reshape(-1)
    return [torch.index_select(x, axis, picked)]


@rule("NonZero")
def _nonzero(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX NonZero: the indices of the non-zero elements, shape (rank, count), row-major order."""
    x = tensor(inputs[0])
    if x.dim() == 0:
        x = torch.reshape(x, [1])
        return [torch.nonzero(x).t()[:0]]
    return [torch.nonzero(x).t()]


@rule("Unique")
def _unique(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX Unique: Y, first-occurrence indices, inverse indices, counts; sorted ascending or (sorted=0)
    in order of first occurrence; along ``axis`` or over the flattened input."""
    x = tensor(inputs[0])
    axis = attrs.get("axis")
    if axis is None:
        x, dim = torch.reshape(x, [-1]), 0
        y, inv, counts = torch.unique(x, sorted=True, return_inverse=True, return_counts=True)
    else:
        dim = axis + x.dim() if axis < 0 else axis
        y, inv, counts = torch.unique(x, sorted=True, return_inverse=True, return_counts=True, dim=dim)
    n = x.shape[dim]
    positions = torch.arange(n, dtype=torch.int64)
    first = torch.full([y.shape[dim]], n, dtype=torch.int64).scatter_reduce(0, inv, positions, "amin")
    if not attrs.get("sorted", 1):
        order = torch.argsort(first)
        y = torch.index_select(y, dim, order)
        first, counts = first[order], counts[order]
        inv = torch.argsort(order)[inv]
    return [y, first, inv, counts][:max(ctx.n_outputs, 1)]


@rule("ReverseSequence")
def _reverse_sequence(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX ReverseSequence: for each batch entry b, reverse its first sequence_lens[b] time steps."""
    x, lens = tensor(inputs[0]), tensor(inputs[1]).to(torch.int64)
    b_axis, t_axis = attrs.get("batch_axis", 1), attrs.get("time_axis", 0)
    steps = x.shape[t_axis]
    shape_b = [1] * x.dim()
    shape_b[b_axis] = -1
    shape_t = [1] * x.dim()
    shape_t[t_axis] = -1
    t = torch.arange(steps, dtype=torch.int64).reshape(shape_t)
    n = lens.reshape(shape_b)
    src = torch.where(t < n, n - 1 - t, t)
    return [torch.gather(x, t_axis, src.expand(x.shape))]


@rule("Trilu")
def _trilu(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX Trilu: keep the upper (default) or lower triangle of the last two dims, offset by k."""
    x = tensor(inputs[0])
    k = scalar(inputs[1], "k") if len(inputs) > 1 and inputs[1] is not None else 0
    return [torch.triu(x, k) if attrs.get("upper", 1) else torch.tril(x, k)]


@rule("OneHot")
def _one_hot(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """ONNX OneHot(indices, depth, values=[off, on]): a new axis (``axis``, default last) of size depth;
    negative indices count from depth, indices outside [-depth, depth) give an all-off row."""
    indices, values = tensor(inputs[0]), tensor(inputs[2])
    depth = int(scalar(inputs[1], "depth"))
    idx = indices.to(torch.int64)
    if indices.dtype.is_floating_point:
        idx = torch.trunc(indices).to(torch.int64)
    idx = torch.where(idx < 0, idx + depth, idx)
    hot = idx.unsqueeze(-1) == torch.arange(depth, dtype=torch.int64)
    off, on = values[0], values[1]
    out = torch.where(hot, on, off)
    axis = attrs.get("axis", -1)
    rank = out.dim()
    axis = axis + rank if axis < 0 else axis
    return [torch.movedim(out, -1, axis)]
