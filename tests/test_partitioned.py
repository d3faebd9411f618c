"""The shared partitioned-artifact runtime (backends/partitioned.py) and backend options."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import pytest
import torch

import fxopt
from fxopt.backends import base
from fxopt.backends.partitioned import (PartitionedCompiled, TorchStage, compile_partitioned,
                                        load_partitioned, plan_stages, safe_file)
from fxopt.errors import BackendError, InputError

from conftest import captured


class _EchoStage(TorchStage):
    """An 'accelerator' stage that is PyTorch underneath, with its own runtime name."""

    runtime = "test-echo"

    def write(self, directory):
        entry = super().write(directory)
        entry["steps"] = {"done_here": ["echo"], "left_for_target": ["nothing really"]}
        return entry


@dataclass(frozen=True)
class _EchoBackend:
    name = "test-echo"
    scale: int = 1

    def compile(self, program):
        return compile_partitioned(program, "test-echo", "neuron", lambda plan: _EchoStage.from_plan(plan))

    def load(self, directory, manifest):
        return load_partitioned(directory, manifest, "test-echo", _EchoStage.load)


@pytest.fixture(autouse=True)
def _register():
    base.register_backend("test-echo", _EchoBackend)
    yield
    base.BACKENDS.unregister("test-echo")


def _ranking():
    return captured("ranking")


def test_split_program_runs_as_stages_and_matches():
    model, inputs, program = _ranking()
    split = fxopt.optimize(program, "split{target=neuron,policy=support}")   # embedding bags stay on cpu
    plans = plan_stages(split, "neuron")
    assert {p.device for p in plans} == {"cpu", "neuron"}
    compiled = fxopt.compile(split, "test-echo")
    expected = program.run_flat(program.flat_example_inputs())
    got = compiled.run_flat(program.flat_example_inputs())
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e)


def test_unsplit_program_is_one_accelerator_stage():
    model, inputs, program = captured("encoder")
    plans = plan_stages(program, "neuron")
    assert [(p.name, p.device) for p in plans] == [("main", "neuron")]
    torch.testing.assert_close(fxopt.compile(program, "test-echo")(*inputs), model(*inputs))


def test_saved_artifact_loads_and_runs(tmp_path):
    model, inputs, program = _ranking()
    split = fxopt.optimize(program, "split{target=neuron,policy=support}")
    path = fxopt.compile(split, "test-echo").save(tmp_path / "a")
    manifest = json.loads(open(os.path.join(path, "manifest.json")).read())
    assert {e["runtime"] for e in manifest["partitions"]} == {"pytorch-eager", "test-echo"}
    loaded = fxopt.load(path)
    assert isinstance(loaded, PartitionedCompiled)
    torch.testing.assert_close(loaded(*inputs), model(*inputs))


def test_weight_output_is_saved_as_constant(tmp_path):
    class ReturnsWeight(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 3)

        def forward(self, x):
            return self.lin(x), self.lin.bias

    model = ReturnsWeight()
    x = torch.randn(2, 3)
    program = fxopt.capture(model, (x,))
    loaded = fxopt.load(fxopt.compile(program, "test-echo").save(tmp_path / "w"))
    y, b = loaded(x)
    torch.testing.assert_close(b, model.lin.bias.detach())
    torch.testing.assert_close(y, model(x)[0])


def test_program_split_for_another_target_is_refused():
    _, _, program = _ranking()
    split = fxopt.optimize(program, "split{target=xla,policy=support}")
    assert any(r["device"] == "xla" for r in split.regions[-1]["partitions"])
    with pytest.raises(BackendError, match="split for 'xla'"):
        plan_stages(split, "neuron")


def test_manifest_file_outside_directory_is_refused(tmp_path):
    (tmp_path / "ok.bin").write_bytes(b"x")
    assert safe_file(str(tmp_path), "ok.bin").endswith("ok.bin")
    for bad in ("../etc/passwd", "/etc/passwd", "sub/ok.bin", ".hidden"):
        with pytest.raises(InputError, match="not a plain file name"):
            safe_file(str(tmp_path), bad)


def test_backend_options_are_parsed_and_checked():
    assert base.get_backend("test-echo{scale=3}").scale == 3
    with pytest.raises(InputError, match="backend 'test-echo' has no option 'bogus'"):
        base.get_backend("test-echo{bogus=1}")
    with pytest.raises(InputError, match="backend 'test-echo'.*must be an integer"):
        base.get_backend("test-echo{scale=x}")
    with pytest.raises(InputError, match="backend 'reference' takes no options"):
        base.get_backend("reference{a=1}")


def test_steps_summary_says_each_step_once_with_the_partitions_that_took_it():
    steps = lambda *done: {"done_here": list(done), "left_for_target": []}   # noqa: E731
    manifest = {"partitions": [
        {"name": "p0", "steps": steps("graph serialized", "weights saved (safetensors)")},
        {"name": "p1", "steps": steps("graph serialized", "weights saved (safetensors)",
                                      "lowered ATen→JAX (412 ops)")},
        {"name": "p2", "steps": steps("graph serialized", "weights saved (safetensors)",
                                      "lowered ATen→JAX (9 ops)")}]}
    done, left = base.steps_summary(manifest)
    assert done == ["graph serialized (all 3 partitions)", "weights saved (all 3 partitions)",
                    "lowered ATen→JAX (2 of 3 partitions)"]
    assert left == []


def test_steps_summary_of_one_partition_keeps_its_details():
    manifest = {"partitions": [{"name": "p0", "steps": {"done_here": ["weights saved (safetensors)"],
                                                        "left_for_target": ["neuronx-cc compile"]}}]}
    assert base.steps_summary(manifest) == (["weights saved (safetensors)"], ["neuronx-cc compile"])


def test_steps_summary_names_the_one_partition_that_took_a_step():
    manifest = {"partitions": [{"name": "cpu0", "steps": {"done_here": ["graph serialized"]}},
                               {"name": "xla1", "steps": {"done_here": ["graph serialized", "jitted (XLA)"]}}]}
    assert base.steps_summary(manifest)[0] == ["graph serialized (both partitions)", "jitted (XLA) (xla1)"]


def test_steps_summary_groups_steps_whose_details_nest_parentheses():
    traced = lambda n: {"done_here": [f"traced ({n} bucket shape(s): s0-1, s0-4)"],   # noqa: E731
                        "left_for_target": [f"compile of {n} TorchScript file(s)"]}
    manifest = {"partitions": [{"name": "a", "steps": traced(3)}, {"name": "b", "steps": traced(2)}]}
    assert base.steps_summary(manifest) == (["traced (both partitions)"],
                                            ["compile of 3 TorchScript file(s) (a)",
                                             "compile of 2 TorchScript file(s) (b)"])
