"""Static cost model for exported ATen graphs: FLOPs and bytes moved per node.

:func:`node_cost` maps one FX node of a ``torch.export`` graph (core ATen IR, every node carrying
``node.meta["val"]``) to an :class:`OpCost`; :func:`annotate_costs` stores that on every node as
``node.meta["cost"]`` and :func:`graph_cost` sums a whole graph. Formulas live in a table keyed by ATen
overload packet (``torch.ops.aten.addmm``) or by an exact call target; other modules add their own with
``@register_cost(op)``.

Sizes may be symbolic (``torch.export.Dim``): numbers are then ``sympy`` expressions in the shape
symbols (``s0``...), and :meth:`OpCost.evaluate` substitutes concrete sizes (by default the example sizes
the graph was exported with).

Conventions
-----------
FLOPs (a multiply-add counts as 2):

* ``mm`` ``[M,K]x[K,N]`` = ``2*M*K*N``; ``bmm`` = ``2*B*M*K*N``; ``addmm`` / ``baddbmm`` add one FLOP per
  output element for the bias; ``matmul`` / ``linear`` / ``mv`` / ``dot`` likewise (``2 * numel(out) * K``).
* ``convolution`` = ``2 * N * Cout * prod(out spatial) * (Cin/groups) * prod(kernel)`` (+ ``numel(out)`` for a
  bias); this covers 1d/2d/3d, grouped and depthwise. Transposed convolution counts the scatter form,
  ``2 * numel(input) * (Cout/groups) * prod(kernel)`` (exact up to padding that crops the output).
* scaled-dot-product attention kernels (when not decomposed): both matmuls plus 5 per score element.
* elementwise = ``numel(out) * factor``; ``factor`` is 1 for arithmetic, comparisons, ``relu``, ``sqrt``...,
  ``TRANSCENDENTAL_FLOPS`` (= 4) for ``exp``/``log``/``tanh``/``sigmoid``/``erf``/trig/``pow``, and a small
  composite count for activations built from those (``gelu`` 8, ``silu`` 5, ``softplus`` 9, ``mish`` 13...);
  see :data:`ELEMENTWISE_FLOPS`.
* reductions (``sum``, ``mean``, ``amax``, ``argmax``, ``any``...) = ``numel(input)``; ``var``/``std`` 3x,
  vector norms 2x, ``logsumexp`` 6x.
* ``softmax`` / ``log_softmax`` = ``5 * numel``.
* normalisation that computes statistics (layer/group/instance norm, training batch norm) = ``8 * numel``;
  inference batch norm with running statistics (``_native_batch_norm_legit_no_training``) = ``5 * numel``;
  RMS norm = ``4 * numel``.
* pooling: max = ``numel(out) * prod(kernel)`` compares, avg = that + ``numel(out)``; adaptive pools =
  ``numel(in) + numel(out)``; nearest upsampling 0; linear/bilinear/bicubic/trilinear 4/8/32/16 per output.
* ``sort`` = ``numel * log2(n)``; ``topk`` = ``numel * log2(k)`` (rounded up, at least 1).
* gathers (``embedding``, ``index``, ``gather``, ``index_select``) = 0; ``embedding_bag`` = one add per
  gathered element (x2 with per-sample weights; ``mean`` adds one divide per output element);
  ``scatter_add`` / ``scatter_reduce`` / ``index_add`` / accumulating ``index_put`` = one per scattered element.
* views and aliases (``view``, ``_unsafe_view``, ``permute``, ``expand``, ``slice``, ``select``, ``squeeze``,
  ``unsqueeze``, ``t``, ``transpose``, ``alias``, ``detach``, ``as_strided``, ``split``, ``unbind``...) = 0 FLOPs
  and **0 bytes**: no data moves. ``reshape``/``flatten``/``contiguous`` count as views when their input is
  contiguous (judged at the example sizes) and as copies otherwise.
* copies (``clone``, ``_to_copy``, ``copy``, ``cat``, ``stack``, ``constant_pad_nd``, ``repeat``, ``flip``,
  ``roll``, ``*_scatter``, ``*_copy``...) = 0 FLOPs, bytes read + written of the data.
* factories (``full``, ``zeros_like``, ``arange``...) = 0 FLOPs, nothing read (a ``*_like`` op reads only its
  input's shape), the output written (``empty*`` writes nothing).
* ``operator.getitem``, ``placeholder``, ``get_attr``, ``output``, export's ``_guards_fn`` module call, and
  symbolic-size arithmetic (``sym_size``, ``operator.mul`` on SymInts, ``_assert_*``) cost nothing.
* ``torch.ops.higher_order.cond`` costs its more expensive branch (marked inexact); ``scan`` costs
  ``length x`` its combine graph (exact when the graph is); ``while_loop`` costs one iteration (cond + body),
  a lower bound marked inexact (the trip count is data-dependent).

Bytes:

* ``bytes_read`` = bytes of the distinct tensor inputs; ``bytes_written`` = bytes of all tensor outputs
  (auxiliary outputs such as ``native_layer_norm``'s mean/rstd included, since kernels write them).
* A tensor's bytes are its *footprint*: element size times the number of distinct elements, so a dimension
  expanded with stride 0 counts once (``expand`` then ``add`` reads the small tensor, not the broadcast).
* Gathers read only what they gather: ``embedding`` reads ``rows gathered * row bytes + index bytes``, not the
  table; ``index``/``gather``/``index_select`` read ``numel(out)`` source elements plus the indices.
  Repeated indices are counted each time (no cache model).
* Functional scatters (``scatter_add``, ``index_add``, ``index_put``...) read the whole ``self`` (they return a
  new tensor), the indices and the scattered source elements, and write the whole output.

An op with no formula falls back to ``numel(out)`` FLOPs and the bytes of all tensor inputs and outputs;
the resulting :class:`OpCost` has ``exact=False`` and the op's name is added to :data:`ESTIMATED_OPS`, so
tools can show "estimated". ``exact`` means "a formula exists", not "the count is hardware-exact".
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Union

import sympy
import torch
import torch.fx

from fxopt.ir.nodes import op_name  # noqa: F401 - re-exported (cost.op_name)

from ..errors import InputError

__all__ = [
    "OpCost",
    "Number",
    "ZERO",
    "ELEMENTWISE_FLOPS",
    "TRANSCENDENTAL_FLOPS",
    "ESTIMATED_OPS",
    "register_cost",
    "get_cost_fn",
    "node_cost",
    "annotate_costs",
    "graph_cost",
    "numel",
    "to_sympy",
    "tensor_bytes",
    "node_tensors",
    "input_tensors",
    "output_tensors",
    "input_bytes",
    "output_bytes",
    "arg",
    "op_name",
]

Number = Union[int, sympy.Expr]

aten = torch.ops.aten


# --------------------------------------------------------------------------------------------------
# Numbers: ints stay ints, anything symbolic is a sympy expression.
# --------------------------------------------------------------------------------------------------


def _norm(x: Any) -> Number:
    """Return ``x`` as an ``int`` when it is a (sympy or Python) integer, else as a sympy expression."""
    if isinstance(x, bool):
        return int(x)
    if isinstance(x, int):
        return x
    if isinstance(x, sympy.Basic):
        if x.is_Integer:
            return int(x)
        if x.is_number:
            try:
                if x.is_integer:
                    return int(x)
            except TypeError:
                pass
        return x
    return x


def to_sympy(x: Any) -> Number:
    """Convert a size to a cost number.

    Takes an ``int``, a ``torch.SymInt`` (or SymFloat/SymBool) or a sympy expression; returns an ``int`` when
    the value is a known integer and otherwise the sympy expression behind the SymInt (``symint.node.expr``,
    e.g. ``s0`` or ``2*s0``). Never guards on or specialises the symbol.
    """
    if isinstance(x, bool):
        return int(x)
    if isinstance(x, int):
        return x
    if isinstance(x, (torch.SymInt, torch.SymFloat, torch.SymBool)):
        node = x.node
        maybe = getattr(node, "maybe_as_int", None)
        if maybe is not None:
            value = maybe()
            if value is not None:
                return int(value)
        return _norm(node.expr)
    if isinstance(x, sympy.Basic):
        return _norm(x)
    if isinstance(x, float) and x.is_integer():
        return int(x)
    raise TypeError(f"to_sympy: expected an int, SymInt or sympy expression, got {type(x).__name__}")


def _is_symbolic_number(x: Any) -> bool:
    return isinstance(x, sympy.Basic) and bool(x.free_symbols)


def _prod(values: Iterable[Any]) -> Number:
    total: Number = 1
    for v in values:
        total = total * to_sympy(v)
    return _norm(total) if isinstance(total, sympy.Basic) else total


def _is_tensor_like(v: Any) -> bool:
    # FakeTensors and real tensors, plus fx's TensorMetadata (shape/dtype/stride) for nodes without "val".
    if isinstance(v, torch.Tensor):
        return True
    return hasattr(v, "shape") and hasattr(v, "dtype") and hasattr(v, "stride") and not isinstance(v, type)


def _shape(t: Any) -> tuple:
    return tuple(t.shape)


def _strides(t: Any) -> tuple | None:
    try:
        s = t.stride() if callable(t.stride) else t.stride
    except (RuntimeError, NotImplementedError, TypeError):  # sparse / nested layouts have no strides
        return None
    return tuple(s) if s is not None else None


def _itemsize(t: Any) -> int:
    dtype = t.dtype
    size = getattr(dtype, "itemsize", None)
    if size is None:
        size = torch.empty((), dtype=dtype).element_size()
    return int(size)


def numel(t: Any) -> Number:
    """Number of elements of a tensor (FakeTensor, real tensor or TensorMetadata) or of a shape sequence.

    Returns an ``int`` for static shapes, a sympy expression (e.g. ``8*s0``) when a dimension is symbolic.
    """
    shape = _shape(t) if _is_tensor_like(t) else tuple(t)
    return _prod(shape)


def _footprint(t: Any) -> Number:
    """Distinct elements a tensor addresses: dimensions with a literal stride of 0 (broadcast) count once."""
    shape = _shape(t)
    strides = _strides(t)
    if strides is None or len(strides) != len(shape):
        return numel(t)
    if any(isinstance(s, int) and s == 0 for s in shape):
        return 0
    total: Number = 1
    for size, stride in zip(shape, strides):
        if isinstance(stride, int) and stride == 0:
            continue
        total = total * to_sympy(size)
    return _norm(total) if isinstance(total, sympy.Basic) else total


def tensor_bytes(t: Any) -> Number:
    """Bytes a tensor occupies: element size times its footprint (distinct elements; broadcast dims once).

    Takes a FakeTensor/real tensor/TensorMetadata; returns an ``int`` or a sympy expression.
    """
    return _mul(_footprint(t), _itemsize(t))


def _mul(a: Number, b: Number) -> Number:
    r = a * b
    return _norm(r) if isinstance(r, sympy.Basic) else r


def _add(*xs: Number) -> Number:
    total: Number = 0
    for x in xs:
        total = total + x
    return _norm(total) if isinstance(total, sympy.Basic) else total


# --------------------------------------------------------------------------------------------------
# OpCost
# --------------------------------------------------------------------------------------------------


def _to_json_number(x: Number) -> int | float | str:
    x = _norm(x)
    if isinstance(x, (int, float)):
        return x
    return str(x)


@dataclass(frozen=True)
class OpCost:
    """FLOPs and bytes moved by one op (or a sum of ops).

    Each of ``flops``, ``bytes_read``, ``bytes_written`` is an ``int`` or, when shapes are symbolic, a sympy
    expression in the shape symbols. ``exact`` is False when some part came from the fallback estimate (an
    op without a formula). ``hints`` holds ``(symbol, example value)`` pairs recorded from the graph's
    SymInts, used by :meth:`evaluate` when no substitutions are given; it takes no part in equality.
    """

    flops: Number = 0
    bytes_read: Number = 0
    bytes_written: Number = 0
    exact: bool = True
    hints: tuple = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("flops", "bytes_read", "bytes_written"):
            value = getattr(self, name)
            if isinstance(value, (torch.SymInt, torch.SymFloat)):
                value = to_sympy(value)
            elif isinstance(value, float) and value.is_integer():
                value = int(value)
            object.__setattr__(self, name, _norm(value))

    # arithmetic ------------------------------------------------------------------------------------
    def __add__(self, other: Any) -> OpCost:
        """Sum two costs field by field (``exact`` only if both are); ``0`` is accepted so ``sum()`` works."""
        if isinstance(other, int) and other == 0:
            return self
        if not isinstance(other, OpCost):
            return NotImplemented
        hints = dict((s.name, (s, v)) for s, v in self.hints)
        for s, v in other.hints:
            hints.setdefault(s.name, (s, v))
        return OpCost(
            _add(self.flops, other.flops),
            _add(self.bytes_read, other.bytes_read),
            _add(self.bytes_written, other.bytes_written),
            self.exact and other.exact,
            tuple(hints[k] for k in sorted(hints)),
        )

    def __radd__(self, other: Any) -> OpCost:
        """Support ``0 + cost`` (and therefore ``sum(costs)``)."""
        return self.__add__(other)

    # derived quantities -----------------------------------------------------------------------------
    @property
    def total_bytes(self) -> Number:
        """``bytes_read + bytes_written`` (int or sympy expression)."""
        return _add(self.bytes_read, self.bytes_written)

    @property
    def arithmetic_intensity(self) -> float | sympy.Expr:
        """FLOPs per byte moved: a float for concrete costs, a sympy expression when symbolic, 0 with no bytes."""
        total = self.total_bytes
        if isinstance(total, int):
            if total == 0:
                return 0.0
            if isinstance(self.flops, int):
                return self.flops / total
        elif total == 0:
            return 0.0
        return sympy.cancel(sympy.sympify(self.flops) / sympy.sympify(total))

    @property
    def is_symbolic(self) -> bool:
        """True when any of the three numbers still contains a shape symbol."""
        return any(_is_symbolic_number(v) for v in (self.flops, self.bytes_read, self.bytes_written))

    @property
    def free_symbols(self) -> set:
        """The sympy symbols the cost depends on (empty for a concrete cost)."""
        out: set = set()
        for v in (self.flops, self.bytes_read, self.bytes_written):
            if isinstance(v, sympy.Basic):
                out |= v.free_symbols
        return out

    def hint_map(self) -> dict:
        """``{symbol: example size}`` recorded from the graph's SymInts (empty when none were recorded)."""
        return {s: v for s, v in self.hints}

    def evaluate(self, subs: Mapping[Any, int] | None = None) -> OpCost:
        """Return a concrete copy with ``int`` fields.

        ``subs`` maps shape symbols (sympy Symbols or their names, e.g. ``"s0"``) to ints; every free symbol
        must be covered. With ``subs=None`` the example sizes recorded at construction (``hints``) are used.
        Raises :class:`fxopt.errors.InputError` naming the symbols that have no value.
        """
        if not self.is_symbolic:
            return OpCost(self.flops, self.bytes_read, self.bytes_written, self.exact, self.hints)
        if subs is None:
            values = {s.name: int(v) for s, v in self.hints}
            source = "recorded example sizes"
        else:
            values = {}
            for k, v in subs.items():
                key = k.name if isinstance(k, sympy.Symbol) else str(k)
                values[key] = int(to_sympy(v)) if not isinstance(v, int) else v
            source = "subs"
        missing = sorted(s.name for s in self.free_symbols if s.name not in values)
        if missing:
            raise InputError(
                f"cannot evaluate symbolic cost: no value for {', '.join(missing)} in {source}; "
                f"pass subs={{symbol: int}} for each"
            )

        def conc(x: Number) -> int:
            if isinstance(x, int):
                return x
            mapping = {s: sympy.Integer(values[s.name]) for s in x.free_symbols}
            r = x.subs(mapping)
            if not r.is_number:
                raise InputError(f"cannot evaluate symbolic cost {x}: got {r} after substitution")
            if r.is_Integer:
                return int(r)
            return int(round(float(r)))

        return OpCost(conc(self.flops), conc(self.bytes_read), conc(self.bytes_written), self.exact, self.hints)

    def to_json(self) -> dict:
        """A JSON-ready dict: ``flops``/``bytes_read``/``bytes_written`` as ints (or strings such as
        ``"8192*s0"`` when symbolic) and ``exact``; symbolic costs add ``hints`` ``{name: example size}``."""
        out: dict = {
            "flops": _to_json_number(self.flops),
            "bytes_read": _to_json_number(self.bytes_read),
            "bytes_written": _to_json_number(self.bytes_written),
            "exact": self.exact,
        }
        if self.is_symbolic and self.hints:
            out["hints"] = {s.name: int(v) for s, v in self.hints}
        return out


