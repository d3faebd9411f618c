"""ONNX operator rules for the ONNX importer (:mod:`fxopt.ir.capture.onnx_import`), as data: ``RULES[op_type]`` is a
function ``rule(ctx, inputs, attrs) -> list of outputs`` that computes one ONNX node with torch functions.

Values flowing between nodes are either ``torch.Tensor`` or :class:`Known`: a rank-0/1 value known while
tracing (small integer constants, and everything computed from tensor *shapes*: ``Shape``, ``Gather`` on a
shape, ``Concat`` of dims, ...). Keeping shape arithmetic in Python (ints and SymInts) is what lets
``torch.export`` trace exporters' ``Shape → Gather → Concat → Reshape`` chains without data-dependent
errors, and lets ``Loop``/``If`` whose trip count and conditions are known be unrolled. A rule that needs a
tensor calls :func:`tensor` (a Known becomes a constant tensor); a rule that needs ints (Reshape's shape,
Slice's starts) calls :func:`ints`, which raises a one-line error naming the node when the value is only
known at run time.

Semantics follow the ONNX operator spec (opsets 11-21); where an opset changed an attribute into an input
(Reduce* axes, Split's split, Unsqueeze/Squeeze axes, Clip's bounds, Slice's starts) both forms are read.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F


# ONNX TensorProto.DataType → torch dtype
DTYPES: dict[int, torch.dtype] = {
    1: torch.float32, 2: torch.uint8, 3: torch.int8, 4: torch.uint16, 5: torch.int16, 6: torch.int32,
    7: torch.int64, 9: torch.bool, 10: torch.float16, 11: torch.float64, 12: torch.uint32, 13: torch.uint64,
    16: torch.bfloat16,
}
KNOWN_LIMIT = 64  # integer constants up to this many elements (rank <= 1) are kept as Known


@dataclass
class Known:
    """A rank-0 or rank-1 value known while tracing: ``data`` is a flat list of Python numbers or SymInts,
    ``shape`` is ``()`` or ``(n,)``, ``dtype`` a torch dtype."""

    data: list
    shape: tuple
    dtype: torch.dtype

    def scalar(self) -> Any:
        """The single element (for rank 0 or a one-element vector)."""
        if len(self.data) != 1:
            raise ValueError(f"expected one element, got {len(self.data)}")
        return self.data[0]


def known_from_tensor(t: torch.Tensor) -> Known | None:
    """A :class:`Known` for a small real integer/bool tensor of rank <= 1, else None."""
    if t.dim() > 1 or t.numel() > KNOWN_LIMIT or t.dtype.is_floating_point or t.dtype.is_complex:
        return None
    return Known([v for v in t.reshape(-1).tolist()], tuple(t.shape), t.dtype)


def tensor(v: Any) -> Any:
    """``v`` as a tensor: a Known becomes a constant tensor (SymInt elements become scalar tensors);
    tensors, None and sequences pass through."""
    if not isinstance(v, Known):
        return v
    if all(isinstance(x, (int, float, bool)) for x in v.data):
        return torch.tensor(v.data, dtype=v.dtype).reshape(v.shape)
    parts = [torch.scalar_tensor(x, dtype=v.dtype) if not isinstance(x, torch.Tensor) else x.to(v.dtype)
             for x in v.data]
    return parts[0] if v.shape == () else torch.stack(parts)


class NotKnown(Exception):
    """A value a rule needs at trace time (a shape, an axis list) is only known at run time."""


def ints(v: Any, what: str = "input") -> list:
    """The elements of a Known as a list of ints/SymInts; raises NotKnown for a run-time tensor."""
    if isinstance(v, Known):
        return [x if not isinstance(x, bool) else int(x) for x in v.data]
    raise NotKnown(f"its {what} is computed from tensor values at run time (only shapes and constants are "
                   "supported there)")


def scalar(v: Any, what: str = "input") -> Any:
    """A Known's single element; raises NotKnown for a run-time tensor."""
    if isinstance(v, Known):
        return v.scalar()
    raise NotKnown(f"its {what} is computed from tensor values at run time")


@dataclass
class Ctx:
    """What a rule may use besides its inputs: the node's name and op, the model opset, the file name,
    and ``run_graph(graph_proto, inputs, outer_env) -> outputs`` for subgraphs (Loop/If bodies)."""

    name: str
    op: str
    opset: int
    file: str
    run_graph: Callable[..., list]
    env: Any
    constant: Callable[[], Any] | None = None
    n_outputs: int = 1


