"""Tests for ``fxopt bisect`` (fxopt.tools.bisect): a deliberately broken pass, registered for the test, in a
pipeline of real passes on a real captured transformer block; the bisect must name it."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import fxopt
from fxopt.backends import base as backends_base
from fxopt.backends.reference import ReferenceBackend
from fxopt.errors import BackendError
from fxopt.passes.base import Pass, PassResult
from fxopt.passes.registry import register_pass, unregister_pass
from fxopt.tools.bisect import bisect_pipeline, node_diff
from fxopt.tools.cli import main

CONFTEST = __file__.replace("test_bisect.py", "conftest.py")
MODEL = f"{CONFTEST}:AttentionBlock"


@dataclass(frozen=True)
class GeluToRelu(Pass):
    """Rewrite the first gelu as relu (wrong: changes numerics a little)."""

    name = "test-gelu-to-relu"

    def run(self, program):
        for node in program.graph.nodes:
            if node.op == "call_function" and node.target is torch.ops.aten.gelu.default:
                node.target = torch.ops.aten.relu.default
                node.args = node.args[:1]
                node.kwargs = {}
                return PassResult(modified=True)
        return PassResult(modified=False)


@dataclass(frozen=True)
class AddAbsZero(Pass):
    """Wrap the first output as ``out + abs(out) * 0`` (numerically harmless, but adds aten.abs)."""

    name = "test-add-abs-zero"

    def run(self, program):
        graph = program.graph
        out = program.output_node()
        first = out.args[0][0]
        with graph.inserting_before(out):
            a = graph.call_function(torch.ops.aten.abs.default, (first,))
            z = graph.call_function(torch.ops.aten.mul.Tensor, (a, 0.0))
            s = graph.call_function(torch.ops.aten.add.Tensor, (first, z))
        out.args = ((s,) + tuple(out.args[0][1:]),)
        return PassResult(modified=True)


class NoAbsBackend(ReferenceBackend):
    """A strict backend that refuses graphs containing aten.abs."""

    name = "test-no-abs"

    def compile(self, program):
        for node in program.graph.nodes:
            if node.op == "call_function" and node.target is torch.ops.aten.abs.default:
                raise BackendError(f"test-no-abs: node '{node.name}' uses aten::abs, which it does not support")
        return super().compile(program)


@pytest.fixture
def broken_passes():
    register_pass(GeluToRelu)
    register_pass(AddAbsZero)
    backends_base.register_backend("test-no-abs", NoAbsBackend)
    try:
        yield
    finally:
        unregister_pass(GeluToRelu.name)
        unregister_pass(AddAbsZero.name)
        backends_base.BACKENDS.unregister("test-no-abs")


@pytest.fixture(scope="module")
def block_program():
    from conftest import captured

    return captured("block")[2]


PIPELINE = "canonicalize,fold-constants,dedupe,test-gelu-to-relu,moe,dce"


def test_bisect_names_the_broken_pass(block_program, broken_passes):
    result = bisect_pipeline(block_program, PIPELINE)
    assert result.first_bad == 4 and result.spec == "test-gelu-to-relu"
    assert result.verdict.max_error > 1e-3
    assert result.steps <= 5  # binary search over 6 applications, not a linear scan


def test_bisect_diff_shows_the_changed_node(block_program, broken_passes):
    diff = bisect_pipeline(block_program, PIPELINE).diff
    assert not diff.removed and not diff.added
    assert len(diff.changed) == 1
    before, after = diff.changed[0]
    assert "gelu" in before and "relu" in after


def test_bisect_leaves_the_program_unchanged(block_program, broken_passes):
    code = block_program.graph_module.code
    bisect_pipeline(block_program, PIPELINE)
    assert block_program.graph_module.code == code


def test_good_pipeline_finds_nothing(block_program):
    result = bisect_pipeline(block_program, "canonicalize,fold-constants,dedupe,moe,dce")
    assert result.first_bad is None and result.steps == 1


def test_backend_failure_is_bisected(block_program, broken_passes):
    result = bisect_pipeline(block_program, "canonicalize,test-add-abs-zero,dedupe,dce", backend="test-no-abs")
    assert result.first_bad == 2 and result.spec == "test-add-abs-zero"
    assert "fails to compile" in result.verdict.reason
    assert [t for t in result.diff.added if "abs" in t]


def test_node_diff_counts_removed_nodes(block_program):
    after = fxopt.optimize(block_program, "canonicalize", verify=False)
    diff = node_diff(block_program, after)
    assert len(diff.removed) == block_program.num_nodes() - after.num_nodes() + len(diff.added)


def test_cli_bisect_prints_the_culprit_and_exits_1(broken_passes, capsys):
    code = main(["bisect", MODEL, "--passes", PIPELINE])
    out = capsys.readouterr().out
    assert code == 1
    assert "first bad pass application: #4 of 6: test-gelu-to-relu" in out
    assert "max abs error" in out and "relu" in out


def test_cli_bisect_clean_pipeline_exits_0(capsys):
    code = main(["bisect", MODEL, "--passes", "canonicalize,dce"])
    assert code == 0
    assert "no pass breaks numerics" in capsys.readouterr().out


def test_cli_bisect_loose_tolerance_accepts_the_change(broken_passes, capsys):
    assert main(["bisect", MODEL, "--passes", PIPELINE, "--atol", "100"]) == 0


def test_cli_bisect_unknown_pass_is_exit_2(capsys):
    assert main(["bisect", MODEL, "--passes", "canonicalize,no-such-pass"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown pass 'no-such-pass'" in err[0]
