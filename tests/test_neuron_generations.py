"""Neuron generations (inf1, inf2, trn1, trn2): each generation's documented operator list, its support table,
its device profile, and the neuron backend's ``device`` option."""
from __future__ import annotations

import json
import os

import pytest
import torch

import fxopt
from fxopt.backends import base
from fxopt.errors import BackendError, InputError
from fxopt.ir import targets
from fxopt.ir.devices import PROFILES, get_profile


class EmbedLinear(torch.nn.Module):
    """Token embedding then a linear layer: embedding + mm/addmm, views and a transposed weight."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(20, 8)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, ids):
        return self.fc(self.emb(ids))


@pytest.fixture(scope="module")
def embed_program():
    torch.manual_seed(0)
    model = EmbedLinear().eval()
    ids = torch.randint(0, 20, (2, 5))
    return model, ids, fxopt.capture(model, (ids,))


def _node(program, packet: str):
    return next(n for n in program.graph.nodes
                if n.op == "call_function" and targets.packet_name(n.target) == packet)


def test_neuronx_list_ships_with_its_source_and_entries_read_in_the_document():
    ops = targets.neuron_operators("inf2")
    assert len(ops) == 41
    assert {"aten::embedding", "aten::_softmax", "aten::addmm", "aten::native_batch_norm", "aten::zero_"} <= ops
    assert "aten::embedding_bag" not in ops and "aten::_convolution" not in ops
    source = targets.data_source("neuron", device="inf2")
    assert "torch-neuronx" in source and "pytorch-neuron-supported-operators" in source


def test_trn1_and_trn2_use_the_torch_neuronx_list_and_inf1_the_torch_neuron_one():
    nx = targets.neuron_operators("inf2")
    assert targets.neuron_operators("trn1") == nx and targets.neuron_operators("trn2") == nx
    assert targets.neuron_operators("inf1") == targets.neuron_operators() and len(targets.neuron_operators()) == 174
    assert targets.data_source("neuron") == targets.data_source("neuron", device="inf1") != targets.data_source(
        "neuron", device="trn2")


def test_default_neuron_table_is_inf1_and_tables_are_cached_per_device():
    assert targets.NEURON_DEVICES == ("inf1", "inf2", "trn1", "trn2")
    assert targets.support_table("neuron").device == "inf1"
    assert targets.support_table("neuron") is targets.support_table("neuron", device="inf1")
    assert targets.support_table("neuron", device="INF2") is targets.support_table("neuron", device="inf2")
    assert targets.support_table("neuron", device="inf2") is not targets.support_table("neuron", device="inf1")


def test_inf2_table_supports_embedding_which_inf1_does_not(embed_program):
    emb = _node(embed_program[2], "embedding")
    assert not targets.support_table("neuron").supports(emb)
    for device in ("inf2", "trn1", "trn2"):
        assert targets.support_table("neuron", device=device).supports(emb), device


def test_embedding_bag_is_in_no_neuron_generation_list():
    program = fxopt.capture(torch.nn.EmbeddingBag(10, 4, mode="sum").eval(),
                            (torch.tensor([1, 2, 3, 4]), torch.tensor([0, 2])))
    bag = _node(program, "_embedding_bag")
    for device in targets.NEURON_DEVICES:
        why = targets.support_table("neuron", device=device).why_not(bag)
        assert why is not None and "aten::embedding_bag" in why, device


def test_core_aten_batch_norm_maps_to_the_listed_native_batch_norm_on_inf2():
    program = fxopt.capture(torch.nn.BatchNorm1d(3).eval(), (torch.randn(4, 3),))
    bn = _node(program, "_native_batch_norm_legit_no_training")
    assert targets.support_table("neuron", device="inf2").supports(bn)


def test_unlisted_op_on_inf2_is_refused_with_the_documented_list_named():
    program = fxopt.capture(torch.nn.Conv2d(1, 1, 3).eval(), (torch.randn(1, 1, 5, 5),))
    conv = _node(program, "convolution")
    assert targets.support_table("neuron").supports(conv)              # in torch-neuron's list
    why = targets.support_table("neuron", device="inf2").why_not(conv)  # not in the torch-neuronx page
    assert "torch-neuronx" in why and "aten::convolution" in why


def test_unknown_neuron_device_is_a_one_line_input_error_naming_valid_devices():
    for call in (lambda: targets.support_table("neuron", device="inf3"),
                 lambda: base.get_backend("neuron{device=inf3}")):
        with pytest.raises(InputError) as info:
            call()
        assert "inf1, inf2, trn1, trn2" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(InputError, match="only"):
        targets.support_table("xla", device="inf2")


@pytest.mark.parametrize("name,bf16,fp32", [("inf2", 95e12, 23.75e12), ("trn1", 95e12, 23.75e12),
                                            ("trn2", 667e12 / 8, 181e12 / 8)])
def test_neuron_generation_profiles_are_accelerators_with_their_documented_figures(name, bf16, fp32):
    profile = get_profile(name)
    assert profile is PROFILES[name] and profile.kind == "accelerator"
    assert profile.peak_flops == pytest.approx(bf16) and profile.peak_flops_fp32 == pytest.approx(fp32)
    assert profile.peak_flops > PROFILES["inf1"].peak_flops > PROFILES["cpu"].peak_flops
    assert profile.mem_bandwidth > PROFILES["inf1"].mem_bandwidth


def test_backend_device_option_picks_the_table_and_is_saved():
    backend = base.get_backend("neuron{device=trn1}")
    assert backend.options()["device"] == "trn1" and backend.support().device == "trn1"
    assert base.get_backend("neuron").options()["device"] == "inf1"


def test_inf2_backend_compiles_an_embedding_that_inf1_refuses(embed_program, tmp_path):
    model, ids, program = embed_program
    with pytest.raises(BackendError, match="aten::embedding is not in the torch-neuron"):
        fxopt.compile(program, "neuron")
    art = fxopt.compile(program, "neuron{device=inf2}")
    torch.testing.assert_close(art(ids), model(ids))
    art.save(str(tmp_path / "a"))
    with open(os.path.join(tmp_path, "a", "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    (entry,) = [p for p in manifest["partitions"] if p.get("runtime") == "torchscript-cpu"]
    assert entry["neuron_device"] == "inf2" and "torch-neuronx" in entry["op_list"]
    (trace,) = entry["traces"]
    assert trace["compile_script"] == "inf2_trn1"
    assert "'--target', 'inf2'" in trace["compile"]["inf2_trn1"]["python"]
    assert fxopt.load(str(tmp_path / "a")).extra["backend_options"]["device"] == "inf2"