ZERO = OpCost()


# --------------------------------------------------------------------------------------------------
# Node helpers (public so that formulas registered elsewhere can use them)
# --------------------------------------------------------------------------------------------------


def _iter_tensors(v: Any) -> Iterator[Any]:
    if v is None:
        return
    if _is_tensor_like(v):
        yield v
    elif isinstance(v, (list, tuple)):
        for x in v:
            yield from _iter_tensors(x)
    elif isinstance(v, dict):
        for x in v.values():
            yield from _iter_tensors(x)


def _node_val(n: Any) -> Any:
    if not isinstance(n, torch.fx.Node):
        return None
    v = n.meta.get("val")
    if v is None:
        v = n.meta.get("tensor_meta")
    return v


def node_tensors(n: Any) -> list:
    """All tensor values (FakeTensors) a node produces, flattened from ``meta["val"]``; [] for non-nodes."""
    return list(_iter_tensors(_node_val(n)))


def output_tensors(node: torch.fx.Node) -> list:
    """The tensors ``node`` produces (``node.meta["val"]`` flattened)."""
    return node_tensors(node)


def input_tensors(node: torch.fx.Node) -> list:
    """Tensor values of ``node``'s distinct input nodes (a node used twice is read once), in argument order."""
    out: list = []
    for inp in node.all_input_nodes:
        out.extend(node_tensors(inp))
    return out


