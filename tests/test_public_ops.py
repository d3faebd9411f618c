"""backends/public_ops: every listed public binding dispatches exactly its overload, with identical results."""
from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fxopt.backends.public_ops import PUBLIC_BINDINGS, public_binding

aten = torch.ops.aten


def _t(*shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    if dtype.is_floating_point:
        return torch.randn(*shape, generator=g, dtype=dtype)
    return torch.randint(0, 4, shape, generator=g, dtype=dtype)


# one call per entry, in the form FX graphs make it: (args, kwargs)
SAMPLES = {
    "aten::view.default": lambda: ((_t(3, 4), [12]), {}),
    "aten::permute.default": lambda: ((_t(3, 4), [1, 0]), {}),
    "aten::unsqueeze.default": lambda: ((_t(3, 4), -1), {}),
    "aten::squeeze.dims": lambda: ((_t(3, 1, 4), [1]), {}),
    "aten::expand.default": lambda: ((_t(1, 4), [3, 4]), {}),
    "aten::select.int": lambda: ((_t(3, 4), 0, 1), {}),
    "aten::clone.default": lambda: ((_t(3, 4),), {"memory_format": torch.contiguous_format}),
    "aten::mm.default": lambda: ((_t(3, 4), _t(4, 5, seed=1)), {}),
    "aten::addmm.default": lambda: ((_t(5), _t(3, 4), _t(4, 5, seed=1)), {}),
    "aten::bmm.default": lambda: ((_t(2, 3, 4), _t(2, 4, 5, seed=1)), {}),
    "aten::baddbmm.default": lambda: ((_t(2, 1, 5), _t(2, 3, 4), _t(2, 4, 5, seed=1)), {}),
    "aten::convolution.default": lambda: ((_t(1, 2, 5, 5), _t(3, 2, 3, 3, seed=1), _t(3), [1, 1], [1, 1], [1, 1],
                                           False, [0, 0], 1), {}),
    "aten::add.Tensor": lambda: ((_t(3, 4), 2), {"alpha": 3}),
    "aten::sub.Tensor": lambda: ((_t(3, 4), _t(4, seed=1)), {}),
    "aten::mul.Tensor": lambda: ((torch.tensor(3, dtype=torch.int32), 16), {}),
    "aten::div.Tensor": lambda: ((_t(3, 4), 8.0), {}),
    "aten::add_.Tensor": lambda: ((_t(3, 4), _t(3, 4, seed=1)), {}),
    "aten::sub_.Tensor": lambda: ((_t(3, 4), 1), {}),
    "aten::mul_.Tensor": lambda: ((_t(3, 4), _t(4, seed=1)), {}),
    "aten::div_.Tensor": lambda: ((_t(3, 4), 2.0), {}),
    "aten::remainder.Scalar": lambda: ((_t(6, dtype=torch.int64), 2), {}),
    "aten::neg.default": lambda: ((_t(3, 4),), {}),
    "aten::exp.default": lambda: ((_t(3, 4),), {}),
    "aten::tanh.default": lambda: ((_t(3, 4),), {}),
    "aten::sigmoid.default": lambda: ((_t(3, 4),), {}),
    "aten::rsqrt.default": lambda: ((_t(3, 4).abs(),), {}),
    "aten::pow.Tensor_Scalar": lambda: ((_t(3, 4), 2), {}),
    "aten::relu.default": lambda: ((_t(3, 4),), {}),
    "aten::relu_.default": lambda: ((_t(3, 4),), {}),
    "aten::gelu.default": lambda: ((_t(3, 4),), {"approximate": "tanh"}),
    "aten::gelu_.default": lambda: ((_t(3, 4),), {}),
    "aten::clamp.default": lambda: ((_t(3, 4), -0.5, 0.5), {}),
    "aten::clamp_.default": lambda: ((_t(3, 4), 0), {}),
    "aten::_softmax.default": lambda: ((_t(3, 4), -1, False), {}),
    "aten::native_layer_norm.default": lambda: ((_t(3, 4), [4], _t(4, seed=1), _t(4, seed=2), 1e-5), {}),
    "aten::_native_batch_norm_legit_no_training.default":
        lambda: ((_t(2, 3, 4), _t(3, seed=1), _t(3, seed=2), _t(3, seed=3), _t(3, seed=4).abs(), 0.1, 1e-5), {}),
    "aten::eq.Scalar": lambda: ((_t(6, dtype=torch.int64), 2), {}),
    "aten::eq.Tensor": lambda: ((_t(6, dtype=torch.int64), _t(6, dtype=torch.int64, seed=1)), {}),
    "aten::ne.Scalar": lambda: ((_t(6, dtype=torch.int64), 0), {}),
    "aten::lt.Scalar": lambda: ((_t(6, dtype=torch.int64), 2), {}),
    "aten::ge.Scalar": lambda: ((_t(6, dtype=torch.int64), 1), {}),
    "aten::gt.Scalar": lambda: ((_t(3, 4), 0.0), {}),
    "aten::where.self": lambda: ((_t(3, 4) > 0, _t(3, 4, seed=1), _t(3, 4, seed=2)), {}),
    "aten::logical_and.default": lambda: ((_t(3, 4) > 0, _t(3, 4, seed=1) > 0), {}),
    "aten::bitwise_or.Tensor": lambda: ((_t(3, 4) > 0, _t(3, 4, seed=1) > 0), {}),
    "aten::sum.dim_IntList": lambda: ((_t(3, 4), [0]), {"keepdim": True}),
    "aten::mean.dim": lambda: ((_t(3, 4), [-1], True), {}),
    "aten::max.default": lambda: ((_t(3, 4),), {}),
    "aten::argmax.default": lambda: ((_t(3, 4), 1), {}),
    "aten::topk.default": lambda: ((_t(5, 8), 2), {}),
    "aten::sort.stable": lambda: ((_t(9, dtype=torch.int64),), {"stable": True, "dim": 0}),
    "aten::searchsorted.Tensor": lambda: ((torch.tensor([0, 0, 1, 3]), torch.arange(4)), {"right": True}),
    "aten::index_select.default": lambda: ((_t(5, 3), 0, torch.tensor([4, 0, 0])), {}),
    "aten::index_copy.default": lambda: ((_t(5, 3), 0, torch.tensor([4, 0]), _t(2, 3, seed=1)), {}),
    "aten::index_copy_.default": lambda: ((_t(5, 3), 0, torch.tensor([4, 0]), _t(2, 3, seed=1)), {}),
    "aten::index_add.default": lambda: ((_t(5, 3), 0, torch.tensor([4, 4]), _t(2, 3, seed=1)), {}),
    "aten::embedding.default": lambda: ((_t(10, 3), torch.tensor([[1, 9], [0, 0]])), {}),
    "aten::_embedding_bag.default": lambda: ((_t(10, 3), torch.tensor([1, 9, 0]), torch.tensor([0, 2]),
                                              False, 0), {}),
    "aten::cat.default": lambda: (([_t(2, 3), _t(1, 3, seed=1)],), {}),
    "aten::full.default": lambda: (([3], -1), {"dtype": torch.int64, "device": torch.device("cpu"),
                                               "pin_memory": False}),
    "aten::nonzero.default": lambda: ((_t(3, 4) > 0,), {}),
    "aten::_local_scalar_dense.default": lambda: ((torch.tensor(7),), {}),
    "aten::sym_size.int": lambda: ((_t(3, 4), 1), {}),
}

# entries whose binding never reaches the dispatcher (a Python-level size lookup)
NOT_DISPATCHED = {"aten::sym_size.int"}


class _Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: list = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func)
        return func(*args, **(kwargs or {}))


