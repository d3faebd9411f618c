"""Which core-ATen ops each accelerator target can run: op-support tables as data.

Each target's table is the data its backend owns, kept here, below both ``passes`` (``split`` plans with
it) and ``backends`` (they check partitions against it), so neither imports the other
(docs/architecture.md, "Layers"); a backend hands out its own table as ``Backend.support()``.

Our graphs are core ATen (``aten.addmm.default``, ``aten.convolution.default``,
``aten._native_batch_norm_legit_no_training.default``...). Each target documents its support at another level,
so each has an explicit mapping from a core-ATen *op packet* (the op name without overload: ``addmm``,
``convolution``) to the names its toolchain lists:

- ``neuron``: one table per Neuron generation (:data:`NEURON_DEVICES`; ``support_table("neuron",
  device="inf2")``; the default device is ``inf1``):

  - ``inf1`` (torch-neuron, NeuronCore-v1): the documented TorchScript operator list (``ir/targets/data/
    neuron_inf1_ops.json``, 174 names such as ``aten::linear``, ``aten::_convolution``). A core-ATen packet is
    supported when one of the TorchScript names it comes from (:data:`NEURON_FROM_ATEN`; by default
    ``aten::<packet>``) is in that list. ``aten::embedding`` and ``aten::embedding_bag`` are absent, so
    embeddings stay on the CPU.
  - ``inf2``, ``trn1``, ``trn2`` (torch-neuronx, NeuronCore-v2/v3): the documented torch-neuronx list
    (``ir/targets/data/neuron_neuronx_ops.json``: 41 *ATen-level* names, ``aten::_softmax``, ``aten::addmm``,
    ``aten::embedding``...; one page for all three). Being ATen-level, names compare with our packets almost
    directly (:data:`NEURONX_FROM_ATEN`; by default ``aten::<packet>`` or its in-place form ``aten::<packet>_``,
    since functionalization turns the listed ``fill_``/``zero_``/``addcdiv_`` into ``fill``/``zero``/``addcdiv``).
    ``aten::embedding`` is in it, ``aten::embedding_bag`` is not. The page is short and training-oriented
    (backward ops; no convolution, layer norm, cat or gelu) and AWS says neuronx-cc, not a static list,
    decides support (``torch_neuronx.analyze``): the table is what is *documented*, a lower bound.
- ``tensorrt`` (the ONNX route): :data:`ONNX_FROM_ATEN` maps a packet to the ONNX ops ``torch.onnx.export``
  emits for it; every one of them must be marked supported in the onnx-tensorrt matrix
  (``ir/targets/data/tensorrt_onnx_ops.json``), and the node's input dtypes must be in the *first* ONNX op's
  type list (the op that consumes the node's inputs; ``ne`` -> ``Equal`` on the inputs, then ``Not`` on a
  bool). ``_embedding_bag`` exports as Loop + Sequence ops, which TensorRT rejects. float64 is never supported.
- ``xla``: the ops the ATen -> JAX lowering has a rule for (:func:`xla_ops`: ``data/xla_ops.json``, generated
  from the lowering's rule table by ``python -m fxopt.backends.xla.support_table`` and kept equal to it by
  a test; it includes ``_embedding_bag``, lowered to segment sums). Ops with data-dependent output shapes
  (``nonzero``, boolean-mask ``index``), random ops and higher-order ops have no rule and stay on the CPU.
  Being data, the table needs no jax: ``split{target=xla}`` plans anywhere; compiling needs jax.

Bookkeeping nodes are supported everywhere: ``operator.getitem`` (it follows its producer), metadata checks
(``_assert_tensor_metadata``, ``_assert_scalar``...), ``sym_size`` and Python arithmetic on SymInts (host-side
shape arithmetic; no tensor moves).
"""
from __future__ import annotations

import functools
import json
import operator
from dataclasses import dataclass
from importlib import resources
from typing import Any, Callable

import torch
import torch.fx
from torch.fx.experimental.symbolic_shapes import free_unbacked_symbols

from fxopt.errors import InputError
from fxopt.ir.nodes import packet_name

__all__ = [
    "TARGETS", "DEFAULT_PROFILES", "NEURON_FROM_ATEN", "ONNX_FROM_ATEN", "xla_ops",
    "BOOKKEEPING_OPS",
    "SupportTable", "support_table", "packet_name", "is_bookkeeping", "neuron_operators", "tensorrt_operators",
    "data_source", "NEURON_DEVICES", "DEFAULT_NEURON_DEVICE", "NEURONX_FROM_ATEN", "neuron_device",
]