Rule = Callable[[Ctx, list, dict], list]
RULES: dict[str, Rule] = {}


def rule(*names: str):
    """Decorator: register the function as the rule for each ONNX op type in ``names``."""
    def wrap(fn: Rule) -> Rule:
        for n in names:
            RULES[n] = fn
        return fn
    return wrap


# ---------------------------------------------------------------------------------------------- Known math
def _bcast(a: Known, b: Known) -> tuple[list, list, tuple]:
    la, lb = len(a.data), len(b.data)
    shape = a.shape if len(a.shape) >= len(b.shape) else b.shape
    if a.shape == (1,) or a.shape == ():
        shape = b.shape if len(b.shape) else a.shape
    if la == lb:
        return a.data, b.data, shape if la != 1 else (a.shape if len(a.shape) >= len(b.shape) else b.shape)
    if la == 1:
        return a.data * lb, b.data, b.shape
    if lb == 1:
        return a.data, b.data * la, a.shape
    raise ValueError(f"cannot broadcast shapes {a.shape} and {b.shape}")


def _int_div(x, y):
    if isinstance(x, float) or isinstance(y, float):
        return x / y
    if (isinstance(x, int) and x < 0) or (isinstance(y, int) and y < 0):
        return int(x / y)  # ONNX integer division truncates toward zero
    return x // y


_KNOWN_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "Add": lambda x, y: x + y, "Sub": lambda x, y: x - y, "Mul": lambda x, y: x * y, "Div": _int_div,
    "Equal": lambda x, y: x == y, "Less": lambda x, y: x < y, "Greater": lambda x, y: x > y,
    "LessOrEqual": lambda x, y: x <= y, "GreaterOrEqual": lambda x, y: x >= y,
    "And": lambda x, y: bool(x) and bool(y), "Or": lambda x, y: bool(x) or bool(y),
    "Xor": lambda x, y: bool(x) != bool(y), "Max": lambda x, y: torch.sym_max(x, y),
    "Min": lambda x, y: torch.sym_min(x, y), "Mod": lambda x, y: x % y,
}
_COMPARE = {"Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor"}


def known_binary(op: str, a: Known, b: Known) -> Known:
    """``op`` applied elementwise to two Knowns (with rank <= 1 broadcasting)."""
    xs, ys, shape = _bcast(a, b)
    fn = _KNOWN_BINARY[op]
    data = [fn(x, y) for x, y in zip(xs, ys)]
    dtype = torch.bool if op in _COMPARE else a.dtype
    if dtype.is_floating_point:
        data = [float(x) for x in data]
    return Known(data, shape, dtype)


def _all_known(inputs: list) -> bool:
    return all(isinstance(v, Known) or v is None for v in inputs) and any(isinstance(v, Known) for v in inputs)


# ---------------------------------------------------------------------------------------------- elementwise
_BINARY_TORCH = {
    "Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Equal": torch.eq, "Less": torch.lt,
    "Greater": torch.gt, "LessOrEqual": torch.le, "GreaterOrEqual": torch.ge, "And": torch.logical_and,
    "Or": torch.logical_or, "Xor": torch.logical_xor, "Pow": torch.pow, "BitwiseAnd": torch.bitwise_and,
    "BitwiseOr": torch.bitwise_or,
}


def _binary_operands(a: Any, b: Any) -> tuple:
    # a Known next to a tensor: make it a tensor of the tensor's dtype (ONNX requires equal dtypes anyway)
    if isinstance(a, Known) and isinstance(b, torch.Tensor):
        a = tensor(a).to(b.dtype) if a.shape else _py(a.scalar(), b.dtype)
    if isinstance(b, Known) and isinstance(a, torch.Tensor):
        b = tensor(b).to(a.dtype) if b.shape else _py(b.scalar(), a.dtype)
    return tensor(a), tensor(b)


def _py(x: Any, dtype: torch.dtype) -> Any:
    # a Python scalar keeps the tensor's dtype (a 0-d tensor would too, but costs a constant)
    if isinstance(x, torch.SymInt) or isinstance(x, torch.SymFloat):
        return torch.scalar_tensor(x, dtype=dtype)
    return float(x) if dtype.is_floating_point else int(x)


@rule("Add", "Sub", "Mul", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor",
      "Pow", "BitwiseAnd", "BitwiseOr")
