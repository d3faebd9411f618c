"""The tensorrt backend (ONNX export, onnx-tensorrt support walk, onnxruntime numerics, fp16 report, trtexec
line) and the decompose-embedding-bag pass."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fxopt
from fxopt.backends.onnx_export import unsupported_nodes
from fxopt.backends.partitioned import PartitionedCompiled
from fxopt.backends.tensorrt import OnnxStage, trtexec_command
from fxopt.passes.registry import default_pipeline
from fxopt.errors import BackendError
from fxopt.ir.numerics import assert_outputs_close

from rewriting import op_set
from conftest import captured

pytestmark = pytest.mark.numerics   # cross-runtime numerics: CI re-runs these on another vector path

# The passes the backend needs (the full default pipeline is the lead's; its passes have their own tests).
PIPELINE = "decompose-embedding-bag,dce"


def _flat(value):
    import torch.utils._pytree as pytree

    return pytree.tree_flatten(value)[0]


def _assert_matches(got, want, program):
    """onnxruntime's outputs against PyTorch's under the shared cross-runtime rule (fxopt.ir.numerics), with
    the rounding depths of ``program``'s graph."""
    assert_outputs_close(_flat(got), _flat(want), program)


@pytest.fixture(scope="module", params=["ranking", "resnet50", "moderation", "ocr"])
def zoo_artifact(request, tmp_path_factory):
    """(name, model, inputs, compiled, saved directory, program) for each zoo model, compiled once."""
    model, inputs, program = captured("ocr_encoder" if request.param == "ocr" else request.param)
    program = fxopt.optimize(program, PIPELINE, verify=False)
    compiled = fxopt.compile(program, "tensorrt")
    path = compiled.save(tmp_path_factory.mktemp("trt") / request.param)
    return request.param, model, inputs, compiled, path, program


def _manifest(path):
    with open(os.path.join(path, "manifest.json"), encoding="utf-8") as f:
        return json.load(f)


# ------------------------------------------------------------------------------------------ zoo models
def test_zoo_model_runs_through_onnxruntime(zoo_artifact):
    name, model, inputs, compiled, _, program = zoo_artifact
    assert [s.runtime for s in compiled.stages] == ["onnxruntime"]
    with torch.no_grad():
        _assert_matches(compiled(*inputs), model(*inputs), program)


def test_zoo_artifact_loads_and_matches(zoo_artifact):
    name, model, inputs, _, path, program = zoo_artifact
    loaded = fxopt.load(path)
    assert isinstance(loaded, PartitionedCompiled) and isinstance(loaded.stages[0], OnnxStage)
    with torch.no_grad():
        _assert_matches(loaded(*inputs), model(*inputs), program)


def test_manifest_records_export_checks_and_trtexec_line(zoo_artifact):
    name, _, _, _, path, _ = zoo_artifact
    entry = _manifest(path)["partitions"][0]
    assert entry["runtime"] == "onnxruntime" and "main.onnx" in entry["files"]
    assert os.path.getsize(os.path.join(path, "main.onnx")) > 1000
    assert entry["onnx"]["opset"] >= 18
    assert entry["checks"]["onnx_tensorrt_support"] == "passed"
    assert entry["checks"]["onnxruntime_max_abs_error"] < 1e-3
    assert entry["trtexec"] == "trtexec --onnx=main.onnx --saveEngine=main.plan"   # static shapes: no profile
    assert entry["steps"]["left_for_target"] == [f"TensorRT engine build ({entry['trtexec']})"]
    assert entry["steps"]["done_here"][0] == f"exported to ONNX opset {entry['onnx']['opset']}"
    assert not {"Loop", "SequenceEmpty", "ConcatFromSequence"} & set(entry["onnx"]["ops"])


# ------------------------------------------------------------------------------------------ unsupported ops
class MaxBag(torch.nn.Module):
    """An EmbeddingBag(max) (exports as Loop + Sequence ops, which TensorRT rejects) then a linear."""

    def __init__(self):
        super().__init__()
        self.bag = torch.nn.EmbeddingBag(30, 8, mode="max")
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, ids):
        pooled = self.bag(ids)  # MAXBAG-LINE
        return torch.relu(self.fc(pooled))


