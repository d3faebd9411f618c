"""Save and load flat fxopt graphs without ever running code from the file.

An artifact is two files in one directory:

- ``<stem>.json`` — the graph, as plain JSON (no pickles, no Python source);
- ``<stem>.safetensors`` — every tensor the graph reads through ``get_attr``, stored once per distinct tensor.

The JSON document::

    {
      "format": "fxopt-graph", "version": 1,
      "tensors": {KEY: {"dtype": "float32", "shape": [8, 8]}, ...},   # what the .safetensors must hold
      "graph": MODULE
    }

    MODULE = {
      "nodes": [NODE, ...],                         # in graph order
      "attributes": {TARGET: {"tensor": KEY, "kind": "parameter" | "buffer", "device": "cpu"}, ...},
      "submodules": {TARGET: MODULE, ...}           # GraphModules reached by call_module / get_attr
    }                                               # (split partitions, cond/while_loop branches)

    NODE = {"name": "addmm", "op": "call_function",
            "target": "aten::addmm.default", "target_kind": "op",     # target_kind only for call_function
            "args": [VALUE, ...], "kwargs": {NAME: VALUE, ...},
            "meta": {"val": "float32[s0, 8]", "provenance": {...}, "placement": ...,
                     "placement_reason": ..., "partition": ...}}   # meta and each key are optional

A call_function target is named, never pickled: ``"op"`` (an OpOverload, ``"ns::op.overload"``),
``"op_packet"`` (``"ns::op"``), ``"hop"`` (a higher-order op such as ``"cond"``) or ``"builtin"`` (one of a
fixed allowlist: ``operator.*``, a few ``math.*``, ``torch.sym_*``). Loading resolves them only through that
allowlist and through operators already registered in this process's dispatcher, and an operator must also
pass :mod:`fxopt.ir.loadable` (functional ATen or fxopt operators only: nothing that writes an argument,
opens a file or prints); nothing is imported or evaluated. Saving refuses what loading would refuse, so a
graph that saves also loads. ``call_method`` nodes are neither saved nor loaded (core-ATen graphs have
none). Every name that FX's code generator pastes into Python source (node names, placeholder and attribute
targets) is checked to be a plain identifier / dotted path first. Both files must be plain files inside the
directory (no symbolic links), and the JSON may nest at most :data:`MAX_JSON_DEPTH` levels.

A VALUE is JSON null/bool/int/float/string/list, or a one-key object for everything else:
``{"node": NAME}``, ``{"tuple": [...]}``, ``{"dict": [[K, V], ...]}``, ``{"float": "inf" | "-inf" | "nan"}``,
``{"complex": [RE, IM]}``, ``{"dtype": "float32"}``, ``{"device": "cpu"}``, ``{"layout": "strided"}``,
``{"memory_format": "contiguous_format"}``, ``{"slice": [START, STOP, STEP]}``, ``{"ellipsis": true}``,
and ``{"op" | "op_packet" | "hop" | "builtin": NAME}`` for operators passed as arguments (e.g. to
``auto_functionalized``).

Node meta kept: ``"val"`` as a string (``meta["val"]`` is a FakeTensor in memory; after loading the string is
in ``node.meta["val_repr"]`` and ``meta["val"]`` must be recomputed), and ``"provenance"`` / ``"placement"`` /
``"placement_reason"`` / ``"partition"`` (``split``'s, see :data:`KEPT_META`) when they are JSON-able; files
written before the last two were kept load the same, without them. The graph is always rebuilt with plain ``CodeGen`` (flat placeholders, tuple output).
"""
from __future__ import annotations

import builtins
import json
import keyword
import math
import operator
import os
import re
from typing import Any

import torch
import torch.fx
from safetensors.torch import load_file, save_file

from fxopt.errors import InputError
from fxopt.ir import loadable
import safetensors.torch as st

__all__ = [
    "FORMAT",
    "VERSION",
    "graph_to_dict",
    "dict_to_graph",
    "save_graph_module",
    "load_graph_module",
]

FORMAT = "fxopt-graph"
VERSION = 1

#: Node meta saved beside ``val`` (for inspection: ``fxopt inspect --placement``, the visualizer). Optional in a
#: file, so documents written before ``placement_reason`` and ``partition`` were added load unchanged.
KEPT_META = ("provenance", "placement", "placement_reason", "partition")
# The deepest nesting of arrays and objects a graph, manifest or trace file may have (fxopt writes ~12).
MAX_JSON_DEPTH = 64

# --------------------------------------------------------------------------------------------- allowlists
# Plain Python callables that FX graphs use (getitem for multi-output ops, sym-int arithmetic). Only these
# names can be loaded; the objects are looked up here, by fxopt's own code, never from the file.
_OPERATOR_NAMES = (
    "getitem", "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "neg", "pos", "abs", "eq", "ne",
    "lt", "le", "gt", "ge", "and_", "or_", "xor", "not_", "invert", "lshift", "rshift", "truth",
)
_MATH_NAMES = ("ceil", "floor", "trunc", "sqrt", "exp", "log", "log2", "cos", "sin", "tan", "tanh", "pow")
_BUILTIN_PY_NAMES = ("abs", "min", "max", "round", "int", "float", "bool", "pow")
_TORCH_NAMES = (
    "sym_float", "sym_int", "sym_max", "sym_min", "sym_not", "sym_ite", "sym_sqrt", "sym_sum", "_sym_sqrt",
    "_assert",
)


