"""`dce`: remove nodes whose results nobody uses, and the weights only they used."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx

from fxopt.ir.program import Program, delete_attr, fetch_attr
from fxopt.passes.base import Pass, PassResult


def is_pure(node: torch.fx.Node) -> bool:
    """True when removing an unused ``node`` cannot change behaviour (no mutation or other side effect)."""
    if node.op in ("placeholder", "output"):
        return False
    if node.op == "get_attr":
        return True
    return not node.is_impure()


def _storage(value) -> int | None:
    return value.untyped_storage().data_ptr() if isinstance(value, torch.Tensor) else None


@dataclass(frozen=True)
class DeadCodeElimination(Pass):
    """Remove pure nodes with no users (repeatedly, so whole dead chains go) and the weights that only
    dead nodes read. Mutating ops (``copy_``, ``index_put_``...) are kept."""

    name = "dce"

    def run(self, program: Program) -> PassResult:
        """Erase dead nodes in reverse order; report nodes removed and weight bytes freed."""
        gm = program.graph_module
        removed = 0
        freed_targets: set[str] = set()
        for node in reversed(list(gm.graph.nodes)):
            if node.users or not is_pure(node):
                continue
            if node.op == "get_attr":
                freed_targets.add(node.target)
            gm.graph.erase_node(node)
            removed += 1
        still_used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
        live_storages = {_storage(fetch_attr(gm, t)) for t in still_used}
        freed_bytes = 0
        freed_storages = set()
        for target in sorted(freed_targets - still_used):
            value = fetch_attr(gm, target)
            key = _storage(value)
            if isinstance(value, torch.Tensor) and key not in live_storages and key not in freed_storages:
                freed_storages.add(key)
                freed_bytes += value.untyped_storage().nbytes()
            delete_attr(gm, target)
        return PassResult(modified=removed > 0,
                          details={"nodes_removed": removed, "weight_bytes_freed": freed_bytes})
