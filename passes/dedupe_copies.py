"""Copy reduction for `dedupe`: clone / ``_to_copy`` / expand / view chains that do nothing for their consumer.

The rules are data. `canonicalize`'s copy and view rules (no-op view, view-of-view, identity and composed
permutes, no-op expand and slice, no-op clone and ``_to_copy``, alias/detach) are reused through
:func:`fxopt.passes.canonicalize.apply_rules`, each copy removal wrapped in two extra conditions (:func:`guarded`:
the copy's memory must not reach the output through views, and a clone of a non-dense tensor is kept); its
arithmetic identities (``x*1``, ``x+0``, ``x/1``) are left to `canonicalize`. :data:`COPY_RULES` adds, one
identity per rule:

- ``expand-of-expand``: ``expand(expand(x, s1), s2) == expand(x, s2)`` (s2 without -1);
- ``view-of-unsqueeze``: ``view(unsqueeze(x, d), s) == view(x, s)``, likewise for squeeze;
- ``widening-round-trip``: ``_to_copy(_to_copy(x, dtype=W), dtype=x.dtype) == x`` when W holds every value of
  x's dtype exactly (float16 -> float32 -> float16, int32 -> int64 -> int32, ...);
- ``copy-of-fresh-result``: a clone / same-dtype ``_to_copy`` that is returned (directly or through views), of a
  freshly computed value that nothing else uses, is dropped: the output can be that value itself (no alias is
  created, unlike the copies of inputs, weights and views that must stay).
"""
from __future__ import annotations

import operator

import torch
import torch.fx

from fxopt.ir.program import Program
from fxopt.passes.canonicalize import RULES as CANONICAL_RULES, Rule, apply_rules
from fxopt.passes.dedupe_cse import aliases_input, reaches_output

aten = torch.ops.aten

_ARITHMETIC = {aten.mul, aten.add, aten.sub, aten.div}
_SQUEEZES = {aten.unsqueeze, aten.squeeze}
_VIEWS = {aten.view, aten._unsafe_view, aten.reshape}

# dtype -> dtypes that hold each of its values exactly
_WIDER = {
    torch.float16: {torch.float32, torch.float64},
    torch.bfloat16: {torch.float32, torch.float64},
    torch.float32: {torch.float64},
    torch.int8: {torch.int16, torch.int32, torch.int64},
    torch.uint8: {torch.int16, torch.int32, torch.int64},
    torch.int16: {torch.int32, torch.int64},
    torch.int32: {torch.int64},
    torch.bool: {torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64},
}


def _packet(target):
    return getattr(target, "overloadpacket", None)


def _val(n):
    return n.meta.get("val") if isinstance(n, torch.fx.Node) else None


def _producer(node: torch.fx.Node, packets) -> torch.fx.Node | None:
    x = node.args[0] if node.args and isinstance(node.args[0], torch.fx.Node) else None
    if x is None or x.op != "call_function" or _packet(x.target) not in packets:
        return None
    return x


def _expand_of_expand(node, graph):
    # expand(expand(x, s1), s2) == expand(x, s2): broadcasting x straight to s2 gives the same values
    inner = _producer(node, {aten.expand})
    size = list(node.args[1]) if len(node.args) > 1 else None
    if inner is None or size is None or any(isinstance(d, int) and d < 0 for d in size):
        return None
    with graph.inserting_before(node):
        return graph.call_function(aten.expand.default, (inner.args[0], size))


def _view_of_squeeze(node, graph):
    # view(unsqueeze(x, d), s) == view(squeeze(x, d), s) == view(x, s): size-1 dims never block a view
    inner = _producer(node, _SQUEEZES)
    if inner is None or not isinstance(inner.args[0], torch.fx.Node):
        return None
    with graph.inserting_before(node):
        return graph.call_function(node.target, (inner.args[0], *node.args[1:]), dict(node.kwargs))


def _only_dtype(kwargs: dict, val) -> bool:
    kw = dict(kwargs)
    kw.pop("dtype", None)
    kw.pop("non_blocking", None)
    device = kw.pop("device", None)
    if device is not None and val is not None and torch.device(device) != val.device:
        return False
    return not kw


def _widening_round_trip(node, graph):
    # _to_copy(_to_copy(x, dtype=W), dtype=x.dtype) == x when W represents every value of x.dtype exactly
    inner = _producer(node, {aten._to_copy})
    if inner is None or not isinstance(inner.args[0], torch.fx.Node):
        return None
    x = inner.args[0]
    xv, iv, nv = _val(x), _val(inner), _val(node)
    if not all(isinstance(v, torch.Tensor) for v in (xv, iv, nv)):
        return None
    if not (_only_dtype(inner.kwargs, xv) and _only_dtype(node.kwargs, iv)):
        return None
    if nv.dtype != xv.dtype or iv.dtype not in _WIDER.get(xv.dtype, ()):
        return None
    return x


