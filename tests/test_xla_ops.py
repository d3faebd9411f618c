"""Per-op numerics of the ATen -> JAX lowering (fxopt.backends.xla.ops) against PyTorch.

Each case builds a one-op FX graph (tensor arguments become placeholders), runs it through
``run_lowered`` (jax.jit on the CPU) with the dtype safety net *off* (so the rule's own dtypes are what is
compared), and checks dtype, shape and values against the ATen op run eagerly: exact for integers and bools,
tolerances by dtype for floats. Edge shapes: empty tensors, size-1 dims, 0-d tensors, 1<<16 elements.
"""
from __future__ import annotations

import operator
import subprocess
import sys

import pytest
import torch

jax = pytest.importorskip("jax")

from fxopt.backends.xla import lower as xl  # noqa: E402
from fxopt.errors import BackendError, InputError  # noqa: E402
from fxopt.ir.numerics import assert_outputs_close, output_depths  # noqa: E402

pytestmark = pytest.mark.numerics   # cross-runtime numerics: CI re-runs these on another vector path

aten = torch.ops.aten
FAST = {"xla_backend_optimization_level": 0}   # tiny graphs: skip LLVM's expensive passes


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


G = _gen()


def R(*shape, dtype=torch.float32, lo=None):
    """Random normal tensor (abs()+lo when lo is given: positive inputs for log/sqrt)."""
    t = torch.randn(*shape, generator=G)
    if lo is not None:
        t = t.abs() + lo
    return t.to(dtype)


def I(hi, *shape, lo=0, dtype=torch.int64):
    """Random integer tensor in [lo, hi)."""
    return torch.randint(lo, hi, shape, generator=G).to(dtype)


def one_op_graph(target, args, kwargs=None):
    """A GraphModule calling ``target`` once; tensors in args/kwargs (also inside lists) are placeholders.
    Returns (gm, flat_inputs, eager_outputs_as_tuple)."""
    kwargs = kwargs or {}
    g = torch.fx.Graph()
    inputs: list[torch.Tensor] = []

    def ph(v):
        if isinstance(v, torch.Tensor):
            node = g.placeholder(f"x{len(inputs)}")
            node.meta["val"] = v   # the shapes fxopt.ir.numerics reads to count a reduction's terms
            inputs.append(v)
            return node
        if isinstance(v, (list, tuple)):
            return type(v)(ph(e) for e in v)
        return v

    node = g.call_function(target, tuple(ph(a) for a in args), {k: ph(v) for k, v in kwargs.items()})
    expected = target(*args, **kwargs)
    node.meta["val"] = expected
    if isinstance(expected, (tuple, list)):
        outs = tuple(g.call_function(operator.getitem, (node, i)) for i in range(len(expected)))
        expected = tuple(expected)
    else:
        outs, expected = (node,), (expected,)
    g.output(outs)
    return torch.fx.GraphModule(torch.nn.Module(), g), inputs, expected


def assert_same(got, want, values=True, depth=1):
    """got/want tensors: same dtype and shape; same values under the shared cross-runtime rule
    (fxopt.ir.numerics: exact for ints/bools, NaN == NaN, floats within ``depth`` roundings' tolerance)."""
    assert isinstance(got, torch.Tensor), type(got)
    assert got.dtype == want.dtype, f"dtype {got.dtype} != torch {want.dtype}"
    assert tuple(got.shape) == tuple(want.shape), f"shape {tuple(got.shape)} != torch {tuple(want.shape)}"
    if not values:
        return
    assert_outputs_close(got, want, depths=depth)


def check(target, args, kwargs=None, values=True):
    """Run one op through the lowering and compare with PyTorch."""
    gm, inputs, expected = one_op_graph(target, args, kwargs)
    got = xl.run_lowered(gm, inputs, dtype_check="off", compiler_options=FAST)
    assert len(got) == len(expected)
    for gt, ex, depth in zip(got, expected, output_depths(gm)):
        if isinstance(ex, torch.Tensor):
            assert_same(gt, ex, values, depth)
        else:
            assert gt == ex


