"""Masked top-1 experts for the `moe` pass: every expert runs on every token and a one-hot mask keeps one
result per token, rewritten to the routed form (each token through its own expert only).

The form, common where static shapes are wanted::

    idx = logits.argmax(-1)                      # or topk(.., 1) / max(.., dim) indices
    out = sum((idx == e).unsqueeze(-1).to(x.dtype) * expert_e(x) for e in range(E))

Identity: when ``idx`` is the index output of ``argmax``/``topk``/``max`` over a dim of exactly E entries,
every token's id is one of ``0..E-1``, so exactly one mask is 1 and the others are 0: the sum is
``init + expert_{idx[n]}(x[n])`` for each token n (adding exact zeros changes no finite value). The rewrite
sorts the tokens by id (stable), runs the experts' unit once as grouped matmuls over the sorted rows
(``fxopt::grouped_mm``, ``ends`` from ``searchsorted``), and scatters the results back to token order:
1/E of the dense form's FLOPs.
"""
from __future__ import annotations

import numbers
import operator
from dataclasses import dataclass

import torch
import torch.fx

from fxopt.ir.patterns import Any, Node, Op, Var, match
from fxopt.passes.moe.match import Chain, graph_position, out_shape, val
from fxopt.passes.moe.rewrite import Builder, grouped_chain
from fxopt.passes.moe.routing import ids_in_range

aten = torch.ops.aten

# the mask of expert e:  (idx == e)  as x's dtype, with a trailing unit dim for the features
_EQ = Op(aten.eq.Scalar, Var("idx", Node), Var("e", int), name="eq")
_MASK = Any(
    Op(aten._to_copy.default, Op(aten.unsqueeze, _EQ, Var("dim", int)), name="cast"),   # .unsqueeze(-1).to()
    Op(aten.unsqueeze, Op(aten._to_copy.default, _EQ, name="cast"), Var("dim", int)),   # .to().unsqueeze(-1)
    Op(aten._to_copy.default, _EQ, name="cast"),                                         # idx [N, 1] (topk k=1)
)
# expert e's masked result:  mask_e * y_e  ==  y_e * mask_e
_PRODUCT = Op(aten.mul.Tensor, Var("mask", Node), Var("y", Node), commutative=True)
_ZERO_INITS = (aten.zeros_like.default, aten.zeros.default, aten.new_zeros.default)


@dataclass
class MaskedGroup:
    """A dense group whose results are combined by one-hot masks of one ``idx``: the chains by expert id,
    the node holding the masked sum, and the accumulator's initial value (None when it is zero)."""

    chains: list
    idx: torch.fx.Node
    total: torch.fx.Node
    init: torch.fx.Node | None


def _expert_mask(product: torch.fx.Node, chain: Chain):
    """``(idx, expert id)`` when ``product`` multiplies ``chain``'s result by a one-hot mask, else None."""
    b = match(_PRODUCT, product)
    if b is None or b["y"] is not chain.output:
        return None
    m = match(_MASK, b["mask"])
    if m is None or set(m["cast"].kwargs) - {"dtype"}:
        return None
    mask, y = val(b["mask"]), val(chain.output)
    if mask is None or y is None or mask.dim() != y.dim() or mask.shape[-1] != 1 or \
            list(mask.shape[:-1]) != list(y.shape[:-1]) or val(product).shape != y.shape:
        return None
    if "dim" in m and m["dim"] not in (-1, mask.dim() - 1):
        return None
    return m["idx"], m["e"]


def _masked_sum(products: set):
    """``(last add, init or None)`` when ``products`` are summed by one chain of ``add.Tensor`` (each add's
    operands: the previous add, a product, or once at the start an initial value), else None."""
    first = min(products, key=graph_position)
    if len(first.users) != 1:
        return None
    cur = next(iter(first.users))
    if cur.op != "call_function" or cur.target is not aten.add.Tensor or len(cur.args) != 2 or cur.kwargs:
        return None
    left = set(products)
    init = None
    for arg in cur.args:
        if arg in left:
            left.discard(arg)
        elif isinstance(arg, numbers.Number) and arg == 0:
            continue
        elif isinstance(arg, torch.fx.Node) and init is None and arg not in products:
            init = arg
        else:
            return None
    while left:
        if len(cur.users) != 1:
            return None
        nxt = next(iter(cur.users))
        if nxt.op != "call_function" or nxt.target is not aten.add.Tensor or len(nxt.args) != 2 or nxt.kwargs:
            return None
        other = nxt.args[1] if nxt.args[0] is cur else nxt.args[0] if nxt.args[1] is cur else None
        if other not in left:
            return None
        left.discard(other)
        cur = nxt
    total = val(cur)
    if total is None or any(val(p).dtype != total.dtype for p in products):
        return None                       # a promoting sum: the routed result would have another dtype
    if init is not None and init.op == "call_function" and init.target in _ZERO_INITS and \
            val(init) is not None and val(init).dtype == total.dtype:
        init = None
    if init is not None and (val(init) is None or val(init).shape != total.shape):
        return None
    return cur, init


def match_masked(chains: list[Chain]) -> MaskedGroup | None:
    """The :class:`MaskedGroup` of a dense group of experts (equal units on one source) combined by
    one-hot masks of ids provably in ``0..E-1``, else None."""
    by_id: dict[int, Chain] = {}
    idx = None
    products = set()
    for chain in chains:
        users = list(chain.output.users)
        found = _expert_mask(users[0], chain) if len(users) == 1 else None
        if found is None or (idx is not None and found[0] is not idx) or found[1] in by_id:
            return None
        idx = found[0]
        by_id[found[1]] = chain
        products.add(users[0])
    if sorted(by_id) != list(range(len(chains))) or not ids_in_range(idx, 0, len(chains)):
        return None
    summed = _masked_sum(products)
    if summed is None:
        return None
    return MaskedGroup([by_id[e] for e in range(len(chains))], idx, summed[0], summed[1])


def fuse_masked(gm: torch.fx.GraphModule, group: MaskedGroup, tag: str, pass_name: str) -> None:
    """Replace the masked sum with the routed form (see the module doc); the dense experts die."""
    lead = group.chains[0]
    flat = lead.source if val(lead.source).dim() == 2 else lead.steps[0].x
    b = Builder(gm, group.total, lead.steps[0].node, pass_name)
    experts = len(group.chains)
    ids = b.op(aten.view.default, group.idx, [-1])
    ordered = b.op(aten.sort.stable, ids, stable=True)
    skey = b.op(operator.getitem, ordered, 0)
    perm = b.op(operator.getitem, ordered, 1)
    classes = b.op(aten.arange.start_step, 0, experts, dtype=val(ids).dtype)
    ends = b.op(aten.searchsorted.Tensor, skey, classes, out_int32=True, right=True)
    rows = b.op(aten.index_select.default, flat, 0, perm)
    ys = grouped_chain(b, group.chains, rows, skey, ends, tag)
    back = b.op(aten.index_copy.default, b.op(aten.zeros_like.default, ys), 0, perm, ys)
    shape = out_shape(lead)
    result = back if shape is None else b.op(aten.view.default, back, shape)
    if group.init is not None:
        result = b.op(aten.add.Tensor, group.init, result)
    group.total.replace_all_uses_with(result)
