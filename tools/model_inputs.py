"""Example inputs given on the command line, so a model without an ``example_inputs()`` method can be run.

    fxopt run model.py:Net --input 'x=float32[8,128]' --input 'ids=int64[8,20]:0..5000'
    fxopt run model.py:Net --inputs batch.pt          # torch.save'd tensors: one, a tuple/list, or a dict

An ``--input`` is ``[NAME=]DTYPE[D0,D1,...][:LOW..HIGH]``. Named inputs bind to the model's ``forward``
parameters by name (a ``.pt2``'s inputs by their names in the graph); unnamed ones are taken in order. Values
are drawn from a fixed seed: floats from the standard normal (uniform in ``[LOW, HIGH)`` with a range),
integers uniform in ``[LOW, HIGH)`` (default ``0..2``, valid as indices into any table), bools fair coins.
The text is checked when the arguments are parsed, before torch is imported; the tensors are made once the
model is resolved.
"""
from __future__ import annotations

import collections
import dataclasses
import inspect
import os
import re
from typing import Any, Sequence

from fxopt.errors import InputError, first_line

FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")
INT_DTYPES = ("int64", "int32", "int16", "int8", "uint8")
DTYPES = FLOAT_DTYPES + INT_DTYPES + ("bool",)
_SPEC = re.compile(r"^(?:(?P<name>[A-Za-z_][A-Za-z0-9_]*)=)?(?P<dtype>[a-z0-9]+)\[(?P<dims>[^\]]*)\]"
                   r"(?::(?P<low>-?[0-9.eE+-]+)\.\.(?P<high>-?[0-9.eE+-]+))?$")
