"""`moe`: fuse groups of structurally identical experts into batched matmuls, and parallel linears that read
the same input into one wider linear.

- Dense experts (every expert reads the same input; the gate combine stays as it is): the E chains become
  one chain of ``bmm`` over the input expanded to [E, B, in] with weights stacked once at compile time;
  expert e's result is ``select(Y, 0, e)``. FLOPs are unchanged.
- Routed experts (the top-k ModuleList loop ``where(idx == e)`` / ``x[tok]`` / ``index_add``): tokens are
  sorted by expert once and run through one padded ``bmm`` chain, then scattered back with one
  ``index_put`` (see :mod:`fxopt.passes.moe.routing`). The one-hot-mask style (every expert runs on every
  token, masks multiply the outputs) is a dense group.
- Masked top-1 (``out += (idx == e).unsqueeze(-1).to(x.dtype) * expert_e(x)`` with ``idx`` an argmax over
  the E experts): routed, each token through its own expert (:mod:`fxopt.passes.moe.masked`), for the
  reference target; dense elsewhere.
- Stacked-weight experts (transformers 5.x, ``fxopt::grouped_mm`` over rows sorted by expert): counted, kept
  for reference and xla, in a static masked-bmm form for tensorrt and neuron
  (:mod:`fxopt.passes.moe.stacked`).
- Horizontal fusion (``horizontal=true``): linears reading the same 2-D input (or identical views of one
  tensor, as Q/K/V projections of a 3-D input are) become one ``addmm``/``mm`` over concatenated weights
  and a column slice each.

Groups are found by structural hashing (:mod:`fxopt.passes.moe.match`), never by module names; chains
that differ in any op, constant, weight shape or dtype are never merged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from fxopt.errors import InputError
from fxopt.ir import cost
from fxopt.ir.nodes import example_numel
from fxopt.ir.program import Program
from fxopt.ir.targets import FIXED_SHAPE_TARGETS, TARGETS
from fxopt.passes.base import Pass, PassResult
from fxopt.passes.dce import DeadCodeElimination
from fxopt.passes.moe.match import as_linear, group_chains, grow_chain, linears_by_source, packet, val
from fxopt.passes.moe.rewrite import fuse_dense, fuse_horizontal, grouped_mm_ok
from fxopt.passes.moe.masked import fuse_masked, match_masked
from fxopt.passes.moe.routing import check_group, fuse_routed, match_routed
from fxopt.passes.moe.stacked import (ends_by_search, erase_orphan_asserts, histc_as_count, stacked_groups,
                                      static_grouped_mm, unsort_by_copy)

aten = torch.ops.aten
MATMULS = (aten.mm, aten.addmm, aten.bmm, aten.baddbmm)


def count_matmuls(gm: torch.fx.GraphModule) -> int:
    """Number of mm/addmm/bmm/baddbmm nodes in ``gm``'s graph."""
    return sum(1 for n in gm.graph.nodes if n.op == "call_function" and packet(n.target) in MATMULS)


def _flops(gm) -> int | float | str:
    return cost._to_json_number(cost.graph_cost(gm).flops)


