"""The XLA lowering of ``aten.searchsorted`` (fxopt.backends.xla.ops) against ``torch.searchsorted``: left and
right (``right=`` and ``side=``), 1-D and batched (N-D) sorted sequences, int64 and ``out_int32`` results, a
``sorter``, mixed dtypes; one-op graphs and a captured model, with ``dtype_check="raise"`` (each node's dtype and
shape must be what torch recorded). Results are indices: compared exactly."""
from __future__ import annotations

import pytest
import torch

jax = pytest.importorskip("jax")
pytestmark = pytest.mark.numerics

import fxopt  # noqa: E402
from fxopt.backends.xla import lower as xl  # noqa: E402
from fxopt.ir.targets import xla_ops  # noqa: E402

aten = torch.ops.aten
FAST = {"xla_backend_optimization_level": 0}


def _lowered(target, args, kwargs):
    """Run ``target(*args, **kwargs)`` as a one-op FX graph (tensor args as placeholders) through the XLA
    lowering; returns (got, expected)."""
    g = torch.fx.Graph()
    inputs: list[torch.Tensor] = []

    def ph(v):
        if isinstance(v, torch.Tensor):
            node = g.placeholder(f"x{len(inputs)}")
            node.meta["val"] = v
            inputs.append(v)
            return node
        return v

    node = g.call_function(target, tuple(ph(a) for a in args), {k: ph(v) for k, v in kwargs.items()})
    expected = target(*args, **kwargs)
    node.meta["val"] = expected
    g.output((node,))
    gm = torch.fx.GraphModule(torch.nn.Module(), g)
    (got,) = xl.run_lowered(gm, inputs, dtype_check="raise", compiler_options=FAST)
    return got, expected


def _assert_equal(got, want):
    assert got.dtype == want.dtype and tuple(got.shape) == tuple(want.shape), (got.dtype, got.shape, want.shape)
    assert torch.equal(got, want), (got, want)


def _sorted(*shape, dtype=torch.float32, seed=0, ties=False):
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, 6, shape, generator=g).to(dtype) if ties else torch.randn(*shape, generator=g).to(dtype)
    return t.sort(dim=-1).values


def _values(*shape, dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * 1.5).to(dtype) if dtype.is_floating_point else \
        torch.randint(-1, 7, shape, generator=g).to(dtype)


CASES = {
    "1d": (_sorted(17), _values(5, 3)),
    "1d_ties_int": (_sorted(12, dtype=torch.int64, ties=True), _values(9, dtype=torch.int64)),
    "1d_values_hit_boundaries": (torch.tensor([0., 1., 1., 1., 2., 5.]), torch.tensor([1., 0., 5., 2., 9., -1.])),
    "2d": (_sorted(4, 10), _values(4, 6)),
    "2d_ties_int": (_sorted(3, 8, dtype=torch.int64, ties=True), _values(3, 5, dtype=torch.int64)),
    "3d": (_sorted(2, 3, 7), _values(2, 3, 4)),
    "mixed_dtypes": (_sorted(9, dtype=torch.int64, ties=True), _values(4)),
}


@pytest.mark.parametrize("out_int32", [False, True], ids=["int64", "int32"])
@pytest.mark.parametrize("right", [False, True], ids=["left", "right"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_searchsorted_matches_torch(case, right, out_int32):
    seq, values = CASES[case]
    _assert_equal(*_lowered(aten.searchsorted.Tensor, (seq, values), {"right": right, "out_int32": out_int32}))


@pytest.mark.parametrize("side", ["left", "right"])
def test_side_keyword_overrides_right(side):
    seq, values = CASES["1d_ties_int"]
    got, want = _lowered(aten.searchsorted.Tensor, (seq, values), {"side": side})
    _assert_equal(got, want)
    _assert_equal(got, torch.searchsorted(seq, values, right=side == "right"))


@pytest.mark.parametrize("case", ["1d", "2d"])
def test_sorter_gives_indices_into_the_sorted_order(case):
    seq, values = CASES[case]
    shuffled = seq[..., torch.randperm(seq.shape[-1], generator=torch.Generator().manual_seed(3))]
    sorter = shuffled.argsort(dim=-1)
    _assert_equal(*_lowered(aten.searchsorted.Tensor, (shuffled, values), {"sorter": sorter, "right": True}))


def test_scalar_value():
    seq = _sorted(11)
    _assert_equal(*_lowered(aten.searchsorted.Scalar, (seq, 0.25), {"out_int32": True}))


def test_a_captured_model_lowers_and_is_in_the_xla_table():
    class Bucketize(torch.nn.Module):
        def forward(self, boundaries, x, rows, y):
            return (torch.searchsorted(boundaries, x, right=True),
                    torch.searchsorted(rows, y, out_int32=True))

    args = (_sorted(8), _values(3, 5), _sorted(3, 6), _values(3, 4))
    prog = fxopt.capture(Bucketize(), args)
    targets = {n.target for n in prog.graph.nodes if n.op == "call_function"}
    assert aten.searchsorted.Tensor in targets
    assert xl.unsupported_nodes(prog.graph_module) == []
    got = xl.run_lowered(prog.graph_module, prog.flat_example_inputs(), dtype_check="raise", compiler_options=FAST)
    want = prog.run_flat(prog.flat_example_inputs())
    for g, w in zip(got, want):
        _assert_equal(g, w)
    assert "searchsorted" in xla_ops()   # split{target=xla} plans it on the accelerator

