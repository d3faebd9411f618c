"""Rewriting for the `moe` pass: stacked weights, the batched expert chain, dense groups and horizontal fusion.

Weights are stacked once, at compile time, into new get_attr tensors (never modified in place):
linear step ``i`` of E experts becomes ``W [E, in, out]`` (the transposed weights, contiguous, so ``bmm``
reads them directly) and ``b [E, 1, out]``. Matching lives in :mod:`fxopt.passes.moe.match`.
"""
from __future__ import annotations

import operator

import torch
import torch.fx
import torch.utils._pytree as pytree

from fxopt.ir import provenance, shapes
from fxopt.ir.aliasing import aliases_input
from fxopt.ir.program import set_attr
from fxopt.ir.program import concrete_int, fetch_attr, fresh_attr_name
from fxopt.passes.moe.match import SPLITS, Chain, Linear, out_shape, packet, val

aten = torch.ops.aten


class Builder:
    """Adds nodes before a fixed point of the graph, each with provenance and an inferred ``val``."""

    def __init__(self, gm: torch.fx.GraphModule, anchor: torch.fx.Node, origin: torch.fx.Node, pass_name: str):
        """``anchor``: new nodes go right before it; ``origin``: the node they derive provenance from."""
        self.gm, self.anchor, self.origin, self.pass_name = gm, anchor, origin, pass_name
        self.created: list[torch.fx.Node] = []

    def op(self, target, *args, **kwargs) -> torch.fx.Node:
        """Insert ``target(*args, **kwargs)``; returns the new node (shape inferred at once)."""
        with self.gm.graph.inserting_before(self.anchor):
            node = self.gm.graph.call_function(target, args, kwargs)
        provenance.derive(node, self.origin, self.pass_name)
        shapes.infer(self.gm, node)
        self.created.append(node)
        return node

    def attr(self, stem: str, tensor: torch.Tensor) -> torch.fx.Node:
        """Bind ``tensor`` under a fresh name starting with ``stem``; returns its get_attr node."""
        name = fresh_attr_name(self.gm, stem)
        set_attr(self.gm, name, tensor)
        with self.gm.graph.inserting_before(self.anchor):
            node = self.gm.graph.get_attr(name)
        provenance.derive(node, self.origin, self.pass_name)
        shapes.infer(self.gm, node)
        self.created.append(node)
        return node


def stacked_weights(gm: torch.fx.GraphModule, chains: list[Chain], step: int) -> tuple:
    """``(W [E, in, out], b [E, 1, out] or None)`` for linear step ``step`` of ``chains``: the experts'
    weights transposed and stacked (new tensors; the experts' own tensors are untouched)."""
    lins = [c.steps[step] for c in chains]
    w = torch.stack([_in_out(fetch_attr(gm, lin.weight.target).detach(), lin) for lin in lins]).contiguous()
    if lins[0].bias is None:
        return w, None
    b = torch.stack([fetch_attr(gm, lin.bias.target).detach() for lin in lins]).unsqueeze(1).contiguous()
    return w, b


def _in_out(weight: torch.Tensor, lin: Linear) -> torch.Tensor:
    """``weight`` as [in, out]: transposed for an ``nn.Linear`` weight, as it is for a direct matmul's."""
    return weight.t() if lin.transposed else weight


def _emit_unit(b: Builder, chains: list[Chain], rows: torch.fx.Node, linear) -> torch.fx.Node:
    """Emit the unit of ``chains`` (one structural key) once over ``rows``: ``linear(i, h, w, bias)`` emits
    linear step ``i`` on ``h`` with the stacked weights; elementwise ops and combines are copied, splits run
    along the last dim, row views are nothing. Returns the unit's result."""
    lead = chains[0]
    env: dict = {}

    def get(node):
        base, _ = lead.resolve(node)
        return rows if base is lead.source else env[base]

    for i, step in enumerate(lead.steps):
        if isinstance(step, Linear):
            w, bias = stacked_weights(b.gm, chains, i)
            env[step.node] = linear(i, get(step.x), w, bias)
        elif step.target is operator.getitem:
            env[step] = b.op(operator.getitem, get(step.args[0]), step.args[1])
        elif packet(step.target) in SPLITS:
            env[step] = b.op(step.target, get(step.args[0]), step.args[1], -1)
        else:
            args = [get(a) if isinstance(a, torch.fx.Node) else a for a in step.args]
            env[step] = b.op(step.target, *args, **step.kwargs)
    return get(lead.output)


