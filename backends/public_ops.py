"""ATen overloads the runtime can reach through PyTorch's public Python bindings, which are faster to call.

An ``OpOverload``'s C++ handle (``aten.add.Tensor._op``) parses its arguments against the JIT schema on
every call; the generated binding (``torch.add``) parses them with the faster ``PythonArgParser``. On this
machine the public call is 1-4 us cheaper per op (``torch.add`` 1.7 us against 2.6 us, ``Tensor.view``
1.4 us against 3.3 us, ``torch.full`` 2.7 us against 6.8 us on tiny tensors), which is ~10% of a routed MoE
layer's run time. A binding chooses its overload from the run-time argument types, so an entry is only
listed when calling the binding with the arguments the overload's schema takes dispatches to exactly that
overload: ``tests/test_public_ops.py`` calls every entry under a dispatch recorder and checks that the one
op recorded is the overload itself and that the results are identical. Not listed, on purpose:
``arange.start_step`` (``torch.arange(0, n)`` dispatches ``arange.start``), ``div.Scalar_mode``
(``torch.div`` picks ``div.Tensor_mode``) and ops with no public binding (``slice.Tensor``).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable

import torch

# "namespace::name.overload" -> the public binding, as a dotted path from ``torch``; each dispatches exactly
# that overload when given the overload's own arguments
PUBLIC_BINDINGS: dict[str, str] = {
    # views and layout
    "aten::view.default": "Tensor.view",
    "aten::permute.default": "permute",
    "aten::unsqueeze.default": "unsqueeze",
    "aten::squeeze.dims": "squeeze",
    "aten::expand.default": "Tensor.expand",
    "aten::select.int": "select",
    "aten::clone.default": "clone",
    # matmuls and convolution
    "aten::mm.default": "mm",
    "aten::addmm.default": "addmm",
    "aten::bmm.default": "bmm",
    "aten::baddbmm.default": "baddbmm",
    "aten::convolution.default": "convolution",
    # elementwise arithmetic (a Python number for a Tensor argument is a wrapped scalar either way)
    "aten::add.Tensor": "add",
    "aten::sub.Tensor": "sub",
    "aten::mul.Tensor": "mul",
    "aten::div.Tensor": "div",
    "aten::add_.Tensor": "Tensor.add_",
    "aten::sub_.Tensor": "Tensor.sub_",
    "aten::mul_.Tensor": "Tensor.mul_",
    "aten::div_.Tensor": "Tensor.div_",
    "aten::remainder.Scalar": "remainder",
    "aten::neg.default": "neg",
    "aten::exp.default": "exp",
    "aten::tanh.default": "tanh",
    "aten::sigmoid.default": "sigmoid",
    "aten::rsqrt.default": "rsqrt",
    "aten::pow.Tensor_Scalar": "pow",
    # activations and normalization
    "aten::relu.default": "relu",
    "aten::relu_.default": "relu_",
    "aten::gelu.default": "_C._nn.gelu",
    "aten::gelu_.default": "_C._nn.gelu_",
    "aten::clamp.default": "clamp",
    "aten::clamp_.default": "clamp_",
    "aten::_softmax.default": "_softmax",
    "aten::native_layer_norm.default": "native_layer_norm",
    "aten::_native_batch_norm_legit_no_training.default": "_native_batch_norm_legit_no_training",
    # comparisons and logic
    "aten::eq.Scalar": "eq",
    "aten::eq.Tensor": "eq",
    "aten::ne.Scalar": "ne",
    "aten::lt.Scalar": "lt",
    "aten::ge.Scalar": "ge",
    "aten::gt.Scalar": "gt",
    "aten::where.self": "where",
    "aten::logical_and.default": "logical_and",
    "aten::bitwise_or.Tensor": "bitwise_or",
    # reductions and selection
    "aten::sum.dim_IntList": "sum",
    "aten::mean.dim": "mean",
    "aten::max.default": "max",
    "aten::argmax.default": "argmax",
    "aten::topk.default": "topk",
    "aten::sort.stable": "sort",
    "aten::searchsorted.Tensor": "searchsorted",
    # gathers, scatters, creation
    "aten::index_select.default": "index_select",
    "aten::index_copy.default": "index_copy",
    "aten::index_copy_.default": "Tensor.index_copy_",
    "aten::index_add.default": "index_add",
    "aten::embedding.default": "embedding",
    "aten::_embedding_bag.default": "_embedding_bag",
    "aten::cat.default": "cat",
    "aten::full.default": "full",
    "aten::nonzero.default": "nonzero",
    # scalars out of tensors (``item`` is ``_local_scalar_dense``; ``size`` does not dispatch at all)
    "aten::_local_scalar_dense.default": "Tensor.item",
    "aten::sym_size.int": "Tensor.size",
}


def _qualified(op: torch._ops.OpOverload) -> str:
    return f"{op._schema.name}.{op._overloadname}"


@lru_cache(maxsize=None)
def _binding(path: str) -> Callable | None:
    obj = torch
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def public_binding(op) -> Callable | None:
    """Takes an ``OpOverload`` (or anything else); returns the public Python binding that dispatches exactly
    that overload for its own arguments, or None when there is none listed (or this PyTorch lacks it)."""
    if not isinstance(op, torch._ops.OpOverload):
        return None
    path = PUBLIC_BINDINGS.get(_qualified(op))
    return _binding(path) if path is not None else None