def _overload(qualified: str):
    name, overload = qualified.split("::")[1].split(".")
    return getattr(getattr(aten, name), overload)


def _same(a, b) -> bool:
    if isinstance(a, (tuple, list)):
        # a binding returns ``torch.return_types.sort`` where the handle returns a tuple: both index alike
        return isinstance(b, (tuple, list)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride() and torch.equal(a, b)
    return a == b and type(a) is type(b)


def test_every_binding_has_a_sample():
    assert set(SAMPLES) == set(PUBLIC_BINDINGS)


@pytest.mark.parametrize("qualified", sorted(PUBLIC_BINDINGS))
def test_binding_dispatches_exactly_its_overload_with_identical_results(qualified):
    op = _overload(qualified)
    binding = public_binding(op)
    assert binding is not None
    args, kwargs = SAMPLES[qualified]()
    expected = op._op(*args, **kwargs)
    args, kwargs = SAMPLES[qualified]()            # fresh inputs: in-place entries write their first one
    recorder = _Recorder()
    with recorder:
        got = binding(*args, **kwargs)
    assert recorder.ops == ([] if qualified in NOT_DISPATCHED else [op])
    assert _same(got, expected)


def test_unlisted_overloads_and_non_ops_have_no_binding():
    assert public_binding(aten.arange.start_step) is None      # torch.arange(0, n) is arange.start
    assert public_binding(aten.div.Scalar_mode) is None        # torch.div picks div.Tensor_mode
    assert public_binding(len) is None
