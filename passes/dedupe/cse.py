"""Common subexpression elimination for `dedupe`.

Two call_function nodes compute the same value when they call the same pure op on the same inputs: the key
is ``(target, args, kwargs)`` with every input node replaced by its canonical representative and every
constant tagged with its type (``1``, ``1.0`` and ``True`` differ; ``0.0`` and ``-0.0`` differ). Walking the
graph in order, a node whose key was seen before is replaced by the first node with that key, which comes
earlier and so dominates every use. In a flat, unrolled graph this is also loop-invariant code motion: work
that each unrolled step repeats on values that do not change between steps (projections of the encoder
output, ``permute(weight)`` of every linear) is computed once, in the first step, and reused.

Not merged:

- impure nodes (``node.is_impure()``), ops with a mutable schema, and random ops
  (``torch.Tag.nondeterministic_seeded``), plus ``empty*`` (its contents are undefined);
- anything reading a value that some op in the graph mutates, or an alias (view) of one: its result depends
  on where it sits relative to the mutation;
- two nodes whose memory both reach the graph output, directly or through views (merging would make two
  outputs share memory);
- nodes with arguments that are not plain data (unhashable objects).
"""
from __future__ import annotations

import operator

import torch
import torch.fx

from fxopt.ir.aliasing import aliases_input, reaches_output
from fxopt.ir.program import target_name
from fxopt.ir.structure import Unhashable, value_key

_EMPTY = {torch.ops.aten.empty, torch.ops.aten.empty_like, torch.ops.aten.empty_strided,
          torch.ops.aten.new_empty, torch.ops.aten.new_empty_strided}
# Plain Python callables that FX graphs use on SymInts and tuples; all pure.
_PURE_BUILTINS = {operator.getitem, operator.add, operator.sub, operator.mul, operator.truediv,
                  operator.floordiv, operator.mod, operator.pow, operator.neg, operator.eq, operator.ne,
                  operator.lt, operator.le, operator.gt, operator.ge}


def is_cse_candidate(node: torch.fx.Node) -> bool:
    """True when ``node`` is a call_function whose result depends only on its arguments (pure,
    deterministic, not mutating, not an uninitialised allocation)."""
    if node.op != "call_function":
        return False
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        if target._schema.is_mutable or torch.Tag.nondeterministic_seeded in target.tags:
            return False
        if target.overloadpacket in _EMPTY:
            return False
        return not node.is_impure()
    try:
        return target in _PURE_BUILTINS
    except TypeError:
        return False


def mutated_nodes(graph: torch.fx.Graph) -> set[torch.fx.Node]:
    """Nodes whose value some op in ``graph`` writes in place, together with every node aliasing them
    (views of them, what they are views of); empty for a functional graph."""
    written: list[torch.fx.Node] = []
    for node in graph.nodes:
        target = node.target
        if node.op != "call_function" or not isinstance(target, torch._ops.OpOverload):
            continue
        if not target._schema.is_mutable:
            continue
        for i, arg in enumerate(target._schema.arguments):
            if arg.alias_info is None or not arg.alias_info.is_write:
                continue
            value = node.kwargs.get(arg.name) if arg.kwarg_only or i >= len(node.args) else node.args[i]
            if isinstance(value, torch.fx.Node):
                written.append(value)
    if not written:
        return set()
    # alias classes: a view op's result aliases its (first) input
    parent: dict[torch.fx.Node, torch.fx.Node] = {}

    def find(n):
        while parent.get(n, n) is not n:
            n = parent[n]
        return n

    for node in graph.nodes:
        if node.op == "call_function" and aliases_input(node) and node.args \
                and isinstance(node.args[0], torch.fx.Node):
            parent[find(node)] = find(node.args[0])
    roots = {find(n) for n in written}
    return {n for n in graph.nodes if find(n) in roots}


def eliminate_common_subexpressions(graph: torch.fx.Graph) -> dict[str, int]:
    """Merge duplicate pure call_function nodes of ``graph`` into their first occurrence (in place);
    returns how many nodes were removed per op name (``{"aten.permute.default": 12}``; empty when the
    graph has no duplicates, in which case it is left untouched)."""
    mutated = mutated_nodes(graph)
    seen: dict[tuple, torch.fx.Node] = {}
    removed: dict[str, int] = {}
    for node in list(graph.nodes):
        if not is_cse_candidate(node) or node in mutated:
            continue
        if any(a in mutated for a in node.all_input_nodes):
            continue
        try:
            key = (node.target, value_key(node.args), value_key(node.kwargs))
            hash(key)
        except (Unhashable, TypeError):
            continue
        first = seen.get(key)
        if first is None:
            seen[key] = node
            continue
        if reaches_output(node) and reaches_output(first):
            continue  # two outputs (or views of them) would become one tensor
        node.replace_all_uses_with(first)
        graph.erase_node(node)
        name = target_name(node.target)
        removed[name] = removed.get(name, 0) + 1
    return removed