def _binary(ctx: Ctx, inputs: list, attrs: dict) -> list:
    a, b = inputs
    if ctx.op in _KNOWN_BINARY and _all_known(inputs):
        return [known_binary(ctx.op, a, b)]
    if ctx.op == "Pow":
        a, b = tensor(a), (tensor(b) if not isinstance(b, Known) or b.shape else b.scalar())
        return [torch.pow(a, b).to(a.dtype)]
    x, y = _binary_operands(a, b)
    if not isinstance(x, torch.Tensor):  # python scalar op tensor
        x = torch.scalar_tensor(x, dtype=y.dtype)
    return [_BINARY_TORCH[ctx.op](x, y)]


@rule("Div")
def _div(ctx: Ctx, inputs: list, attrs: dict) -> list:
    if _all_known(inputs):
        return [known_binary("Div", *inputs)]
    x, y = _binary_operands(*inputs)
    if not isinstance(x, torch.Tensor):
        x = torch.scalar_tensor(x, dtype=y.dtype)
    if x.dtype.is_floating_point:
        return [torch.div(x, y)]
    return [torch.div(x, y, rounding_mode="trunc")]


@rule("Mod")
def _mod(ctx: Ctx, inputs: list, attrs: dict) -> list:
    x, y = _binary_operands(*inputs)
    return [torch.fmod(x, y) if attrs.get("fmod", 0) else torch.remainder(x, y)]


@rule("Max", "Min", "Sum", "Mean")
def _variadic(ctx: Ctx, inputs: list, attrs: dict) -> list:
    if ctx.op in ("Max", "Min") and _all_known(inputs):
        out = inputs[0]
        for v in inputs[1:]:
            out = known_binary(ctx.op, out, v)
        return [out]
    ts = [tensor(v) for v in inputs]
    out = ts[0]
    fn = {"Max": torch.maximum, "Min": torch.minimum, "Sum": torch.add, "Mean": torch.add}[ctx.op]
    for t in ts[1:]:
        out = fn(out, t)
    return [out / len(ts) if ctx.op == "Mean" else out]


_UNARY: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "Relu": torch.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Erf": torch.erf, "Exp": torch.exp,
    "Log": torch.log, "Sqrt": torch.sqrt, "Abs": torch.abs, "Reciprocal": torch.reciprocal,
    "Floor": torch.floor, "Ceil": torch.ceil, "Sin": torch.sin, "Cos": torch.cos, "Not": torch.logical_not,
    "Softplus": F.softplus, "Sign": torch.sign, "Round": torch.round, "IsNaN": torch.isnan,
    "Softsign": F.softsign, "Mish": F.mish,
}


@rule(*_UNARY)
def _unary(ctx: Ctx, inputs: list, attrs: dict) -> list:
    if ctx.op == "Not" and _all_known(inputs):
        k = inputs[0]
        return [Known([not x for x in k.data], k.shape, torch.bool)]
    return [_UNARY[ctx.op](tensor(inputs[0]))]


@rule("Neg")
def _neg(ctx: Ctx, inputs: list, attrs: dict) -> list:
    x = inputs[0]
    if isinstance(x, Known):
        return [Known([-v for v in x.data], x.shape, x.dtype)]
    return [torch.neg(x)]


@rule("Gelu")
def _gelu(ctx: Ctx, inputs: list, attrs: dict) -> list:
    return [F.gelu(tensor(inputs[0]), approximate=_str(attrs.get("approximate", "none")))]


@rule("LeakyRelu")
def _leaky(ctx: Ctx, inputs: list, attrs: dict) -> list:
    return [F.leaky_relu(tensor(inputs[0]), attrs.get("alpha", 0.01))]


@rule("Elu")
def _elu(ctx: Ctx, inputs: list, attrs: dict) -> list:
    return [F.elu(tensor(inputs[0]), attrs.get("alpha", 1.0))]


@rule("HardSigmoid")
def _hard_sigmoid(ctx: Ctx, inputs: list, attrs: dict) -> list:
    x = tensor(inputs[0])
    return [torch.clamp(x * attrs.get("alpha", 0.2) + attrs.get("beta", 0.5), 0.0, 1.0)]


@rule("HardSwish")
def _hard_swish(ctx: Ctx, inputs: list, attrs: dict) -> list:
    return [F.hardswish(tensor(inputs[0]))]


