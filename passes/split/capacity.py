"""Accelerator memory: weights that cannot all be resident on the accelerator keep their readers on the host.

A weight read on the accelerator is resident there (``resident_on``), so the weights of every op placed on
the accelerator must fit in its memory together. Embedding tables are where that bites: a ranking model's
tables are often larger than an accelerator's memory, which is why such models keep lookups on the host.

:func:`keep_within_memory` runs before placement. It takes every weight some supported op reads (directly,
or through ops computed from weights only, such as a transposed weight), and while their total is over the
budget it pins the readers of the largest one to the CPU. Every placement (a cut, support, the
all-accelerator fallback) then fits. This is conservative: it budgets as if every supported reader went to
the accelerator, so a weight may stay on the host that would have fitted beside what the cut places.
"""
from __future__ import annotations

from fxopt.passes.split.placement import PlacementInput

__all__ = ["WEIGHT_SHARE", "keep_within_memory", "human_bytes"]

#: The share of an accelerator profile's memory budgeted for weights; the rest holds activations, the
#: runtime and the compiled program.
WEIGHT_SHARE = 0.8


def human_bytes(n: float) -> str:
    """``n`` bytes as a short decimal figure: ``"5.76 MB"``, ``"0.98 kB"``, ``"64 GB"``."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"


def _weight_key(node) -> str:
    """Weights bound once and read through several get_attr nodes count once."""
    return str(node.target)


def keep_within_memory(info: PlacementInput, budget: float, device: str) -> dict:
    """Pin, in ``info.kind``, the readers of the largest weights to the CPU until the weights that supported
    ops read fit in ``budget`` bytes of ``device``'s memory.

    Returns ``{"budget_bytes", "weight_bytes" (before), "resident_bytes" (after), "kept_on_host": [weight
    names, largest first], "reasons": {node name: why}}``; the reasons are also what ``placement_reason``
    shows for the pinned readers."""
    kind, users, inputs, nodes = info.kind, info.users, info.inputs, info.nodes
    weights = [i for i, k in enumerate(kind) if k == "weight"]

    derived: dict[int, bool] = {}   # supported ops computed from weights only: they travel with the weight
    for i in range(len(nodes)):
        if kind[i] in ("free", "getitem") and inputs[i]:
            derived[i] = all(kind[j] == "weight" or derived.get(j, False) for j in inputs[i])

    def readers(w: int) -> list[int]:
        """The supported ops that read weight ``w`` on the accelerator: its users, through derived ops."""
        out, stack, seen = [], list(users[w]), set()
        while stack:
            u = stack.pop()
            if u in seen or kind[u] not in ("free", "getitem", "follow"):
                continue
            seen.add(u)
            out.append(info.leader[u])   # a getitem runs with its producer
            if derived.get(u, False):
                stack.extend(users[u])
        return out

    size: dict[str, int] = {}
    by_key: dict[str, list[int]] = {}
    for w in weights:
        key = _weight_key(nodes[w])
        size[key] = max(size.get(key, 0), info.nbytes[w])
        by_key.setdefault(key, []).append(w)

    def resident() -> dict[str, int]:
        return {k: size[k] for k, ws in by_key.items()
                if any(kind[r] in ("free", "getitem") for w in ws for r in readers(w))}

    candidates = resident()
    total = before = sum(candidates.values())
    kept: list[str] = []
    reasons: dict[str, str] = {}
    while total > budget and candidates:
        key = max(candidates, key=lambda k: (candidates[k], k))
        kept.append(key)
        why = (f"memory: weight {key} ({human_bytes(candidates[key])}) does not fit in {device}'s weight budget "
               f"({human_bytes(budget)}) beside the others ({human_bytes(before)} in all)")
        for w in by_key[key]:
            for r in readers(w):
                if kind[r] in ("free", "follow"):
                    kind[r] = "pinned"
                    reasons.setdefault(nodes[r].name, why)
        for i, k in enumerate(kind):   # a getitem of a pinned producer is pinned with it
            if k == "getitem" and kind[info.leader[i]] == "pinned":
                kind[i] = "pinned"
                reasons.setdefault(nodes[i].name, reasons.get(nodes[info.leader[i]].name, why))
        candidates = resident()
        total = sum(candidates.values())
    return {"budget_bytes": budget, "weight_bytes": before, "resident_bytes": total, "kept_on_host": kept,
            "reasons": reasons}
