"""Shapes and dtypes of nodes: reading them, and inferring them for nodes that passes create.

Every node out of capture carries ``node.meta["val"]`` (a FakeTensor, a tuple of them, or a SymInt).
A pass that adds a node calls :func:`infer` to compute its ``"val"`` by running the op on the fake values of
its inputs, in the program's own FakeTensorMode (so symbolic dims stay the same symbols).
"""
from __future__ import annotations

from typing import Any

import sympy
import torch
import torch.fx
import torch.utils._pytree as pytree
from torch._guards import detect_fake_mode
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

from fxopt.ir.program import fetch_attr


def fake_mode_of(gm: torch.fx.GraphModule) -> FakeTensorMode | None:
    """The FakeTensorMode the graph's ``meta["val"]`` tensors belong to (None if the graph has none)."""
    for node in gm.graph.nodes:
        val = node.meta.get("val")
        if isinstance(val, FakeTensor):
            return val.fake_mode
    vals = [n.meta["val"] for n in gm.graph.nodes if isinstance(n.meta.get("val"), torch.Tensor)]
    return detect_fake_mode(vals) if vals else None


def _fake_arg(gm: torch.fx.GraphModule, mode: FakeTensorMode, a: Any) -> Any:
    if isinstance(a, torch.fx.Node):
        if "val" in a.meta:
            return a.meta["val"]
        if a.op == "get_attr":
            value = fetch_attr(gm, a.target)
            if isinstance(value, torch.Tensor):
                val = mode.from_tensor(value, static_shapes=True)
                a.meta["val"] = val
                return val
        raise ValueError(f"node '{a.name}' has no shape information (meta['val']); run infer on it first")
    return a


def infer(gm: torch.fx.GraphModule, node: torch.fx.Node) -> Any:
    """Compute and store ``node.meta["val"]`` from its inputs' fake values; returns the value.

    Works for call_function nodes (ATen ops, operator.getitem) and get_attr nodes of tensors.
    """
    mode = fake_mode_of(gm) or FakeTensorMode(allow_non_fake_inputs=True)
    if node.op == "get_attr":
        value = fetch_attr(gm, node.target)
        node.meta["val"] = mode.from_tensor(value, static_shapes=True) if isinstance(value, torch.Tensor) else value
        return node.meta["val"]
    if node.op != "call_function":
        raise ValueError(f"cannot infer the shape of a {node.op} node ('{node.name}')")
    args, kwargs = pytree.tree_map(lambda a: _fake_arg(gm, mode, a), (node.args, node.kwargs))
    with mode:
        val = node.target(*args, **kwargs)
    node.meta["val"] = val
    return val


def infer_missing(gm: torch.fx.GraphModule) -> int:
    """Infer ``"val"`` for every node that lacks it, in graph order; returns how many were filled."""
    count = 0
    for node in gm.graph.nodes:
        if "val" not in node.meta and node.op in ("call_function", "get_attr"):
            infer(gm, node)
            count += 1
    return count


def dim_expr(d: Any) -> sympy.Expr:
    """A dim as a sympy expression: ints become Integers, SymInts their symbolic expression."""
    if isinstance(d, torch.SymInt):
        return sympy.sympify(d.node.expr)
    return sympy.Integer(int(d))


def describe(val: Any) -> str:
    """A short, stable text form of a meta value: ``f32[s0, 128]``, ``(f32[4], i64[4])``, ``Sym(s0)``."""
    if isinstance(val, torch.Tensor):
        dims = ", ".join(str(d) if type(d) is int else str(dim_expr(d)) for d in val.shape)
        return f"{dtype_abbrev(val.dtype)}[{dims}]"
    if isinstance(val, (tuple, list)):
        return "(" + ", ".join(describe(v) for v in val) + ")"
    if isinstance(val, torch.SymInt):
        return f"Sym({val.node.expr})"
    if val is None:
        return ""
    return type(val).__name__


_ABBREV = {
    torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16", torch.float64: "f64",
    torch.int64: "i64", torch.int32: "i32", torch.int16: "i16", torch.int8: "i8", torch.uint8: "u8",
    torch.bool: "b8", torch.complex64: "c64",
}


def dtype_abbrev(dtype: torch.dtype) -> str:
    """Short dtype names as FX prints them (``f32``, ``i64``, ``b8``...)."""
    return _ABBREV.get(dtype, str(dtype).replace("torch.", ""))
