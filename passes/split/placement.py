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

__all__ = ["PlacementInput", "Placement", "analyse", "place", "node_times", "is_tensor_value", "PS"]

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
          flow_func=nx.algorithms.flow.preflow_push) -> Placement:
    """Decide the device of every node. Returns a :class:`Placement` whose ``on_acc[i]`` is True when node
    ``i`` runs on the accelerator. Weights get True when any user runs on the accelerator (the pass records
    where they are resident); bookkeeping nodes follow their first non-weight input. ``solver``: "networkx"
    (reference; ``flow_func`` per connected component), "scipy" (scipy's Dinic in C, much faster on large
    graphs) or "auto" (scipy when it is installed)."""
    n = len(info.nodes)
    kind, leader = info.kind, info.leader
    if policy == "support":
        result = Placement([k in ("free", "getitem") for k in kind])
    else:
        result = _min_cut(info, acc, solver, flow_func)
    on_acc = result.on_acc
    for i in range(n):  # graph order is topological: inputs are decided first
        k = kind[i]
        if k == "getitem":
            on_acc[i] = on_acc[leader[i]]
        elif k == "follow":
            first = next((j for j in info.inputs[i] if kind[j] != "weight"), None)
            on_acc[i] = first is not None and on_acc[first]
    for i in range(n):
        if kind[i] == "weight":
            on_acc[i] = any(on_acc[u] for u in info.users[i])
    return result


_INF = -1  # marks an infinite capacity in the edge lists


def _min_cut(info: PlacementInput, acc: DeviceProfile, solver: str, flow_func) -> Placement:
    """Build the flow network (vertex 0 = S, 1 = T, node i = i + 2, auxiliaries after) and cut it."""
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
    caps: list = []
    to_acc = [0.0] * (n + 2)
    to_cpu = [0.0] * (n + 2)
    free = set()
    for i in range(n):
        v = vert[i]
        if v > 0:
            free.add(v)
            to_cpu[v] += times[i][0]
            to_acc[v] += times[i][1]
    for v in free:
        a, c = to_acc[v], to_cpu[v]
        if a > 0:
            rows.append(0), cols.append(v), caps.append(max(1, round(a * PS)))
        if c > 0:
            rows.append(v), cols.append(1), caps.append(max(1, round(c * PS)))
    link_ps = acc.link_latency * PS
    per_byte_ps = PS / acc.link_bandwidth
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
        t = max(1, round(link_ps + info.nbytes[i] * per_byte_ps)) if info.tensor[i] else 1
        if consumers:  # way out: u on the CPU, some consumer on the accelerator
            if len(consumers) == 1:
                rows.append(u), cols.append(next(iter(consumers))), caps.append(t)
            else:
                rows.append(u), cols.append(aux), caps.append(t)
                for w in consumers:
                    rows.append(aux), cols.append(w), caps.append(_INF)
                aux += 1
        if u != 0:  # way back: u on the accelerator, some consumer on the CPU
            if pinned_consumer:
                rows.append(0), cols.append(u), caps.append(t)
            elif len(consumers) == 1:
                rows.append(next(iter(consumers))), cols.append(u), caps.append(t)
            elif consumers:
                for w in consumers:
                    rows.append(w), cols.append(aux), caps.append(_INF)
                rows.append(aux), cols.append(u), caps.append(t)
                aux += 1
    on_acc = [False] * n
    if not free:
        return Placement(on_acc, 0.0, 0, 0, "none")
    if solver == "auto":
        solver = "scipy" if _scipy_flow() is not None else "networkx"
    if solver == "scipy":
        cut_value, cpu_side = _cut_scipy(rows, cols, caps, aux)
    else:
        cut_value, cpu_side = _cut_networkx(rows, cols, caps, flow_func)
    for i in range(n):
        v = vert[i]
        if v > 0:
            on_acc[i] = v not in cpu_side
    return Placement(on_acc, cut_value / PS, len(free) + (aux - n - 2) + 2, len(rows), solver)


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
