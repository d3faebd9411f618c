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

import time
from collections import Counter
from dataclasses import dataclass
from typing import Literal

import torch
import torch.fx

from fxopt.ir.targets import (DEFAULT_PROFILES, NEURON_DEVICES, TARGETS, data_source, packet_name,
                              support_table)
from fxopt.errors import InputError
from fxopt.ir import decode_graphs, loops
from fxopt.ir.gc_pause import collections_paused
from fxopt.ir.device_files import is_profile_path, resolve_profile
from fxopt.ir.devices import PROFILES, DeviceProfile, get_profile
from fxopt.ir.partitions import (REGION_KIND, extract_partitions, partition_module, partitions_region,
                                  run_partitions)
from fxopt.ir.program import Program
from fxopt.passes.base import Pass, PassResult
from fxopt.passes.split.partition import describe, form_partitions
from fxopt.passes.split.objectives import DEFAULT_PRICES, Busy, busy_of, objective_weights, score, \
    sweep_throughput
from fxopt.passes.split.capacity import WEIGHT_SHARE, human_bytes, keep_within_memory
from fxopt.passes.split.placement import (analyse, build_network, complete, cut_network, support_placement,
                                         weights_follow_users)

__all__ = ["Split", "extract_partitions", "partition_module", "run_partitions", "partitions_region",
           "split_program"]


