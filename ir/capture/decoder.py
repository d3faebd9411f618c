"""Capturing a decode-loop protocol module (docs/decode-loop.md) as a step-loop Program.

:func:`capture_decoder` probes the loop eagerly for a few steps (checking that the state chains: each state
tensor keeps its dtype, rank and shape except for one dim that grows by the same amount every step), then
captures ``encode``, ``init_state`` and ``step`` as separate Programs (``step`` with one symbolic dim per
growing cache) and returns a Program whose graph is the *step loop*, with one
:class:`~fxopt.ir.loops.DecodeLoopRegion` (:mod:`fxopt.ir.loops` describes the region and the output
convention).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.utils._pytree as pytree

from fxopt.errors import InputError
from fxopt.ir import decode_graphs, loops_batch
from fxopt.ir.loops import (PROBE_STEPS, REGION_KIND, DecodeLoopRegion, batch_of, first_token_index, is_decode_loop,
                            plan_for)
from fxopt.ir.program import Program
from torch.export import Dim

__all__ = ["capture_decoder", "probe"]


# ------------------------------------------------------------------------------------------ probing
def _text(x: torch.Tensor) -> str:
    return f"{str(x.dtype).replace('torch.', '')}{list(x.shape)}"


def _tensors(value: Any, what: str, name: str) -> tuple[list, Any]:
    flat, spec = pytree.tree_flatten(value)
    for i, x in enumerate(flat):
        if not isinstance(x, torch.Tensor):
            raise InputError(f"{name}: {what}[{i}] is a {type(x).__name__}; {what} must hold only tensors")
    return flat, spec


def probe(model: Any, inputs: tuple, name: str = "model") -> dict:
    """Run the loop eagerly for a few steps and check that the state chains.

    Returns ``{"memory": flat memory, "batch", "states": [flat state before step 0, 1, ...], "tokens":
    [token fed at step 0, 1, ...], "growth": per state tensor the per-step growth of each dim}``. Raises
    :class:`InputError` naming the state tensor whose shape or dtype does not chain.
    """
    with torch.no_grad():
        memory = model.encode(*inputs)
        flat_mem, _ = _tensors(memory, "memory", name)
        batch = batch_of(memory)
        state = model.init_state(memory)
        if not isinstance(state, tuple):
            raise InputError(f"{name}: init_state returned a {type(state).__name__}; the decode-loop protocol "
                             "needs a tuple of tensors")
        flat_state, _ = _tensors(state, "state", name)
        token = _first_token(model, flat_mem, batch, name)
        states, tokens, growth = [flat_state], [token], None
        for t in range(min(PROBE_STEPS, model.max_len)):
            try:
                logits, state = model.step(token, state, memory)
            except Exception as exc:  # noqa: BLE001
                shapes = ", ".join(f"state[{i}] {_text(x)}" for i, x in enumerate(states[-1]))
                raise InputError(f"{name}: step {t} raised {type(exc).__name__}: {str(exc).splitlines()[0]} "
                                 f"(state going in: {shapes}); the state returned by step must chain into "
                                 "the next step") from exc
            if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != batch:
                got = _text(logits) if isinstance(logits, torch.Tensor) else type(logits).__name__
                raise InputError(f"{name}: step must return logits [batch={batch}, vocab], got {got}")
            if not isinstance(state, tuple):
                raise InputError(f"{name}: step returned a {type(state).__name__} state; return a tuple of "
                                 "tensors like init_state")
            new, _ = _tensors(state, "state", name)
            growth = _check_chain(states[-1], new, growth, t, name)
            states.append(new)
            token = logits.argmax(-1)
            tokens.append(token)
    return {"memory": flat_mem, "batch": batch, "states": states, "tokens": tokens,
            "growth": growth or [[0] * x.dim() for x in flat_state]}


def _first_token(model: Any, flat_mem: list, batch: int, name: str) -> torch.Tensor:
    """The token fed at step 0: BOS, or the memory tensor ``first_token_memory`` names (checked to be a
    LongTensor [batch])."""
    index = first_token_index(model)
    if index is None:
        return torch.full((batch,), model.bos_id, dtype=torch.long)
    if not 0 <= index < len(flat_mem):
        raise InputError(f"{name}: first_token_memory={index} but encode returns {len(flat_mem)} tensors")
    token = flat_mem[index]
    if token.dtype != torch.long or list(token.shape) != [batch]:
        raise InputError(f"{name}: memory[{index}] (first_token_memory) is {_text(token)}; the first token must "
                         f"be int64[{batch}]")
    return token


def _check_chain(old: list, new: list, growth: list | None, t: int, name: str) -> list:
    if len(new) != len(old):
        raise InputError(f"{name}: step {t} returned {len(new)} state tensors but took {len(old)}; "
                         "step must return the state it takes")
    seen = []
    for i, (a, b) in enumerate(zip(old, new)):
        bad = a.dtype != b.dtype or a.dim() != b.dim()
        delta = [] if bad else [int(y) - int(x) for x, y in zip(a.shape, b.shape)]
        bad = bad or sum(1 for d in delta if d) > 1 or any(d < 0 for d in delta)
        if not bad and growth is not None and delta != growth[i]:
            raise InputError(f"{name}: step does not chain: state[{i}] grew by {growth[i]} at step {t - 1} "
                             f"but by {delta} at step {t} ({_text(a)} -> {_text(b)}); a cache must grow by "
                             "the same amount every step")
        if bad:
            raise InputError(f"{name}: step does not chain: state[{i}] goes in as {_text(a)} and comes out "
                             f"as {_text(b)} at step {t}; step must return each state tensor with the dtype "
                             "and shape it took (a cache may grow along one dim)")
        seen.append(delta)
    return seen


# ------------------------------------------------------------------------------------------ capturing
class _Method(torch.nn.Module):
    """Exports one method of a protocol module: ``forward(*args)`` calls ``model.<method>(*args)``."""

    def __init__(self, model: torch.nn.Module, method: str) -> None:
        super().__init__()
        self.m = model
        self.method = method

    def forward(self, *args: Any) -> Any:
        """Calls the wrapped method."""
        return getattr(self.m, self.method)(*args)


class _Step(torch.nn.Module):
    """Exports ``model.step``: ``forward(token, state, memory)`` (named arguments, for dynamic_shapes)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.m = model

    def forward(self, token: torch.Tensor, state: tuple, memory: Any) -> Any:
        """Calls ``model.step(token, state, memory)``."""
        return self.m.step(token, state, memory)


