"""Tests for fxopt.ir.serialize: JSON + safetensors artifacts that load without running code from the file."""
from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.fx
import torch.nn as nn
from safetensors.torch import load_file, save_file

from fxopt.errors import InputError
from fxopt.ir.serialize import dict_to_graph, graph_to_dict, load_graph_module, save_graph_module


# ------------------------------------------------------------------------------------------------ helpers
def _flat(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Make an ``ep.module()`` flat: no guard call, plain codegen (flat placeholders, tuple output)."""
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and node.target == "_guards_fn":
            gm.graph.erase_node(node)
    if hasattr(gm, "_guards_fn"):
        delattr(gm, "_guards_fn")
    gm.graph._codegen = torch.fx.graph.CodeGen()
    gm.recompile()
    return gm


def _export(model: nn.Module, inputs: tuple, dynamic_shapes=None) -> torch.fx.GraphModule:
    model.eval()
    ep = torch.export.export(model, inputs, dynamic_shapes=dynamic_shapes, strict=False).run_decompositions()
    return _flat(ep.module())


def _round_trip(gm: torch.fx.GraphModule, directory) -> torch.fx.GraphModule:
    save_graph_module(gm, directory)
    return load_graph_module(directory)


def _outputs_equal(a, b) -> bool:
    a, b = tuple(a), tuple(b)
    return len(a) == len(b) and all(type(x) is type(y) and (torch.equal(x, y) if isinstance(x, torch.Tensor)
                                                          else x == y) for x, y in zip(a, b))


def _node_rows(gm: torch.fx.GraphModule) -> list[tuple[str, str, str]]:
    return [(n.name, n.op, str(n.target)) for n in gm.graph.nodes]


# ------------------------------------------------------------------------------------------------- models
class Attention(nn.Module):
    def __init__(self, dim: int = 16):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, dim)
        self.register_buffer("causal", torch.tril(torch.ones(6, 6, dtype=torch.bool)))

    def forward(self, x):
        q, k, v = self.qkv(self.norm(x)).chunk(3, dim=-1)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
        scores = scores.masked_fill(~self.causal, float("-inf"))
        return self.proj(nn.functional.gelu(scores.softmax(-1) @ v)) + x


class ConvBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-1, 1)
            self.bn.running_var.uniform_(0.5, 2)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3))


class IndexAndMask(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("order", torch.tensor([3, 0, 2, 1], dtype=torch.int64))
        self.register_buffer("keep", torch.tensor([True, False, True, True]))
        self.scale = nn.Parameter(torch.randn(4))

    def forward(self, x):
        y = x.index_select(-1, self.order) * self.scale
        return torch.where(self.keep, y, torch.zeros_like(y)), self.order.sum() + x.shape[0]


class Bag(nn.Module):
    def __init__(self):
        super().__init__()
        self.bag = nn.EmbeddingBag(20, 6, mode="mean")

    def forward(self, idx):
        return self.bag(idx)


class TwoLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(64, 64)
        self.b = nn.Linear(64, 64)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        y = torch.cond(x.sum() > 0, lambda t: self.lin(t).sin(), lambda t: t.cos(), (x,))

        def cond_fn(i, v):
            return i < 3

        def body_fn(i, v):
            return i + 1, v * 2

        _, v = torch._higher_order_ops.while_loop(cond_fn, body_fn, (torch.tensor(0), y))
        return v.reshape(x.shape[0] * 2, -1) + x.shape[0]


@pytest.fixture(scope="module")
def attention():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 16)
    return _export(Attention(), (x,)), x


# ------------------------------------------------------------------------------------------ round trips
def test_attention_block_round_trips_bitwise(attention, tmp_path):
    gm, x = attention
    loaded = _round_trip(gm, tmp_path)
    assert _outputs_equal(gm(x), loaded(x))


def test_round_trip_keeps_nodes_ops_and_targets(attention, tmp_path):
    gm, _ = attention
    loaded = _round_trip(gm, tmp_path)
    assert _node_rows(loaded) == _node_rows(gm)
    assert [n.target for n in loaded.graph.nodes] == [n.target for n in gm.graph.nodes]


def test_minus_inf_constant_round_trips(attention, tmp_path):
    gm, _ = attention
    inf_nodes = [n for n in gm.graph.nodes if any(a == float("-inf") for a in n.args if isinstance(a, float))]
    assert inf_nodes, "the attention graph should carry a -inf scalar"
    loaded = _round_trip(gm, tmp_path)
    by_name = {n.name: n for n in loaded.graph.nodes}
    for node in inf_nodes:
        got = by_name[node.name]
        assert [a for a in got.args if isinstance(a, float)] == [a for a in node.args if isinstance(a, float)]
        assert got.kwargs == node.kwargs  # dtype / layout / device kwargs of scalar_tensor


def test_conv_batchnorm_round_trips_bitwise(tmp_path):
    torch.manual_seed(1)
    x = torch.randn(2, 3, 8, 8)
    gm = _export(ConvBN(), (x,))
    assert _outputs_equal(gm(x), _round_trip(gm, tmp_path)(x))


def test_int64_buffer_and_bool_mask_round_trip(tmp_path):
    torch.manual_seed(2)
    x = torch.randn(3, 4)
    gm = _export(IndexAndMask(), (x,))
    loaded = _round_trip(gm, tmp_path)
    assert loaded.order.dtype == torch.int64 and loaded.keep.dtype == torch.bool
    assert _outputs_equal(gm(x), loaded(x))


def test_embedding_bag_with_2d_input_round_trips(tmp_path):
    torch.manual_seed(3)
    idx = torch.randint(0, 20, (4, 5))
    gm = _export(Bag(), (idx,))
    assert _outputs_equal(gm(idx), _round_trip(gm, tmp_path)(idx))


def test_cond_and_while_loop_subgraphs_round_trip(tmp_path):
    torch.manual_seed(4)
    x = torch.randn(6, 4)
    gm = _export(Branchy(), (x,), dynamic_shapes=({0: torch.export.Dim("b", min=2)},))
    loaded = _round_trip(gm, tmp_path)
    assert isinstance(loaded.true_graph_0, torch.fx.GraphModule)
    for inp in (x, -x.abs(), torch.randn(3, 4)):  # both branches, and another batch size
        assert _outputs_equal(gm(inp), loaded(inp))


def test_split_call_module_partitions_round_trip(attention, tmp_path):
    from torch.fx.passes.split_module import split_module

    gm, x = attention
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    half = len(order) // 2
    split = split_module(gm, gm, lambda n: 0 if order[n] < half else 1)
    split.graph._codegen = torch.fx.graph.CodeGen()
    split.recompile()
    assert any(n.op == "call_module" for n in split.graph.nodes)
    loaded = _round_trip(split, tmp_path)
    assert isinstance(loaded.submod_1, torch.fx.GraphModule)
    assert _outputs_equal(split(x), loaded(x))


def test_every_safetensors_dtype_round_trips(tmp_path):
    values = {
        "f32": torch.randn(3), "f16": torch.randn(3).half(), "bf16": torch.randn(3).bfloat16(),
        "i64": torch.tensor([-(2**40), 0, 2**40]), "i32": torch.tensor([-5, 0, 7], dtype=torch.int32),
        "i8": torch.tensor([-128, 0, 127], dtype=torch.int8), "u8": torch.tensor([0, 1, 255], dtype=torch.uint8),
        "b": torch.tensor([True, False, True]),
    }
    graph = torch.fx.Graph()
    outs = tuple(graph.get_attr(name) for name in values)
    graph.output(outs)
    gm = torch.fx.GraphModule(dict(values), graph)
    loaded = _round_trip(gm, tmp_path)
    for name, value in values.items():
        got = getattr(loaded, name)
        assert got.dtype == value.dtype and torch.equal(got, value)


def test_non_contiguous_attribute_is_saved_contiguous_and_equal(tmp_path):
    weight = torch.randn(5, 7).t()  # a transposed view
    assert not weight.is_contiguous()
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    graph.output((graph.call_function(torch.ops.aten.mm.default, (x, graph.get_attr("w"))),))
    gm = torch.fx.GraphModule({"w": weight}, graph)
    x = torch.randn(2, 7)
    loaded = _round_trip(gm, tmp_path)
    assert loaded.w.is_contiguous() and torch.equal(loaded.w, weight)
    assert _outputs_equal(gm(x), loaded(x))


def test_parameters_come_back_without_requires_grad(attention, tmp_path):
    gm, _ = attention
    loaded = _round_trip(gm, tmp_path)
    params = list(loaded.parameters())
    assert params and not any(p.requires_grad for p in params)


# ------------------------------------------------------------------------------------------ shared tensors
@pytest.fixture(scope="module")
def two_linear():
    torch.manual_seed(5)
    x = torch.randn(3, 64)
    return _export(TwoLinear(), (x,)), x


def _tied(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    gm = copy.deepcopy(gm)
    gm.b.weight = gm.a.weight  # weight dedupe: two get_attr targets, one tensor object
    return gm


def test_shared_tensor_is_stored_once(two_linear, tmp_path):
    gm, _ = two_linear
    tied = _tied(gm)
    assert len(graph_to_dict(tied)[1]) == 3  # a.weight (also b.weight), a.bias, b.bias
    save_graph_module(tied, tmp_path / "tied")
    untied = copy.deepcopy(tied)
    untied.b.weight = nn.Parameter(untied.a.weight.detach().clone())
    save_graph_module(untied, tmp_path / "untied")
    tied_size = os.path.getsize(tmp_path / "tied" / "graph.safetensors")
    untied_size = os.path.getsize(tmp_path / "untied" / "graph.safetensors")
    assert untied_size - tied_size >= 64 * 64 * 4


def test_shared_tensor_comes_back_shared(two_linear, tmp_path):
    gm, x = two_linear
    tied = _tied(gm)
    loaded = _round_trip(tied, tmp_path)
    assert loaded.a.weight is loaded.b.weight
    assert loaded.a.weight.data_ptr() == loaded.b.weight.data_ptr()
    assert _outputs_equal(tied(x), loaded(x))


def test_views_of_one_storage_are_saved(tmp_path):
    base = torch.randn(4, 4)
    graph = torch.fx.Graph()
    graph.output((graph.get_attr("top"), graph.get_attr("bottom"), graph.get_attr("whole")))
    gm = torch.fx.GraphModule({"top": base[:2], "bottom": base[2:], "whole": base}, graph)
    loaded = _round_trip(gm, tmp_path)
    assert torch.equal(loaded.top, base[:2]) and torch.equal(loaded.bottom, base[2:])
    assert torch.equal(loaded.whole, base)


# --------------------------------------------------------------------------------------------- determinism
def test_same_graph_saved_twice_gives_identical_bytes(attention, tmp_path):
    gm, _ = attention
    first = save_graph_module(gm, tmp_path / "one")
    second = save_graph_module(gm, tmp_path / "two")
    for a, b in zip(first, second):
        with open(a, "rb") as fa, open(b, "rb") as fb:
            assert fa.read() == fb.read()


def test_saving_a_loaded_graph_reproduces_the_files(attention, tmp_path):
    gm, _ = attention
    first = save_graph_module(gm, tmp_path / "one")
    second = save_graph_module(load_graph_module(tmp_path / "one"), tmp_path / "two")
    for a, b in zip(first, second):
        with open(a, "rb") as fa, open(b, "rb") as fb:
            assert fa.read() == fb.read()


def test_document_is_plain_json_with_format_and_qualified_op_names(attention):
    gm, _ = attention
    doc, _ = graph_to_dict(gm)
    text = json.dumps(doc, allow_nan=False)  # no NaN/Infinity tokens, nothing unserializable
    assert doc["format"] == "fxopt-graph" and doc["version"] == 1
    targets = {n["target"] for n in doc["graph"]["nodes"] if n["op"] == "call_function"}
    assert "aten::addmm.default" in targets or "aten::mm.default" in targets
    assert '{"float": "-inf"}' in text


def test_meta_val_provenance_and_placement_are_kept(attention, tmp_path):
    gm, _ = attention
    gm = copy.deepcopy(gm)
    target = next(n for n in gm.graph.nodes if n.op == "call_function")
    target.meta["provenance"] = {"source": "model.py:3", "module": "qkv", "origin": None, "pass": "capture"}
    target.meta["placement"] = "cpu"
    other = next(n for n in gm.graph.nodes if n.op == "placeholder")
    other.meta["provenance"] = {"bad": object()}  # not JSON-able: dropped, not fatal
    loaded = _round_trip(gm, tmp_path)
    got = {n.name: n for n in loaded.graph.nodes}
    assert got[target.name].meta["provenance"] == target.meta["provenance"]
    assert got[target.name].meta["placement"] == "cpu"
    assert got["x"].meta["val_repr"] == "float32[2, 6, 16]"
    assert "provenance" not in got["x"].meta


def test_unusual_argument_values_round_trip():
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    item = graph.call_function(__import__("operator").getitem, (x, (slice(None, 2, None), Ellipsis, 0)))
    full = graph.call_function(torch.ops.aten.full.default, ([2], float("nan")),
                               {"dtype": torch.float16, "layout": torch.strided, "device": torch.device("cpu")})
    clone = graph.call_function(torch.ops.aten.clone.default, (item,), {"memory_format": torch.contiguous_format})
    graph.output((clone, full, [item, -0.0, 1e300, (True, None, "s")]))
    gm = torch.fx.GraphModule(torch.nn.Module(), graph)
    doc, tensors = graph_to_dict(gm)
    loaded = dict_to_graph(json.loads(json.dumps(doc)), tensors)
    assert [(n.name, n.op) for n in loaded.graph.nodes] == [(n.name, n.op) for n in gm.graph.nodes]
    by_name = {n.name: n for n in loaded.graph.nodes}
    assert by_name[item.name].args[1] == (slice(None, 2, None), Ellipsis, 0)
    assert type(by_name[item.name].args[1]) is tuple
    assert math.isnan(by_name[full.name].args[1]) and by_name[full.name].kwargs["dtype"] is torch.float16
    assert by_name[clone.name].kwargs["memory_format"] is torch.contiguous_format
    out = by_name["output"].args[0][2]
    assert isinstance(out, list) and type(out[3]) is tuple and math.copysign(1, out[1]) == -1
    a, b = gm(torch.randn(3, 4, 5)), loaded(torch.randn(3, 4, 5))
    assert a[1].dtype == b[1].dtype == torch.float16 and torch.isnan(b[1]).all()


# ------------------------------------------------------------------------------------------------ security
def _doc_with_target(attention, kind: str, target: str, args=None) -> tuple[dict, dict]:
    gm, _ = attention
    doc, tensors = graph_to_dict(gm)
    doc = json.loads(json.dumps(doc))
    node = next(n for n in doc["graph"]["nodes"] if n["op"] == "call_function")
    node["target"], node["target_kind"] = target, kind
    if args is not None:
        node["args"] = args
    return doc, tensors


@pytest.mark.parametrize("kind,target", [("builtin", "os.system"), ("op", "os.system"),
                                         ("builtin", "builtins.eval"), ("hop", "eval")])
def test_python_callables_outside_the_allowlist_are_rejected(attention, tmp_path, kind, target):
    marker = tmp_path / "pwned"
    payload = f"touch {marker}" if "system" in target else f"open({str(marker)!r}, 'w')"
    doc, tensors = _doc_with_target(attention, kind, target, [payload])
    with pytest.raises(InputError, match=target.split(".")[-1]):
        dict_to_graph(doc, tensors)
    assert not marker.exists()


def test_unregistered_operator_is_rejected_with_advice(attention):
    doc, tensors = _doc_with_target(attention, "op", "mylib_not_loaded::frobnicate.default")
    with pytest.raises(InputError, match=r"mylib_not_loaded::frobnicate.*not registered.*import the library"):
        dict_to_graph(doc, tensors)


def test_code_in_a_name_is_rejected(attention, tmp_path):
    marker = tmp_path / "pwned"
    gm, _ = attention
    doc, tensors = graph_to_dict(gm)
    doc = json.loads(json.dumps(doc))
    placeholder = next(n for n in doc["graph"]["nodes"] if n["op"] == "placeholder")
    placeholder["target"] = f"x=open({str(marker)!r}, 'w')"
    with pytest.raises(InputError, match="placeholder"):
        dict_to_graph(doc, tensors)
    assert not marker.exists()


def test_unsupported_version_is_rejected(attention):
    gm, _ = attention
    doc, tensors = graph_to_dict(gm)
    doc["version"] = 99
    with pytest.raises(InputError, match="version 99"):
        dict_to_graph(doc, tensors)


def test_saving_an_arbitrary_python_function_is_refused():
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    graph.output((graph.call_function(torch.nn.functional.relu, (x,)),))
    with pytest.raises(InputError, match="relu"):
        graph_to_dict(torch.fx.GraphModule(torch.nn.Module(), graph))


# ------------------------------------------------------------------------------------------- bad files
def test_truncated_safetensors_is_rejected_naming_the_file(attention, tmp_path):
    gm, _ = attention
    _, st_path = save_graph_module(gm, tmp_path)
    with open(st_path, "rb") as f:
        data = f.read()
    with open(st_path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(InputError, match="graph.safetensors"):
        load_graph_module(tmp_path)


def test_missing_json_is_rejected_naming_the_file(tmp_path):
    with pytest.raises(InputError, match=r"model\.json"):
        load_graph_module(tmp_path, stem="model")


def test_corrupt_json_is_rejected_naming_the_file(attention, tmp_path):
    gm, _ = attention
    json_path, _ = save_graph_module(gm, tmp_path)
    with open(json_path, "a") as f:
        f.write("}garbage")
    with pytest.raises(InputError, match="graph.json"):
        load_graph_module(tmp_path)


def test_tensors_that_do_not_match_the_document_are_rejected(attention, tmp_path):
    gm, _ = attention
    _, st_path = save_graph_module(gm, tmp_path)
    tensors = load_file(st_path)
    key = next(iter(tensors))
    tensors[key] = torch.zeros(1, dtype=torch.int8)
    save_file(tensors, st_path)
    with pytest.raises(InputError, match=key):
        load_graph_module(tmp_path)


# ----------------------------------------------------------------------------------------- new process
def test_loads_in_a_new_process_without_the_model_code(attention, tmp_path):
    gm, x = attention
    save_graph_module(gm, tmp_path / "artifact")
    save_file({"x": x}, str(tmp_path / "inputs.safetensors"))
    script = textwrap.dedent(f"""
        import sys
        from safetensors.torch import load_file, save_file
        from fxopt.ir.serialize import load_graph_module
        gm = load_graph_module({str(tmp_path / "artifact")!r})
        out = gm(load_file({str(tmp_path / "inputs.safetensors")!r})["x"])
        save_file({{f"out{{i}}": t.contiguous() for i, t in enumerate(out)}}, {str(tmp_path / "out.safetensors")!r})
        assert "test_serialize" not in sys.modules
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = load_file(str(tmp_path / "out.safetensors"))
    expected = gm(x)
    assert len(got) == len(expected)
    assert all(torch.equal(got[f"out{i}"], t) for i, t in enumerate(expected))
