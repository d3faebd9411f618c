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

import operator
from dataclasses import dataclass

import torch
import torch.fx

from fxopt.ir.patterns import Node, Op, Var, match
from fxopt.passes.moe.match import val
from fxopt.passes.moe.rewrite import Builder
from fxopt.passes.moe.routing import ids_in_range, metadata_asserts

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


# ---------------------------------------------------------------------------------------- reference form
# the sorted ids of a routing:  getitem(sort(ids, dim=-1/0, descending=False), 0)  (stable or not)
_SORTED = Op(operator.getitem, Op((aten.sort.default, aten.sort.stable), Var("ids", Node), name="sort"), 0)
_HISTC = Op(aten.histc.default, Op(aten._to_copy.default, Var("sorted", Node), name="cast"), Var("bins", int),
            Var("lo"), Var("hi"), name="histc")
_CUMSUM = Op(aten.cumsum.default, Var("counts", Node), 0, name="cumsum")


def _strip_views(node: torch.fx.Node) -> torch.fx.Node:
    while node.op == "call_function" and node.target in (aten.view.default, aten._unsafe_view.default,
                                                         aten.reshape.default):
        node = node.args[0]
    return node


def ends_by_search(gm: torch.fx.GraphModule, ends: torch.fx.Node, pass_name: str) -> torch.fx.Node | None:
    """``searchsorted(sorted_ids, arange(E), right=True, out_int32=True)`` inserted before ``ends`` when
    ``ends`` is HF's ``int32(cumsum(histc(float(sorted_ids), E, 0, E-1)))`` of ids provably in ``0..E-1``;
    None otherwise.

    Identity: for ascending ids in ``[0, E-1]``, ``cumsum(histc(ids, E, 0, E-1))[e] = #{ids <= e}``, which
    is the right insertion point of ``e`` in the sorted ids. One search instead of a cast, a histogram, a
    cumsum and a cast (measured 4 us against 28 us at 128 ids)."""
    if val(ends) is None or val(ends).dtype != torch.int32:
        return None
    c = match(_CUMSUM, _root(ends))
    h = match(_HISTC, c["counts"]) if c is not None else None
    s = match(_SORTED, h["sorted"]) if h is not None else None
    if s is None or set(c["cumsum"].kwargs) - {"dtype"} or set(h["cast"].kwargs) - {"dtype"}:
        return None
    sort, bins = s["sort"], h["bins"]
    descending = sort.args[2] if len(sort.args) > 2 and sort.target is aten.sort.default else \
        sort.kwargs.get("descending", False)
    ids = s["ids"]
    if descending or val(ids) is None or val(ids).dim() != 1 or float(h["lo"]) != 0 or float(h["hi"]) != bins - 1 \
            or not ids_in_range(_strip_views(ids), 0, bins):
        return None
    b = Builder(gm, ends, ends, pass_name)
    classes = b.op(aten.arange.start_step, 0, bins, dtype=val(h["sorted"]).dtype)
    return b.op(aten.searchsorted.Tensor, h["sorted"], classes, out_int32=True, right=True)


# HF's unsort:  Y[inv] with inv = index_put(empty([N]), [perm], arange(N)) and perm the sort's indices
_INVERSE = Op(aten.index_put.default, Var("empty", Node), [Var("perm", Node)], Var("positions", Node), name="put")
_UNSORT = Op(aten.index.Tensor, Var("y", Node), [Var("inv", Node)], name="gather")
_PERM = Op(operator.getitem, Op((aten.sort.default, aten.sort.stable), Var("keys", Node)), 1)
_EMPTY_OR_ZEROS = (aten.empty_permuted.default, aten.empty.memory_format, aten.zeros.default)


def unsort_by_copy(gm: torch.fx.GraphModule, node: torch.fx.Node, pass_name: str) -> torch.fx.Node | None:
    """``index_copy(zeros_like(y), 0, perm, y)`` inserted before ``node`` when ``node`` is HF's unsort
    ``y[inverse(perm)]`` (the inverse built by ``index_put`` of ``arange`` at ``perm``); None otherwise.

    Identity: ``perm`` is a sort's index output, a permutation of ``0..N-1``, so ``inv[perm[j]] = j`` and
    ``y[inv][perm[j]] = y[j]``: writing row j of ``y`` to row ``perm[j]`` is the same tensor, with one op
    instead of an empty, an arange, an ``index_put`` and a gather (measured 7 us against 21 us)."""
    g = match(_UNSORT, node)
    p = match(_INVERSE, g["inv"]) if g is not None else None
    if p is None or p["put"].kwargs or len(p["put"].args) > 3 or match(_PERM, p["perm"]) is None:
        return None
    n = val(p["perm"]).shape[0] if val(p["perm"]) is not None and val(p["perm"]).dim() == 1 else None
    positions, empty = p["positions"], p["empty"]
    if n is None or not isinstance(n, int) or empty.op != "call_function" or empty.target not in _EMPTY_OR_ZEROS:
        return None
    if positions.op != "call_function" or positions.target not in (aten.arange.default, aten.arange.start_step) \
            or list(val(positions).shape) != [n] or list(val(empty).shape) != [n] or \
            (positions.target is aten.arange.start_step and positions.args[0] != 0) or \
            (len(positions.args) > 2 and positions.args[2] != 1):
        return None
    y = g["y"]
    if val(y) is None or val(y).dim() < 1 or val(y).shape[0] != n:
        return None
    b = Builder(gm, node, node, pass_name)
    return b.op(aten.index_copy.default, b.op(aten.zeros_like.default, y), 0, p["perm"], y)


def erase_orphan_asserts(start: torch.fx.Node) -> None:
    """Erase ``start`` when nothing uses it, and, through its inputs, every node left with no users or with
    nothing but export's ``_assert_tensor_metadata`` checks (they check what the graph already records, and
    would keep the routing a rewrite replaced alive)."""
    stack = [start]
    while stack:
        node = stack.pop()
        if getattr(node, "_erased", False) or node.op != "call_function":
            continue
        asserts = metadata_asserts(node)
        if asserts and len(asserts) == len(node.users):
            for u in asserts:
                node.graph.erase_node(u)
        if not node.users and not node.is_impure():
            inputs = node.all_input_nodes
            node.graph.erase_node(node)
            stack.extend(inputs)
