"""Decode loops captured with a dynamic batch (``fxopt.capture(model, inputs, dynamic_shapes="batch")``).

One capture (at the example batch 2 for zoo:ocr small, 4 for the GRU decoder of tests/test_unroll.py) must
decode batch 1 and batch 8 with the tokens of the plain Python greedy loop (`loops.greedy`), in every
variant: the step loop graph, the decode runtime, `unroll{mode=partitioned}` and `unroll{mode=full}`, and
after save + `fxopt.load`. A model whose code fixes the batch is a one-line InputError.
"""
from __future__ import annotations

import pytest
import torch

import fxopt
from fxopt.backends import decode
from fxopt.errors import InputError
from fxopt.ir import cost, loops

from conftest import captured as shared_capture
from test_unroll import GRUDecoder

aten = torch.ops.aten


class ReshapesToExampleBatch(GRUDecoder):
    """step reshapes the hidden state to the example's batch (``self.batch``): export must specialise."""

    def step(self, token, state, memory):
        h, count = state
        return super().step(token, (h.reshape(self.batch, -1), count), memory)


class ZerosOfExampleBatch(GRUDecoder):
    """init_state builds the counter with the example's batch size instead of the memory's."""

    def init_state(self, memory):
        ctx, _ = memory
        return ctx * 1.0, torch.zeros(self.batch, 1)


_CACHE: dict = {}


def gru():
    """(model, program) for the GRU decoder captured at batch 4 with a dynamic batch (once per session)."""
    if "gru" not in _CACHE:
        model = GRUDecoder(4)
        _CACHE["gru"] = (model, fxopt.capture(model, model.example_inputs(), dynamic_shapes="batch"))
    return _CACHE["gru"]


def gru_variant(spec: str):
    """The GRU program after ``fxopt.optimize(program, spec)`` (built once per spec)."""
    key = ("gru", spec)
    if key not in _CACHE:
        _CACHE[key] = fxopt.optimize(gru()[1], spec)
    return _CACHE[key]


def gru_inputs(batch: int) -> torch.Tensor:
    """Encoder input ``[batch, 6]`` for the GRU decoder (a fresh draw per batch, not the example's)."""
    return torch.randn(batch, 6, generator=torch.Generator().manual_seed(10 + batch))


def ocr():
    """(model, program, {batch: images}) for zoo:ocr small (seed 1) captured at its example batch 2 with a
    dynamic batch; the images are scaled noise, on which this seed's rows decode differently."""
    if "ocr" not in _CACHE:
        model, inputs, program = shared_capture("ocr", small=True, seed=1, dynamic_shapes="batch")
        assert inputs[0].shape[0] == 2
        images = {b: 3 * torch.randn(b, 1, 16, 32, generator=torch.Generator().manual_seed(b)) for b in (1, 8)}
        _CACHE["ocr"] = (model, program, images)
    return _CACHE["ocr"]


def _all_equal(program, x, ref) -> None:
    """The program's graph, its compiled form (decode runtime or reference), all equal ``ref``."""
    assert torch.equal(program(x), ref)
    compiled = decode.compile(program) if decode.uses_runtime(program) else fxopt.compile(program)
    assert torch.equal(compiled(x), ref)


# ------------------------------------------------------------------------------------------ capture
def test_capture_records_one_symbolic_batch():
    model, program = gru()
    region = loops.decode_region(program)
    assert region["dynamic_batch"] and region["batch"] == 4
    assert [m["batch_dim"] for m in region["memory"]] == [0, 0]
    assert [s["batch_dim"] for s in region["state"]] == [0, 0]
    (symbol, uses), = program.dynamic_dims.items()
    assert uses == [[program.placeholders()[0].name, 0]]
    for piece in ("encode", "init_state", "step"):
        val = region[piece].placeholders()[0].meta["val"]
        assert isinstance(val.shape[0], torch.SymInt), piece
    assert region["batch_symbol"] not in region["cache_symbols"]


def test_decoder_flops_are_those_of_the_example_batch():
    model, program = gru()
    region = loops.decode_region(program)
    flops = loops.decoder_flops(region)
    full = gru_variant("unroll{mode=full}")
    (symbol,) = full.dynamic_dims
    total = cost.graph_cost(full.graph_module).evaluate({symbol: region["batch"]}).flops
    encoder = sum(cost.graph_cost(region[k].graph_module).evaluate().flops for k in ("encode", "init_state"))
    # The full unroll at batch 4 is encoder + init + the per-step costs + the greedy update per step
    # (argmax over the vocab, where, eq, or: under vocab + 5 FLOPs per row).
    assert 0 < total - encoder - flops["exact"] < model.max_len * region["batch"] * (10 + 5)
    assert out_of_batch(region, 8) == 2 * out_of_batch(region, 4)


def out_of_batch(region: dict, batch: int) -> int:
    """FLOPs of the step graph at cache step 0 with the batch symbol set to ``batch``."""
    c = cost.graph_cost(region["step"].graph_module)
    subs = {sym: region["state"][i]["shape"][d] for sym, (i, d) in region["cache_symbols"].items()}
    return int(c.evaluate({**subs, region["batch_symbol"]: batch}).flops)


