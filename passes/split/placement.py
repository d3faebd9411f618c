"""Placement for ``split``: which nodes run on the accelerator, by op support and estimated time.

:func:`place` takes an FX graph, a :class:`fxopt.ir.targets.SupportTable` and two device profiles and
returns the set of nodes to run on the accelerator. With ``policy="cost"`` it solves Stone's two-processor
assignment exactly as a minimum s-t cut (networkx):

- source ``S`` = the CPU, sink ``T`` = the accelerator; a vertex on ``S``'s side of the cut runs on the CPU;
- ``S -> v`` has capacity ``time of v on the accelerator`` (paid when v is cut off to the accelerator side) and
  ``v -> T`` the time of v on the CPU; an op the target cannot run, a placeholder (host input) and the output
  (host result) are *pinned* to the CPU: they are merged into ``S``;
- a value crossing devices costs ``transfer_time(bytes)`` once per direction, however many consumers read it:
  for a producer ``u`` with consumers ``v1..vk`` an auxiliary vertex ``x`` with ``u -> x`` (capacity ``t``) and
  ``x -> vi`` (infinite) charges ``t`` once when u is on the CPU and any consumer on the accelerator; an
  auxiliary ``y`` with ``vi -> y`` (infinite) and ``y -> u`` (``t``) charges the way back once. With a single
  consumer the auxiliary vertex is skipped; with a pinned consumer the way back is ``S -> u``.
- ``getitem`` nodes are merged with their producer (a multi-output op's results live where it runs); weights
  (``get_attr``) are resident wherever they are used and never transferred; bookkeeping nodes (metadata
  asserts, ``sym_size``, SymInt arithmetic) are left out of the cut and follow their first input.

Times are integers in picoseconds (flow algorithms want exact arithmetic); a value that is not a tensor (a
SymInt handed to a consumer) costs 1 ps, so the cut keeps it with its consumers without counting a transfer.
The cut is solved by networkx (the reference: one ``minimum_cut`` per connected component of the network
without S and T, since components are independent) or, when scipy is installed, by scipy's Dinic in C (same
cut up to rounding times to int32 units; about 10x faster at 50k nodes). ``policy="support"`` puts every
supported op on the accelerator.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field

import networkx as nx
import torch
import torch.fx

from fxopt.ir.targets import SupportTable, is_bookkeeping
from fxopt.ir import cost as cost_mod
from fxopt.ir.devices import DeviceProfile
from fxopt.ir.program import value_bytes

__all__ = ["PlacementInput", "Placement", "FlowNetwork", "analyse", "place", "build_network", "cut_network",
           "complete", "support_placement", "weights_follow_users", "node_times", "is_tensor_value", "PS"]

PS = 1e12  # picoseconds per second: capacities are integer picoseconds


def node_times(node: torch.fx.Node, cpu: DeviceProfile, acc: DeviceProfile) -> tuple[float, float]:
    """Estimated seconds of ``node`` on the CPU and on the accelerator (roofline of ``node.meta["cost"]``,
    computed with :func:`fxopt.ir.cost.node_cost` when missing). Returns ``(cpu_seconds, acc_seconds)``."""
    if node.op != "call_function":
        return 0.0, 0.0
    c = node.meta.get("cost")
    if c is None:
        c = cost_mod.node_cost(node)
    flops, moved = c.flops, c.bytes_read
    if not (isinstance(flops, int) and isinstance(moved, int) and isinstance(c.bytes_written, int)):
        c = cost_mod.at_example_sizes(c, node.graph.owning_module)  # data-dependent sizes at their bound
        flops, moved = c.flops, c.bytes_read
    moved += c.bytes_written
    return (max(flops / cpu.peak_flops, moved / cpu.mem_bandwidth),
            max(flops / acc.peak_flops, moved / acc.mem_bandwidth))


def is_tensor_value(node: torch.fx.Node) -> bool:
    """True when ``node`` produces a tensor (or a tuple of them): its value costs a transfer to move."""
    val = node.meta.get("val")
    if isinstance(val, (tuple, list)):
        return any(isinstance(v, torch.Tensor) for v in val)
    return isinstance(val, torch.Tensor)


@dataclass
class PlacementInput:
    """What placement and partitioning need, computed once per graph by :func:`analyse` (lists indexed by
    node position in graph order).

    ``nodes``; ``index``: node -> position; ``kind``: ``"weight"`` (get_attr), ``"pinned"`` (must run on the
    CPU: placeholders, output, unsupported ops), ``"free"``, ``"follow"`` (bookkeeping: placed with its first
    input) or ``"getitem"``; ``leader``: the position of the vertex a node is merged with (itself, or a
    getitem's producer); ``times``: ``(cpu s, acc s)``; ``inputs`` / ``users``: positions of distinct input
    and user nodes; ``nbytes``: bytes of the value; ``tensor``: whether the value is a tensor;
    ``why_not``: node name -> reason, for unsupported ops."""

    nodes: list
    index: dict
    kind: list
    leader: list
    times: list
    inputs: list
    users: list
    nbytes: list
    tensor: list
    why_not: dict = field(default_factory=dict)


def analyse(graph: torch.fx.Graph, table: SupportTable, cpu: DeviceProfile, acc: DeviceProfile) -> PlacementInput:
    """Classify every node of ``graph`` for placement and estimate its time on both devices."""
    nodes = list(graph.nodes)
    index = {n: i for i, n in enumerate(nodes)}
    kind, leader, times, why_not = [], [], [], {}
    inputs, users, nbytes, tensor = [], [], [], []
    verdicts: dict = {}  # support is a function of the op (and, for dtype-sensitive targets, input dtypes)
    for i, n in enumerate(nodes):
        times.append(node_times(n, cpu, acc))
        inputs.append([index[a] for a in n.all_input_nodes])
        users.append([index[u] for u in n.users])
        is_t = is_tensor_value(n)
        tensor.append(is_t)
        nbytes.append(value_bytes(n.meta.get("val")) if is_t else 0)
        leader.append(i)
        if n.op == "get_attr":
            kind.append("weight")
        elif n.op in ("placeholder", "output"):
            kind.append("pinned")
        elif n.op != "call_function":
            kind.append("pinned")
            why_not[n.name] = f"{n.op} nodes run on the host"
        elif n.target is operator.getitem and isinstance(n.args[0], torch.fx.Node) \
                and n.args[0].op == "call_function":
            kind.append("getitem")
            leader[i] = leader[index[n.args[0]]]
        elif is_bookkeeping(n):
            kind.append("follow")
        else:
            key = (n.target, table.dtype_key(n))
            if key not in verdicts:
                verdicts[key] = table.why_not(n)
            reason = verdicts[key]
            if reason is None:
                kind.append("free")
            else:
                kind.append("pinned")
                why_not[n.name] = reason
    for i in range(len(nodes)):  # a getitem of a pinned producer is pinned with it
        if kind[i] == "getitem" and kind[leader[i]] == "pinned":
            kind[i] = "pinned"
    return PlacementInput(nodes, index, kind, leader, times, inputs, users, nbytes, tensor, why_not)


@dataclass
class Placement:
    """Result of :func:`place`: ``on_acc`` per node index (bool), the cut's value in seconds (None for the
    support policy), the size of the flow network solved and the solver used."""

    on_acc: list
    cut_seconds: float | None = None
    network_vertices: int = 0
    network_edges: int = 0
    solver: str = "none"


def place(info: PlacementInput, acc: DeviceProfile, policy: str = "cost", solver: str = "auto",
          flow_func=nx.algorithms.flow.preflow_push, weights=(1.0, 1.0, 1.0)) -> Placement:
    """Decide the device of every node. Returns a :class:`Placement` whose ``on_acc[i]`` is True when node
    ``i`` runs on the accelerator. Weights get True when any user runs on the accelerator (the pass records
    where they are resident); bookkeeping nodes follow their first non-weight input. ``solver``: "networkx"
    (reference; ``flow_func`` per connected component), "scipy" (scipy's Dinic in C, much faster on large
    graphs) or "auto" (scipy when it is installed). ``weights``: (cpu, accelerator, link) multipliers of the
    cut's capacities (1, 1, 1: minimum total time)."""
    if policy == "support":
        result = Placement(support_placement(info))
    else:
        result = _min_cut(info, acc, solver, flow_func, weights)
    complete(info, result.on_acc)
    return result