def _build_builtins() -> dict[str, Any]:
    table: dict[str, Any] = {}
    for module, prefix, names in (
        (operator, "operator", _OPERATOR_NAMES),
        (math, "math", _MATH_NAMES),
        (builtins, "builtins", _BUILTIN_PY_NAMES),
        (torch, "torch", _TORCH_NAMES),
    ):
        for name in names:
            fn = getattr(module, name, None)
            if fn is not None:
                table[f"{prefix}.{name}"] = fn
    set_grad = getattr(torch._C, "_set_grad_enabled", None)
    if set_grad is not None:
        table["torch._C._set_grad_enabled"] = set_grad
    return table


_BUILTINS: dict[str, Any] = _build_builtins()
_BUILTIN_NAMES: dict[Any, str] = {}
for _name, _fn in _BUILTINS.items():
    _BUILTIN_NAMES.setdefault(_fn, _name)

# Higher-order ops whose operands are graphs, tensors and plain values only.
_HOPS = frozenset({
    "cond", "while_loop", "while_loop_stack_output", "map_impl", "scan", "associative_scan",
    "invoke_subgraph", "wrap_with_set_grad_enabled", "wrap_with_autocast", "auto_functionalized",
    "auto_functionalized_v2", "with_effects", "out_dtype", "hints_wrapper", "run_const_graph",
    "flex_attention", "invoke_quant", "invoke_quant_packed", "tag_activation_checkpoint",
})

_DTYPES: dict[str, torch.dtype] = {}
_LAYOUTS: dict[str, torch.layout] = {}
_MEMORY_FORMATS: dict[str, torch.memory_format] = {}
for _value in vars(torch).values():
    if isinstance(_value, torch.dtype):
        _DTYPES[str(_value).removeprefix("torch.")] = _value
    elif isinstance(_value, torch.layout):
        _LAYOUTS[str(_value).removeprefix("torch.")] = _value
    elif isinstance(_value, torch.memory_format):
        _MEMORY_FORMATS[str(_value).removeprefix("torch.")] = _value


def _safetensors_dtypes() -> frozenset:

    table = getattr(st, "_TYPES", None)
    if isinstance(table, dict):
        return frozenset(v for v in table.values() if isinstance(v, torch.dtype))
    return frozenset({torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32,
                      torch.int16, torch.int8, torch.uint8, torch.bool})


_SAFETENSORS_DTYPES = _safetensors_dtypes()

_OPS = frozenset({"placeholder", "get_attr", "call_function", "call_method", "call_module", "output"})
_TAGS = frozenset({"node", "tuple", "dict", "float", "complex", "dtype", "device", "layout", "memory_format",
                   "slice", "ellipsis", "op", "op_packet", "hop", "builtin"})
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_PLACEHOLDER = re.compile(r"\*{0,2}[A-Za-z_][A-Za-z0-9_]*\Z")
_DOTTED = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*\Z")
_OP_NAME = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)::([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)\Z")
_PACKET_NAME = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)::([A-Za-z_][A-Za-z0-9_]*)\Z")
_DEVICE = re.compile(r"[a-z_]+(:[0-9]+)?\Z")
_STEM = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")
_NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


# =============================================================================================== saving
def graph_to_dict(gm: torch.fx.GraphModule) -> tuple[dict, dict[str, torch.Tensor]]:
    """Encode a flat GraphModule (and the GraphModules it calls or reads) for saving.

    Takes a GraphModule with plain ``CodeGen``. Returns ``(doc, tensors)``: ``doc`` is a JSON-able dict in the
    format described in this module's docstring, and ``tensors`` maps safetensors keys to contiguous,
    detached CPU tensors — one entry per distinct tensor, however many attribute names (in the root or in
    nested GraphModules) refer to it. Raises :class:`InputError` naming the node for anything that cannot be
    saved safely (pytree codegen, a call to an arbitrary Python function, a non-GraphModule submodule, a
    tensor literal in args, a dtype safetensors lacks).
    """
    saver = _Saver()
    graph = saver.module(gm, "")
    doc = {"format": FORMAT, "version": VERSION, "tensors": saver.index, "graph": graph}
    return doc, saver.tensors


