"""Lower a flat core-ATen FX graph to a pure JAX function (the XLA backend's front half).

    lowered = lower_graph(program.graph_module)          # raises UnsupportedOpError naming op + source line
    params = {k: jnp.asarray(v) for k, v in lowered.params_from(program.graph_module).items()}
    outs = jax.jit(lowered.fn)(params, *[to_jax(x) for x in program.flat_example_inputs()])

``lowered.fn(params, *inputs)`` interprets the graph node by node with the rules of
:mod:`fxopt.backends.xla.ops`; under ``jax.jit`` that interpretation happens once, at trace time, and XLA
sees only the jax.numpy/lax operations. ``call_module`` nodes whose submodule is itself a GraphModule (the
decode-loop pieces of an ``ocr``-style program) are lowered recursively; their weights appear in
``param_names`` as ``"<submodule>.<weight>"``.

dtypes: importing this module turns on ``jax_enable_x64`` (process-wide), so int64 indices stay int64 and
float64 exists; every rule passes explicit dtypes so float32 stays float32. After each node the result's dtype
is checked against the node's recorded ``meta["val"]``: ``dtype_check="cast"`` (default) casts a mismatch to
the recorded dtype, ``"raise"`` raises BackendError (tests use it), ``"off"`` does nothing. Why x64 rather
than casting int64 to int32: docs/backends/xla-lowering.md.
"""
from __future__ import annotations

import functools
import inspect
import operator
from dataclasses import dataclass, field
from typing import Any, Callable

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.fx  # noqa: E402
from torch.fx.node import map_arg  # noqa: E402

from fxopt.backends.xla import ops  # noqa: E402
from fxopt.errors import BackendError, InputError  # noqa: E402
from fxopt.ir.nodes import op_name  # noqa: E402
from fxopt.ir.provenance import source_of  # noqa: E402

__all__ = [
    "UnsupportedOpError", "Lowered", "lower_graph", "supported_ops", "unsupported_nodes", "to_jax", "to_torch",
    "to_numpy", "run_lowered", "source_line",
]


class UnsupportedOpError(InputError):
    """A graph holds an op the XLA lowering has no rule for (or cannot lower with these arguments); the message
    names the op, the node and the model's source line."""


# --------------------------------------------------------------------------------------------- naming
def source_line(node: torch.fx.Node) -> str:
    """The model source line a node came from (``file.py:42``), from its provenance or stack trace, else
    ``"unknown source line"``."""
    return source_of(node)


# --------------------------------------------------------------------------------------------- support
def supported_ops() -> frozenset[str]:
    """The ATen op packet names (``"addmm"``, ``"_embedding_bag"``...) that have a lowering rule, and the
    qualified names of other namespaces' ops that do (``"fxopt::grouped_mm"``), for the ``xla`` op-support
    table. A packet may be listed while one of its overloads is not lowered; per node,
    :func:`unsupported_nodes` is exact."""
    names = set()
    for key in ops.RULES:
        if isinstance(key, torch._ops.OpOverload) and key.namespace != "aten":
            names.add(f"{key.namespace}::{key._opname}")   # fxopt::grouped_mm: qualified, never an ATen name
        elif isinstance(key, torch._ops.OpOverload):
            names.add(key._opname)
        elif isinstance(key, torch._ops.OpOverloadPacket):
            names.add(key._qualified_op_name.split("::")[-1])
    return frozenset(names)


def _submodule(gm: torch.nn.Module, target: str):
    try:
        return gm.get_submodule(target)
    except AttributeError:
        return None


def _why_not(gm: torch.nn.Module, node: torch.fx.Node) -> str | None:
    if node.op == "call_function":
        if ops.lookup(node.target) is None:
            return "has no XLA lowering"
        return ops.check(node)
    if node.op == "call_module":
        sub = _submodule(gm, node.target)
        return None if isinstance(sub, torch.fx.GraphModule) else \
            f"calls module {type(sub).__name__}, which is not a GraphModule"
    if node.op == "call_method":
        return "is a call_method node (not core ATen)"
    if node.op == "get_attr":
        val = _fetch(gm, node.target, missing_ok=True)
        if not isinstance(val, torch.Tensor) and not isinstance(val, torch.fx.GraphModule):
            return f"reads {type(val).__name__} attribute, not a tensor"
    return None