def support_placement(info: PlacementInput) -> list:
    """``on_acc`` with every op the target supports on the accelerator (before :func:`complete`)."""
    return [k in ("free", "getitem") for k in info.kind]


def complete(info: PlacementInput, on_acc: list) -> list:
    """Fill in, in place, the nodes a cut does not decide: getitems run with their producer, bookkeeping nodes
    with their first non-weight input, weights are on the accelerator when any user is. Returns ``on_acc``."""
    kind, leader = info.kind, info.leader
    n = len(kind)
    for i in range(n):  # graph order is topological: inputs are decided first
        k = kind[i]
        if k == "getitem":
            on_acc[i] = on_acc[leader[i]]
        elif k == "follow":
            first = next((j for j in info.inputs[i] if kind[j] != "weight"), None)
            on_acc[i] = first is not None and on_acc[first]
    return weights_follow_users(info, on_acc)


def weights_follow_users(info: PlacementInput, on_acc: list) -> list:
    """Set, in place, each weight on the accelerator when any of its users is there. Returns ``on_acc``."""
    for i, k in enumerate(info.kind):
        if k == "weight":
            on_acc[i] = any(on_acc[u] for u in info.users[i])
    return on_acc


_INF = -1  # marks an infinite capacity in the edge lists


@dataclass
class FlowNetwork:
    """Stone's network for one graph, built once and cut under any weighting of the three resources.

    Vertex 0 = S (CPU), 1 = T (accelerator), node i = ``vert[i]`` (-1: not in the network), auxiliaries after.
    Edge k runs ``rows[k] -> cols[k]``; its capacity is ``w_cpu * cpu[k] + w_acc * acc[k] + w_link * link[k]``
    seconds (``infinite[k]``: never cut). Terminal edges carry one op's time on one device, transfer edges the
    link time of one value, so a cut under weights ``w`` costs ``w . (cpu busy, accelerator busy, link busy)``
    of the placement it describes."""

    rows: list
    cols: list
    cpu: list
    acc: list
    link: list
    infinite: list
    vert: list
    free: set
    size: int