class _Saver:
    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self.index: dict[str, dict] = {}
        self._by_id: dict[int, str] = {}
        self._by_view: dict[tuple, str] = {}
        self._storages: set[int] = set()
        self._keep: list[torch.Tensor] = []  # keeps ids stable while saving

    # -- modules
    def module(self, gm: torch.fx.GraphModule, prefix: str) -> dict:
        where = f" in submodule '{prefix[:-1]}'" if prefix else ""
        codegen = type(gm.graph._codegen)
        if codegen is not torch.fx.graph.CodeGen:
            raise InputError(f"graph{where} uses {codegen.__name__} (a pytree calling convention); flatten it "
                             f"(plain torch.fx.graph.CodeGen, flat placeholders, tuple output) before saving")
        nodes: list[dict] = []
        attributes: dict[str, dict] = {}
        submodules: dict[str, dict] = {}
        for node in gm.graph.nodes:
            ctx = f"node '{node.name}'{where}"
            entry: dict[str, Any] = {"name": node.name, "op": node.op}
            if node.op in ("get_attr", "call_module"):
                target = node.target
                obj = _fetch(gm, target, ctx)
                if isinstance(obj, torch.fx.GraphModule):
                    if target not in submodules:
                        submodules[target] = self.module(obj, f"{prefix}{target}.")
                elif node.op == "get_attr" and isinstance(obj, torch.Tensor):
                    if target not in attributes:
                        attributes[target] = self.tensor(obj, prefix + target, ctx)
                else:
                    what = "call_module" if node.op == "call_module" else "get_attr"
                    raise InputError(f"{ctx} ({what} '{target}') refers to a {type(obj).__name__}; only "
                                     f"tensors and GraphModules can be saved — lower or remove it first")
                entry["target"] = target
            elif node.op == "call_function":
                kind, name = _encode_callable(node.target, ctx)
                entry["target"], entry["target_kind"] = name, kind
            elif node.op == "call_method":
                raise InputError(f"{ctx} calls the Tensor method '{node.target}'; fxopt saves core-ATen graphs "
                                 f"(capture with fxopt.capture), where every call is an operator")
            else:
                if not isinstance(node.target, str):
                    raise InputError(f"{ctx} ({node.op}) has a non-string target {node.target!r}")
                entry["target"] = node.target
            entry["args"] = [self.value(a, ctx) for a in node.args]
            kwargs = {}
            for key, val in node.kwargs.items():
                if not isinstance(key, str):
                    raise InputError(f"{ctx} has a non-string keyword argument {key!r}")
                kwargs[key] = self.value(val, ctx)
            entry["kwargs"] = kwargs
            meta = _encode_meta(node)
            if meta:
                entry["meta"] = meta
            nodes.append(entry)
        return {"nodes": nodes, "attributes": attributes, "submodules": submodules}

    # -- tensors
    def tensor(self, t: torch.Tensor, path: str, ctx: str) -> dict:
        kind = "parameter" if isinstance(t, torch.nn.Parameter) else "buffer"
        key = self._by_id.get(id(t))
        if key is None:
            key = self._store(t, path, ctx)
            self._by_id[id(t)] = key
            self._keep.append(t)
        return {"tensor": key, "kind": kind, "device": str(t.device)}

    def _store(self, t: torch.Tensor, path: str, ctx: str) -> str:
        if type(t) not in (torch.Tensor, torch.nn.Parameter):
            raise InputError(f"{ctx}: attribute '{path}' is a {type(t).__name__}; only plain tensors can be "
                             f"saved — materialize it with .detach().clone() first")
        if t.device.type == "meta" or t.is_sparse or t.layout != torch.strided:
            raise InputError(f"{ctx}: attribute '{path}' is a {t.layout} tensor on {t.device}; only dense "
                             f"tensors with data can be saved")
        if t.dtype not in _SAFETENSORS_DTYPES:
            raise InputError(f"{ctx}: attribute '{path}' has dtype {t.dtype}, which safetensors cannot store; "
                             f"convert it before saving")
        view = None
        if t.numel() > 0:
            view = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(),
                    t.dtype)
            if view in self._by_view:
                return self._by_view[view]
        key = path
        while key in self.tensors:
            key += "_"
        data = t.detach()
        if data.device.type != "cpu":
            data = data.cpu()
        data = data.resolve_conj().resolve_neg().contiguous()
        if data.numel() > 0:
            ptr = data.untyped_storage().data_ptr()
            if ptr in self._storages:  # a different view of a storage already saved: store its own copy
                data = data.clone()
                ptr = data.untyped_storage().data_ptr()
            self._storages.add(ptr)
        self.tensors[key] = data
        self.index[key] = {"dtype": str(data.dtype).removeprefix("torch."), "shape": list(data.shape)}
        if view is not None:
            self._by_view[view] = key
        return key

    # -- values
    def value(self, v: Any, ctx: str) -> Any:
        if v is None or isinstance(v, (bool, str)):
            return v
        if isinstance(v, int):
            return int(v)
        if isinstance(v, float):
            return _encode_float(v)
        if isinstance(v, torch.fx.Node):
            return {"node": v.name}
        if isinstance(v, list):
            return [self.value(x, ctx) for x in v]
        if isinstance(v, tuple):
            return {"tuple": [self.value(x, ctx) for x in v]}
        if isinstance(v, dict):
            return {"dict": [[self.value(k, ctx), self.value(x, ctx)] for k, x in v.items()]}
        if isinstance(v, complex):
            return {"complex": [_encode_float(v.real), _encode_float(v.imag)]}
        if isinstance(v, torch.dtype):
            return {"dtype": str(v).removeprefix("torch.")}
        if isinstance(v, torch.device):
            return {"device": str(v)}
        if isinstance(v, torch.layout):
            return {"layout": str(v).removeprefix("torch.")}
        if isinstance(v, torch.memory_format):
            return {"memory_format": str(v).removeprefix("torch.")}
        if isinstance(v, slice):
            return {"slice": [self.value(v.start, ctx), self.value(v.stop, ctx), self.value(v.step, ctx)]}
        if v is Ellipsis:
            return {"ellipsis": True}
        if isinstance(v, torch.Tensor):
            raise InputError(f"{ctx} has a tensor literal in its arguments; register it as an attribute and "
                             f"read it with get_attr before saving")
        if isinstance(v, (torch._ops.OpOverload, torch._ops.OpOverloadPacket, torch._ops.HigherOrderOperator)):
            kind, name = _encode_callable(v, ctx)
            return {kind: name}
        raise InputError(f"{ctx} has an argument of type {type(v).__name__} ({v!r:.60}), which the fxopt graph "
                         f"format cannot store")