# (id, target, args, kwargs) ----------------------------------------------------------------------------------
X = R(3, 4)
CASES = [
    # arithmetic and promotion
    ("add_broadcast", aten.add.Tensor, (R(3, 4), R(4)), {}),
    ("add_int_plus_0d_float", aten.add.Tensor, (I(9, 3, dtype=torch.int32), torch.tensor(1.5)), {}),
    ("add_alpha_int64", aten.add.Tensor, (I(9, 5), I(9, 5)), {"alpha": 3}),
    ("add_scalar_float_to_int", aten.add.Scalar, (I(9, 4), 2.5), {}),
    ("add_bf16", aten.add.Tensor, (R(4, 4, dtype=torch.bfloat16), R(4, 4, dtype=torch.bfloat16)), {}),
    ("add_f16_scalar", aten.add.Tensor, (R(5, dtype=torch.float16), 0.25), {}),
    ("add_empty", aten.add.Tensor, (R(0, 3), R(1, 3)), {}),
    ("add_large", aten.add.Tensor, (R(1 << 16), R(1 << 16)), {}),
    ("add_f32_f64_0d_stays_f32", aten.add.Tensor, (R(4), torch.tensor(2.0, dtype=torch.float64)), {}),
    ("sub_alpha", aten.sub.Tensor, (R(2, 3), R(2, 3)), {"alpha": 0.5}),
    ("rsub_scalar", aten.rsub.Scalar, (R(2, 3), 1.0), {}),
    ("mul_bool", aten.mul.Tensor, (I(2, 6).bool(), I(2, 6).bool()), {}),
    ("mul_scalar_f32", aten.mul.Tensor, (R(3), 0.1), {}),
    ("div_int_true", aten.div.Tensor, (I(20, 6, lo=-10), I(5, 6, lo=1)), {}),
    ("div_trunc_int", aten.div.Tensor_mode, (I(20, 8, lo=-10), I(5, 8, lo=1) * torch.tensor([1, -1] * 4)),
     {"rounding_mode": "trunc"}),
    ("div_floor_int", aten.div.Tensor_mode, (I(20, 8, lo=-10), I(5, 8, lo=1) * torch.tensor([1, -1] * 4)),
     {"rounding_mode": "floor"}),
    ("div_floor_float", aten.div.Tensor_mode, (R(8) * 5, R(8)), {"rounding_mode": "floor"}),
    ("div_trunc_float", aten.div.Tensor_mode, (R(8) * 5, R(8)), {"rounding_mode": "trunc"}),
    ("div_scalar_mode", aten.div.Scalar_mode, (I(20, 8, lo=-10), 3), {"rounding_mode": "floor"}),
    ("floor_divide_int", aten.floor_divide.default, (I(20, 8, lo=-10), torch.full((8,), -3)), {}),
    ("remainder_int_neg", aten.remainder.Scalar, (I(20, 8, lo=-10), -3), {}),
    ("remainder_float", aten.remainder.Tensor, (R(8) * 4, R(8)), {}),
    ("fmod_float", aten.fmod.Tensor, (R(8) * 4, R(8)), {}),
    ("pow_square", aten.pow.Tensor_Scalar, (R(6), 2), {}),
    ("pow_sqrt", aten.pow.Tensor_Scalar, (R(6, lo=0.1), 0.5), {}),
    ("pow_int_float_exp", aten.pow.Tensor_Scalar, (I(5, 6, lo=1), 1.5), {}),
    ("pow_tensor_tensor", aten.pow.Tensor_Tensor, (R(6, lo=0.1), R(6)), {}),
    ("pow_scalar_base", aten.pow.Scalar, (2.0, R(6)), {}),
    ("maximum_nan", aten.maximum.default, (torch.tensor([1.0, float("nan"), 3.0]), torch.tensor([2.0, 0.0, float("nan")])), {}),
    ("minimum_int", aten.minimum.default, (I(9, 5), I(9, 5)), {}),
    # comparisons, logic, where
    ("eq_scalar_int", aten.eq.Scalar, (I(3, 10), 1), {}),
    ("ne_scalar", aten.ne.Scalar, (I(3, 10), 0), {}),
    ("lt_int_vs_float", aten.lt.Tensor, (I(5, 6), R(6) * 3), {}),
    ("ge_tensor", aten.ge.Tensor, (R(2, 3), R(3)), {}),
    ("logical_and_mixed", aten.logical_and.default, (I(3, 6), R(6)), {}),
    ("logical_not", aten.logical_not.default, (I(2, 6),), {}),
    ("bitwise_and_int", aten.bitwise_and.Tensor, (I(64, 6), I(64, 6)), {}),
    ("bitwise_or_bool", aten.bitwise_or.Tensor, (I(2, 6).bool(), I(2, 6).bool()), {}),
    ("bitwise_xor_scalar", aten.bitwise_xor.Scalar, (I(64, 6), 5), {}),
    ("bitwise_not_int", aten.bitwise_not.default, (I(64, 6, lo=-64),), {}),
    ("bitwise_not_bool", aten.bitwise_not.default, (I(2, 6).bool(),), {}),
    ("where_int_float", aten.where.self, (I(2, 3, 4).bool(), I(9, 3, 4), R(3, 4)), {}),
    ("where_scalar_other", aten.where.ScalarOther, (I(2, 6).bool(), R(6), 0.0), {}),
    ("masked_fill", aten.masked_fill.Scalar, (R(2, 4), I(2, 2, 4).bool(), float("-inf")), {}),
    ("clamp_both", aten.clamp.default, (R(10), -0.5, 0.5), {}),
    ("clamp_int_float_min", aten.clamp.default, (I(9, 10), 2.5), {}),
    ("clamp_tensor", aten.clamp.Tensor, (R(10), R(10) - 1, R(10) + 1), {}),
    ("clamp_min", aten.clamp_min.default, (R(10), 0.0), {}),
    # activations
    ("gelu_none", aten.gelu.default, (R(100),), {}),
    ("gelu_tanh", aten.gelu.default, (R(100),), {"approximate": "tanh"}),
    ("gelu_bf16", aten.gelu.default, (R(64, dtype=torch.bfloat16),), {}),
    ("relu_int", aten.relu.default, (I(9, 6, lo=-9),), {}),
    ("leaky_relu", aten.leaky_relu.default, (R(20), 0.2), {}),
    ("elu", aten.elu.default, (R(20), 1.5), {}),
    ("hardtanh", aten.hardtanh.default, (R(20) * 3, -2.0, 2.0), {}),
    ("softplus", aten.softplus.default, (R(20) * 30, 1.0, 20.0), {}),
    # matmuls
    ("mm", aten.mm.default, (R(5, 7), R(7, 3)), {}),
    ("mm_empty_inner", aten.mm.default, (R(4, 0), R(0, 3)), {}),
    ("mm_size1", aten.mm.default, (R(1, 7), R(7, 1)), {}),
    ("bmm", aten.bmm.default, (R(3, 4, 5), R(3, 5, 2)), {}),
    ("addmm", aten.addmm.default, (R(3), R(4, 5), R(5, 3)), {}),
    ("addmm_beta_alpha", aten.addmm.default, (R(4, 3), R(4, 5), R(5, 3)), {"beta": 0.5, "alpha": 2.0}),
    ("addmm_beta0_ignores_nan", aten.addmm.default, (torch.full((4, 3), float("nan")), R(4, 5), R(5, 3)),
     {"beta": 0}),
    ("baddbmm", aten.baddbmm.default, (R(2, 3, 4), R(2, 3, 5), R(2, 5, 4)), {"beta": 2.0}),
    ("matmul_broadcast", aten.matmul.default, (R(2, 3, 4, 5), R(5, 6)), {}),
    # convolutions
    ("conv2d_stride_pad_dil", aten.convolution.default,
     (R(2, 3, 9, 9), R(4, 3, 3, 3), R(4), [2, 1], [1, 2], [1, 2], False, [0, 0], 1), {}),
    ("conv2d_grouped", aten.convolution.default,
     (R(1, 4, 6, 6), R(6, 2, 3, 3), None, [1, 1], [1, 1], [1, 1], False, [0, 0], 2), {}),
    ("conv2d_depthwise", aten.convolution.default,
     (R(2, 5, 7, 7), R(5, 1, 3, 3), R(5), [1, 1], [1, 1], [1, 1], False, [0, 0], 5), {}),
    ("conv1d", aten.convolution.default, (R(2, 3, 11), R(4, 3, 5), R(4), [2], [2], [1], False, [0], 1), {}),
    ("conv1d_depthwise", aten.convolution.default, (R(2, 8, 10), R(8, 1, 15), None, [1], [7], [1], False, [0], 8), {}),
    ("conv_transpose2d", aten.convolution.default,
     (R(1, 4, 5, 5), R(4, 3, 3, 3), R(6), [2, 2], [1, 1], [1, 1], True, [1, 1], 2), {}),
    ("conv_transpose1d_dilated", aten.convolution.default,
     (R(2, 2, 6), R(2, 3, 3), None, [3], [0], [2], True, [0], 1), {}),
    # normalisation / softmax
    ("batch_norm_eval", aten._native_batch_norm_legit_no_training.default,
     (R(2, 3, 4, 4), R(3), R(3), R(3), R(3, lo=0.5), 0.1, 1e-5), {}),
    ("layer_norm", aten.native_layer_norm.default, (R(2, 5, 8), [8], R(8), R(8), 1e-5), {}),
    ("layer_norm_2d_noaffine", aten.native_layer_norm.default, (R(3, 4, 6), [4, 6], None, None, 1e-6), {}),
    ("layer_norm_bf16", aten.native_layer_norm.default,
     (R(4, 16, dtype=torch.bfloat16), [16], R(16, dtype=torch.bfloat16), None, 1e-5), {}),
    ("group_norm", aten.native_group_norm.default, (R(2, 6, 3, 3), R(6), R(6), 2, 6, 9, 3, 1e-5), {}),
    ("softmax_last", aten._softmax.default, (R(3, 7), -1, False), {}),
    ("softmax_dim0_neg_inf", aten._softmax.default,
     (torch.tensor([[0.0, float("-inf")], [1.0, float("-inf")]]), 0, False), {}),
    ("softmax_f16", aten._softmax.default, (R(3, 5, dtype=torch.float16), 1, False), {}),
    ("softmax_empty", aten._softmax.default, (R(0, 4), -1, False), {}),
    ("log_softmax", aten._log_softmax.default, (R(4, 9), 1, False), {}),
    # reductions
    ("sum_dim_keepdim", aten.sum.dim_IntList, (R(3, 4, 5), [1, -1], True), {}),
    ("sum_empty_dimlist_is_all", aten.sum.dim_IntList, (R(3, 4), []), {}),
    ("sum_int32_to_int64", aten.sum.dim_IntList, (I(9, 3, 4, dtype=torch.int32), [0]), {}),
    ("sum_bool", aten.sum.default, (I(2, 50).bool(),), {}),
    ("sum_dtype", aten.sum.dim_IntList, (R(4, 4, dtype=torch.float16), [1]), {"dtype": torch.float32}),
    ("sum_large", aten.sum.dim_IntList, (R(1 << 16), [0]), {}),
    ("mean_dim", aten.mean.dim, (R(2, 3, 4), [-1]), {}),
    ("mean_empty_nan", aten.mean.dim, (R(0, 3), [0]), {}),
    ("mean_default", aten.mean.default, (R(5, 5),), {}),
    ("amax_keepdim", aten.amax.default, (R(3, 4, 5), [0, 2], True), {}),
    ("amin_all", aten.amin.default, (I(99, 3, 4),), {}),
    ("max_dim", aten.max.dim, (R(4, 6), 1), {}),
    ("min_dim_keepdim", aten.min.dim, (I(9, 4, 6), 0, True), {}),
    ("max_default", aten.max.default, (R(4, 6),), {}),
    ("argmax_none", aten.argmax.default, (R(4, 6),), {}),
    ("argmax_keepdim_ties", aten.argmax.default, (torch.tensor([[1, 3, 3], [2, 2, 0]]), 1, True), {}),
    ("argmin_dim", aten.argmin.default, (R(4, 6), 0), {}),
    ("argmax_nan_wins", aten.argmax.default, (torch.tensor([1.0, float("nan"), 3.0, float("nan")]),), {}),
    ("var_correction1", aten.var.correction, (R(4, 6), [1]), {"correction": 1}),
    ("var_correction0_keepdim", aten.var.correction, (R(4, 6), [0]), {"correction": 0, "keepdim": True}),
    ("var_single_nan", aten.var.correction, (R(1, 3), [0]), {"correction": 1}),
    ("std_all", aten.std.correction, (R(4, 6),), {}),
    ("prod_dim_int", aten.prod.dim_int, (I(4, 3, 4, lo=1), 1), {}),
    ("any_dim", aten.any.dim, (I(2, 3, 4), 1), {}),
    ("all_dims", aten.all.dims, (I(2, 3, 4).bool(), [0, 1]), {}),
    ("cumsum_int", aten.cumsum.default, (I(9, 3, 5, dtype=torch.int32), 1), {}),
    ("logsumexp", aten.logsumexp.default, (R(3, 5), [1]), {}),
    ("topk_largest", aten.topk.default, (torch.randperm(20, generator=G).float().view(4, 5), 3), {}),
    ("topk_smallest_dim0", aten.topk.default, (torch.randperm(20, generator=G).view(5, 4), 2, 0, False), {}),
    ("sort_desc", aten.sort.default, (torch.randperm(12, generator=G).float().view(3, 4), 1, True), {}),
    ("sort_stable_ties", aten.sort.stable, (I(3, 2, 10),), {"stable": True, "dim": -1}),
    # layout
    ("view_minus1", aten.view.default, (R(2, 3, 4), [6, -1]), {}),
    ("unsafe_view", aten._unsafe_view.default, (R(2, 3, 4), [2, 12]), {}),
    ("view_empty", aten.view.default, (R(0, 4), [-1, 2]), {}),
    ("expand_new_dims", aten.expand.default, (R(3, 1), [2, -1, 4]), {}),
    ("permute_negative", aten.permute.default, (R(2, 3, 4), [-1, 0, 1]), {}),
    ("t", aten.t.default, (R(2, 5),), {}),
    ("transpose", aten.transpose.int, (R(2, 3, 4), -1, 0), {}),
    ("slice_neg_start_huge_end", aten.slice.Tensor, (R(4, 10), 1, -7, 9223372036854775807, 2), {}),
    ("slice_empty", aten.slice.Tensor, (R(4, 10), 0, 5, 9), {}),
    ("select_negative", aten.select.int, (R(4, 5, 6), 1, -2), {}),
    ("squeeze_dims_keeps_non1", aten.squeeze.dims, (R(1, 3, 1), [0, 1]), {}),
    ("squeeze_all", aten.squeeze.default, (R(1, 3, 1, 2),), {}),
    ("unsqueeze_negative", aten.unsqueeze.default, (R(3, 4), -1), {}),
    ("as_strided_contiguous_offset", aten.as_strided.default, (R(4, 6), [3, 5], [5, 1], 2), {}),
    ("cat_promote_and_legacy_empty", aten.cat.default, ([R(2, 3), I(9, 1, 3), torch.empty(0)], 0), {}),
    ("cat_dim_neg", aten.cat.default, ([R(2, 3), R(2, 1)], -1), {}),
    ("stack_last", aten.stack.default, ([R(2, 3), R(2, 3)], -1), {}),
    ("split_uneven", aten.split.Tensor, (R(7, 2), 3), {}),
    ("split_with_sizes", aten.split_with_sizes.default, (R(2, 9), [2, 0, 7], 1), {}),
    ("unbind", aten.unbind.int, (R(3, 2), 1), {}),
    ("clone", aten.clone.default, (R(3, 3),), {}),
    ("alias", aten.alias.default, (I(9, 3),), {}),
    ("to_copy_float_to_int_trunc", aten._to_copy.default, (R(20) * 5,), {"dtype": torch.int64}),
    ("to_copy_int_to_bool", aten._to_copy.default, (I(3, 20, lo=-1),), {"dtype": torch.bool}),
    ("to_copy_bf16", aten._to_copy.default, (R(20),), {"dtype": torch.bfloat16}),
    ("to_copy_bool_to_float", aten._to_copy.default, (I(2, 5).bool(),), {"dtype": torch.float32}),
    ("copy_broadcast_cast", aten.copy.default, (R(2, 3), I(9, 3)), {}),
    ("constant_pad", aten.constant_pad_nd.default, (R(2, 3, 4), [1, 2, -1, 1], 0.5), {}),
    ("repeat", aten.repeat.default, (R(2, 3), [2, 1, 2]), {}),
    ("flip", aten.flip.default, (R(3, 4), [0, -1]), {}),
    ("roll", aten.roll.default, (R(3, 4), [1, -1], [0, 1]), {}),
    ("roll_flat", aten.roll.default, (R(3, 4), [5]), {}),
    ("tril", aten.tril.default, (R(4, 5), -1), {}),
    ("triu", aten.triu.default, (R(2, 4, 4), 1), {}),
    ("slice_scatter", aten.slice_scatter.default, (R(6, 4), R(2, 4), 0, 1, 5, 2), {}),
    ("select_scatter", aten.select_scatter.default, (R(3, 4), R(3), 1, -1), {}),
    # gathers / scatters
    ("embedding", aten.embedding.default, (R(10, 4), I(10, 2, 3)), {}),
    ("embedding_empty_ids", aten.embedding.default, (R(10, 4), I(10, 0)), {}),
    ("index_select", aten.index_select.default, (R(5, 6), 1, I(6, 4)), {}),
    ("index_none_then_tensor", aten.index.Tensor, (R(3, 5, 4), [None, I(5, 2, 2)]), {}),
    ("index_adjacent", aten.index.Tensor, (R(3, 5, 4), [None, I(5, 6), I(4, 6)]), {}),
    ("index_separated_goes_first", aten.index.Tensor, (R(3, 5, 4), [I(3, 2), None, I(4, 2)]), {}),
    ("index_negative", aten.index.Tensor, (R(6, 2), [torch.tensor([-1, 0, -6])]), {}),
    ("index_put_set", aten.index_put.default, (R(5, 3), [torch.tensor([0, 3])], R(2, 3)), {}),
    ("index_put_accumulate_dups", aten.index_put.default, (R(5, 3), [torch.tensor([1, 1, 4])], R(3, 3), True), {}),
    ("scatter_src", aten.scatter.src, (R(3, 5), 1, torch.tensor([[0, 4], [1, 2], [3, 0]]), R(3, 4)), {}),
    ("scatter_value", aten.scatter.value, (R(3, 5), 0, torch.tensor([[2, 0, 1]]), 9.0), {}),
    ("scatter_add_dups", aten.scatter_add.default, (R(3, 4), 0, I(3, 5, 4), R(5, 4)), {}),
    ("index_add_dups_alpha", aten.index_add.default, (R(4, 3), 0, torch.tensor([0, 2, 0]), R(3, 3)), {"alpha": 2}),
    ("gather_smaller_index", aten.gather.default, (R(4, 5), 1, I(5, 3, 2)), {}),
    ("gather_large", aten.gather.default, (R(1 << 16), 0, I(1 << 16, 1 << 10)), {}),
    # factories
    ("full_int_infers_int64", aten.full.default, ([2, 3], 7), {}),
    ("full_bool", aten.full.default, ([4], True), {}),
    ("full_float_dtype", aten.full.default, ([2, 2], 1.5), {"dtype": torch.float16}),
    ("zeros", aten.zeros.default, ([3, 0],), {}),
    ("ones_int", aten.ones.default, ([2, 2],), {"dtype": torch.int32}),
    ("scalar_tensor", aten.scalar_tensor.default, (3,), {}),
    ("arange_int", aten.arange.default, (10,), {}),
    ("arange_start_step_neg", aten.arange.start_step, (10, -3, -3), {}),
    ("arange_float", aten.arange.start_step, (0.0, 1.0, 0.1), {}),
    ("arange_empty", aten.arange.start, (5, 5), {}),
    ("full_like", aten.full_like.default, (R(2, 3), 4), {}),
    ("zeros_like_dtype", aten.zeros_like.default, (R(2, 3),), {"dtype": torch.int64}),
    ("new_zeros", aten.new_zeros.default, (I(3, 2), [4]), {}),
    # pooling / resampling
    ("max_pool2d_pad_stride", aten.max_pool2d_with_indices.default, (R(2, 3, 9, 9), [3, 3], [2, 2], [1, 1]), {}),
    ("max_pool2d_ceil_dilation", aten.max_pool2d_with_indices.default,
     (R(1, 2, 10, 9), [2, 3], [2, 2], [0, 1], [2, 1], True), {}),
    ("avg_pool2d_exclude_pad_ceil", aten.avg_pool2d.default,
     (R(1, 2, 7, 7), [3, 3], [2, 2], [1, 1], True, False), {}),
    ("avg_pool2d_include_pad", aten.avg_pool2d.default, (R(1, 2, 6, 6), [2, 2], [2, 2], [1, 1]), {}),
    ("adaptive_avg_pool2d_uneven", aten._adaptive_avg_pool2d.default, (R(2, 3, 7, 5), [3, 2]), {}),
    ("upsample_nearest", aten.upsample_nearest2d.vec, (R(1, 2, 3, 5), [7, 8], None), {}),
    ("upsample_bilinear", aten.upsample_bilinear2d.vec, (R(1, 2, 3, 5), [6, 9], False, None), {}),
    ("upsample_bilinear_align", aten.upsample_bilinear2d.vec, (R(1, 2, 3, 5), None, True, [2.0, 1.5]), {}),
    # more rules (less common ops)
    ("addmv", aten.addmv.default, (R(4), R(4, 5), R(5)), {"alpha": 2.0}),
    ("dot", aten.dot.default, (R(7), R(7)), {}),
    ("mv", aten.mv.default, (R(3, 7), R(7)), {}),
    ("linear", aten.linear.default, (R(2, 3, 5), R(4, 5), R(4)), {}),
    ("atan2", aten.atan2.default, (R(6), R(6)), {}),
    ("copysign", aten.copysign.Tensor, (R(6), R(6)), {}),
    ("hypot", aten.hypot.default, (R(6), R(6)), {}),
    ("logaddexp", aten.logaddexp.default, (R(6), R(6)), {}),
    ("fmax_nan", aten.fmax.default, (torch.tensor([1.0, float("nan")]), torch.tensor([float("nan"), 0.0])), {}),
    ("fmin", aten.fmin.default, (R(6), R(6)), {}),
    ("left_shift", aten.bitwise_left_shift.Tensor, (I(64, 6), I(5, 6)), {}),
    ("right_shift", aten.bitwise_right_shift.Tensor, (I(64, 6, lo=-64), I(5, 6)), {}),
    ("lerp", aten.lerp.Scalar, (R(6), R(6), 0.3), {}),
    ("nan_to_num", aten.nan_to_num.default, (torch.tensor([float("nan"), float("inf"), -float("inf"), 1.0]),),
     {"nan": 0.5, "posinf": 9.0}),
    ("round_decimals", aten.round.decimals, (R(8) * 10,), {"decimals": 1}),
    ("where_scalar_both", aten.where.Scalar, (I(2, 6).bool(), 1.0, 0.0), {}),
    ("cumprod", aten.cumprod.default, (R(3, 4), 1), {}),
    ("var_mean", aten.var_mean.correction, (R(4, 6), [1]), {"correction": 0}),
    ("mean_dtype", aten.mean.dim, (R(4, 6, dtype=torch.float16), [1]), {"dtype": torch.float32}),
    ("narrow_negative_start", aten.narrow.default, (R(4, 6), 1, -4, 2), {}),
    ("squeeze_dim_non1_kept", aten.squeeze.dim, (R(2, 3), 0), {}),
    ("index_copy", aten.index_copy.default, (R(5, 3), 0, torch.tensor([4, 0]), R(2, 3)), {}),
    ("index_fill", aten.index_fill.int_Scalar, (R(5, 3), 1, torch.tensor([0, 2]), -1.0), {}),
    ("unsafe_index", aten._unsafe_index.Tensor, (R(4, 5), [None, I(5, 3)]), {}),
    ("unsafe_index_put", aten._unsafe_index_put.default, (R(4, 5), [I(4, 2)], R(2, 5), True), {}),
    ("scatter_reduce_legacy_multiply", aten.scatter.reduce, (R(3, 4), 0, torch.tensor([[1, 0, 2, 1]]), R(1, 4)),
     {"reduce": "multiply"}),
    ("native_batch_norm_eval", aten.native_batch_norm.default,
     (R(2, 3, 5), R(3), R(3), R(3), R(3, lo=0.5), False, 0.1, 1e-5), {}),
    ("embedding_bag_padding_idx_overload", aten.embedding_bag.padding_idx,
     (R(10, 3), torch.tensor([1, 2, 4, 5]), torch.tensor([0, 1]), False, 1, False, None, False, 2), {}),
    ("ones", aten.ones.default, ([0, 2],), {}),
    ("new_full", aten.new_full.default, (I(3, 2), [2, 2], 5), {}),
    ("new_ones", aten.new_ones.default, (R(2), [3]), {"dtype": torch.bool}),
    ("fill_scalar", aten.fill.Scalar, (I(3, 4), 2), {}),
    ("max_pool2d_plain", aten.max_pool2d.default, (R(1, 2, 6, 6), [2, 2]), {}),
    ("max_pool3d_with_indices", aten.max_pool3d_with_indices.default, (R(1, 1, 4, 5, 6), [2, 2, 3], [2, 2, 2]), {}),
    ("avg_pool1d", aten.avg_pool1d.default, (R(2, 3, 9), [3], [2], [1]), {}),
    ("avg_pool3d_divisor", aten.avg_pool3d.default, (R(1, 2, 4, 4, 4), [2, 2, 2]), {"divisor_override": 3}),
    ("adaptive_avg_pool1d", aten.adaptive_avg_pool1d.default, (R(2, 3, 10), [4]), {}),
    ("upsample_nearest_default", aten.upsample_nearest2d.default, (R(1, 1, 4, 4), [8, 6]), {}),
    ("upsample_bilinear_default", aten.upsample_bilinear2d.default, (R(1, 1, 4, 4), [3, 7], False), {}),
]