def build_network(info: PlacementInput, acc: DeviceProfile) -> FlowNetwork:
    """The flow network of ``info`` for accelerator profile ``acc`` (see the module docstring)."""
    kind, leader, times, users = info.kind, info.leader, info.times, info.users
    n = len(kind)
    vert = [-1] * n
    for i in range(n):
        k = kind[i]
        if k == "pinned":
            vert[i] = 0
        elif k in ("free", "getitem"):
            vert[i] = 0 if kind[leader[i]] == "pinned" else leader[i] + 2
    rows: list = []
    cols: list = []
    cpu_c: list = []
    acc_c: list = []
    link_c: list = []
    inf: list = []

    def edge(u, v, c=0.0, a=0.0, l=0.0, infinite=False):
        rows.append(u), cols.append(v), cpu_c.append(c), acc_c.append(a), link_c.append(l), inf.append(infinite)

    to_acc = [0.0] * (n + 2)
    to_cpu = [0.0] * (n + 2)
    free = set()
    for i in range(n):
        v = vert[i]
        if v > 0:
            free.add(v)
            to_cpu[v] += times[i][0]
            to_acc[v] += times[i][1]
    for v in sorted(free):
        a, c = to_acc[v], to_cpu[v]
        if a > 0:
            edge(0, v, a=a)
        if c > 0:
            edge(v, 1, c=c)
    aux = n + 2
    for i in range(n):
        u = vert[i]
        if u < 0:
            continue
        consumers = set()
        pinned_consumer = False
        for j in users[i]:
            w = vert[j]
            if w == u or w < 0:
                continue  # same vertex (a getitem of this node), or a bookkeeping/weight user
            if w == 0:
                pinned_consumer = True
            else:
                consumers.add(w)
        if not consumers and not (pinned_consumer and u != 0):
            continue
        # a value that is not a tensor (a SymInt) costs 1 ps: it stays with its consumers, no transfer counted
        t = acc.link_latency + info.nbytes[i] / acc.link_bandwidth if info.tensor[i] else 1 / PS
        if consumers:  # way out: u on the CPU, some consumer on the accelerator
            if len(consumers) == 1:
                edge(u, next(iter(consumers)), l=t)
            else:
                edge(u, aux, l=t)
                for w in sorted(consumers):
                    edge(aux, w, infinite=True)
                aux += 1
        if u != 0:  # way back: u on the accelerator, some consumer on the CPU
            if pinned_consumer:
                edge(0, u, l=t)
            elif len(consumers) == 1:
                edge(next(iter(consumers)), u, l=t)
            elif consumers:
                for w in sorted(consumers):
                    edge(w, aux, infinite=True)
                edge(aux, u, l=t)
                aux += 1
    return FlowNetwork(rows, cols, cpu_c, acc_c, link_c, inf, vert, free, aux)


