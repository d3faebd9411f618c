"""``decode=LoopSpec(...)``: a model whose ``forward`` runs its own greedy loop, captured as a decode loop.

A user's decoder often looks like this, with a data-dependent ``break`` that ``torch.export`` cannot trace::

    def forward(self, images):
        memory = self.encode(images)
        state = self.init_state(memory)
        token = torch.full((images.shape[0],), BOS)
        for _ in range(self.max_len):
            logits, state = self.step(token, state, memory)
            token = logits.argmax(-1)
            ...
            if finished.all():
                break

Naming the pieces the loop already calls is enough: ``fxopt.capture(model, (images,),
decode=fxopt.LoopSpec(step=model.step, encode=model.encode, init_state=model.init_state, max_len=20,
bos_id=1, eos_id=2))``. Each piece may be a callable (a bound method, a function or a lambda over the
model's modules) or the name of a method of the model (what ``fxopt run --decode step=step,...`` passes);
``max_len``, ``bos_id`` and ``eos_id`` default to the model's attributes of those names. :func:`loop_module`
wraps model and spec into a module of the decode-loop protocol (docs/decode-loop.md), which
``capture_decoder`` captures piece by piece; :func:`check_against_forward` then runs the user's own
``forward`` once and refuses the capture when its tokens differ from the captured loop's.

Finding the loop with no spec at all (tracing ``forward`` until the step repeats) is not done: the encoder
and the initial state are computed before the loop by code torch.export cannot stop in the middle of, so
the pieces are named instead (docs/decode-loop.md, "A model with its own greedy loop").
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch

from fxopt.errors import InputError
from fxopt.ir import loops

_PIECES = ("step", "encode", "init_state")
_INTS = ("max_len", "bos_id", "eos_id")


@dataclasses.dataclass(frozen=True)
class LoopSpec:
    """The pieces of a greedy decode loop a model's ``forward`` runs itself.

    ``step(token, state, memory) -> (logits, state)``: one step (token LongTensor ``[B]``, logits
    ``[B, vocab]``, state a tensor or a tuple of tensors, as the model keeps it). ``init_state(memory) ->
    state``: the state before step 0 (default: the model's ``init_state`` method).
    ``encode(*inputs) -> memory``: what the steps read (default: the inputs themselves). Each is a callable
    or the name of a method of the model. ``max_len`` / ``bos_id`` / ``eos_id`` (ints) default to the
    model's attributes of those names. A dict with these keys (and a ``step``) works where a LoopSpec does.
    """

    step: Callable | str
    init_state: Callable | str | None = None
    encode: Callable | str | None = None
    max_len: int | None = None
    bos_id: int | None = None
    eos_id: int | None = None


def is_loop_spec(value: Any) -> bool:
    """True for a :class:`LoopSpec` or a dict naming a ``step`` (the dict form of one)."""
    return isinstance(value, LoopSpec) or (isinstance(value, dict) and "step" in value)


def spec_from(value: Any) -> LoopSpec:
    """A :class:`LoopSpec` from a spec or a dict of its fields; InputError (one line) for unknown fields."""
    if isinstance(value, LoopSpec):
        return value
    names = {f.name for f in dataclasses.fields(LoopSpec)}
    unknown = sorted(set(value) - names)
    if unknown:
        raise InputError(f"decode: unknown field {unknown[0]!r}; a LoopSpec has {', '.join(sorted(names))}")
    return LoopSpec(**value)


class _Loop(torch.nn.Module):
    """The decode-loop protocol around ``model`` and a :class:`LoopSpec`'s resolved pieces. ``model`` is a
    submodule, so its weights are the program's even when a piece is a lambda closing over it."""

    def __init__(self, model: torch.nn.Module, pieces: dict, ints: dict):
        super().__init__()
        self.model = model
        self._pieces = pieces
        self._single_state = False   # the user's state is one tensor: the protocol's is a tuple of it
        self.max_len, self.bos_id, self.eos_id = ints["max_len"], ints["bos_id"], ints["eos_id"]

    def encode(self, *inputs):
        encode = self._pieces["encode"]
        return encode(*inputs) if encode is not None else inputs

    def init_state(self, memory):
        state = self._pieces["init_state"](memory)
        self._single_state = isinstance(state, torch.Tensor)
        return (state,) if self._single_state else state

    def step(self, token, state, memory):
        logits, state = self._pieces["step"](token, state[0] if self._single_state else state, memory)
        return logits, ((state,) if isinstance(state, torch.Tensor) else state)

    def forward(self, *inputs):
        return loops.greedy(self, *inputs)


def loop_module(model: Any, value: Any, name: str) -> torch.nn.Module:
    """The decode-loop protocol module for ``model`` under ``value`` (a LoopSpec or its dict). Raises
    InputError (one line, naming the field) when a piece is missing or not callable, or an int is missing."""
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"{name}: decode=LoopSpec needs an nn.Module, got {type(model).__name__}")
    spec = spec_from(value)
    pieces = {}
    for field in _PIECES:
        piece = getattr(spec, field)
        if isinstance(piece, str):
            method = getattr(model, piece, None)
            if not callable(method):
                raise InputError(f"{name}: LoopSpec {field}={piece!r}: {type(model).__name__} has no method "
                                 f"{piece!r}")
            piece = method
        elif piece is not None and not callable(piece):
            raise InputError(f"{name}: LoopSpec {field} must be a callable or a method name, got "
                             f"{type(piece).__name__}")
        pieces[field] = piece
    if pieces["init_state"] is None:
        method = getattr(model, "init_state", None)
        if not callable(method):
            raise InputError(f"{name}: LoopSpec needs init_state (memory -> the state before step 0); the "
                             "model has no init_state method")
        pieces["init_state"] = method
    ints = {}
    for field in _INTS:
        value_ = getattr(spec, field)
        value_ = getattr(model, field, None) if value_ is None else value_
        if not isinstance(value_, int) or isinstance(value_, bool):
            raise InputError(f"{name}: LoopSpec {field} must be an int (give {field}=..., or the model an "
                             f"int attribute {field}); got {value_!r}")
        ints[field] = value_
    return _Loop(model, pieces, ints)


