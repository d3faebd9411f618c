"""The XLA backend's per-partition artifact: ``jax.export`` bytes, StableHLO text and the weights.

For an accelerator partition named ``NAME`` the artifact directory holds::

    NAME.jaxexport        jax.export.Exported.serialize(): the StableHLO module for every exported platform,
                          its calling convention, input/output avals and pytree structure (bytes)
    NAME.stablehlo.mlir   exported.mlir_module(): the same module as text, for reading and for other tools
    NAME.safetensors      the partition's weights (numpy arrays, dtype-faithful, bfloat16 included)

The weights are *arguments* of the exported function (``fn(params: dict, *inputs)``), not constants baked
into the module: the module stays small, one weight file serves every shape signature and platform, and a
weight shared by several nodes is stored once.

Dynamic dims: an input dim that is a SymInt in the placeholder's ``val`` (``program.dynamic_dims``) is
exported as a ``jax.export`` symbolic dim of the same name (one scope for the partition, so inputs sharing a
symbol must agree at call time). When the lowering cannot trace with symbolic dims, the partition is exported
with the example's static shape and :func:`export_partition` says why; calling it with another shape is a
one-line :class:`~fxopt.errors.InputError` (:func:`check_static_shapes`).

Loading (:func:`read_partition`) deserializes with ``jax.export.deserialize``: no model code and no FX graph.
"""
from __future__ import annotations

# local imports: jax is optional (pip install 'fxopt[xla]'); it is imported where used, so fxopt plans and loads other backends without it
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from fxopt.errors import BackendError, InputError
from fxopt.ir.shapes import dim_expr
from safetensors.numpy import save_file
import numpy as np
from safetensors.numpy import load_file
from fxopt.backends.partitioned import safe_file

__all__ = ["ExportResult", "input_avals", "export_partition", "write_partition", "read_partition",
           "check_static_shapes", "partition_files", "jax_dtype_of"]

#: The file suffixes of one exported partition, in the order :func:`partition_files` lists them.
SUFFIXES = (".jaxexport", ".stablehlo.mlir", ".safetensors")


@dataclass
class ExportResult:
    """What :func:`export_partition` made: the ``jax.export.Exported``, the platforms it covers, whether its
    shapes are symbolic (``dynamic``: ``{symbol: [[input name, dim], ...]}``, empty when static) and
    ``notes`` (why a platform or dynamic export was dropped; plain sentences for the manifest)."""

    exported: Any
    platforms: tuple[str, ...]
    dynamic: dict[str, list] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def partition_files(stem: str) -> list[str]:
    """The file names of partition ``stem``: ``[stem.jaxexport, stem.stablehlo.mlir, stem.safetensors]``."""
    return [stem + s for s in SUFFIXES]


def jax_dtype_of(dtype: torch.dtype, to_jax: Callable) -> Any:
    """The JAX dtype ``to_jax`` gives a torch tensor of ``dtype`` (the lowering's dtype policy, e.g. int64
    stays int64 under ``jax_enable_x64``)."""
    return to_jax(torch.empty((0,), dtype=dtype)).dtype


def _dim_text(d: Any) -> str:

    return str(int(d)) if not isinstance(d, torch.SymInt) else str(dim_expr(d))


def _hint(d: Any) -> int:
    if not isinstance(d, torch.SymInt):
        return int(d)
    hint = getattr(d.node, "hint", None)
    if hint is None:
        hint = d.node.shape_env.size_hint(d.node.expr)
    return int(hint)