def _encode_float(v: float) -> Any:
    if math.isfinite(v):
        return float(v)
    return {"float": "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")}


def _encode_callable(fn: Any, ctx: str) -> tuple[str, str]:
    if isinstance(fn, torch._ops.OpOverload):
        name = f"{fn._schema.name}.{fn._overloadname}"
        why = loadable.refusal(fn)
        if why:
            raise InputError(f"{ctx} calls '{name}', which {why}; fxopt does not save what it would refuse to "
                             f"load (docs/reliability.md, threat model)")
        return "op", name
    if isinstance(fn, torch._ops.OpOverloadPacket):
        why = loadable.packet_refusal(fn)
        if why:
            raise InputError(f"{ctx} calls the operator packet '{fn._qualified_op_name}', which {why}; call one "
                             f"overload instead (fxopt.capture graphs do)")
        return "op_packet", fn._qualified_op_name
    if isinstance(fn, torch._ops.HigherOrderOperator):
        name = fn.name()
        if fn.namespace != "higher_order" or name not in _HOPS:
            raise InputError(f"{ctx} calls the higher-order op '{name}', which fxopt cannot save (it carries "
                             f"Python state); supported: {', '.join(sorted(_HOPS))}")
        return "hop", name
    try:
        name = _BUILTIN_NAMES.get(fn)
    except TypeError:  # unhashable callable
        name = None
    if name is not None:
        return "builtin", name
    label = getattr(fn, "__qualname__", None) or repr(fn)
    module = getattr(fn, "__module__", None)
    raise InputError(f"{ctx} calls the Python function '{module + '.' if module else ''}{label}', which fxopt "
                     f"cannot save; only torch.ops operators and operator/math/torch.sym_* builtins are allowed")


def check_target(fn: Any, ctx: str) -> None:
    """Raise InputError (one line, starting with ``ctx``) unless call target ``fn`` is one a saved graph may
    hold: an operator :mod:`fxopt.ir.loadable` allows, an allowlisted higher-order op or Python builtin."""
    _encode_callable(fn, ctx)


def _fetch(gm: torch.nn.Module, target: str, ctx: str) -> Any:
    obj: Any = gm
    for part in str(target).split("."):
        if not hasattr(obj, part):
            raise InputError(f"{ctx} reads '{target}', which the module does not have")
        obj = getattr(obj, part)
    return obj


def _val_repr(v: Any) -> str | None:
    if isinstance(v, torch.Tensor):
        return f"{str(v.dtype).removeprefix('torch.')}[{', '.join(str(d) for d in v.shape)}]"
    if v is None or isinstance(v, (bool, int, float, torch.SymInt, torch.SymFloat, torch.SymBool)):
        return str(v)
    if isinstance(v, (tuple, list)):
        parts = [_val_repr(x) for x in v]
        if any(p is None for p in parts):
            return None
        return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"
    return None


def _encode_meta(node: torch.fx.Node) -> dict:
    meta: dict[str, Any] = {}
    val = _val_repr(node.meta["val"]) if "val" in node.meta else node.meta.get("val_repr")
    if isinstance(val, str):
        meta["val"] = val
    for key in KEPT_META:
        if key in node.meta:
            try:
                meta[key] = json.loads(json.dumps(node.meta[key], allow_nan=False, sort_keys=True))
            except (TypeError, ValueError, RecursionError):
                pass  # not JSON-able: dropped (it is for inspection only)
    return meta


def save_graph_module(gm: torch.fx.GraphModule, directory: str | os.PathLike, stem: str = "graph") -> list[str]:
    """Save ``gm`` as ``<directory>/<stem>.json`` and ``<directory>/<stem>.safetensors``.

    Creates ``directory`` if needed and overwrites existing files (each is written to a temporary name and
    renamed). The bytes are deterministic: the same graph gives identical files. Returns the two paths
    written, JSON first. Raises :class:`InputError` for a bad stem or anything :func:`graph_to_dict` refuses.
    """
    if not isinstance(stem, str) or not _STEM.match(stem):
        raise InputError(f"stem {stem!r} is not a plain file name; use letters, digits, '_', '-' or '.'")
    doc, tensors = graph_to_dict(gm)
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    json_path = os.path.join(directory, f"{stem}.json")
    st_path = os.path.join(directory, f"{stem}.safetensors")
    text = _pretty(doc, 0, "module") + "\n"
    tmp = st_path + ".tmp"
    save_file(tensors, tmp, metadata={"format": "pt"})
    os.replace(tmp, st_path)
    tmp = json_path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    os.replace(tmp, json_path)
    return [json_path, st_path]


_CHILD_MODES = {"graph": "module", "submodules": "modules", "attributes": "map", "tensors": "map",
                "nodes": "list"}