@rule("Clip")
def _clip(ctx: Ctx, inputs: list, attrs: dict) -> list:
    x = tensor(inputs[0])
    lo = inputs[1] if len(inputs) > 1 else None
    hi = inputs[2] if len(inputs) > 2 else None
    lo = attrs.get("min") if lo is None else lo
    hi = attrs.get("max") if hi is None else hi
    lo = lo.scalar() if isinstance(lo, Known) else lo
    hi = hi.scalar() if isinstance(hi, Known) else hi
    if lo is None and hi is None:
        return [x]
    return [torch.clamp(x, lo, hi)]


@rule("Where")
def _where(ctx: Ctx, inputs: list, attrs: dict) -> list:
    c, a, b = inputs
    if _all_known(inputs):
        cs, xs, _ = _bcast(c, a)
        cs2, ys, shape = _bcast(Known(cs, c.shape if len(c.data) >= len(a.data) else a.shape, c.dtype), b)
        xs2 = xs if len(xs) == len(cs2) else xs * len(cs2)
        return [Known([x if bool(k) else y for k, x, y in zip(cs2, xs2, ys)], shape, a.dtype)]
    x, y = _binary_operands(a, b)
    return [torch.where(tensor(c), x, y)]


# ---------------------------------------------------------------------------------------------- types
def _str(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _cast_known(k: Known, dtype: torch.dtype) -> Known:
    if dtype == torch.bool:
        data = [bool(x) for x in k.data]
    elif dtype.is_floating_point:
        data = [x if isinstance(x, (torch.SymInt, torch.SymFloat)) else float(x) for x in k.data]
    else:
        data = [x if isinstance(x, torch.SymInt) else int(x) for x in k.data]
    return Known(data, k.shape, dtype)


@rule("Cast")
def _cast(ctx: Ctx, inputs: list, attrs: dict) -> list:
    to = DTYPES.get(attrs["to"])
    if to is None:
        raise ValueError(f"cast to ONNX dtype {attrs['to']} is not supported")
    x = inputs[0]
    if isinstance(x, Known):
        return [_cast_known(x, to)]
    return [x.to(to)]


@rule("CastLike")
def _cast_like(ctx: Ctx, inputs: list, attrs: dict) -> list:
    x, like = inputs
    if isinstance(x, Known):
        return [_cast_known(x, like.dtype)]
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


def _axes(inputs: list, attrs: dict, index: int) -> list | None:
    if "axes" in attrs:
        return list(attrs["axes"])
    if len(inputs) > index and inputs[index] is not None:
        return ints(inputs[index], "axes")
    return None


@rule("Unsqueeze")
def _unsqueeze(ctx: Ctx, inputs: list, attrs: dict) -> list:
    x, axes = inputs[0], _axes(inputs, attrs, 1)
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
    x, axes = inputs[0], _axes(inputs, attrs, 1)
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


def _norm_index(i: Any, dim: Any) -> Any:
    return i + dim if isinstance(i, int) and i < 0 else i


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
    start = _norm_index(start if abs(start) < _BIG else (dim - 1 if start > 0 else -1), dim)
    end = _norm_index(end if abs(end) < _BIG else (dim if end > 0 else -1), dim)
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
        fixed = [_norm_index(i, dim) for i in idx.data]
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
    red = _str(attrs.get("reduction", "none"))
    if red not in ("none", "add"):
        raise ValueError(f"ScatterND reduction '{red}' is not supported (none, add are)")
    k = idx.shape[-1]
    index = tuple(idx[..., j] for j in range(k))
    return [torch.index_put(data, index, upd, accumulate=red == "add")]


@rule("ScatterElements")
def _scatter_elements(ctx: Ctx, inputs: list, attrs: dict) -> list:
    data, idx, upd = (tensor(v) for v in inputs)
    red = _str(attrs.get("reduction", "none"))
    axis = attrs.get("axis", 0)
    if red == "none":
        return [torch.scatter(data, axis, idx, upd)]
    return [torch.scatter_reduce(data, axis, idx, upd, {"add": "sum", "mul": "prod", "max": "amax",
                                                         "min": "amin"}[red])]


# ---------------------------------------------------------------------------------------------- reductions
def _reduce_axes(ctx: Ctx, inputs: list, attrs: dict) -> list | None:
    axes = _axes(inputs, attrs, 1)
    return axes


@rule("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
      "ReduceSumSquare", "ReduceLogSumExp")
def _reduce(ctx: Ctx, inputs: list, attrs: dict) -> list:
    x = tensor(inputs[0])
    axes = _reduce_axes(ctx, inputs, attrs)
    keep = bool(attrs.get("keepdims", 1))
    if not axes:
        if attrs.get("noop_with_empty_axes", 0):
            return [x]
        axes = list(range(x.dim()))
    axes = [a + x.dim() if a < 0 else a for a in axes]
    op = ctx.op
    if op == "ReduceSum":
        return [torch.sum(x, axes, keepdim=keep)]
    if op == "ReduceMean":
        return [torch.mean(x, axes, keepdim=keep)]
    if op == "ReduceMax":
        return [torch.amax(x, axes, keepdim=keep)]
    if op == "ReduceMin":
        return [torch.amin(x, axes, keepdim=keep)]
    if op == "ReduceSumSquare":
        return [torch.sum(x * x, axes, keepdim=keep)]
    if op == "ReduceL1":
        return [torch.sum(torch.abs(x), axes, keepdim=keep)]
    if op == "ReduceL2":
        return [torch.sqrt(torch.sum(x * x, axes, keepdim=keep))]
    if op == "ReduceLogSumExp":
        return [torch.logsumexp(x, axes, keepdim=keep)]
    for a in sorted(axes, reverse=True):  # ReduceProd
        x = torch.prod(x, a, keepdim=keep)
    return [x]


@rule("ArgMax", "ArgMin")
def _argmax(ctx: Ctx, inputs: list, attrs: dict) -> list:
    x = tensor(inputs[0])
    axis, keep = attrs.get("axis", 0), bool(attrs.get("keepdims", 1))
    fn = torch.argmax if ctx.op == "ArgMax" else torch.argmin
    if attrs.get("select_last_index", 0):
        axis = axis + x.dim() if axis < 0 else axis
        flipped = fn(torch.flip(x, [axis]), axis, keepdim=keep)
        return [x.shape[axis] - 1 - flipped]
    return [fn(x, axis, keepdim=keep)]


@rule("TopK")
def _topk(ctx: Ctx, inputs: list, attrs: dict) -> list:
    x = tensor(inputs[0])
    k = scalar(inputs[1], "k") if len(inputs) > 1 else attrs["k"]
    values, indices = torch.topk(x, k, dim=attrs.get("axis", -1), largest=bool(attrs.get("largest", 1)),
                                 sorted=bool(attrs.get("sorted", 1)))
    return [values, indices]


@rule("CumSum")
def _cumsum(ctx: Ctx, inputs: list, attrs: dict) -> list:
    x, axis = tensor(inputs[0]), scalar(inputs[1], "axis")
    if attrs.get("reverse", 0):
        out = torch.flip(torch.cumsum(torch.flip(x, [axis]), axis), [axis])
    else:
        out = torch.cumsum(x, axis)
    if attrs.get("exclusive", 0):
        out = out - x
    return [out]


@rule("Softmax", "LogSoftmax")
def _softmax(ctx: Ctx, inputs: list, attrs: dict) -> list:
    x = tensor(inputs[0])
    fn = torch.softmax if ctx.op == "Softmax" else torch.log_softmax
    if ctx.opset >= 13:
        return [fn(x, attrs.get("axis", -1))]
    axis = attrs.get("axis", 1)  # opset < 13: softmax over the dims from axis on, flattened
    axis = axis + x.dim() if axis < 0 else axis
    flat = torch.reshape(x, (math.prod(x.shape[:axis]) if axis else 1, -1))
    return [torch.reshape(fn(flat, 1), x.shape)]


# ---------------------------------------------------------------------------------------------- linear algebra
@rule("MatMul")
def _matmul(ctx: Ctx, inputs: list, attrs: dict) -> list:
    return [torch.matmul(tensor(inputs[0]), tensor(inputs[1]))]


@rule("Gemm")
def _gemm(ctx: Ctx, inputs: list, attrs: dict) -> list:
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
    return [torch.einsum(_str(attrs["equation"]), *[tensor(v) for v in inputs])]


# ---------------------------------------------------------------------------------------------- conv / pool / norm
def _spatial_pads(attrs: dict, x: torch.Tensor, kernel: list, strides: list, dilations: list) -> list:
    """ONNX pads ``[b1, b2, ..., e1, e2, ...]`` for the spatial dims, resolving ``auto_pad``."""
    n = len(kernel)
    auto = _str(attrs.get("auto_pad", "NOTSET"))
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
        _str(attrs.get("mode", "constant"))]
    if mode == "constant":
        return [F.pad(x, torch_pads, mode, value)]
    return [F.pad(x, torch_pads, mode)]


