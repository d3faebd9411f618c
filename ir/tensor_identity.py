"""When two tensors are the same tensor, or hold the same bytes: the keys weight sharing is built on.

``identity_key`` names a tensor's memory (storage, offset, shape, strides, dtype): equal keys, one tensor.
``content_key`` hashes its bytes with its dtype and shape: equal keys, equal values bit for bit (checked
with :func:`same_tensor` before two are merged). :class:`TensorIndex` maps each distinct content to the first
tensor seen with it. Used by ``dedupe`` (one copy of equal weights) and by the shared weight store of the
``reference-shared`` backend.
"""
from __future__ import annotations

import hashlib

import torch


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