def check_against_forward(model: torch.nn.Module, loop: torch.nn.Module, tokens: torch.Tensor, inputs: tuple,
                          name: str) -> str | None:
    """Run ``model``'s own ``forward`` on ``inputs`` and compare its tokens with the captured loop's
    ``tokens`` (``[B, max_len]``, EOS after a row's first EOS), up to each row's first EOS; a leading BOS
    column in forward's output is skipped. Returns a note when forward's output is not comparable (not an
    int tensor ``[B, n]``), None when the tokens agree. Raises InputError naming the first row and step
    that differ."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()   # as captured
    try:
        with torch.no_grad():
            out = model(*inputs)
    except Exception as exc:  # noqa: BLE001 - the user's forward is only a cross-check
        return f"LoopSpec: {name}'s forward raised {type(exc).__name__}, so its tokens were not compared"
    finally:
        for module, training in flags:
            module.training = training
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        out = out[0]
    if (not isinstance(out, torch.Tensor) or out.is_floating_point() or out.dim() != 2
            or out.shape[0] != tokens.shape[0]):
        return (f"LoopSpec: {name}'s forward does not return tokens [batch, steps], so the captured loop was "
                "not compared with it")
    candidates = [out]   # forward's tokens as they are, or after a leading BOS column
    if out.shape[1] > 0 and bool((out[:, 0] == loop.bos_id).all()):
        candidates.insert(0 if out.shape[1] == tokens.shape[1] + 1 else 1, out[:, 1:])
    mismatches = [_first_difference(tokens, c, loop.eos_id) for c in candidates]
    if all(m is not None for m in mismatches):
        row, step, ours, theirs = mismatches[0]
        raise InputError(f"{name}: LoopSpec: the captured loop emits {ours} at row {row}, step {step}, where the "
                         f"model's forward emits {theirs}; check step, init_state, bos_id and eos_id against the "
                         "loop in forward")
    return None


def _first_difference(tokens: torch.Tensor, out: torch.Tensor, eos_id: int) -> tuple | None:
    """``(row, step, ours, theirs)`` of the first token where ``out`` differs from ``tokens`` before or at a
    row's first EOS (in the columns both have); None when they agree."""
    n = min(out.shape[1], tokens.shape[1])
    ours = tokens[:, :n]
    is_eos = (ours == eos_id).long()
    after_eos = is_eos.cumsum(1) - is_eos > 0
    differ = (ours != out[:, :n].to(ours.dtype)) & ~after_eos
    if not bool(differ.any()):
        return None
    row, step = (int(v) for v in differ.nonzero()[0])
    return row, step, int(ours[row, step]), int(out[row, step])
