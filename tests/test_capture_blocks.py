"""Block-wise capture (ir/capture/blocks.py): each repeated block exported once and stitched gives the graph
whole-model export gives — the same op multiset, the same outputs, the same module paths — and falls back
to whole-model export wherever a block's graph depends on more than its inputs and weights."""
from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch import nn

import fxopt
from fxopt.ir import capture as cap
from fxopt.ir.capture import blocks


# Block-wise capture exports in one trace to core ATen (ir/capture/core_export.py), whole-model export the
# public way; the two spell a few ops differently and keep different numbers of export's dtype checks.
_SAME_OP = {"aten.squeeze.dim": "aten.squeeze.dims", "aten.lift_fresh_copy.default": "aten.clone.default"}
_COMPUTES_NOTHING = {"aten._assert_tensor_metadata.default"}


def _ops(program) -> Counter:
    names = (str(n.target) for n in program.graph.nodes if n.op == "call_function")
    return Counter(_SAME_OP.get(name, name) for name in names if name not in _COMPUTES_NOTHING)


def _modules(program) -> set[str]:
    return {n.meta["provenance"]["module"] for n in program.graph.nodes if n.op == "call_function"}


def _outputs(program) -> list[torch.Tensor]:
    return [t for t in program.run_flat(program.flat_example_inputs()) if isinstance(t, torch.Tensor)]


def _both(model, inputs, monkeypatch, **kwargs):
    """``(whole-model capture, block-wise capture)`` of ``model``."""
    monkeypatch.setenv(blocks.ENV_SWITCH, "0")
    whole = cap.capture(model, inputs, **kwargs)
    monkeypatch.setenv(blocks.ENV_SWITCH, "1")
    return whole, cap.capture(model, inputs, **kwargs)


def _assert_same_graph(whole, stitched) -> None:
    assert _ops(stitched) == _ops(whole)
    assert _modules(stitched) == _modules(whole)
    for a, b in zip(_outputs(whole), _outputs(stitched), strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0)


