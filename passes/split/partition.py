"""Partitions for ``split``: group placed nodes into maximal, acyclic, single-device partitions.

:func:`form_partitions` runs Kahn's topological sort with one ready queue per device and drains the current
device's queue before switching; a new partition starts at each switch. Every partition then reads only
values made by earlier partitions (or graph inputs and weights), so the partition graph is acyclic by
construction, in O(nodes + edges). The sort is run starting from each device and the result with fewer
partitions is kept. Within a queue nodes pop in graph order, so results are deterministic.

``min_ops``: when an accelerator phase ends with fewer than ``min_ops`` counted ops, its nodes are relabelled
CPU and appended to the CPU partition just before it (nothing after it has been scheduled yet, so this stays
acyclic) and the sort goes on: a too-small accelerator island never becomes a partition.

Constant nodes (computed from weights only, such as ``permute(weight)`` or ``arange``) are not scheduled
eagerly: each joins the first partition that reads it, on that partition's device, so weight layout ops stay
with the matmul that uses them.

:func:`describe` turns partitions into records (inputs, outputs, weights) and counts what crosses devices.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import networkx as nx

__all__ = ["Part", "form_partitions", "describe", "Crossings", "is_acyclic"]


@dataclass
class Part:
    """One partition: ``device`` and its call_function node positions in graph order."""

    device: str
    members: list = field(default_factory=list)


def _schedule(calls, preds, succs, device, start, counted, min_ops, host) -> list[Part]:
    indeg = {i: len(preds[i]) for i in calls}
    ready: dict[str, list] = {host: []}
    for i in calls:
        q = ready.setdefault(device[i], [])
        if indeg[i] == 0:
            q.append(i)
    parts: list[Part] = []
    cur = start
    while True:
        q = ready.get(cur)
        if not q:
            nonempty = [d for d, dq in ready.items() if dq]
            if not nonempty:
                break
            cur = min(nonempty, key=lambda d: ready[d][0])  # the device whose next node comes first
            q = ready[cur]
        members = []
        while q:
            i = heapq.heappop(q)
            members.append(i)
            for j in succs[i]:
                indeg[j] -= 1
                if indeg[j] == 0:
                    heapq.heappush(ready[device[j]], j)
        if cur != host and sum(1 for i in members if counted[i]) < min_ops:
            # too small for the accelerator: run it on the host, appended to the host partition before it
            if parts and parts[-1].device == host:
                parts[-1].members.extend(members)
            else:
                parts.append(Part(host, members))
            cur = host
            continue
        parts.append(Part(cur, members))
    for p in parts:
        p.members.sort()
    return parts


def form_partitions(is_call: list, inputs: list, users: list, device: list, *, lazy=frozenset(),
                    counted: list | None = None, min_ops: int = 1, host: str = "cpu") -> list[Part]:
    """Partition the nodes with ``is_call[i]`` (positions in graph order; ``inputs[i]``/``users[i]``: positions
    of distinct inputs and users) placed on ``device[i]``. ``lazy``: constant nodes that join their first
    reader's partition (and device); ``counted[i]``: whether node i counts towards ``min_ops`` (default all);
    accelerator phases with fewer than ``min_ops`` counted nodes run on ``host``. Returns partitions in
    execution order: single-device, every dependency from an earlier partition to a later one. Of the two
    starting devices, keeps the result with fewer partitions (ties: fewer accelerator partitions)."""
    n = len(is_call)
    counted = counted if counted is not None else [True] * n
    calls = [i for i in range(n) if is_call[i] and i not in lazy]
    sched = set(calls)
    preds = {i: [j for j in inputs[i] if j in sched] for i in calls}
    succs: dict = {i: [] for i in calls}
    for i in calls:
        for j in preds[i]:
            succs[j].append(i)
    best = None
    if calls:
        for start in sorted({device[i] for i in calls}, key=lambda d: (d != host, d)):
            parts = _schedule(calls, preds, succs, device, start, counted, min_ops, host)
            key = (len(parts), sum(p.device != host for p in parts))
            if best is None or key < best[0]:
                best = (key, parts)
    parts = best[1] if best else []
    return _attach_lazy(n, is_call, users, lazy, parts, host)


def _attach_lazy(n, is_call, users, lazy, parts: list[Part], host: str) -> list[Part]:
    """Put each lazy (constant) node in the first partition that reads it; walking backwards handles chains
    of constants. A constant only the graph output reads goes to the first host partition, or, when every
    partition is on the accelerator, to the last one: a partition of its own would be one more call per run
    for a value that costs nothing."""
    if not lazy:
        return parts
    part_of: dict = {i: k for k, p in enumerate(parts) for i in p.members}
    for i in sorted(lazy, reverse=True):
        readers = [part_of[u] for u in users[i] if is_call[u] and u in part_of]
        if readers:
            part_of[i] = min(readers)
        else:
            k = next((k for k, p in enumerate(parts) if p.device == host), None)
            if k is None and parts:
                k = len(parts) - 1
            elif k is None:
                parts.insert(0, Part(host, []))
                k = 0
            part_of[i] = k
    new = [Part(p.device, []) for p in parts]
    for i in sorted(part_of):
        new[part_of[i]].members.append(i)
    return [p for p in new if p.members]


@dataclass
class Crossings:
    """What crosses partitions: ``transfers`` (tensor values read by a partition, or the graph's output, on
    another device: one per value and reading partition), their ``bytes``, ``edges_cut`` (data edges between
    call_function nodes in different partitions) and ``distinct_values`` (values crossing at least once)."""

    transfers: int = 0
    bytes: int = 0
    edges_cut: int = 0
    distinct_values: int = 0


def describe(nodes: list, inputs: list, users: list, tensor: list, nbytes: list, parts: list[Part],
             names: list[str]) -> tuple[list[dict], Crossings]:
    """Records ``{"name", "device", "nodes", "inputs", "outputs", "weights"}`` for ``parts`` (named ``names``;
    node names in graph order) and the :class:`Crossings`. Graph inputs live on the CPU ("cpu"), the graph's
    output is read there; weights are resident wherever they are read and never count."""
    part_of: dict[int, int] = {i: k for k, p in enumerate(parts) for i in p.members}
    records, crossing = [], Crossings()
    crossed: set = set()
    outputs_of: list[set] = [set() for _ in parts]
    for k, p in enumerate(parts):
        ins, weights = set(), set()
        for i in p.members:
            for a in inputs[i]:
                node = nodes[a]
                if node.op == "get_attr":
                    weights.add(a)
                    continue
                ka = part_of.get(a)
                if ka == k:
                    continue
                if ka is not None:
                    crossing.edges_cut += 1
                if a in ins:
                    continue
                ins.add(a)
                if ka is not None:
                    outputs_of[ka].add(a)
                src = "cpu" if ka is None else parts[ka].device
                if src != p.device and tensor[a]:
                    crossing.transfers += 1
                    crossing.bytes += nbytes[a]
                    crossed.add(a)
        records.append({"name": names[k], "device": p.device,
                        "nodes": [nodes[i].name for i in p.members],
                        "inputs": [nodes[a].name for a in sorted(ins)],
                        "outputs": [],
                        "weights": [nodes[a].target for a in sorted(weights)]})
    out = next((i for i in range(len(nodes) - 1, -1, -1) if nodes[i].op == "output"), None)
    if out is not None:
        for a in inputs[out]:
            ka = part_of.get(a)
            if ka is None:
                continue
            outputs_of[ka].add(a)
            if parts[ka].device != "cpu" and tensor[a]:
                crossing.transfers += 1
                crossing.bytes += nbytes[a]
                crossed.add(a)
    for k, rec in enumerate(records):
        rec["outputs"] = [nodes[i].name for i in sorted(outputs_of[k])]
    crossing.distinct_values = len(crossed)
    return records, crossing


def is_acyclic(records: list[dict], nodes_by_name: dict) -> bool:
    """True when the graph of partitions (an edge where one partition reads another's node) has no cycle.
    ``records`` as made by :func:`describe`; ``nodes_by_name``: name -> FX node."""
    owner = {name: rec["name"] for rec in records for name in rec["nodes"]}
    g = nx.DiGraph()
    g.add_nodes_from(rec["name"] for rec in records)
    for rec in records:
        for name in rec["nodes"]:
            for a in nodes_by_name[name].all_input_nodes:
                src = owner.get(a.name)
                if src is not None and src != rec["name"]:
                    g.add_edge(src, rec["name"])
    return nx.is_directed_acyclic_graph(g)