UNARY = ["exp", "log", "sqrt", "rsqrt", "sin", "cos", "tanh", "sigmoid", "erf", "expm1", "log1p", "reciprocal",
         "abs", "neg", "sign", "floor", "ceil", "round", "trunc", "relu", "silu", "hardswish", "hardsigmoid",
         "mish", "isnan", "exp2", "log2", "atan", "frac", "isfinite", "isinf", "log10", "erfc", "lgamma",
         "digamma", "asinh", "cosh"]
POSITIVE = {"log", "sqrt", "rsqrt", "log2"}
FLOAT_ONLY = {"silu", "hardswish", "hardsigmoid", "mish", "frac"}   # torch has no integer kernels for these


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_op_matches_pytorch(case):
    """Each rule on its case (incl. promotion, edge shapes) equals PyTorch: dtype, shape, values."""
    _, target, args, kwargs = case
    check(target, args, kwargs)


@pytest.mark.parametrize("name", UNARY)
def test_unary_float_and_int_inputs(name):
    """Unary math on a float32 vector with halves/NaN/inf, and on an int64 vector (int -> float promotion)."""
    op = getattr(aten, name).default
    x = R(12, lo=0.1) if name in POSITIVE else torch.cat([R(8) * 3, torch.tensor([0.5, -2.5, 0.0, -0.0])])
    if name not in POSITIVE:
        x = torch.cat([x, torch.tensor([float("nan"), float("inf"), float("-inf")])])
    check(op, (x,))
    if name not in FLOAT_ONLY:
        check(op, (I(5, 6, lo=1),))


