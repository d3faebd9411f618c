"""`stable-sort`: every ``sort`` whose order of equal keys is unspecified becomes the stable sort.

An unstable sort leaves the order of equal keys open, and runtimes fill it differently: PyTorch's CPU sort
reorders ties, ONNX ``TopK`` (what the exporter makes of a sort; TensorRT's too) and XLA's sort keep them in
index order. A partition that sorts many equal keys — MoE routing sorts each token's expert id — then gives
other intermediate values on the accelerator than PyTorch, and the backend's per-partition check refuses it,
although the model's result does not depend on the order. Making the sort stable fixes one order for every
runtime. The stable order is one of the orders the unstable sort may return, but PyTorch's eager run may have
returned another: a model whose *outputs* show the order of ties (it returns the sort's indices) fails this
pass's verification, and should be run without it. In the tensorrt default pipeline.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from fxopt.ir.program import Program
from fxopt.ir.rewrite import Rule, apply_rules
from fxopt.passes.base import Pass, PassResult

aten = torch.ops.aten


def _stable_sort(node, graph):
    # sort(x, dim, descending) == sort(x, stable=True, dim, descending), up to the order of equal keys
    if node.target is not aten.sort.default:
        return None
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", -1)
    descending = node.args[2] if len(node.args) > 2 else node.kwargs.get("descending", False)
    with graph.inserting_before(node):
        return graph.call_function(aten.sort.stable, (node.args[0],),
                                   {"stable": True, "dim": dim, "descending": descending})


RULES = (Rule("stable-sort", (aten.sort,), _stable_sort),)


@dataclass(frozen=True)
class StableSort(Pass):
    """Make every unstable ``sort`` stable, so that every runtime orders equal keys alike."""

    name = "stable-sort"

    def run(self, program: Program) -> PassResult:
        """Rewrite each unstable sort; report how many, or say that there were none."""
        fired = apply_rules(program, RULES, self.name)
        count = sum(fired.values())
        if not count:
            return PassResult(modified=False, details={"sorts": 0},
                              notes=["no unstable sort in the graph: nothing to do"])
        return PassResult(modified=True, details={"sorts": count})
