"""`fold-constants`: compute at compile time what depends only on weights and constants.

A call_function node is constant when it is pure, not random, and all its node inputs are weights
(get_attr) or constant nodes. Constant chains are evaluated once with real tensors; each constant node that
feeds non-constant work is replaced by a new weight. Kept as they are:

- pure layout ops (view, permute, expand, slice...) at the frontier: free at run time, and folding
  ``permute(weight)`` would hide the ``linear`` pattern other passes and backends look for;
- results much larger than their inputs (``expand``/``repeat``/``full`` of a big shape): folding would
  trade a cheap op for stored bytes (limit: the inputs' bytes, or 4 KiB for ops with no tensor input).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx
import torch.utils._pytree as pytree

from fxopt.ir import provenance
from fxopt.ir.nodes import packet
from fxopt.ir.aliasing import reaches_output
from fxopt.ir.program import Program, fetch_attr
from fxopt.ir.program import fresh_attr_name, set_attr
from fxopt.passes.base import Pass, PassResult
from fxopt.passes.dce import DeadCodeElimination

LAYOUT_OPS = {
    torch.ops.aten.view, torch.ops.aten._unsafe_view, torch.ops.aten.reshape, torch.ops.aten.permute,
    torch.ops.aten.expand, torch.ops.aten.slice, torch.ops.aten.select, torch.ops.aten.unsqueeze,
    torch.ops.aten.squeeze, torch.ops.aten.t, torch.ops.aten.transpose, torch.ops.aten.alias,
    torch.ops.aten.detach, torch.ops.aten.as_strided,
}
_SMALL_CREATION_BYTES = 4096


def _is_foldable_op(node: torch.fx.Node) -> bool:
    if node.op != "call_function" or node.is_impure():
        return False
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        if torch.Tag.nondeterministic_seeded in target.tags:
            return False
        return True
    return target.__name__ == "getitem" if hasattr(target, "__name__") else False


def _nbytes(value) -> int:
    leaves = pytree.tree_leaves(value)
    return sum(t.numel() * t.element_size() for t in leaves if isinstance(t, torch.Tensor))


@dataclass(frozen=True)
class FoldConstants(Pass):
    """Evaluate weight-only subgraphs once and store their results as new weights."""

    name = "fold-constants"

    def run(self, program: Program) -> PassResult:
        """Fold constant frontier nodes; report nodes folded and the bytes of new weights."""
        gm = program.graph_module
        values: dict[torch.fx.Node, object] = {}
        for node in gm.graph.nodes:
            if node.op == "get_attr":
                value = fetch_attr(gm, node.target)
                if isinstance(value, torch.Tensor):
                    values[node] = value
            elif node.op == "call_function" and all(a in values for a in node.all_input_nodes) \
                    and _is_foldable_op(node):
                args, kwargs = pytree.tree_map_only(torch.fx.Node, lambda a: values[a], (node.args, node.kwargs))
                with torch.no_grad():
                    values[node] = node.target(*args, **kwargs)

        # Walk users before producers. A constant node is folded when something that will still run at
        # run time uses it: a non-constant node, the output, or a constant node that was not folded.
        folded = 0
        new_bytes = 0
        runs_at_runtime: set[torch.fx.Node] = set()
        for node in reversed(list(gm.graph.nodes)):
            if node not in values or node.op == "get_attr":
                continue
            if all(user in values and user not in runs_at_runtime for user in node.users):
                continue  # interior of a constant chain that is folded further down
            value = values[node]
            # A returned value must stay a fresh tensor per call: folding it would hand the caller the
            # program's own weight, and writing into the result would change every later call.
            if reaches_output(node) or not self._worth_folding(node, value, values):
                runs_at_runtime.add(node)
                continue
            attr = fresh_attr_name(gm, f"_folded_{node.name}")
            set_attr(gm, attr, value.detach().clone().contiguous())
            with gm.graph.inserting_before(node):
                const = gm.graph.get_attr(attr)
            const.meta["val"] = node.meta.get("val")
            provenance.derive(const, node, self.name)
            node.replace_all_uses_with(const)
            folded += 1
            new_bytes += _nbytes(value)
        if not folded:
            return PassResult(modified=False, details={"nodes_folded": 0})
        cleanup = DeadCodeElimination().run(program)
        return PassResult(modified=True, details={
            "nodes_folded": folded,
            "nodes_removed": cleanup.details.get("nodes_removed", 0),
            "new_weight_bytes": new_bytes,
            "weight_bytes_freed": cleanup.details.get("weight_bytes_freed", 0),
        })

    @staticmethod
    def _worth_folding(node: torch.fx.Node, value, values) -> bool:
        if not isinstance(value, torch.Tensor) or packet(node.target) in LAYOUT_OPS:
            return False
        limit = _nbytes([values[a] for a in node.all_input_nodes]) or _SMALL_CREATION_BYTES
        return _nbytes(value) <= limit