# ---------------------------------------------------------------------------------------------- control flow
@rule("If")
def _if(ctx: Ctx, inputs: list, attrs: dict) -> list:
    try:
        cond = bool(scalar(inputs[0], "condition"))
    except NotKnown as exc:
        raise NotKnown("its condition depends on tensor values; only If nodes whose condition follows from "
                       "shapes and constants are supported") from exc
    branch = attrs["then_branch"] if cond else attrs["else_branch"]
    return ctx.run_graph(branch, [], ctx.env)


MAX_LOOP_ITERATIONS = 100_000


@rule("Loop")
def _loop(ctx: Ctx, inputs: list, attrs: dict) -> list:
    """Unroll a Loop whose trip count and condition are known while tracing (from shapes and constants):
    this covers exporters' EmbeddingBag loops (one iteration per bag) for static batch sizes."""
    body = attrs["body"]
    trip = inputs[0] if inputs else None
    cond = inputs[1] if len(inputs) > 1 else None
    carried = list(inputs[2:])
    try:
        limit = int(scalar(trip, "trip count")) if trip is not None else MAX_LOOP_ITERATIONS
        go = bool(scalar(cond, "condition")) if cond is not None else True
    except NotKnown as exc:
        raise NotKnown("its trip count or condition depends on tensor values (or a dynamic dim); only loops "
                       "over a static count unroll. An nn.EmbeddingBag exports to such a loop: export with a "
                       "static batch size, or use nn.Embedding + sum instead") from exc
    n_scan = len(body.outputs) - 1 - len(carried)
    scans: list[list] = [[] for _ in range(n_scan)]
    i = 0
    while go and i < limit:
        outs = ctx.run_graph(body, [Known([i], (), torch.int64), Known([go], (), torch.bool), *carried], ctx.env)
        try:
            go = bool(scalar(outs[0], "condition"))
        except NotKnown as exc:
            raise NotKnown("its loop condition depends on tensor values; only loops over a static count "
                           "unroll") from exc
        carried = list(outs[1:1 + len(carried)])
        for k, v in enumerate(outs[1 + len(carried):]):
            scans[k].append(tensor(v))
        i += 1
        if trip is None and i >= MAX_LOOP_ITERATIONS:
            raise ValueError(f"the loop did not stop after {MAX_LOOP_ITERATIONS} iterations")
    stacked = []
    for k, items in enumerate(scans):
        if not items:
            raise ValueError("a Loop with zero iterations and scan outputs is not supported")
        stacked.append(torch.stack(items))
    return carried + stacked