#: The accelerator targets ``split`` knows, and the device profile (``fxopt.ir.devices``) each defaults to.
TARGETS = ("neuron", "tensorrt", "xla")
DEFAULT_PROFILES = {"neuron": "inf1", "tensorrt": "t4", "xla": "h100"}

#: Packets that only check metadata or do host-side shape arithmetic: supported on every target.
BOOKKEEPING_OPS = frozenset({
    "_assert_tensor_metadata", "_assert_scalar", "_assert_async", "sym_size", "sym_stride", "sym_numel",
    "sym_storage_offset", "sym_constrain_range", "sym_constrain_range_for_size", "_functional_assert_async",
})

# --------------------------------------------------------------------------------------------- neuron
#: Core-ATen packet -> the TorchScript-level names (as in the Neuron list) it is produced from. A packet not
#: listed here maps to ``aten::<packet>``. Supported when any of the names is in the Neuron list.
NEURON_FROM_ATEN: dict[str, tuple[str, ...]] = {
    # linear decomposes to permute(weight) + addmm (2-D) or mm/bmm (3-D)
    "addmm": ("aten::addmm", "aten::linear"),
    "mm": ("aten::mm", "aten::matmul", "aten::linear"),
    "bmm": ("aten::bmm", "aten::matmul"),
    "convolution": ("aten::_convolution",),
    "_native_batch_norm_legit_no_training": ("aten::batch_norm",),
    "_native_batch_norm_legit": ("aten::batch_norm",),
    "native_batch_norm": ("aten::batch_norm",),
    "native_layer_norm": ("aten::layer_norm",),
    "native_group_norm": ("aten::group_norm",),
    "_softmax": ("aten::softmax",),
    "_log_softmax": ("aten::log_softmax",),
    "_to_copy": ("aten::to",),
    "_unsafe_view": ("aten::view", "aten::reshape"),
    "alias": ("aten::detach",),
    "lift_fresh_copy": ("aten::clone",),
    "_adaptive_avg_pool2d": ("aten::adaptive_avg_pool2d",),
    "_adaptive_avg_pool1d": ("aten::adaptive_avg_pool1d",),
    "embedding": ("aten::embedding",),            # absent from the list: embeddings run on the CPU
    "_embedding_bag": ("aten::embedding_bag",),   # absent too
    "embedding_dense_backward": (),
    "scalar_tensor": ("prim::NumToTensor",),
    "logical_or": ("aten::logical_or",),
    "bitwise_and": ("aten::__and__",),
    "div": ("aten::div", "aten::true_divide"),
}

#: The Neuron generations with an op-support table (and a device profile of the same name in
#: ``fxopt.ir.devices``): ``inf1`` uses torch-neuron's list; ``inf2``, ``trn1``, ``trn2`` torch-neuronx's.
NEURON_DEVICES = ("inf1", "inf2", "trn1", "trn2")
DEFAULT_NEURON_DEVICE = "inf1"
_NEURON_DATA = {"inf1": "neuron_inf1_ops.json", "inf2": "neuron_neuronx_ops.json",
                "trn1": "neuron_neuronx_ops.json", "trn2": "neuron_neuronx_ops.json"}

#: Core-ATen packet -> the ATen-level names (as in the torch-neuronx list) it stands for, for inf2/trn1/trn2.
#: A packet not listed here maps to ``aten::<packet>`` and its in-place form ``aten::<packet>_`` (the list
#: names ``fill_``, ``zero_``, ``addcdiv_``, ``bernoulli_``; a functionalized graph has ``fill``, ``zero``...).
NEURONX_FROM_ATEN: dict[str, tuple[str, ...]] = {
    # the core-ATen forms of aten::native_batch_norm (eval / train without running stats)
    "_native_batch_norm_legit_no_training": ("aten::native_batch_norm",),
    "_native_batch_norm_legit": ("aten::native_batch_norm",),
    # aten::_s_where: where's internal kernel in older torch releases (the list has it, not aten::where)
    "where": ("aten::where", "aten::_s_where"),
    # core ATen's strided/permuted forms of aten::empty
    "empty_strided": ("aten::empty",),
    "empty_permuted": ("aten::empty",),
    "_embedding_bag": ("aten::embedding_bag", "aten::_embedding_bag"),   # absent: embedding bags stay on the CPU
}