def batched_chain(b: Builder, chains: list[Chain], x3: torch.fx.Node, tag: str) -> torch.fx.Node:
    """Emit the experts' unit once over ``x3`` [E, rows, in] (the source's rows, per expert): ``baddbmm``
    (``bmm`` without bias, or ``bmm`` + ``add`` at a symbolic row count) per linear, the rest as
    :func:`_emit_unit` does (every value is [E, rows, f]). Returns the [E, rows, out] result."""

    def linear(i, h, w, bias):
        w_node = b.attr(f"{tag}_w{i}", w)
        if bias is not None and isinstance(val(h).shape[1], int):
            # bias [E, 1, out] broadcast inside the matmul: one op and one pass over h fewer than bmm + add
            return b.op(aten.baddbmm.default, b.attr(f"{tag}_b{i}", bias), h, w_node)
        # baddbmm's meta kernel cannot broadcast to an unbacked row count (the routed capacity), and
        # expanding the bias first measured slower than bmm + add
        h = b.op(aten.bmm.default, h, w_node)
        return h if bias is None else b.op(aten.add.Tensor, h, b.attr(f"{tag}_b{i}", bias))

    return _emit_unit(b, chains, x3, linear)


GROUPED_MM_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def grouped_mm_ok(chains: list[Chain]) -> str | None:
    """Why ATen's ``_grouped_mm`` kernel cannot run the experts' unit (``fxopt::grouped_mm`` would fall back
    to one ``mm`` per expert), or None when it can: ATen must have it, the dtype must be one its CPU kernel
    takes, and every feature width a multiple of 16 bytes (its stride rule)."""
    if not hasattr(aten, "_grouped_mm"):
        return "this PyTorch has no aten._grouped_mm"
    lead = chains[0]
    v = val(lead.source)
    if v is None or v.dtype not in GROUPED_MM_DTYPES:
        return f"dtype {getattr(v, 'dtype', '?')} is not one of float32/bfloat16/float16"
    widths = [val(lead.source).shape[-1]]
    for step in lead.steps:
        node = step.node if isinstance(step, Linear) else step
        out = val(node)
        if isinstance(out, torch.Tensor):
            widths.append(out.shape[-1])
        if isinstance(step, Linear):
            widths.extend(val(step.weight).shape)
    if any(not isinstance(w, int) or (w * v.itemsize) % 16 for w in widths):
        return f"feature widths {sorted(set(map(str, widths)))} are not all multiples of {16 // v.itemsize}"
    return None


def grouped_chain(b: Builder, chains: list[Chain], rows: torch.fx.Node, skey: torch.fx.Node,
                  offs: torch.fx.Node, tag: str) -> torch.fx.Node:
    """Emit the experts' unit once over ``rows`` [N, in], sorted by expert (``skey``: each row's expert;
    ``offs``: int32 end offset of each expert's rows): every linear is one grouped matmul over the stacked
    weights (``fxopt::grouped_mm``, see :mod:`fxopt.ir.ops`: expert e multiplies rows ``offs[e-1]:offs[e]``
    by its own matrix; no padding) plus each row's expert bias, the rest as :func:`_emit_unit` does.
    Returns the [N, out] result, rows in ``rows``' order."""

    def linear(i, h, w, bias):
        # [E, in, out] contiguous: measured 1.2-2.5x faster than the transposed layout on CPU
        h = b.op(torch.ops.fxopt.grouped_mm.default, h, b.attr(f"{tag}_w{i}", w), offs)
        if bias is None:
            return h
        per_row = b.op(aten.index_select.default, b.attr(f"{tag}_b{i}", bias.squeeze(1).contiguous()), 0, skey)
        return b.op(aten.add.Tensor, h, per_row)

    return _emit_unit(b, chains, rows, linear)


