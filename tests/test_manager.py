"""The pass manager: verification names the guilty pass, bisect limits, lazy recompiles, reports, traces."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import fxopt
from fxopt.errors import FxoptError, VerificationError
from fxopt.passes.base import Pass, PassResult
from fxopt.passes.registry import register_pass, unregister_pass

from conftest import captured


@dataclass(frozen=True)
class ScaleOutput(Pass):
    """A deliberately wrong pass: multiplies the first output by ``factor``."""

    name = "test-scale-output"
    factor: float = 1.5

    def run(self, program):
        graph = program.graph
        out = program.output_node()
        first = out.args[0][0]
        with graph.inserting_before(out):
            scaled = graph.call_function(torch.ops.aten.mul.Tensor, (first, self.factor))
        out.args = ((scaled, *out.args[0][1:]),)
        return PassResult(modified=True)


@dataclass(frozen=True)
class DoNothing(Pass):
    """A pass that finds nothing to do."""

    name = "test-nothing"

    def run(self, program):
        return PassResult(modified=False, notes=["nothing to do"])


@dataclass(frozen=True)
class NeedsPlacement(Pass):
    """A pass that declares it needs placement."""

    name = "test-needs-placement"
    requires = frozenset({"shapes", "placement"})

    def run(self, program):
        return PassResult(modified=False)


@dataclass(frozen=True)
class TagNodes(Pass):
    """A pass that only writes node metadata (as split does) and says it modified the program."""

    name = "test-tag"

    def run(self, program):
        for node in program.graph.nodes:
            node.meta["tag"] = "seen"
        return PassResult(modified=True)


@dataclass(frozen=True)
class ScaleWeight(Pass):
    """A deliberately wrong pass that leaves every node as it is and rebinds the first weight to a scaled copy:
    the graph's code is the same, its numerics are not."""

    name = "test-scale-weight"

    def run(self, program):
        gm = program.graph_module
        node = next(n for n in program.graph.nodes if n.op == "get_attr")
        owner, _, attr = node.target.rpartition(".")
        module = gm.get_submodule(owner) if owner else gm
        old = getattr(module, attr)
        new = torch.nn.Parameter(old.detach() * 1.5, requires_grad=False) if isinstance(old, torch.nn.Parameter) \
            else old * 1.5
        setattr(module, attr, new)
        return PassResult(modified=True)


TEST_PASSES = (ScaleOutput, DoNothing, NeedsPlacement, TagNodes, ScaleWeight)


@pytest.fixture(autouse=True)
def test_passes():
    for cls in TEST_PASSES:
        register_pass(cls)
    yield
    for cls in TEST_PASSES:
        unregister_pass(cls.name)


@pytest.fixture
def program():
    """A fresh copy of the captured AttentionBlock (captured once per session, see conftest.captured)."""
    return captured("block")[2]


def test_verify_names_the_pass_that_changed_numerics(program):
    with pytest.raises(VerificationError) as info:
        fxopt.optimize(program, "canonicalize,test-scale-output{factor=1.01},dce")
    message = str(info.value)
    assert "test-scale-output{factor=1.01}" in message and "output 0" in message and "max abs error" in message


def test_verify_off_lets_a_wrong_pass_through(program):
    result = fxopt.optimize(program, "test-scale-output", verify=False)
    torch.testing.assert_close(result(*program.example_inputs), 1.5 * program(*program.example_inputs))


def test_bisect_limit_runs_only_the_first_passes(program):
    result = fxopt.optimize(program, "canonicalize,test-scale-output,dce", bisect_limit=1)
    assert [r.status for r in result.reports] == ["ran", "skipped", "skipped"]
    torch.testing.assert_close(result(*program.example_inputs), program(*program.example_inputs))


def test_bisect_limit_finds_the_breaking_pass(program):
    pipeline = "canonicalize,fold-constants,test-scale-output,dce"
    first_bad = None
    for limit in range(5):
        try:
            fxopt.optimize(program, pipeline, bisect_limit=limit)
        except VerificationError:
            first_bad = limit
            break
    assert first_bad == 3  # the third pass application breaks it


def test_optimize_leaves_its_input_untouched(program):
    code, nodes = program.graph_module.code, program.num_nodes()
    fxopt.optimize(program, "test-scale-output", verify=False)
    assert program.graph_module.code == code and program.num_nodes() == nodes


def test_unchanged_pass_reports_and_traces_by_reference(program):
    result = fxopt.optimize(program, "test-nothing,test-nothing")
    assert [r.verified for r in result.reports] == ["unchanged", "unchanged"]
    assert result.reports[0].notes == ["nothing to do"]
    snapshots = result.trace_json()["snapshots"]
    assert [s.get("same_as") for s in snapshots] == [None, 0, 0]
    assert len(snapshots[0]["nodes"]) == program.num_nodes()


