"""Tests for fuzz campaigns (fxopt.tools.fuzz) and the moved generator (fxopt.tools.graphgen).

Bounded: a handful of real random programs through every registered pass; deliberately broken passes
(registered for the test) must be caught — numerics, idempotence, "said unchanged but changed" — and written
as reproducers. Long campaigns are ``python -m fxopt.tools.fuzz`` (docs/reliability.md)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import pytest
import torch
from hypothesis import HealthCheck, Phase, given, seed, settings

import fxopt
from fxopt.passes.base import Pass, PassResult
from fxopt.passes.registry import pass_names, register_pass, unregister_pass
from fxopt.tools import fuzz
from fxopt.tools.graphgen import ModelSpec, capture_spec, model_specs

REAL_PASSES = [name for name in pass_names() if not name.startswith("test-")]


def _apply_to_first_float_output(program, op, scalar) -> PassResult:
    """Replace the program's first output, when it is a float tensor, by ``op(output, scalar)``."""
    out = program.output_node()
    outs = list(out.args[0])
    if not outs or not isinstance(outs[0], torch.fx.Node) or not outs[0].meta["val"].dtype.is_floating_point:
        return PassResult(modified=False)
    with program.graph.inserting_before(out):
        outs[0] = program.graph.call_function(op, (outs[0], scalar))
    out.args = (tuple(outs),)
    return PassResult(modified=True)


@dataclass(frozen=True)
class ScaleFirstOutput(Pass):
    """Wrong on every program: multiplies the first output by 1.5."""

    name = "test-fuzz-scale"

    def run(self, program):
        return _apply_to_first_float_output(program, torch.ops.aten.mul.Tensor, 1.5)


@dataclass(frozen=True)
class GrowForever(Pass):
    """Numerically harmless but never done: adds ``+ 0.0`` to the first float output on every run."""

    name = "test-fuzz-grow"

    def run(self, program):
        return _apply_to_first_float_output(program, torch.ops.aten.add.Tensor, 0.0)


@dataclass(frozen=True)
class SilentChange(Pass):
    """Changes the graph (a dead node) but reports ``modified=False``."""

    name = "test-fuzz-silent"

    def run(self, program):
        first = next(n for n in program.graph.nodes if n.op == "placeholder")
        with program.graph.inserting_after(first):
            program.graph.call_function(torch.ops.aten.clone.default, (first,))
        return PassResult(modified=False)


@pytest.fixture
def broken():
    for cls in (ScaleFirstOutput, GrowForever, SilentChange):
        register_pass(cls)
    yield
    for cls in (ScaleFirstOutput, GrowForever, SilentChange):
        unregister_pass(cls.name)


# ------------------------------------------------------------------------------------------ real passes
def test_bounded_campaign_over_every_pass_finds_no_difference(tmp_path):
    result = fuzz.run_campaign(REAL_PASSES, 3, pipelines=True, seed=3, out=str(tmp_path), shrink=False)
    assert [f"{f.pass_spec}: {f.message}" for f in result.failures] == []
    assert result.programs == 3
    assert result.counts == {**{name: 3 for name in REAL_PASSES}, fuzz.PIPELINE: 3}
    assert os.listdir(tmp_path) == []


def test_regression_specs_pass_every_check():
    """Reproducers found by property tests, now fixed, through the campaign's checks."""
    spec = ModelSpec(inputs=(("x", (2, 3, 4), "float32"),),
                     init=("self.lin0 = nn.Linear(4, 2, bias=True)", "self.lin1 = nn.Linear(4, 3, bias=True)"),
                     body=("v0, v1 = self.lin0(x), self.lin1(x)", "v2 = v0.view(-1)"), outputs=("v2", "v1"))
    counts = {}
    fuzz.check_program(spec, REAL_PASSES, True, counts)
    assert counts == {**{name: 1 for name in REAL_PASSES}, fuzz.PIPELINE: 1}


def test_partly_specialized_batch_is_not_reported_as_a_pass_bug():
    """Found by the first campaign (a harness false positive, fixed in check_program): ``x`` keeps a symbolic
    batch but ``y.chunk(2, 0)`` makes export specialize ``y``'s; the other-batch inputs then fail in the
    *captured* program, which was blamed on every pass that changed the graph."""
    spec = ModelSpec(inputs=(("x", (2, 1), "float32"), ("y", (2, 1), "float32")),
                     body=("v0, v1 = y.chunk(2, 0)", "v2 = torch.relu(v0)", "v3 = torch.tanh(v1)"),
                     outputs=("v3",), dynamic_batch=True)
    counts = {}
    fuzz.check_program(spec, ["canonicalize", "split"], False, counts)
    assert counts == {"canonicalize": 1, "split": 1}


# ------------------------------------------------------------------------------------------ broken passes
def test_wrong_numerics_are_found_and_written_as_a_reproducer(broken, tmp_path):
    result = fuzz.run_campaign(["dce", ScaleFirstOutput.name], 2, seed=1, out=str(tmp_path), shrink=False)
    assert len(result.failures) == 1  # one bug, reported once however often it shows up
    failure = result.failures[0]
    assert failure.pass_spec == ScaleFirstOutput.name and "changed the numerics" in failure.message
    text = open(failure.path).read()
    assert f"# pass: {ScaleFirstOutput.name}" in text and "class GenModel" in text
    namespace = {"__name__": "reproducer"}
    exec(compile(text, failure.path, "exec"), namespace)  # noqa: S102 - our own file
    assert namespace["SPEC"] == failure.spec


