"""The shared numerics rule (fxopt.ir.numerics): what two runs of one graph may differ by, and how deep a graph
is in roundings."""
from __future__ import annotations

import math

import pytest
import torch

import fxopt
from fxopt.ir import numerics
from fxopt.ir.numerics import K, first_difference, output_depths, tolerance

pytestmark = pytest.mark.numerics
EPS32 = torch.finfo(torch.float32).eps


# ------------------------------------------------------------------------------------------ the rule
def test_tolerance_is_k_eps_sqrt_depth_times_magnitude_at_least_one():
    assert tolerance(torch.float32, 4.0, 16) == pytest.approx(K * EPS32 * 4 * 4)
    assert tolerance(torch.float32, 0.01, 16) == pytest.approx(K * EPS32 * 4)      # magnitude floor 1
    assert tolerance(torch.float16, 1.0, 1) == pytest.approx(numerics.K_HALF * torch.finfo(torch.float16).eps)
    assert tolerance(torch.float32, 1.0, 0) == tolerance(torch.float32, 1.0, 1)    # depth floor 1


def test_float_error_just_inside_the_tolerance_passes_and_just_outside_fails():
    want = torch.tensor([[3.0, -2.0], [0.5, 1.0]])
    tol = tolerance(torch.float32, 3.0, 100)
    assert first_difference((want,), (want + 0.9 * tol,), 100) is None
    problem = first_difference((want,), (want + 1.1 * tol,), 100)
    assert problem.startswith("output 0: max abs error") and "sqrt(depth 100)" in problem


def test_a_deeper_graph_allows_more_rounding():
    want = torch.ones(8)
    got = want + 4 * tolerance(torch.float32, 1.0, 1)
    assert first_difference((want,), (got,), 1) is not None
    assert first_difference((want,), (got,), 25) is None          # sqrt(25) = 5 > 4


def test_half_precision_counts_ops_not_terms_and_stays_strict():
    """bfloat16 rounds once per op (float32 inside): a 100-term reduction is one rounding, and an output that
    a broken pass zeroed or scaled by 1.25 is a difference however deep the graph."""
    deep = numerics.Depth(5000, ops=40)
    assert tolerance(torch.bfloat16, 3.0, deep) == pytest.approx(
        numerics.K_HALF * torch.finfo(torch.bfloat16).eps * math.sqrt(40) * 3.0)
    want = torch.linspace(-3, 3, 64, dtype=torch.bfloat16)
    assert first_difference((want,), (torch.zeros_like(want),), deep) is not None
    assert first_difference((want,), (want * 1.25,), deep) is not None
    one_ulp = want + want.abs().clamp_min(1) * torch.finfo(torch.bfloat16).eps
    assert first_difference((want,), (one_ulp,), deep) is None


def test_depth_has_both_counts_and_a_deeper_one_takes_the_larger_of_each():
    a, b = numerics.Depth(100, ops=3), numerics.Depth(10, ops=9)
    assert a == 100 and a.ops == 3
    assert numerics.deeper(a, b) == 100 and numerics.deeper(a, b).ops == 9


def test_integer_and_bool_outputs_must_match_exactly():
    want = torch.arange(6)
    got = want.clone()
    got[3] += 1
    assert first_difference((want,), (got,), 10 ** 6) == \
        "output 0: 1 of 6 torch.int64 values differ (exact match required)"
    assert first_difference((torch.tensor([True, False]),), (torch.tensor([True, True]),), 10 ** 6) is not None


def test_nan_must_meet_nan_and_infinities_must_match():
    want = torch.tensor([1.0, float("nan"), float("inf")])
    assert first_difference((want,), (want.clone(),)) is None
    assert "NaN in only one" in first_difference((want,), (torch.tensor([1.0, 2.0, float("inf")]),))
    assert "infinities differ" in first_difference((want,), (torch.tensor([1.0, float("nan"), -float("inf")]),))
    assert "infinities differ" in first_difference((want,), (torch.tensor([1.0, float("nan"), 3e38]),))


def test_dtype_shape_and_count_changes_are_differences():
    x = torch.ones(2, 3)
    assert first_difference((x,), (x.double(),)) == "output 0: dtype changed from torch.float32 to torch.float64"
    assert first_difference((x,), (x.reshape(3, 2),)) == "output 0: shape changed from (2, 3) to (3, 2)"
    assert first_difference((x,), (x, x)) == "the graph now has 2 outputs instead of 1"
    assert first_difference((x, 3), (x, 4)) == "output 1: expected 3, got 4"


