"""`dedupe`: identical tensors, common subexpressions and redundant copies — within a model and across models.

One pass, three parts, each behind an option:

- ``weights``: identical parameters, buffers and constants (same dtype, shape, strides, device and bytes;
  content hash confirmed bytewise, any size) become one attribute (:mod:`fxopt.passes.dedupe.weights`);
- ``copies``: clone / ``_to_copy`` / expand / view chains that do nothing are removed, view chains collapse
  (`canonicalize`'s copy rules plus :data:`fxopt.passes.dedupe.copies.COPY_RULES`);
- ``cse``: duplicate pure ATen nodes merge into their first occurrence, which in an unrolled decoder hoists
  step-invariant work into the first step (:mod:`fxopt.passes.dedupe.cse`).

Copies and CSE alternate until neither finds anything (a collapsed view chain can expose a duplicate), then
dead nodes and unread attributes are removed, so a second run changes nothing.

``across_models``: used by :func:`optimize_many`, which runs a pipeline over several programs and then makes
equal tensors of different programs one tensor object (the pass itself sees one program at a time).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.fx

from fxopt.errors import InputError
from fxopt.ir.program import Program
from fxopt.passes.base import Pass, PassResult
from fxopt.passes.dce import DeadCodeElimination
from fxopt.passes.dedupe.copies import reduce_copies
from fxopt.passes.dedupe.cse import eliminate_common_subexpressions
from fxopt.passes.dedupe.weights import dedupe_program_weights, share_weights, unique_weight_bytes
from fxopt.passes.dedupe.many import OptimizedPrograms, optimize_many

__all__ = ["Dedupe", "optimize_many", "OptimizedPrograms", "graph_views"]

_MAX_ROUNDS = 8


@dataclass(frozen=True)
class Dedupe(Pass):
    """Merge identical weights, remove redundant copies, eliminate common subexpressions (see module doc)."""

    name = "dedupe"
    weights: bool = True
    cse: bool = True
    copies: bool = True
    across_models: bool = True

    def run(self, program: Program) -> PassResult:
        """Rewrite ``program`` in place — its root graph and every GraphModule it holds (``unroll``'s
        partitions, step graphs) — and return a PassResult whose details are ``tensors_merged``,
        ``get_attr_merged``, ``weight_bytes_before/after/saved`` (unique bytes over all graphs),
        ``cse_nodes_removed`` (with ``cse_ops``: per op), ``copies_removed`` (with ``copy_rules``: per rule),
        ``dead_nodes_removed``, ``nodes_before/after`` (all graphs) and ``graphs``."""
        if program.graph_module is None:
            raise InputError("pass 'dedupe': the program has no graph; capture the model first")
        views = graph_views(program)
        nodes_before = sum(v.num_nodes() for v in views)
        bytes_before = unique_weight_bytes(views)
        totals: dict[str, Any] = {"tensors_merged": 0, "get_attr_merged": 0, "dead_nodes_removed": 0}
        fired: dict[str, int] = {}
        cse_ops: dict[str, int] = {}
        changed = False
        for view in views:
            graph_changed = self._run_graph(view, totals, fired, cse_ops)
            if graph_changed and view is not program:
                view.graph_module.recompile()  # the manager recompiles the root only
            changed |= graph_changed
        if self.weights and len(views) > 1:
            shared = share_weights(views)   # one tensor object for equal weights of different graphs
            totals["tensors_merged"] += shared
            changed |= shared > 0
        bytes_after = unique_weight_bytes(views)
        details = dict(totals)
        details.update({
            "weight_bytes_before": bytes_before,
            "weight_bytes_after": bytes_after,
            "weight_bytes_saved": bytes_before - bytes_after,
            "cse_nodes_removed": sum(cse_ops.values()),
            "cse_ops": dict(sorted(cse_ops.items(), key=lambda kv: (-kv[1], kv[0]))),
            "copies_removed": sum(fired.values()),
            "copy_rules": dict(sorted(fired.items())),
            "nodes_before": nodes_before,
            "nodes_after": sum(v.num_nodes() for v in views),
            "graphs": len(views),
        })
        return PassResult(modified=changed, details=details)

    def _run_graph(self, view: Program, totals: dict, fired: dict, cse_ops: dict) -> bool:
        """Weights, then copies and CSE to a fixpoint, then DCE, on one graph; adds to the counters;
        returns whether the graph changed."""
        changed = False
        if self.weights:
            stats = dedupe_program_weights(view)
            totals["tensors_merged"] += stats.tensors_merged
            totals["get_attr_merged"] += stats.get_attr_merged
            changed |= stats.tensors_merged > 0 or stats.get_attr_merged > 0
        for _ in range(_MAX_ROUNDS):
            round_changed = False
            if self.copies:
                for rule, count in reduce_copies(view, self.name).items():
                    fired[rule] = fired.get(rule, 0) + count
                    round_changed = True
            if self.cse:
                for op, count in eliminate_common_subexpressions(view.graph).items():
                    cse_ops[op] = cse_ops.get(op, 0) + count
                    round_changed = True
            changed |= round_changed
            if not round_changed:
                break
        if changed:
            totals["dead_nodes_removed"] += DeadCodeElimination().run(view).details.get("nodes_removed", 0)
        return changed


def graph_views(program: Program) -> list[Program]:
    """``program`` itself, then a Program view of every GraphModule inside its module tree (partitions and
    step graphs made by other passes), each once, in module order."""
    views = [program]
    seen = {id(program.graph_module)}
    for _, module in program.graph_module.named_modules():
        if isinstance(module, torch.fx.GraphModule) and id(module) not in seen:
            seen.add(id(module))
            views.append(Program(graph_module=module, example_inputs=(), name=program.name))
    return views