def test_non_idempotent_pass_is_found(broken):
    result = fuzz.run_campaign([GrowForever.name], 1, seed=2, shrink=False)
    assert [f.pass_spec for f in result.failures] == [GrowForever.name]
    assert "not idempotent" in result.failures[0].message


def test_pass_that_hides_a_change_is_found(broken):
    result = fuzz.run_campaign([SilentChange.name], 1, seed=2, shrink=False)
    assert result.failures and "reported no change but changed the graph" in result.failures[0].message


def test_failures_are_shrunk(monkeypatch):
    """The shrink plumbing, with a cheap stand-in check (no capture): a "bug" whenever a model has a
    matmul line shrinks towards the simplest such model (seed 0, only the ``x`` input, the matmul last)."""
    def fake_check(spec, passes, pipelines, counts):
        if any("@" in line or "matmul" in line or "mm(" in line for line in spec.body):
            raise fuzz.Difference("fake", "matmul seen")
        counts["fake"] = counts.get("fake", 0) + 1
        return False

    monkeypatch.setattr(fuzz, "check_program", fake_check)
    result = fuzz.run_campaign(["fake"], 100, seed=5, shrink=True, ops=["matmul", "scalar", "unary"])
    assert len(result.failures) == 1 and result.failures[0].minimized
    spec = result.failures[0].spec
    assert spec.seed == 0 and [name for name, _, _ in spec.inputs] == ["x"]
    assert "@" in spec.body[-1] or "mm(" in spec.body[-1] or "matmul" in spec.body[-1]


def test_signature_blanks_numbers_and_names():
    a = fuzz.signature("moe", "pass 'moe' changed the numerics: output 3: max abs error 0.25 exceeds rtol=0.0001")
    b = fuzz.signature("moe", "pass 'moe' changed the numerics: output 1: max abs error 7.5e-02 exceeds rtol=0.0001")
    assert a == b and fuzz.signature("dce", "x") != fuzz.signature("moe", "x")


# ------------------------------------------------------------------------------------------ command line
def test_main_exit_codes_and_json(broken, tmp_path, capsys):
    report = tmp_path / "r.json"
    assert fuzz.main(["--passes", "dce", "--examples", "1", "--seed", "4", "--json", str(report)]) == 0
    data = json.loads(report.read_text())
    assert data["counts"] == {"dce": 1} and data["programs"] == 1 and data["failures"] == []
    out = capsys.readouterr().out
    assert "programs/s" in out
    code = fuzz.main(["--passes", ScaleFirstOutput.name, "--examples", "1", "--no-shrink", "--out", str(tmp_path / "r")])
    assert code == 1
    assert "FAILURE in test-fuzz-scale" in capsys.readouterr().out
    assert len(os.listdir(tmp_path / "r")) == 1


# ------------------------------------------------------------------------------------------ generator
_SETTINGS = settings(max_examples=12, database=None, deadline=None, phases=[Phase.generate],
                     suppress_health_check=list(HealthCheck))


def test_generator_draws_the_new_op_kinds():
    seen = set()
    ops = ("bmm", "reduce-more", "embedding-bag", "gather", "repeat-block", "linear")

    @seed(7)
    @_SETTINGS
    @given(spec=model_specs(ops=ops))
    def draw(spec):
        text = "\n".join(spec.body + spec.init)
        for key in ("torch.bmm", "EmbeddingBag", "gather", "index_select", "amax", "amin", "var(", "std(",
                    "; ", "[self.idx", "% "):
            if key in text:
                seen.add(key)

    draw()
    assert {"torch.bmm", "EmbeddingBag", "; "} <= seen
    assert seen & {"gather", "index_select", "[self.idx", "% "}
    assert seen & {"amax", "amin", "var(", "std("}


def test_dynamic_batch_capture_stays_symbolic_and_runs_other_batches():
    spec = ModelSpec(inputs=(("x", (3, 4), "float32"), ("ids", (3,), "int64")),
                     init=("self.lin0 = nn.Linear(4, 2, bias=True)", "self.bag0 = nn.EmbeddingBag(6, 2, mode='sum')",
                           "self.register_buffer('off0', torch.tensor([0, 1]))"),
                     body=("v0 = self.lin0(x)", "v1 = torch.bmm(v0.unsqueeze(1), v0.unsqueeze(2))",
                           "v2 = v0.amax(-1)", "v3 = self.bag0(ids, self.off0)"),
                     outputs=("v1", "v2", "v3"), dynamic_batch=True)
    program = capture_spec(spec)
    assert any(not sym.isdigit() for sym in program.dynamic_dims)
    model = spec.build()
    bigger = spec.make_inputs(seed=1, batch=5)
    got = program.run_flat(program.flatten_inputs(bigger))
    for g, e in zip(got, model(*bigger)):
        torch.testing.assert_close(g, e)


def test_tests_graphgen_reexports_the_package_generator():
    import graphgen

    from fxopt.tools import graphgen as moved

    assert graphgen.model_specs is moved.model_specs and graphgen.ModelSpec is moved.ModelSpec
