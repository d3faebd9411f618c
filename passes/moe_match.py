"""Structural matching for the `moe` pass: find linears, expert chains and groups of identical chains.

An *expert chain* is a maximal run of pure ops that starts with a linear reading a source node and continues
through nodes that each have exactly one user: more linears (reading their own weights) and elementwise ops
whose other arguments are constants. Its *structural key* is the tuple of (op, non-node arguments, weight
shapes/dtypes, result dtype and trailing dims) of its steps: two chains with the same key compute the same
function with different weights, whatever their module names. Nothing here edits the graph.

Core ATen spells ``nn.Linear`` on a 2-D input as ``addmm(bias, x, permute(weight, [1, 0]))`` (or
``mm(x, permute(weight, [1, 0]))`` without bias), with ``weight`` and ``bias`` get_attr nodes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.fx

aten = torch.ops.aten

# Elementwise ops that act the same on [B, h] and on [E, B, h] when their other arguments are constants.
ELEMENTWISE = {
    aten.relu, aten.gelu, aten.silu, aten.sigmoid, aten.tanh, aten.elu, aten.leaky_relu, aten.hardtanh,
    aten.hardswish, aten.hardsigmoid, aten.mish, aten.softplus, aten.clamp, aten.clamp_min, aten.clamp_max,
    aten.mul, aten.add, aten.sub, aten.div, aten.neg, aten.exp, aten.abs, aten.pow, aten.rsqrt, aten.sqrt,
    aten.erf, aten.log1p, aten.expm1, aten.square,
}


def packet(target):
    """The overload packet of an ATen target (``aten.addmm`` for ``aten.addmm.default``), or None."""
    return getattr(target, "overloadpacket", None)


def val(node):
    """``node.meta['val']`` when ``node`` is an FX node holding a single tensor, else None."""
    if isinstance(node, torch.fx.Node):
        v = node.meta.get("val")
        return v if isinstance(v, torch.Tensor) else None
    return None


@dataclass
class Linear:
    """A linear in core ATen: ``node`` (addmm/mm) computes ``x @ weight.T + bias`` with get_attr weights."""

    node: torch.fx.Node
    x: torch.fx.Node
    weight: torch.fx.Node          # get_attr [out, in]
    bias: torch.fx.Node | None     # get_attr [out] or None
    permute: torch.fx.Node         # permute(weight, [1, 0])


def as_linear(node: torch.fx.Node) -> Linear | None:
    """The :class:`Linear` that ``node`` is (addmm/mm on a permuted get_attr weight), or None."""
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
    if not (isinstance(wt, torch.fx.Node) and wt.op == "call_function" and packet(wt.target) is aten.permute
            and list(wt.args[1]) in ([1, 0], [-1, -2], [1, -2], [-1, 0])):
        return None
    weight = wt.args[0]
    if not (isinstance(weight, torch.fx.Node) and weight.op == "get_attr" and val(weight) is not None
            and val(weight).dim() == 2 and isinstance(x, torch.fx.Node) and val(x) is not None
            and val(x).dim() == 2):
        return None
    return Linear(node, x, weight, bias, wt)


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
    """Dtype and trailing (non-batch) dims of a value: the batch dim may differ between routed experts."""
    return (str(v.dtype), tuple(int(d) for d in v.shape[1:]))


@dataclass
class Chain:
    """An expert chain: ``steps`` in order (Linear or elementwise nodes), its source and structural key."""

    source: torch.fx.Node
    steps: list
    key: tuple = ()
    nodes: list = field(default_factory=list)

    @property
    def output(self) -> torch.fx.Node:
        """The chain's last node (its result)."""
        last = self.steps[-1]
        return last.node if isinstance(last, Linear) else last

    @property
    def linears(self) -> list:
        """The chain's :class:`Linear` steps."""
        return [s for s in self.steps if isinstance(s, Linear)]


def step_key(step, node: torch.fx.Node) -> tuple:
    """The structural key of one chain step: op, constants, weight shapes/dtypes, result dtype and dims."""
    if isinstance(step, Linear):
        w = val(step.weight)
        b = val(step.bias) if step.bias is not None else None
        return ("linear", tuple(w.shape), str(w.dtype), None if b is None else (tuple(b.shape), str(b.dtype)),
                _trailing(val(step.node)))
    args = _constant_text(list(node.args[1:]))
    kwargs = _constant_text(sorted((k, v) for k, v in node.kwargs.items()))
    return (str(node.target), args, kwargs, _trailing(val(node)))


def grow_chain(first: Linear) -> Chain:
    """The maximal expert chain that starts at linear ``first``: follows single users through linears and
    elementwise ops. Nodes inside the chain (but not its output) have exactly one user."""
    steps: list = [first]
    current = first.node
    while len(current.users) == 1:
        user = next(iter(current.users))
        lin = as_linear(user)
        if lin is not None and lin.x is current and len(lin.permute.users) == 1:
            steps.append(lin)
            current = user
            continue
        if is_elementwise(user, current):
            steps.append(user)
            current = user
            continue
        break
    chain = Chain(first.x, steps)
    chain.key = tuple(step_key(s, s.node if isinstance(s, Linear) else s) for s in steps)
    chain.nodes = [s.node if isinstance(s, Linear) else s for s in steps]
    return chain


def linears_by_source(graph: torch.fx.Graph) -> dict:
    """``{source node: [Linear, ...]}`` for every linear in the graph whose permute has a single user,
    in graph order."""
    out: dict = {}
    for node in graph.nodes:
        lin = as_linear(node)
        if lin is not None and len(lin.permute.users) == 1:
            out.setdefault(lin.x, []).append(lin)
    return out


def group_chains(chains: list, min_experts: int) -> list[list]:
    """Chains grouped by structural key (graph order kept), only groups of at least ``min_experts`` with
    pairwise different weights nodes."""
    by_key: dict = {}
    for chain in chains:
        by_key.setdefault(chain.key, []).append(chain)
    groups = []
    for members in by_key.values():
        if len(members) >= max(2, min_experts):
            groups.append(members)
    return groups