def _pretty(v: Any, level: int, mode: str) -> str:
    """Deterministic JSON text: sorted keys, one node / attribute / tensor entry per line."""
    if mode == "compact" or not v:
        return json.dumps(v, sort_keys=True, allow_nan=False, ensure_ascii=True, separators=(", ", ": "))
    pad, inner = " " * level, " " * (level + 1)
    if isinstance(v, list):
        items = [inner + _pretty(x, level + 1, "compact") for x in v]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    items = []
    for key in sorted(v):
        child = {"module": _CHILD_MODES.get(key, "compact"), "modules": "module"}.get(mode, "compact")
        items.append(f"{inner}{json.dumps(key, ensure_ascii=True)}: {_pretty(v[key], level + 1, child)}")
    return "{\n" + ",\n".join(items) + "\n" + pad + "}"


# ============================================================================================== loading
def dict_to_graph(d: dict, tensors: dict[str, torch.Tensor]) -> torch.fx.GraphModule:
    """Rebuild the GraphModule that :func:`graph_to_dict` encoded.

    Takes the JSON document and the tensors loaded from the safetensors file. Returns a new GraphModule
    (plain CodeGen) whose outputs match the original bitwise; attribute names that shared a tensor share one
    tensor object again; parameters come back as ``nn.Parameter`` with ``requires_grad=False``. Node
    ``meta["val_repr"]`` and the :data:`KEPT_META` keys (provenance, placement, ...) are restored; ``meta["val"]`` is
    not. Call targets are resolved only through fxopt's builtin allowlist, the allowlisted higher-order ops
    and operators already registered in this process — nothing is imported or evaluated. Raises
    :class:`InputError` (one line, naming the node) for an unknown format or version, an unregistered or
    disallowed target, a malformed document, or tensors that do not match the document.
    """
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise InputError(f"not an fxopt graph document (expected \"format\": \"{FORMAT}\"); load a file written "
                         f"by fxopt.ir.serialize.save_graph_module")
    if d.get("version") != VERSION:
        raise InputError(f"fxopt graph format version {d.get('version')!r} is not supported by this fxopt "
                         f"(it reads version {VERSION}); re-save the graph with a matching fxopt")
    if not isinstance(tensors, dict):
        raise InputError("tensors must be a dict of name -> tensor (from safetensors.torch.load_file)")
    try:
        loader = _Loader(tensors, d.get("tensors"))
        return loader.module(_need(d, "graph", dict, "the document"), "")
    except InputError:
        raise
    except RecursionError:
        raise InputError("the graph document is nested too deeply; the file is corrupt") from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise InputError(f"the graph document is malformed ({type(exc).__name__}: {exc}); the file is corrupt or "
                         f"was not written by fxopt") from exc