# --------------------------------------------------------------------------------------------- tensorrt
# A value is a tuple of ONNX ops, or {"BOOL": ops, "*": ops} when the export depends on the input dtype.
_ELEMENTWISE_ONNX = {
    "add": "Add", "sub": "Sub", "rsub": "Sub", "mul": "Mul", "div": "Div", "neg": "Neg", "abs": "Abs",
    "exp": "Exp", "log": "Log", "sqrt": "Sqrt", "reciprocal": "Reciprocal", "pow": "Pow", "sin": "Sin",
    "cos": "Cos", "tan": "Tan", "tanh": "Tanh", "sigmoid": "Sigmoid", "erf": "Erf", "floor": "Floor",
    "ceil": "Ceil", "round": "Round", "sign": "Sign", "relu": "Relu", "leaky_relu": "LeakyRelu", "elu": "Elu",
    "hardswish": "HardSwish", "hardsigmoid": "HardSigmoid", "softplus": "Softplus", "clamp": "Clip",
    "hardtanh": "Clip", "clamp_min": "Max", "clamp_max": "Min", "maximum": "Max", "minimum": "Min",
    "eq": "Equal", "lt": "Less", "le": "LessOrEqual", "gt": "Greater", "ge": "GreaterOrEqual",
    "logical_not": "Not", "logical_and": "And", "logical_or": "Or", "logical_xor": "Xor", "where": "Where",
    "isnan": "IsNaN", "isinf": "IsInf", "remainder": "Mod", "fmod": "Mod", "asin": "Asin", "acos": "Acos",
    "atan": "Atan", "sinh": "Sinh", "cosh": "Cosh", "asinh": "Asinh", "acosh": "Acosh", "atanh": "Atanh",
}
#: Core-ATen packet -> the ONNX ops it exports as (torch.onnx, opset 18). See the module docstring for the
#: dtype rule. Packets not listed are unsupported on the TensorRT route.
ONNX_FROM_ATEN: dict[str, Any] = {
    **{k: (v,) for k, v in _ELEMENTWISE_ONNX.items()},
    "rsqrt": ("Sqrt", "Reciprocal"),
    "ne": ("Equal", "Not"),
    "gelu": ("Mul", "Erf", "Add", "Div", "Tanh", "Pow"),
    "silu": ("Sigmoid", "Mul"),
    "mish": ("Mish",),
    "floor_divide": ("Div", "Floor"),
    "bitwise_and": {"BOOL": ("And",), "*": ("BitwiseAnd",)},
    "bitwise_or": {"BOOL": ("Or",), "*": ("BitwiseOr",)},
    "bitwise_not": {"BOOL": ("Not",), "*": ("BitwiseNot",)},
    "bitwise_xor": {"BOOL": ("Xor",), "*": ("BitwiseXor",)},
    "masked_fill": ("Where",),
    # matmuls, convolutions, normalisation
    "mm": ("MatMul",), "bmm": ("MatMul",), "addmm": ("Gemm",), "baddbmm": ("MatMul", "Mul", "Add"),
    "convolution": ("Conv", "ConvTranspose"),
    "_native_batch_norm_legit_no_training": ("BatchNormalization",),
    "native_layer_norm": ("LayerNormalization",),
    "native_group_norm": ("GroupNormalization",),
    "_softmax": ("Softmax",), "_log_softmax": ("LogSoftmax",),
    # reductions
    "sum": ("ReduceSum",), "mean": ("ReduceMean",), "amax": ("ReduceMax",), "amin": ("ReduceMin",),
    "prod": ("ReduceProd",), "argmax": ("ArgMax",), "argmin": ("ArgMin",), "max": ("ReduceMax", "ArgMax"),
    "min": ("ReduceMin", "ArgMin"), "var": ("ReduceMean", "Sub", "Mul"), "any": ("Cast", "ReduceMax"),
    "all": ("Cast", "ReduceMin"), "cumsum": ("CumSum",), "topk": ("TopK",), "sort": ("TopK",),
    # layout
    "view": ("Reshape",), "_unsafe_view": ("Reshape",), "reshape": ("Reshape",), "permute": ("Transpose",),
    "t": ("Transpose",), "transpose": ("Transpose",), "expand": ("Expand",), "unsqueeze": ("Unsqueeze",),
    "squeeze": ("Squeeze",), "slice": ("Slice",), "select": ("Gather",), "cat": ("Concat",),
    "stack": ("Unsqueeze", "Concat"), "split": ("Split",), "split_with_sizes": ("Split",),
    "clone": ("Identity",), "alias": ("Identity",), "detach": ("Identity",), "lift_fresh_copy": ("Identity",),
    "_to_copy": ("Cast",), "constant_pad_nd": ("Pad",), "repeat": ("Tile",), "flip": ("Slice",),
    "tril": ("Trilu",), "triu": ("Trilu",),
    # gathers and scatters
    "embedding": ("Gather",), "index_select": ("Gather",), "gather": ("GatherElements",),
    "index": ("GatherND",), "scatter": ("ScatterElements",), "scatter_add": ("ScatterElements",),
    "index_put": ("ScatterND",),
    "_embedding_bag": ("Loop", "SequenceInsert", "ConcatFromSequence"),
    # factories
    "full": ("ConstantOfShape",), "empty_permuted": ("ConstantOfShape",), "full_like": ("Shape", "ConstantOfShape"),
    "zeros_like": ("Shape", "ConstantOfShape"), "ones_like": ("Shape", "ConstantOfShape"),
    "arange": ("Range",), "scalar_tensor": ("Constant",),
    # pooling and resampling
    "max_pool2d_with_indices": ("MaxPool",), "avg_pool2d": ("AveragePool",),
    "_adaptive_avg_pool2d": ("AveragePool", "GlobalAveragePool"),
    "upsample_nearest2d": ("Resize",), "upsample_bilinear2d": ("Resize",),
}