def capture_decoder(model: torch.nn.Module, example_inputs: Any = None, *, name: str | None = None,
                    source: str | None = None, dynamic_batch: bool = False) -> Program:
    """Capture a decode-loop protocol module as a step-loop :class:`Program` with a decode-loop region.

    Takes the module and ``encode``'s example inputs (a tuple, a tensor, or None for the model's
    ``example_inputs()``); ``dynamic_batch=True`` exports every piece with a symbolic batch (dim 0 of the
    inputs, memory, state and token; see :mod:`fxopt.ir.loops_batch`), so the program and every ``unroll``
    variant decode any batch. Returns a Program whose graph takes ``encode``'s inputs and returns tokens
    ``[batch, max_len]`` (running every step), and whose ``regions`` is ``[DecodeLoopRegion]`` holding the
    ``encode``/``init_state``/``step`` Programs. Raises :class:`InputError` (one line) when the module does
    not follow the protocol, its state does not chain, a piece cannot be exported, or (dynamic batch)
    torch.export specialises the batch.
    """
    from fxopt.ir.capture import capture as capture_program   # local: this module is imported by capture

    name = name or type(model).__name__
    source = source or name
    if not is_decode_loop(model):
        raise InputError(f"{name}: not a decode-loop module; it needs encode, init_state, step and int "
                         "max_len, bos_id, eos_id (docs/decode-loop.md)")
    if model.max_len < 1:
        raise InputError(f"{name}: max_len must be >= 1, got {model.max_len}")
    if example_inputs is None:
        method = getattr(model, "example_inputs", None)
        if not callable(method):
            raise InputError(f"{name}: no example inputs; give them (capture_decoder(model, inputs), or "
                             "on the command line --input/--inputs), or give the model an example_inputs() method")
        example_inputs = method()
    inputs = example_inputs if isinstance(example_inputs, tuple) else (
        tuple(example_inputs) if isinstance(example_inputs, list) else (example_inputs,))
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        info = probe(model, inputs, name)
        with torch.no_grad():
            memory = model.encode(*inputs)
        batch = loops_batch.batch_spec(info, inputs, name) if dynamic_batch else None
        encode = _capture_piece(_Method(model, "encode"), inputs, batch and batch.encode_shapes(inputs),
                                capture_program, name, "encode", batch)
        init = _capture_piece(_Method(model, "init_state"), (memory,), batch and batch.init_shapes(memory),
                              capture_program, name, "init_state", batch)
        step = _capture_step(model, info, memory, capture_program, name, batch)
        if batch is not None:
            batch.check(step, "step")
    finally:
        for m, flag in flags:
            m.training = flag
    for piece, label in ((encode, "encode"), (init, "init_state"), (step, "step")):
        piece.name, piece.source, piece.original = f"{name}.{label}", f"{source}.{label}", None
    region = DecodeLoopRegion(
        kind=REGION_KIND, max_len=int(model.max_len), bos_id=int(model.bos_id), eos_id=int(model.eos_id),
        batch=info["batch"],
        memory=[{"shape": list(x.shape), "dtype": str(x.dtype).replace("torch.", "")} for x in info["memory"]],
        state=[{"shape": list(x.shape), "dtype": str(x.dtype).replace("torch.", ""), "growth": g}
               for x, g in zip(info["states"][0], info["growth"])],
        cache_symbols=_cache_symbols(step, len(info["states"][0]), batch),
        encode=encode, init_state=init, step=step,
        plan=plan_for("loop", None, int(model.max_len)),
    )
    if first_token_index(model) is not None:
        region["first_token"] = first_token_index(model)
    if batch is not None:
        batch.record(region, step)
    gm = decode_graphs.build_top(region, None, region["max_len"], pass_name="capture")
    _, out_spec = pytree.tree_flatten(torch.zeros(1))
    program = Program(graph_module=gm, example_inputs=inputs, in_spec=encode.in_spec, out_spec=out_spec,
                      name=name, source=source, original=model, regions=[region])
    program.dynamic_dims = loops_batch.input_dims(program)
    program.capture_summary = "; ".join(f"{label}: {piece.capture_summary}" for piece, label in
                                        ((encode, "encode"), (init, "init_state"), (step, "step"))
                                        if piece.capture_summary)
    return program


