"""Objectives for ``split``: what a placement's estimate is, and how the cut is steered to minimise it.

A placement keeps three resources busy per request: the host CPU (its ops' CPU times), the accelerator (its
ops' accelerator times) and the host link (one ``link_latency + bytes / link_bandwidth`` per value crossing).
:class:`Busy` holds the three, and each objective scores them:

- ``latency``: ``cpu + acc + link``: one request alone, every step waiting for the one before (the sum the
  min cut minimises with every resource weighted 1);
- ``throughput``: ``max(cpu, acc, link)``: a pipelined server at steady state, whose rate is set by its
  busiest resource (requests overlap, so CPU work of one request runs beside accelerator work of another);
- ``cost``: ``price_cpu * cpu + price_acc * (acc + link)``: dollars per request when each device is paid by
  its busy time (the link is charged at the accelerator's price: the accelerator is held while it is fed).

``latency`` and ``cost`` are linear in the busy times, so one min cut with those weights solves them exactly.
``throughput`` is a max of linear terms: :func:`sweep_throughput` solves it by parametric min cuts over the
Lagrangian ``a * cpu + b * acc + c * link`` (``a + b + c = 1``). For every such weighting the cut value
``L(w) = min over placements of w . busy`` is a **lower bound** on the best throughput estimate (a weighted
average never exceeds the max), and every cut is a feasible placement (an upper bound); the sweep raises the
weight of whichever resource is busiest (multiplicative weights), keeps the best placement seen and reports
both bounds, so the gap left is known.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["OBJECTIVES", "Busy", "busy_of", "score", "sweep_throughput", "objective_weights", "DEFAULT_PRICES"]

OBJECTIVES = ("latency", "throughput", "cost")

# On-demand list prices in US$ per hour, us-east-1, per device of each profile (an instance's price minus its
# vCPUs at the CPU's per-vCPU rate, divided by its devices). Approximate list prices recalled for planning,
# not quotes: override with split{price_cpu=...,price_acc=...} for your contract.
# cpu: c6i.xlarge (4 vCPU = the cpu profile's 2 physical cores) ~$0.17/h.
# inf1: inf1.xlarge ~$0.228/h for 1 Inferentia chip (4 NeuronCores) + 4 vCPU -> ~$0.015/h per NeuronCore.
# inf2: inf2.xlarge ~$0.758/h for 1 Inferentia2 chip (2 NeuronCore-v2) + 4 vCPU -> ~$0.29/h per core.
# trn1: trn1.2xlarge ~$1.34/h for 1 Trainium chip (2 NeuronCore-v2) + 8 vCPU -> ~$0.50/h per core.
# trn2: trn2.48xlarge ~$44.7/h for 16 Trainium2 chips (8 NeuronCore-v3 each) + 192 vCPU -> ~$0.30/h per core.
# t4: g4dn.xlarge ~$0.526/h for 1 T4 + 4 vCPU -> ~$0.36/h.  h100: p5.48xlarge ~$55/h for 8 H100 -> ~$6.5/h.
DEFAULT_PRICES = {"cpu": 0.17, "inf1": 0.015, "inf2": 0.29, "trn1": 0.50, "trn2": 0.30, "t4": 0.36,
                  "h100": 6.5}


@dataclass(frozen=True)
class Busy:
    """Seconds each resource is busy per request: ``cpu``, ``acc`` (the accelerator), ``link`` (transfers)."""

    cpu: float
    acc: float
    link: float

    def to_us(self, target: str) -> dict:
        """``{"cpu": us, target: us, "link": us}``, rounded for reports."""
        return {"cpu": round(self.cpu * 1e6, 3), target: round(self.acc * 1e6, 3),
                "link": round(self.link * 1e6, 3)}


def busy_of(info, on_acc: list, acc_profile) -> Busy:
    """Busy times of placement ``on_acc`` (a completed placement over ``info``'s nodes, as
    :func:`fxopt.passes.split.placement.complete` leaves it): op times per device, plus one transfer per
    tensor value read on the other device (once per direction, as the cut charges it)."""
    nodes, times, users, kind = info.nodes, info.times, info.users, info.kind
    cpu = acc = 0.0
    transfers = 0
    nbytes = 0
    for i, node in enumerate(nodes):
        if node.op == "call_function":
            if on_acc[i]:
                acc += times[i][1]
            else:
                cpu += times[i][0]
        if not info.tensor[i] or kind[i] == "weight":
            continue
        here = on_acc[i] if node.op == "call_function" else False
        out = back = False
        for u in users[i]:
            if kind[u] in ("weight", "follow"):
                continue
            if kind[u] == "getitem" and info.leader[u] == info.leader[i]:
                continue  # a getitem of this op lives with it
            there = on_acc[u] if nodes[u].op == "call_function" else False
            if there and not here:
                out = True
            elif here and not there:
                back = True
        for moved in (out, back):
            if moved:
                transfers += 1
                nbytes += info.nbytes[i]
    link = transfers * acc_profile.link_latency + nbytes / acc_profile.link_bandwidth
    return Busy(cpu, acc, link)


def objective_weights(objective: str, prices: tuple[float, float] = (1.0, 1.0)) -> tuple[float, float, float]:
    """The (cpu, accelerator, link) cut weights whose minimum cut minimises a linear ``objective``
    (``latency``: all 1; ``cost``: ``prices`` = (cpu $/h, accelerator $/h), the link at the accelerator's)."""
    if objective == "latency":
        return (1.0, 1.0, 1.0)
    if objective == "cost":
        pc, pa = prices
        scale = max(pc, pa)
        return (pc / scale, pa / scale, pa / scale)
    raise ValueError(f"objective {objective!r} is not linear; use sweep_throughput")


def score(objective: str, busy: Busy, prices: tuple[float, float] = (1.0, 1.0)) -> float:
    """The estimate of ``busy`` under ``objective``: seconds for latency and throughput (seconds per request
    at the busiest resource), US$ per million requests for cost (``prices`` in $/h)."""
    if objective == "latency":
        return busy.cpu + busy.acc + busy.link
    if objective == "throughput":
        return max(busy.cpu, busy.acc, busy.link)
    if objective == "cost":
        pc, pa = prices
        return (pc * busy.cpu + pa * (busy.acc + busy.link)) / 3600 * 1e6
    raise ValueError(f"unknown objective {objective!r}")


def _rank(busy: Busy) -> tuple[float, float]:
    # ties on the busiest resource are broken by total time: of two equal rates, the one that answers sooner
    return (max(busy.cpu, busy.acc, busy.link), busy.cpu + busy.acc + busy.link)


def sweep_throughput(cut, evaluate, candidates=(), rounds: int = 10) -> dict:
    """Minimise ``max(cpu, acc, link)`` by parametric min cuts.

    ``cut(weights) -> (on_acc, cut_seconds)`` solves the cut for (cpu, acc, link) weights summing to 1;
    ``evaluate(on_acc) -> Busy`` scores a placement; ``candidates``: extra placements to consider (all-CPU,
    all-accelerator). Returns ``{"on_acc", "busy", "lower_bound", "cuts", "weights"}``: the best placement, its
    busy times, the best Lagrangian lower bound on any placement's max (seconds) and the cuts solved."""
    best = None
    for on_acc in candidates:
        b = evaluate(on_acc)
        if best is None or _rank(b) < _rank(best[1]):
            best = (on_acc, b, None)
    w = [1 / 3, 1 / 3, 1 / 3]
    lower = 0.0
    seen: set = set()
    cuts = 0
    step = 1.0
    for _ in range(rounds):
        key = tuple(round(x, 4) for x in w)
        if key in seen:
            step /= 2
            if step < 1 / 64:
                break
        seen.add(key)
        on_acc, value = cut(tuple(w))
        cuts += 1
        lower = max(lower, value)
        b = evaluate(on_acc)
        if best is None or _rank(b) < _rank(best[1]):
            best = (on_acc, b, tuple(w))
        top = max(b.cpu, b.acc, b.link)
        if top <= 0 or top <= lower * (1 + 1e-6):
            break  # the placement meets the lower bound: optimal for the model
        # multiplicative weights: move weight towards the resources that are busiest relative to the max
        w = [x * math.exp(step * (v / top - 1)) for x, v in zip(w, (b.cpu, b.acc, b.link))]
        total = sum(w)
        w = [max(x / total, 1e-4) for x in w]
        total = sum(w)
        w = [x / total for x in w]
    return {"on_acc": best[0], "busy": best[1], "lower_bound": lower, "cuts": cuts, "weights": best[2]}