@pytest.mark.parametrize("target,args", [
    (aten.empty.memory_format, ([2, 3],)), (aten.empty_like.default, (R(2, 3),)),
    (aten.empty_strided.default, ([2, 3], [3, 1])), (aten.new_empty.default, (I(3, 2), [4]))],
    ids=["empty", "empty_like", "empty_strided", "new_empty"])
def test_empty_factories(target, args):
    """empty* -> zeros of the right shape and dtype (torch's values are undefined; only metadata compared)."""
    check(target, args, values=False)


def test_erfinv():
    """erfinv on (-1, 1)."""
    check(aten.erfinv.default, (torch.tanh(R(20)),))


@pytest.mark.parametrize("include_self", [True, False])
@pytest.mark.parametrize("reduce", ["sum", "prod", "mean", "amax", "amin"])
def test_scatter_reduce(reduce, include_self):
    """scatter_reduce.two for every reduction, with duplicate indices and untouched positions."""
    index = torch.tensor([[0, 1, 0, 3], [2, 2, 1, 0]])
    check(aten.scatter_reduce.two, (R(4, 4), 0, index, R(2, 4), reduce), {"include_self": include_self})


def test_scatter_reduce_int_mean_floors():
    """Integer mean in scatter_reduce floors, like torch."""
    index = torch.tensor([0, 0, 1, 1, 1])
    check(aten.scatter_reduce.two, (I(9, 3), 0, index, I(9, 5, lo=-9), "mean"))