def _is_fresh(x: torch.fx.Node) -> bool:
    """True when ``x`` is a newly allocated result (not an input, weight, or view of another value)."""
    if x.op != "call_function":
        return False
    target = x.target
    if target is operator.getitem:
        return isinstance(x.args[0], torch.fx.Node) and _is_fresh(x.args[0])
    if not isinstance(target, torch._ops.OpOverload) or target._schema.is_mutable:
        return False
    return not aliases_input(x)


def _copy_of_fresh_result(node, graph):
    # return clone(y) == return y (or views of it) when y is freshly computed and used only by this copy
    x = node.args[0] if node.args and isinstance(node.args[0], torch.fx.Node) else None
    if x is None or not reaches_output(node):
        return None
    if len(x.users) != 1 or not _is_fresh(x):
        return None
    xv = _val(x)
    if not isinstance(xv, torch.Tensor):
        return None
    if _packet(node.target) is aten.clone:
        if node.kwargs.get("memory_format") not in (None, torch.preserve_format):
            return None
    elif not _only_dtype(node.kwargs, xv) or node.kwargs.get("dtype", xv.dtype) != xv.dtype:
        return None
    return x


COPY_RULES: tuple[Rule, ...] = (
    Rule("expand-of-expand", (aten.expand,), _expand_of_expand),
    Rule("view-of-unsqueeze", tuple(_VIEWS), _view_of_squeeze),
    Rule("widening-round-trip", (aten._to_copy,), _widening_round_trip, removes_copy=True),
    Rule("copy-of-fresh-result", (aten.clone, aten._to_copy), _copy_of_fresh_result),
)

def _dense(val) -> bool:
    """True when ``val``'s elements fill its memory exactly once (some permutation of a contiguous layout);
    False when that cannot be decided without guarding on a symbolic dim."""
    if any(not isinstance(d, int) for d in (*val.shape, *val.stride())):
        try:  # torch's symbolic-safe check (answers False rather than adding a guard)
            from torch._prims_common import is_non_overlapping_and_dense_or_false
        except ImportError:
            return False
        try:
            return bool(is_non_overlapping_and_dense_or_false(val))
        except Exception:  # noqa: BLE001 - undecidable: keep the copy
            return False
    expected = 1
    for stride, size in sorted((st, sz) for sz, st in zip(val.shape, val.stride()) if sz != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def _alias_root(x: torch.fx.Node) -> torch.fx.Node:
    """The node whose memory ``x`` views (``x`` itself when it is not a view)."""
    while x.op == "call_function" and aliases_input(x) and x.args and isinstance(x.args[0], torch.fx.Node):
        x = x.args[0]
    return x


def guarded(rule: Rule) -> Rule:
    """``rule`` with dedupe's extra conditions for removing a copy (a rule with ``removes_copy``):

    - the copy's memory must not reach the output through views either (``return x.clone().view(-1)``:
      dropping the clone would return a view of the input);
    - a clone / ``_to_copy`` is kept when its input is not dense (an expand or strided slice): the copy is
      dense, the input is not, and a later ``view`` may need the copy's layout;
    - likewise when a view uses the copy and its input is a graph input or a view of one: the strides
      recorded for an input are those of the example, and callers (``unroll``'s step graphs fed the
      encoder's transposed projections, users passing permuted tensors) may pass other layouts.

    Returns a Rule with the same name and ops whose ``fn`` wraps the original (``fn.__wrapped__``)."""
    if not rule.removes_copy:
        return rule
    inner = rule.fn

    def fn(node, graph):
        if reaches_output(node):
            return None
        if _packet(node.target) in (aten.clone, aten._to_copy):
            x = node.args[0] if node.args and isinstance(node.args[0], torch.fx.Node) else None
            if x is None or not isinstance(_val(x), torch.Tensor) or not _dense(_val(x)):
                return None
            if _alias_root(x).op == "placeholder" and any(aliases_input(u) for u in node.users):
                return None  # an input's recorded strides are not a promise: the view may need the copy
        return inner(node, graph)

    fn.__wrapped__ = inner
    fn.__doc__ = inner.__doc__
    return Rule(rule.name, rule.ops, fn, rule.removes_copy)


#: canonicalize's copy/view rules (its arithmetic identities excluded; copy removals guarded, see
#: :func:`guarded`) followed by dedupe's own.
RULES: tuple[Rule, ...] = tuple(guarded(r) for r in CANONICAL_RULES + COPY_RULES
                                if not set(r.ops) & _ARITHMETIC)


def reduce_copies(program: Program, pass_name: str = "dedupe") -> dict[str, int]:
    """Apply :data:`RULES` to a fixpoint over ``program`` (in place); returns how often each rule fired.
    Nodes left dead by a rewrite (the inner view of a collapsed chain) are left for dead-code elimination."""
    return apply_rules(program, RULES, pass_name)
