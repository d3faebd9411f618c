"""Decode loops: the decode-loop protocol, the region a captured decoder carries, and its reference loop.

A module follows the protocol (docs/decode-loop.md) when it has ``encode(*inputs) -> memory``,
``init_state(memory) -> state`` (a tuple of tensors), ``step(token, state, memory) -> (logits, state)`` and
int attributes ``max_len``, ``bos_id``, ``eos_id``. Capture
(:func:`fxopt.ir.capture.decoder.capture_decoder`) probes the loop eagerly for a few steps (checking that the state chains: each state tensor keeps its dtype, rank and shape except for
one dim that grows by the same amount every step), then captures ``encode``, ``init_state`` and ``step``
as separate Programs (``step`` with one symbolic dim per growing cache), and returns a Program whose graph
is the *step loop*: encoder, init_state and the generic step graph called ``max_len`` times as
``call_module`` submodules. Its ``regions`` holds one :class:`DecodeLoopRegion`. With ``dynamic_batch=True``
(``fxopt.capture(..., dynamic_shapes="batch")``) every piece is exported with one symbolic batch
(:mod:`fxopt.ir.loops_batch`) and the region records ``dynamic_batch``, ``batch_symbol`` and per tensor
``batch_dim``.

Output convention (every variant, the reference loop and the decode runtime agree): tokens
``LongTensor [batch, max_len]``, BOS excluded, ``eos_id`` in every position after a row's first EOS —
padded to ``max_len`` even when decoding stopped early. :func:`trim` gives the ``[batch, steps]`` form that
stops at the first step where every row has finished.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
import torch.utils._pytree as pytree

from fxopt.errors import InputError
from fxopt.ir import cost
from fxopt.ir.program import Program

REGION_KIND = "decode_loop"
PROTOCOL_METHODS = ("encode", "init_state", "step")
PROTOCOL_ATTRS = ("max_len", "bos_id", "eos_id")
# optional int attribute: the index in encode's flat output of a LongTensor [B] that encode already emitted
# (a causal LM's first token, from its prompt): output column 0, fed to step 0 in place of bos_id
FIRST_TOKEN_ATTR = "first_token_memory"
PROBE_STEPS = 3


# ------------------------------------------------------------------------------------------ recognising
def is_decode_loop(model: Any) -> bool:
    """True when ``model`` is an nn.Module with callable ``encode``/``init_state``/``step`` and int
    ``max_len``/``bos_id``/``eos_id`` (the decode-loop protocol)."""
    if not isinstance(model, torch.nn.Module):
        return False
    if not all(callable(getattr(model, m, None)) for m in PROTOCOL_METHODS):
        return False
    return all(isinstance(getattr(model, a, None), int) and not isinstance(getattr(model, a), bool)
               for a in PROTOCOL_ATTRS)


def first_token_index(model: Any) -> int | None:
    """The protocol module's ``first_token_memory`` (an int), or None when it has none."""
    index = getattr(model, FIRST_TOKEN_ATTR, None)
    return index if isinstance(index, int) and not isinstance(index, bool) else None


def start(memory: Any, bos_id: int, eos_id: int, first_token: int | None) -> tuple:
    """``(token fed at step 0, finished, head columns)`` of the greedy loop: BOS, nothing finished and no
    column; or, with ``first_token`` (an index into the flat ``memory``), that emitted token, ``token ==
    eos_id`` and its ``[B, 1]`` column."""
    flat = [x for x in pytree.tree_leaves(memory) if isinstance(x, torch.Tensor)]
    if first_token is None:
        batch = batch_of(memory)
        return torch.full((batch,), bos_id, dtype=torch.long), torch.zeros(batch, dtype=torch.bool), []
    token = flat[first_token]
    return token, token == eos_id, [token.unsqueeze(1)]


def decode_region(program: Program) -> "DecodeLoopRegion | None":
    """The program's decode-loop region, or None when it has none."""
    for region in program.regions:
        if isinstance(region, dict) and region.get("kind") == REGION_KIND:
            return region
    return None


class DecodeLoopRegion(dict):
    """The ``regions`` entry of a decode loop: a dict whose ``encode``/``init_state``/``step`` values are
    Programs and whose other values are JSON-able.

    Keys: ``kind`` ("decode_loop"), ``max_len``, ``bos_id``, ``eos_id``, ``batch``, ``memory`` and ``state``
    (per flat tensor: ``shape`` (before step 0), ``dtype``, and for state ``growth`` per dim per step),
    ``cache_symbols`` (step-graph symbol -> ``[state index, dim]``), ``encode``, ``init_state``, ``step``
    (Programs) and ``plan`` (what the current graph of the program is; see :mod:`fxopt.backends.decode`).
    ``copy.deepcopy`` (which ``Program.copy`` applies to regions) copies the Programs with
    ``Program.copy()`` — weights shared, graphs copied — and everything else deeply.
    """

    def __deepcopy__(self, memo: dict) -> "DecodeLoopRegion":
        out = DecodeLoopRegion()
        memo[id(self)] = out
        for key, value in self.items():
            out[key] = value.copy() if isinstance(value, Program) else copy.deepcopy(value, memo)
        return out

    def to_json(self) -> dict:
        """The JSON-able part (the pieces named by their node counts)."""
        out = {k: v for k, v in self.items() if not isinstance(v, Program)}
        out.update({k: {"nodes": v.num_nodes()} for k, v in self.items() if isinstance(v, Program)})
        return out