BAG_INDICES = torch.tensor([1, 2, 4, 5, 4, 3, 2, 9])
BAG_OFFSETS = torch.tensor([0, 2, 2, 5])   # bag 1 is empty


@pytest.mark.parametrize("mode", [0, 1, 2], ids=["sum", "mean", "max"])
@pytest.mark.parametrize("op", [aten._embedding_bag.default, aten._embedding_bag_forward_only.default],
                         ids=["embedding_bag", "forward_only"])
def test_embedding_bag_modes_all_outputs(op, mode):
    """All four outputs of _embedding_bag per mode, with an empty bag."""
    check(op, (R(10, 3), BAG_INDICES, BAG_OFFSETS, False, mode, False, None, False, -1))


@pytest.mark.parametrize("mode", [0, 1, 2], ids=["sum", "mean", "max"])
def test_embedding_bag_padding_idx(mode):
    """padding_idx rows are skipped (not counted in means, never the max)."""
    check(aten._embedding_bag.default, (R(10, 3), BAG_INDICES, BAG_OFFSETS, False, mode, False, None, False, 4))


def test_embedding_bag_per_sample_weights_and_last_offset():
    """per_sample_weights scale rows (sum mode); include_last_offset uses len(offsets)-1 bags."""
    offsets = torch.tensor([0, 2, 2, 5, 8])
    check(aten._embedding_bag.default, (R(10, 3), BAG_INDICES, offsets, False, 0, False, R(8), True, -1))