_ONNX_DTYPES = {
    torch.float32: "FP32", torch.float16: "FP16", torch.bfloat16: "BF16", torch.int32: "INT32",
    torch.int64: "INT64", torch.bool: "BOOL", torch.uint8: "UINT8", torch.int8: "INT8",
}

# --------------------------------------------------------------------------------------------- data
@functools.lru_cache(maxsize=None)
def _load(filename: str) -> dict:
    try:
        text = resources.files("fxopt.ir.targets").joinpath("data", filename).read_text(encoding="utf-8")
    except (FileNotFoundError, ModuleNotFoundError) as exc:  # pragma: no cover - broken installation
        raise InputError(f"op-support data file fxopt/ir/targets/data/{filename} is missing; reinstall fxopt") from exc
    return json.loads(text)


def neuron_device(device: str | None = None) -> str:
    """``device`` as one of :data:`NEURON_DEVICES` (lower-cased; None -> :data:`DEFAULT_NEURON_DEVICE`).
    Anything else is a one-line InputError naming the valid devices."""
    if device is None:
        return DEFAULT_NEURON_DEVICE
    key = str(device).strip().lower()
    if key not in NEURON_DEVICES:
        raise InputError(f"unknown neuron device {str(device)[:40]!r}; valid devices: {', '.join(NEURON_DEVICES)}")
    return key


@functools.lru_cache(maxsize=None)
def _neuron_operators(device: str) -> frozenset[str]:
    return frozenset(_load(_NEURON_DATA[device])["operators"])


def neuron_operators(device: str | None = None) -> frozenset[str]:
    """The operator names the Neuron generation ``device`` documents (default ``inf1``): torch-neuron's
    TorchScript-level list for ``inf1``, torch-neuronx's ATen-level list for ``inf2``/``trn1``/``trn2``."""
    return _neuron_operators(neuron_device(device))


def tensorrt_operators() -> dict[str, dict]:
    """``{ONNX op: {"supported": bool, "types": [...]}}`` from the shipped onnx-tensorrt matrix."""
    return dict(_load("tensorrt_onnx_ops.json")["operators"])


def data_source(target: str, device: str | None = None) -> str:
    """Where ``target``'s support data comes from (one line); ``device`` picks the Neuron generation (see
    :func:`support_table`)."""
    if target == "neuron":
        return _load(_NEURON_DATA[neuron_device(device)])["source"]
    if device is not None:
        raise InputError(f"device={device!r} applies to target 'neuron' only, not '{target}'")
    if target == "tensorrt":
        return _load("tensorrt_onnx_ops.json")["source"]
    return _load("xla_ops.json")["source"]