def _maxbag_line() -> str:
    with open(__file__, encoding="utf-8") as f:
        number = next(i for i, line in enumerate(f, 1) if "# MAXBAG-LINE" in line and "pooled" in line)
    return f"test_tensorrt_backend.py:{number}"


@pytest.fixture(scope="module")
def maxbag():
    torch.manual_seed(0)
    model = MaxBag().eval()
    inputs = (torch.randint(0, 30, (4, 3)),)
    return model, inputs, fxopt.capture(model, inputs)


def test_unsupported_op_is_reported_with_aten_op_and_source_line(maxbag):
    _, _, program = maxbag
    with pytest.raises(BackendError) as info:
        fxopt.compile(fxopt.optimize(program, "decompose-embedding-bag"), "tensorrt")
    message = str(info.value)
    assert "\n" not in message
    assert "partition 'main': ONNX " in message and "aten._embedding_bag" in message
    assert _maxbag_line() in message
    assert "split{target=tensorrt}" in message


def test_split_keeps_unsupported_op_on_cpu(maxbag, tmp_path):
    model, inputs, program = maxbag
    split = fxopt.optimize(program, "split{target=tensorrt,policy=support}")
    compiled = fxopt.compile(split, "tensorrt")
    assert {(s.device, s.runtime) for s in compiled.stages} == {("cpu", "pytorch-eager"),
                                                                ("tensorrt", "onnxruntime")}
    loaded = fxopt.load(compiled.save(tmp_path / "a"))
    with torch.no_grad():
        _assert_matches(loaded(*inputs), model(*inputs), split)


def test_split_artifact_runs_in_a_fresh_process_without_model_code(maxbag, tmp_path):
    model, inputs, program = maxbag
    split = fxopt.optimize(program, "split{target=tensorrt,policy=support}")
    path = fxopt.compile(split, "tensorrt").save(tmp_path / "a")
    from safetensors.torch import load_file, save_file

    save_file({"ids": inputs[0]}, str(tmp_path / "in.safetensors"))
    script = ("import sys, fxopt; from safetensors.torch import load_file, save_file\n"
              "m = fxopt.load(sys.argv[1]); out = m(load_file(sys.argv[2])['ids'])\n"
              "assert {s.runtime for s in m.stages} == {'pytorch-eager', 'onnxruntime'}\n"
              "save_file({'out': out.contiguous()}, sys.argv[3])\n")
    subprocess.run([sys.executable, "-c", script, path, str(tmp_path / "in.safetensors"),
                    str(tmp_path / "out.safetensors")], check=True, capture_output=True, timeout=120)
    with torch.no_grad():
        _assert_matches(load_file(str(tmp_path / "out.safetensors"))["out"], model(*inputs), split)


def test_support_walk_enters_loop_bodies():
    from onnx import TensorProto, helper

    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("SequenceEmpty", [], ["seq"]),
         helper.make_node("SequenceInsert", ["seq", "x"], ["seq2"]),
         helper.make_node("ConcatFromSequence", ["seq2"], ["y"], axis=0)],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    graph = helper.make_graph(
        [helper.make_node("Loop", ["n", "c"], ["out"], body=body, name="loop0")], "g",
        [helper.make_tensor_value_info(k, t, s) for k, t, s in
         (("n", TensorProto.INT64, []), ("c", TensorProto.BOOL, []), ("x", TensorProto.FLOAT, [2]))],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)])
    found = unsupported_nodes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))
    assert [(u.onnx_op, u.subgraph) for u in found] == [
        ("SequenceEmpty", "Loop loop0/body"), ("SequenceInsert", "Loop loop0/body"),
        ("ConcatFromSequence", "Loop loop0/body")]