def _capture_piece(module: torch.nn.Module, args: tuple, dynamic: Any, capture_program, name: str,
                   label: str, batch=None) -> Program:
    """Export one protocol method (``encode`` / ``init_state``); ``dynamic``: its dynamic_shapes or None;
    ``batch``: the :class:`~fxopt.ir.loops_batch.BatchSpec` whose batch its outputs must keep symbolic."""
    if dynamic is None:
        return capture_program(module, args)
    try:
        piece = capture_program(module, args, dynamic_shapes=dynamic)
    except InputError as exc:
        raise loops_batch.specialized_error(name, label, exc) from exc
    batch.check(piece, label)
    return piece


def _capture_step(model, info: dict, memory: Any, capture_program, name: str, batch=None) -> Program:
    """Export ``step`` at the state before step ``min(2, max_len - 1)`` with one Dim per growing cache
    (and, with ``batch`` a :class:`~fxopt.ir.loops_batch.BatchSpec`, the batch Dim on dim 0)."""

    t = min(2, model.max_len - 1, len(info["states"]) - 1)
    state = tuple(info["states"][t])
    token = info["tokens"][t]

    def shapes(make_dim) -> list:
        dims: dict[tuple, Any] = {}
        out = []
        for x, g in zip(info["states"][0], info["growth"]):
            spec = {}
            for d, grow in enumerate(g):
                if grow:
                    lo, hi = int(x.shape[d]), int(x.shape[d]) + grow * (model.max_len - 1)
                    if (lo, grow) not in dims:
                        dims[(lo, grow)] = make_dim(f"cache{len(dims)}", lo, max(hi, lo + 1))
                    spec[d] = dims[(lo, grow)]
            out.append(spec or None)
        return out

    try:
        return _export_step(model, token, state, memory, shapes(lambda n, lo, hi: Dim(n, min=lo, max=hi)),
                            capture_program, name, batch)
    except InputError as exc:
        if "Constraints violated" not in str(exc):
            raise
    # A named Dim is refused when torch cannot prove a guard over its whole range, even one that always
    # holds: after a cache grows by torch.cat, viewing it through expand + reshape (grouped-query attention's
    # repeat_kv) guards Min(8*(s+1), 16*(s+1)) == 8*(s+1). Dim.DYNAMIC keeps the length symbolic (it still
    # refuses specialisation to a constant) and lets export relate caches whose lengths differ by a constant
    # (an attention mask one longer than the KV cache).
    return _export_step(model, token, state, memory, shapes(lambda n, lo, hi: Dim.DYNAMIC(min=lo, max=hi)),
                        capture_program, name, batch)


def _export_step(model, token, state, memory, state_shapes: list, capture_program, name: str, batch) -> Program:
    """Export ``model.step`` at ``(token, state, memory)`` with ``state_shapes`` (per state tensor its
    dynamic dims, or None); InputError (one line) when it fails."""
    dims = any(state_shapes)
    dynamic = (None, tuple(state_shapes), pytree.tree_map(lambda _: None, memory)) if dims else None
    if batch is not None:
        dynamic = batch.step_shapes(state_shapes, memory)
    try:
        return capture_program(_Step(model), (token, state, memory), dynamic_shapes=dynamic)
    except InputError as exc:
        if batch is not None and loops_batch.is_specialization(exc):
            raise loops_batch.specialized_error(name, "step", exc) from exc
        raise InputError(f"{name}: capturing step with a symbolic cache length failed: {exc}; step must "
                         "not specialise on the cache length (no Python branches on state shapes)") from exc


def _cache_symbols(step: Program, n_state: int, batch=None) -> dict:
    """``{symbol name: [state index, dim]}`` for the symbolic dims of the step graph's state inputs (the
    batch dim, when dynamic, excluded)."""
    out: dict = {}
    for i, node in enumerate(step.placeholders()[1:1 + n_state]):
        val = node.meta.get("val")
        for d, size in enumerate(getattr(val, "shape", ())):
            if batch is not None and d == 0 and batch.state_dims[i]:
                continue
            if isinstance(size, torch.SymInt) and size.node.expr.is_Symbol:   # not a derived ``s0 + 1``
                out.setdefault(str(size.node.expr), [i, d])
    return out