def input_avals(module: torch.fx.GraphModule, to_jax: Callable, dynamic: bool,
                example_shapes: list[tuple[int, ...]] | None = None) -> tuple[list, dict[str, list]]:
    """``jax.ShapeDtypeStruct`` per placeholder of ``module`` (from ``node.meta["val"]``) and the symbolic
    dims used (``{symbol: [[input name, dim], ...]}``); non-tensor placeholders are skipped. With ``dynamic``, SymInt dims become
    ``jax.export.symbolic_shape`` dims sharing one scope; else every dim is static (the SymInt's hint, or
    ``example_shapes`` when given). Raises BackendError for a placeholder without a tensor ``val``."""
    import jax
    from jax import export

    scope = export.SymbolicScope()
    avals, symbols = [], {}
    placeholders = [n for n in module.graph.nodes if n.op == "placeholder"]
    for i, ph in enumerate(placeholders):
        val = ph.meta.get("val")
        if not isinstance(val, torch.Tensor):
            continue  # a SymInt/number input: baked into the export by the caller (XlaStage)
        dtype = jax_dtype_of(val.dtype, to_jax)
        symbolic = dynamic and any(isinstance(d, torch.SymInt) for d in val.shape)
        if symbolic:
            texts = [_dim_text(d) for d in val.shape]
            shape = export.symbolic_shape(", ".join(texts), scope=scope)
            for k, d in enumerate(val.shape):
                if isinstance(d, torch.SymInt):
                    symbols.setdefault(texts[k], []).append([ph.name, k])
        elif example_shapes is not None:
            shape = tuple(example_shapes[len(avals)])
        else:
            shape = tuple(_hint(d) for d in val.shape)
        avals.append(jax.ShapeDtypeStruct(shape, dtype))
    return avals, symbols


def export_partition(fn: Callable, params: dict, module: torch.fx.GraphModule, to_jax: Callable,
                     platforms: tuple[str, ...], dynamic: bool,
                     example_shapes: list[tuple[int, ...]] | None = None) -> ExportResult:
    """Export ``fn(params, *inputs)`` with ``jax.export`` for ``platforms``. Tries symbolic dims first (when
    ``dynamic`` and the module has SymInt dims), then static shapes; tries all ``platforms``, then ``cpu``
    alone. Returns an :class:`ExportResult` whose ``notes`` say what was dropped and why. Raises
    BackendError when no export works."""
    import jax
    from jax import export

    param_avals = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in params.items()}
    jitted = jax.jit(fn)
    notes: list[str] = []
    attempts = []
    avals, symbols = input_avals(module, to_jax, dynamic, example_shapes)
    if symbols:
        attempts.append((avals, symbols))
    static, _ = input_avals(module, to_jax, False, example_shapes)
    attempts.append((static, {}))
    platform_sets = [tuple(platforms)] + ([("cpu",)] if tuple(platforms) != ("cpu",) else [])
    last: Exception | None = None
    for ins, syms in attempts:
        for plats in platform_sets:
            try:
                exported = export.export(jitted, platforms=plats)(param_avals, *ins)
            except Exception as exc:  # noqa: BLE001 - any tracing/lowering failure: try the next variant
                last = exc
                what = (f"symbolic dims {', '.join(sorted(syms))}" if syms else "static shapes")
                notes.append(f"export with {what} for {'/'.join(plats)} failed: "
                             f"{type(exc).__name__}: {_first_line(str(exc))}")
                if isinstance(exc, (BackendError, InputError)):
                    break  # the lowering failed while tracing: the same on every platform
                continue
            return ExportResult(exported, tuple(plats), syms, notes)
    raise BackendError(f"jax.export failed for every variant; last error: {type(last).__name__}: "
                       f"{_first_line(str(last))}")


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:300]


def write_partition(directory: str, stem: str, exported: Any, params_np: dict) -> list[str]:
    """Write ``stem.jaxexport`` (serialized bytes), ``stem.stablehlo.mlir`` (text) and ``stem.safetensors``
    (the weights, numpy) into ``directory``; returns the file names."""

    names = partition_files(stem)
    with open(os.path.join(directory, names[0]), "wb") as f:
        f.write(bytes(exported.serialize()))
    with open(os.path.join(directory, names[1]), "w", encoding="utf-8") as f:
        f.write(exported.mlir_module())

    # np.ascontiguousarray makes 0-d arrays 1-d; the reshape keeps a scalar weight a scalar
    save_file({k: np.ascontiguousarray(v).reshape(np.shape(v)) for k, v in params_np.items()},
              os.path.join(directory, names[2]),
              metadata={"format": "fxopt-xla-params"})
    return names