# ------------------------------------------------------------------------------------------ options
def test_fp16_writes_model_and_accuracy_report(tmp_path):
    model, inputs, program = captured("encoder")
    compiled = fxopt.compile(program, "tensorrt{fp16=true}")
    path = compiled.save(tmp_path / "fp16")
    entry = _manifest(path)["partitions"][0]
    report = entry["fp16"]
    assert report["file"] == "main.fp16.onnx" and "main.fp16.onnx" in entry["files"]
    assert 0 < report["max_abs_error"] < 0.05 and 0 < report["max_rel_error"] < 0.05
    assert entry["trtexec"].endswith("--fp16") and "--onnx=main.fp16.onnx" in entry["trtexec"]
    import onnx
    import onnxruntime as ort

    half = onnx.load(os.path.join(path, "main.fp16.onnx"))
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in half.graph.initializer)
    sess = ort.InferenceSession(half.SerializeToString(), providers=["CPUExecutionProvider"])
    out = torch.from_numpy(sess.run(None, {"ids": inputs[0].numpy()})[0])
    with torch.no_grad():
        want = model(*inputs)
    assert out.dtype == torch.float32
    assert float((out - want).abs().max()) == pytest.approx(report["max_abs_error"], rel=1e-3)


def test_dynamic_batch_gets_profile_and_runs_other_sizes(block, tmp_path):
    model, inputs = block
    batch = torch.export.Dim("batch", min=1, max=16)
    program = fxopt.capture(model, inputs, dynamic_shapes=({0: batch},))
    compiled = fxopt.compile(program, "tensorrt")
    entry = _manifest(compiled.save(tmp_path / "dyn"))["partitions"][0]
    assert entry["profile"] == {"x": {"min": [2, 8, 32], "opt": [2, 8, 32], "max": [16, 8, 32]}}
    assert ("--minShapes=x:2x8x32 --optShapes=x:2x8x32 --maxShapes=x:16x8x32" in entry["trtexec"])
    bigger = torch.randn(5, 8, 32)
    with torch.no_grad():
        _assert_matches(compiled(bigger), model(bigger), program)


def test_trtexec_command_lists_every_dynamic_input():
    profile = {"a": {"min": [1, 4], "opt": [8, 4], "max": [32, 4]}, "b": {"min": [1], "opt": [8], "max": [32]}}
    assert trtexec_command("p.onnx", "p.plan", profile, fp16=False) == (
        "trtexec --onnx=p.onnx --saveEngine=p.plan --minShapes=a:1x4,b:1 --optShapes=a:8x4,b:8 "
        "--maxShapes=a:32x4,b:32")


def test_engine_false_and_options_are_in_manifest(tmp_path):
    model, inputs, program = captured("block")
    compiled = fxopt.compile(program, "tensorrt{engine=false}")
    manifest = _manifest(compiled.save(tmp_path / "opt"))
    assert manifest["backend_options"] == {"engine": False, "fp16": False, "max_dim": 0, "optimize": False}
    assert manifest["partitions"][0]["engine"]["not_built_because"].startswith("engine builds disabled")