def unsupported_nodes(gm: torch.fx.GraphModule) -> list[tuple[str, str, str]]:
    """``[(node name, op, source line)]`` of every node :func:`lower_graph` would reject, in graph order
    (nodes inside GraphModule submodules are named ``"submodule.node"``)."""
    bad: list[tuple[str, str, str]] = []
    for node in gm.graph.nodes:
        reason = _why_not(gm, node)
        if reason is not None:
            bad.append((node.name, op_name(node.target) if node.op != "call_module" else node.target,
                        source_line(node)))
        elif node.op == "call_module":
            sub = _submodule(gm, node.target)
            bad.extend((f"{node.target}.{n}", op, src) for n, op, src in unsupported_nodes(sub))
    seen, out = set(), []
    for entry in bad:   # a submodule called many times is reported once
        if entry not in seen:
            seen.add(entry)
            out.append(entry)
    return out


def _unsupported_error(gm: torch.fx.GraphModule, node: torch.fx.Node, reason: str, prefix: str = "") -> \
        UnsupportedOpError:
    return UnsupportedOpError(
        f"{op_name(node.target)} at node '{prefix}{node.name}' ({source_line(node)}) {reason}: run "
        f"'split{{target=xla}}' to keep it on the CPU, or add a rule to fxopt/backends/xla/ops.py")


# --------------------------------------------------------------------------------------------- tensors
def _fetch(gm: torch.nn.Module, target: str, missing_ok: bool = False):
    obj = gm
    for part in target.split("."):
        if not hasattr(obj, part):
            if missing_ok:
                return None
            raise InputError(f"graph reads attribute '{target}', which the GraphModule does not have")
        obj = getattr(obj, part)
    return obj


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A read-only numpy view of a CPU tensor, dtype-faithful (bfloat16 as ``ml_dtypes.bfloat16``)."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.resolve_conj().resolve_neg().contiguous()
    if t.dtype == torch.bfloat16:
        import ml_dtypes  # local: ml_dtypes comes with jax; only bfloat16 tensors need it
        arr = t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    else:
        arr = t.numpy()
    arr = arr.view()
    arr.flags.writeable = False
    return arr


def to_jax(t: torch.Tensor) -> jax.Array:
    """A torch tensor as a jax.Array of the same dtype and shape (zero-copy through DLPack where possible,
    else through numpy). Non-tensors are returned unchanged."""
    if not isinstance(t, torch.Tensor):
        return t
    t = t.detach().resolve_conj().resolve_neg().contiguous()
    try:
        out = jax.dlpack.from_dlpack(t)
        if out.dtype == ops.jdtype(t.dtype) and out.shape == tuple(t.shape):
            return out
    except Exception:   # noqa: BLE001 - dtypes/devices DLPack does not carry: take the numpy route
        pass
    return jnp.asarray(to_numpy(t))


def is_jax_array(value: Any) -> bool:
    """True for a jax.Array."""
    return isinstance(value, jax.Array)


def torch_place(a: jax.Array) -> str:
    """The torch device string of where ``a`` lives (``cpu``, ``cuda:0``, ...): the key a partition keeps
    its executables and weights under, the same whether it is given torch tensors or jax.Arrays."""
    device = next(iter(a.devices()))
    if device.platform == "cpu":
        return "cpu"
    index = getattr(device, "local_hardware_id", None)
    index = device.id if index is None else index
    return f"cuda:{index}" if device.platform in ("gpu", "cuda", "rocm") else f"{device.platform}:{index}"