def fuse_dense(gm: torch.fx.GraphModule, chains: list[Chain], tag: str, pass_name: str) -> int:
    """Replace E units that read the same source with one batched unit over the source's rows expanded to
    [E, rows, in] (a [B, T, d] source is read through its first linear's own ``view`` to [B*T, d]); each
    expert's result becomes ``select(Y, 0, e)``, viewed back to the exit's shape. Returns the number of
    matmuls removed."""
    lead = chains[0]
    shape = out_shape(lead)
    flat = lead.source if val(lead.source).dim() == 2 else lead.steps[0].x
    anchor = _first_use_after_all(chains)
    b = Builder(gm, anchor, lead.steps[0].node, pass_name)
    e = len(chains)
    x3 = b.op(aten.expand.default, b.op(aten.unsqueeze.default, flat, 0), [e, -1, -1])
    y = batched_chain(b, chains, x3, tag)
    if shape is not None and not val(y).is_contiguous():
        y = b.op(aten.clone.default, y, memory_format=torch.contiguous_format)
    for i, chain in enumerate(chains):
        out = b.op(aten.select.int, y, 0, i)
        if shape is not None:
            out = b.op(aten.view.default, out, shape)
        chain.output.replace_all_uses_with(out)
    removed = sum(len(c.linears) for c in chains) - len(chains[0].linears)
    return removed


def _first_use_after_all(chains: list[Chain]) -> torch.fx.Node:
    """The node before which the fused chain can go: the earliest user of any chain output (every chain
    node precedes it, and the chains read only the source and weights, which come earlier still)."""
    order = {n: i for i, n in enumerate(chains[0].source.graph.nodes)}
    users = [u for c in chains for u in c.output.users]
    return min(users, key=order.__getitem__)


def fuse_horizontal(gm: torch.fx.GraphModule, lins: list[Linear], tag: str, pass_name: str) -> int:
    """Replace parallel linears reading the same 2-D input with one wider linear over the concatenated
    weights plus a column slice per linear. Returns the number of matmuls removed."""
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    first = min(lins, key=lambda lin: order[lin.node])
    anchor = first.node
    b = Builder(gm, anchor, anchor, pass_name)
    weights = [fetch_attr(gm, lin.weight.target).detach() for lin in lins]
    w = torch.cat(weights, 0).t().contiguous()          # [in, sum(out)]
    w_node = b.attr(f"{tag}_w", w)
    if lins[0].bias is not None:
        bias = torch.cat([fetch_attr(gm, lin.bias.target).detach() for lin in lins], 0)
        wide = b.op(aten.addmm.default, b.attr(f"{tag}_b", bias), first.x, w_node)
    else:
        wide = b.op(aten.mm.default, first.x, w_node)
    start = 0
    for lin, weight in zip(lins, weights):
        end = start + weight.shape[0]
        part = b.op(aten.slice.Tensor, wide, 1, start, end)
        if _needs_contiguous(gm, lin.node, part):
            part = b.op(aten.clone.default, part, memory_format=torch.contiguous_format)
        lin.node.replace_all_uses_with(part)
        start = end
    return len(lins) - 1


def _needs_contiguous(gm, old: torch.fx.Node, part: torch.fx.Node) -> bool:
    """True when a view of ``old`` — directly or after other views — cannot view the strided slice ``part``
    (each aliasing user is replayed, so ``unflatten`` then ``view(-1)`` is caught). The replay runs on meta
    tensors at the example sizes: fake tensors' ``view`` does not check strides."""
    return _aliasing_users_fail(old, _as_meta(val(part)))


def _as_meta(value):
    """A meta tensor with ``value``'s sizes (example values of symbolic dims), strides and dtype; SymInts
    as ints; anything else unchanged."""
    if isinstance(value, torch.Tensor):
        return torch.empty_strided([concrete_int(d) for d in value.shape],
                                   [concrete_int(d) for d in value.stride()], dtype=value.dtype, device="meta")
    if isinstance(value, torch.SymInt):
        return concrete_int(value)
    return value


def _aliasing_users_fail(node: torch.fx.Node, meta: torch.Tensor) -> bool:
    for user in node.users:
        if user.op != "call_function" or not user.args or user.args[0] is not node or not aliases_input(user):
            continue
        args, kwargs = pytree.tree_map_only(torch.fx.Node, lambda n: n.meta.get("val"), (user.args[1:], user.kwargs))
        args, kwargs = pytree.tree_map(_as_meta, (args, kwargs))
        try:
            out = user.target(meta, *args, **kwargs)
        except Exception:  # noqa: BLE001 - any failure means the strides do not allow this view
            return True
        if isinstance(out, torch.Tensor) and _aliasing_users_fail(user, out):
            return True
    return False