# ------------------------------------------------------------------------------------------ CLI
def test_cli_run_ranking_says_engine_build_is_left_for_target(tmp_path, capsys):
    from fxopt.tools.cli import main

    out = tmp_path / "ranking"
    code = main(["run", "zoo:ranking", "--backend", "tensorrt", "--passes", default_pipeline("tensorrt"), "-o", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    last = " ".join(text.strip().splitlines()[-3:])
    assert "compiled here: exported to ONNX opset" in last
    assert "left for the target host: TensorRT engine build (trtexec --onnx=tensorrt_0.onnx" in last
    assert os.path.isfile(out / "tensorrt_0.onnx")


# ------------------------------------------------------------------------------------------ the pass
class Bags(torch.nn.Module):
    """An EmbeddingBag with explicit offsets (variable-size bags, maybe empty ones)."""

    def __init__(self, mode: str, weighted: bool = False):
        super().__init__()
        self.weighted = weighted
        self.bag = torch.nn.EmbeddingBag(20, 4, mode=mode)

    def forward(self, ids, offsets, weights):
        return self.bag(ids, offsets, per_sample_weights=weights if self.weighted else None)


_BAG_INPUTS = (torch.tensor([1, 2, 3, 4, 5, 6, 7]), torch.tensor([0, 2, 2, 5]), torch.rand(7))


@pytest.fixture(scope="module")
def bag_programs():
    """Captured Bags programs, before and after decompose-embedding-bag, per (mode, weighted)."""
    out = {}
    for mode, weighted in (("sum", False), ("mean", False), ("sum", True)):
        torch.manual_seed(1)
        model = Bags(mode, weighted).eval()
        before = fxopt.capture(model, _BAG_INPUTS)
        out[(mode, weighted)] = (model, before, fxopt.optimize(before, "decompose-embedding-bag,dce"))
    return out


def test_pass_removes_embedding_bag_from_ranking():
    model, inputs, before = captured("ranking")
    after = fxopt.optimize(before, "decompose-embedding-bag,dce")
    hist = after.op_histogram()
    assert "aten._embedding_bag.default" in before.op_histogram()
    assert not any("embedding_bag" in k for k in hist) and hist["aten.embedding.default"] == 8
    assert after.reports[0].details == {"rewritten": 8, "skipped": 0}
    torch.testing.assert_close(after(*inputs), model(*inputs))


def test_pass_rewrites_variable_bags_without_loops(bag_programs):
    for (mode, weighted), (model, before, after) in bag_programs.items():
        assert "aten._embedding_bag.default" in op_set(before)
        assert "aten._embedding_bag.default" not in op_set(after)
        assert {"aten.embedding.default", "aten.scatter_add.default", "aten.cumsum.default"} <= op_set(after)
        torch.testing.assert_close(after(*_BAG_INPUTS), model(*_BAG_INPUTS))


def test_pass_leaves_max_mode_alone(maxbag):
    _, _, program = maxbag
    after = fxopt.optimize(program, "decompose-embedding-bag")
    assert not after.reports[0].modified and after.reports[0].details == {"rewritten": 0, "skipped": 1}
    assert "aten._embedding_bag.default" in op_set(after)


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(0, 7), min_size=3, max_size=3), ids=st.lists(st.integers(0, 19), min_size=7,
       max_size=7), case=st.sampled_from([("sum", False), ("mean", False), ("sum", True)]),
       seed=st.integers(0, 2 ** 16))
def test_pass_matches_embedding_bag_on_any_offsets(bag_programs, cuts, ids, case, seed):
    model, _, after = bag_programs[case]
    offsets = torch.tensor([0] + sorted(cuts))
    weights = torch.rand(7, generator=torch.Generator().manual_seed(seed))
    args = (torch.tensor(ids), offsets, weights)
    torch.testing.assert_close(after(*args), model(*args))


def test_decomposed_bags_export_and_run_in_onnxruntime(bag_programs):
    model, _, after = bag_programs[("mean", False)]
    compiled = fxopt.compile(after, "tensorrt")
    entry_ops = set(compiled.stages[0].info["onnx"]["ops"])
    assert "Loop" not in entry_ops and "ScatterElements" in entry_ops
    args = (torch.tensor([3, 3, 9, 0, 1, 2, 5]), torch.tensor([0, 0, 4, 7]), torch.rand(7))
    got = compiled.stages[0].run(list(args))[0]
    _assert_matches(got, model(*args).detach(), after)


def test_pass_uses_plain_reduction_for_folded_fixed_size_offsets():
    model, inputs, program = captured("ranking")
    after = fxopt.optimize(program, "fold-constants,decompose-embedding-bag,dce")
    ops = op_set(after)
    assert "aten._embedding_bag.default" not in ops and "aten.scatter_add.default" not in ops
    assert "aten.cumsum.default" not in ops
    torch.testing.assert_close(after(*inputs), model(*inputs))


def test_float64_partition_is_rejected_by_dtype():
    model = torch.nn.Linear(4, 2).double().eval()
    program = fxopt.capture(model, (torch.randn(3, 4, dtype=torch.float64),))
    with pytest.raises(BackendError, match=r"ONNX (\w+) \(from aten\.\w+\.default at \S+linear\.py:\d+\): "
                                           r"onnx-tensorrt's \1 does not take FP64"):
        fxopt.compile(program, "tensorrt")