class Block(nn.Module):
    def __init__(self, width: int, index: int = 0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.up = nn.Linear(width, 2 * width)
        self.down = nn.Linear(2 * width, width)
        self.index = index

    def forward(self, x: torch.Tensor, scale: float = 1.0, mask: torch.Tensor | None = None):
        h = self.down(torch.nn.functional.gelu(self.up(self.norm(x)))) * scale
        if mask is not None:
            h = h.masked_fill(mask, 0.0)
        return x + h, None


class Stack(nn.Module):
    """Blocks called as users write them: keywords, a None argument, a tuple result with a None in it."""

    def __init__(self, depth: int = 4, width: int = 16) -> None:
        super().__init__()
        self.embed = nn.Linear(8, width)
        self.layers = nn.ModuleList(Block(width, i) for i in range(depth))
        self.head = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        for layer in self.layers:
            h, _ = layer(h, scale=0.5, mask=None)
        return self.head(h)


def _stack(depth: int = 4):
    torch.manual_seed(0)
    return Stack(depth).eval(), (torch.randn(2, 5, 8),)


def test_repeated_blocks_are_exported_once_and_give_the_whole_model_graph(monkeypatch) -> None:
    model, inputs = _stack()
    whole, stitched = _both(model, inputs, monkeypatch)
    assert stitched.capture_summary == "captured block-wise: 4 blocks from 1 export(s) (Block x4)"
    assert whole.capture_summary == ""
    _assert_same_graph(whole, stitched)
    assert "layers.3.up" in _modules(stitched)


def test_each_instance_keeps_its_own_weights(monkeypatch) -> None:
    model, inputs = _stack()
    _, stitched = _both(model, inputs, monkeypatch)
    bound = dict(stitched.graph_module.named_parameters()) | dict(stitched.graph_module.named_buffers())
    for i, layer in enumerate(model.layers):
        torch.testing.assert_close(bound[f"layers.{i}.up.weight"], layer.up.weight, rtol=0, atol=0)
        assert bound[f"layers.{i}.up.weight"].data_ptr() != layer.up.weight.data_ptr()   # cloned, not shared


class Branching(Stack):
    """Layer 2 takes another path chosen by a Python attribute (same structure, other graph)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        for layer in self.layers:
            h, _ = layer(h, scale=0.5) if layer.index != 2 else (torch.tanh(layer.up(h))[..., :16], None)
        return self.head(h)


class IndexDependent(Block):
    def forward(self, x: torch.Tensor, scale: float = 1.0, mask: torch.Tensor | None = None):
        out, none = super().forward(x, scale, mask)
        return (out * 2 if self.index % 2 else out), none


def test_an_instance_whose_graph_depends_on_an_attribute_is_traced_with_the_model(monkeypatch) -> None:
    torch.manual_seed(0)
    model = Stack(6).eval()
    for i, layer in enumerate(model.layers):
        model.layers[i] = IndexDependent(16, i)
        model.layers[i].load_state_dict(layer.state_dict())
    inputs = (torch.randn(2, 5, 8),)
    whole, stitched = _both(model, inputs, monkeypatch)
    # the export of layer 0 (index even) reproduces layers 0, 2, 4 only; 1, 3, 5 are traced in place
    assert stitched.capture_summary == "captured block-wise: 3 blocks from 1 export(s) (IndexDependent x3)"
    _assert_same_graph(whole, stitched)


def test_a_block_not_called_through_its_forward_is_traced_with_the_model(monkeypatch) -> None:
    monkeypatch.setattr(blocks, "MIN_SAVED_FRACTION", 0.0)   # three of five blocks: under half the model
    torch.manual_seed(0)
    model, inputs = Branching(5).eval(), (torch.randn(2, 5, 8),)
    whole, stitched = _both(model, inputs, monkeypatch)
    # layer 2 runs no forward; layer 3 gets its strided slice (another input layout): 0, 1 and 4 are stitched
    assert stitched.capture_summary == "captured block-wise: 3 blocks from 1 export(s) (Block x3)"
    _assert_same_graph(whole, stitched)


class Counting(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.add_(1)
        return self.lin(x)


def test_blocks_that_write_into_a_buffer_are_exported_with_the_model(monkeypatch) -> None:
    model = nn.Sequential(*(Counting() for _ in range(3))).eval()
    inputs = (torch.randn(2, 4),)
    whole, stitched = _both(model, inputs, monkeypatch)
    assert stitched.capture_summary == ""
    _assert_same_graph(whole, stitched)
    assert all(float(m.calls) == 0 for m in model)   # the recording run's counts are not left in the model


def test_capture_leaves_the_users_model_as_it_was(monkeypatch) -> None:
    model, inputs = _stack()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    monkeypatch.setenv(blocks.ENV_SWITCH, "1")
    program = cap.capture(model, inputs)
    assert program.capture_summary.startswith("captured block-wise")
    for m in model.modules():
        assert "forward" not in m.__dict__
        assert not m._forward_hooks and not m._forward_pre_hooks
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_two_instances_are_not_worth_a_block_export(monkeypatch) -> None:
    model, inputs = _stack(depth=blocks.MIN_INSTANCES - 1)
    _, stitched = _both(model, inputs, monkeypatch)
    assert stitched.capture_summary == ""


def test_a_model_whose_repeats_are_a_small_part_is_exported_whole(monkeypatch) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), *(nn.Sequential(nn.Linear(16, 16), nn.ReLU()) for _ in range(3)),
                          *(nn.Linear(16, 16) for _ in range(12))).eval()
    # the repeats after the first hold 4 of the 19 leaf modules that run
    _, stitched = _both(model, (torch.randn(2, 8),), monkeypatch)
    assert stitched.capture_summary == ""
    monkeypatch.setattr(blocks, "MIN_SAVED_FRACTION", 0.2)
    assert cap.capture(model, (torch.randn(2, 8),)).capture_summary.startswith("captured block-wise: 3 blocks")


def test_dynamic_shapes_use_whole_model_export(monkeypatch) -> None:
    model, inputs = _stack()
    monkeypatch.setenv(blocks.ENV_SWITCH, "1")
    assert cap.capture(model, inputs, dynamic_shapes="batch").capture_summary == ""


@pytest.mark.parametrize("name", fxopt.zoo.names())
def test_every_zoo_model_captures_block_wise_to_the_whole_model_graph(name, monkeypatch) -> None:
    monkeypatch.setattr(blocks, "MIN_INSTANCES", 2)
    monkeypatch.setattr(blocks, "MIN_SAVED_FRACTION", 0.0)
    model, inputs = fxopt.zoo.get(name, small=True)
    whole, stitched = _both(model, inputs, monkeypatch)
    _assert_same_graph(whole, stitched)


def _corpus_names() -> list[str]:
    from tests.corpus import BUILDERS
    return list(BUILDERS)


# families whose layers are called as in eager while exporting (the rest fall back, e.g. ViT's mask is
# expanded with stride 0 under export but materialised in eager); each must really be stitched
_STITCHED = {"bert", "gpt2", "llama", "mistral", "t5", "bart", "whisper", "mixtral", "qwen2_moe"}


@pytest.mark.parametrize("name", _corpus_names())
def test_every_hugging_face_corpus_model_captures_block_wise_to_the_whole_model_graph(name, monkeypatch) -> None:
    pytest.importorskip("transformers")
    from tests.corpus import BUILDERS

    monkeypatch.setattr(blocks, "MIN_INSTANCES", 2)
    monkeypatch.setattr(blocks, "MIN_SAVED_FRACTION", 0.0)
    model, inputs = BUILDERS[name]()
    whole, stitched = _both(model, inputs, monkeypatch)
    _assert_same_graph(whole, stitched)
    if name in _STITCHED:
        assert stitched.capture_summary.startswith("captured block-wise"), name


def test_recorded_inputs_keep_their_memory_layout() -> None:
    expanded = torch.randn(4, 1).expand(4, 3)      # zero stride, as Hugging Face's rotary tables in eager
    sliced = torch.randn(2, 5, 32)[..., :16]
    for x in (expanded, sliced):
        copy = blocks._copy_with_layout(x)
        assert copy.stride() == x.stride()
        assert copy.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()
        torch.testing.assert_close(copy, x, rtol=0, atol=0)
