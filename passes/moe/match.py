"""Structural matching for the `moe` pass: find linears, expert units and groups of identical units.

An *expert unit* (class :class:`Chain`, named for its first form) is a small single-entry single-exit subgraph
that starts with a linear reading a source node: linears (each with its own get_attr weight), elementwise ops
whose other arguments are constants, elementwise combines of two unit values of one shape (the gated MLP's
``act(gate(x)) * up(x)``), splits along the last dim (``gate_up(x).chunk(2, -1)``) and *row views* (views
that keep the last dim, as ``view -> mm -> view`` spells a linear on a [B, T, d] input). Further linears
reading the same source join a unit where the unit needs their value (the gated MLP's ``up``). Every node of
the unit but its exit has all its users inside the unit. Its *structural key* covers every step: op,
non-node arguments, weight shapes/dtypes, result dtype, rank and last dim, and the wiring (which step or the
source each input is): two units with the same key compute the same function with different weights,
whatever their module names. Nothing here edits the graph.

Core ATen spells ``nn.Linear`` on a 2-D input as ``addmm(bias, x, permute(weight, [1, 0]))`` (or
``mm(x, permute(weight, [1, 0]))`` without bias), with ``weight`` and ``bias`` get_attr nodes.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.fx

from fxopt.ir.aliasing import RESHAPES
# the moe modules match on tensor-valued nodes only: their `val` is the toolkit's tensor_val
from fxopt.ir.nodes import packet, tensor_val as val  # noqa: F401 - re-exported to moe.rewrite/routing

aten = torch.ops.aten

# Elementwise ops that act the same on [B, h] and on [E, B, h] when their other arguments are constants.
ELEMENTWISE = {
    aten.relu, aten.gelu, aten.silu, aten.sigmoid, aten.tanh, aten.elu, aten.leaky_relu, aten.hardtanh,
    aten.hardswish, aten.hardsigmoid, aten.mish, aten.softplus, aten.clamp, aten.clamp_min, aten.clamp_max,
    aten.mul, aten.add, aten.sub, aten.div, aten.neg, aten.exp, aten.abs, aten.pow, aten.rsqrt, aten.sqrt,
    aten.erf, aten.log1p, aten.expm1, aten.square,
    aten.clone,         # eval-mode dropout exports as clone
}


@dataclass
class Linear:
    """A linear in core ATen: ``node`` (addmm/mm) computes ``x @ weight.T + bias`` with get_attr weights
    (``transposed``), or ``x @ weight + bias`` for a direct matmul with a [in, out] parameter (``x @ W``,
    ``permute`` None)."""

    node: torch.fx.Node
    x: torch.fx.Node
    weight: torch.fx.Node          # get_attr [out, in] ([in, out] when not transposed)
    bias: torch.fx.Node | None     # get_attr [out] or None
    permute: torch.fx.Node | None  # permute(weight, [1, 0]); None when not transposed
    transposed: bool = True


def as_linear(node: torch.fx.Node, direct: bool = False) -> Linear | None:
    """The :class:`Linear` that ``node`` is (addmm/mm on a permuted get_attr weight; with ``direct`` also on
    a get_attr [in, out] weight as it is), or None."""
    if node.op != "call_function" or packet(node.target) not in (aten.addmm, aten.mm) or node.kwargs:
        return None
    if packet(node.target) is aten.addmm:
        if len(node.args) != 3:
            return None
        bias, x, wt = node.args
        if not (isinstance(bias, torch.fx.Node) and bias.op == "get_attr" and val(bias) is not None
                and val(bias).dim() == 1):
            return None
    else:
        x, wt = node.args
        bias = None
    if direct and isinstance(wt, torch.fx.Node) and wt.op == "get_attr":
        weight, transposed, wt = wt, False, None
    elif not (isinstance(wt, torch.fx.Node) and wt.op == "call_function" and packet(wt.target) is aten.permute
              and list(wt.args[1]) in ([1, 0], [-1, -2], [1, -2], [-1, 0])):
        return None
    else:
        weight, transposed = wt.args[0], True
    if not (isinstance(weight, torch.fx.Node) and weight.op == "get_attr" and val(weight) is not None
            and val(weight).dim() == 2 and isinstance(x, torch.fx.Node) and val(x) is not None
            and val(x).dim() == 2):
        return None
    return Linear(node, x, weight, bias, wt, transposed)


def expert_linear(node: torch.fx.Node) -> Linear | None:
    """A linear that can be a step of an expert unit: :func:`as_linear` with its permute read only here, or
    a direct matmul with a parameter (``x @ W``)."""
    if node.op != "call_function" or packet(node.target) not in (aten.addmm, aten.mm):
        return None
    lin = as_linear(node)
    if lin is not None:
        return lin if len(lin.permute.users) == 1 else None
    return as_linear(node, direct=True)


def is_elementwise(node: torch.fx.Node, current: torch.fx.Node) -> bool:
    """True when ``node`` is an allowed elementwise op whose only node argument is ``current`` (first)."""
    if node.op != "call_function" or packet(node.target) not in ELEMENTWISE or node.is_impure():
        return False
    if not node.args or node.args[0] is not current:
        return False
    rest = list(node.args[1:]) + list(node.kwargs.values())
    if any(isinstance(a, torch.fx.Node) for a in rest):
        return False
    a, b = val(current), val(node)
    return a is not None and b is not None and a.dtype == b.dtype and a.dim() == b.dim()


def _constant_text(value) -> str:
    """A stable text form of a non-node argument (for structural keys)."""
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_constant_text(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _trailing(v: torch.Tensor) -> tuple:
    """Dtype, rank and last dim of a value: the row dims may differ between routed experts (and a 3-D
    expert's rows are flattened when batched), the feature dim may not."""
    last = v.shape[-1] if v.dim() else None
    return (str(v.dtype), v.dim(), str(last))


# Elementwise ops combining two unit values of one shape (the gated MLP's ``act(gate(x)) * up(x)``).
BINARY = {aten.mul.Tensor, aten.add.Tensor, aten.sub.Tensor, aten.div.Tensor}
SPLITS = {aten.split_with_sizes, aten.split}
VIEWS = RESHAPES   # the reshape family (ir.aliasing.RESHAPES)
MAX_STEPS = 64          # a unit larger than this is not an expert we know how to batch
_MAX_PULL_DEPTH = 8


def is_row_view(node) -> bool:
    """True when ``node`` is a view/reshape that keeps the last dim (both ranks at least 2): it only regroups
    the rows, so on the batched [E, rows, features] form it is the identity."""
    if not (isinstance(node, torch.fx.Node) and node.op == "call_function" and packet(node.target) in VIEWS
            and node.args and isinstance(node.args[0], torch.fx.Node)):
        return False
    a, b = val(node.args[0]), val(node)
    return (a is not None and b is not None and a.dim() >= 2 and b.dim() >= 2 and a.dtype == b.dtype
            and isinstance(a.shape[-1], int) and a.shape[-1] == b.shape[-1])


def entry_source(lin: Linear) -> torch.fx.Node:
    """What ``lin`` reads, through one row view: a linear on a [B, T, d] input reads ``view(x, [B*T, d])``."""
    return lin.x.args[0] if is_row_view(lin.x) else lin.x


def _is_split(node) -> bool:
    """A split/chunk along the last dim (``chunk`` is ``split_with_sizes`` in core ATen)."""
    if not (isinstance(node, torch.fx.Node) and node.op == "call_function" and packet(node.target) in SPLITS
            and len(node.args) >= 2 and isinstance(node.args[0], torch.fx.Node) and not node.kwargs):
        return False
    v = val(node.args[0])
    dim = node.args[2] if len(node.args) > 2 else 0
    return v is not None and isinstance(dim, int) and v.dim() >= 2 and dim % v.dim() == v.dim() - 1


def _is_getitem_of_split(node) -> bool:
    return (isinstance(node, torch.fx.Node) and node.op == "call_function" and node.target is operator.getitem
            and _is_split(node.args[0]) and isinstance(node.args[1], int))


def _is_binary(node) -> bool:
    """``mul/add/sub/div.Tensor`` of two tensors of one shape and dtype (the result's), constant kwargs."""
    if not (isinstance(node, torch.fx.Node) and node.op == "call_function" and node.target in BINARY
            and len(node.args) == 2 and all(isinstance(a, torch.fx.Node) for a in node.args)
            and not any(isinstance(v, torch.fx.Node) for v in node.kwargs.values())):
        return False
    a, b, out = val(node.args[0]), val(node.args[1]), val(node)
    return (a is not None and b is not None and out is not None and a.dtype == b.dtype == out.dtype
            and str(tuple(a.shape)) == str(tuple(b.shape)) == str(tuple(out.shape)))


@dataclass
class Chain:
    """An expert unit (see the module docstring): ``source`` (what it reads), ``steps`` in graph order
    (:class:`Linear` or FX nodes; ``steps[0]`` is a Linear reading the source), ``views`` (its row views,
    transparent when batched), ``entries`` (its nodes reading the source: linears, row views of it),
    ``exit`` (its one result), ``key`` (structural key), ``nodes`` (step nodes). ``partial`` marks a unit
    grown from a linear that is not its first (a gated MLP's ``up``): never grouped."""

    source: torch.fx.Node
    steps: list
    key: tuple = ()
    nodes: list = field(default_factory=list)
    views: set = field(default_factory=set)
    entries: set = field(default_factory=set)
    exit: torch.fx.Node | None = None
    partial: bool = False

    @property
    def output(self) -> torch.fx.Node:
        """The unit's result node (its exit: the last step, or a row view of it)."""
        if self.exit is not None:
            return self.exit
        last = self.steps[-1]
        return last.node if isinstance(last, Linear) else last

    @property
    def linears(self) -> list:
        """The unit's :class:`Linear` steps, in graph order."""
        return [s for s in self.steps if isinstance(s, Linear)]

    @property
    def members(self) -> set:
        """Every node of the unit: step nodes and row views."""
        return set(self.nodes) | self.views

    def resolve(self, node: torch.fx.Node):
        """``(base, view ranks)``: ``node`` with the unit's row views (and entry views) stripped, and the
        ranks those views produced (outermost first). ``base`` is a step node or the source."""
        ranks = []
        while node in self.views or (node in self.entries and is_row_view(node)):
            ranks.append(val(node).dim())
            node = node.args[0]
        return node, tuple(ranks)


def step_key(step, node: torch.fx.Node) -> tuple:
    """The wiring-free key of one step: op, constants, weight shapes/dtypes, result dtype, rank, last dim."""
    if isinstance(step, Linear):
        w = val(step.weight)
        b = val(step.bias) if step.bias is not None else None
        return ("linear" if step.transposed else "matmul", tuple(w.shape), str(w.dtype),
                None if b is None else (tuple(b.shape), str(b.dtype)), _trailing(val(step.node)))
    args = _constant_text([a for a in node.args if not isinstance(a, torch.fx.Node)])
    kwargs = _constant_text(sorted((k, v) for k, v in node.kwargs.items()))
    return (str(node.target), args, kwargs, _trailing(val(node)) if val(node) is not None else None)


#: binary ops whose two tensor operands can be swapped without changing a bit of the result
COMMUTATIVE = frozenset([aten.add.Tensor, aten.mul.Tensor, aten.maximum.default, aten.minimum.default,
                         aten.logical_and.default, aten.logical_or.default, aten.logical_xor.default,
                         aten.bitwise_and.Tensor, aten.bitwise_or.Tensor, aten.bitwise_xor.Tensor,
                         aten.eq.Tensor, aten.ne.Tensor])


def _commutes(node: torch.fx.Node) -> bool:
    """True for a commutative op on two tensors (``add`` only without ``alpha``)."""
    return (node.target in COMMUTATIVE and len(node.args) == 2 and not node.kwargs
            and all(isinstance(a, torch.fx.Node) for a in node.args))


def _unit_key(chain: Chain) -> tuple:
    """The structural key of a whole unit: per step its :func:`step_key` and where each tensor input comes
    from (the source or step i, through which row views), then the exit's wiring."""
    index = {(s.node if isinstance(s, Linear) else s): i for i, s in enumerate(chain.steps)}

    def ref(n):
        base, ranks = chain.resolve(n)
        return ("src" if base is chain.source else index.get(base, "?"), ranks)

    key = []
    for s in chain.steps:
        node = s.node if isinstance(s, Linear) else s
        inputs = [s.x] if isinstance(s, Linear) else [a for a in node.args if isinstance(a, torch.fx.Node)]
        refs = tuple(ref(a) for a in inputs)
        if _commutes(node):
            refs = tuple(sorted(refs, key=repr))     # `a * u` and `u * a` experts group (the rewrite emits
        key.append((step_key(s, node), refs))        # the lead's order: the same bits, IEEE + and * commute)
    key.append(("exit", ref(chain.output), _trailing(val(chain.output))))
    return tuple(key)


def graph_position(node: torch.fx.Node):
    """A sort key of ``node``'s place in its graph: FX's own ``_sort_key``, which FX keeps in order as nodes
    are inserted. (A cache of positions by ``id(node)`` used to stand here: in a long process an erased
    node's id was reused by a new node with the same node count, so a stale position ordered a unit's
    nodes wrongly and made moe non-idempotent — found by a fuzz campaign, not reproducible in a fresh
    process.)"""
    key = getattr(node, "_sort_key", None)
    if key is not None:
        return key
    return next(i for i, n in enumerate(node.graph.nodes) if n is node)


class _Growth:
    """Grows a unit from its first linear: adds, in graph order, users of unit nodes whose inputs are unit
    nodes (pulling in linears on the source that a combine needs), and remembers the last state with one exit
    and no pending combine (a combine of pulled values must be followed by a linear; otherwise it is the
    experts' sum, not an expert)."""

    def __init__(self, first: Linear):
        self.source = entry_source(first)
        self.steps: dict = {}
        self.views: set = set()
        self.entries: set = set()
        self.added: list = []
        self._add(first.node, first)

    def members(self) -> set:
        return set(self.steps) | self.views

    def _add(self, node, step=None):
        if step is None:
            step = expert_linear(node)
        if isinstance(step, Linear):
            self.steps[node] = step
            if step.x is self.source or (is_row_view(step.x) and step.x.args[0] is self.source):
                self.entries.add(step.x if step.x is not self.source else node)
        elif is_row_view(node) and node.args[0] in self.members():
            self.views.add(node)
        else:
            self.steps[node] = node
        self.added.append(node)

    def _source_linear(self, node) -> bool:
        lin = expert_linear(node)
        return lin is not None and entry_source(lin) is self.source

    def _pull(self, node, depth: int, members: set, out: dict) -> bool:
        """Collect into ``out`` the nodes needed so that ``node`` is a unit value; False when it cannot be."""
        if node in members or node in out:
            return True
        if depth > _MAX_PULL_DEPTH or not isinstance(node, torch.fx.Node) or node.op != "call_function":
            return False
        if self._source_linear(node):
            out[node] = True
            return True
        if is_row_view(node) or _is_split(node) or _is_getitem_of_split(node) or \
                (node.args and isinstance(node.args[0], torch.fx.Node) and is_elementwise(node, node.args[0])):
            ok = self._pull(node.args[0], depth + 1, members, out)
        elif _is_binary(node):
            ok = all(self._pull(a, depth + 1, members, out) for a in node.args)
        else:
            return False
        if ok:
            out[node] = True
        return ok

    def _takes(self, user, members: set):
        """The nodes to add so that ``user`` joins the unit (``user`` last), or None."""
        if user.op != "call_function" or user.is_impure():
            return None
        lin = expert_linear(user)
        if lin is not None:
            return [user] if lin.x in members else None
        if is_row_view(user) or _is_split(user) or _is_getitem_of_split(user):
            return [user] if user.args[0] in members else None
        if user.args and isinstance(user.args[0], torch.fx.Node) and is_elementwise(user, user.args[0]):
            return [user] if user.args[0] in members else None
        if _is_binary(user):
            out: dict = {}
            if all(self._pull(a, 0, members, out) for a in user.args):
                return [n for n in sorted(out, key=graph_position) if n is not user] + [user]
        return None

    def exits(self, members: set) -> list:
        return [n for n in members if any(u not in members for u in n.users) or not n.users]

    def run(self) -> int:
        """Grow; returns how many of ``added`` form the last valid unit."""
        best, pending = 1, False
        while len(self.steps) < MAX_STEPS:
            members = self.members()
            users = sorted({u for n in members for u in n.users if u not in members}, key=graph_position)
            for user in users:
                taken = self._takes(user, members)
                if taken is not None:
                    break
            else:
                break
            pulled = len(taken) > 1
            for node in taken:
                self._add(node)
            if pulled:
                pending = True
            elif node in self.steps and isinstance(self.steps[node], Linear):
                pending = False
            if not pending and len(self.exits(self.members())) == 1:
                best = len(self.added)
        return best


def grow_chain(first: Linear) -> Chain:
    """The expert unit grown from linear ``first`` (see :class:`_Growth`). When the unit's first linear is
    another one (``first`` is a gated MLP's ``up``), or the unit's exit cannot be rebuilt, the result is
    ``partial``: ``first`` alone, with a key that matches nothing."""
    g = _Growth(first)
    keep = set(g.added[:g.run()])
    nodes = sorted((n for n in keep if n in g.steps), key=graph_position)
    steps = [g.steps[n] for n in nodes]
    views = {n for n in keep if n in g.views}
    entries = {n for n in g.entries if n in keep or any(u in keep for u in n.users)}
    chain = Chain(g.source, steps, nodes=nodes, views=views, entries=entries)
    exits = g.exits(keep)
    if steps[0] is not g.steps[first.node] or len(exits) != 1:
        return Chain(g.source, [first], key=("partial", first.node.name), nodes=[first.node], partial=True,
                     entries={first.x if first.x is not g.source else first.node})
    chain.exit = exits[0]
    try:
        out_shape(chain)
    except ValueError:
        return Chain(g.source, [first], key=("partial", first.node.name), nodes=[first.node], partial=True)
    chain.key = _unit_key(chain)
    return chain


def out_shape(chain: Chain):
    """The shape to view expert e's [rows, out] batched result to: None for a 2-D exit, the exit's own view
    shape when it is a view, its static shape otherwise; raises ValueError for a symbolic non-view exit."""
    v = val(chain.output)
    if v.dim() == 2:
        return None
    if chain.output in chain.views:
        return list(chain.output.args[1])
    if all(isinstance(d, int) for d in v.shape):
        return list(v.shape)
    raise ValueError(f"expert exit '{chain.output.name}' has a symbolic shape")


def linears_by_source(graph: torch.fx.Graph) -> dict:
    """``{input node: [Linear, ...]}`` for every linear in the graph whose permute has a single user,
    in graph order (keyed by the node the mm reads)."""
    out: dict = {}
    for node in graph.nodes:
        lin = as_linear(node)
        if lin is not None and len(lin.permute.users) == 1:
            out.setdefault(lin.x, []).append(lin)
    return out


def group_chains(chains: list, min_experts: int) -> list[list]:
    """Units grouped by structural key (graph order kept), only groups of at least ``min_experts``. Partial
    units never group, and a unit sharing a node with a larger unit is dropped (units never overlap)."""
    claimed: set = set()
    kept = []
    for chain in sorted((c for c in chains if not c.partial), key=lambda c: -len(c.members)):
        if chain.members & claimed:
            continue
        claimed |= chain.members
        kept.append(chain)
    keep_ids = {id(c) for c in kept}
    by_key: dict = {}
    for chain in chains:
        if id(chain) in keep_ids:
            by_key.setdefault(chain.key, []).append(chain)
    return [members for members in by_key.values() if len(members) >= max(2, min_experts)]