def test_embedding_bag_large_float64():
    """1<<16 indices in 1<<10 bags, float64 weights (PyTorch's slow path fills offset2bag)."""
    idx = I(1000, 1 << 16)
    offsets = torch.arange(0, 1 << 16, 64)
    check(aten._embedding_bag.default, (R(1000, 8, dtype=torch.float64), idx, offsets, False, 1, False, None,
                                        False, -1))


def test_embedding_bag_int32_indices():
    """int32 indices/offsets: the auxiliary outputs are int32 too."""
    check(aten._embedding_bag.default, (R(10, 3), BAG_INDICES.int(), BAG_OFFSETS.int(), False, 2, False, None,
                                        False, -1))


def _sym_graph():
    """x -> (full([2 * x.size(1)], 1.0), x.size(0)): SymInt arithmetic and a Python int output."""
    g = torch.fx.Graph()
    x = g.placeholder("x")
    s1 = g.call_function(aten.sym_size.int, (x, 1))
    n = g.call_function(operator.mul, (s1, 2))
    full = g.call_function(aten.full.default, ([n], 1.0))
    view = g.call_function(aten.view.default, (x, [-1, g.call_function(operator.floordiv, (n, 2))]))
    s0 = g.call_function(aten.sym_size.int, (x, 0))
    g.output((full, view, s0))
    return torch.fx.GraphModule(torch.nn.Module(), g)