# --------------------------------------------------------------------------------------------- nodes
def _is_tensor(val: Any) -> bool:
    return isinstance(val, torch.Tensor)


def is_bookkeeping(node: torch.fx.Node) -> bool:
    """True for call_function nodes that move no tensor data of their own: ``getitem``, metadata assertions,
    ``sym_size`` and Python arithmetic on SymInts. They are supported on every target."""
    if node.op != "call_function":
        return False
    if node.target is operator.getitem:
        return True
    if isinstance(node.target, torch._ops.OpOverload):
        return node.target._opname in BOOKKEEPING_OPS
    if isinstance(node.target, torch._ops.HigherOrderOperator):
        return False
    val = node.meta.get("val")
    return not _is_tensor(val) and not isinstance(val, (tuple, list))


#: Targets whose compilers take fixed shapes only: a node with a data-dependent (unbacked) size stays on the CPU.
FIXED_SHAPE_TARGETS = frozenset({"tensorrt", "neuron"})


def _unbacked_sizes(node: torch.fx.Node) -> str:
    """The unbacked symbols (sizes known only at run time, as ``nonzero`` makes) in the shapes of ``node``'s
    value and inputs, comma-separated; empty when there are none."""
    found: set = set()
    for n in (node, *node.all_input_nodes):
        val = n.meta.get("val")
        for v in (val if isinstance(val, (tuple, list)) else (val,)):
            if _is_tensor(v):
                found |= free_unbacked_symbols(v.shape)
            elif isinstance(v, torch.SymInt):
                found |= free_unbacked_symbols(v)
    return ", ".join(sorted(str(s) for s in found))


def _input_dtypes(node: torch.fx.Node) -> list:
    dtypes = []
    for inp in node.all_input_nodes:
        val = inp.meta.get("val")
        if _is_tensor(val):
            dtypes.append(val.dtype)
    if not dtypes:
        val = node.meta.get("val")
        vals = val if isinstance(val, (tuple, list)) else (val,)
        dtypes = [v.dtype for v in vals if _is_tensor(v)]
    return dtypes


@dataclass(frozen=True)
class SupportTable:
    """Op support of one target. ``why_not(node)`` returns None when the target can run ``node``, else a short
    reason; ``supports(node)`` is ``why_not(node) is None``."""

    target: str
    check: Callable[[torch.fx.Node, str], str | None]
    dtype_sensitive: bool = False
    device: str | None = None   # the Neuron generation (NEURON_DEVICES) for target "neuron", else None

    def dtype_key(self, node: torch.fx.Node) -> tuple | None:
        """What besides the op decides support: the input dtypes for dtype-sensitive targets, else None, and
        for fixed-shape targets whether a size is data-dependent (callers cache verdicts by
        ``(node.target, dtype_key(node))``)."""
        key = tuple(_input_dtypes(node)) if self.dtype_sensitive else None
        if self.target in FIXED_SHAPE_TARGETS and node.op == "call_function" and _unbacked_sizes(node):
            return ("data-dependent size", key)   # refused whatever the op (see why_not)
        return key

    def why_not(self, node: torch.fx.Node) -> str | None:
        """None if ``node`` (a call_function node) runs on this target, else why not (one short line)."""
        if node.op != "call_function":
            return None
        if self.target in FIXED_SHAPE_TARGETS:   # before bookkeeping: SymInt arithmetic on them counts too
            unbacked = _unbacked_sizes(node)
            if unbacked:
                return (f"a data-dependent size ({unbacked}): {self.target} compiles fixed shapes (and torch.onnx "
                        "cannot export a partition with such sizes)")
        if is_bookkeeping(node):
            return None
        if isinstance(node.target, torch._ops.HigherOrderOperator):
            return f"higher-order op {node.target.name()} is not lowered for {self.target}"
        if not isinstance(node.target, torch._ops.OpOverload):
            return f"{packet_name(node.target)} is not an ATen op"
        if node.target.namespace != "aten":   # e.g. fxopt::grouped_mm: only a table naming it qualified has it
            qualified = f"{node.target.namespace}::{node.target._opname}"
            if self.target == "xla" and qualified in xla_ops():   # the XLA table names them qualified
                return None
            return f"{qualified} is not an ATen op, and {self.target} has no rule for it"
        return self.check(node, node.target._opname)

    def supports(self, node: torch.fx.Node) -> bool:
        """True when the target can run ``node``."""
        return self.why_not(node) is None


