"""The rewrite engine passes share: rules as data, applied to a fixpoint.

A :class:`Rule` names the operator packets it matches and a function ``fn(node, graph)`` returning the node
to use instead (an existing one, or one it just inserted), or None when it does not apply; one identity per
rule, in its comment (as tinygrad's PatternMatcher and xDSL's rewrite patterns keep them). :func:`apply_rules`
runs a rule set to a fixpoint and applies a replacement only when it has exactly the node's dtype, device and
shape; a rule that ``removes_copy`` (replaces a fresh result by an existing tensor) fires only where
:func:`copy_removal_allowed` says no caller can tell. ``canonicalize`` and ``dedupe`` are built on it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.fx

from fxopt.ir import provenance, shapes
from fxopt.ir.aliasing import alias_root, aliases_input, is_dense, is_fresh, reaches_output
from fxopt.ir.nodes import packet, val
from fxopt.ir.program import Program

__all__ = ["Rule", "apply_rules", "copy_removal_allowed", "same_shape", "dim_key", "first_input"]


@dataclass(frozen=True)
class Rule:
    """A rewrite: ``ops`` it applies to (overload packets), ``fn(node, graph) -> replacement | None``, and
    whether it removes a copy, i.e. replaces a fresh result by an existing tensor (see
    :func:`copy_removal_allowed` for the conditions such rewrites must meet)."""

    name: str
    ops: tuple
    fn: Callable[[torch.fx.Node, torch.fx.Graph], torch.fx.Node | None]
    removes_copy: bool = False


def dim_key(d):
    """A comparable form of a dim: ints as ints, SymInts (or nodes holding one) by their sympy expression."""
    if isinstance(d, torch.fx.Node):
        d = d.meta.get("val")
    if isinstance(d, torch.SymInt):
        return ("sym", str(d.node.expr))
    if isinstance(d, int):
        return ("int", d)
    return ("unknown", id(d))


def same_shape(shape, value) -> bool:
    """True when ``shape`` (ints, SymInts or nodes holding them) provably is tensor ``value``'s shape."""
    if not isinstance(value, torch.Tensor) or len(shape) != value.dim():
        return False
    return all(dim_key(a) == dim_key(b) and dim_key(a)[0] != "unknown" for a, b in zip(shape, value.shape))


def first_input(node):
    """The node's first argument when it is a node, else None."""
    return node.args[0] if node.args and isinstance(node.args[0], torch.fx.Node) else None


def _rules_by_op(rules) -> dict:
    table: dict = {}
    for rule in rules:
        for op in rule.ops:
            table.setdefault(op, []).append(rule)
    return table


def _compatible(node: torch.fx.Node, replacement: torch.fx.Node) -> bool:
    a, b = val(node), val(replacement)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):   # multi-output ops (sort, topk)
        return len(a) == len(b) and all(_same_type(x, y) for x, y in zip(a, b))
    return _same_type(a, b)


def _same_type(a, b) -> bool:
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        return False
    return a.dtype == b.dtype and a.device == b.device and same_shape(tuple(a.shape), b)


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
    x = first_input(node)
    if x is None or not isinstance(val(x), torch.Tensor):
        return False
    if reaches_output(node) and not (is_fresh(x) and len(x.users) == 1):
        return False
    if not is_dense(val(x)):
        return False
    if alias_root(x).op == "placeholder" and any(u.op == "call_function" and aliases_input(u) for u in node.users):
        return False
    return True


def apply_rules(program: Program, rules, pass_name: str) -> dict[str, int]:
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
            for rule in table.get(packet(node.target), ()):
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


