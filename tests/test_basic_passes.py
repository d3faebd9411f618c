"""dce, fold-constants and canonicalize on real captured graphs: Before → Expected ops, numerics, idempotence."""
from __future__ import annotations

import torch

import fxopt
from fxopt.passes.canonicalize import Canonicalize
from fxopt.passes.dce import DeadCodeElimination
from fxopt.passes.fold_constants import FoldConstants

from rewriting import op_list
from conftest import captured


def _run(pass_, program):
    """Run a pass on a copy; return (copy, result)."""
    work = program.copy()
    result = pass_.run(work)
    work.dirty = True
    return work, result


class Copies(torch.nn.Module):
    def forward(self, x):
        y = x.view(x.shape).clone() * 1          # no-op view, copy and multiply
        y = y.permute(1, 0).permute(1, 0) + 0      # permutes that cancel, add zero
        z = y.view(2, 6).view(3, 4)                # view chain
        return z.relu() / 1


def test_canonicalize_removes_noops():
    inputs = (torch.randn(3, 4),)
    program = fxopt.capture(Copies(), inputs)
    # Before: the captured graph keeps every no-op
    assert op_list(program) == ["view", "clone", "mul", "permute", "permute", "add", "view", "view", "relu", "div"]
    after, result = _run(Canonicalize(), program)
    # Expected: the view chain collapses to view(x, (3, 4)), itself a no-op: only the relu is left
    assert op_list(after) == ["relu"]
    assert result.modified and result.details["rules"]["mul-one"] == 1
    torch.testing.assert_close(after(*inputs), Copies()(*inputs))


def test_canonicalize_is_idempotent():
    program = fxopt.capture(Copies(), (torch.randn(3, 4),))
    once, _ = _run(Canonicalize(), program)
    twice, result = _run(Canonicalize(), once)
    assert not result.modified and op_list(twice) == op_list(once)


def test_canonicalize_keeps_a_copy_that_is_returned():
    class ReturnsCopy(torch.nn.Module):
        def forward(self, x):
            return x, x.clone()

    program = fxopt.capture(ReturnsCopy(), (torch.randn(2),))
    after, result = _run(Canonicalize(), program)
    assert not result.modified and "clone" in op_list(after)
    a, b = after(torch.ones(2))
    assert a.data_ptr() != b.data_ptr()


def test_canonicalize_keeps_dtype_changing_arithmetic():
    class IntTimesFloatOne(torch.nn.Module):
        def forward(self, x):
            return x * 1.0  # int64 * 1.0 promotes to float: not a no-op

    program = fxopt.capture(IntTimesFloatOne(), (torch.arange(4),))
    after, result = _run(Canonicalize(), program)
    assert not result.modified and after(torch.arange(4)).dtype == torch.float32


class DeadWork(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.used = torch.nn.Linear(4, 4)
        self.unused = torch.nn.Linear(4, 64)

    def forward(self, x):
        self.unused(x).sigmoid()  # computed, never used
        return self.used(x)


def test_dce_removes_dead_chains_and_their_weights():
    inputs = (torch.randn(2, 4),)
    program = fxopt.capture(DeadWork(), inputs)
    # torch.export already drops unused pure ops; put a dead chain back to check dce on its own
    graph = program.graph
    x = program.placeholders()[0]
    out = program.output_node()
    with graph.inserting_before(out):
        w = graph.get_attr("used.weight")
        dead = graph.call_function(torch.ops.aten.mul.Tensor, (x, 3.0))
        graph.call_function(torch.ops.aten.add.Tensor, (dead, w))
    extra = torch.randn(64, 4)
    program.graph_module.register_buffer("orphan", extra)
    with graph.inserting_before(out):
        graph.call_function(torch.ops.aten.sum.default, (graph.get_attr("orphan"),))
    after, result = _run(DeadCodeElimination(), program)
    assert result.details["nodes_removed"] == 5
    assert result.details["weight_bytes_freed"] == extra.numel() * 4  # used.weight is still live
    assert not hasattr(after.graph_module, "orphan")


def test_dce_keeps_mutations():
    class Mutates(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("count", torch.zeros(1))

        def forward(self, x):
            self.count.add_(1)
            return x * 2

    program = fxopt.capture(Mutates(), (torch.randn(2),))
    before = op_list(program)
    after, _ = _run(DeadCodeElimination(), program)
    assert op_list(after) == before


class ScaledWeights(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(8, 8))
        self.scale = torch.nn.Parameter(torch.randn(8))

    def forward(self, x):
        w = self.w * self.scale.exp() + 1.0     # weight-only: foldable
        return x @ w.t() + self.w.sum()


def test_fold_constants_folds_weight_only_work():
    torch.manual_seed(0)
    model = ScaledWeights().eval()
    inputs = (torch.randn(3, 8),)
    program = fxopt.capture(model, inputs)
    assert {"exp", "mul", "add", "sum.dim_IntList"} <= set(op_list(program))
    after, result = _run(FoldConstants(), program)
    assert "exp" not in op_list(after) and "sum.dim_IntList" not in op_list(after)
    assert result.details["nodes_folded"] == 2  # the scaled weight and the scalar sum
    torch.testing.assert_close(after(*inputs), model(*inputs))
    again, second = _run(FoldConstants(), after)
    assert not second.modified


def test_fold_constants_keeps_layout_ops_of_weights():
    model, inputs, program = captured("block")
    after, result = _run(FoldConstants(), program)
    assert not result.modified  # permute(weight) feeding addmm stays: it is free and marks a linear
    assert op_list(after).count("permute") == op_list(program).count("permute")


def test_fold_constants_skips_results_larger_than_inputs():
    class Expands(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.b = torch.nn.Parameter(torch.randn(1, 64))

        def forward(self, x):
            return x + (self.b * 2).repeat(512, 1)[: x.shape[0]]

    program = fxopt.capture(Expands(), (torch.randn(4, 64),))
    after, result = _run(FoldConstants(), program)
    assert "repeat" in op_list(after)  # 512x larger than its input: not stored
    assert result.details["nodes_folded"] == 1  # only b * 2


def test_default_pipeline_on_transformer_encoder_keeps_numerics():
    model, inputs, program = captured("encoder")
    optimized = fxopt.optimize(program, "canonicalize,fold-constants,dce")
    torch.testing.assert_close(optimized(*inputs), model(*inputs))
    assert optimized.num_nodes() <= program.num_nodes()


def test_canonicalize_keeps_contiguous_copy_of_a_graph_input():
    class Flattens(torch.nn.Module):
        def forward(self, x):
            return x.clone(memory_format=torch.contiguous_format).view(-1)

    program = fxopt.capture(Flattens(), (torch.randn(4, 4),))
    after, result = _run(Canonicalize(), program)
    assert not result.modified  # the example was contiguous, but a caller may pass a transposed tensor
    x = torch.randn(4, 4).t()
    torch.testing.assert_close(after(x), x.reshape(-1))