# ------------------------------------------------------------------------------------------ reference loop
def greedy(model: Any, *inputs: Any, max_len: int | None = None) -> torch.Tensor:
    """The reference greedy loop of the protocol, in plain Python with early stop.

    Takes a protocol module and ``encode``'s inputs; returns tokens ``LongTensor [batch, max_len]`` (BOS
    excluded; ``eos_id`` after a row's first EOS, and for every step not run once all rows finished), with
    encode's emitted token in front (``[batch, 1 + max_len]``) when the module has ``first_token_memory``.
    """
    steps = model.max_len if max_len is None else max_len
    with torch.no_grad():
        memory = model.encode(*inputs)
        state = model.init_state(memory)
        token, finished, head = start(memory, model.bos_id, model.eos_id, first_token_index(model))
        eos = torch.full_like(token, model.eos_id)
        out = []
        for _ in range(steps):
            if bool(finished.all()):
                break
            logits, state = model.step(token, state, memory)
            token = torch.where(finished, eos, logits.argmax(-1))
            finished = finished | (token == model.eos_id)
            out.append(token)
            if bool(finished.all()):
                break
    tokens = torch.stack(out, 1) if out else token.new_empty((token.shape[0], 0))
    return torch.cat(head + [pad(tokens, steps, model.eos_id)], 1)


def pad(tokens: torch.Tensor, max_len: int, eos_id: int) -> torch.Tensor:
    """Extend ``tokens [B, steps]`` to ``[B, max_len]`` with ``eos_id``."""
    missing = max_len - tokens.shape[1]
    if missing <= 0:
        return tokens
    return torch.cat([tokens, tokens.new_full((tokens.shape[0], missing), eos_id)], 1)


def trim(tokens: torch.Tensor, eos_id: int) -> torch.Tensor:
    """Cut ``tokens [B, max_len]`` after the first step at which every row has emitted ``eos_id``
    (the ``[batch, steps]`` form of docs/decode-loop.md); returns a view."""
    done = (tokens == eos_id).all(0).nonzero()
    return tokens if done.numel() == 0 else tokens[:, : int(done[0]) + 1]


def batch_of(memory: Any) -> int:
    """The batch size of ``encode``'s output (dim 0 of its first tensor); InputError when it has none."""
    leaves = [x for x in pytree.tree_leaves(memory) if isinstance(x, torch.Tensor)]
    if not leaves or leaves[0].dim() == 0:
        raise InputError("decode loop: encode must return a tensor or a tuple of tensors with a batch dim")
    return int(leaves[0].shape[0])


def plan_for(variant: str, parts: list | None, max_len: int) -> dict:
    """The JSON-able plan of a variant: ``{"variant", "max_len", "parts": [[start, stop], ...] | None}``."""
    return {"variant": variant, "max_len": int(max_len), "parts": [list(p) for p in parts] if parts else None}


# ------------------------------------------------------------------------------------------ costs
def step_cost(region: dict, t: int, symbolic: Any = None):
    """The cost model's :class:`~fxopt.ir.cost.OpCost` of one step with the caches at their length before
    step ``t`` (concrete). ``symbolic``: the step graph's own (symbolic) cost when the caller already has it
    (costing every step of a 75-step loop need not re-cost the graph 75 times)."""
    total = cost.graph_cost(region["step"].graph_module) if symbolic is None else symbolic
    if not total.is_symbolic:
        return total
    subs = {region["batch_symbol"]: region["batch"]} if region.get("batch_symbol") else {}
    for sym, (i, d) in region["cache_symbols"].items():
        layout = region["state"][i]
        subs[sym] = layout["shape"][d] + layout["growth"][d] * t
    return total.evaluate(subs)


def decoder_flops(region: dict, max_len: int | None = None) -> dict:
    """Decoder FLOPs over ``max_len`` steps: ``{"exact": sum of step t at its own cache length,
    "padded": max_len steps at the longest cache (a fixed-shape loop padded to max_len), "ratio"}``."""
    n = region["max_len"] if max_len is None else max_len
    symbolic = cost.graph_cost(region["step"].graph_module)
    exact = sum(int(step_cost(region, t, symbolic).flops) for t in range(n))
    padded = n * int(step_cost(region, n - 1, symbolic).flops)
    return {"exact": exact, "padded": padded, "ratio": exact / padded if padded else 1.0}


__all__ = ["REGION_KIND", "DecodeLoopRegion", "is_decode_loop", "decode_region", "greedy", "pad", "trim",
           "step_cost", "decoder_flops", "plan_for", "PROBE_STEPS"]