def read_partition(directory: str, files: list[str]) -> tuple[Any, dict]:
    """Read one saved partition (``files`` as :func:`partition_files` names them, checked to lie inside
    ``directory``); returns ``(jax.export.Exported, {param name: numpy array})``. Raises InputError for a
    missing or unreadable file."""
    from jax import export

    by_suffix = {}
    for name in files:
        for s in SUFFIXES:
            if name.endswith(s):
                by_suffix[s] = safe_file(directory, name)
    missing = [s for s in (SUFFIXES[0], SUFFIXES[2]) if s not in by_suffix]
    if missing:
        raise InputError(f"{directory}: XLA partition files {files} lack a '{missing[0]}' file; re-create the "
                         "artifact with `fxopt run --backend xla`")
    try:
        with open(by_suffix[SUFFIXES[0]], "rb") as f:
            exported = export.deserialize(bytearray(f.read()))
    except Exception as exc:  # noqa: BLE001 - corrupt bytes or a newer serialization format
        raise InputError(f"{by_suffix[SUFFIXES[0]]}: cannot deserialize the jax.export module "
                         f"({type(exc).__name__}: {_first_line(str(exc))}); re-create the artifact with this "
                         "jax version") from None
    _check_custom_calls(by_suffix[SUFFIXES[0]], exported)
    try:
        params = load_file(by_suffix[SUFFIXES[2]])
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{by_suffix[SUFFIXES[2]]}: unreadable weights ({exc}); re-create the artifact") from None
    return exported, params


_CUSTOM_CALL = re.compile(r'stablehlo\.custom_call\s+@([\w.$-]+)|call_target_name\s*=\s*"([^"]*)"')


def _stable_targets() -> frozenset:
    try:
        from jax._src.export import _export
    except ImportError:
        return frozenset()
    return frozenset(getattr(_export, "_CUSTOM_CALL_TARGETS_GUARANTEED_STABLE", ()))


def _check_custom_calls(path: str, exported: Any) -> None:
    """InputError (one line) when the module calls an XLA custom call that is not one of jax's stable,
    side-effect-free targets (a host callback would call into the process that saved it)."""
    try:
        text = exported.mlir_module()
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{path}: cannot read the module's StableHLO ({type(exc).__name__}); re-create the "
                         "artifact") from None
    allowed = _stable_targets()
    for match in _CUSTOM_CALL.finditer(text):
        target = match.group(1) or match.group(2)
        if target not in allowed:
            raise InputError(f"{path}: the module calls the XLA custom call '{target[:60]}', which is not one of "
                             "jax's stable targets (a host callback would call code in the process that saved "
                             "it); refusing to load it")


def check_static_shapes(partition: str, input_names: list[str], exported: Any, arrays: list,
                        fell_back: bool = False) -> None:
    """Raise InputError (one line) when an input's shape differs from a *static* dim of ``exported``'s
    input avals (symbolic dims accept any size; the exported module checks that shared symbols agree).
    ``fell_back``: a symbolic export was tried and failed (the message then points at the manifest)."""
    from jax import export

    avals = exported.in_avals[-len(arrays):] if arrays else ()
    for name, aval, x in zip(input_names, avals, arrays):
        want = tuple(aval.shape)
        have = tuple(x.shape)
        if len(want) != len(have) or any(not export.is_symbolic_dim(w) and int(w) != h
                                         for w, h in zip(want, have)):
            raise InputError(f"partition '{partition}' input '{name}' was exported with the static shape "
                             f"{list(want)} but got {list(have)}; " + (
                                 "the lowering could not export its dynamic dims (manifest export_notes say "
                                 "why): re-export with inputs of this shape" if fell_back else
                                 "re-export with inputs of this shape, or capture with dynamic_shapes and "
                                 "compile with xla{dynamic=true}"))