def test_symint_arithmetic_and_scalar_output():
    """sym_size + operator arithmetic are ints at trace time; a Python int output comes back as an int."""
    full, view, s0 = xl.run_lowered(_sym_graph(), [R(3, 5)], compiler_options=FAST)
    assert full.shape == (10,) and full.dtype == torch.float32
    assert view.shape == (3, 5)
    assert s0 == 3 and isinstance(s0, int)


def test_as_strided_non_contiguous_is_rejected():
    """as_strided with a transposing stride raises UnsupportedOpError naming the op."""
    gm, inputs, _ = one_op_graph(aten.as_strided.default, (R(4, 6), [6, 4], [1, 6]))
    assert xl.unsupported_nodes(gm) == [("as_strided_default", "aten.as_strided.default", "unknown source line")]
    with pytest.raises(xl.UnsupportedOpError, match=r"aten\.as_strided\.default at node 'as_strided_default'"):
        xl.lower_graph(gm)


def test_unsupported_op_error_names_op_node_and_line():
    """An op without a rule: UnsupportedOpError (an InputError) naming the op, the node and its source line."""
    gm, _, _ = one_op_graph(aten.cummax.default, (R(3, 4), 1))
    node = next(n for n in gm.graph.nodes if n.op == "call_function" and n.target is aten.cummax.default)
    node.meta["provenance"] = {"source": "model.py:42"}
    with pytest.raises(InputError) as info:
        xl.lower_graph(gm)
    assert isinstance(info.value, xl.UnsupportedOpError)
    msg = str(info.value)
    assert "aten.cummax.default" in msg and f"'{node.name}'" in msg and "model.py:42" in msg and "split" in msg


