"""The neuron backend (backends/neuron.py): op check, static-shape TorchScript partitions checked on the CPU,
the compile manifest, safe loading, and static-shape bucketing.

Zoo models are the small variants, captured once per module (capture dominates the runtime). The OCR model
goes through as its encoder (``OCRModel.encode``); the fully unrolled decoder is exercised by
``python -m benchmarks.neuron`` (its capture alone takes longer than this file's budget).
"""
from __future__ import annotations

import json
import os

import pytest
import torch
import torch.utils._pytree as pytree

import fxopt
from fxopt.backends import base
from fxopt.backends.neuron import LOAD_ENV, NeuronBackend, NeuronCompiled, TorchScriptStage
from fxopt.errors import BackendError, InputError
from fxopt.ir.numerics import assert_outputs_close

from conftest import captured

pytestmark = pytest.mark.numerics   # cross-runtime numerics: CI re-runs these on another vector path

SPLIT = "canonicalize,fold-constants,dedupe,moe,dce,split{target=neuron,policy=support}"


def _zoo(name: str):
    """(model, inputs, captured program) of a small zoo model ("ocr_encoder": the OCR model's encoder); the
    capture is shared across the session (conftest.captured), each call gets its own copies."""
    return captured(name)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread for this module (restored after): on a shared, busy machine torch's default of one
    thread per core spends most of its time waiting for the other thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _leaves(x):
    return [t for t in pytree.tree_leaves(x) if isinstance(t, torch.Tensor)]


def _assert_matches(got, expected, program):
    """TorchScript (and onnxruntime) outputs against PyTorch's under the shared cross-runtime rule
    (fxopt.ir.numerics), with the rounding depths of ``program``'s graph."""
    got, expected = _leaves(got), _leaves(expected)
    assert len(got) == len(expected)
    assert_outputs_close(got, expected, program)


def _manifest(path) -> dict:
    with open(os.path.join(path, "manifest.json"), encoding="utf-8") as f:
        return json.load(f)


def _neuron_entries(manifest: dict) -> list[dict]:
    return [p for p in manifest["partitions"] if p["runtime"] == TorchScriptStage.runtime]


# ------------------------------------------------------------------------------------------ zoo models
_ARTIFACTS: dict = {}


def _artifact(name: str, tmp_path_factory):
    """(model, inputs, compiled, saved path, program) of a small zoo model optimized with SPLIT and compiled
    for neuron, made once per test module."""
    if name not in _ARTIFACTS:
        model, inputs, program = _zoo(name)
        program = fxopt.optimize(program, SPLIT, verify=False)
        compiled = fxopt.compile(program, "neuron")
        path = compiled.save(tmp_path_factory.mktemp("neuron") / name)
        _ARTIFACTS[name] = (model, inputs, compiled, path, program)
    return _ARTIFACTS[name]


@pytest.mark.parametrize("name", ["ranking", "moderation", "resnet50", "ocr_encoder"])
def test_zoo_model_compiles_saves_loads_and_matches_eager(name, tmp_path_factory):
    model, inputs, compiled, path, program = _artifact(name, tmp_path_factory)
    assert any(s.runtime == "torchscript-cpu" for s in compiled.stages)
    with torch.no_grad():
        expected = model(*inputs)
    _assert_matches(compiled(*inputs), expected, program)
    entries = _neuron_entries(_manifest(path))
    assert entries and all(t["file"] in os.listdir(path) for e in entries for t in e["traces"])
    _assert_matches(fxopt.load(path)(*inputs), expected, program)


def test_split_keeps_unsupported_ops_on_cpu(tmp_path_factory):
    _, _, compiled, _, _ = _artifact("ranking", tmp_path_factory)
    on_neuron = {str(n.target) for s in compiled.stages if isinstance(s, TorchScriptStage)
                 for n in s.module.graph.nodes if n.op == "call_function"}
    on_cpu = {str(n.target) for s in compiled.stages if not isinstance(s, TorchScriptStage)
              for n in s.module.graph.nodes if n.op == "call_function"}
    assert "aten._embedding_bag.default" in on_cpu
    assert "aten._embedding_bag.default" not in on_neuron and "aten.addmm.default" in on_neuron


def test_unsupported_op_without_split_names_op_and_source_line():
    _, _, program = _zoo("ranking")
    with pytest.raises(BackendError) as info:
        fxopt.compile(program, "neuron")
    message = str(info.value)
    assert "aten._embedding_bag.default" in message
    assert "zoo/ranking.py:" in message and "split{target=neuron}" in message
    assert "\n" not in message


def test_compile_leaves_the_program_unchanged():
    _, _, program = _zoo("moderation")
    split = fxopt.optimize(program, SPLIT, verify=False)
    code, regions = split.graph_module.code, json.dumps(split.regions, default=str)
    fxopt.compile(split, "neuron")
    assert split.graph_module.code == code and json.dumps(split.regions, default=str) == regions


