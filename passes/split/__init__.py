"""The ``split`` pass: place every op on the CPU or the accelerator by op support and estimated time, then
group the placement into maximal, acyclic partitions with few host <-> accelerator transfers.

``split{target=xla,policy=cost,min_ops=2,profile=h100}``

1. support: each target's op table (:mod:`fxopt.ir.targets`); unsupported ops are pinned to the CPU;
2. placement (:mod:`fxopt.passes.split.placement`): ``policy=cost`` solves Stone's assignment as a minimum
   s-t cut over op times (cost model + device profiles) and transfer times; ``policy=support`` puts every
   supported op on the accelerator;
3. partitions (:mod:`fxopt.passes.split.partition`): device-aware topological sort, acyclic by construction;
   accelerator partitions with fewer than ``min_ops`` ops fall back to the CPU (repeated until none is left).

The graph is not restructured: the pass records ``node.meta["placement"]`` (``"cpu"`` or the target name) on
every node, ``node.meta["partition"]`` on every call_function node, ``node.meta["resident_on"]`` on weights,
and one ``{"kind": "partitions", ...}`` entry in ``program.regions``. :func:`extract_partitions` builds a
runnable GraphModule per partition and :func:`run_partitions` runs them in order.
"""
from __future__ import annotations

import gc
import time
from collections import Counter
from dataclasses import dataclass
from typing import Literal

import torch
import torch.fx

from fxopt.ir.targets import DEFAULT_PROFILES, TARGETS, data_source, packet_name, support_table
from fxopt.errors import InputError
from fxopt.ir.devices import PROFILES, get_profile
from fxopt.ir.partitions import (REGION_KIND, extract_partitions, partition_module, partitions_region,
                                  run_partitions)
from fxopt.ir.program import Program
from fxopt.passes.base import Pass, PassResult
from fxopt.passes.split.partition import describe, form_partitions
from fxopt.passes.split.placement import analyse, place

__all__ = ["Split", "extract_partitions", "partition_module", "run_partitions", "partitions_region",
           "split_program"]


@dataclass(frozen=True)
class Split(Pass):
    """Place ops on the CPU or an accelerator and record acyclic partitions (see the module docstring).

    Options: ``target`` (neuron|tensorrt|xla, or auto: the program's target when it is one of those, else
    xla), ``policy`` (cost: minimum estimated time including transfers; support: every supported op on the
    accelerator), ``min_ops`` (smallest accelerator partition, in ops; smaller ones run on the CPU),
    ``profile`` (accelerator device profile from ``fxopt.ir.devices.PROFILES``; auto: neuron->inf1,
    tensorrt->t4, xla->h100)."""

    name = "split"
    ensures = frozenset({"shapes", "placement"})

    target: Literal["auto", "neuron", "tensorrt", "xla"] = "auto"
    policy: Literal["cost", "support"] = "cost"
    min_ops: int = 2
    profile: str = "auto"

    def __post_init__(self) -> None:
        if self.min_ops < 1:
            raise InputError(f"pass 'split': min_ops must be >= 1, got {self.min_ops}")
        if self.profile != "auto":
            p = PROFILES.get(self.profile.lower())
            if p is None:
                raise InputError(f"pass 'split': unknown profile '{self.profile}' "
                                 f"(profiles: auto, {', '.join(sorted(PROFILES))})")
            if p.kind != "accelerator":
                raise InputError(f"pass 'split': profile '{self.profile}' is a CPU; give an accelerator "
                                 f"profile ({', '.join(sorted(k for k, v in PROFILES.items() if v.kind != 'cpu'))})")

    def resolve(self, program: Program) -> tuple[str, str]:
        """The target and accelerator profile name this run uses for ``program``."""
        target = self.target
        if target == "auto":
            target = program.target if program.target in TARGETS else "xla"
        profile = DEFAULT_PROFILES[target] if self.profile == "auto" else self.profile.lower()
        return target, profile

    def run(self, program: Program) -> PassResult:
        """Place and partition ``program``; modified only when placements, partitions or the region change."""
        target, profile = self.resolve(program)
        gc_was_enabled = gc.isenabled()
        gc.disable()  # the pass allocates many small lists; collections would rescan the whole FX graph
        try:
            plan = split_program(program, target, get_profile(profile), self.policy, self.min_ops)
        finally:
            if gc_was_enabled:
                gc.enable()
        graph = program.graph
        changed = _differs(graph, plan, program)
        notes = plan["notes"]
        if changed:
            for node in graph.nodes:
                node.meta["placement"] = plan["placement"][node.name]
                if node.name in plan["partition"]:
                    node.meta["partition"] = plan["partition"][node.name]
                else:
                    node.meta.pop("partition", None)
                if node.name in plan["resident_on"]:
                    node.meta["resident_on"] = plan["resident_on"][node.name]
                else:
                    node.meta.pop("resident_on", None)
            program.regions = [r for r in program.regions
                               if not (isinstance(r, dict) and r.get("kind") == REGION_KIND)]
            program.regions.append(plan["region"])
        return PassResult(modified=changed, details=plan["details"], notes=notes)


def _differs(graph: torch.fx.Graph, plan: dict, program: Program) -> bool:
    for node in graph.nodes:
        if node.meta.get("placement") != plan["placement"][node.name]:
            return True
        if node.meta.get("partition") != plan["partition"].get(node.name):
            return True
        if node.meta.get("resident_on") != plan["resident_on"].get(node.name):
            return True
    return partitions_region(program, required=False) != plan["region"]


