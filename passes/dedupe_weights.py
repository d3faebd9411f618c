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

import hashlib
from dataclasses import dataclass

import torch
import torch.fx

from fxopt.ir.program import set_attr
from fxopt.ir.program import Program, fetch_attr
from fxopt.ir.program import delete_attr


def _raw_bytes(t: torch.Tensor) -> torch.Tensor:
    """The tensor's elements as a flat uint8 tensor on the CPU (a view when ``t`` is contiguous)."""
    flat = t.detach()
    if flat.device.type != "cpu":
        flat = flat.cpu()
    flat = flat.contiguous().reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    return flat.view(torch.uint8) if flat.numel() else torch.empty(0, dtype=torch.uint8)


def content_key(t: torch.Tensor) -> tuple:
    """A hashable key of ``t``'s value and layout: ``(dtype, shape, stride, device, blake2b digest)``.

    Takes any dense tensor; two tensors with equal keys are (up to a hash collision, which
    :func:`same_tensor` rules out) bitwise equal and laid out alike."""
    digest = hashlib.blake2b(_raw_bytes(t).numpy().data, digest_size=20).hexdigest()
    return (str(t.dtype), tuple(t.shape), tuple(t.stride()), str(t.device), digest)


def same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True when ``a`` and ``b`` have the same dtype, shape, strides and device and bitwise-equal elements."""
    if a is b:
        return True
    if (a.dtype, a.shape, a.stride(), a.device) != (b.dtype, b.shape, b.stride(), b.device):
        return False
    return torch.equal(_raw_bytes(a), _raw_bytes(b))


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes of ``t``'s elements (numel times element size)."""
    return t.numel() * t.element_size()


def identity_key(t: torch.Tensor) -> tuple:
    """Key under which two tensor objects are the same memory: storage pointer, offset, shape, strides, dtype."""
    return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)


class TensorIndex:
    """Groups tensors by value: :meth:`canonical` returns the first-seen tensor equal to the one given.

    Hashes each distinct memory once (tensors sharing storage, offset and layout are recognised without
    hashing again)."""

    def __init__(self) -> None:
        """An empty index."""
        self._by_identity: dict[tuple, torch.Tensor] = {}
        self._by_content: dict[tuple, list[torch.Tensor]] = {}
        self._keep: list[torch.Tensor] = []  # keeps data pointers stable while indexing

    def canonical(self, t: torch.Tensor) -> torch.Tensor:
        """Takes a tensor; returns the first indexed tensor bitwise-equal to it (``t`` itself if none)."""
        ident = identity_key(t)
        found = self._by_identity.get(ident)
        if found is not None:
            return found
        bucket = self._by_content.setdefault(content_key(t), [])
        for kept in bucket:
            if same_tensor(kept, t):
                self._by_identity[ident] = kept
                return kept
        bucket.append(t)
        self._keep.append(t)
        self._by_identity[ident] = t
        return t


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