def input_bytes(node: torch.fx.Node) -> Number:
    """Sum of :func:`tensor_bytes` over ``node``'s distinct tensor inputs."""
    return _add(*(tensor_bytes(t) for t in input_tensors(node)))


def output_bytes(node: torch.fx.Node) -> Number:
    """Sum of :func:`tensor_bytes` over all tensors ``node`` produces."""
    return _add(*(tensor_bytes(t) for t in output_tensors(node)))


def arg(node: torch.fx.Node, index: int, name: str, default: Any = None) -> Any:
    """Argument ``index`` of ``node`` (positional), else keyword ``name``, else ``default``."""
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _arg_val(node: torch.fx.Node, index: int, name: str) -> Any:
    """The value of a tensor argument: its node's ``meta["val"]`` (None when absent or not a node)."""
    a = arg(node, index, name)
    if isinstance(a, torch.fx.Node):
        return _node_val(a)
    return None


def _first_out(node: torch.fx.Node) -> Any:
    outs = output_tensors(node)
    return outs[0] if outs else None


def _numel_out(node: torch.fx.Node) -> Number:
    t = _first_out(node)
    return numel(t) if t is not None else 0


def _numel_in(node: torch.fx.Node) -> Number:
    t = _arg_val(node, 0, "self")
    if not _is_tensor_like(t):
        t = _arg_val(node, 0, "input")
    if not _is_tensor_like(t):
        ins = input_tensors(node)
        t = ins[0] if ins else None
    return numel(t) if t is not None else 0


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------

CostFn = Callable[[torch.fx.Node], OpCost]
_REGISTRY: dict[Any, CostFn] = {}

#: Names of call targets that were costed with the fallback estimate (no formula registered).
ESTIMATED_OPS: set[str] = set()


def register_cost(*ops: Any) -> Callable[[CostFn], CostFn]:
    """Decorator registering ``fn(node) -> OpCost`` as the formula for one or more call targets.

    Each op may be an overload packet (``torch.ops.aten.addmm``: covers all its overloads), a specific
    ``OpOverload`` (takes precedence over its packet), or any other FX ``call_function`` target such as
    ``operator.getitem`` or a higher-order op. Returns ``fn`` unchanged; a later registration replaces an
    earlier one.
    """

    def deco(fn: CostFn) -> CostFn:
        for op in ops:
            _REGISTRY[op] = fn
        return fn

    return deco


def get_cost_fn(target: Any) -> CostFn | None:
    """The registered formula for a call target (exact target first, then its overload packet), or None."""
    try:
        fn = _REGISTRY.get(target)
    except TypeError:  # unhashable target
        return None
    if fn is None and isinstance(target, torch._ops.OpOverload):
        fn = _REGISTRY.get(target.overloadpacket)
    return fn


def _aten_ops(names: Iterable[str]) -> list:
    ops = []
    for n in names:
        op = getattr(aten, n, None) if _has_aten(n) else None
        if op is not None:
            ops.append(op)
    return ops


def _has_aten(name: str) -> bool:
    try:
        getattr(aten, name)
        return True
    except (AttributeError, RuntimeError):
        return False


def _cost(node: torch.fx.Node, flops: Number, read: Number | None = None, written: Number | None = None,
          exact: bool = True) -> OpCost:
    return OpCost(
        flops,
        input_bytes(node) if read is None else read,
        output_bytes(node) if written is None else written,
        exact,
    )


# --------------------------------------------------------------------------------------------------
# Formulas
# --------------------------------------------------------------------------------------------------

# zero-cost: views / aliases / metadata -----------------------------------------------------------

_VIEW_OPS = [
    "view", "_unsafe_view", "_reshape_alias", "permute", "expand", "expand_as", "slice", "select", "unsqueeze",
    "squeeze", "t", "transpose", "swapaxes", "swapdims", "movedim", "alias", "detach", "as_strided", "split",
    "split_with_sizes", "chunk", "unbind", "tensor_split", "narrow", "diagonal", "unfold", "unflatten",
    "view_as", "view_as_real", "view_as_complex", "real", "imag", "conj", "_conj", "_neg_view", "resolve_conj",
    "resolve_neg", "lift_fresh", "numpy_T", "mT", "mH", "adjoint", "_nested_view_from_buffer",
    "sym_size", "sym_stride", "sym_numel", "sym_storage_offset", "_assert_async", "_assert_scalar",
    "_assert_tensor_metadata", "sym_constrain_range", "sym_constrain_range_for_size",
    "_functional_sym_constrain_range", "_functional_sym_constrain_range_for_size", "_functional_assert_async",
    "_functional_assert_scalar", "_print",
]