# ------------------------------------------------------------------------------------------ manifest
@pytest.fixture
def resnet_artifact(tmp_path_factory):
    """The saved neuron artifact of resnet50 (small): one partition, every op on neuron."""
    return _artifact("resnet50", tmp_path_factory)[3]


def test_compile_snippets_are_valid_python_naming_the_traced_file(resnet_artifact):
    (entry,) = _neuron_entries(_manifest(resnet_artifact))
    (trace,) = entry["traces"]
    for target, call in (("inf1", "torch_neuron.trace("), ("inf2_trn1", "torch_neuronx.trace(")):
        script = trace["compile"][target]["python"]
        compile(script, f"<{target}>", "exec")
        assert call in script and trace["file"] in script
        assert f"torch.zeros({trace['inputs'][0]['shape']!r}, dtype=torch.float32)" in script


def test_manifest_steps_say_neuron_compile_is_left_for_the_target(resnet_artifact):
    (entry,) = _neuron_entries(_manifest(resnet_artifact))
    done, left = entry["steps"]["done_here"], entry["steps"]["left_for_target"]
    assert any(s.startswith("op check against the torch-neuron operator list passed") for s in done)
    assert any(s.startswith("numerics checked on CPU (max error") for s in done)
    assert any("torch_neuron.trace" in s and "SDK host" in s for s in left)


def test_traced_files_match_their_recorded_sha256(resnet_artifact):
    import hashlib

    (entry,) = _neuron_entries(_manifest(resnet_artifact))
    for trace in entry["traces"]:
        with open(os.path.join(resnet_artifact, trace["file"]), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == trace["sha256"]


def test_load_retraces_from_the_fx_graph_without_torch_jit_load(resnet_artifact, monkeypatch):
    monkeypatch.delenv(LOAD_ENV, raising=False)
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("torch.jit.load called"))
    loaded = fxopt.load(resnet_artifact)
    assert [s.loaded_from for s in loaded.stages if isinstance(s, TorchScriptStage)] == ["fx-retrace"]
    model, inputs, program = _zoo("resnet50")
    _assert_matches(loaded(*inputs), model(*inputs), program)


def test_torchscript_load_refuses_a_changed_file(resnet_artifact, tmp_path, monkeypatch):
    import shutil

    copy = tmp_path / "tampered"
    shutil.copytree(resnet_artifact, copy)
    (entry,) = _neuron_entries(_manifest(copy))
    with open(copy / entry["traces"][0]["file"], "ab") as f:
        f.write(b"\0")
    monkeypatch.setenv(LOAD_ENV, "torchscript")
    with pytest.raises(InputError, match="sha256 does not match"):
        fxopt.load(copy)


def test_torchscript_load_runs_the_saved_traces(resnet_artifact, monkeypatch):
    monkeypatch.setenv(LOAD_ENV, "torchscript")
    loaded = fxopt.load(resnet_artifact)
    assert [s.loaded_from for s in loaded.stages if isinstance(s, TorchScriptStage)] == ["torchscript"]
    model, inputs, program = _zoo("resnet50")
    _assert_matches(loaded(*inputs), model(*inputs), program)


def test_instances_set_the_shared_weights_runtime_setting():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)).eval()
    program = fxopt.capture(model, (torch.randn(3, 4),))
    one = fxopt.compile(program, "neuron").extra["runtime_settings"]
    two = fxopt.compile(program, "neuron{instances=2}").extra["runtime_settings"]
    assert "NEURON_RT_MULTI_INSTANCE_SHARED_WEIGHTS" not in one and one["NEURON_RT_NUM_CORES"] == "1"
    assert two["NEURON_RT_MULTI_INSTANCE_SHARED_WEIGHTS"] == "TRUE" and two["NEURON_RT_VISIBLE_CORES"] == "0-1"


def test_backend_options_are_parsed_and_checked():
    backend = base.get_backend("neuron{buckets=8;1;4,seq_buckets=16}")
    assert isinstance(backend, NeuronBackend)
    assert backend.options()["buckets"] == [1, 4, 8] and backend.options()["seq_buckets"] == [16]
    with pytest.raises(InputError, match="buckets='1;x' must be ';'-separated positive integers"):
        base.get_backend("neuron{buckets=1;x}")
    with pytest.raises(InputError, match="instances=0 must be >= 1"):
        base.get_backend("neuron{instances=0}")


# ------------------------------------------------------------------------------------------ bucketing
@pytest.fixture(scope="module")
def dynamic_encoder():
    """The conftest TinyEncoder (embedding on the CPU, attention blocks on neuron) captured with a dynamic
    batch and split, and its neuron{buckets=2;8} artifact."""
    from tests.conftest import TinyEncoder

    torch.manual_seed(0)
    model = TinyEncoder().eval()
    ids = torch.randint(0, 100, (4, 8))
    program = fxopt.capture(model, (ids,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},))
    split = fxopt.optimize(program, SPLIT, verify=False)
    return model, split, fxopt.compile(split, "neuron{buckets=2;8}")


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_bucketed_batches_match_eager(dynamic_encoder, batch):
    model, split, compiled = dynamic_encoder
    ids = torch.randint(0, 100, (batch, 8), generator=torch.Generator().manual_seed(batch))
    out = compiled(ids)
    assert out.shape == (batch, 3)
    _assert_matches(out, model(ids), split)