@dataclass(frozen=True)
class Split(Pass):
    """Place ops on the CPU or an accelerator and record acyclic partitions (see the module docstring).

    Options: ``target`` (neuron|tensorrt|xla, or auto: the program's target when it is one of those, else
    xla), ``policy`` (cost: minimise the objective's estimate including transfers; support: every supported
    op on the accelerator), ``objective`` (latency: one request's total time; throughput: the busiest of
    CPU, accelerator and link per request, as a pipelined server sees it; cost: US$ per request at
    ``price_cpu``/``price_acc`` $/h, 0 = the profiles' defaults), ``min_ops`` (smallest accelerator partition,
    in ops; smaller ones run on the CPU), ``profile`` (accelerator device profile: a name from
    ``fxopt.ir.devices.PROFILES``, or a profile file of kind accelerator, see :mod:`fxopt.ir.device_files`;
    auto: neuron->inf1, tensorrt->t4, xla->h100), ``cpu_profile`` (the host's profile: ``cpu``, or a file
    ``fxopt calibrate`` wrote; a file is a spec with ``/`` or ending in ``.json``, and cannot hold ``,`` or
    ``}``), ``acc_memory`` (bytes of accelerator memory for the weights read there; 0: 80% of the profile's
    memory; inf: no limit; the readers of the largest weights that do not fit stay on the CPU)."""

    name = "split"
    ensures = frozenset({"shapes", "placement"})

    target: Literal["auto", "neuron", "tensorrt", "xla"] = "auto"
    policy: Literal["cost", "support"] = "cost"
    objective: Literal["latency", "throughput", "cost"] = "latency"
    min_ops: int = 2
    profile: str = "auto"
    cpu_profile: str = "cpu"
    price_cpu: float = 0.0
    price_acc: float = 0.0
    acc_memory: float = 0.0

    def __post_init__(self) -> None:
        if self.min_ops < 1:
            raise InputError(f"pass 'split': min_ops must be >= 1, got {self.min_ops}")
        if not self.acc_memory >= 0:
            raise InputError(f"pass 'split': acc_memory must be a number of bytes >= 0 (0: "
                             f"{WEIGHT_SHARE:.0%} of the profile's memory; inf: no limit), got {self.acc_memory}")
        for field_name in ("price_cpu", "price_acc"):
            value = getattr(self, field_name)
            if not (value >= 0 and value < float("inf")):
                raise InputError(f"pass 'split': {field_name} must be a price in US$/h >= 0 (0: the default), "
                                 f"got {value}")
        if self.profile != "auto":
            self.accelerator_profile("xla")
        self.host_profile()

    def accelerator_profile(self, target: str) -> DeviceProfile:
        """The accelerator's DeviceProfile for ``target``: the target's default when ``profile=auto``, else
        the built-in profile or file ``profile`` names. Raises InputError (one line) for an unknown name, a
        bad file or a CPU profile."""
        spec = DEFAULT_PROFILES[target] if self.profile == "auto" else self.profile
        if not is_profile_path(spec) and spec.strip().lower() not in PROFILES:
            raise InputError(f"pass 'split': unknown profile '{spec}' (profiles: auto, {', '.join(sorted(PROFILES))}, "
                             f"or a profile file: a path with '/' or ending in .json)")
        acc = _resolve(spec, "profile")
        if acc.kind != "accelerator":
            hint = (f"pass a CPU profile file as cpu_profile={spec}" if is_profile_path(spec) else
                    f"give an accelerator profile ({', '.join(sorted(k for k, v in PROFILES.items() if v.kind != 'cpu'))})")
            raise InputError(f"pass 'split': profile '{spec}' is a CPU; {hint}")
        return acc

    def host_profile(self) -> DeviceProfile:
        """The CPU side's DeviceProfile: the built-in ``cpu`` or the file ``cpu_profile`` names (what ``fxopt
        calibrate`` writes). Raises InputError (one line) for an unknown name, a bad file or an accelerator."""
        cpu = _resolve(self.cpu_profile, "cpu_profile")
        if cpu.kind != "cpu":
            raise InputError(f"pass 'split': cpu_profile '{self.cpu_profile}' is an accelerator profile; give a CPU "
                             f"profile (cpu, or a file written by `fxopt calibrate --device cpu`) and put "
                             f"accelerators in profile=")
        return cpu

    def resolve(self, program: Program) -> tuple[str, str]:
        """The target and accelerator profile name this run uses for ``program``."""
        target = self.target
        if target == "auto":
            target = program.target if program.target in TARGETS else "xla"
        if self.profile == "auto":
            return target, DEFAULT_PROFILES[target]
        return target, self.profile if is_profile_path(self.profile) else self.profile.strip().lower()

    def prices(self, cpu_name: str, acc_name: str) -> tuple[float, float]:
        """(cpu, accelerator) US$/h: the options, or the defaults of the two profiles."""
        return (self.price_cpu or DEFAULT_PRICES.get(cpu_name, DEFAULT_PRICES["cpu"]),
                self.price_acc or DEFAULT_PRICES.get(acc_name, 1.0))

    def run(self, program: Program) -> PassResult:
        """Place and partition ``program``; modified only when placements, partitions or the region change.
        A decode loop in partitions (``unroll``) is split piece by piece (see :meth:`run_pieces`)."""
        region = loops.decode_region(program)
        if region is not None and region["plan"]["variant"] == "partitioned":
            return self.run_pieces(program, region)
        target, _ = self.resolve(program)
        acc = self.accelerator_profile(target)
        cpu = self.host_profile()
        # the pass allocates many small lists; collections would rescan the whole FX graph
        with collections_paused():
            # a Neuron generation's profile (inf2, trn1, trn2) also picks that generation's operator list
            device = acc.name if target == "neuron" and acc.name in NEURON_DEVICES else None
            plan = split_program(program, target, acc, self.policy, self.min_ops, self.objective,
                                 self.prices(cpu.name, acc.name), cpu=cpu, table=support_table(target, device),
                                 weight_budget=self.acc_memory or None)
        graph = program.graph
        changed = _differs(graph, plan, program)
        notes = plan["notes"]
        if changed:
            for node in graph.nodes:
                node.meta["placement"] = plan["placement"][node.name]
                node.meta["placement_reason"] = plan["reason"][node.name]
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


    def run_pieces(self, program: Program, region: dict) -> PassResult:
        """Split each piece of a partitioned decode loop (encoder, init, each partition of steps) as a program
        of its own: the pieces' nodes get their placements, and ``region["piece_partitions"]`` maps each
        piece's submodule name to its partitions region, which an accelerator backend compiles the piece by.
        The top graph, which only calls the pieces and checks EOS, stays on the host."""
        pieces = region.setdefault("piece_partitions", {})
        changed, details, notes = False, {}, []
        for name in decode_graphs.piece_names(region["plan"]):
            piece = Program(graph_module=getattr(program.graph_module, name), example_inputs=(),
                            name=f"{program.name}.{name}", source=program.source, target=program.target)
            piece.regions = [pieces[name]] if name in pieces else []
            result = self.run(piece)
            changed = changed or result.modified
            pieces[name] = next(r for r in piece.regions if isinstance(r, dict) and r.get("kind") == REGION_KIND)
            details[name] = {k: v for k, v in result.details.items() if isinstance(v, (int, float, str))}
            notes += [f"{name}: {note}" for note in result.notes]
        stale = set(pieces) - set(decode_graphs.piece_names(region["plan"]))
        for name in stale:
            del pieces[name]
        return PassResult(modified=changed or bool(stale), details={"decode_pieces": details}, notes=notes)