@register_cost(*_aten_ops(_VIEW_OPS), operator.getitem)
def _view_cost(node: torch.fx.Node) -> OpCost:
    """Views, aliases, metadata queries and ``getitem``: no FLOPs, no data moved."""
    return OpCost()


# reshape-style ops: alias when the input is contiguous, else copy ---------------------------------


def _hint_value(x: Number, node: torch.fx.Node) -> int | None:
    if isinstance(x, int):
        return x
    hints = _collect_hints(node, x.free_symbols)
    try:
        r = x.subs({s: sympy.Integer(v) for s, v in hints})
        return int(r) if r.is_number else None
    except (TypeError, ValueError):
        return None


def _is_contiguous(t: Any, node: torch.fx.Node) -> bool:
    shape = _shape(t)
    strides = _strides(t)
    if strides is None:
        return True
    expected = 1
    for size, stride in reversed(list(zip(shape, strides))):
        sz = _hint_value(to_sympy(size), node)
        st = _hint_value(to_sympy(stride), node)
        if sz is None or st is None:
            return False
        if sz == 1:
            continue
        if st != expected:
            return False
        expected *= sz
    return True


@register_cost(*_aten_ops(["reshape", "flatten", "contiguous", "reshape_as", "ravel"]))
def _reshape_cost(node: torch.fx.Node) -> OpCost:
    """reshape/flatten/contiguous: a free view when the input is contiguous, otherwise a copy."""
    t = _arg_val(node, 0, "self")
    if _is_tensor_like(t) and _is_contiguous(t, node):
        return OpCost()
    return _cost(node, 0)


# copies ------------------------------------------------------------------------------------------

_COPY_OPS = [
    "clone", "_to_copy", "to", "copy", "_copy_from", "_copy_from_and_resize", "cat", "concat", "concatenate",
    "stack", "hstack", "vstack", "dstack", "constant_pad_nd", "pad", "reflection_pad1d", "reflection_pad2d",
    "reflection_pad3d", "replication_pad1d", "replication_pad2d", "replication_pad3d", "_pad_circular",
    "repeat", "tile", "repeat_interleave", "flip", "roll", "rot90", "lift_fresh_copy", "tril", "triu",
    "select_scatter", "slice_scatter", "diagonal_scatter", "as_strided_scatter", "pixel_shuffle",
    "pixel_unshuffle", "channel_shuffle", "native_channel_shuffle", "alias_copy", "view_copy", "permute_copy",
    "expand_copy", "slice_copy", "select_copy", "t_copy", "transpose_copy", "unsqueeze_copy", "squeeze_copy",
    "as_strided_copy", "detach_copy", "_reshape_copy", "split_copy", "split_with_sizes_copy", "unbind_copy",
    "unfold_copy", "diagonal_copy", "narrow_copy", "_unsafe_view_copy", "view_as_real_copy",
    "view_as_complex_copy", "masked_select", "nonzero", "_local_scalar_dense", "item", "dropout",
    "native_dropout", "feature_dropout", "alpha_dropout",
]


@register_cost(*_aten_ops(_COPY_OPS))
def _copy_cost(node: torch.fx.Node) -> OpCost:
    """Data copies: 0 FLOPs, bytes of the (distinct) inputs read and of the outputs written."""
    return _cost(node, 0)


# factories ---------------------------------------------------------------------------------------

_FACTORY_OPS = [
    "full", "full_like", "zeros", "zeros_like", "ones", "ones_like", "new_zeros", "new_ones", "new_full",
    "arange", "linspace", "logspace", "scalar_tensor", "eye", "rand", "randn", "randint", "rand_like",
    "randn_like", "randint_like", "randperm", "fill", "zero", "tensor", "_tensor_constant",
]
_EMPTY_OPS = ["empty", "empty_like", "empty_strided", "empty_permuted", "new_empty", "new_empty_strided"]


@register_cost(*_aten_ops(_FACTORY_OPS))
def _factory_cost(node: torch.fx.Node) -> OpCost:
    """Tensor factories (incl. ``*_like``/``fill``): nothing read, the output written, 0 FLOPs."""
    return OpCost(0, 0, output_bytes(node))


@register_cost(*_aten_ops(_EMPTY_OPS))
def _empty_cost(node: torch.fx.Node) -> OpCost:
    """Uninitialised allocations: nothing read or written."""
    return OpCost()


# elementwise -------------------------------------------------------------------------------------

#: FLOPs per output element charged for transcendental functions (exp, log, tanh, sigmoid, erf, trig, pow).
TRANSCENDENTAL_FLOPS = 4

_T = TRANSCENDENTAL_FLOPS

#: Per-output-element FLOPs of the elementwise ops with a formula (op name -> factor). Editable.
ELEMENTWISE_FLOPS: dict[str, int] = {
    **{n: 1 for n in [
        "add", "sub", "rsub", "mul", "div", "true_divide", "floor_divide", "neg", "abs", "relu", "relu6",
        "clamp", "clamp_min", "clamp_max", "clip", "maximum", "minimum", "fmax", "fmin", "max", "min", "where",
        "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_not", "logical_xor",
        "bitwise_and", "bitwise_or", "bitwise_not", "bitwise_xor", "bitwise_left_shift",
        "bitwise_right_shift", "__and__", "__or__", "__xor__", "__lshift__", "__rshift__", "sign", "sgn",
        "signbit", "floor", "ceil", "round", "trunc", "frac", "fix", "remainder", "fmod", "sqrt", "rsqrt",
        "reciprocal", "square", "masked_fill", "isnan", "isinf", "isfinite", "isneginf", "isposinf",
        "nan_to_num", "hardtanh", "leaky_relu", "threshold", "heaviside", "copysign", "hardshrink",
        "softshrink", "_prelu_kernel", "prelu", "positive", "bitwise_not", "logical_not", "isclose",
        "deg2rad", "rad2deg", "index_fill", "masked_fill_",
    ]},
    **{n: 3 for n in ["addcmul", "addcdiv", "lerp", "hardsigmoid", "xlogy", "hypot", "rrelu"]},
    **{n: 4 for n in ["hardswish"]},
    **{n: _T for n in [
        "exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "sin", "cos", "tan", "asin", "acos", "atan",
        "atan2", "arctan2", "sinh", "cosh", "asinh", "acosh", "atanh", "tanh", "sigmoid", "erf", "erfc",
        "erfinv", "pow", "float_power", "logit", "lgamma", "digamma", "special_erfcx", "sinc", "i0",
    ]},
    "silu": _T + 1,
    "elu": _T + 1,
    "celu": _T + 2,
    "selu": _T + 2,
    "glu": _T + 1,
    "gelu": 2 * _T,
    "logaddexp": 2 * _T + 1,
    "softplus": 2 * _T + 1,
    "log_sigmoid_forward": 2 * _T + 1,
    "log_sigmoid": 2 * _T + 1,
    "mish": 3 * _T + 1,
}

def _elementwise_cost(node: torch.fx.Node) -> OpCost:
    """Elementwise ops: ``factor * numel(out)`` FLOPs (``factor`` from :data:`ELEMENTWISE_FLOPS`)."""
    target = node.target
    packet = target.overloadpacket if isinstance(target, torch._ops.OpOverload) else target
    name = getattr(packet, "__name__", str(packet)).split(".")[-1]
    factor = ELEMENTWISE_FLOPS.get(name, 1)
    return _cost(node, _mul(factor, _numel_out(node)))


for _name in list(ELEMENTWISE_FLOPS):
    for _op in _aten_ops([_name]):
        # max/min have reduction overloads too: those are handled by the reduction formula below.
        if _name in ("max", "min"):
            continue
        register_cost(_op)(_elementwise_cost)


# matmul family -----------------------------------------------------------------------------------


