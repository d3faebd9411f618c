"""Weight de-duplication for `dedupe`: identical tensors (same dtype, shape, strides, device and bytes) found
by content hash, confirmed bytewise, become one tensor.

Within a program (:func:`dedupe_program_weights`) every ``get_attr`` node of a duplicate is pointed at the
one kept attribute, ``get_attr`` nodes reading the same attribute merge into the first one, and attributes no
node reads any more are deleted. Across programs (:func:`share_weights`) equal tensors are rebound so that
every program reads the *same tensor object*: deploying them together holds each distinct tensor once.

The hash covers the raw bytes plus dtype, shape, strides and device, so two tensors merge only when they
are bitwise equal (``-0.0`` and ``0.0`` stay apart, NaN payloads are compared as bytes) and interchangeable
for every op, views included. No size threshold: a 4-byte bias and a 100 MB embedding merge alike.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx

from fxopt.ir.program import Program, delete_attr, fetch_attr, set_attr
from fxopt.ir.tensor_identity import TensorIndex, identity_key, tensor_bytes


@dataclass
class WeightStats:
    """What weight de-duplication did: distinct tensors merged, get_attr nodes merged, bytes before/after."""

    tensors_merged: int = 0
    get_attr_merged: int = 0
    bytes_before: int = 0
    bytes_after: int = 0


def dedupe_program_weights(program: Program) -> WeightStats:
    """Merge identical tensors within ``program`` (in place); returns :class:`WeightStats`.

    Every get_attr node whose tensor equals an earlier one is retargeted to the earlier attribute; get_attr
    nodes with the same target merge into the first; attributes left unread are deleted. Tensors themselves
    are never modified. Leaves the graph untouched when nothing is duplicated."""
    gm = program.graph_module
    stats = WeightStats(bytes_before=program.parameter_bytes(unique=True))
    index = TensorIndex()
    kept_target: dict[tuple, str] = {}          # identity of the kept tensor -> the attribute kept for it
    first_node: dict[str, torch.fx.Node] = {}   # attribute -> its first get_attr node
    merged_identities: set[tuple] = set()
    old_targets: set[str] = set()
    for node in list(gm.graph.nodes):
        if node.op != "get_attr":
            continue
        value = fetch_attr(gm, node.target)
        if not isinstance(value, torch.Tensor):
            continue
        kept = index.canonical(value)
        kid = identity_key(kept)
        target = kept_target.setdefault(kid, node.target)
        if target != node.target:
            if identity_key(value) != kid:
                merged_identities.add(identity_key(value))
            old_targets.add(node.target)
            node.target = target
        first = first_node.setdefault(target, node)
        if first is not node:
            node.replace_all_uses_with(first)
            gm.graph.erase_node(node)
            stats.get_attr_merged += 1
    still_read = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    for target in sorted(old_targets - still_read):
        delete_attr(gm, target)
    stats.tensors_merged = len(merged_identities)
    stats.bytes_after = program.parameter_bytes(unique=True)
    return stats


def unique_weight_bytes(programs: list[Program]) -> int:
    """Bytes of the weights of ``programs`` held in memory together: a tensor object (storage, offset,
    layout) read by several programs or names counts once."""
    seen: set[tuple] = set()
    total = 0
    for program in programs:
        for t in program.parameters().values():
            key = identity_key(t)
            if key not in seen:
                seen.add(key)
                total += tensor_bytes(t)
    return total


def share_weights(programs: list[Program]) -> int:
    """Rebind equal tensors across ``programs`` (in place) so they read one tensor object; returns how many
    distinct tensors were replaced by an equal one from an earlier program (or earlier in the same one).

    Only attribute bindings change (via ``set_attr``); graphs and tensor values stay as they are."""
    index = TensorIndex()
    replaced: set[tuple] = set()
    for program in programs:
        gm = program.graph_module
        for target, value in program.parameters().items():
            kept = index.canonical(value)
            if kept is not value:
                if identity_key(kept) != identity_key(value):
                    replaced.add(identity_key(value))
                set_attr(gm, target, kept)
    return len(replaced)