def to_torch(a: Any) -> Any:
    """A jax.Array as a torch tensor of the same dtype and shape (DLPack where possible, else numpy);
    Python numbers and None pass through."""
    if not isinstance(a, jax.Array):
        return a
    try:
        out = torch.from_dlpack(a)
        if out.dtype == ops.tdtype(a.dtype) and tuple(out.shape) == a.shape:
            return out
    except Exception:   # noqa: BLE001
        pass
    arr = np.asarray(a)
    if arr.dtype.name == "bfloat16":
        return torch.from_numpy(arr.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(arr.copy())


# --------------------------------------------------------------------------------------------- lowering
_EMBEDDING_BAG_SIGNATURE = inspect.signature(ops._embedding_bag)


def _uniform_bag_length(gm: torch.nn.Module, node: torch.fx.Node) -> int | None:
    """L when embedding-bag ``node`` reads constant offsets ``0, L, 2L, ...`` (a graph weight) that cut its
    static-length indices into equal bags, in sum or mean mode without per-sample weights or padding; else
    None (the general rule handles it)."""
    try:   # the arguments by name, as the general rule takes them (ATen's embedding-bag schemas share them)
        call = _EMBEDDING_BAG_SIGNATURE.bind(*node.args, **node.kwargs)
    except TypeError:
        return None
    call.apply_defaults()
    bound = call.arguments
    offsets, indices = bound["offsets"], bound["indices"]
    mode, psw, padding = bound["mode"], bound["per_sample_weights"], bound["padding_idx"]
    if not (isinstance(offsets, torch.fx.Node) and offsets.op == "get_attr" and isinstance(indices, torch.fx.Node)):
        return None
    if mode not in (0, 1) or psw is not None or (padding is not None and padding >= 0):
        return None
    val = indices.meta.get("val")
    if val is None or val.dim() != 1 or not isinstance(val.shape[0], int):
        return None
    off = _fetch(gm, offsets.target)
    if not isinstance(off, torch.Tensor) or off.dim() != 1 or off.dtype not in (torch.int64, torch.int32):
        return None
    n = int(val.shape[0])
    nbags = off.shape[0] - 1 if bound["include_last_offset"] else off.shape[0]
    if nbags < 1 or n % nbags or n == 0:
        return None
    length = n // nbags
    if not torch.equal(off[:nbags].to(torch.int64), torch.arange(0, n, length, dtype=torch.int64)):
        return None
    return length


@dataclass
class Lowered:
    """A graph lowered to JAX.

    ``fn(params, *inputs) -> tuple`` is pure and ``jax.jit``-able: ``params`` maps every name in
    ``param_names`` to an array, ``inputs`` are the graph's placeholders in order (``input_names``). It returns
    ``output_count`` values: jax.Arrays, or Python numbers/None where the graph returns those
    (``output_kinds`` says which: "tensor", "scalar", "none")."""

    fn: Callable
    param_names: list[str]
    input_names: list[str]
    output_count: int
    output_kinds: list[str] = field(default_factory=list)
    single_output: bool = False

    def params_from(self, gm: torch.nn.Module) -> dict[str, np.ndarray]:
        """The weights ``fn`` needs, read from ``gm`` (the module that was lowered) as read-only numpy arrays,
        dtype-faithful."""
        out = {}
        for name in self.param_names:
            val = _fetch(gm, name)
            if not isinstance(val, torch.Tensor):
                raise InputError(f"graph attribute '{name}' is a {type(val).__name__}, not a tensor")
            out[name] = to_numpy(val)
        return out


def _node_output_kind(node: torch.fx.Node) -> str:
    """"tensor" | "scalar" | "none" for a graph output node (from meta["val"], else from its op)."""
    if "val" in node.meta:
        return _output_kind(node.meta["val"])
    target = node.target
    if node.op == "call_function" and (not isinstance(target, torch._ops.OpOverload)
                                       or target._opname in ("sym_size", "sym_numel", "sym_stride",
                                                             "sym_storage_offset")):
        return "scalar" if target is not operator.getitem else "tensor"
    return "tensor"


def _output_kind(val: Any) -> str:
    if val is None:
        return "none"
    if isinstance(val, (bool, int, float, torch.SymInt, torch.SymFloat, torch.SymBool)):
        return "scalar"
    return "tensor"


def _conform(node: torch.fx.Node, val: Any, mode: str, prefix: str) -> Any:
    """The node's value with its dtype checked against ``meta["val"]`` (cast or raise, by mode)."""
    expected = node.meta.get("val")
    if mode == "off" or expected is None:
        return val
    if isinstance(expected, torch.Tensor):
        if not isinstance(val, jax.Array):
            if isinstance(val, (bool, int, float)):
                return jnp.asarray(val, ops.jdtype(expected.dtype))
            return val
        want = ops.jdtype(expected.dtype)
        if val.dtype != want:
            if mode == "raise":
                raise BackendError(f"{op_name(node.target)} at node '{prefix}{node.name}' lowered to "
                                   f"{val.dtype}, PyTorch gives {expected.dtype}")
            val = val.astype(want)
        if mode == "raise":
            shape = tuple(expected.shape)
            if len(shape) != val.ndim or any(isinstance(s, int) and s != v for s, v in zip(shape, val.shape)):
                raise BackendError(f"{op_name(node.target)} at node '{prefix}{node.name}' lowered to shape "
                                   f"{val.shape}, PyTorch gives {tuple(shape)}")
        return val
    if isinstance(expected, (tuple, list)) and isinstance(val, (tuple, list)) and len(expected) == len(val):
        return type(val)(_conform_item(node, e, v, mode, prefix) for e, v in zip(expected, val))
    return val


def _conform_item(node, expected, val, mode, prefix):
    if isinstance(expected, torch.Tensor) and isinstance(val, jax.Array):
        want = ops.jdtype(expected.dtype)
        if val.dtype != want:
            if mode == "raise":
                raise BackendError(f"{op_name(node.target)} at node '{prefix}{node.name}' lowered an output to "
                                   f"{val.dtype}, PyTorch gives {expected.dtype}")
            return val.astype(want)
    return val


def lower_graph(gm: torch.fx.GraphModule, *, dtype_check: str = "cast", _prefix: str = "") -> Lowered:
    """Lower ``gm`` (a flat core-ATen GraphModule; not modified) to a :class:`Lowered` JAX function.

    Raises :class:`UnsupportedOpError` (an InputError) naming the first op without a lowering, its node and
    source line (and how many others there are). ``dtype_check``: "cast" | "raise" | "off" (module docstring).
    """
    if not isinstance(gm, torch.fx.GraphModule):
        raise InputError(f"lower_graph takes a torch.fx.GraphModule, not {type(gm).__name__}")
    if dtype_check not in ("cast", "raise", "off"):
        raise InputError(f"dtype_check must be 'cast', 'raise' or 'off', not {dtype_check!r}")
    nodes = list(gm.graph.nodes)
    bad = [(n, r) for n in nodes if (r := _why_not(gm, n)) is not None]
    if bad:
        node, reason = bad[0]
        err = _unsupported_error(gm, node, reason, _prefix)
        if len(bad) > 1:
            others = sorted({op_name(n.target) for n, _ in bad[1:]} - {op_name(node.target)})
            more = f" ({len(bad) - 1} more unsupported node(s){': ' + ', '.join(others) if others else ''})"
            err = UnsupportedOpError(str(err) + more)
        raise err

    placeholders = [n for n in nodes if n.op == "placeholder"]
    out_node = next(n for n in reversed(nodes) if n.op == "output")
    out_arg = out_node.args[0]
    single = not isinstance(out_arg, (tuple, list))
    outs = [out_arg] if single else list(out_arg)
    kinds = [_node_output_kind(o) if isinstance(o, torch.fx.Node) else _output_kind(o) for o in outs]

    param_names: list[str] = []
    subs: dict[str, Lowered] = {}
    for n in nodes:
        if n.op == "get_attr" and n.target not in param_names:
            param_names.append(n.target)
        elif n.op == "call_module" and n.target not in subs:
            subs[n.target] = lower_graph(_submodule(gm, n.target), dtype_check=dtype_check,
                                         _prefix=f"{_prefix}{n.target}.")
            param_names.extend(f"{n.target}.{p}" for p in subs[n.target].param_names
                               if f"{n.target}.{p}" not in param_names)

    rules = {n: ops.lookup(n.target) for n in nodes if n.op == "call_function"}
    for n in nodes:   # embedding bags of equal, constant length: a gather and a sum instead of segment sums
        length = _uniform_bag_length(gm, n) if n.op == "call_function" and n.target in ops.EMBEDDING_BAGS else None
        if length:
            rules[n] = functools.partial(ops.embedding_bag_uniform, bag_length=length)

    def fn(params, *inputs):
        if len(inputs) != len(placeholders):
            raise InputError(f"the lowered graph takes {len(placeholders)} inputs "
                             f"({', '.join(p.name for p in placeholders)}), got {len(inputs)}")
        env: dict[torch.fx.Node, Any] = {}
        lookup = env.__getitem__
        for i, p in enumerate(placeholders):
            env[p] = inputs[i]
        for node in nodes:
            if node.op in ("placeholder", "output"):
                continue
            if node.op == "get_attr":
                env[node] = params[node.target]
                continue
            args = map_arg(node.args, lookup)
            kwargs = map_arg(node.kwargs, lookup)
            if node.op == "call_module":
                sub = subs[node.target]
                sub_params = {p: params[f"{node.target}.{p}"] for p in sub.param_names}
                res = sub.fn(sub_params, *args)
                env[node] = res[0] if sub.single_output else res
                continue
            try:
                val = rules[node](*args, **kwargs)
            except ops.Unlowerable as exc:
                raise _unsupported_error(gm, node, f"cannot be lowered: {exc}", _prefix) from None
            except (InputError, BackendError):
                raise
            except Exception as exc:   # noqa: BLE001 - name the node, keep the cause
                raise BackendError(f"lowering {op_name(node.target)} at node '{_prefix}{node.name}' "
                                   f"({source_line(node)}) failed: {type(exc).__name__}: {exc}") from exc
            env[node] = _conform(node, val, dtype_check, _prefix)
        return tuple(map_arg(o, lookup) if isinstance(o, (torch.fx.Node, list, tuple)) else o for o in outs)

    return Lowered(fn=fn, param_names=param_names, input_names=[p.name for p in placeholders],
                   output_count=len(outs), output_kinds=kinds, single_output=single)


# --------------------------------------------------------------------------------------------- running
def run_lowered(gm: torch.fx.GraphModule, flat_inputs, *, dtype_check: str = "cast",
                compiler_options: dict | None = None) -> tuple:
    """Lower ``gm``, ``jax.jit`` it, run it on ``flat_inputs`` (torch tensors; non-tensors are bound as static
    Python values) and return the outputs as torch tensors (Python numbers and None as such).
    ``compiler_options`` go to XLA (e.g. ``{"xla_backend_optimization_level": 0}`` to compile faster)."""
    lowered = lower_graph(gm, dtype_check=dtype_check)
    params = {k: jnp.asarray(v) for k, v in lowered.params_from(gm).items()}
    flat_inputs = list(flat_inputs)
    positions = [i for i, x in enumerate(flat_inputs) if isinstance(x, torch.Tensor)]

    def call(params, *arrays):
        full = list(flat_inputs)
        for i, a in zip(positions, arrays):
            full[i] = a
        return lowered.fn(params, *full)

    arrays = [to_jax(flat_inputs[i]) for i in positions]
    compiled = jax.jit(call).lower(params, *arrays).compile(compiler_options=compiler_options)
    outs = compiled(params, *arrays)
    result = []
    for kind, o in zip(lowered.output_kinds, outs):
        if kind == "scalar" and isinstance(o, jax.Array) and o.ndim == 0:
            result.append(o.item())
        else:
            result.append(to_torch(o))
    return tuple(result)