@dataclass(frozen=True)
class FuseExperts(Pass):
    """Fuse structurally identical experts into batched matmuls (dense and top-k routed) and parallel
    linears into one wider linear. Options: ``min_experts`` (smallest group fused), ``routing``
    (auto|dense|topk|none: which expert groups to fuse), ``horizontal`` (fuse parallel linears),
    ``max_dense_rows`` (dense groups fuse only when each expert sees at most this many rows; 0 = no limit,
    the default: with the reference runtime writing dead buffers in place, the bmm over [E, B, h] beats
    the per-expert loop at B = 1024 too, where it lost when every intermediate was a fresh allocation —
    see docs/passes/moe.md), ``grouped`` (how routed groups run: ``grouped_mm`` one grouped matmul per
    linear over the rows sorted by expert, no padding (``fxopt::grouped_mm``: PyTorch runtimes only);
    ``padded`` one batched chain over an [E, C, in] buffer; ``segment`` each expert's chain on its own
    slice of the sorted rows; ``auto``: padded while experts average fewer than ``segment_rows`` rows, else unpadded —
    ``grouped_mm`` for a program whose target is the reference backend when its shapes and dtype allow
    (``moe.rewrite.grouped_mm_ok``), ``segment`` otherwise), ``stacked`` (stacked-weight experts:
    ``keep`` their grouped matmuls, ``static`` every expert on every row with a one-hot mask, ``auto``:
    static for tensorrt/neuron), ``masked`` (one-hot top-1 masks: ``routed``, ``dense``, ``auto``: routed
    for the reference target)."""

    name = "moe"
    min_experts: int = 2
    routing: Literal["auto", "dense", "topk", "none"] = "auto"
    horizontal: bool = True
    max_dense_rows: int = 0
    grouped: Literal["auto", "grouped_mm", "padded", "segment", "dense"] = "auto"
    segment_rows: int = 64
    stacked: Literal["auto", "keep", "static"] = "auto"
    masked: Literal["auto", "routed", "dense"] = "auto"

    def __post_init__(self):
        if self.min_experts < 2:
            raise InputError(f"pass 'moe': min_experts={self.min_experts} must be at least 2 "
                             "(one expert has nothing to fuse with)")
        if self.segment_rows < 1:
            raise InputError(f"pass 'moe': segment_rows={self.segment_rows} must be at least 1")

    def run(self, program: Program) -> PassResult:
        """Find and fuse groups; report groups found, experts fused, matmul nodes and FLOPs before/after."""
        gm = program.graph_module
        matmuls_before, flops_before = count_matmuls(gm), _flops(gm)
        notes: list[str] = []
        stats = {"groups_found": 0, "experts_fused": 0, "dense_groups": 0, "routed_groups": 0,
                 "horizontal_groups": 0, "linears_fused": 0, "grouped_mm_groups": 0, "padded_groups": 0,
                 "segment_groups": 0, "static_routed_groups": 0, "stacked_groups": 0, "masked_groups": 0}
        changed = self._stacked_experts(gm, stats, notes, program.target)
        large: set = set()      # first linears of dense experts left alone for their row count
        if self.routing != "none":
            changed |= self._fuse_experts(gm, stats, notes, large, program.target)
        if changed:
            DeadCodeElimination().run(program)
        if self.horizontal:
            changed |= self._fuse_horizontal(gm, stats, large)
        if not changed:
            return PassResult(modified=False, details={**stats, "matmul_nodes_before": matmuls_before,
                                                       "matmul_nodes_after": matmuls_before}, notes=notes)
        DeadCodeElimination().run(program)
        return PassResult(modified=True, notes=notes, details={
            **stats,
            "matmul_nodes_before": matmuls_before, "matmul_nodes_after": count_matmuls(gm),
            "flops_before": flops_before, "flops_after": _flops(gm),
        })

    # ------------------------------------------------------------------------------------------ experts
    def _fuse_experts(self, gm, stats: dict, notes: list, large: set, target: str) -> bool:
        chains = [grow_chain(lin) for lins in linears_by_source(gm.graph).values() for lin in lins]
        changed = False
        if self.routing in ("auto", "topk"):
            routed = [r for r in (match_routed(c) for c in chains) if r is not None]
            taken = {id(r.chain) for r in routed}
            by_group: dict = {}
            for r in routed:
                by_group.setdefault((r.x, r.idx, r.chain.key), []).append(r)
            for members in by_group.values():
                if len(members) < self.min_experts:
                    continue
                stats["groups_found"] += 1
                why = check_group(members)
                if why is not None:
                    notes.append(f"routed group of {len(members)} experts at '{members[0].chain.output.name}' "
                                 f"not fused: {why}")
                    continue
                strategy = self._grouped_strategy(members, target, notes)
                fuse_routed(gm, members, f"moe_routed{stats['routed_groups']}", self.name, strategy)
                stats["static_routed_groups" if strategy == "dense" else f"{strategy}_groups"] += 1
                stats["routed_groups"] += 1
                stats["experts_fused"] += len(members)
                changed = True
            chains = [c for c in chains if id(c) not in taken]
            if changed:   # a fused group's result feeds later experts: grow their chains from the live graph
                chains = [grow_chain(lin) for lins in linears_by_source(gm.graph).values() for lin in lins]
        if self.routing in ("auto", "dense"):
            dense = [c for c in chains if len(c.steps) >= 2 and match_routed(c) is None]
            by_source: dict = {}
            for c in dense:
                by_source.setdefault(c.source, []).append(c)
            for source, members in by_source.items():
                if self.max_dense_rows and _rows(source) > self.max_dense_rows:
                    # nor horizontally: one wide [rows, E*h] output measured ~10% slower than E cache-sized
                    # ones at 1024 rows (benchmarks.moe, dense B=1024)
                    large.update(c.steps[0].node for c in members)
                    notes.append(f"dense experts on '{source.name}' not fused: {_rows(source)} rows per expert "
                                 f"> max_dense_rows={self.max_dense_rows}")
                    continue
                for group in group_chains(members, self.min_experts):
                    stats["groups_found"] += 1
                    masked = self._masked(group, target, notes)
                    if masked is not None:
                        notes.append(f"masked top-1 group of {len(group)} experts at '{group[0].output.name}': "
                                     f"routed (each token through its own expert: 1/{len(group)} of the dense "
                                     "form's expert FLOPs, as grouped matmuls over the tokens sorted by expert)")
                        fuse_masked(gm, masked, f"moe_masked{stats['masked_groups']}", self.name)
                        stats["masked_groups"] += 1
                        stats["experts_fused"] += len(group)
                        changed = True
                        continue
                    fuse_dense(gm, group, f"moe_dense{stats['dense_groups']}", self.name)
                    stats["dense_groups"] += 1
                    stats["experts_fused"] += len(group)
                    changed = True
        return changed

    def _masked(self, group: list, target: str, notes: list):
        """The group's :class:`~fxopt.passes.moe.masked.MaskedGroup` when its experts are combined by one-hot
        masks and are to run routed: ``masked=routed``, or ``auto`` on the reference target (the routed form
        runs ``fxopt::grouped_mm``); None to fuse the group densely."""
        if self.masked == "dense" or (self.masked == "auto" and target != "reference"):
            return None
        found = match_masked(group)
        if found is None:
            return None
        why_not = grouped_mm_ok(group)
        if why_not is not None:
            notes.append(f"masked top-1 experts at '{group[0].output.name}' fused densely, not routed ({why_not})")
            return None
        return found

    def _stacked_experts(self, gm, stats: dict, notes: list, target: str) -> bool:
        """Count the stacked-weight expert layers (already routed: ``fxopt::grouped_mm`` over rows sorted by
        expert) and give them the target's form: kept for the reference backend (ATen's grouped-matmul
        kernel) and xla (``lax.ragged_dot``), the static form for fixed-shape compilers (tensorrt, neuron) or
        when ``stacked=static``. Returns whether the graph changed."""
        groups = stacked_groups(gm)
        if not groups:
            return False
        stats["stacked_groups"] = len(groups)
        stats["groups_found"] += len(groups)
        stats["experts_fused"] += sum(g.experts for g in groups)
        static = self.stacked == "static" or (self.stacked == "auto" and target in FIXED_SHAPE_TARGETS)
        experts = "/".join(sorted({str(g.experts) for g in groups}))
        if not static:
            notes.append(f"{len(groups)} stacked expert layers ({experts} experts, already routed): kept as "
                         f"grouped matmuls (fxopt::grouped_mm) for target '{target}'")
            return target == "reference" and self._reference_routing(gm, groups, notes)
        for group in groups:
            for node in group.matmuls:
                node.replace_all_uses_with(static_grouped_mm(gm, node, self.name))
                gm.graph.erase_node(node)
        histcs = [n for n in gm.graph.nodes if n.op == "call_function" and n.target is aten.histc.default]
        counted = 0
        for node in histcs:
            counts = histc_as_count(gm, node, self.name)
            if counts is not None:
                node.replace_all_uses_with(counts)
                gm.graph.erase_node(node)
                counted += 1
        notes.append(f"{len(groups)} stacked expert layers ({experts} experts): grouped matmuls in the static form "
                     f"for target '{target}' (every expert on every row, masked: {experts}x the FLOPs, fixed "
                     f"shapes), {counted} histc as one-hot counts")
        return True

    def _reference_routing(self, gm, groups: list, notes: list) -> bool:
        """For the reference target, replace HF's routing bookkeeping around stacked experts with fewer
        ATen calls: the ends by one ``searchsorted`` of the sorted ids, the unsort by one ``index_copy``
        (:func:`~fxopt.passes.moe.stacked.ends_by_search`, :func:`~fxopt.passes.moe.stacked.unsort_by_copy`).
        Returns whether the graph changed."""
        searched = copied = 0
        for ends in {m.args[2] for g in groups for m in g.matmuls}:
            new = ends_by_search(gm, ends, self.name)
            if new is not None:
                ends.replace_all_uses_with(new)
                erase_orphan_asserts(ends)
                searched += 1
        for node in [n for n in gm.graph.nodes if n.op == "call_function" and n.target is aten.index.Tensor]:
            new = unsort_by_copy(gm, node, self.name)
            if new is not None:
                node.replace_all_uses_with(new)
                erase_orphan_asserts(node)
                copied += 1
        if searched or copied:
            notes.append(f"routing of the stacked experts: {searched} expert ends by searchsorted (for histc + "
                         f"cumsum), {copied} unsorts by index_copy (for an inverse permutation and a gather)")
        return bool(searched or copied)

    def _grouped_strategy(self, members: list, target: str, notes: list) -> str:
        """``grouped_mm``, ``padded``, ``segment`` or ``dense`` for a routed group: the option, or for
        ``auto``: ``dense`` for xla/tensorrt/neuron (static shapes, so the group stays on the accelerator),
        else padded while the mean (token, slot) pairs per expert at the example size stay below
        ``segment_rows`` (the padding is cheaper than per-expert matmuls of a few rows), else unpadded:
        ``grouped_mm`` for the reference target when ATen's kernel applies (a note says why not),
        ``segment`` otherwise."""
        if self.grouped != "auto":
            return self.grouped
        if target in TARGETS:   # every accelerator target compiles static shapes only
            notes.append(f"routed group of {len(members)} experts at '{members[0].chain.output.name}': dense "
                         f"(every expert on every token, {len(members)}x the expert FLOPs), static shapes for "
                         f"'{target}', whose compiler takes no data-dependent size")
            return "dense"
        if _example_numel(members[0].idx) < self.segment_rows * len(members):
            return "padded"
        if target != "reference":
            return "segment"            # fxopt::grouped_mm runs only where PyTorch runs the graph
        why_not = grouped_mm_ok([m.chain for m in members])
        if why_not is None:
            return "grouped_mm"
        notes.append(f"routed group at '{members[0].chain.output.name}': segment, not grouped_mm ({why_not})")
        return "segment"

    # ------------------------------------------------------------------------------------------ horizontal
    def _fuse_horizontal(self, gm, stats: dict, large: set) -> bool:
        groups: dict = {}
        for node in gm.graph.nodes:
            lin = as_linear(node)
            if lin is None or len(lin.permute.users) != 1 or not node.users or node in large:
                continue
            w = val(lin.weight)
            key = (_input_key(lin.x), str(w.dtype), int(w.shape[1]), lin.bias is None)
            groups.setdefault(key, []).append(lin)
        changed = False
        for lins in groups.values():
            if len(lins) < 2:
                continue
            fuse_horizontal(gm, lins, f"moe_horizontal{stats['horizontal_groups']}", self.name)
            stats["horizontal_groups"] += 1
            stats["linears_fused"] += len(lins)
            changed = True
        return changed


def _rows(source: torch.fx.Node) -> int:
    """Rows of a source: the product of its dims but the last (B*T for [B, T, d]), at the example size
    when dims are symbolic, 0 when a dim has no example size (unbacked)."""
    return _example_numel(source, val(source).shape[:-1])


def _example_numel(node: torch.fx.Node, dims=None) -> int:
    """Product of ``dims`` (default: all of ``node``'s) at the example size, 0 when one has no example size
    (unbacked). Never guards: ``int()`` of a symbolic dim would specialize the program's batch to the
    example's."""
    return example_numel(val(node).shape if dims is None else dims) or 0


def _input_key(x: torch.fx.Node):
    """What a linear reads: the node itself, or (source, shape) for a view, so Q/K/V's separate but
    identical ``view(h, [B*T, d])`` nodes count as one input."""
    if x.op == "call_function" and packet(x.target) in (aten.view, aten._unsafe_view) and \
            isinstance(x.args[0], torch.fx.Node) and all(isinstance(d, int) for d in x.args[1]):
        return ("view", x.args[0], tuple(x.args[1]))
    return x
