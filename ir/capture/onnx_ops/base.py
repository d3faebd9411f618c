"""The value model every ONNX rule shares: :class:`Known` values, the :class:`Ctx` a rule gets, the
:data:`RULES` registry and its :func:`rule` decorator, and helpers for operands, axes and indices."""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from fxopt.errors import InputError


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


class NeedsValue(InputError):
    """A rule needs the value of graph input ``name`` while tracing (an ``axes``, ``k`` or ``sizes`` given as a
    graph input): capture specializes that input to its example value, guards it, and traces again."""

    def __init__(self, name: str, what: str):
        super().__init__(f"graph input '{name}' gives a node's {what}, which must be known while tracing")
        self.name = name
        self.what = what


# While the ONNX graph runs: id(tensor) -> (Known or graph-input name, the tensor), for tensors whose values a
# rule may read at trace time (small float initializers; graph inputs, which then need specializing).
_TRACE_VALUES: contextvars.ContextVar[dict | None] = contextvars.ContextVar("onnx_trace_values", default=None)


@contextlib.contextmanager
def trace_values(table: dict) -> Iterator[None]:
    """Make ``table`` (``id(tensor) -> (Known | input name, tensor)``) what :func:`known_value` consults."""
    token = _TRACE_VALUES.set(table)
    try:
        yield
    finally:
        _TRACE_VALUES.reset(token)


def known_value(v: Any, what: str = "input") -> Known | None:
    """``v`` as a Known when its value is known while tracing: a Known, or a tensor registered with
    :func:`trace_values` (a small float initializer); None otherwise. A graph-input tensor raises
    :class:`NeedsValue`, so that capture specializes it."""
    if isinstance(v, Known):
        return v
    table = _TRACE_VALUES.get()
    if table is None or not isinstance(v, torch.Tensor):
        return None
    entry = table.get(id(v))
    if entry is None or entry[1] is not v:
        return None
    if isinstance(entry[0], str):
        raise NeedsValue(entry[0], what)
    return entry[0]


def static_value(v: Any) -> Known | None:
    """``v`` as a Known when it is one or a small constant tensor readable while tracing (see
    :func:`known_value`); None otherwise, graph inputs included (no specializing: for rules that only
    *prefer* a known value, such as Cast)."""
    try:
        return known_value(v)
    except NeedsValue:
        return None


def optional_input(inputs: list, i: int) -> Any:
    """Input ``i`` as a tensor (a Known made one), or None when the node omits it."""
    return tensor(inputs[i]) if len(inputs) > i and inputs[i] is not None else None


def ints(v: Any, what: str = "input") -> list:
    """The elements of a value known while tracing (see :func:`known_value`) as a list of Python numbers or
    SymInts (bools as ints); raises NotKnown for a value computed at run time."""
    k = known_value(v, what)
    if k is not None:
        return [x if not isinstance(x, bool) else int(x) for x in k.data]
    raise NotKnown(f"its {what} is computed from tensor values at run time (only shapes and constants are "
                   "supported there)")


def scalar(v: Any, what: str = "input") -> Any:
    """The single element of a value known while tracing (see :func:`known_value`); raises NotKnown for a
    value computed at run time."""
    k = known_value(v, what)
    if k is not None:
        return k.scalar()
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
def bcast_known(a: Known, b: Known) -> tuple[list, list, tuple]:
    """Broadcast two rank <= 1 Knowns; returns (a's elements, b's elements, result shape)."""
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


KNOWN_BINARY: dict[str, Callable[[Any, Any], Any]] = {
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
    xs, ys, shape = bcast_known(a, b)
    fn = KNOWN_BINARY[op]
    data = [fn(x, y) for x, y in zip(xs, ys)]
    dtype = torch.bool if op in _COMPARE else a.dtype
    if dtype.is_floating_point:
        data = [float(x) for x in data]
    return Known(data, shape, dtype)


def all_known(inputs: list) -> bool:
    """True when every input is a Known or None and at least one is a Known."""
    return all(isinstance(v, Known) or v is None for v in inputs) and any(isinstance(v, Known) for v in inputs)


def binary_operands(a: Any, b: Any) -> tuple:
    """The operands of a binary op as tensors (or a Python scalar next to a tensor), a Known taking the tensor's dtype."""
    # a Known next to a tensor: make it a tensor of the tensor's dtype (ONNX requires equal dtypes anyway)
    if isinstance(a, Known) and isinstance(b, torch.Tensor):
        a = tensor(a).to(b.dtype) if a.shape else py_scalar(a.scalar(), b.dtype)
    if isinstance(b, Known) and isinstance(a, torch.Tensor):
        b = tensor(b).to(a.dtype) if b.shape else py_scalar(b.scalar(), a.dtype)
    return tensor(a), tensor(b)


def py_scalar(x: Any, dtype: torch.dtype) -> Any:
    """A Python scalar (or a SymInt as a 0-d tensor) for ``x`` in ``dtype``'s kind."""
    # a Python scalar keeps the tensor's dtype (a 0-d tensor would too, but costs a constant)
    if isinstance(x, torch.SymInt) or isinstance(x, torch.SymFloat):
        return torch.scalar_tensor(x, dtype=dtype)
    return float(x) if dtype.is_floating_point else int(x)


# ---------------------------------------------------------------------------------------------- types
def as_str(v: Any) -> str:
    """An attribute value as ``str`` (ONNX string attributes may arrive as bytes)."""
    return v.decode() if isinstance(v, bytes) else str(v)


def cast_known(k: Known, dtype: torch.dtype) -> Known:
    """``k`` with its elements converted to ``dtype`` (SymInts kept)."""
    if dtype == torch.bool:
        data = [bool(x) for x in k.data]
    elif dtype.is_floating_point:
        data = [x if isinstance(x, (torch.SymInt, torch.SymFloat)) else float(x) for x in k.data]
    else:
        data = [x if isinstance(x, torch.SymInt) else int(x) for x in k.data]
    return Known(data, k.shape, dtype)


def axes_arg(inputs: list, attrs: dict, index: int) -> list | None:
    """The ``axes`` of a node: the attribute (older opsets) or input ``index`` (as ints); None when absent."""
    if "axes" in attrs:
        return list(attrs["axes"])
    if len(inputs) > index and inputs[index] is not None:
        return ints(inputs[index], "axes")
    return None


def norm_index(i: Any, dim: Any) -> Any:
    """A negative int index made non-negative for a dim of size ``dim``; other values unchanged."""
    return i + dim if isinstance(i, int) and i < 0 else i


def supported_ops() -> list[str]:
    """The ONNX op types (default domain) the importer converts, sorted."""
    return sorted(RULES)