def _need(obj: Any, key: str, typ: type, where: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise InputError(f"{where} lacks the field '{key}'; the file is corrupt or was not written by fxopt")
    value = obj[key]
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise InputError(f"{where}: field '{key}' should be a {typ.__name__}, not {type(value).__name__}; "
                         f"the file is corrupt")
    return value


class _Loader:
    def __init__(self, tensors: dict[str, torch.Tensor], index: Any) -> None:
        if not isinstance(index, dict):
            raise InputError("the document lacks its 'tensors' index; the file is corrupt")
        for key, spec in index.items():
            if key not in tensors:
                raise InputError(f"tensor '{key}' is missing from the safetensors file; the two files do not "
                                 f"belong together — save the graph again")
            t = tensors[key]
            if not isinstance(t, torch.Tensor):
                raise InputError(f"tensor '{key}' is a {type(t).__name__}, not a tensor")
            dtype = _DTYPES.get(_need(spec, "dtype", str, f"tensor '{key}'"))
            shape = _need(spec, "shape", list, f"tensor '{key}'")
            if dtype != t.dtype or list(t.shape) != shape:
                raise InputError(f"tensor '{key}' is {t.dtype}{list(t.shape)} in the safetensors file but "
                                 f"{spec.get('dtype')}{shape} in the graph; the files do not belong together")
        self.tensors = tensors
        self.index = index
        self._cache: dict[tuple, torch.Tensor] = {}

    # -- modules
    def module(self, md: dict, prefix: str) -> torch.fx.GraphModule:
        where = f" in submodule '{prefix[:-1]}'" if prefix else ""
        label = f"submodule '{prefix[:-1]}'" if prefix else "the graph"
        nodes = _need(md, "nodes", list, label)
        attributes = _need(md, "attributes", dict, label)
        submodules = _need(md, "submodules", dict, label)

        root = torch.nn.Module()
        for target in sorted(submodules, key=lambda t: (t.count("."), t)):
            _check_dotted(target, f"submodule '{target}'{where}")
            sub = self.module(_need(submodules, target, dict, label), f"{prefix}{target}.")
            _set_path(root, target, sub, f"submodule '{target}'{where}")
        for target, spec in attributes.items():
            ctx = f"attribute '{target}'{where}"
            _check_dotted(target, ctx)
            _set_path(root, target, self.tensor(spec, ctx), ctx)

        graph = torch.fx.Graph()
        env: dict[str, torch.fx.Node] = {}
        outputs = 0
        for entry in nodes:
            name = _need(entry, "name", str, f"a node{where}")
            ctx = f"node '{name}'{where}"
            if not _IDENT.match(name) or keyword.iskeyword(name):
                raise InputError(f"{ctx}: the name is not a Python identifier; the file is corrupt")
            if name in env:
                raise InputError(f"{ctx} is defined twice; the file is corrupt")
            op = _need(entry, "op", str, ctx)
            if op not in _OPS:
                raise InputError(f"{ctx} has unknown op '{op}'; the file is corrupt or from a newer fxopt")
            target = self.target(entry, op, ctx, attributes, submodules)
            args = tuple(self.value(a, env, ctx) for a in _need(entry, "args", list, ctx))
            kwargs = {}
            for key, val in _need(entry, "kwargs", dict, ctx).items():
                if not _IDENT.match(key):
                    raise InputError(f"{ctx} has keyword argument {key!r}, which is not an identifier")
                kwargs[key] = self.value(val, env, ctx)
            if op == "output":
                outputs += 1
            node = graph.create_node(op, target, args, kwargs, name=name)
            meta = entry.get("meta") or {}
            if not isinstance(meta, dict):
                raise InputError(f"{ctx}: 'meta' should be an object; the file is corrupt")
            if isinstance(meta.get("val"), str):
                node.meta["val_repr"] = meta["val"]
            for key in KEPT_META:
                if key in meta:
                    node.meta[key] = meta[key]
            env[name] = node
        if outputs != 1:
            raise InputError(f"{label} has {outputs} output nodes (needs exactly one); the file is corrupt")
        try:
            gm = torch.fx.GraphModule(root, graph)
            gm.graph.lint()
        except InputError:
            raise
        except Exception as exc:  # anything FX rejects means the document was not a valid graph
            raise InputError(f"{label} could not be rebuilt ({type(exc).__name__}: {exc}); the file is "
                             f"corrupt") from exc
        return gm

    def tensor(self, spec: Any, ctx: str) -> torch.Tensor:
        key = _need(spec, "tensor", str, ctx)
        kind = _need(spec, "kind", str, ctx)
        device = spec.get("device", "cpu")
        if key not in self.index:
            raise InputError(f"{ctx} uses tensor '{key}', which the document's tensor index lacks; the file is "
                             f"corrupt")
        if kind not in ("parameter", "buffer"):
            raise InputError(f"{ctx} has unknown kind '{kind}'; the file is corrupt")
        cache_key = (key, kind, device)
        if cache_key not in self._cache:
            t = self.tensors[key]
            if device != "cpu":
                t = t.to(_decode_device(device, ctx))
            t = t.detach().requires_grad_(False)
            self._cache[cache_key] = torch.nn.Parameter(t, requires_grad=False) if kind == "parameter" else t
        return self._cache[cache_key]

    # -- targets
    def target(self, entry: dict, op: str, ctx: str, attributes: dict, submodules: dict) -> Any:
        target = _need(entry, "target", str, ctx)
        if op == "call_function":
            kind = _need(entry, "target_kind", str, ctx)
            return _decode_callable(kind, target, ctx)
        if op == "placeholder":
            if not _PLACEHOLDER.match(target) or keyword.iskeyword(target.lstrip("*")):
                raise InputError(f"{ctx}: placeholder target {target!r} is not an identifier; the file is corrupt")
        elif op == "get_attr":
            _check_dotted(target, ctx)
            if target not in attributes and target not in submodules:
                raise InputError(f"{ctx} reads '{target}', which the document does not define; the file is corrupt")
        elif op == "call_module":
            _check_dotted(target, ctx)
            if target not in submodules:
                raise InputError(f"{ctx} calls submodule '{target}', which the document does not define; the file "
                                 f"is corrupt")
        elif op == "call_method":
            raise InputError(f"{ctx} calls the Tensor method {target[:60]!r}; fxopt graphs call operators only "
                             f"(a method such as copy_ or add_ writes its tensor), refusing to load it")
        elif op == "output" and target != "output":
            raise InputError(f"{ctx}: output node target must be 'output'; the file is corrupt")
        return target

    # -- values
    def value(self, v: Any, env: dict, ctx: str) -> Any:
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, list):
            return [self.value(x, env, ctx) for x in v]
        if not isinstance(v, dict) or len(v) != 1:
            raise InputError(f"{ctx} has an argument that is not a valid encoded value; the file is corrupt")
        (tag, body), = v.items()
        if tag not in _TAGS:
            raise InputError(f"{ctx} has an argument tagged '{tag}', which this fxopt does not know; the file is "
                             f"corrupt or from a newer fxopt")
        if tag == "node":
            if not isinstance(body, str) or body not in env:
                raise InputError(f"{ctx} uses node {body!r}, which is not defined before it; the file is corrupt")
            return env[body]
        if tag == "tuple":
            return tuple(self.value(x, env, ctx) for x in _as_list(body, tag, ctx))
        if tag == "dict":
            out = {}
            for pair in _as_list(body, tag, ctx):
                if not isinstance(pair, list) or len(pair) != 2:
                    raise InputError(f"{ctx} has a malformed dict argument; the file is corrupt")
                key = self.value(pair[0], env, ctx)
                try:
                    out[key] = self.value(pair[1], env, ctx)
                except TypeError:
                    raise InputError(f"{ctx} has a dict argument with an unhashable key; the file is corrupt")
            return out
        if tag == "float":
            if body not in _NONFINITE:
                raise InputError(f"{ctx} has float {body!r}; only 'inf', '-inf' and 'nan' are encoded that way")
            return _NONFINITE[body]
        if tag == "complex":
            parts = _as_list(body, tag, ctx)
            if len(parts) != 2:
                raise InputError(f"{ctx} has a malformed complex argument; the file is corrupt")
            re_, im = (self.value(p, env, ctx) for p in parts)
            if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (re_, im)):
                raise InputError(f"{ctx} has a malformed complex argument; the file is corrupt")
            return complex(re_, im)
        if tag == "slice":
            parts = _as_list(body, tag, ctx)
            if len(parts) != 3:
                raise InputError(f"{ctx} has a malformed slice argument; the file is corrupt")
            return slice(*(self.value(p, env, ctx) for p in parts))
        if tag == "ellipsis":
            return Ellipsis
        if tag == "dtype":
            return _lookup(_DTYPES, body, "dtype", ctx)
        if tag == "layout":
            return _lookup(_LAYOUTS, body, "layout", ctx)
        if tag == "memory_format":
            return _lookup(_MEMORY_FORMATS, body, "memory format", ctx)
        if tag == "device":
            return _decode_device(body, ctx)
        if not isinstance(body, str):
            raise InputError(f"{ctx} has a malformed '{tag}' argument; the file is corrupt")
        return _decode_callable(tag, body, ctx)


