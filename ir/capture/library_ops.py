"""Operators of model libraries, replaced by ATen/fxopt ops at capture or refused there with one line.

A model library can register its own operators (transformers 5.x runs MoE experts through
``torch.ops.transformers.grouped_mm_fallback``). A graph calling one runs only where that library is
imported, so a saved artifact would fail at load in a clean process. :func:`replace_library_ops` rewrites
each such call by a rule from :data:`RULES` (data: the op's qualified name and a function building the
replacement from the node's arguments) and raises InputError naming the node, op and source line for a
library op with no rule — at capture, never at load.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.fx

import fxopt.ir.ops  # noqa: F401 - registers torch.ops.fxopt.*, the replacements' targets
from fxopt.errors import InputError
from fxopt.ir import provenance

# Namespaces every fxopt process has: ATen, prims, Python's operator module, fxopt's own.
_OWN = {"aten", "prims", "fxopt", "_operator"}


def _grouped_mm_fallback(graph: torch.fx.Graph, node: torch.fx.Node) -> torch.fx.Node:
    # transformers::grouped_mm_fallback(input [S, in] sorted by expert, weight [E, in, out], offs [E] cumulative
    # row ends) == fxopt::grouped_mm(input, weight, offs as int32): the same segment matmul contract
    rows, weights, offs = node.args[:3]
    ends = graph.call_function(torch.ops.aten._to_copy.default, (offs,), {"dtype": torch.int32})
    ends.meta = {**offs.meta, "val": offs.meta["val"].to(torch.int32)} if "val" in offs.meta else dict(offs.meta)
    if "provenance" in node.meta:
        ends.meta["provenance"] = node.meta["provenance"]
    out = graph.call_function(torch.ops.fxopt.grouped_mm.default, (rows, weights, ends))
    out.meta = dict(node.meta)
    return out


# qualified op name (``namespace::name``) -> replacement builder (graph, node) -> new node, inserted before node
RULES: dict[str, Callable[[torch.fx.Graph, torch.fx.Node], torch.fx.Node]] = {
    "transformers::grouped_mm_fallback": _grouped_mm_fallback,
}


def replace_library_ops(gm: torch.fx.GraphModule, source: str) -> list[str]:
    """Rewrite every call of a library operator in ``gm`` by its rule in :data:`RULES`; returns one note per
    replaced op name ("transformers::grouped_mm_fallback ×2 → fxopt::grouped_mm"). Raises InputError for
    a library op with no rule, naming the node, the op, the model's line and what to do."""
    counts: dict[str, int] = {}
    replaced_by: dict[str, str] = {}
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
            continue
        qualified = node.target._schema.name
        if qualified.split("::")[0] in _OWN:
            continue
        rule = RULES.get(qualified)
        if rule is None:
            at = f" ({provenance.source_of(node, '')})" if provenance.source_of(node, "") else ""
            raise InputError(
                f"{source}: node '{node.name}'{at} calls {qualified}, an operator its library registered; a "
                "saved artifact could not run it without that library and fxopt has no rule replacing it — "
                "choose the library's plain PyTorch implementation (Hugging Face: experts_implementation="
                "\"eager\" / attn_implementation=\"eager\" in the config), or wrap the op in plain torch code")
        with graph.inserting_before(node):
            new = rule(graph, node)
        node.replace_all_uses_with(new)
        graph.erase_node(node)
        counts[qualified] = counts.get(qualified, 0) + 1
        replaced_by[qualified] = new.target._schema.name if isinstance(new.target, torch._ops.OpOverload) \
            else str(new.target)
    if counts:
        gm.recompile()
    return [f"{n} call{'s' if n > 1 else ''} of {name} replaced by {replaced_by[name]} (the same computation), "
            "so the artifact runs without the library" for name, n in counts.items()]
