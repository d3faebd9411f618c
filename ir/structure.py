"""Structural keys: when two arguments, nodes or whole graphs are the same computation.

:func:`value_key` is a hashable, type-tagged form of a node argument (``1`` and ``1.0`` and ``True`` stay
apart, floats compare by their bits), with nodes mapped through a function the caller gives (common
subexpression elimination maps each node to its representative). :func:`graph_key` is the key of a whole
graph up to node names and the order of independent nodes: every node keyed by its op, target and its
arguments' keys, weights (``get_attr``) by dtype, shape, strides and content — two graphs with equal keys
compute the same thing the same way, as TVM's ``assert_structural_equal`` holds. Tests compare a rewritten graph with its expected form through it (``tests/rewriting.py``).
"""
from __future__ import annotations

import hashlib
from typing import Any, Callable

import torch
import torch.fx

from fxopt.ir.nodes import op_name
from fxopt.ir.tensor_identity import content_key

__all__ = ["Unhashable", "value_key", "graph_key"]


class Unhashable(Exception):
    """An argument type :func:`value_key` has no key for (the node is then never merged)."""


def value_key(value: Any, node_key: Callable[[torch.fx.Node], Any] = lambda n: n) -> Any:
    """A hashable, type-tagged form of a node argument; FX nodes become ``("node", node_key(node))``.
    Raises :class:`Unhashable` for an argument type it does not know."""
    if isinstance(value, torch.fx.Node):
        return ("node", node_key(value))
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return ("int", value)
    if isinstance(value, float):
        return ("float", value.hex())
    if isinstance(value, complex):
        return ("complex", value.real.hex(), value.imag.hex())
    if value is None or isinstance(value, str):
        return (type(value).__name__, value)
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(value_key(v, node_key) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple(sorted((str(k), value_key(v, node_key)) for k, v in value.items())))
    if isinstance(value, (torch.dtype, torch.device, torch.layout, torch.memory_format)):
        return (type(value).__name__, str(value))
    if isinstance(value, slice):
        return ("slice", value_key(value.start, node_key), value_key(value.stop, node_key),
                value_key(value.step, node_key))
    if value is Ellipsis:
        return ("ellipsis",)
    if isinstance(value, (torch._ops.OpOverload, torch._ops.OpOverloadPacket, torch._ops.HigherOrderOperator)):
        return ("op", op_name(value))
    raise Unhashable(type(value).__name__)


def graph_key(gm: torch.fx.GraphModule) -> tuple:
    """The structural key of ``gm``'s graph (see the module docstring): ``(key of the output, sorted keys of
    every node)``, each node's key a digest of its op, target and argument keys (Merkle-style, so node
    names and the order of independent nodes do not matter, dead nodes do). Nested graph modules that nodes
    call or read are keyed recursively."""
    digest: dict[torch.fx.Node, str] = {}
    placeholders = 0
    out = None
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            target: Any = placeholders
            placeholders += 1
        elif node.op == "get_attr":
            obj = gm
            for part in str(node.target).split("."):
                obj = getattr(obj, part)
            target = graph_key(obj) if isinstance(obj, torch.fx.GraphModule) else (
                content_key(obj) if isinstance(obj, torch.Tensor) else type(obj).__name__)
        elif node.op == "call_module":
            target = graph_key(gm.get_submodule(str(node.target)))
        elif node.op == "call_function":
            target = op_name(node.target)
        else:
            target = node.op
        row = (node.op, target, value_key(tuple(node.args), digest.__getitem__),
               value_key(dict(node.kwargs), digest.__getitem__))
        digest[node] = hashlib.sha1(repr(row).encode()).hexdigest()
        if node.op == "output":
            out = digest[node]
    return out, tuple(sorted(digest.values()))