def _resolve(spec: str, option: str) -> DeviceProfile:
    """``resolve_profile(spec)``, its one-line InputError prefixed with the pass and option."""
    try:
        return resolve_profile(spec)
    except InputError as exc:
        raise InputError(f"pass 'split': {option}={spec}: {exc}") from None


def _differs(graph: torch.fx.Graph, plan: dict, program: Program) -> bool:
    for node in graph.nodes:
        if node.meta.get("placement") != plan["placement"][node.name]:
            return True
        if node.meta.get("partition") != plan["partition"].get(node.name):
            return True
        if node.meta.get("resident_on") != plan["resident_on"].get(node.name):
            return True
        if node.meta.get("placement_reason") != plan["reason"][node.name]:
            return True
    return partitions_region(program, required=False) != plan["region"]


def split_program(program: Program, target: str, acc, policy: str = "cost", min_ops: int = 2,
                  objective: str = "latency", prices: tuple[float, float] | None = None, cpu=None,
                  table=None, weight_budget: float | None = None) -> dict:
    """Compute (without writing anything) the placement and partitions of ``program`` for ``target`` on
    accelerator profile ``acc`` (CPU profile ``cpu``, default the built-in one; support ``table``, default the
    target's), minimising ``objective`` (:mod:`fxopt.passes.split.objectives`; ``prices`` = (cpu, accelerator)
    US$/h for ``cost``), with the weights read on the accelerator within ``weight_budget`` bytes (default:
    :data:`~fxopt.passes.split.capacity.WEIGHT_SHARE` of ``acc.memory_bytes``; no limit when the profile has
    none; :mod:`fxopt.passes.split.capacity`). Returns ``{"placement": {node name: device}, "partition": {name: partition},
    "resident_on": {weight node name: [devices]}, "reason": {node name: why}, "region": dict,
    "details": dict, "notes": [str]}``."""
    start = time.perf_counter()
    cpu = cpu or get_profile("cpu")
    table = table or support_table(target)
    prices = prices or (DEFAULT_PRICES.get(cpu.name, DEFAULT_PRICES["cpu"]), DEFAULT_PRICES.get(acc.name, 1.0))
    graph = program.graph
    info = analyse(graph, table, cpu, acc)
    if weight_budget is None and acc.memory_bytes:
        weight_budget = WEIGHT_SHARE * acc.memory_bytes
    memory = keep_within_memory(info, weight_budget, acc.name) if weight_budget not in (None, float("inf")) \
        else None
    t_analyse = time.perf_counter()
    nodes, kind = info.nodes, info.kind
    n = len(nodes)
    is_call = [node.op == "call_function" for node in nodes]
    lazy = set()  # supported nodes computed from weights only: they join their first reader's partition
    for i in range(n):
        if kind[i] in ("free", "getitem") and is_call[i] and all(kind[j] == "weight" or j in lazy
                                                                  for j in info.inputs[i]):
            lazy.add(i)
    counted = [kind[i] not in ("getitem", "follow") for i in range(n)]

    def realise(on_acc: list):
        """Partitions of a cut placement; returns (parts, devices, final on_acc, min_ops fallbacks)."""
        dev0 = [target if on_acc[i] else "cpu" for i in range(n)]
        parts = form_partitions(is_call, info.inputs, info.users, dev0, lazy=lazy, counted=counted,
                                min_ops=min_ops)
        dev = list(dev0)
        for p in parts:
            for i in p.members:
                dev[i] = p.device
        final = weights_follow_users(info, [dev[i] != "cpu" and is_call[i] for i in range(n)])
        fell = {i for i in range(n) if dev0[i] != dev[i] and dev[i] == "cpu" and counted[i]}
        return parts, dev, final, fell

    def rank(busy: Busy) -> tuple:
        return (score(objective, busy, prices), busy.cpu + busy.acc + busy.link)

    all_cpu = complete(info, [False] * n)
    all_acc = complete(info, support_placement(info))
    net = None
    sweep = None
    solver = "none"

    def cost_placement():
        nonlocal net, sweep, solver
        net = build_network(info, acc)
        if objective == "throughput":
            def cut(weights):
                result = cut_network(net, weights)
                return complete(info, result.on_acc), result.cut_seconds
            sweep = sweep_throughput(cut, lambda on: busy_of(info, on, acc), candidates=(all_cpu, all_acc))
            solver = "auto"
            return sweep["on_acc"]
        result = cut_network(net, objective_weights(objective, prices))
        solver = result.solver
        return complete(info, result.on_acc)

    chosen = all_acc if policy == "support" else cost_placement()
    t_place = time.perf_counter()
    parts, dev, final, fell = realise(chosen)
    busy_after = busy_of(info, final, acc)
    busy_before = busy_of(info, all_cpu, acc)
    fallback = None
    if policy == "cost":
        # guarantee: never worse than running everything on the CPU, or every supported op on the accelerator
        options = [("all-cpu", busy_before, None)]
        if chosen is not all_acc:
            acc_parts = realise(all_acc)
            options.append(("all-accelerator", busy_of(info, acc_parts[2], acc), acc_parts))
        for label, busy, realised in options:
            if rank(busy) < rank(busy_after) and score(objective, busy, prices) < \
                    score(objective, busy_after, prices) * (1 - 1e-9):
                fallback = label
                busy_after = busy
                if realised is None:
                    parts, dev, final, fell = realise(all_cpu)
                else:
                    parts, dev, final, fell = realised
    compare = None
    if policy == "support" and any(chosen):
        compare = busy_of(info, realise(cost_placement())[2], acc)
    fallbacks = len(fell)
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
    reasons_of = placement_reasons(info, dev, placement_of, target, policy, objective, min_ops, fell, fallback,
                                   acc.name)
    if memory:
        reasons_of.update(memory["reasons"])

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
    unit = "usd_per_million_requests" if objective == "cost" else "us_per_request"
    scale = 1.0 if objective == "cost" else 1e6
    estimate = {"objective": objective, "unit": unit,
                "before": round(score(objective, busy_before, prices) * scale, 6),
                "after": round(score(objective, busy_after, prices) * scale, 6),
                "busy_us_before": busy_before.to_us(target), "busy_us_after": busy_after.to_us(target)}
    if objective == "cost":
        estimate["prices_usd_per_hour"] = {"cpu": prices[0], target: prices[1]}
    if sweep is not None:
        estimate["lower_bound"] = round(sweep["lower_bound"] * 1e6, 6)
        estimate["cuts"] = sweep["cuts"]
    if fallback:
        estimate["fallback"] = fallback
    if compare is not None:
        estimate["cost_policy_after"] = round(score(objective, compare, prices) * scale, 6)
    region = {
        "kind": REGION_KIND,
        "target": target,
        "profile": acc.name,
        "policy": policy,
        "objective": objective,
        "min_ops": min_ops,
        "partitions": records,
        "transfers": {"count": crossing.transfers, "bytes": crossing.bytes},
        "estimated_time": {"before": before, "after": after},
        "estimate": estimate,
        "unsupported": dict(sorted(unsupported.items())),
    }
    if memory is not None:
        region["memory"] = {k: memory[k] for k in ("budget_bytes", "weight_bytes", "resident_bytes",
                                                   "kept_on_host")}
    n_acc = sum(1 for i, n in enumerate(nodes) if n.op == "call_function" and dev[i] != "cpu")
    n_calls = sum(1 for n in nodes if n.op == "call_function")
    details = {
        "target": target,
        "profile": acc.name,
        "policy": policy,
        "objective": objective,
        "ops": {"cpu": n_calls - n_acc, target: n_acc},
        "unsupported": dict(sorted(unsupported.items())),
        "partitions": {"cpu": counts.get("cpu", 0), target: counts.get(target, 0)},
        "transfers": crossing.transfers,
        "transfer_bytes": crossing.bytes,
        "edges_cut": crossing.edges_cut,
        "estimated_us": {"before": round(before * 1e6, 3), "after": round(after * 1e6, 3)},
        "estimate": estimate,
        "min_ops_fallback_ops": fallbacks,
        "memory": region.get("memory"),
        "seconds": {"analyse": round(t_analyse - start, 4), "place": round(t_place - t_analyse, 4),
                    "partition": round(t_part - t_place, 4)},
        "flow_network": {"vertices": len(net.free) + (net.size - n - 2) + 2 if net else 0,
                         "edges": len(net.rows) if net else 0, "solver": solver},
    }
    fmt = (lambda v: f"${v:.4g} per million requests") if objective == "cost" else (lambda v: f"{v:.4g} us")
    notes = [f"support data: {data_source(target, getattr(table, 'device', None))}",
             f"{objective} estimate ({acc.name} profile): {fmt(estimate['before'])} all on the CPU -> "
             f"{fmt(estimate['after'])} (busy us: " + ", ".join(f"{k} {v:.4g}" for k, v in
                                                               estimate["busy_us_after"].items()) + ")"]
    if memory and memory["kept_on_host"]:
        kept = memory["kept_on_host"]
        notes.append(f"memory: {len(kept)} weight(s) kept on the host with their readers ({', '.join(kept[:3])}"
                     f"{', ...' if len(kept) > 3 else ''}): the weights supported ops read "
                     f"({human_bytes(memory['weight_bytes'])}) exceed {acc.name}'s weight budget "
                     f"({human_bytes(memory['budget_bytes'])}; split{{acc_memory=BYTES}} sets it)")
    if fallback:
        notes.append(f"the {objective} cut's partitions estimated worse than the {fallback} placement, "
                     f"so split used {fallback}")
    if compare is not None:
        notes.append(f"policy=support: {fmt(estimate['after'])} ({objective}); the cost policy would give "
                     f"{fmt(estimate['cost_policy_after'])}")
    if n_acc == 0 and n_calls:
        notes.insert(0, f"nothing placed on {target}: " + (
            f"under objective={objective} the cost model ({acc.name} profile) estimates no placement better "
            f"than the CPU alone ({fmt(estimate['before'])}); try split{{objective=throughput}} or "
            f"policy=support" if policy == "cost" else "no op is supported there"))
    for pk, count in sorted(unsupported.items()):
        notes.append(f"on CPU (unsupported on {target}): {pk} x{count}: {reasons[pk]}")
    return {"placement": placement_of, "partition": partition_of, "resident_on": resident,
            "reason": reasons_of, "region": region, "details": details, "notes": notes}