def _as_list(body: Any, tag: str, ctx: str) -> list:
    if not isinstance(body, list):
        raise InputError(f"{ctx} has a malformed '{tag}' argument; the file is corrupt")
    return body


def _lookup(table: dict, name: Any, what: str, ctx: str) -> Any:
    if not isinstance(name, str) or name not in table:
        raise InputError(f"{ctx} uses unknown {what} {name!r}; the file is corrupt or needs a newer torch")
    return table[name]


def _decode_device(name: Any, ctx: str) -> torch.device:
    if not isinstance(name, str) or not _DEVICE.match(name):
        raise InputError(f"{ctx} uses device {name!r}, which is not a device name; the file is corrupt")
    try:
        return torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise InputError(f"{ctx} uses device '{name}', which this torch does not know ({exc})") from exc


def _check_dotted(target: str, ctx: str) -> None:
    if not isinstance(target, str) or not _DOTTED.match(target) or any(
            p.startswith("__") for p in target.split(".")):
        raise InputError(f"{ctx}: {target!r} is not a dotted attribute path; the file is corrupt")


def _set_path(root: torch.nn.Module, target: str, obj: Any, ctx: str) -> None:
    *parents, field = target.split(".")
    module = root
    for part in parents:
        child = module._modules.get(part)
        if child is None:
            if hasattr(module, part):
                raise InputError(f"{ctx}: '{part}' in '{target}' clashes with a built-in attribute; the file is "
                                 f"corrupt")
            child = torch.nn.Module()
            module.add_module(part, child)
        module = child
    if hasattr(module, field):
        if getattr(module, field) is obj:
            return
        raise InputError(f"{ctx}: '{target}' is defined twice or clashes with a built-in attribute; the file is "
                         f"corrupt")
    if isinstance(obj, torch.nn.Parameter):
        module.register_parameter(field, obj)
    elif isinstance(obj, torch.Tensor):
        module.register_buffer(field, obj)
    else:
        module.add_module(field, obj)


def _decode_callable(kind: str, name: str, ctx: str) -> Any:
    if kind == "builtin":
        fn = _BUILTINS.get(name)
        if fn is None:
            raise InputError(f"{ctx} calls '{name}', which is not on fxopt's allowlist of Python functions "
                             f"(operator.*, math.*, torch.sym_*); the file is corrupt or was not written by fxopt")
        return fn
    if kind == "hop":
        if name not in _HOPS:
            raise InputError(f"{ctx} calls the higher-order op '{name}', which fxopt does not load; the file is "
                             f"corrupt or was not written by fxopt")
        hop = getattr(torch.ops.higher_order, name, None)
        if not isinstance(hop, torch._ops.HigherOrderOperator):
            raise InputError(f"{ctx} calls the higher-order op '{name}', which this torch does not have; load it "
                             f"with the torch version that saved it")
        return hop
    if kind in ("op", "op_packet"):
        return _decode_operator(kind == "op_packet", name, ctx)
    raise InputError(f"{ctx} has target kind {kind!r}; expected op, op_packet, hop or builtin — the file is corrupt "
                     f"or from a newer fxopt")


def _decode_operator(packet: bool, name: str, ctx: str) -> Any:
    """The operator overload (``"ns::op.overload"``) or, with ``packet``, the packet (``"ns::op"``) named
    ``name``: registered in this process and allowed by :mod:`fxopt.ir.loadable`; else InputError."""
    m = (_PACKET_NAME if packet else _OP_NAME).match(name)
    if m is None:
        form = "'namespace::op'" if packet else "'namespace::op.overload'"
        raise InputError(f"{ctx} calls {name!r}, which is not an operator name of the form {form}; the file is "
                         "corrupt or was not written by fxopt")
    ns, opname, *overload = m.groups()
    schemas = _schemas(f"{ns}::{opname}")
    wanted = None if packet else ("" if overload[0] == "default" else overload[0])
    if not schemas or (wanted is not None and not any(s.overload_name == wanted for s in schemas)):
        raise InputError(f"{ctx} calls '{name}' which is not registered in this process; import the library "
                         f"that defines it before loading")
    op = _ops_attr(ns, opname, *overload)
    kind = torch._ops.OpOverloadPacket if packet else torch._ops.OpOverload
    if not isinstance(op, kind) or (not packet and op._schema.name != f"{ns}::{opname}"):
        raise InputError(f"{ctx} calls '{name}', which does not resolve to an operator in this process")
    why = loadable.packet_refusal(op) if packet else loadable.refusal(op)
    if why:
        raise InputError(f"{ctx} calls {'the operator packet ' if packet else ''}'{name}', which {why}; "
                         "refusing to load it (docs/reliability.md, threat model)")
    return op


