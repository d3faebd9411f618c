"""One rule for "do these two runs compute the same thing": tolerances scaled to dtype, magnitude and depth.

Two runs of one graph (before and after a pass, PyTorch and XLA, PyTorch and onnxruntime, eager and a
TorchScript trace) agree on integer and bool outputs exactly, and on floating-point outputs up to rounding.
Rounding is not one fixed size: it grows with the values (an error is relative to what is being added up)
and with the number of rounding operations on the way from the inputs to the output, and a different CPU's
vector units (AVX-512 or AVX2 kernels, another summation order) round differently at every one of them. So a
floating-point output ``e`` compared with ``a`` must satisfy, elementwise::

    |a - e| <= K * eps(dtype) * sqrt(depth) * max(1, max|e|)

- ``eps(dtype)``: the machine epsilon (``torch.finfo``): 1.2e-7 for float32, 9.8e-4 for float16.
- ``depth``: the roundings one element of that output goes through on the longest path from any input or
  weight (:func:`output_depths`, summing :func:`roundings` per node): 1 per arithmetic op, the number of
  terms for a reduction (a matmul's inner dimension, a convolution's ``C_in/groups * kernel``, the elements
  a sum, mean, norm or softmax reduces), 0 for views, copies, gathers and other ops that only move values;
  nested graphs count their own depth. Independent roundings add up like a random walk, hence the square
  root; a reduction of n terms rounds n times (the usual error analysis of a dot product), which is why a
  50-layer CNN (convolutions over up to 4,608 terms) gets a wider tolerance than a transformer of the same
  op count (matmuls over 32-128 terms).
- ``max(1, max|e|)``: the output's magnitude, never below 1, because an output near zero is usually the
  difference of intermediates of ordinary size (a logit of 0.01 from activations of size 1 carries the
  rounding of size-1 numbers).
- float16 and bfloat16 are computed in float32 op by op and rounded once per op's result (PyTorch's CPU
  kernels and XLA both do), so for them the depth counts rounding ops only (``Depth.ops``) and the factor is
  :data:`K_HALF` = 2: two runtimes differ there by an ulp or two, and K = 16 over a deep graph would accept
  almost any output.
- ``K`` (:data:`K`) is fitted on measured cross-runtime errors (``python -m benchmarks.numerics_margin``,
  docs/testing.md "Numerics"): with PyTorch and XLA on AVX-512 or limited to AVX2, no correct lowering of
  the zoo or of Hugging Face BERT/Llama/ViT used more than 0.28 of its tolerance, while lowering rules that
  are wrong by an approximation (tanh GELU for erf GELU), by one epsilon (batch or layer norm's) or by an
  off-by-one (a mean over n + 1) exceed it 1.15-3,000 times.

NaN must meet NaN and infinities must match exactly; dtype and shape must not change at all.
"""
from __future__ import annotations

import math
import operator
from typing import Any, Iterable, Sequence

import torch
import torch.fx

from fxopt.ir.nodes import example_numel, example_size, val

# The safety factor of the rule above (see the module docstring and docs/testing.md for how it was fitted).
K = 16.0
# float16 and bfloat16: every op is computed in float32 and its result rounded once to the half type (PyTorch's
# CPU kernels and XLA both do), so a half-precision depth counts ops, not a reduction's terms, and two
# runtimes differ by an ulp or two (an AttentionBlock, XLA against PyTorch: 1 ulp, 0.086 of
# eps * sqrt(ops) * max(1, |max|)); K = 16 there would tolerate almost any output of a deep graph.
K_HALF = 2.0
HALF_DTYPES = frozenset({torch.float16, torch.bfloat16})


def eps(dtype: torch.dtype) -> float:
    """Machine epsilon of floating dtype ``dtype`` (of its real part for complex dtypes)."""
    if dtype.is_complex:
        dtype = torch.float64 if dtype == torch.complex128 else torch.float32
    return float(torch.finfo(dtype).eps)