def split_program(program: Program, target: str, acc, policy: str = "cost", min_ops: int = 2) -> dict:
    """Compute (without writing anything) the placement and partitions of ``program`` for ``target`` on
    accelerator profile ``acc``. Returns ``{"placement": {node name: device}, "partition": {name: partition},
    "resident_on": {weight node name: [devices]}, "region": dict, "details": dict, "notes": [str]}``."""
    start = time.perf_counter()
    cpu = get_profile("cpu")
    table = support_table(target)
    graph = program.graph
    info = analyse(graph, table, cpu, acc)
    t_analyse = time.perf_counter()
    placement = place(info, acc, policy)
    t_place = time.perf_counter()
    nodes, kind = info.nodes, info.kind
    on_acc = placement.on_acc
    n = len(nodes)
    is_call = [node.op == "call_function" for node in nodes]
    lazy = set()  # supported nodes computed from weights only: they join their first reader's partition
    for i in range(n):
        if kind[i] in ("free", "getitem") and is_call[i] and all(kind[j] == "weight" or j in lazy
                                                                  for j in info.inputs[i]):
            lazy.add(i)
    counted = [kind[i] not in ("getitem", "follow") for i in range(n)]
    dev0 = [target if on_acc[i] else "cpu" for i in range(n)]
    parts = form_partitions(is_call, info.inputs, info.users, dev0, lazy=lazy, counted=counted,
                            min_ops=min_ops)
    dev = list(dev0)
    for p in parts:
        for i in p.members:
            dev[i] = p.device
    fallbacks = sum(1 for i in range(n) if dev0[i] != dev[i] and dev[i] == "cpu" and counted[i])
    t_part = time.perf_counter()

    counts = Counter(p.device for p in parts)
    names, seen = [], Counter()
    for p in parts:
        names.append(f"{p.device}_{seen[p.device]}")
        seen[p.device] += 1
    records, crossing = describe(nodes, info.inputs, info.users, info.tensor, info.nbytes, parts, names)

    placement_of, partition_of, resident = {}, {}, {}
    for i, node in enumerate(nodes):
        placement_of[node.name] = dev[i]
        if kind[i] == "weight":
            where = sorted({dev[u] for u in info.users[i]}, key=lambda d: (d != "cpu", d))
            resident[node.name] = where or ["cpu"]
            placement_of[node.name] = target if target in where else "cpu"
    for rec in records:
        for name in rec["nodes"]:
            partition_of[name] = rec["name"]

    # estimated time: every op on its device, plus one transfer per crossing (value, reading partition)
    before = sum(info.times[i][0] for i in range(len(nodes)))
    after = sum(info.times[i][1] if dev[i] != "cpu" else info.times[i][0] for i in range(len(nodes))
                if nodes[i].op == "call_function")
    after += crossing.transfers * acc.link_latency + crossing.bytes / acc.link_bandwidth

    unsupported = Counter()
    reasons: dict[str, str] = {}
    by_name = {n.name: n for n in nodes}
    for name, why in info.why_not.items():
        node = by_name[name]
        pk = packet_name(node.target) if node.op == "call_function" else node.op
        unsupported[pk] += 1
        reasons.setdefault(pk, why)
    region = {
        "kind": REGION_KIND,
        "target": target,
        "profile": acc.name,
        "policy": policy,
        "min_ops": min_ops,
        "partitions": records,
        "transfers": {"count": crossing.transfers, "bytes": crossing.bytes},
        "estimated_time": {"before": before, "after": after},
    }
    n_acc = sum(1 for i, n in enumerate(nodes) if n.op == "call_function" and dev[i] != "cpu")
    n_calls = sum(1 for n in nodes if n.op == "call_function")
    details = {
        "target": target,
        "profile": acc.name,
        "policy": policy,
        "ops": {"cpu": n_calls - n_acc, target: n_acc},
        "unsupported": dict(sorted(unsupported.items())),
        "partitions": {"cpu": counts.get("cpu", 0), target: counts.get(target, 0)},
        "transfers": crossing.transfers,
        "transfer_bytes": crossing.bytes,
        "edges_cut": crossing.edges_cut,
        "estimated_us": {"before": round(before * 1e6, 3), "after": round(after * 1e6, 3)},
        "min_ops_fallback_ops": fallbacks,
        "seconds": {"analyse": round(t_analyse - start, 4), "place": round(t_place - t_analyse, 4),
                    "partition": round(t_part - t_place, 4)},
        "flow_network": {"vertices": placement.network_vertices, "edges": placement.network_edges,
                         "solver": placement.solver},
    }
    notes = [f"support data: {data_source(target)}"]
    if n_acc == 0 and n_calls:
        notes.insert(0, f"nothing placed on {target}: " + (
            f"the cost model ({acc.name} profile) estimates no placement faster than the CPU alone "
            f"({before * 1e6:.3g} us); policy=support places every supported op on {target}"
            if policy == "cost" else "no op is supported there"))
    for pk, count in sorted(unsupported.items()):
        notes.append(f"on CPU (unsupported on {target}): {pk} x{count}: {reasons[pk]}")
    return {"placement": placement_of, "partition": partition_of, "resident_on": resident,
            "region": region, "details": details, "notes": notes}


# ------------------------------------------------------------------------------------- using the partitions