# ------------------------------------------------------------------------------------------ tokens
@pytest.mark.parametrize("batch", [1, 8])
def test_gru_every_variant_decodes_any_batch(batch):
    model, program = gru()
    x = gru_inputs(batch)
    ref = loops.greedy(model, x)
    if batch == 8:
        assert len({int((row == 2).nonzero()[0, 0]) for row in ref}) > 1   # rows stop at different steps
    _all_equal(program, x, ref)
    for spec in ("unroll{partition=3}", "unroll{boundaries=1:3}", "unroll{mode=full}"):
        _all_equal(gru_variant(spec), x, ref)


@pytest.mark.parametrize("batch", [1, 8])
def test_ocr_step_loop_and_runtime_decode_any_batch(batch):
    model, program, images = ocr()
    ref = loops.greedy(model, images[batch])
    assert ref.shape == (batch, model.max_len)
    if batch == 8:
        assert len({tuple(row) for row in ref.tolist()}) > 1                     # rows decode differently
    _all_equal(program, images[batch], ref)


def test_ocr_partitioned_and_full_unroll_decode_batch_1_and_8():
    model, program, images = ocr()
    refs = {b: loops.greedy(model, x) for b, x in images.items()}
    for spec in ("unroll{partition=3}", "unroll{mode=full}"):
        out = fxopt.optimize(program, spec)
        compiled = decode.compile(out) if decode.uses_runtime(out) else fxopt.compile(out)
        for batch, x in images.items():
            assert torch.equal(out(x), refs[batch]), (spec, batch)
            assert torch.equal(compiled(x), refs[batch]), (spec, batch)


# ------------------------------------------------------------------------------------------ graphs
def test_partitions_take_a_symbolic_batch():
    model, program = gru()
    out = gru_variant("unroll{partition=3}")
    for k in range(3):
        part = getattr(out.graph_module, f"decode_part{k}")
        vals = [n.meta["val"] for n in part.graph.nodes if n.op == "placeholder"]
        assert all(isinstance(v.shape[0], torch.SymInt) for v in vals)              # token, finished, state, memory
        assert not [n for n in part.graph.nodes if n.target is aten.full.default
                    and not isinstance(n.args[0][0], torch.fx.Node)]               # no full([4], ...)


def test_full_unroll_is_flat_with_only_the_batch_symbolic():
    model, program = gru()
    out = gru_variant("unroll{mode=full}")
    nodes = list(out.graph.nodes)
    assert not [n for n in nodes if n.op == "call_module"]
    symbols = {str(d.node.expr) for n in nodes if isinstance(n.meta.get("val"), torch.Tensor)
               for d in n.meta["val"].shape if isinstance(d, torch.SymInt)}
    assert symbols == set(out.dynamic_dims)                                        # one symbol: the batch
    tokens = next(n for n in nodes if n.op == "output").args[0][0].meta["val"]
    assert str(tokens.shape[0].node.expr) in symbols and tokens.shape[1] == model.max_len


# ------------------------------------------------------------------------------------------ artifact
def test_saved_partitions_decode_any_batch(tmp_path):
    model, program = gru()
    out = gru_variant("unroll{partition=3}")
    fxopt.compile(out).save(str(tmp_path / "art"))
    loaded = fxopt.load(str(tmp_path / "art"))
    assert isinstance(loaded, decode.DecodeCompiled) and loaded.plan["dynamic_batch"]
    for batch in (1, 8):
        x = gru_inputs(batch)
        assert torch.equal(loaded(x), loops.greedy(model, x))


def test_saved_full_unroll_decodes_any_batch(tmp_path):
    model, program = gru()
    fxopt.compile(gru_variant("unroll{mode=full}")).save(str(tmp_path / "full"))
    loaded = fxopt.load(str(tmp_path / "full"))
    for batch in (1, 8):
        x = gru_inputs(batch)
        assert torch.equal(loaded(x), loops.greedy(model, x))


# ------------------------------------------------------------------------------------------ errors
def test_example_batch_1_is_refused():
    model = GRUDecoder(1)
    with pytest.raises(InputError, match=">= 2") as err:
        fxopt.capture(model, model.example_inputs(), dynamic_shapes="batch")
    assert "\n" not in str(err.value)


def test_step_that_fixes_the_batch_is_one_line_error():
    model = ReshapesToExampleBatch(4)
    with pytest.raises(InputError, match="specialised the batch of step") as err:
        fxopt.capture(model, model.example_inputs(), dynamic_shapes="batch")
    assert "\n" not in str(err.value)


def test_init_state_of_fixed_batch_names_the_tensor():
    model = ZerosOfExampleBatch(4)
    with pytest.raises(InputError, match=r"init_state returns state\[1\] with its batch fixed at 4") as err:
        fxopt.capture(model, model.example_inputs(), dynamic_shapes="batch")
    assert "\n" not in str(err.value)
