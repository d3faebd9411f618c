"""Copy reduction for `dedupe`: clone / ``_to_copy`` / expand / view chains that do nothing for their consumer.

The rules are data. `canonicalize`'s copy and view rules (no-op view, view-of-view, identity and composed
permutes, no-op expand and slice, no-op clone and ``_to_copy``, alias/detach) are reused through
:func:`fxopt.ir.rewrite.apply_rules`, whose copy removals meet
:func:`fxopt.ir.rewrite.copy_removal_allowed` (the copy's memory must not reach the output through
views, a copy of a non-dense tensor is kept, and so is a copy of an input that a view uses); its
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


import torch
import torch.fx

from fxopt.ir.nodes import packet, val
from fxopt.ir.program import Program
from fxopt.ir.aliasing import RESHAPES, is_fresh, reaches_output
from fxopt.ir.rewrite import Rule, apply_rules
from fxopt.passes.canonicalize import RULES as CANONICAL_RULES

aten = torch.ops.aten

_ARITHMETIC = {aten.mul, aten.add, aten.sub, aten.div}
_SQUEEZES = {aten.unsqueeze, aten.squeeze}

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


def _producer(node: torch.fx.Node, packets) -> torch.fx.Node | None:
    x = node.args[0] if node.args and isinstance(node.args[0], torch.fx.Node) else None
    if x is None or x.op != "call_function" or packet(x.target) not in packets:
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
    xv, iv, nv = val(x), val(inner), val(node)
    if not all(isinstance(v, torch.Tensor) for v in (xv, iv, nv)):
        return None
    if not (_only_dtype(inner.kwargs, xv) and _only_dtype(node.kwargs, iv)):
        return None
    if nv.dtype != xv.dtype or iv.dtype not in _WIDER.get(xv.dtype, ()):
        return None
    return x


def _copy_of_fresh_result(node, graph):
    # return clone(y) == return y (or views of it) when y is freshly computed and used only by this copy
    x = node.args[0] if node.args and isinstance(node.args[0], torch.fx.Node) else None
    if x is None or not reaches_output(node):
        return None
    if len(x.users) != 1 or not is_fresh(x):
        return None
    xv = val(x)
    if not isinstance(xv, torch.Tensor):
        return None
    if packet(node.target) is aten.clone:
        if node.kwargs.get("memory_format") not in (None, torch.preserve_format):
            return None
    elif not _only_dtype(node.kwargs, xv) or node.kwargs.get("dtype", xv.dtype) != xv.dtype:
        return None
    return x


COPY_RULES: tuple[Rule, ...] = (
    Rule("expand-of-expand", (aten.expand,), _expand_of_expand),
    Rule("view-of-unsqueeze", tuple(RESHAPES), _view_of_squeeze),
    Rule("widening-round-trip", (aten._to_copy,), _widening_round_trip, removes_copy=True),
    Rule("copy-of-fresh-result", (aten.clone, aten._to_copy), _copy_of_fresh_result),
)

#: canonicalize's copy/view rules (its arithmetic identities excluded) followed by dedupe's own; copy
#: removals meet ``fxopt.ir.rewrite.copy_removal_allowed``'s conditions (applied by ``apply_rules``).
RULES: tuple[Rule, ...] = tuple(r for r in CANONICAL_RULES + COPY_RULES if not set(r.ops) & _ARITHMETIC)


def reduce_copies(program: Program, pass_name: str = "dedupe") -> dict[str, int]:
    """Apply :data:`RULES` to a fixpoint over ``program`` (in place); returns how often each rule fired.
    Nodes left dead by a rewrite (the inner view of a collapsed chain) are left for dead-code elimination."""
    return apply_rules(program, RULES, pass_name)