def _last_dim(t: Any) -> Number:
    return to_sympy(_shape(t)[-1]) if len(_shape(t)) else 1


@register_cost(*_aten_ops(["mm", "bmm", "matmul", "mv", "dot", "vdot", "inner", "_int_mm", "_scaled_mm",
                           "_weight_int8pack_mm", "_weight_int4pack_mm"]))
def _matmul_cost(node: torch.fx.Node) -> OpCost:
    """Matrix products: ``2 * numel(out) * K`` with K the contracted size (``2MKN`` for ``mm``)."""
    a = _arg_val(node, 0, "self")
    if not _is_tensor_like(a):
        a = _arg_val(node, 0, "input")
    k = _last_dim(a) if _is_tensor_like(a) else 1
    return _cost(node, _mul(_mul(2, _numel_out(node)), k))


# fxopt::grouped_mm (fxopt.ir.ops): each of the N rows [in] times its group's [in, out] matrix = 2*N*out*in
register_cost(torch.ops.fxopt.grouped_mm)(_matmul_cost)


@register_cost(*_aten_ops(["addmm", "baddbmm", "addmv", "_addmm_activation"]))
def _addmm_cost(node: torch.fx.Node) -> OpCost:
    """``bias + a @ b``: ``2 * numel(out) * K`` plus one add per output element."""
    a = _arg_val(node, 1, "mat1")
    if not _is_tensor_like(a):
        a = _arg_val(node, 1, "batch1")
    if not _is_tensor_like(a):
        a = _arg_val(node, 1, "mat")
    k = _last_dim(a) if _is_tensor_like(a) else 1
    n_out = _numel_out(node)
    return _cost(node, _add(_mul(_mul(2, n_out), k), n_out))


@register_cost(*_aten_ops(["addbmm"]))
def _addbmm_cost(node: torch.fx.Node) -> OpCost:
    """``bias + sum_b(b1[b] @ b2[b])``: ``2 * B * numel(out) * K + numel(out)``."""
    b1 = _arg_val(node, 1, "batch1")
    shape = _shape(b1)
    n_out = _numel_out(node)
    return _cost(node, _add(_mul(_mul(_mul(2, to_sympy(shape[0])), n_out), to_sympy(shape[-1])), n_out))


@register_cost(*_aten_ops(["linear"]))
def _linear_cost(node: torch.fx.Node) -> OpCost:
    """``linear(x, W[out,in], b)``: ``2 * numel(out) * in`` (+ ``numel(out)`` with a bias)."""
    w = _arg_val(node, 1, "weight")
    n_out = _numel_out(node)
    flops = _mul(_mul(2, n_out), _last_dim(w))
    if arg(node, 2, "bias") is not None:
        flops = _add(flops, n_out)
    return _cost(node, flops)


# convolution -------------------------------------------------------------------------------------

_CONV_TRANSPOSED_OPS = _aten_ops(["conv_transpose1d", "conv_transpose2d", "conv_transpose3d"])


@register_cost(*_aten_ops(["convolution", "_convolution", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
                           "conv_transpose2d", "conv_transpose3d", "_convolution_mode", "mkldnn_convolution",
                           "_slow_conv2d_forward", "thnn_conv2d", "_conv_depthwise2d", "conv_depthwise3d",
                           "slow_conv3d", "slow_conv_dilated2d", "slow_conv_dilated3d",
                           "slow_conv_transpose2d", "slow_conv_transpose3d", "cudnn_convolution",
                           "cudnn_convolution_transpose"]))
def _conv_cost(node: torch.fx.Node) -> OpCost:
    """Convolutions (any rank, grouped, depthwise, transposed).

    Forward: ``2 * numel(out) * (Cin/groups) * prod(kernel)`` where ``weight = [Cout, Cin/groups, *kernel]``.
    Transposed: ``2 * numel(input) * (Cout/groups) * prod(kernel)`` with ``weight = [Cin, Cout/groups, *k]``.
    A bias adds ``numel(out)``.
    """
    target = node.target
    packet = target.overloadpacket if isinstance(target, torch._ops.OpOverload) else target
    name = getattr(packet, "__name__", "")
    x = _arg_val(node, 0, "input")
    if not _is_tensor_like(x):
        x = _arg_val(node, 0, "self")
    w = _arg_val(node, 1, "weight")
    if packet in (aten.convolution, aten._convolution):
        transposed = bool(arg(node, 6, "transposed", False))
    else:
        transposed = packet in _CONV_TRANSPOSED_OPS or "transpose" in name
    per_elem = _prod(_shape(w)[1:])  # (Cin/groups)*prod(k), or (Cout/groups)*prod(k) when transposed
    n_out = _numel_out(node)
    base = numel(x) if transposed else n_out
    flops = _mul(_mul(2, base), per_elem)
    if arg(node, 2, "bias") is not None:
        flops = _add(flops, n_out)
    return _cost(node, flops)


# attention ---------------------------------------------------------------------------------------


@register_cost(*_aten_ops(["scaled_dot_product_attention", "_scaled_dot_product_attention_math",
                           "_scaled_dot_product_flash_attention", "_scaled_dot_product_flash_attention_for_cpu",
                           "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
                           "_scaled_dot_product_fused_attention_overrideable"]))
def _sdpa_cost(node: torch.fx.Node) -> OpCost:
    """Fused attention ``softmax(q k^T) v``: ``2*B*L*S*E + 2*B*L*S*Ev + 5*B*L*S`` (B = batch*heads)."""
    q = _arg_val(node, 0, "query")
    k = _arg_val(node, 1, "key")
    v = _arg_val(node, 2, "value")
    qs, ks, vs = _shape(q), _shape(k), _shape(v)
    out = _first_out(node)
    batch = _prod(_shape(out)[:-2]) if out is not None else _prod(qs[:-2])
    L, E = to_sympy(qs[-2]), to_sympy(qs[-1])
    S, Ev = to_sympy(ks[-2]), to_sympy(vs[-1])
    scores = _mul(_mul(batch, L), S)
    flops = _add(_mul(_mul(2, scores), E), _mul(_mul(2, scores), Ev), _mul(5, scores))
    return _cost(node, flops)


# softmax / normalisation -------------------------------------------------------------------------


def _scaled_in(factor: int) -> CostFn:
    def fn(node: torch.fx.Node) -> OpCost:
        return _cost(node, _mul(factor, _numel_in(node)))

    fn.__doc__ = f"{factor} FLOPs per input element."
    return fn


register_cost(*_aten_ops(["_softmax", "_log_softmax", "softmax", "log_softmax", "_safe_softmax",
                          "_masked_softmax"]))(_scaled_in(5))
register_cost(*_aten_ops(["native_layer_norm", "layer_norm", "native_group_norm", "group_norm",
                          "_native_batch_norm_legit", "_native_batch_norm_legit_functional", "instance_norm",
                          "_batch_norm_with_update", "_batch_norm_with_update_functional"]))(_scaled_in(8))
register_cost(*_aten_ops(["_native_batch_norm_legit_no_training", "_batch_norm_no_update"]))(_scaled_in(5))
register_cost(*_aten_ops(["rms_norm", "_fused_rms_norm"]))(_scaled_in(4))


@register_cost(*_aten_ops(["native_batch_norm", "batch_norm", "_batch_norm_impl_index"]))
def _batch_norm_cost(node: torch.fx.Node) -> OpCost:
    """Batch norm with a ``training`` flag: 8 FLOPs/element when computing statistics, 5 with running ones."""
    training = bool(arg(node, 5, "training", False))
    return _cost(node, _mul(8 if training else 5, _numel_in(node)))


# reductions --------------------------------------------------------------------------------------