# ------------------------------------------------------------------------------------------ real-model failures
class ConvBnAtInit(torch.nn.Module):
    """Conv + batch norm at PyTorch's initial values: the BN weight (a parameter) equals running_var (a
    buffer), so dedupe merges them into one tensor."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.head = torch.nn.Linear(8, 4)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


SUPPORT = "canonicalize,fold-constants,dedupe,dce,split{target=tensorrt,policy=support}"


def test_a_batch_norm_weight_deduped_with_its_running_var_exports_to_onnx():
    model = ConvBnAtInit().eval()
    x = torch.randn(2, 3, 8, 8)
    compiled, report = fxopt.export(model, (x,), backend="tensorrt", passes=SUPPORT)
    dedupe = next(r for r in report.passes if r.name == "dedupe")
    assert dedupe.modified   # the weight and running_var were merged
    assert any(s.device == "tensorrt" for s in compiled.stages)
    torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-6)


class FusedQkvAttention(torch.nn.Module):
    """A ViT block as timm writes it: one qkv Linear, reshape/permute, unbind (the exporter decomposes it)."""

    def __init__(self, d=16, heads=4):
        super().__init__()
        self.heads = heads
        self.qkv = torch.nn.Linear(d, 3 * d)
        self.proj = torch.nn.Linear(d, d)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


def test_a_partition_the_exporter_must_decompose_exports_with_its_input_names():
    model = FusedQkvAttention().eval()
    x = torch.randn(2, 5, 16)
    compiled, _ = fxopt.export(model, (x,), backend="tensorrt", passes=SUPPORT)
    assert [s.device for s in compiled.stages] == ["tensorrt"]
    torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-6)


def test_an_artifact_with_no_tensorrt_partition_says_why_in_one_line():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU()).eval()
    compiled, report = fxopt.export(model, (torch.randn(1, 4),), backend="tensorrt")
    assert all(s.device == "cpu" for s in compiled.stages)
    notes = [n for n in report.notes if n.startswith("no tensorrt partition:")]
    assert len(notes) == 1 and "\n" not in notes[0] and "policy=support" in notes[0]
    assert "policy=support" in next(r for r in report.passes if r.name == "split").notes[0]


class SplitHeads(torch.nn.Module):
    """GPT-2's qkv split: ``split`` whose pieces are used apart (the exporter makes that SplitToSequence)."""

    def __init__(self, d=12):
        super().__init__()
        self.qkv = torch.nn.Linear(d, 3 * d)
        self.d = d

    def forward(self, x):
        q, k, v = self.qkv(x).split(self.d, dim=-1)
        return (q * k).softmax(-1) @ v.transpose(-1, -2)


def test_a_split_whose_pieces_are_used_apart_exports_as_slices_tensorrt_supports():
    import onnx

    model = SplitHeads().eval()
    x = torch.randn(2, 5, 12)
    compiled, _ = fxopt.export(model, (x,), backend="tensorrt", passes=SUPPORT)
    (stage,) = [s for s in compiled.stages if s.device == "tensorrt"]
    ops = {n.op_type for n in onnx.load_from_string(stage.model_bytes).graph.node}
    assert "Slice" in ops and "SplitToSequence" not in ops
    torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-6)


def test_a_sort_with_ties_in_a_tensorrt_partition_matches_pytorch():
    # MoE routing sorts expert ids (many equal keys); stable-sort makes the sort stable, as ONNX TopK is
    class SortIds(torch.nn.Module):
        def forward(self, ids, rows):
            order = torch.sort(ids).indices
            return rows[order] * 2, order

    ids = torch.arange(40) * 7 % 4    # 40 keys, 4 values: PyTorch's unstable CPU sort reorders these ties
    assert not torch.equal(torch.sort(ids).indices, torch.sort(ids, stable=True).indices)
    rows = torch.randn(40, 4)
    program = fxopt.optimize(fxopt.capture(SortIds().eval(), (ids, rows)), "stable-sort," + SUPPORT,
                             verify=False)   # the outputs show the order of ties: PyTorch's eager order differs
    compiled = fxopt.compile(program, "tensorrt")
    assert any(s.device == "tensorrt" for s in compiled.stages)
    got_rows, got_order = compiled(ids, rows)
    assert torch.equal(got_order, torch.sort(ids, stable=True).indices)
    torch.testing.assert_close(got_rows, rows[got_order] * 2)
