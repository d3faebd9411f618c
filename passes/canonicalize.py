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
from typing import Callable

import torch
import torch.fx

from fxopt.ir import provenance, shapes
from fxopt.ir.aliasing import alias_root, aliases_input, is_dense, is_fresh, reaches_output
from fxopt.ir.program import Program
from fxopt.passes.base import Pass, PassResult
from fxopt.passes.dce import DeadCodeElimination

aten = torch.ops.aten


@dataclass(frozen=True)
class Rule:
    """A rewrite: ``ops`` it applies to (overload packets), ``fn(node, graph) -> replacement | None``, and
    whether it removes a copy, i.e. replaces a fresh result by an existing tensor (see
    :func:`copy_removal_allowed` for the conditions such rewrites must meet)."""

    name: str
    ops: tuple
    fn: Callable[[torch.fx.Node, torch.fx.Graph], torch.fx.Node | None]
    removes_copy: bool = False


def _val(n):
    return n.meta.get("val") if isinstance(n, torch.fx.Node) else None


def _dim_key(d):
    """A comparable form of a dim: ints as ints, SymInts (or nodes holding one) by their sympy expression."""
    if isinstance(d, torch.fx.Node):
        d = d.meta.get("val")
    if isinstance(d, torch.SymInt):
        return ("sym", str(d.node.expr))
    if isinstance(d, int):
        return ("int", d)
    return ("unknown", id(d))


def _same_shape(shape, val) -> bool:
    if not isinstance(val, torch.Tensor) or len(shape) != val.dim():
        return False
    return all(_dim_key(a) == _dim_key(b) and _dim_key(a)[0] != "unknown" for a, b in zip(shape, val.shape))


def _input(node):
    return node.args[0] if node.args and isinstance(node.args[0], torch.fx.Node) else None


# --- the rules --------------------------------------------------------------------------------------------
def _noop_view(node, graph):
    # view(x, x.shape) == x
    x = _input(node)
    return x if x is not None and _same_shape(node.args[1], _val(x)) else None


def _view_of_view(node, graph):
    # view(view(x, s1), s2) == view(x, s2)
    x = _input(node)
    if x is None or x.op != "call_function" or _packet(x.target) not in _VIEWS:
        return None
    inner = _input(x)
    if inner is None:
        return None
    with graph.inserting_before(node):
        new = graph.call_function(node.target, (inner, *node.args[1:]), dict(node.kwargs))
    return new


def _identity_permute(node, graph):
    # permute(x, [0, 1, ..., n-1]) == x
    dims = list(node.args[1])
    return _input(node) if dims == list(range(len(dims))) else None


def _permute_of_permute(node, graph):
    # permute(permute(x, p), q) == permute(x, [p[i] for i in q])
    x = _input(node)
    if x is None or x.op != "call_function" or _packet(x.target) is not aten.permute:
        return None
    inner_dims, outer_dims = list(x.args[1]), list(node.args[1])
    n = len(inner_dims)
    composed = [inner_dims[d % n] % n for d in outer_dims]
    with graph.inserting_before(node):
        return graph.call_function(aten.permute.default, (x.args[0], composed))


def _noop_expand(node, graph):
    # expand(x, x.shape) == x
    x = _input(node)
    return x if x is not None and _same_shape(node.args[1], _val(x)) else None


def _noop_clone(node, graph):
    # clone(x) == x in a functional graph (contiguous_format only when x is already contiguous)
    x = _input(node)
    val = _val(x)
    if x is None or not isinstance(val, torch.Tensor):
        return None
    fmt = node.kwargs.get("memory_format")
    if fmt in (None, torch.preserve_format):
        return x
    if fmt == torch.contiguous_format and _known_contiguous(x):
        return x
    return None


def _noop_to_copy(node, graph):
    # _to_copy(x, dtype=x.dtype, device=x.device) == x
    x = _input(node)
    val = _val(x)
    if x is None or not isinstance(val, torch.Tensor):
        return None
    kw = dict(node.kwargs)
    if kw.pop("dtype", val.dtype) != val.dtype:
        return None
    device = kw.pop("device", None)
    if device is not None and torch.device(device) != val.device:
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
    return _input(node)


def _full_slice(node, graph):
    # slice(x, d, 0, end >= size(d), 1) == x
    x = _input(node)
    val = _val(x)
    if x is None or not isinstance(val, torch.Tensor):
        return None
    args = list(node.args) + [None] * (5 - len(node.args))
    dim, start, end, step = args[1] or 0, args[2] or 0, args[3], args[4] or 1
    size = val.shape[dim]
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
    return _input(node) if len(node.args) > 1 and _is_scalar(node.args[1], 1) else None


def _add_zero(node, graph):
    # x + 0 == x, x - 0 == x  (alpha does not matter when the other term is 0)
    return _input(node) if len(node.args) > 1 and _is_scalar(node.args[1], 0) else None