for _names, _factor in (
    (["sum", "mean", "prod", "amax", "amin", "max", "min", "argmax", "argmin", "any", "all", "nansum",
      "nanmean", "cumsum", "cumprod", "cummax", "cummin", "count_nonzero", "aminmax", "median", "nanmedian",
      "mode", "logcumsumexp"], 1),
    (["var", "std", "var_mean", "std_mean"], 3),
    (["linalg_vector_norm", "norm", "frobenius_norm"], 2),
    (["logsumexp"], 6),
):
    register_cost(*_aten_ops(_names))(_scaled_in(_factor))


@register_cost(aten.max, aten.min)
def _max_min_cost(node: torch.fx.Node) -> OpCost:
    """``max``/``min``: elementwise (``.other``) costs ``numel(out)``; reductions cost ``numel(in)``."""
    overload = getattr(node.target, "_overloadname", "")
    if overload in ("other", "out", "binary_out"):
        return _cost(node, _numel_out(node))
    return _cost(node, _numel_in(node))


def _log2_ceil(n: Number) -> Number:
    if isinstance(n, int):
        return max(1, (max(n, 1) - 1).bit_length())
    # log of at least 2: a data-dependent size with no known bound counts as 0, and log(0) is complex infinity
    return sympy.Max(1, sympy.ceiling(sympy.log(sympy.Max(n, 2), 2)))


@register_cost(*_aten_ops(["sort", "argsort", "msort"]))
def _sort_cost(node: torch.fx.Node) -> OpCost:
    """Sorting along a dim of size n: ``numel * ceil(log2 n)`` compares."""
    x = _arg_val(node, 0, "self")
    dim = arg(node, 1, "dim", -1)
    if not isinstance(dim, int):
        dim = -1
    shape = _shape(x)
    n = to_sympy(shape[dim]) if shape else 1
    return _cost(node, _mul(numel(x), _log2_ceil(n)))


@register_cost(*_aten_ops(["topk", "kthvalue"]))
def _topk_cost(node: torch.fx.Node) -> OpCost:
    """Top-k selection: ``numel(in) * ceil(log2 k)`` compares (at least ``numel(in)``)."""
    k = arg(node, 1, "k", 1)
    k = to_sympy(k) if isinstance(k, (int, torch.SymInt)) else 1
    return _cost(node, _mul(_numel_in(node), _log2_ceil(k)))


# pooling / resampling ----------------------------------------------------------------------------


def _kernel_prod(node: torch.fx.Node, rank: int) -> Number:
    k = arg(node, 1, "kernel_size", [1])
    if isinstance(k, (int, torch.SymInt)):
        k = [k] * rank
    k = list(k)
    if len(k) == 1 and rank > 1:
        k = k * rank
    return _prod(k)


def _pool_rank(node: torch.fx.Node) -> int:
    name = getattr(getattr(node.target, "overloadpacket", node.target), "__name__", "")
    for r in (1, 2, 3):
        if f"{r}d" in name:
            return r
    return 2


@register_cost(*_aten_ops(["max_pool1d", "max_pool2d", "max_pool3d", "max_pool1d_with_indices",
                           "max_pool2d_with_indices", "max_pool3d_with_indices", "_mkldnn_max_pool2d"]))
def _max_pool_cost(node: torch.fx.Node) -> OpCost:
    """Max pooling: one compare per window element, ``numel(out) * prod(kernel)``."""
    return _cost(node, _mul(_numel_out(node), _kernel_prod(node, _pool_rank(node))))


@register_cost(*_aten_ops(["avg_pool1d", "avg_pool2d", "avg_pool3d"]))
def _avg_pool_cost(node: torch.fx.Node) -> OpCost:
    """Average pooling: ``numel(out) * prod(kernel)`` adds plus one divide per output."""
    n_out = _numel_out(node)
    return _cost(node, _add(_mul(n_out, _kernel_prod(node, _pool_rank(node))), n_out))


@register_cost(*_aten_ops(["_adaptive_avg_pool1d", "_adaptive_avg_pool2d", "_adaptive_avg_pool3d",
                           "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
                           "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d"]))
def _adaptive_pool_cost(node: torch.fx.Node) -> OpCost:
    """Adaptive pooling: each input element once plus one op per output, ``numel(in) + numel(out)``."""
    return _cost(node, _add(_numel_in(node), _numel_out(node)))


register_cost(*_aten_ops(["upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d",
                          "_upsample_nearest_exact1d", "_upsample_nearest_exact2d",
                          "_upsample_nearest_exact3d"]))(_copy_cost)
register_cost(*_aten_ops(["upsample_linear1d"]))(lambda n: _cost(n, _mul(4, _numel_out(n))))
register_cost(*_aten_ops(["upsample_bilinear2d", "_upsample_bilinear2d_aa"]))(
    lambda n: _cost(n, _mul(8, _numel_out(n))))
register_cost(*_aten_ops(["upsample_trilinear3d"]))(lambda n: _cost(n, _mul(16, _numel_out(n))))
register_cost(*_aten_ops(["upsample_bicubic2d", "_upsample_bicubic2d_aa"]))(
    lambda n: _cost(n, _mul(32, _numel_out(n))))


# gathers: embedding / index / gather -------------------------------------------------------------


def _bytes_of_args(node: torch.fx.Node, specs: Iterable[tuple[int, str]]) -> Number:
    total: Number = 0
    seen: set = set()
    for i, name in specs:
        a = arg(node, i, name)
        for n in (a if isinstance(a, (list, tuple)) else [a]):
            if isinstance(n, torch.fx.Node) and n not in seen:
                seen.add(n)
                for t in node_tensors(n):
                    total = _add(total, tensor_bytes(t))
    return total


@register_cost(*_aten_ops(["embedding"]))
def _embedding_cost(node: torch.fx.Node) -> OpCost:
    """``embedding(weight, indices)``: 0 FLOPs; reads ``numel(indices)`` rows plus the indices, not the table."""
    w = _arg_val(node, 0, "weight")
    idx = _arg_val(node, 1, "indices")
    row_bytes = _mul(_prod(_shape(w)[1:]), _itemsize(w))
    read = _add(_mul(numel(idx), row_bytes), tensor_bytes(idx))
    return OpCost(0, read, output_bytes(node))


@register_cost(*_aten_ops(["embedding_bag", "_embedding_bag", "_embedding_bag_forward_only"]))
def _embedding_bag_cost(node: torch.fx.Node) -> OpCost:
    """Embedding bags: gathers ``numel(indices)`` rows and reduces them into bags.

    FLOPs: one add per gathered element (``sum``/``max``), x2 with ``per_sample_weights``, plus one divide
    per output element for ``mean``. Bytes read: gathered rows + indices + offsets + per-sample weights;
    written: all outputs.
    """
    w = _arg_val(node, 0, "weight")
    idx = _arg_val(node, 1, "indices")
    mode = arg(node, 4, "mode", 0)
    psw = arg(node, 6, "per_sample_weights")
    row_elems = _prod(_shape(w)[1:])
    gathered = _mul(numel(idx), row_elems)
    flops = _mul(2 if psw is not None else 1, gathered)
    out = _first_out(node)
    if mode == 1 and out is not None:
        flops = _add(flops, numel(out))
    read = _add(_mul(gathered, _itemsize(w)), _bytes_of_args(node, [(1, "indices"), (2, "offsets"),
                                                                     (6, "per_sample_weights")]))
    return OpCost(flops, read, output_bytes(node))


@register_cost(*_aten_ops(["index", "_unsafe_index", "index_select", "take", "take_along_dim", "gather",
                           "_unsafe_masked_index"]))