def cut_network(net: FlowNetwork, weights=(1.0, 1.0, 1.0), solver: str = "auto",
                flow_func=nx.algorithms.flow.preflow_push) -> Placement:
    """Minimum cut of ``net`` with capacities weighted by ``weights`` = (cpu, accelerator, link). Returns a
    :class:`Placement` whose ``cut_seconds`` is the weighted sum of busy times the cut pays; ``on_acc`` covers
    the network's nodes only (the caller fills getitems, bookkeeping and weights)."""
    n = len(net.vert)
    on_acc = [False] * n
    if not net.free:
        return Placement(on_acc, 0.0, 0, 0, "none")
    wc, wa, wl = (float(w) for w in weights)
    caps = [_INF if f else max(1, round((wc * c + wa * a + wl * l) * PS))
            for c, a, l, f in zip(net.cpu, net.acc, net.link, net.infinite)]
    if solver == "auto":
        solver = "scipy" if _scipy_flow() is not None else "networkx"
    if solver == "scipy":
        cut_value, cpu_side = _cut_scipy(net.rows, net.cols, caps, net.size)
    else:
        cut_value, cpu_side = _cut_networkx(net.rows, net.cols, caps, flow_func)
    for i in range(n):
        v = net.vert[i]
        if v > 0:
            on_acc[i] = v not in cpu_side
    return Placement(on_acc, cut_value / PS, len(net.free) + (net.size - n - 2) + 2, len(net.rows), solver)


def _min_cut(info: PlacementInput, acc: DeviceProfile, solver: str, flow_func,
             weights=(1.0, 1.0, 1.0)) -> Placement:
    """Build the flow network and cut it once (the latency objective: every resource weighted 1)."""
    return cut_network(build_network(info, acc), weights, solver, flow_func)


def _scipy_flow():
    try:
        # local: scipy is the fast path; without it networkx solves the cut
        from scipy.sparse.csgraph import maximum_flow
    except ImportError:  # scipy is optional: networkx is the reference solver
        return None
    return maximum_flow


def _cut_networkx(rows: list, cols: list, values: list, flow_func) -> tuple[float, set]:
    """Minimum S-T cut with networkx, solved per connected component of the network without S and T (the
    components are independent subproblems). Returns (cut value in ps, vertices on S's side)."""
    caps: dict = {}
    for u, v, c in zip(rows, cols, values):
        old = caps.get((u, v), 0)
        caps[(u, v)] = None if (c == _INF or old is None) else old + c
    parent: dict = {}

    def find(x):
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(x, x) != root:
            parent[x], x = root, parent[x]
        return root

    for (u, v) in caps:
        if u in (0, 1) or v in (0, 1):
            continue
        ru, rv = find(u), find(v)
        if ru != rv:
            parent[ru] = rv
    groups: dict = {}
    for (u, v), c in caps.items():
        inner = v if u in (0, 1) else u
        groups.setdefault(find(inner), []).append((u, v, c))
    total, cpu_side = 0, {0}
    for edges in groups.values():
        inner = {x for u, v, _ in edges for x in (u, v)} - {0, 1}
        if len(inner) == 1:  # one vertex: pay the cheaper of its two terminal edges
            (x,) = inner
            to_acc = sum(c for u, v, c in edges if u == 0)
            to_cpu = sum(c for u, v, c in edges if v == 1)
            total += min(to_acc, to_cpu)
            if to_acc > to_cpu:  # S -> x keeps residual capacity: x is reachable from S
                cpu_side.add(x)
            continue
        g = nx.DiGraph()
        g.add_node(0)
        g.add_node(1)
        g.add_edges_from((u, v) if c is None else (u, v, {"capacity": c}) for u, v, c in edges)
        value, (side, _) = nx.minimum_cut(g, 0, 1, flow_func=flow_func)
        total += value
        cpu_side |= side
    return total, cpu_side


def _cut_scipy(rows: list, cols: list, values: list, size: int) -> tuple[float, set]:
    """Minimum S-T cut with scipy's Dinic (C, int32 capacities: times are rescaled so the finite capacities
    sum below 2**29; infinite edges, never parallel to another edge, get 2**30). Returns (cut value in ps,
    vertices on S's side)."""
    # local: scipy is the fast path; without it networkx solves the cut
    import numpy as np
    import scipy.sparse as sps
    from scipy.sparse.csgraph import breadth_first_order

    # finite capacities are clamped so that huge size estimates cannot overflow int64 (they are rescaled next)
    vals = np.asarray([v if v == _INF else min(int(v), 2**62) for v in values], dtype=np.int64)
    infinite = vals == _INF
    finite_total = int(vals[~infinite].sum())
    unit = max(1, -(-finite_total // 2**29))
    data = np.where(infinite, 2**30, np.maximum(1, (vals + unit // 2) // unit)).astype(np.int32)
    cap = sps.csr_array((data, (np.asarray(rows), np.asarray(cols))), shape=(size, size))
    cap.sum_duplicates()
    result = _scipy_flow()(cap, 0, 1)
    residual = (cap - result.flow).tocsr()
    residual.data[residual.data < 0] = 0
    residual.eliminate_zeros()
    reached = breadth_first_order(residual, 0, directed=True, return_predecessors=False)
    return float(result.flow_value) * unit, set(reached.tolist())