def _schemas(qualified: str) -> list:
    try:
        return list(torch._C._jit_get_schemas_for_operator(qualified))
    except RuntimeError:
        return []


def _ops_attr(*path: str) -> Any:
    # Only reached for names the dispatcher already knows (checked above), so this is a registry lookup.
    obj: Any = torch.ops
    try:
        for part in path:
            obj = getattr(obj, part)
    except (AttributeError, RuntimeError):
        return None
    return obj


def _reject_constant(token: str) -> Any:
    raise ValueError(f"non-standard JSON constant {token}")


def _depth(value: Any) -> int:
    """How deeply arrays and objects nest in a parsed JSON value (0 for a scalar), without recursing."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            children = v.values()
        elif isinstance(v, list):
            children = v
        else:
            continue
        deepest = max(deepest, d)
        if deepest > MAX_JSON_DEPTH:
            return deepest
        stack.extend((c, d + 1) for c in children if isinstance(c, (dict, list)))
    return deepest


def parse_json(text: str, where: str) -> Any:
    """Parse ``text`` (the contents of file ``where``) as strict JSON (no NaN/Infinity constants) nesting at
    most :data:`MAX_JSON_DEPTH` levels; returns the value. ValueError (naming ``where``) when it is not."""
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError(f"{where} nests deeper than {MAX_JSON_DEPTH} levels") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise ValueError(f"{where} nests deeper than {MAX_JSON_DEPTH} levels")
    return value


def plain_file(directory: str, name: str, what: str = "artifact file") -> str:
    """The path of ``name`` (relative, forward slashes) inside ``directory``; InputError (one line) unless it
    is a plain file there: no absolute path or ``..``, no symbolic link on the way, nothing whose real path
    leaves the directory. Reads nothing."""
    directory = os.fspath(directory)
    if not isinstance(name, str) or not name or "\0" in name:
        raise InputError(f"{directory}: {what} {name!r} is not a file name; the artifact is corrupt or hostile")
    parts = name.split("/")
    if os.path.isabs(name) or any(p in ("", ".", "..") for p in parts) or "\\" in name or ":" in name:
        raise InputError(f"{directory}: {what} {name!r} is not a plain path inside the artifact directory; "
                         "refusing to load a corrupt or hostile artifact")
    path = directory
    for part in parts:
        path = os.path.join(path, part)
        if os.path.islink(path):
            raise InputError(f"{path}: is a symbolic link; artifact files must be plain files inside the "
                             "artifact directory, refusing to follow it")
    root = os.path.realpath(directory)
    if os.path.commonpath([os.path.realpath(path), root]) != root:
        raise InputError(f"{path}: leaves the artifact directory; refusing to load a corrupt or hostile artifact")
    if not os.path.isfile(path):
        raise InputError(f"{directory}: {what} '{name}' is missing or not a file; re-create the artifact")
    return path


def load_graph_module(directory: str | os.PathLike, stem: str = "graph") -> torch.fx.GraphModule:
    """Load the GraphModule saved by :func:`save_graph_module` from ``<directory>/<stem>.json`` and
    ``<directory>/<stem>.safetensors``.

    Returns the rebuilt GraphModule (see :func:`dict_to_graph`). Never unpickles or evaluates anything from
    the files. Raises :class:`InputError` naming the file when either is missing, unreadable or corrupt, or
    when the graph cannot be rebuilt safely.
    """
    if not isinstance(stem, str) or not _STEM.match(stem):
        raise InputError(f"stem {stem!r} is not a plain file name; use letters, digits, '_', '-' or '.'")
    directory = os.fspath(directory)
    json_path = os.path.join(directory, f"{stem}.json")
    st_path = os.path.join(directory, f"{stem}.safetensors")
    if not os.path.lexists(json_path):
        raise InputError(f"{json_path} does not exist; save the graph with save_graph_module first")
    plain_file(directory, f"{stem}.json", "graph file")
    try:
        with open(json_path, encoding="utf-8") as f:
            doc = parse_json(f.read(), os.path.basename(json_path))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{json_path} is not a readable fxopt graph ({reason}); the file is corrupt — save the "
                         f"graph again") from None
    if not os.path.lexists(st_path):
        raise InputError(f"{st_path} does not exist; it is saved next to {os.path.basename(json_path)} — copy "
                         f"both files")
    plain_file(directory, f"{stem}.safetensors", "weights file")
    try:
        tensors = load_file(st_path)
    except Exception as exc:  # safetensors raises its own SafetensorError for bad headers/truncation
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{st_path} could not be read ({reason}); the file is corrupt — save the graph "
                         f"again") from None
    try:
        return dict_to_graph(doc, tensors)
    except InputError as exc:
        raise InputError(f"{json_path}: {exc}") from exc
