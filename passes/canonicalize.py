"""`canonicalize`: local rewrites to a canonical form — no-op views and copies removed, view and permute
chains collapsed, arithmetic identities dropped.

Rules are data: each :class:`Rule` names the ops it matches and a function that returns the node (or a
new node) to use instead, or None when the rule does not apply. One identity per rule, in its comment.
A rewrite is applied only when the replacement has exactly the node's shape and dtype, and a copy is never
removed where it feeds the graph output (the caller would otherwise get an alias of an input or of
another output). Rules run to a fixpoint, so a second run changes nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
import torch
import torch.fx

from fxopt.ir.aliasing import RESHAPES, alias_root
from fxopt.ir.nodes import packet, val
from fxopt.ir.program import Program
from fxopt.ir.rewrite import Rule, apply_rules, first_input, same_shape
from fxopt.passes.base import Pass, PassResult
from fxopt.passes.dce import DeadCodeElimination

aten = torch.ops.aten


# --- the rules --------------------------------------------------------------------------------------------
def _noop_view(node, graph):
    # view(x, x.shape) == x
    x = first_input(node)
    return x if x is not None and same_shape(node.args[1], val(x)) else None


def _view_of_view(node, graph):
    # view(view(x, s1), s2) == view(x, s2)
    x = first_input(node)
    if x is None or x.op != "call_function" or packet(x.target) not in RESHAPES:
        return None
    inner = first_input(x)
    if inner is None:
        return None
    with graph.inserting_before(node):
        new = graph.call_function(node.target, (inner, *node.args[1:]), dict(node.kwargs))
    return new


def _identity_permute(node, graph):
    # permute(x, [0, 1, ..., n-1]) == x
    dims = list(node.args[1])
    return first_input(node) if dims == list(range(len(dims))) else None


def _permute_of_permute(node, graph):
    # permute(permute(x, p), q) == permute(x, [p[i] for i in q])
    x = first_input(node)
    if x is None or x.op != "call_function" or packet(x.target) is not aten.permute:
        return None
    inner_dims, outer_dims = list(x.args[1]), list(node.args[1])
    n = len(inner_dims)
    composed = [inner_dims[d % n] % n for d in outer_dims]
    with graph.inserting_before(node):
        return graph.call_function(aten.permute.default, (x.args[0], composed))


def _noop_expand(node, graph):
    # expand(x, x.shape) == x
    x = first_input(node)
    return x if x is not None and same_shape(node.args[1], val(x)) else None


def _noop_clone(node, graph):
    # clone(x) == x in a functional graph (contiguous_format only when x is already contiguous)
    x = first_input(node)
    v = val(x)
    if x is None or not isinstance(v, torch.Tensor):
        return None
    fmt = node.kwargs.get("memory_format")
    if fmt in (None, torch.preserve_format):
        return x
    if fmt == torch.contiguous_format and _known_contiguous(x):
        return x
    return None


def _noop_to_copy(node, graph):
    # _to_copy(x, dtype=x.dtype, device=x.device) == x
    x = first_input(node)
    v = val(x)
    if x is None or not isinstance(v, torch.Tensor):
        return None
    kw = dict(node.kwargs)
    if kw.pop("dtype", v.dtype) != v.dtype:
        return None
    device = kw.pop("device", None)
    if device is not None and torch.device(device) != v.device:
        return None
    if kw.pop("layout", torch.strided) != torch.strided or kw.pop("pin_memory", None):
        return None
    fmt = kw.pop("memory_format", None)
    if fmt not in (None, torch.preserve_format) and not (fmt == torch.contiguous_format and _known_contiguous(x)):
        return None
    kw.pop("non_blocking", None)
    return x if not kw else None


def _alias(node, graph):
    # alias(x) == detach(x) == x at inference
    return first_input(node)


def _full_slice(node, graph):
    # slice(x, d, 0, end >= size(d), 1) == x
    x = first_input(node)
    v = val(x)
    if x is None or not isinstance(v, torch.Tensor):
        return None
    args = list(node.args) + [None] * (5 - len(node.args))
    dim, start, end, step = args[1] or 0, args[2] or 0, args[3], args[4] or 1
    size = v.shape[dim]
    if start != 0 or step != 1:
        return None
    if end is None:
        return x
    if isinstance(end, int) and not isinstance(size, torch.SymInt) and end >= size:
        return x
    if isinstance(end, int) and end >= 2**62:  # INT64 max used for "to the end"
        return x
    return None


def _mul_one(node, graph):
    # x * 1 == x
    return first_input(node) if len(node.args) > 1 and _is_scalar(node.args[1], 1) else None


def _add_zero(node, graph):
    # x + 0 == x, x - 0 == x  (alpha does not matter when the other term is 0)
    return first_input(node) if len(node.args) > 1 and _is_scalar(node.args[1], 0) else None


def _div_one(node, graph):
    # x / 1 == x
    if node.kwargs.get("rounding_mode"):
        return None
    return first_input(node) if len(node.args) > 1 and _is_scalar(node.args[1], 1) else None


def _is_scalar(value, number) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == number


def _known_contiguous(node: torch.fx.Node) -> bool:
    """True when ``node``'s value is surely contiguous at run time.

    Strides recorded for graph inputs come from the example inputs, and callers may pass other layouts
    (a transposed tensor, say), so a graph input — or a view of one — is never known to be contiguous."""
    source = alias_root(node)
    if source.op == "placeholder":
        return False
    try:
        return bool(node.meta["val"].is_contiguous())
    except Exception:  # noqa: BLE001 - undecidable for some symbolic shapes: assume not
        return False


RULES: tuple[Rule, ...] = (
    Rule("noop-view", tuple(RESHAPES), _noop_view),
    Rule("view-of-view", tuple(RESHAPES), _view_of_view),
    Rule("identity-permute", (aten.permute,), _identity_permute),
    Rule("permute-of-permute", (aten.permute,), _permute_of_permute),
    Rule("noop-expand", (aten.expand,), _noop_expand),
    Rule("noop-slice", (aten.slice,), _full_slice),
    Rule("noop-clone", (aten.clone,), _noop_clone, removes_copy=True),
    Rule("noop-to-copy", (aten._to_copy,), _noop_to_copy, removes_copy=True),
    Rule("alias", (aten.alias, aten.detach), _alias, removes_copy=True),
    Rule("mul-one", (aten.mul,), _mul_one, removes_copy=True),
    Rule("add-zero", (aten.add, aten.sub), _add_zero, removes_copy=True),
    Rule("div-one", (aten.div,), _div_one, removes_copy=True),
)


@dataclass(frozen=True)
class Canonicalize(Pass):
    """Remove no-op views/copies, collapse view and permute chains, drop x*1, x+0, x/1."""

    name = "canonicalize"

    def run(self, program: Program) -> PassResult:
        """Rewrite to a fixpoint; report how often each rule fired and how many nodes were removed."""
        fired = apply_rules(program, RULES, self.name)
        if not fired:
            return PassResult(modified=False, details={"rewrites": 0})
        cleanup = DeadCodeElimination().run(program)
        return PassResult(modified=True, details={
            "rewrites": sum(fired.values()),
            "rules": dict(sorted(fired.items())),
            "nodes_removed": cleanup.details.get("nodes_removed", 0),
        })