def test_recompiles_only_when_a_pass_changed_the_graph(program, monkeypatch):
    calls = []
    original = torch.fx.GraphModule.recompile

    def counting(self):
        calls.append(1)
        return original(self)

    monkeypatch.setattr(torch.fx.GraphModule, "recompile", counting)
    fxopt.optimize(program, ["test-nothing"] * 10, verify=False)
    copies = len(calls)  # the program copy made at the start
    calls.clear()
    fxopt.optimize(program, ["test-nothing"] * 10 + ["test-scale-output"] * 3, verify=False)
    assert len(calls) == copies + 1  # three changing passes, one recompile at the end


def test_report_counts_nodes_flops_and_bytes(program):
    result = fxopt.optimize(program, "test-scale-output", verify=False)
    (report,) = result.reports
    assert report.modified and report.nodes_after == report.nodes_before + 1
    out_elems = program.example_inputs[0].numel()
    assert report.flops_after - report.flops_before == out_elems  # one elementwise multiply
    assert report.bytes_after > report.bytes_before
    assert report.seconds >= 0 and report.spec == "test-scale-output"


def test_new_nodes_get_shapes_provenance_and_cost(program):
    result = fxopt.optimize(program, "test-scale-output", verify=False)
    scaled = result.output_node().args[0][0]
    assert scaled.meta["provenance"]["pass"] == "test-scale-output"
    assert tuple(scaled.meta["val"].shape) == tuple(program.example_inputs[0].shape)
    assert scaled.meta["cost"].flops == program.example_inputs[0].numel()


def test_trace_snapshots_changed_graphs(program):
    result = fxopt.optimize(program, "test-scale-output", verify=False)
    after = result.trace_json()["snapshots"][1]
    assert after["pass"] == "test-scale-output"
    assert len(after["nodes"]) == result.num_nodes()
    assert result.trace_json()["reports"][0]["name"] == "test-scale-output"


def test_pass_requiring_placement_explains_what_to_run(program):
    with pytest.raises(FxoptError, match="run 'split' before it"):
        fxopt.optimize(program, "test-needs-placement")


def test_negative_bisect_limit_is_rejected(program):
    with pytest.raises(FxoptError, match="bisect limit"):
        fxopt.optimize(program, "dce", bisect_limit=-1)


def _count_runs(monkeypatch) -> list:
    from fxopt.ir.program import Program
    runs = []
    original = Program.run_flat

    def counting(self, flat_inputs):
        runs.append(1)
        return original(self, flat_inputs)

    monkeypatch.setattr(Program, "run_flat", counting)
    return runs


def test_a_metadata_only_pass_is_not_recompiled_rerun_or_reannotated(program, monkeypatch):
    runs = _count_runs(monkeypatch)
    result = fxopt.optimize(program, "test-tag,test-tag")
    assert runs == []                                     # no reference run, no check run: the graph is the same
    assert [(r.modified, r.verified) for r in result.reports] == [(True, "unchanged"), (True, "unchanged")]
    assert not result.dirty and result.graph_module.code == program.graph_module.code
    assert all(n.meta["tag"] == "seen" for n in result.graph.nodes)
    assert "tag" not in next(iter(program.graph.nodes)).meta          # the input program is untouched


def test_a_metadata_only_pass_is_snapshotted_in_the_trace(program):
    snapshots = fxopt.optimize(program, "test-tag").trace_json()["snapshots"]
    assert [s.get("pass") for s in snapshots][1:] == ["test-tag"] and "same_as" not in snapshots[1]


def test_a_pass_that_only_rebinds_a_weight_is_still_verified(program):
    with pytest.raises(VerificationError, match="test-scale-weight"):
        fxopt.optimize(program, "test-scale-weight")


def test_the_reference_run_after_metadata_passes_is_of_the_original_graph(program, monkeypatch):
    runs = _count_runs(monkeypatch)
    with pytest.raises(VerificationError, match="test-scale-output"):
        fxopt.optimize(program, "test-tag,test-scale-output")
    assert len(runs) == 2                                 # the original once, the changed graph once


@pytest.mark.parametrize("inplace", [False, True])
def test_the_reference_run_is_made_once_for_several_changing_passes(program, monkeypatch, inplace):
    runs = _count_runs(monkeypatch)
    work = program.copy() if inplace else program
    result = fxopt.optimize(work, "test-tag,canonicalize,fold-constants,dce", inplace=inplace)
    changing = sum(r.verified == "ok" for r in result.reports)
    assert changing >= 1 and len(runs) == 1 + changing    # canonicalize changes the block


def test_graph_fingerprint_sees_ops_args_weights_and_subgraphs_but_not_metadata(program):
    from fxopt.passes.manager import graph_fingerprint
    work = program.copy()
    before = graph_fingerprint(work)
    next(iter(work.graph.nodes)).meta["placement"] = "xla"
    assert graph_fingerprint(work) == before
    node = next(n for n in work.graph.nodes if n.op == "call_function")
    node.args = (*node.args,)                            # the same arguments in a new tuple
    assert graph_fingerprint(work) == before
    ScaleWeight().run(work)
    assert graph_fingerprint(work) != before
