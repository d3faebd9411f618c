"""ir/ops: ``fxopt::grouped_mm`` (a segment matmul): values, its fallback, shapes under FakeTensor, cost, and
saving/loading a graph that calls it."""
from __future__ import annotations

import pytest
import torch

import fxopt
from fxopt.ir.cost import graph_cost

grouped_mm = torch.ops.fxopt.grouped_mm.default


def _per_group(rows, weights, sizes):
    outs, start = [], 0
    for e, n in enumerate(sizes):
        outs.append(rows[start:start + n] @ weights[e])
        start += n
    return torch.cat(outs)


@pytest.mark.parametrize("dtype, width", [(torch.float32, 8), (torch.float32, 6), (torch.float64, 8)],
                         ids=["aten-kernel", "unaligned-fallback", "float64-fallback"])
def test_grouped_mm_multiplies_each_group_by_its_matrix(dtype, width):
    sizes = [3, 0, 5, 1]                      # an empty group in the middle
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(sum(sizes), width, generator=g, dtype=dtype)
    weights = torch.randn(len(sizes), width, 4 if dtype is torch.float64 else width, generator=g, dtype=dtype)
    ends = torch.tensor(sizes).cumsum(0).to(torch.int32)
    torch.testing.assert_close(grouped_mm(rows, weights, ends), _per_group(rows, weights, sizes))


def test_grouped_mm_shape_under_fake_tensors_keeps_a_symbolic_row_count():
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    mode = FakeTensorMode(shape_env=ShapeEnv())
    with mode:
        n = mode.shape_env.create_unbacked_symint()
        torch._check_is_size(n)
        rows = torch.empty(n, 8)
        out = grouped_mm(rows, torch.empty(4, 8, 16), torch.empty(4, dtype=torch.int32))
    assert out.shape[1] == 16 and str(out.shape[0]) == str(n)


def _graph_with_grouped_mm():
    graph = torch.fx.Graph()
    rows, ends = graph.placeholder("rows"), graph.placeholder("ends")
    weights = graph.get_attr("weights")
    graph.output((graph.call_function(grouped_mm, (rows, weights, ends)),))
    root = torch.nn.Module()
    root.register_buffer("weights", torch.randn(3, 8, 4))
    return torch.fx.GraphModule(root, graph)


def test_grouped_mm_is_costed_as_two_flops_per_multiply_add():
    gm = _graph_with_grouped_mm()
    from fxopt.ir.shapes import infer_missing

    for node, value in zip(gm.graph.nodes, (torch.empty(10, 8), torch.empty(3, dtype=torch.int32))):
        node.meta["val"] = value
    infer_missing(gm)
    assert int(graph_cost(gm).flops) == 2 * 10 * 8 * 4


def test_a_graph_calling_grouped_mm_saves_and_loads(tmp_path):
    from fxopt.ir import serialize

    gm = _graph_with_grouped_mm()
    serialize.save_graph_module(gm, tmp_path, stem="g")
    loaded = serialize.load_graph_module(tmp_path, stem="g")
    rows, ends = torch.randn(6, 8), torch.tensor([2, 2, 6], dtype=torch.int32)
    torch.testing.assert_close(loaded(rows, ends)[0], gm(rows, ends)[0])


@pytest.mark.parametrize("target", ["neuron", "tensorrt"])
def test_fixed_shape_targets_do_not_claim_grouped_mm(target):
    from fxopt.ir.targets import support_table

    node = next(n for n in _graph_with_grouped_mm().graph.nodes if n.op == "call_function")
    assert support_table(target).why_not(node) == \
        f"fxopt::grouped_mm is not an ATen op, and {target} has no rule for it"


def test_the_xla_target_claims_grouped_mm_its_lowering_has_a_rule_for():
    from fxopt.ir.targets import support_table

    node = next(n for n in _graph_with_grouped_mm().graph.nodes if n.op == "call_function")
    assert support_table("xla").why_not(node) is None