def _gather_cost(node: torch.fx.Node) -> OpCost:
    """Gathers: 0 FLOPs; read ``numel(out)`` source elements plus the index tensors, write the output."""
    src = _arg_val(node, 0, "self")
    out = _first_out(node)
    if not _is_tensor_like(src) or out is None:
        return _cost(node, 0)
    others = _add(*(tensor_bytes(t) for n in node.all_input_nodes if n is not arg(node, 0, "self")
                    for t in node_tensors(n)))
    return OpCost(0, _add(_mul(numel(out), _itemsize(src)), others), output_bytes(node))


# scatters ----------------------------------------------------------------------------------------


def _scatter_like(node: torch.fx.Node, index_pos: tuple[int, str], src_pos: tuple[int, str] | None,
                  src_elems: Number | None, flops_per_elem: int) -> OpCost:
    self_val = _arg_val(node, 0, "self")
    read: Number = tensor_bytes(self_val) if _is_tensor_like(self_val) else 0
    read = _add(read, _bytes_of_args(node, [index_pos]))
    if src_pos is not None:
        src = _arg_val(node, *src_pos)
        if _is_tensor_like(src):
            elems = src_elems if src_elems is not None else numel(src)
            read = _add(read, _mul(elems, _itemsize(src)))
    n = src_elems if src_elems is not None else 0
    return OpCost(_mul(flops_per_elem, n), read, output_bytes(node))


@register_cost(*_aten_ops(["scatter", "scatter_add", "scatter_reduce"]))
def _scatter_cost(node: torch.fx.Node) -> OpCost:
    """``scatter*(self, dim, index, src)``: read self + index + ``numel(index)`` src elements, write the
    output; one FLOP per scattered element for ``scatter_add``/``scatter_reduce``/``scatter(reduce=...)``."""
    index = _arg_val(node, 2, "index")
    n_idx = numel(index) if _is_tensor_like(index) else 0
    name = getattr(getattr(node.target, "overloadpacket", node.target), "__name__", "")
    reduces = name in ("scatter_add", "scatter_reduce") or arg(node, 4, "reduce") is not None
    c = _scatter_like(node, (2, "index"), (3, "src"), n_idx, 1 if reduces else 0)
    if reduces:
        return c
    return OpCost(0, c.bytes_read, c.bytes_written)


@register_cost(*_aten_ops(["index_add", "index_copy", "index_reduce"]))
def _index_add_cost(node: torch.fx.Node) -> OpCost:
    """``index_add(self, dim, index, source)``: read self + index + source, write the output; one FLOP per
    source element (0 for ``index_copy``)."""
    src = _arg_val(node, 3, "source")
    n_src = numel(src) if _is_tensor_like(src) else 0
    name = getattr(getattr(node.target, "overloadpacket", node.target), "__name__", "")
    return _scatter_like(node, (2, "index"), (3, "source"), n_src, 0 if name == "index_copy" else 1)


@register_cost(*_aten_ops(["index_put", "_index_put_impl", "_unsafe_index_put", "masked_scatter"]))
def _index_put_cost(node: torch.fx.Node) -> OpCost:
    """``index_put(self, indices, values, accumulate)``: read self + indices + values, write the output;
    one FLOP per value when accumulating."""
    values = _arg_val(node, 2, "values")
    n_val = numel(values) if _is_tensor_like(values) else 0
    accumulate = bool(arg(node, 3, "accumulate", False))
    return _scatter_like(node, (1, "indices"), (2, "values"), n_val, 1 if accumulate else 0)


# higher-order ops --------------------------------------------------------------------------------


def _subgraph_module(node: torch.fx.Node, a: Any) -> Any:
    if isinstance(a, torch.fx.Node) and a.op == "get_attr":
        owner = node.graph.owning_module
        obj = owner
        for part in str(a.target).split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                return None
        return obj
    if isinstance(a, (torch.fx.GraphModule, torch.fx.Graph)):
        return a
    return None


def _cond_cost(node: torch.fx.Node) -> OpCost:
    """``cond(pred, true_fn, false_fn, operands)``: the more expensive branch (by FLOPs at the example
    sizes); marked inexact because the branch taken is data-dependent."""
    branches = [_subgraph_module(node, arg(node, i, n)) for i, n in ((1, "true_fn"), (2, "false_fn"))]
    costs = [graph_cost(b) for b in branches if b is not None]
    if not costs:
        return _fallback_cost(node)

    def key(c: OpCost) -> float:
        try:
            return float(c.evaluate().flops)
        except Exception:  # noqa: BLE001 - a branch without hints sorts as 0
            return 0.0

    best = max(costs, key=key)
    return OpCost(best.flops, best.bytes_read, best.bytes_written, False, best.hints)


try:
    register_cost(torch.ops.higher_order.cond)(_cond_cost)
except (AttributeError, RuntimeError):  # pragma: no cover - very old torch
    pass


def _loop_arg_list(node: torch.fx.Node, index: int) -> list:
    value = node.args[index] if len(node.args) > index else ()
    return list(value) if isinstance(value, (tuple, list)) else [value]


def _scan_cost(node: torch.fx.Node) -> OpCost:
    """``scan(combine_fn, init, xs, additional_inputs)``: ``length x`` the combine graph's cost, ``length``
    being dim 0 of the first xs (symbolic when the length is). Exact when the combine graph is. The combine
    graph's nodes carry per-step shapes, so one copy is one step; the stacking of the per-step outputs is
    counted in them (each step writes its output)."""
    combine = _subgraph_module(node, arg(node, 0, "combine_fn"))
    xs = [x for x in _loop_arg_list(node, 2) if isinstance(x, torch.fx.Node)]
    val = _node_val(xs[0]) if xs else None
    if combine is None or not _is_tensor_like(val) or len(_shape(val)) == 0:
        return _fallback_cost(node)
    length = to_sympy(_shape(val)[0])
    inner = graph_cost(combine)
    hints = inner.hints if isinstance(length, int) else inner.hints + _collect_hints(node, _free(length))
    return OpCost(_mul(length, inner.flops), _mul(length, inner.bytes_read), _mul(length, inner.bytes_written),
                  inner.exact, hints)


def _free(x: Number) -> set:
    return set(x.free_symbols) if isinstance(x, sympy.Basic) else set()


def _while_loop_cost(node: torch.fx.Node) -> OpCost:
    """``while_loop(cond_fn, body_fn, carried_inputs, additional_inputs)``: ONE iteration (the cond graph +
    the body graph), a lower bound of the loop's cost, so it is marked inexact (``exact=False``); the
    trip count is data-dependent in general (``unroll`` makes it visible when it can be proven)."""
    graphs = [_subgraph_module(node, arg(node, i, n)) for i, n in ((0, "cond_fn"), (1, "body_fn"))]
    if any(g is None for g in graphs):
        return _fallback_cost(node)
    one = graph_cost(graphs[0]) + graph_cost(graphs[1])
    return OpCost(one.flops, one.bytes_read, one.bytes_written, False, one.hints)


for _name, _fn in (("scan", _scan_cost), ("while_loop", _while_loop_cost)):
    try:
        register_cost(getattr(torch.ops.higher_order, _name))(_fn)
    except (AttributeError, RuntimeError):  # pragma: no cover - a torch without this loop op
        pass


# --------------------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------------------

_SCALAR_TYPES = (int, float, bool, torch.SymInt, torch.SymFloat, torch.SymBool)


def _fallback_cost(node: torch.fx.Node) -> OpCost:
    """No formula: ``numel`` of all outputs as FLOPs, bytes of all inputs and outputs, ``exact=False``."""
    ESTIMATED_OPS.add(op_name(node.target))
    flops = _add(*(numel(t) for t in output_tensors(node)))
    return OpCost(flops, input_bytes(node), output_bytes(node), False)