@rule("SequenceEmpty")
def _sequence_empty(ctx: Ctx, inputs: list, attrs: dict) -> list:
    return [[]]


@rule("SequenceConstruct")
def _sequence_construct(ctx: Ctx, inputs: list, attrs: dict) -> list:
    return [list(inputs)]


@rule("SequenceInsert")
def _sequence_insert(ctx: Ctx, inputs: list, attrs: dict) -> list:
    seq, value = list(inputs[0]), inputs[1]
    if len(inputs) > 2 and inputs[2] is not None:
        pos = int(scalar(inputs[2], "position"))
        seq.insert(pos if pos >= 0 else pos + len(seq), value)
    else:
        seq.append(value)
    return [seq]


@rule("SequenceAt")
def _sequence_at(ctx: Ctx, inputs: list, attrs: dict) -> list:
    return [inputs[0][int(scalar(inputs[1], "position"))]]


@rule("SequenceLength")
def _sequence_length(ctx: Ctx, inputs: list, attrs: dict) -> list:
    return [Known([len(inputs[0])], (), torch.int64)]


@rule("ConcatFromSequence")
def _concat_from_sequence(ctx: Ctx, inputs: list, attrs: dict) -> list:
    items = [tensor(v) for v in inputs[0]]
    if not items:
        raise ValueError("ConcatFromSequence of an empty sequence")
    if attrs.get("new_axis", 0):
        return [torch.stack(items, attrs["axis"])]
    return [torch.cat(items, attrs["axis"])]


def supported_ops() -> list[str]:
    """The ONNX op types (default domain) the importer converts, sorted."""
    return sorted(RULES)
