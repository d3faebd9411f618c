"""Top-k routed experts for the `moe` pass: matching the ModuleList loop and rewriting it as one grouped
(padded) batched matmul chain.

The loop ``for e, expert in enumerate(experts): tok, slot = torch.where(idx == e); out = out.index_add(0,
tok, expert(x[tok]) * w[tok, slot, None])`` captures (torch.export, unbacked sizes) as, per expert::

    nz = nonzero(eq(idx, e)); tok = squeeze(slice(nz, 1, 0, 1), [1]); slot = squeeze(slice(nz, 1, 1, 2), [1])
    y = chain(index(x, [tok])); acc = index_put(acc, [tok], mul(y, G(tok, slot)), True)

where ``G`` is any expression of ``tok``/``slot`` and expert-independent nodes (the gate weight). The
rewrite sorts the (token, slot) pairs by expert once (stable, so each expert sees its tokens in the loop's
order), scatters them into a padded ``[E, C, in]`` buffer (C = the largest expert load, known at run time),
runs the chain as ``bmm``s, gathers the rows back, applies ``G`` to all pairs at once and accumulates with
one ``index_put``: the same sums in the same order as the loop. Ids outside the group (tokens routed to no
expert) are skipped, and experts that receive no token simply own padding rows.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import operator

import torch
import torch.fx

from fxopt.ir.patterns import Any, Node, Op, OneOf, Opt, Var, match
from fxopt.ir.program import fetch_attr
from fxopt.passes.moe.match import Chain, packet, val
from fxopt.passes.moe.rewrite import Builder, batched_chain, grouped_chain

aten = torch.ops.aten


@dataclass
class Routed:
    """One routed expert: its chain, the shared token matrix ``x``, the expert-id tensor ``idx``, its id,
    the token/slot index nodes, its ``index_put`` into the accumulator and the gate multiplier (or None).
    ``asserts``: export's ``_assert_tensor_metadata`` checks on the gated product (``.to(x.dtype)`` in HF's
    loop): impure, so the rewrite must erase them or they keep the expert alive."""

    chain: Chain
    x: torch.fx.Node
    idx: torch.fx.Node
    expert_id: int
    tok: torch.fx.Node
    slot: torch.fx.Node | None
    put: torch.fx.Node
    gate: torch.fx.Node | None = None
    gate_first: bool = False
    mul: torch.fx.Node | None = None
    asserts: list = field(default_factory=list)


# The routing forms, as patterns (fxopt.ir.patterns). One identity each, in its comment.
# column j of a nonzero result:  squeeze(slice(nz, 1, j, j + 1), [1])  ==  select(nz, 1, j)
_COLUMN = Any(
    Op(aten.squeeze, Op(aten.slice, Var("nz", Node), 1, Var("j", int), Var("stop", int)), OneOf([1], [-1]),
       where=lambda b: b["stop"] == b["j"] + 1),
    Op(aten.select, Var("nz", Node), 1, Var("j", int)),
)
# the positions where idx == e:  nonzero(eq(idx, e))  (torch.where(idx == e))
_NONZERO = Op(aten.nonzero, Var("cond", Node))
_EXPERT_EQ = Op(aten.eq.Scalar, Var("idx"), Var("e", int))
# HF Mixtral/Switch expert_mask[e], expert_mask = one_hot(idx, E).permute(p); core ATen spells one_hot(idx, E) as
# _to_copy(eq(unsqueeze(idx, -1), arange(0, E)), int64):  select(permute(one_hot(idx, E), p), 0, e)
_ONE_HOT = Op(aten.eq.Tensor, Op(aten.unsqueeze, Var("idx"), Var("dim", int), name="lhs"), Var("classes", Node),
              name="mask")
_ONE_HOT_COLUMN = Op(aten.select, Op(aten.permute, Any(
    Op(aten._to_copy.default, _ONE_HOT, name="copy", where=lambda b: set(b["copy"].kwargs) <= {"dtype"}),
    _ONE_HOT), Var("perm"), name="perm_node"), 0, Var("e", int))
# E classes:  arange(E)  ==  arange(0, E)  ==  arange(0, E, 1)
_ARANGE = Any(Op(aten.arange.default, Var("n", int)), Op(aten.arange, 0, Var("n", int), Opt(1)))
# rows of a 2-D x gathered by one index:  index(x, [tok])  (x[tok])  ==  index(unsqueeze(x, 0), [None, tok])
_GATHERED_ROWS = Any(Op(aten.index.Tensor, Var("x"), [Var("tok", Node)]),
                     Op(aten.index.Tensor, Op(aten.unsqueeze, Var("x"), 0), [None, Var("tok", Node)]))


def _column_of(node: torch.fx.Node):
    """``(nonzero node, column)`` when ``node`` is column j of a nonzero result, else None."""
    b = match(_COLUMN, node)
    return (b["nz"], b["j"]) if b else None


def _routing_of(tok: torch.fx.Node):
    """``(nonzero node, idx node, expert id, slot column or None)`` when ``tok`` is the token column of the
    nonzero of one expert's routing mask, else None. Two mask forms:

    - ``eq(idx, e)`` (``torch.where(idx == e)``): columns (token, slot);
    - ``select(permute(one_hot(idx, E), p), 0, e)`` (HF Mixtral/Switch ``expert_mask[e]`` with
      ``expert_mask = one_hot(idx, E).permute(2, 1, 0)``): the columns follow ``p``, (slot, token) there.
    """
    col = _column_of(tok)
    nonzero = match(_NONZERO, col[0]) if col is not None else None
    if nonzero is None:
        return None
    nz, cond = col[0], nonzero["cond"]
    eq = match(_EXPERT_EQ, cond)
    if eq is not None:
        idx, expert_id, columns = eq["idx"], eq["e"], (0, 1)
    else:
        found = _one_hot_column(cond)
        if found is None:
            return None
        idx, expert_id, columns = found
    v = val(idx)
    if v is None or v.dim() not in (1, 2) or v.dtype not in (torch.int64, torch.int32):
        return None
    if col[1] != columns[0]:
        return None
    return nz, idx, expert_id, (columns[1] if v.dim() == 2 else None)


def _one_hot_column(cond: torch.fx.Node):
    """``(idx, expert id, (token column, slot column))`` when ``cond`` is
    ``select(permute(one_hot(idx, E), p), 0, e)`` with ``p`` moving the class dim first, else None."""
    b = match(_ONE_HOT_COLUMN, cond)
    if b is None or val(b["lhs"]) is None or b["dim"] not in (-1, val(b["lhs"]).dim() - 1):
        return None
    arange = match(_ARANGE, b["classes"])
    rank = val(b["mask"]).dim() if val(b["mask"]) is not None else 0
    perm = [p % rank for p in b["perm"]] if rank else []
    expert_id = b["e"]
    if arange is None or not 0 <= expert_id < arange["n"] or not perm or perm[0] != rank - 1:
        return None
    rest = perm[1:]                      # nonzero column j is idx's dim rest[j]
    return b["idx"], expert_id, (rest.index(0), rest.index(1) if rank == 3 else None)


def _gathered_rows(src: torch.fx.Node):
    """``(x, tok)`` when ``src`` gathers rows of a 2-D ``x`` by one index: ``index(x, [tok])`` (``x[tok]``)
    or ``index(unsqueeze(x, 0), [None, tok])`` (HF's ``x[None, tok]``), else None."""
    b = match(_GATHERED_ROWS, src)
    return (b["x"], b["tok"]) if b else None


def metadata_asserts(node: torch.fx.Node) -> list:
    """``node``'s users that are export's ``_assert_tensor_metadata`` checks (no result, no effect)."""
    return [u for u in node.users if u.op == "call_function" and u.target is aten._assert_tensor_metadata.default]


def match_routed(chain: Chain) -> Routed | None:
    """The :class:`Routed` view of expert unit ``chain`` when it is one expert of a routed loop, else None:
    the unit reads ``x[tok]`` (or ``x[None, tok].reshape(-1, d)``) with ``tok`` from the routing mask's
    nonzero (:func:`_routing_of`), and its result, optionally times a gate, is index-added at ``tok``."""
    if chain.partial:
        return None
    src = chain.source
    gathered = _gathered_rows(src)
    if gathered is None or not src.users or not all(u in chain.entries for u in src.users):
        return None
    x, tok = gathered
    if not isinstance(x, torch.fx.Node) or val(x) is None or val(x).dim() != 2:
        return None
    routing = _routing_of(tok)
    if routing is None:
        return None
    nz, idx, expert_id, slot_col = routing
    slot = None
    if slot_col is not None:
        for user in nz.users:
            for u2 in user.users if packet(user.target) is aten.slice else [user]:
                col = _column_of(u2)
                if col is not None and col == (nz, slot_col):
                    slot = u2
    out = chain.output
    if len(out.users) != 1:
        return None
    user = next(iter(out.users))
    r = Routed(chain, x, idx, expert_id, tok, slot, put=user)
    if user.target is aten.mul.Tensor:
        asserts = metadata_asserts(user)
        if len(user.users) != len(asserts) + 1:
            return None
        other = user.args[1] if user.args[0] is out else user.args[0]
        if other is out or not isinstance(other, torch.fx.Node):
            return None
        r.gate, r.gate_first, r.mul, r.asserts = other, user.args[0] is other, user, asserts
        r.put = next(u for u in user.users if u not in asserts)
    put = r.put
    added = r.mul if r.mul is not None else out
    if not (put.target is aten.index_put.default and len(put.args) == 4 and put.args[3] is True
            and list(put.args[1]) == [tok] and put.args[2] is added):
        return None
    return r


class _Template:
    """Structural form of an expression of ``tok``/``slot``: expert-independent parts compared by value
    numbering (same op on the same inputs), so each expert's copy of ``w.unsqueeze(1)`` matches."""

    def __init__(self):
        self.memo: dict = {}

    def key(self, node, variables: dict):
        """A hashable key of ``node`` with the nodes in ``variables`` replaced by their names."""
        if not isinstance(node, torch.fx.Node):
            if isinstance(node, (list, tuple)):
                return ("seq", tuple(self.key(a, variables) for a in node))
            return ("const", repr(node))
        if node in variables:
            return ("var", variables[node])
        if node.op != "call_function" or node.is_impure():
            return ("node", node)
        cache_key = (node, tuple(sorted((n.name, v) for n, v in variables.items())))
        if cache_key not in self.memo:
            self.memo[cache_key] = ("op", str(node.target), self.key(list(node.args), variables),
                                    self.key(sorted(node.kwargs.items()), variables))
        return self.memo[cache_key]


def _depends(node, variables: set, memo: dict) -> bool:
    if not isinstance(node, torch.fx.Node):
        return False
    if node in variables:
        return True
    if node not in memo:
        memo[node] = node.op == "call_function" and any(
            _depends(a, variables, memo) for a in node.all_input_nodes)
    return memo[node]


def _instantiate(b: Builder, node, mapping: dict, variables: set, memo: dict, made: dict):
    """Copy the part of ``node``'s expression that depends on ``variables``, with ``mapping`` applied."""
    if not isinstance(node, torch.fx.Node):
        if isinstance(node, (list, tuple)):
            return type(node)(_instantiate(b, a, mapping, variables, memo, made) for a in node)
        return node
    if node in mapping:
        return mapping[node]
    if not _depends(node, variables, memo):
        return node
    if node not in made:
        args = _instantiate(b, list(node.args), mapping, variables, memo, made)
        kwargs = {k: _instantiate(b, v, mapping, variables, memo, made) for k, v in node.kwargs.items()}
        made[node] = b.op(node.target, *args, **kwargs)
    return made[node]


def check_group(members: list[Routed]) -> str | None:
    """Why ``members`` (one structural key) cannot be fused as one routed group, or None when they can:
    same ``x`` and ``idx``, ids contiguous, same gate expression, index_puts forming one accumulator chain."""
    first = members[0]
    if any(m.x is not first.x or m.idx is not first.idx for m in members):
        return "experts read different inputs or routing tensors"
    ids = sorted(m.expert_id for m in members)
    if ids != list(range(ids[0], ids[0] + len(ids))):
        return f"expert ids {ids} are not contiguous"
    if any((m.gate is None) != (first.gate is None) or m.gate_first != first.gate_first for m in members):
        return "experts combine their outputs differently"
    if first.gate is not None:
        tmpl = _Template()
        keys = {tmpl.key(m.gate, {m.tok: "tok", **({m.slot: "slot"} if m.slot is not None else {})})
                for m in members}
        if len(keys) != 1:
            return "experts weight their outputs with different gate expressions"
    puts = {m.put for m in members}
    order = {n: i for i, n in enumerate(first.x.graph.nodes)}
    chain = sorted(puts, key=order.__getitem__)
    for a, b in zip(chain, chain[1:]):
        if b.args[0] is not a or len(a.users) != 1:
            return "the experts' index_add results do not form one accumulation chain"
    return None


def ids_in_range(idx: torch.fx.Node, first: int, count: int) -> bool:
    """True when every id in ``idx`` is provably in ``[first, first + count)``: ``idx`` is the index output of
    ``topk``/``max``/``argmax`` over a last dim of exactly ``first + count`` entries with ``first == 0``."""
    if first != 0 or idx.op != "call_function":
        return False
    src, dim = None, None
    if idx.target is operator.getitem and idx.args[1] == 1 and isinstance(idx.args[0], torch.fx.Node):
        op = idx.args[0]
        if op.op == "call_function" and op.target in (aten.topk.default, aten.max.dim):
            src = op.args[0]
            dim = op.args[2] if op.target is aten.topk.default and len(op.args) > 2 else op.kwargs.get("dim", -1)
            if op.target is aten.max.dim:
                dim = op.args[1]
    elif idx.target is aten.argmax.default and len(idx.args) > 1:
        src, dim = idx.args[0], idx.args[1]
    v = val(src) if isinstance(src, torch.fx.Node) else None
    if v is None or not isinstance(dim, int) or v.dim() == 0:
        return False
    size = v.shape[dim]
    return isinstance(size, int) and size == count


def _gate_rows(lead: Routed, pairs: torch.fx.Node | None, b: Builder) -> dict:
    """Mapping for gate nodes of the form ``index(w, [tok, slot])`` (``w`` laid out like ``idx``,
    contiguous) to one row gather ``index_select(view(w, [-1]), 0, pairs)`` of the flat pair positions
    (``view(w, [-1])`` itself when ``pairs`` is None: every pair, in order)."""
    found: dict = {}
    if lead.slot is None:
        return found
    v_idx = val(lead.idx)
    stack, seen = [lead.gate], set()
    while stack:
        node = stack.pop()
        if not isinstance(node, torch.fx.Node) or node in seen or node.op != "call_function":
            continue
        seen.add(node)
        if (node.target is aten.index.Tensor and list(node.args[1]) == [lead.tok, lead.slot]
                and val(node.args[0]) is not None and tuple(val(node.args[0]).shape) == tuple(v_idx.shape)
                and val(node.args[0]).is_contiguous()):
            flat = b.op(aten.view.default, node.args[0], [-1])
            found[node] = flat if pairs is None else b.op(aten.index_select.default, flat, 0, pairs)
            continue
        stack.extend(node.all_input_nodes)
    return found


def fuse_routed(gm: torch.fx.GraphModule, members: list[Routed], tag: str, pass_name: str,
                strategy: str = "padded") -> int:
    """Rewrite a checked routed group (see module docstring) with the ``grouped_mm``, ``padded``,
    ``segment`` or ``dense`` (static shapes, :func:`_dense_pairs`) strategy; returns the number of matmuls
    removed."""
    members = sorted(members, key=lambda m: m.expert_id)
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    puts = sorted({m.put for m in members}, key=order.__getitem__)
    first_put, last_put = puts[0], puts[-1]
    e, c0, lead = len(members), members[0].expert_id, members[0]
    # read x and idx from the live graph: fusing an earlier group replaced the node a stale match holds
    x, idx = _gathered_rows(lead.chain.source)[0], _routing_of(lead.tok)[1]
    v_idx, v_x = val(idx), val(x)
    k = v_idx.shape[1] if v_idx.dim() == 2 else 1
    b = Builder(gm, last_put, lead.chain.steps[0].node, pass_name)
    flat = idx
    if v_idx.dim() == 2:
        if not v_idx.is_contiguous():
            flat = b.op(aten.clone.default, flat, memory_format=torch.contiguous_format)
        flat = b.op(aten.view.default, flat, [-1])
    if v_idx.dtype != torch.int64:
        flat = b.op(aten._to_copy.default, flat, dtype=torch.int64)
    rel = b.op(aten.sub.Tensor, flat, c0) if c0 else flat
    in_range = ids_in_range(idx, c0, e)
    if strategy == "dense":
        return _dense_pairs(b, members, first_put, last_put, x, flat, rel, k, in_range, tag)
    if in_range:
        # every (token, slot) pair goes to an expert of the group: no filtering, no data-dependent count
        srt = b.op(aten.sort.stable, rel, stable=True, dim=0)
        skey = b.op(operator.getitem, srt, 0)
        pairs = b.op(operator.getitem, srt, 1)                                       # flat positions by expert
        nv = b.op(aten.sym_size.int, flat, 0)
    else:
        # ids outside the group (other experts, -1 for dropped tokens) are skipped
        valid = b.op(aten.logical_and.default, b.op(aten.ge.Scalar, rel, 0), b.op(aten.lt.Scalar, rel, e))
        vpos = b.op(aten.squeeze.dims, b.op(aten.nonzero.default, valid), [1])        # valid pair positions
        relv = b.op(aten.index_select.default, rel, 0, vpos)
        srt = b.op(aten.sort.stable, relv, stable=True, dim=0)
        skey = b.op(operator.getitem, srt, 0)
        pairs = b.op(aten.index_select.default, vpos, 0, b.op(operator.getitem, srt, 1))
        nv = b.op(aten.sym_size.int, vpos, 0)
    experts = b.attr(f"{tag}_ids", torch.arange(e, dtype=torch.int64, device=v_x.device))
    # expert e's pairs are skey[offsets[e]:ends[e]] (skey is sorted)
    ends = b.op(aten.searchsorted.Tensor, skey, experts, right=True)
    offsets = b.op(aten.searchsorted.Tensor, skey, experts)
    counts = b.op(aten.sub.Tensor, ends, offsets)
    chains = [m.chain for m in members]
    if k == 1 and in_range and strategy == "grouped_mm":
        # top-1 with every token routed: (token, slot) pairs are the tokens themselves, a permutation, so
        # the sorted results are scattered back once in token order and no scatter-add is needed
        ys = grouped_chain(b, chains, b.op(aten.index_select.default, x, 0, pairs), skey,
                           b.op(aten._to_copy.default, ends, dtype=torch.int32), tag)
        v_y = val(ys)
        zeros = b.op(aten.full.default, [nv, int(v_y.shape[1])], 0, dtype=v_y.dtype, device=v_y.device)
        return _add_in_token_order(b, members, first_put, last_put,
                                   b.op(aten.index_copy.default, zeros, 0, pairs, ys), nv)
    if k == 1 and in_range and strategy == "padded":
        # as above, through the padded buffer: rows go to and come back from it in token order
        return _top1_in_token_order(b, members, first_put, last_put, x, skey, pairs, offsets, counts, nv, tag)
    if k == 1:
        tok = pairs
        slot = b.op(aten.mul.Tensor, pairs, 0) if lead.slot is not None else None
    else:
        tok = b.op(aten.div.Scalar_mode, pairs, k, rounding_mode="floor")
        slot = b.op(aten.remainder.Scalar, pairs, k)
    xs = b.op(aten.index_select.default, x, 0, tok)                                  # rows sorted by expert
    if strategy == "segment":
        ys = _segment_rows(b, members, xs, counts, nv, tag)
    elif strategy == "grouped_mm":
        ys = grouped_chain(b, chains, xs, skey, b.op(aten._to_copy.default, ends, dtype=torch.int32), tag)
    else:
        ys = _padded_rows(b, members, xs, skey, offsets, counts, nv, tag)
    added = _gated(b, lead, ys, tok, slot, _gate_rows(lead, pairs, b))
    # index_add sums duplicates in index order, like the loop's index_put(accumulate=True) chain did
    acc = b.op(aten.index_add.default, first_put.args[0], 0, tok, added)
    _finish(gm, members, last_put, acc)
    return sum(len(m.chain.linears) for m in members) - len(lead.chain.linears)


def _dense_pairs(b: Builder, members: list[Routed], first_put, last_put, x, flat, rel, k: int, in_range: bool,
                 tag: str) -> int:
    """The static form of a routed group, for compilers of fixed shapes: every expert on every token (one
    batched chain, [E, N, out]), then each (token, slot) pair's row picked by its expert id, gated, and
    added to its token. Pairs whose id is outside the group add nothing. Returns the matmuls removed.

    Identity: the loop adds ``expert_e(x[t]) * g(t, s)`` for each pair (t, s) with id e; row t of expert
    e's dense result is ``expert_e(x[t])``. With one slot each token gets at most one term, so the sum is
    the loop's exactly (up to the matmul kernels' rounding); with k slots the terms are added in slot order
    instead of expert order."""
    lead = members[0]
    e = len(members)
    x3 = b.op(aten.expand.default, b.op(aten.unsqueeze.default, x, 0), [e, -1, -1])
    every = batched_chain(b, [m.chain for m in members], x3, tag)                    # [E, N, out]
    npairs = b.op(aten.sym_size.int, flat, 0)
    pos = b.op(aten.arange.start_step, 0, npairs, dtype=torch.int64, device=val(x).device)
    if k == 1:
        tok, slot = pos, (b.op(aten.mul.Tensor, pos, 0) if lead.slot is not None else None)
    else:
        tok = b.op(aten.div.Scalar_mode, pos, k, rounding_mode="floor")
        slot = b.op(aten.remainder.Scalar, pos, k)
    expert = rel if in_range else b.op(aten.clamp.default, rel, 0, e - 1)
    picked = b.op(aten.index.Tensor, every, [expert, tok])                            # [N*k, out]
    added = _gated(b, lead, picked, tok, slot, _gate_rows(lead, None, b))
    if not in_range:
        valid = b.op(aten.logical_and.default, b.op(aten.ge.Scalar, rel, 0), b.op(aten.lt.Scalar, rel, e))
        added = b.op(aten.where.ScalarOther, b.op(aten.unsqueeze.default, valid, -1), added, 0.0)
    init = first_put.args[0]
    if k == 1:
        acc = added if _is_zeros_like(init, added) else b.op(aten.add.Tensor, init, added)
    else:
        acc = b.op(aten.index_add.default, init, 0, tok, added)
    _finish(b.gm, members, last_put, acc)
    return sum(len(m.chain.linears) for m in members) - len(lead.chain.linears)


def _gated(b: Builder, lead: Routed, ys, tok, slot, mapping: dict):
    """``ys`` times the group's gate expression instantiated for rows ``tok``/``slot`` (``mapping``: nodes of
    the expression already replaced), or ``ys`` when the experts are not gated."""
    if lead.gate is None:
        return ys
    variables = {lead.tok} | ({lead.slot} if lead.slot is not None else set())
    mapping = {lead.tok: tok, **({lead.slot: slot} if lead.slot is not None else {}), **mapping}
    g = _instantiate(b, lead.gate, mapping, variables, {}, {})
    return b.op(aten.mul.Tensor, *((g, ys) if lead.gate_first else (ys, g)))


def _top1_in_token_order(b: Builder, members: list[Routed], first_put, last_put, x, skey, pairs, offsets,
                         counts, nv, tag: str) -> int:
    """The padded strategy for top-1 routing with every token routed: each token's row in the [E*C] buffer
    is scattered once (an int64 index per token), the buffer is filled from ``x`` and read back in token
    order, the gate applies to the tokens as they are (``w[tok, 0]`` is ``w``), and the accumulator gets
    each token's single product added. Returns the number of matmuls removed."""
    dest, cap = _padded_dest(b, skey, offsets, counts, nv)
    row_of_token = b.op(aten.index_copy.default,
                        b.op(aten.full.default, [nv], -1, dtype=torch.int64, device=val(x).device),
                        0, pairs, dest)
    y = _padded_rows(b, members, x, skey, offsets, counts, nv, tag, placed=(dest, cap), order=row_of_token)
    return _add_in_token_order(b, members, first_put, last_put, y, nv)


def _add_in_token_order(b: Builder, members: list[Routed], first_put, last_put, y, nv) -> int:
    """Top-1 with every token routed, given each token's expert output ``y`` in token order: the gate
    applies to the tokens as they are (``w[tok, 0]`` is ``w``) and the accumulator gets each token's single
    product added. Returns the number of matmuls removed."""
    lead = members[0]
    tok = b.op(aten.arange.start_step, 0, nv, dtype=torch.int64, device=val(y).device)
    slot = b.op(aten.mul.Tensor, tok, 0) if lead.slot is not None else None
    added = _gated(b, lead, y, tok, slot, _gate_rows(lead, None, b))   # w[tok, 0] over all tokens is w
    init = first_put.args[0]
    acc = added if _is_zeros_like(init, added) else b.op(aten.add.Tensor, init, added)
    _finish(b.gm, members, last_put, acc)
    return sum(len(m.chain.linears) for m in members) - len(lead.chain.linears)


def _is_zeros_like(init: torch.fx.Node, added: torch.fx.Node) -> bool:
    """True when ``init`` is a ``full(..., 0)`` of ``added``'s shape and dtype (adding it changes nothing)."""
    v_i, v_a = val(init), val(added)
    return (init.op == "call_function" and init.target is aten.full.default and init.args[1] == 0
            and v_i is not None and v_a is not None and v_i.dtype == v_a.dtype
            and tuple(v_i.shape) == tuple(v_a.shape))


def _finish(gm: torch.fx.GraphModule, members: list[Routed], last_put, acc) -> None:
    """Route the accumulator's users to ``acc`` and drop the old experts' asserts."""
    last_put.replace_all_uses_with(acc)
    for m in members:
        for a in m.asserts:     # impure metadata asserts of the old products (HF's `.to(dtype)`)
            gm.graph.erase_node(a)
        _drop_size_asserts(gm, m.tok)


def _padded_dest(b: Builder, skey, offsets, counts, nv) -> tuple:
    """``(dest, C)``: each sorted pair's row in the padded [E*C] buffer (``skey * C + rank within its
    expert``) and C, the largest expert load, read at run time."""
    v = val(skey)
    pos = b.op(aten.sub.Tensor, b.op(aten.arange.start_step, 0, nv, dtype=torch.int64, device=v.device),
               b.op(aten.index_select.default, offsets, 0, skey))
    cap = b.op(aten._local_scalar_dense.default, b.op(aten.max.default, counts))
    b.op(aten.sym_constrain_range_for_size.default, cap)
    return b.op(aten.add.Tensor, b.op(aten.mul.Tensor, skey, cap), pos), cap


def _padded_rows(b: Builder, members: list[Routed], xs, skey, offsets, counts, nv, tag: str, placed=None,
                 order=None) -> torch.fx.Node:
    """The padded strategy: rows ``xs`` scattered into a zero [E, C, in] buffer (C = the largest expert load,
    read at run time) at ``order`` (default: each sorted pair's row, for ``xs`` sorted by expert), one
    batched chain over stacked weights, rows gathered back the same way. ``placed``: ``_padded_dest``'s
    result when the caller made it. Returns the experts' outputs [N, out] in ``xs``'s order."""
    e, v_x = len(members), val(xs)
    dest, cap = _padded_dest(b, skey, offsets, counts, nv) if placed is None else placed
    order = dest if order is None else order
    rows = b.op(operator.mul, cap, e)
    width = int(v_x.shape[1])
    buf = b.op(aten.full.default, [rows, width], 0, dtype=v_x.dtype, device=v_x.device)
    buf = b.op(aten.index_copy.default, buf, 0, order, xs)
    y3 = batched_chain(b, [m.chain for m in members], b.op(aten.view.default, buf, [e, cap, width]), tag)
    out_width = int(val(y3).shape[2])
    return b.op(aten.index_select.default, b.op(aten.view.default, y3, [rows, out_width]), 0, order)


def _segment_rows(b: Builder, members: list[Routed], xs, counts, nv, tag: str) -> torch.fx.Node:
    """The segment strategy: rows ``xs`` (sorted by expert) split into one slice per expert (sizes read at run
    time), each expert's own chain on its slice (its own weights, no padding), results concatenated.
    Returns the experts' outputs [N, out] in ``xs``'s order."""
    parts = b.op(aten.unbind.int, counts)
    sizes = []
    for i in range(len(members)):
        size = b.op(aten._local_scalar_dense.default, b.op(operator.getitem, parts, i))
        b.op(aten.sym_constrain_range_for_size.default, size)
        sizes.append(size)
    # the slices cover every sorted row; tell the shape environment so split_with_sizes can check it
    torch._check(sum(s.meta["val"] for s in sizes) == nv.meta["val"])
    pieces = b.op(aten.split_with_sizes.default, xs, sizes)
    outs = [_copy_chain(b, m.chain, b.op(operator.getitem, pieces, i), f"{tag}_e{i}")
            for i, m in enumerate(members)]
    return b.op(aten.cat.default, outs)


def _copy_chain(b: Builder, chain: Chain, rows: torch.fx.Node, tag: str) -> torch.fx.Node:
    """A copy of ``chain``'s nodes reading ``rows`` instead of its source; returns the copy of its output.
    Each ``permute(weight, [1, 0])`` becomes a get_attr of the transposed weight made contiguous once, at
    compile time: measured on CPU, ``addmm`` with a contiguous [in, out] weight is 1.5-3x faster than
    with the transposed view at expert sizes (the expert's own weight then dies)."""
    mapping: dict = {chain.source: rows}
    for node in _nodes_from(chain.source, chain.output):
        for arg in node.all_input_nodes:
            if (arg.op == "call_function" and packet(arg.target) is aten.permute and list(arg.args[1]) == [1, 0]
                    and arg.args[0].op == "get_attr" and arg not in mapping):
                weight = fetch_attr(b.gm, arg.args[0].target).detach()
                mapping[arg] = b.attr(f"{tag}_w", weight.t().contiguous())
    return _instantiate(b, chain.output, mapping, {chain.source}, {}, {})


def _nodes_from(source: torch.fx.Node, output: torch.fx.Node) -> list[torch.fx.Node]:
    """The call_function nodes between ``source`` (exclusive) and ``output`` (inclusive) that depend on
    ``source``."""
    memo: dict = {}
    found, stack, seen = [], [output], set()
    while stack:
        node = stack.pop()
        if node in seen or node is source or not _depends(node, {source}, memo):
            continue
        seen.add(node)
        found.append(node)
        stack.extend(node.all_input_nodes)
    return found


def _drop_size_asserts(gm: torch.fx.GraphModule, tok: torch.fx.Node) -> None:
    """Erase export's runtime asserts on the size of the replaced ``nonzero`` (``0 <= u <= N``, always
    true) once nothing else reads it, so dead-code elimination can drop the per-expert routing."""
    col = _column_of(tok)
    if col is None:
        return
    nz = col[0]
    doomed: list = []
    for user in nz.users:
        if user.target is aten.sym_size.int:
            for cmp in user.users:
                if cmp.op != "call_function" or not all(a.target is aten._assert_scalar.default for a in cmp.users):
                    return
                doomed.extend(cmp.users)
                doomed.append(cmp)
            doomed.append(user)
    for node in doomed:
        if not node.users:
            gm.graph.erase_node(node)