def tolerance(dtype: torch.dtype, magnitude: float, depth: int = 1) -> float:
    """The largest elementwise absolute difference allowed for an output of floating ``dtype`` whose largest
    finite absolute value is ``magnitude``, computed through ``depth`` roundings (a :class:`Depth`, or an
    int that then counts both terms and ops). float16 and bfloat16 use ``depth.ops`` and :data:`K_HALF`."""
    if dtype in HALF_DTYPES:
        return K_HALF * eps(dtype) * math.sqrt(max(_ops_of(depth), 1)) * max(1.0, float(magnitude))
    return K * eps(dtype) * math.sqrt(max(int(depth), 1)) * max(1.0, float(magnitude))


# Ops whose every output element is a dot product over the inner dimension of their matrix operand, and that
# operand's position among the args.
_MATMUL_LHS = {"mm": 0, "bmm": 0, "matmul": 0, "mv": 0, "dot": 0, "linear": 0, "addmm": 1, "baddbmm": 1,
               "addbmm": 1, "addmv": 1, "_grouped_mm": 0, "grouped_mm": 0}
_CONVOLUTIONS = {"convolution", "_convolution", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
                 "conv_transpose2d", "conv_transpose3d", "_convolution_mode", "mkldnn_convolution"}
# Ops that keep their input's shape but reduce along ``dim`` (softmax, scans) or the trailing / grouped dims
# (the norms) for every element.
_ALONG_DIM = {"_softmax", "_log_softmax", "softmax", "log_softmax", "cumsum", "cumprod", "logcumsumexp",
              "_safe_softmax"}
# Ops that only move, select or re-index values (no arithmetic), although their schema returns a new tensor.
_EXACT = {"clone", "contiguous", "_unsafe_view", "lift_fresh", "lift_fresh_copy", "alias", "detach", "copy",
          "index_select", "gather", "embedding", "index", "_unsafe_index", "cat", "stack", "constant_pad_nd",
          "flip", "roll", "repeat", "select_scatter", "slice_scatter", "permute_copy", "expand_copy", "view_copy",
          "as_strided_copy", "masked_fill", "where", "scatter", "index_put", "_unsafe_index_put", "index_copy",
          "index_fill", "relu", "neg", "abs", "amax", "amin", "max", "min", "maximum", "minimum", "clamp",
          "clamp_min", "clamp_max", "hardtanh", "topk", "sort", "argmax", "argmin", "full", "zeros", "ones",
          "empty", "empty_strided", "new_empty_strided", "scalar_tensor", "arange", "eq", "ne", "lt", "le",
          "gt", "ge", "logical_and", "logical_or", "logical_not", "bitwise_and", "bitwise_or", "bitwise_not",
          "isnan", "isinf", "isfinite", "sign", "floor", "ceil", "trunc", "max_pool2d", "max_pool1d",
          "max_pool3d", "max_pool2d_with_indices", "max_pool3d_with_indices", "upsample_nearest2d",
          "upsample_nearest1d", "upsample_nearest3d", "nonzero", "searchsorted", "sym_size", "sym_numel",
          "sym_stride", "sym_storage_offset"}


def _numel(v: Any) -> int | None:
    """The element count of tensor ``v`` at the example sizes, or None (not a tensor, or a size unknown)."""
    return example_numel(v.shape) if isinstance(v, torch.Tensor) else None


def _size(v: Any, dim: int) -> int:
    """Size of ``v``'s dim ``dim`` at the example size; 1 when unknown."""
    try:
        return max(example_size(v.shape[dim]) or 1, 1)
    except (AttributeError, IndexError, TypeError):
        return 1


