"""Stacked-weight experts for the `moe` pass: finding them, and the static form for fixed-shape compilers.

transformers 5.x (Mixtral, Qwen2-MoE, OLMoE, ...) keeps a layer's experts as stacked 3-D parameters and runs
them routed already: the (token, slot) pairs are sorted by expert id, ``histc`` counts each expert's rows,
``cumsum`` gives their ends, and each linear is one grouped matmul over the sorted rows (captured as
``fxopt::grouped_mm``, see ``ir/capture/library_ops.py``). Such a layer needs no fusing; what it needs is a
form each target can run:

- the reference backend runs ``fxopt::grouped_mm`` on ATen's grouped-matmul kernel, and the XLA lowering
  lowers it to ``lax.ragged_dot``: both keep it as it is;
- TensorRT and Neuron compile fixed shapes from a fixed operator list that has no grouped matmul: for them
  each ``grouped_mm`` becomes :func:`static_grouped_mm`, every row times every expert's matrix (one ``bmm``)
  and each row's own product kept by a one-hot mask — E times the FLOPs, static shapes, exact; and
  ``histc`` of integer ids becomes a one-hot count (:func:`histc_as_count`).

A *stacked group* is the set of grouped matmuls that share one ``ends`` tensor (a layer's gate/up and down
projections): the unit the report counts.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx

from fxopt.ir.patterns import Node, Op, Var, match
from fxopt.passes.moe.match import val
from fxopt.passes.moe.rewrite import Builder

aten = torch.ops.aten
GROUPED_MM = torch.ops.fxopt.grouped_mm.default

# int64 <-> int32 casts of the ends, which HF's op contract adds:  ends  ==  _to_copy(ends, dtype)
_CAST = Op(aten._to_copy.default, Var("x", Node))


@dataclass
class StackedGroup:
    """The grouped matmuls of one expert layer (graph order), their shared ``ends`` and the expert count."""

    matmuls: list
    ends: torch.fx.Node
    experts: int


def _root(node: torch.fx.Node) -> torch.fx.Node:
    """``node`` without the dtype casts around it."""
    while True:
        b = match(_CAST, node)
        if b is None or set(node.kwargs) - {"dtype"}:
            return node
        node = b["x"]


def stacked_groups(gm: torch.fx.GraphModule) -> list[StackedGroup]:
    """The stacked-weight expert layers of ``gm``: ``fxopt::grouped_mm`` nodes grouped by their ``ends``
    (through casts), in graph order."""
    groups: dict[torch.fx.Node, StackedGroup] = {}
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target is not GROUPED_MM:
            continue
        ends = _root(node.args[2])
        w = val(node.args[1])
        group = groups.setdefault(ends, StackedGroup([], ends, int(w.shape[0]) if w is not None else 0))
        group.matmuls.append(node)
    return list(groups.values())


def static_grouped_mm(gm: torch.fx.GraphModule, node: torch.fx.Node, pass_name: str) -> torch.fx.Node:
    """Insert the static form of one ``fxopt::grouped_mm(rows [N, in], W [E, in, out], ends [E])`` before
    it; returns the node computing the same ``[N, out]``.

    Identity: row i belongs to group ``g_i = #{e : ends[e] <= i}`` (the groups are consecutive and end at
    ``ends``), so ``grouped_mm(rows, W, ends)[i] == (rows[i] @ W[g_i]) == sum_e [g_i == e] * (rows @ W[e])[i]``
    — a batched matmul over every expert and a one-hot mask (exact while the other experts' products are
    finite: ``0 * inf`` would be NaN); a row past ``ends[-1]`` (none, by the op's contract) would get zeros
    in both."""
    rows, weights, ends = node.args
    b = Builder(gm, node, node, pass_name)
    n_rows = val(rows).shape[0]
    experts = val(weights).shape[0]
    ends = _uncast_ends(b, ends)
    positions = b.op(aten.arange.start_step, 0, n_rows, dtype=val(ends).dtype)
    passed = b.op(aten.ge.Tensor, b.op(aten.unsqueeze.default, positions, 1), b.op(aten.unsqueeze.default, ends, 0))
    group = b.op(aten.sum.dim_IntList, b.op(aten._to_copy.default, passed, dtype=torch.int64), [1])   # [N]
    classes = b.op(aten.arange.start_step, 0, experts, dtype=torch.int64)
    onehot = b.op(aten.eq.Tensor, b.op(aten.unsqueeze.default, classes, 1), b.op(aten.unsqueeze.default, group, 0))
    mask = b.op(aten.unsqueeze.default, b.op(aten._to_copy.default, onehot, dtype=val(rows).dtype), 2)  # [E, N, 1]
    expanded = b.op(aten.expand.default, b.op(aten.unsqueeze.default, rows, 0), [experts, n_rows, val(rows).shape[1]])
    every = b.op(aten.bmm.default, expanded, weights)                                  # [E, N, out]
    return b.op(aten.sum.dim_IntList, b.op(aten.mul.Tensor, every, mask), [0])


# integer ends of float counts:  cumsum(counts, dtype=int32)  ==  cumsum(counts) for integral counts < 2**24
_INT_CUMSUM = Op(aten.cumsum.default, Var("counts", Node), 0, name="cumsum")


def _uncast_ends(b: Builder, ends: torch.fx.Node) -> torch.fx.Node:
    """``ends``, or the float cumsum it was cast from (histc counts are floats, and fixed-shape compilers
    take no integer cumsum), so the static form compares row positions with it in float."""
    found = match(_INT_CUMSUM, _root(ends))
    if found is None or set(found["cumsum"].kwargs) - {"dtype"}:
        return ends
    counts = found["counts"]   # histc counts are whole numbers: the float cumsum equals the integer one
    if counts.op != "call_function" or counts.target is not aten.histc.default:
        return ends
    return b.op(aten.cumsum.default, found["counts"], 0)


# histc of integer ids:  histc(_to_copy(ids), bins=E, min=0, max=E-1)
_HISTC_OF_IDS = Op(aten.histc.default, Op(aten._to_copy.default, Var("ids", Node), name="cast"),
                   Var("bins", int), Var("lo"), Var("hi"))


def histc_as_count(gm: torch.fx.GraphModule, node: torch.fx.Node, pass_name: str) -> torch.fx.Node | None:
    """The one-hot count replacing ``histc`` of integer expert ids, inserted before ``node``; None when
    ``node`` is another histc.

    Identity: for integers ``x`` in ``[0, E-1]``, histc's bin ``floor(x * E / (E - 1))`` is ``x`` (and
    ``E - 1`` for the top edge, which histc puts in the last bin), and values outside are not counted, so
    ``histc(float(ids), E, 0, E-1) == sum(ids[:, None] == arange(E), 0)`` as floats."""
    b = match(_HISTC_OF_IDS, node)
    if b is None or set(b["cast"].kwargs) - {"dtype"}:
        return None
    ids, bins = b["ids"], b["bins"]
    if val(ids) is None or val(ids).dtype not in (torch.int64, torch.int32) or bins < 2 or \
            float(b["lo"]) != 0 or float(b["hi"]) != bins - 1:
        return None
    build = Builder(gm, node, node, pass_name)
    flat = build.op(aten.view.default, ids, [-1])
    classes = build.op(aten.arange.start_step, 0, bins, dtype=val(ids).dtype)
    hits = build.op(aten.eq.Tensor, build.op(aten.unsqueeze.default, flat, 1), build.op(aten.unsqueeze.default, classes, 0))
    counts = build.op(aten.sum.dim_IntList, build.op(aten._to_copy.default, hits, dtype=val(node).dtype), [0])
    return counts