def _neuron_check(node: torch.fx.Node, packet: str) -> str | None:
    """inf1: the torch-neuron TorchScript-level list."""
    names = NEURON_FROM_ATEN.get(packet, (f"aten::{packet}",))
    ops = neuron_operators("inf1")
    if any(name in ops for name in names):
        return None
    return f"{'/'.join(names) or packet} is not in the torch-neuron (Inf1) operator list"


def _neuronx_check(device: str) -> Callable[[torch.fx.Node, str], str | None]:
    """inf2/trn1/trn2: the torch-neuronx ATen-level list."""
    def check(node: torch.fx.Node, packet: str) -> str | None:
        names = NEURONX_FROM_ATEN.get(packet, (f"aten::{packet}", f"aten::{packet}_"))
        ops = neuron_operators(device)
        if any(name in ops for name in names):
            return None
        return (f"{'/'.join(names) or packet} is not in the documented torch-neuronx operator list "
                f"({device.capitalize()}; neuronx-cc may compile more: check with torch_neuronx.analyze on an "
                "SDK host)")
    check.__name__ = f"_neuronx_check_{device}"
    return check


def _tensorrt_check(node: torch.fx.Node, packet: str) -> str | None:
    entry = ONNX_FROM_ATEN.get(packet)
    if entry is None:
        return f"no ONNX mapping for aten.{packet}"
    dtypes = _input_dtypes(node)
    if isinstance(node.kwargs.get("dtype"), torch.dtype):   # cumsum(x, dtype=int32) exports as Cast + CumSum(int32)
        dtypes = [*dtypes, node.kwargs["dtype"]]
    names = [_ONNX_DTYPES.get(d, str(d).replace("torch.", "").upper()) for d in dtypes]
    if isinstance(entry, dict):
        entry = entry["BOOL"] if names and all(n == "BOOL" for n in names) else entry["*"]
    matrix = tensorrt_operators()
    for i, onnx_op in enumerate(entry):
        info = matrix.get(onnx_op)
        if info is None or not info.get("supported"):
            return f"aten.{packet} exports as ONNX {onnx_op}, which onnx-tensorrt does not support"
        if i == 0:
            bad = [n for n in names if n not in info.get("types", ())]
            if bad:
                return f"ONNX {onnx_op} in onnx-tensorrt does not take {bad[0]}"
    return None


@functools.lru_cache(maxsize=None)
def xla_ops() -> frozenset[str]:
    """The ATen packets the XLA lowering has a rule for, from ``data/xla_ops.json`` (generated from the rule
    table by ``python -m fxopt.backends.xla.support_table``; a test keeps the two equal)."""
    return frozenset(_load("xla_ops.json")["operators"])


def _xla_check(node: torch.fx.Node, packet: str) -> str | None:
    if packet in xla_ops():
        return None
    return f"aten.{packet} has no rule in the ATen -> JAX lowering"


_CHECKS = {"neuron": _neuron_check, "tensorrt": _tensorrt_check, "xla": _xla_check}


def support_table(target: str, device: str | None = None) -> SupportTable:
    """The :class:`SupportTable` of ``target`` (one of :data:`TARGETS`). For ``neuron``, ``device`` picks the
    generation (:data:`NEURON_DEVICES`, default ``inf1``: torch-neuron's list; ``inf2``/``trn1``/``trn2``:
    torch-neuronx's); other targets take no device. Unknown targets and devices raise InputError. Tables are
    cached per ``(target, device)``."""
    if target not in _CHECKS:
        raise InputError(f"no op-support table for target '{target}' (targets: {', '.join(TARGETS)})")
    if target == "neuron":
        return _support_table(target, neuron_device(device))
    if device is not None:
        raise InputError(f"device={device!r} applies to target 'neuron' only, not '{target}'")
    return _support_table(target, None)


@functools.lru_cache(maxsize=None)
def _support_table(target: str, device: str | None) -> SupportTable:
    check = _CHECKS[target]
    if target == "neuron" and device != "inf1":
        check = _neuronx_check(device)
    return SupportTable(target, check, dtype_sensitive=target == "tensorrt", device=device)