def test_each_output_is_judged_at_its_own_depth():
    want = (torch.zeros(4), torch.zeros(4))
    off = tolerance(torch.float32, 0.0, 9) * 2       # beyond depth 9, within depth 100
    got = (want[0] + off, want[1] + off)
    assert first_difference(want, got, [100, 100]) is None
    assert first_difference(want, got, [100, 9]).startswith("output 1:")


def test_assert_outputs_close_flattens_nested_outputs():
    want = {"a": torch.ones(2), "b": (torch.zeros(3), torch.arange(2))}
    numerics.assert_outputs_close({"a": torch.ones(2), "b": (torch.zeros(3), torch.arange(2))}, want)
    with pytest.raises(AssertionError, match="output 2: 1 of 2"):
        numerics.assert_outputs_close({"a": torch.ones(2), "b": (torch.zeros(3), torch.tensor([0, 5]))}, want)


def test_max_abs_error_counts_nan_meeting_nan_as_zero():
    nan = float("nan")
    assert numerics.max_abs_error([torch.tensor([1.0, nan])], [torch.tensor([1.5, nan])]) == 0.5
    assert numerics.max_abs_error([torch.tensor([1.0, nan])], [torch.tensor([1.0, 0.0])]) == math.inf
    assert numerics.max_abs_error([torch.ones(2)], [torch.ones(3)]) == math.inf


def test_max_abs_error_counts_equal_infinities_as_zero():
    # an attention mask's -inf entries, equal on both sides (inf - inf is NaN, not a difference)
    inf = float("inf")
    assert numerics.max_abs_error([torch.tensor([-inf, 1.0, inf])], [torch.tensor([-inf, 1.25, inf])]) == 0.25
    assert numerics.max_abs_error([torch.tensor([-inf])], [torch.tensor([inf])]) == math.inf


# ------------------------------------------------------------------------------------------ depths
class _LinearReluScale(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        return (self.fc(x).relu() * 2.0).reshape(-1)


def test_depth_counts_a_matmuls_inner_dimension_and_skips_views_and_relu():
    """addmm over 8 terms (+1 for the bias add), relu exact, mul 1, reshape/permute views 0: depth 10."""
    torch.manual_seed(0)
    program = fxopt.capture(_LinearReluScale().eval(), (torch.randn(3, 8),))
    (depth,) = output_depths(program.graph_module)
    assert depth == 10 and depth.ops == 2     # addmm and mul round; permute, relu and the view do not


def test_depth_counts_a_convolutions_terms_per_output():
    """Conv2d(3 -> 5, 3x3): each output sums 3*3*3 = 27 products."""
    torch.manual_seed(0)
    program = fxopt.capture(torch.nn.Conv2d(3, 5, 3).eval(), (torch.randn(1, 3, 8, 8),))
    assert output_depths(program.graph_module) == [27]


def test_depth_counts_the_elements_a_reduction_or_softmax_reduces():
    class Reduce(torch.nn.Module):
        def forward(self, x):
            return x.sum(-1), x.softmax(-1), x.mean()

    program = fxopt.capture(Reduce(), (torch.randn(4, 6),))
    sum_depth, softmax_depth, mean_depth = output_depths(program.graph_module)
    assert sum_depth == 6 and mean_depth == 24
    assert softmax_depth >= 6      # torch.export keeps _softmax (6 terms) or decomposes it into a longer chain


def test_depth_of_a_dynamic_batch_reads_example_sizes_without_guarding():
    model = _LinearReluScale().eval()
    program = fxopt.capture(model, (torch.randn(3, 8),), dynamic_shapes="batch")
    env = next(n.meta["val"].fake_mode.shape_env for n in program.graph.nodes
               if isinstance(n.meta.get("val"), torch.Tensor))
    guards = len(env.guards)
    assert output_depths(program.graph_module) == [10]
    assert len(env.guards) == guards


def test_verifier_uses_the_rule_and_names_the_pass():
    """A pass that perturbs the output by 1e-3 (far beyond K*eps*sqrt(10)) fails verification naming it."""
    from dataclasses import dataclass

    from fxopt.errors import VerificationError
    from fxopt.passes.base import Pass, PassResult

    @dataclass(frozen=True)
    class Nudge(Pass):
        name = "nudge"

        def run(self, program):
            out = next(n for n in program.graph.nodes if n.op == "output")
            value = out.args[0][0]
            with program.graph.inserting_before(out):
                nudged = program.graph.call_function(torch.ops.aten.add.Scalar, (value, 1e-3))
            out.args = ((nudged,),)
            return PassResult(modified=True)

    torch.manual_seed(0)
    program = fxopt.capture(_LinearReluScale().eval(), (torch.randn(3, 8),))
    with pytest.raises(VerificationError, match=r"pass 'nudge' changed the numerics: output 0: max abs error"):
        fxopt.optimize(program, [Nudge()])
