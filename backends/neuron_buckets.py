"""Static-shape bucketing for the neuron backend: which dims are bucketed, at which sizes, and the runtime
rule that pads inputs up to the next bucket and slices outputs back.

Neuron compilers take static shapes only. A program captured with dynamic dims (``fxopt.capture(model,
inputs, dynamic_shapes=...)``; ``program.dynamic_dims`` lists them as ``{symbol: [[input, dim], ...]}``) is
compiled once per *bucket*: an assignment ``{symbol: size}`` of every dynamic symbol. Two kinds of dims:

- the **batch** symbol: the symbol found at dim 0 of the inputs (exactly one such symbol), bucketed by
  ``neuron{buckets=1;4;16}``;
- the **sequence** symbol: named by ``seq_dim`` (``auto``: the one other dynamic symbol; or a symbol name
  such as ``s27``; or a dim index such as ``1``: the symbol at that dim of the first input having one there),
  bucketed by ``seq_buckets=16;64``.

A dynamic symbol without buckets gets one bucket, its example size. Buckets of several symbols combine as a
cartesian product (each accelerator partition is traced once per combination).

Runtime rule (:meth:`BucketPlan.pad`): each bucketed symbol's real size is read from the inputs, the
smallest bucket >= it is chosen, and every input dim of that symbol is padded with zeros up to it (zeros are
valid indices for integer index inputs, and ``False`` for masks); an input larger than the largest bucket
is an InputError naming the input and the largest bucket (no chunking). Outputs are then sliced back along
every dim whose size *is* a bucketed symbol. Padding leaves the real rows unchanged only for models whose
rows do not interact (batch-independent inference: eval-mode batch norm, per-row attention) and, for
sequence buckets, whose real positions do not read padded ones (causal models, or models taking a mask the
caller pads with zeros = masked). Models that mix rows across the batch (training-mode batch norm, batch-wide
reductions) are out of scope.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch

from fxopt.errors import BackendError, InputError

__all__ = ["BucketPlan", "parse_sizes", "plan_buckets", "bucket_key", "example_at"]


def parse_sizes(option: str, text: str) -> tuple[int, ...]:
    """``"1;4;16"`` -> ``(1, 4, 16)`` (sorted, unique); ``""`` -> ``()``. InputError for anything that is not
    a ``;``-separated list of positive integers."""
    text = (text or "").strip()
    if not text:
        return ()
    sizes = []
    for part in text.replace(",", ";").split(";"):
        part = part.strip()
        try:
            value = int(part)
        except ValueError:
            raise InputError(f"backend 'neuron': option {option}={text!r} must be ';'-separated positive "
                             "integers, e.g. 1;4;16") from None
        if value < 1:
            raise InputError(f"backend 'neuron': option {option}={text!r}: sizes must be >= 1")
        sizes.append(value)
    return tuple(sorted(set(sizes)))


def bucket_key(assignment: dict[str, int]) -> str:
    """A stable file-name-safe key for a bucket assignment: ``"static"`` when there are no dynamic dims, else
    ``"s77-8_s12-16"`` (symbols sorted)."""
    if not assignment:
        return "static"
    return "_".join(f"{s}-{assignment[s]}" for s in sorted(assignment))


@dataclass
class BucketPlan:
    """Bucket sizes per dynamic symbol and where each symbol sits in the inputs/outputs.

    ``sizes``: ``{symbol: (size, ...)}`` ascending; ``inputs``: ``[(input index, dim, symbol), ...]``;
    ``outputs``: ``[(output index, dim, symbol), ...]`` (the dims sliced back); ``roles``: ``{symbol:
    "batch" | "sequence" | "fixed"}`` ("fixed": dynamic but given a single example-size bucket)."""

    sizes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    inputs: list[tuple[int, int, str]] = field(default_factory=list)
    outputs: list[tuple[int, int, str]] = field(default_factory=list)
    roles: dict[str, str] = field(default_factory=dict)

    def assignments(self) -> list[dict[str, int]]:
        """Every bucket combination ``{symbol: size}`` (one empty dict for a static program)."""
        symbols = sorted(self.sizes)
        return [dict(zip(symbols, combo)) for combo in itertools.product(*(self.sizes[s] for s in symbols))]

    def to_json(self) -> dict:
        """The plan as JSON-able data (saved in the manifest's ``buckets``)."""
        return {"sizes": {s: list(v) for s, v in self.sizes.items()}, "roles": dict(self.roles),
                "inputs": [list(t) for t in self.inputs], "outputs": [list(t) for t in self.outputs]}

    @classmethod
    def from_json(cls, data: dict) -> "BucketPlan":
        """Rebuild a plan saved by :meth:`to_json`; InputError when it is malformed."""
        try:
            plan = cls(sizes={str(s): tuple(int(x) for x in v) for s, v in data["sizes"].items()},
                       inputs=[(int(i), int(d), str(s)) for i, d, s in data["inputs"]],
                       outputs=[(int(i), int(d), str(s)) for i, d, s in data["outputs"]],
                       roles={str(k): str(v) for k, v in data.get("roles", {}).items()})
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InputError(f"manifest: malformed 'buckets' section ({type(exc).__name__}: {str(exc)[:80]}); "
                             "re-create the artifact") from None
        for symbol, sizes in plan.sizes.items():
            if not sizes or any(not 0 < x <= 2 ** 31 for x in sizes):
                raise InputError(f"manifest: bucket sizes of '{symbol[:40]}' must be between 1 and 2**31, got "
                                 f"{list(sizes)[:8]}; the artifact is corrupt or hostile")
        return plan

    def real_sizes(self, flat_inputs: list) -> dict[str, int]:
        """``{symbol: size}`` read from the inputs."""
        real: dict[str, int] = {}
        for i, d, s in self.inputs:
            x = flat_inputs[i]
            if isinstance(x, torch.Tensor):
                real.setdefault(s, int(x.shape[d]))
        return real

    def choose(self, real: dict[str, int], input_names: list[str] | None = None) -> dict[str, int]:
        """The bucket ``{symbol: size}`` for real sizes ``real``: the smallest bucket >= each size.
        InputError (one line) when a size exceeds the largest bucket."""
        chosen = {}
        for s, sizes in self.sizes.items():
            n = real.get(s, sizes[0])
            fit = [b for b in sizes if b >= n]
            if not fit:
                where = next(((i, d) for i, d, sym in self.inputs if sym == s), None)
                label = (f"input {where[0]} ('{input_names[where[0]]}') dim {where[1]}"
                         if where and input_names else f"dim {s}")
                role = self.roles.get(s, "dynamic")
                raise InputError(f"{label} is {n}, larger than the largest {role} bucket {sizes[-1]}; split the "
                                 f"input into chunks of at most {sizes[-1]}, or compile with a larger bucket "
                                 f"(neuron{{{'buckets' if role == 'batch' else 'seq_buckets'}=...;{_next_pow2(n)}}})")
            chosen[s] = fit[0]
        return chosen

    def pad(self, flat_inputs: list, input_names: list[str] | None = None) -> tuple[list, dict[str, int]]:
        """Pad ``flat_inputs`` with zeros to their bucket; returns ``(padded inputs, real sizes)``."""
        if not self.sizes:
            return list(flat_inputs), {}
        real = self.real_sizes(flat_inputs)
        chosen = self.choose(real, input_names)
        out = list(flat_inputs)
        for i in sorted({i for i, _, _ in self.inputs}):
            x = out[i]
            if not isinstance(x, torch.Tensor):
                continue
            shape = list(x.shape)
            for j, d, s in self.inputs:
                if j == i:
                    shape[d] = chosen[s]
            if shape != list(x.shape):
                padded = x.new_zeros(shape)
                padded[tuple(slice(0, n) for n in x.shape)] = x
                out[i] = padded
        return out, real

    def unpad(self, flat_outputs: tuple, real: dict[str, int]) -> tuple:
        """Slice every bucketed output dim back to its real size; returns the outputs."""
        if not self.outputs:
            return tuple(flat_outputs)
        outs = list(flat_outputs)
        for i, d, s in self.outputs:
            x = outs[i]
            if isinstance(x, torch.Tensor) and s in real and x.shape[d] != real[s]:
                outs[i] = x.narrow(d, 0, real[s])
        return tuple(outs)


def _next_pow2(n: int) -> int:
    p = 1
    while p < n:
        p *= 2
    return p


def _symbols_at(specs: list[dict]) -> list[tuple[int, int, str]]:
    return [(i, d, dim) for i, spec in enumerate(specs) for d, dim in enumerate(spec.get("shape") or [])
            if isinstance(dim, str)]


def plan_buckets(input_specs: list[dict], output_specs: list[dict], dynamic_dims: dict, example_sizes:
                 dict[str, int], buckets: tuple[int, ...], seq_buckets: tuple[int, ...], seq_dim: str,
                 program_name: str) -> BucketPlan:
    """The :class:`BucketPlan` of a program from its input/output specs (``shape`` entries are ints or
    symbol strings), ``dynamic_dims``, the example size of every symbol, and the backend options. Raises
    InputError when buckets are asked for a program without the dynamic dim, and BackendError when an output
    dim depends on a bucketed symbol in a way slicing cannot undo (e.g. ``2*s77``)."""
    symbols = sorted(dynamic_dims)
    in_syms = _symbols_at(input_specs)
    plain = set(symbols)
    bad_in = [(i, d, s) for i, d, s in in_syms if s not in plain]
    if bad_in:
        i, d, s = bad_in[0]
        raise BackendError(f"program '{program_name}': input {i} dim {d} is '{s}', an expression; neuron "
                           "buckets need each dynamic input dim to be a plain symbol")
    roles = {s: "fixed" for s in symbols}
    sizes = {s: (int(example_sizes[s]),) for s in symbols}
    batch_syms = sorted({s for _, d, s in in_syms if d == 0})
    if buckets:
        if len(batch_syms) != 1:
            why = "no input has a dynamic dim 0" if not batch_syms else f"several symbols at dim 0 ({batch_syms})"
            raise InputError(f"backend 'neuron{{buckets=...}}': program '{program_name}' has no single dynamic "
                             f"batch dim ({why}); capture it with dynamic_shapes, e.g. fxopt.capture(model, "
                             "inputs, dynamic_shapes=({0: torch.export.Dim('batch')},))")
        sizes[batch_syms[0]] = tuple(buckets)
        roles[batch_syms[0]] = "batch"
    if seq_buckets:
        seq = _seq_symbol(seq_dim, symbols, in_syms, roles, program_name)
        sizes[seq] = tuple(seq_buckets)
        roles[seq] = "sequence"
    outputs = []
    for i, d, dim in _symbols_at(output_specs):
        if dim in plain:
            outputs.append((i, d, dim))
        elif any(s in dim for s in symbols):
            mentioned = [s for s in symbols if s in dim and len(sizes[s]) > 1]
            if mentioned:
                raise BackendError(f"program '{program_name}': output {i} dim {d} is '{dim}', which depends on "
                                   f"bucketed dim {mentioned[0]} in a way the runtime cannot slice back; bucket "
                                   "another dim, or make the output dim equal to the input's")
    inputs = [(i, d, s) for i, d, s in in_syms]
    return BucketPlan(sizes=sizes, inputs=inputs, outputs=outputs, roles=roles)


def _seq_symbol(seq_dim: str, symbols: list[str], in_syms: list, roles: dict, program_name: str) -> str:
    free = [s for s in symbols if roles[s] != "batch"]
    text = (seq_dim or "auto").strip()
    if text == "auto":
        if len(free) != 1:
            raise InputError(f"backend 'neuron{{seq_buckets=...}}': program '{program_name}' has "
                             f"{len(free)} non-batch dynamic dims ({', '.join(free) or 'none'}); name one with "
                             "seq_dim=SYMBOL or seq_dim=DIM_INDEX, or capture with a dynamic sequence dim")
        return free[0]
    if text.isdigit():
        for _, d, s in in_syms:
            if d == int(text) and s in free:
                return s
        raise InputError(f"backend 'neuron': seq_dim={text}: no input has a dynamic non-batch dim {text} "
                         f"(dynamic dims: {', '.join(symbols) or 'none'})")
    if text not in free:
        raise InputError(f"backend 'neuron': seq_dim={text} is not a dynamic non-batch dim of program "
                         f"'{program_name}' (choose from: {', '.join(free) or 'none'})")
    return text


def example_at(flat_inputs: list, plan: BucketPlan, assignment: dict[str, int]) -> list:
    """Example inputs at bucket ``assignment``: each bucketed dim filled by cycling the example's rows
    (``index_select`` of ``arange(size) % example_size``), so values stay realistic and integer indices
    valid. Returns the new flat input list (tensors not touched are shared)."""
    out = list(flat_inputs)
    for i, d, s in plan.inputs:
        x = out[i]
        if not isinstance(x, torch.Tensor) or s not in assignment or x.shape[d] == assignment[s]:
            continue
        idx = torch.arange(assignment[s]) % max(int(x.shape[d]), 1)
        out[i] = x.index_select(d, idx)
    return out