def _shape_env_of(node: torch.fx.Node) -> Any:
    vals: list = list(output_tensors(node)) + input_tensors(node)
    scalars = [node.meta.get("val")] + [n.meta.get("val") for n in node.all_input_nodes]
    for s in scalars:
        if isinstance(s, (torch.SymInt, torch.SymFloat)):
            return s.node.shape_env
    for t in vals:
        for d in list(_shape(t)) + list(_strides(t) or ()):
            if isinstance(d, torch.SymInt):
                return d.node.shape_env
    return None


def _collect_hints(node: torch.fx.Node, symbols: Iterable[Any]) -> tuple:
    symbols = list(symbols)
    if not symbols:
        return ()
    env = _shape_env_of(node)
    if env is None:
        return ()
    out = []
    for sym in sorted(symbols, key=lambda s: s.name):
        value = None
        # torch >= 2.10 calls the table backed_var_to_val (var_to_val is a deprecated alias).
        tables = ("backed_var_to_val", "unbacked_var_to_val") if hasattr(type(env), "backed_var_to_val") \
            or "backed_var_to_val" in vars(env) else ("var_to_val", "unbacked_var_to_val")
        for table in tables:
            mapping = getattr(env, table, None)
            if isinstance(mapping, dict) and sym in mapping:
                value = mapping[sym]
                break
        if value is not None:
            try:
                out.append((sym, int(value)))
            except (TypeError, ValueError):
                pass
    return tuple(out)


def _returns_something(target: Any) -> bool:
    schema = getattr(target, "_schema", None)
    return schema is None or len(schema.returns) > 0


def node_cost(node: torch.fx.Node, subgraph_costs: dict[int, OpCost] | None = None) -> OpCost:
    """The :class:`OpCost` of one FX node, from ``node.meta["val"]`` of it and its inputs.

    ``placeholder``/``get_attr``/``output`` and export's ``_guards_fn`` call are free; ``call_function``
    nodes use the formula registered for their target (see :func:`register_cost`), symbolic-size scalar
    arithmetic is free, and anything else falls back to the estimate described in the module docstring
    (``exact=False``). Symbolic costs carry the example sizes of their symbols as ``hints``.
    ``subgraph_costs``: a memo (id of a called GraphModule -> its cost) the caller keeps across the nodes of
    one graph, so a step graph called 75 times is costed once.
    """
    if node.op in ("placeholder", "get_attr", "output"):
        return OpCost()
    if node.op == "call_module":
        owner = node.graph.owning_module
        sub = getattr(owner, str(node.target), None) if owner is not None else None
        if str(node.target).startswith("_guards") or type(sub).__name__ == "GuardsFn":
            return OpCost()
        if isinstance(sub, torch.fx.GraphModule):
            # A called subgraph (e.g. a decode step) costs its graph; its symbols are valued at the
            # subgraph's own example sizes, not this call's, so the figure is an estimate.
            inner = subgraph_costs.get(id(sub)) if subgraph_costs is not None else None
            if inner is None:
                inner = graph_cost(sub)
                if subgraph_costs is not None:
                    subgraph_costs[id(sub)] = inner
            return OpCost(inner.flops, inner.bytes_read, inner.bytes_written, exact=False, hints=inner.hints)
        if not output_tensors(node):
            ESTIMATED_OPS.add(f"call_module:{type(sub).__name__ if sub is not None else node.target}")
            return OpCost(exact=False)
        cost = _fallback_cost(node)
    else:
        fn = get_cost_fn(node.target) if node.op == "call_function" else None
        if fn is not None:
            try:
                cost = fn(node)
            except Exception:  # noqa: BLE001 - a formula that cannot read this node's metadata
                # (e.g. a pass built it without "val" on an input) degrades to the estimate, visibly.
                cost = _fallback_cost(node)
        else:
            val = node.meta.get("val")
            is_op = isinstance(node.target, (torch._ops.OpOverload, torch._ops.OpOverloadPacket,
                                             torch._ops.HigherOrderOperator))
            if node.op == "call_function" and not is_op and (val is None or isinstance(val, _SCALAR_TYPES)) \
                    and not output_tensors(node):
                # Python-level arithmetic on sizes (operator.mul on SymInts, torch.sym_max, math.ceil...).
                return OpCost()
            cost = _fallback_cost(node)
    if node.op == "call_function" and cost.exact and "val" not in node.meta and "tensor_meta" not in node.meta \
            and _returns_something(node.target):
        # No metadata on the output (a pass built the node without running shape inference): the numbers
        # are whatever the formula could read from the inputs, so flag them.
        cost = OpCost(cost.flops, cost.bytes_read, cost.bytes_written, False, cost.hints)
    if cost.is_symbolic and not cost.hints:
        hints = _collect_hints(node, cost.free_symbols)
        if hints:
            cost = OpCost(cost.flops, cost.bytes_read, cost.bytes_written, cost.exact, hints)
    return cost


def _graph_of(gm: Any) -> torch.fx.Graph:
    if isinstance(gm, torch.fx.Graph):
        return gm
    graph = getattr(gm, "graph", None)
    if isinstance(graph, torch.fx.Graph):
        return graph
    raise TypeError(f"expected a torch.fx.GraphModule or Graph, got {type(gm).__name__}")


def annotate_costs(gm: Any) -> None:
    """Set ``node.meta["cost"]`` (an :class:`OpCost`) on every node of a GraphModule (or Graph)."""
    memo: dict[int, OpCost] = {}
    for node in _graph_of(gm).nodes:
        node.meta["cost"] = node_cost(node, memo)


def graph_cost(gm: Any) -> OpCost:
    """Sum of :func:`node_cost` over every node of a GraphModule (or Graph), recomputed from current metadata.

    The result is ``exact`` only if every node had a formula; symbolic totals carry the example sizes.
    """
    total, memo = OpCost(), {}
    for node in _graph_of(gm).nodes:
        total = total + node_cost(node, memo)
    return total


def at_example_sizes(c: "OpCost", gm: torch.fx.GraphModule, bounds: dict[str, int] | None = None) -> "OpCost":
    """``c`` made concrete at the graph's example sizes (its recorded hints). Data-dependent sizes (unbacked
    symbols such as ``u0`` from ``nonzero`` or routing) have no example value: they count at their upper
    bound when ``gm``'s shape environment knows a finite one, else as 0. ``bounds``: a cache the caller
    keeps across nodes of one graph (symbol name -> bound)."""
    if not c.is_symbolic:
        return c
    bounds = {} if bounds is None else bounds
    subs = {s.name: int(v) for s, v in c.hints}
    for sym in c.free_symbols:
        if sym.name not in subs:
            if sym.name not in bounds:
                bounds[sym.name] = _upper_bound(gm, sym.name)
            subs[sym.name] = bounds[sym.name]
    return c.evaluate(subs)


_LARGEST_USEFUL_BOUND = 2**31


def _upper_bound(gm: torch.fx.GraphModule, name: str) -> int:
    from fxopt.ir import shapes  # local: ir.shapes imports this module

    env = getattr(shapes.fake_mode_of(gm), "shape_env", None)
    for key, value_range in (getattr(env, "var_to_range", None) or {}).items():
        if str(key) == name:
            try:  # an unbounded range's upper end is sympy's oo or torch's int_oo: no bound to use
                bound = int(value_range.upper)
            except (TypeError, ValueError, AttributeError, OverflowError):
                return 0
            # a bound inherited from a dynamic dim's range (up to int64 max) is no size estimate either
            return bound if bound <= _LARGEST_USEFUL_BOUND else 0
    return 0