_EXAMPLE = "e.g. 'x=float32[8,128]' or 'ids=int64[8,20]:0..5000'"
SEED = 0


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One ``--input``: an optional parameter name, a dtype name, the shape and the value range."""

    name: str | None
    dtype: str
    shape: tuple[int, ...]
    low: float | None = None
    high: float | None = None

    def text(self) -> str:
        """The spec as it would be written on the command line."""
        head = f"{self.name}=" if self.name else ""
        rng = f":{_num(self.low)}..{_num(self.high)}" if self.low is not None else ""
        return f"{head}{self.dtype}[{','.join(map(str, self.shape))}]{rng}"


def _num(value: float | None) -> str:
    return str(int(value)) if value is not None and float(value).is_integer() else str(value)


def parse_input_spec(text: str) -> InputSpec:
    """Parse one ``--input`` value; returns an :class:`InputSpec` or raises InputError naming what is wrong."""
    m = _SPEC.match(text.strip())
    if not m:
        raise InputError(f"--input {text!r}: expected [NAME=]DTYPE[DIMS][:LOW..HIGH], {_EXAMPLE}")
    dtype = m["dtype"]
    if dtype not in DTYPES:
        raise InputError(f"--input {text!r}: unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    dims_text = m["dims"].strip()
    try:
        shape = tuple(int(d) for d in dims_text.split(",")) if dims_text else ()
    except ValueError:
        raise InputError(f"--input {text!r}: dims must be integers, {_EXAMPLE}") from None
    if any(d < 0 for d in shape):
        raise InputError(f"--input {text!r}: dims must be >= 0")
    low = high = None
    if m["low"] is not None:
        try:
            low, high = float(m["low"]), float(m["high"])
        except ValueError:
            raise InputError(f"--input {text!r}: the range must be LOW..HIGH numbers, {_EXAMPLE}") from None
        if not low < high:
            raise InputError(f"--input {text!r}: the range {m['low']}..{m['high']} is empty (LOW must be < HIGH)")
        if dtype == "bool":
            raise InputError(f"--input {text!r}: a bool input takes no range")
        if dtype in INT_DTYPES and not (low.is_integer() and high.is_integer()):
            raise InputError(f"--input {text!r}: an integer input needs an integer range")
    return InputSpec(m["name"], dtype, shape, low, high)


def parse_input_specs(texts: Sequence[str] | None) -> list[InputSpec]:
    """Parse every ``--input`` and :func:`check_input_specs` them; returns the specs."""
    return check_input_specs([parse_input_spec(t) for t in texts or ()])


def check_input_specs(specs: Sequence[InputSpec]) -> list[InputSpec]:
    """Names must be unique, and named and unnamed inputs are not mixed; returns the specs as a list
    (InputError otherwise)."""
    specs = list(specs)
    names = [s.name for s in specs if s.name]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"--input {duplicates[0]} is given twice; give each input once")
    if names and len(names) != len(specs):
        raise InputError("--input: name every input (x=float32[8,128]) or none (they are then taken in order)")
    return specs


def check_inputs_file(path: str | None) -> None:
    """Fail early (InputError) when ``--inputs`` names no readable file."""
    if path is not None and not os.path.isfile(path):
        raise InputError(f"--inputs {path}: no such file; save the inputs with torch.save (a tensor, a tuple "
                         "or list of tensors, or a dict of them by parameter name)")


def parameter_names(model: Any) -> list[str]:
    """The names the model's positional inputs are bound by: ``forward``'s parameters (without ``self``,
    ``*args``/``**kwargs``) for a module, the user inputs of a torch.export ExportedProgram, the graph inputs
    of an ``.onnx`` file (given as its path)."""
    import torch  # local: parsing the specs above needs no torch; binding them to a model does

    if isinstance(model, str):
        from fxopt.ir.capture import onnx_import  # local: onnx is an optional dependency

        return [i.name for i in onnx_import.graph_inputs(onnx_import.load_model(model))]
    if isinstance(model, torch.export.ExportedProgram):
        return [s.arg.name for s in model.graph_signature.input_specs
                if s.kind == torch.export.graph_signature.InputKind.USER_INPUT]
    params = inspect.signature(model.forward).parameters.values()
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def make_tensor(spec: InputSpec, generator: Any) -> Any:
    """A tensor for ``spec`` drawn from ``generator`` (a torch.Generator)."""
    import torch  # local: see parameter_names

    dtype = getattr(torch, spec.dtype)
    if spec.dtype == "bool":
        return torch.randint(0, 2, spec.shape, generator=generator).bool()
    if spec.dtype in INT_DTYPES:
        low, high = (int(spec.low), int(spec.high)) if spec.low is not None else (0, 2)
        return torch.randint(low, high, spec.shape, generator=generator, dtype=dtype)
    if spec.low is not None:
        return (torch.rand(spec.shape, generator=generator) * (spec.high - spec.low) + spec.low).to(dtype)
    return torch.randn(spec.shape, generator=generator).to(dtype)


def bind(model: Any, values: Sequence[tuple[str | None, Any]], where: str) -> tuple:
    """Order ``[(name or None, value), ...]`` as ``model``'s positional inputs: unnamed values as given;
    named ones by :func:`parameter_names`, which must fill a prefix of the parameters (torch.export takes
    positional inputs). Raises InputError naming an unknown or missing parameter."""
    if not values or values[0][0] is None:
        return tuple(v for _, v in values)
    names = parameter_names(model)
    given = dict(values)
    unknown = [n for n in given if n not in names]
    if unknown:
        raise InputError(f"{where}: the model has no input named {unknown[0]!r} (its inputs: "
                         f"{', '.join(names) or 'none'})")
    count = max(names.index(n) for n in given) + 1
    missing = [n for n in names[:count] if n not in given]
    if missing:
        raise InputError(f"{where}: give input {missing[0]!r} too (inputs are passed by position: "
                         f"{', '.join(names[:count])})")
    return tuple(given[n] for n in names[:count])


def load_inputs_file(path: str) -> list[tuple[str | None, Any]]:
    """Read an ``--inputs`` file with ``torch.load(weights_only=True)`` (no code runs); returns
    ``[(name or None, tensor), ...]``. Raises InputError unless it holds a tensor, a tuple/list of tensors
    or a dict of tensors keyed by parameter name."""
    import torch  # local: see parameter_names

    try:
        data = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - any failure to read is the file's fault
        text = first_line(str(exc)) or type(exc).__name__
        raise InputError(f"--inputs {path}: not a file torch.load reads as tensors ({text}); save "
                         "a tensor, a tuple or list of tensors, or a dict of them with torch.save") from exc
    if isinstance(data, torch.Tensor):
        pairs: list[tuple[str | None, Any]] = [(None, data)]
    elif isinstance(data, (tuple, list)):
        pairs = [(None, v) for v in data]
    elif isinstance(data, dict):
        pairs = [(k, v) for k, v in data.items()]
        if not all(isinstance(k, str) for k, _ in pairs):
            raise InputError(f"--inputs {path}: a dict of inputs must be keyed by parameter name (str)")
    else:
        raise InputError(f"--inputs {path}: holds a {type(data).__name__}; save a tensor, a tuple or list of "
                         "tensors, or a dict of them")
    bad = [i for i, (_, v) in enumerate(pairs) if not isinstance(v, torch.Tensor)]
    if bad:
        raise InputError(f"--inputs {path}: item {bad[0]} is a {type(pairs[bad[0]][1]).__name__}, not a tensor")
    return pairs


def inputs_maker(specs: Sequence[InputSpec], inputs_file: str | None):
    """None when neither ``--input`` nor ``--inputs`` was given; else a function ``model -> tuple`` that makes
    the inputs for the resolved model (what :func:`fxopt.ir.capture.capture` accepts as example inputs)."""
    if not specs and inputs_file is None:
        return None
    if specs and inputs_file is not None:
        raise InputError("give --input or --inputs, not both")

    def make(model: Any) -> tuple:
        import torch  # local: see parameter_names

        if inputs_file is not None:
            return bind(model, load_inputs_file(inputs_file), f"--inputs {inputs_file}")
        generator = torch.Generator().manual_seed(SEED)
        return bind(model, [(s.name, make_tensor(s, generator)) for s in specs], "--input")

    return make


def rebatch(inputs: Any, batch: int) -> Any:
    """``inputs`` (a tensor, or a tuple/list/dict of them) at batch size ``batch``: every tensor whose dim 0
    is the batch size (the most common dim 0 among the tensors; the larger on a tie) has its rows repeated
    cyclically (or cut) to ``batch`` rows; other values are unchanged. Raises InputError when no tensor has a
    dim 0."""
    import torch  # local: see parameter_names
    import torch.utils._pytree as pytree  # local: as torch

    tensors = [x for x in pytree.tree_leaves(inputs) if isinstance(x, torch.Tensor) and x.ndim >= 1]
    if not tensors:
        raise InputError(f"--batch {batch}: the model's example inputs have no tensor with a batch dim; give "
                         f"the inputs at that batch with --input")
    counts = collections.Counter(int(t.shape[0]) for t in tensors)
    size = max(counts, key=lambda b: (counts[b], b))
    rows = torch.arange(batch) % size

    def one(x: Any) -> Any:
        if isinstance(x, torch.Tensor) and x.ndim >= 1 and x.shape[0] == size:
            return x[rows].clone()
        return x

    return pytree.tree_map(one, inputs)


def rebatching_maker(inner: Any, batch: int):
    """An inputs maker (see :func:`inputs_maker`) giving ``inner``'s inputs, or the model's own (its model
    library's, else its ``example_inputs()``), at batch size ``batch`` (:func:`rebatch`)."""

    def make(model: Any, default: Any = None) -> Any:
        if inner is not None:
            base = inner(model)
        elif default is not None:
            base = default
        elif callable(getattr(model, "example_inputs", None)):
            base = model.example_inputs()
        elif isinstance(getattr(model, "example_inputs", None), tuple):   # an ExportedProgram's (args, kwargs)
            args, kwargs = model.example_inputs
            if kwargs:
                raise InputError(f"--batch {batch}: this program's example inputs are keyword arguments; give "
                                 f"them at that batch with --input")
            base = args
        else:
            raise InputError(f"--batch {batch}: the model has no example inputs to rebatch; give them with "
                             f"--input (at the batch you deploy)")
        return rebatch(base, batch)

    make.uses_default = True
    return make