def placement_reasons(info, dev: list, placement_of: dict, target: str, policy: str, objective: str,
                      min_ops: int, fell: set, fallback: str | None, profile: str) -> dict:
    """One line per node saying why it is where it is: pinned to the host (input, output, unsupported op with
    its reason), weight residency, placed with its producer or input, fallen back below ``min_ops``, the
    objective's fallback, or the cut's figures (its time on the CPU vs the accelerator)."""
    nodes, kind = info.nodes, info.kind
    out = {}
    for i, node in enumerate(nodes):
        k = kind[i]
        if node.op == "placeholder":
            why = "graph input: arrives on the host"
        elif node.op == "output":
            why = "graph output: returned to the host"
        elif k == "weight":
            why = f"weight: resident where it is read ({placement_of[node.name]})"
        elif node.name in info.why_not:
            why = f"unsupported on {target}: {info.why_not[node.name]}"
        elif k == "getitem":
            why = f"runs with its producer {nodes[info.leader[i]].name}"
        elif k == "follow":
            first = next((nodes[j].name for j in info.inputs[i] if kind[j] != "weight"), None)
            why = f"bookkeeping: runs with its input {first}" if first else "bookkeeping: runs on the host"
        elif i in fell:
            why = f"min_ops: an accelerator island of fewer than {min_ops} ops runs on the CPU"
        elif fallback:
            why = f"fallback: the {fallback} placement estimated better than the {objective} cut"
        elif policy == "support":
            why = f"policy=support: every supported op on {target}"
        else:
            c, a = info.times[i]
            why = (f"{objective} cut on {dev[i]}: {c * 1e6:.3g} us on the cpu vs {a * 1e6:.3g} us on {profile}, "
                   f"with its neighbours' transfers")
        out[node.name] = why
    return out


# ------------------------------------------------------------------------------------- using the partitions