def _div_one(node, graph):
    # x / 1 == x
    if node.kwargs.get("rounding_mode"):
        return None
    return _input(node) if len(node.args) > 1 and _is_scalar(node.args[1], 1) else None


def _is_scalar(value, number) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == number


def _known_contiguous(node: torch.fx.Node) -> bool:
    """True when ``node``'s value is surely contiguous at run time.

    Strides recorded for graph inputs come from the example inputs, and callers may pass other layouts
    (a transposed tensor, say), so a graph input — or a view of one — is never known to be contiguous."""
    source = node
    while source.op == "call_function" and _packet(source.target) in _ALIASING and source.args \
            and isinstance(source.args[0], torch.fx.Node):
        source = source.args[0]
    if source.op == "placeholder":
        return False
    try:
        return bool(node.meta["val"].is_contiguous())
    except Exception:  # noqa: BLE001 - undecidable for some symbolic shapes: assume not
        return False


def _packet(target):
    return getattr(target, "overloadpacket", None)


_VIEWS = {aten.view, aten._unsafe_view, aten.reshape}
# ops whose result may share memory (and so layout) with their first input
_ALIASING = _VIEWS | {aten.permute, aten.expand, aten.slice, aten.select, aten.unsqueeze, aten.squeeze, aten.t,
                      aten.transpose, aten.alias, aten.detach, aten.as_strided, aten.squeeze}

RULES: tuple[Rule, ...] = (
    Rule("noop-view", (aten.view, aten._unsafe_view, aten.reshape), _noop_view),
    Rule("view-of-view", (aten.view, aten._unsafe_view, aten.reshape), _view_of_view),
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


def _rules_by_op(rules) -> dict:
    table: dict = {}
    for rule in rules:
        for op in rule.ops:
            table.setdefault(op, []).append(rule)
    return table


def _compatible(node: torch.fx.Node, replacement: torch.fx.Node) -> bool:
    a, b = _val(node), _val(replacement)
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        return False
    return a.dtype == b.dtype and a.device == b.device and _same_shape(tuple(a.shape), b)


def _erase_with_dead_inputs(graph: torch.fx.Graph, node: torch.fx.Node) -> None:
    """Erase ``node`` and then every pure op it leaves without users, so later rules (which look at users)
    see the graph as it will be, and one run reaches what a second run would."""
    stack = [node]
    while stack:
        n = stack.pop()
        if n.users or getattr(n, "_erased", False):
            continue
        inputs = n.all_input_nodes
        graph.erase_node(n)
        stack.extend(i for i in inputs if i.op == "call_function" and not i.is_impure())


def copy_removal_allowed(node: torch.fx.Node) -> bool:
    """Whether ``node``'s fresh result may be replaced by its input ``x`` (a copy, or ``x * 1``...):

    - not when the graph returns ``node``'s memory, directly or through views, unless ``x`` is a fresh
      result that only ``node`` uses: the output would alias an input, a weight or another value, so a
      caller writing into it would change them;
    - not when ``x`` is not dense (a strided slice, an expand): the result was, and a view after it may need
      that layout;
    - not when a view uses ``node`` and ``x`` is a graph input or a view of one: the strides recorded for an
      input are those of the example, and callers may pass other layouts.
    """
    x = _input(node)
    if x is None or not isinstance(_val(x), torch.Tensor):
        return False
    if reaches_output(node) and not (is_fresh(x) and len(x.users) == 1):
        return False
    if not is_dense(_val(x)):
        return False
    if alias_root(x).op == "placeholder" and any(u.op == "call_function" and aliases_input(u) for u in node.users):
        return False
    return True


def apply_rules(program: Program, rules=RULES, pass_name: str = "canonicalize") -> dict[str, int]:
    """Apply ``rules`` to a fixpoint over ``program``'s graph; returns how often each rule fired."""
    gm = program.graph_module
    graph = gm.graph
    table = _rules_by_op(rules)
    fired: dict[str, int] = {}
    changed = True
    while changed:
        changed = False
        for node in list(graph.nodes):
            if node.op != "call_function" or getattr(node, "_erased", False):
                continue
            for rule in table.get(_packet(node.target), ()):
                if rule.removes_copy and not copy_removal_allowed(node):
                    continue
                replacement = rule.fn(node, graph)
                if replacement is None or replacement is node:
                    continue
                if "val" not in replacement.meta:
                    shapes.infer(gm, replacement)
                    provenance.derive(replacement, node, pass_name)
                if not _compatible(node, replacement):
                    if not replacement.users and replacement is not node:
                        graph.erase_node(replacement)
                    continue
                node.replace_all_uses_with(replacement)
                _erase_with_dead_inputs(graph, node)
                fired[rule.name] = fired.get(rule.name, 0) + 1
                changed = True
                break
    return fired


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