def test_dtype_check_raise_catches_wrong_rule_dtype():
    """dtype_check='raise' flags a node whose recorded dtype differs from what its rule produced; 'cast'
    casts to the recorded dtype."""
    gm, inputs, _ = one_op_graph(aten.add.Tensor, (R(3), R(3)))
    node = next(n for n in gm.graph.nodes if n.op == "call_function" and n.target is aten.add.Tensor)
    node.meta["val"] = torch.empty(3, dtype=torch.float64)
    with pytest.raises(BackendError, match="float64"):
        xl.run_lowered(gm, inputs, dtype_check="raise", compiler_options=FAST)
    (out,) = xl.run_lowered(gm, inputs, dtype_check="cast", compiler_options=FAST)
    assert out.dtype == torch.float64


@pytest.mark.parametrize("dtype", [torch.bool, torch.int64, torch.int32, torch.uint8, torch.float16,
                                   torch.bfloat16, torch.float32, torch.float64])
def test_to_jax_to_torch_roundtrip(dtype):
    """to_jax/to_torch keep dtype, shape and values (0-d, empty and non-contiguous tensors too)."""
    for t in (R(3, 4).mul(3).to(dtype), R(3, 4).mul(3).to(dtype).t(), torch.tensor(1).to(dtype),
              torch.empty(0, 2, dtype=dtype)):
        a = xl.to_jax(t)
        assert a.dtype == xl.ops.jdtype(dtype) and a.shape == tuple(t.shape)
        back = xl.to_torch(a)
        assert back.dtype == dtype and torch.equal(back, t)


def test_int64_beyond_int32_is_exact():
    """int64 values beyond 2**31 survive arithmetic (jax_enable_x64, no int32 cast)."""
    big = torch.tensor([2**40 + 3, -(2**35)], dtype=torch.int64)
    check(aten.mul.Tensor, (big, 3))


def test_supported_ops_are_packet_names():
    """supported_ops() lists ATen packet names, including the issue's list."""
    names = xl.supported_ops()
    for op in ("addmm", "convolution", "_embedding_bag", "index_put", "scatter_reduce", "topk", "sym_size"):
        assert op in names
    assert "getitem" not in names and "cummax" not in names


def test_fxopt_imports_without_jax():
    """fxopt (and fxopt.backends.xla itself) import without importing jax."""
    code = "import sys, fxopt, fxopt.backends.xla; print('jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