def test_batch_above_the_largest_bucket_is_a_one_line_error(dynamic_encoder):
    _, _, compiled = dynamic_encoder
    with pytest.raises(InputError, match=r"input 0 \('ids'\) dim 0 is 9, larger than the largest batch bucket 8"):
        compiled(torch.zeros(9, 8, dtype=torch.long))


def test_manifest_lists_one_traced_file_per_bucket(dynamic_encoder, tmp_path):
    _, _, compiled = dynamic_encoder
    path = compiled.save(tmp_path / "enc")
    manifest = _manifest(path)
    (symbol,) = manifest["buckets"]["sizes"]
    assert manifest["buckets"]["sizes"][symbol] == [2, 8] and manifest["buckets"]["roles"][symbol] == "batch"
    for entry in _neuron_entries(manifest):
        assert [t["bucket"] for t in entry["traces"]] == [{symbol: 2}, {symbol: 8}]
        first_tensor = [next(i for i in t["inputs"] if "shape" in i) for t in entry["traces"]]
        assert [spec["shape"][0] for spec in first_tensor] == [2, 8]
        assert all(os.path.isfile(os.path.join(path, t["file"])) for t in entry["traces"])


def test_saved_bucketed_artifact_pads_after_loading(dynamic_encoder, tmp_path):
    model, split, compiled = dynamic_encoder
    loaded = fxopt.load(compiled.save(tmp_path / "enc"))
    assert isinstance(loaded, NeuronCompiled)
    ids = torch.randint(0, 100, (5, 8), generator=torch.Generator().manual_seed(5))
    _assert_matches(loaded(ids), model(ids), split)


def test_buckets_on_a_static_program_ask_for_a_dynamic_batch():
    model = torch.nn.Linear(4, 2).eval()
    program = fxopt.capture(model, (torch.randn(3, 4),))
    with pytest.raises(InputError, match="has no single dynamic batch dim.*dynamic_shapes"):
        fxopt.compile(program, "neuron{buckets=2;8}")


def test_sequence_buckets_pad_the_sequence_dim(block):
    """A per-token block (LayerNorm + MLP on [B, T, D]) with a dynamic sequence dim, seq_buckets=4;16."""
    class PerToken(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.ln, self.fc1, self.fc2 = torch.nn.LayerNorm(32), torch.nn.Linear(32, 64), torch.nn.Linear(64, 32)

        def forward(self, x):
            return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.ln(x))))

    torch.manual_seed(0)
    model = PerToken().eval()
    program = fxopt.capture(model, (torch.randn(2, 8, 32),),
                            dynamic_shapes=({1: torch.export.Dim("seq", min=1, max=64)},))
    compiled = fxopt.compile(program, "neuron{seq_buckets=4;16}")
    assert [t.key.split("-")[-1] for t in compiled.stages[0].traces] == ["4", "16"]
    for length in (3, 10):
        x = torch.randn(2, length, 32)
        _assert_matches(compiled(x), model(x), program)


# ------------------------------------------------------------------------------------------ CLI
def test_cli_run_resnet50_says_the_neuron_compile_is_left_for_the_target(tmp_path, monkeypatch, capsys):
    """`fxopt run zoo:resnet50 --backend neuron`, with capture answering from this module's small resnet50."""
    from fxopt.tools.cli import main

    _, _, program = _zoo("resnet50")
    monkeypatch.setattr("fxopt.ir.capture.capture", lambda spec, *a, **k: program.copy())
    out_dir = tmp_path / "r50"
    assert main(["run", "zoo:resnet50", "--backend", "neuron", "--no-verify", "-o", str(out_dir)]) == 0
    stdout = capsys.readouterr().out
    last = stdout.strip().splitlines()[-1]
    assert "backend neuron" in last
    assert "left for the target host:" in last and "neuron compile (torch_neuron.trace" in last
    assert _neuron_entries(_manifest(out_dir))


# ------------------------------------------------------------------------------------------ ONNX in
def test_onnx_round_trip_through_neuron_matches_onnxruntime(tmp_path):
    """resnet50 (small) exported to ONNX, captured from the .onnx file, optimized, compiled for neuron."""
    ort = pytest.importorskip("onnxruntime")
    model, inputs, _ = _zoo("resnet50")
    path = str(tmp_path / "resnet50.onnx")
    with torch.no_grad():
        torch.onnx.export(model, inputs, path, dynamo=False, input_names=["images"], output_names=["logits"])
    program = fxopt.capture(path, inputs)
    compiled = fxopt.compile(fxopt.optimize(program, SPLIT, verify=False), "neuron")
    assert any(s.runtime == "torchscript-cpu" for s in compiled.stages)
    expected = ort.InferenceSession(path).run(None, {"images": inputs[0].numpy()})[0]
    got = _leaves(compiled(*inputs))[0]
    _assert_matches(got, torch.as_tensor(expected), program)