def roundings(node: torch.fx.Node) -> int:
    """How many floating-point roundings one output element of call_function ``node`` goes through: 0 for ops
    that only move or select values (views, copies, gathers, max), the number of terms summed for reductions
    (a matmul's inner dimension, a convolution's ``C_in/groups * kernel``, the reduced elements of a sum, mean,
    norm or softmax), 1 for other arithmetic. Read from the shapes torch.export recorded (``meta["val"]``);
    an op whose shapes are unknown counts 1."""
    target = node.target
    if target is operator.getitem:
        return 0
    if not isinstance(target, torch._ops.OpOverload):
        return 1
    name = target._opname
    if name in _EXACT or any(r.alias_info is not None for r in target._schema.returns):
        return 0
    if name == "_to_copy":
        return 1 if _changes_dtype(node) else 0
    args = node.args
    if name in _MATMUL_LHS:
        lhs = val(args[_MATMUL_LHS[name]]) if len(args) > _MATMUL_LHS[name] else None
        return _size(lhs, -1) + (1 if name.startswith("add") else 0) if isinstance(lhs, torch.Tensor) else 1
    if name in _CONVOLUTIONS:
        w = val(args[1]) if len(args) > 1 else None
        n = _numel(w)
        return max(n // _size(w, 0), 1) if n else 1
    if name in _ALONG_DIM:
        dim = args[1] if len(args) > 1 and isinstance(args[1], int) else node.kwargs.get("dim", -1)
        return _size(val(args[0]), dim if isinstance(dim, int) else -1)
    if "scaled_dot_product" in name and len(args) > 1:   # q @ k^T over head dims, then @ v over keys
        return _size(val(args[0]), -1) + _size(val(args[1]), -2)
    if name in ("embedding_bag", "_embedding_bag", "_embedding_bag_forward_only") and len(args) > 2:
        bags = _numel(val(args[2])) or 1     # one sum per bag (offsets), over its share of the indices
        return max((_numel(val(args[1])) or 1) // bags, 1)
    if name == "native_layer_norm" and len(args) > 1:
        n = 1
        for s in args[1]:
            n *= int(s) if isinstance(s, int) else 1
        return 2 * n
    out = val(node)
    out = out[0] if isinstance(out, (tuple, list)) and out else out
    biggest = max((_numel(val(a)) or 0 for a in node.all_input_nodes), default=0)
    produced = _numel(out)
    if produced and biggest > produced:   # a reduction (sum, mean, var, pooling, norms, embedding_bag)
        return 2 * (biggest // produced) if name.startswith(("var", "std", "native_group_norm")) \
            else biggest // produced
    if name == "native_group_norm" and len(args) > 7:
        groups = args[7] if isinstance(args[7], int) else 1
        x = val(args[0])
        n = _numel(x)
        return 2 * max(n // max(_size(x, 0) * groups, 1), 1) if n else 1
    return 1


def _changes_dtype(node: torch.fx.Node) -> bool:
    """True when a ``_to_copy`` node casts (rounds) rather than only copying or moving."""
    dtype = node.kwargs.get("dtype")
    src = val(node.args[0]) if node.args else None
    if dtype is None:
        return False
    return not isinstance(src, torch.Tensor) or dtype != src.dtype


class Depth(int):
    """A rounding depth: the int is the roundings of one output element counting a reduction's terms (what
    float32 and float64 computations round), ``ops`` the rounding ops alone (what float16 and bfloat16 round:
    PyTorch's kernels and XLA compute those in float32 and round each op's result once)."""

    ops: int

    def __new__(cls, terms: int, ops: int | None = None) -> "Depth":
        obj = super().__new__(cls, terms)
        obj.ops = int(terms if ops is None else ops)
        return obj

    def __repr__(self) -> str:
        return f"Depth({int(self)}, ops={self.ops})"


def _max_depth(depths) -> Depth:
    depths = list(depths)
    return Depth(max((int(d) for d in depths), default=0), max((_ops_of(d) for d in depths), default=0))


def deeper(a: Any, b: Any) -> Depth:
    """The :class:`Depth` that is the larger of ``a`` and ``b`` in both counts (for comparing two graphs of
    one computation, e.g. before and after a pass that unrolls a loop)."""
    return _max_depth([a, b])


def _ops_of(depth: Any) -> int:
    return int(getattr(depth, "ops", depth))


def _module_depth(gm: Any) -> Depth:
    """The largest output depth of graph module ``gm`` (0 for anything that is not one)."""
    if not isinstance(gm, torch.fx.GraphModule):
        return Depth(0)
    return _max_depth(output_depths(gm))


def _subgraph_depth(node: torch.fx.Node, owner: torch.fx.GraphModule) -> Depth:
    """Depth a call_module node or a higher-order op (scan, while_loop, cond, map) adds: its deepest body."""
    if node.op == "call_module":
        return _module_depth(owner.get_submodule(str(node.target)))
    depths = []
    for a in (*node.args, *node.kwargs.values()):
        if isinstance(a, torch.fx.Node) and a.op == "get_attr":
            try:
                depths.append(_module_depth(owner.get_submodule(str(a.target))))
            except AttributeError:
                continue
    return _max_depth(depths)


def output_depths(gm: torch.fx.GraphModule) -> list[Depth]:
    """Per flat output of ``gm``'s graph (in the order of the output node's flattened args), its
    :class:`Depth`: the roundings on the longest path from any placeholder or weight to it, counting a
    reduction's terms (the int), and the rounding ops on the longest path (``.ops``)."""
    terms: dict[torch.fx.Node, int] = {}   # two plain dicts: this runs after every verified pass
    ops: dict[torch.fx.Node, int] = {}
    outputs: list[Depth] = []
    for node in gm.graph.nodes:
        inputs = node.all_input_nodes
        t = max((terms[i] for i in inputs), default=0)
        o = max((ops[i] for i in inputs), default=0)
        if node.op == "output":
            flat = torch.utils._pytree.tree_leaves(node.args)
            outputs = [Depth(terms[a], ops[a]) if isinstance(a, torch.fx.Node) else Depth(0) for a in flat]
            continue
        if node.op == "call_module" or (node.op == "call_function"
                                        and isinstance(node.target, torch._ops.HigherOrderOperator)):
            inner = _subgraph_depth(node, gm)
            t, o = t + max(1, int(inner)), o + max(1, inner.ops)
        elif node.op == "call_function":
            r = roundings(node)
            t, o = t + r, o + (1 if r else 0)
        terms[node], ops[node] = t, o
    return outputs


def _depth_for(depths: int | Sequence[int] | None, i: int) -> int:
    if depths is None:
        return 1
    if isinstance(depths, int):
        return depths
    return depths[i] if i < len(depths) else _max_depth(depths)


def first_difference(expected: Sequence[Any], actual: Sequence[Any],
                     depths: int | Sequence[int] | None = None, actual_is: str = "the graph now has") -> str | None:
    """Compare two flat output sequences under the rule of this module; ``depths`` is one rounding depth for
    every output, one per output (:func:`output_depths`), or None (depth 1: a single op); ``actual_is``
    names what gave ``actual`` in the count mismatch message. Returns a one-line description of the first
    output that differs (its index, what differs, the error and the tolerance), or None when all agree."""
    if len(expected) != len(actual):
        return f"{actual_is} {len(actual)} outputs instead of {len(expected)}"
    for i, (e, a) in enumerate(zip(expected, actual)):
        problem = value_difference(e, a, _depth_for(depths, i))
        if problem:
            return f"output {i}: {problem}"
    return None


def value_difference(e: Any, a: Any, depth: int = 1) -> str | None:
    """Compare one expected value ``e`` with ``a`` (tensors by the rule above; anything else by ``==``);
    returns what differs in one line, or None."""
    if isinstance(e, torch.Tensor) != isinstance(a, torch.Tensor):
        return f"expected {type(e).__name__}, got {type(a).__name__}"
    if not isinstance(e, torch.Tensor):
        return None if e == a else f"expected {e!r}, got {a!r}"
    if e.dtype != a.dtype:
        return f"dtype changed from {e.dtype} to {a.dtype}"
    if e.shape != a.shape:
        return f"shape changed from {tuple(e.shape)} to {tuple(a.shape)}"
    e, a = e.detach(), a.detach()
    if not (e.dtype.is_floating_point or e.dtype.is_complex):
        if torch.equal(e, a):
            return None
        return f"{int((e != a).sum())} of {e.numel()} {e.dtype} values differ (exact match required)"
    if e.numel() == 0:
        return None
    e64, a64 = _widen(e), _widen(a)
    nan_e, nan_a = torch.isnan(e64), torch.isnan(a64)
    if not torch.equal(nan_e, nan_a):
        return f"{int((nan_e != nan_a).sum())} of {e.numel()} values are NaN in only one of the two runs"
    inf_e = torch.isinf(e64)
    if not torch.equal(inf_e, torch.isinf(a64)) or not torch.equal(e64[inf_e], a64[inf_e]):
        return f"{int((inf_e != torch.isinf(a64)).sum()) or 1} of {e.numel()} infinities differ"
    finite = ~(nan_e | inf_e)
    if not bool(finite.any()):
        return None
    magnitude = float(e64[finite].abs().max())
    tol = tolerance(e.dtype, magnitude, depth)
    err = float((a64[finite] - e64[finite]).abs().max())
    if err <= tol:
        return None
    half = e.dtype in HALF_DTYPES
    return (f"max abs error {err:.3g} exceeds {tol:.3g} (= {K_HALF if half else K:g} * eps * sqrt(depth "
            f"{_ops_of(depth) if half else int(depth)}{' ops' if half else ''}) * max(1, max|expected| "
            f"{magnitude:.3g}))")


def _widen(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.complex128) if t.dtype.is_complex else t.to(torch.float64)


def max_abs_error(expected: Iterable[Any], actual: Iterable[Any]) -> float:
    """Largest absolute difference over the tensor pairs of two flat output sequences (0.0 when there are
    none); NaN meeting NaN and an infinity meeting the same infinity count 0, NaN against a number and a
    shape mismatch count as infinity."""
    worst = 0.0
    for e, a in zip(expected, actual):
        if not (isinstance(e, torch.Tensor) and isinstance(a, torch.Tensor)):
            continue
        if e.shape != a.shape:
            return float("inf")
        if e.numel() == 0:
            continue
        if e.dtype.is_floating_point or e.dtype.is_complex or a.dtype.is_floating_point:
            e64, a64 = _widen(e.detach()), _widen(a.detach())
            diff = (a64 - e64).abs()
            same = (torch.isnan(e64) & torch.isnan(a64)) | (e64 == a64)   # equal infinities differ by 0, not NaN
            diff = torch.where(same, torch.zeros_like(diff), diff)
            worst = max(worst, float(torch.nan_to_num(diff, nan=float("inf"), posinf=float("inf")).max()))
        elif not torch.equal(e, a):
            worst = max(worst, float((a.long() - e.long()).abs().max()))
    return worst


def depths_of(graph: Any) -> list[int] | None:
    """:func:`output_depths` of a GraphModule, or of a Program's (anything with a ``graph_module``); None for
    None."""
    if graph is None:
        return None
    gm = getattr(graph, "graph_module", graph)
    return output_depths(gm) if isinstance(gm, torch.fx.GraphModule) else None


def assert_outputs_close(actual: Any, expected: Any, graph: Any = None,
                         depths: int | Sequence[int] | None = None) -> None:
    """Raise AssertionError with :func:`first_difference`'s line when ``actual`` and ``expected`` disagree
    under this module's rule. Both may be any nesting of tuples, lists, dicts and ModelOutputs (compared leaf
    by leaf, in pytree order); the depths come from ``graph`` (a GraphModule or Program whose flat outputs
    these are) unless given, else 1. For tests and checks comparing two runtimes."""
    flat_a = torch.utils._pytree.tree_leaves(actual)
    flat_e = torch.utils._pytree.tree_leaves(expected)
    if depths is None:
        depths = depths_of(graph)
    problem = first_difference(tuple(flat_e), tuple(flat_a), depths)
    if problem:
        raise AssertionError(problem)
