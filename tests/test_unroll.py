"""Tests of the decode-loop capture (fxopt.ir.loops), the `unroll` pass and the decode runtime.

Two decoders of different kinds: zoo:ocr small (transformer decoder whose KV caches grow by concatenation;
seed 3 emits EOS at step 4) and a GRU decoder written here (fixed-size state plus a step counter; rows stop
at different, input-dependent steps, so early stop and EOS masking matter). Every variant must give the
tokens of the plain Python loop (`loops.greedy`) exactly, at batch 1 and 8.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings, strategies as st

import fxopt
from fxopt.backends import decode
from fxopt.errors import InputError
from fxopt.ir import cost, loops
from fxopt.ir.capture import decoder
from fxopt.ir.program import Program
from fxopt.passes.unroll import boundaries as bnd
from fxopt.zoo import ocr

from conftest import captured as shared_capture

aten = torch.ops.aten


class GRUDecoder(torch.nn.Module):
    """A GRU decoder following the decode-loop protocol.

    ``encode(x [B, 6]) -> (ctx [B, D], length [B])``; ``state = (h [B, D], count [B, 1])``; the EOS logit
    grows once ``count`` passes the row's ``length`` (1..7 steps), so rows finish at different steps.
    """

    def __init__(self, batch: int = 8, d: int = 16, vocab: int = 10, max_len: int = 9, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.batch, self.max_len, self.bos_id, self.eos_id = batch, max_len, 1, 2
        self.enc = torch.nn.Linear(6, d)
        self.embed = torch.nn.Embedding(vocab, d)
        self.gates_x = torch.nn.Linear(d, 3 * d)
        self.gates_h = torch.nn.Linear(d, 3 * d)
        self.head = torch.nn.Linear(d, vocab)
        self.register_buffer("eos_onehot", torch.nn.functional.one_hot(torch.tensor(2), vocab).float())

    def encode(self, x):
        """x [B, 6] -> (ctx [B, D], length [B] in 1..7)."""
        return torch.tanh(self.enc(x)), 1.0 + 6.0 * torch.sigmoid(3 * x[:, 0])

    def init_state(self, memory):
        """(h = ctx, count = 0)."""
        ctx, _ = memory
        return ctx * 1.0, ctx.new_zeros(ctx.shape[0], 1)

    def step(self, token, state, memory):
        """One GRU step; returns (logits [B, vocab], (h, count + 1))."""
        h, count = state
        ctx, length = memory
        xr, xz, xn = self.gates_x(self.embed(token) + ctx).chunk(3, -1)
        hr, hz, hn = self.gates_h(h).chunk(3, -1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        h = (1 - z) * torch.tanh(xn + r * hn) + z * h
        count = count + 1
        logits = self.head(h) + self.eos_onehot * (20.0 * (count - length.unsqueeze(1)))
        return logits, (h, count)

    def example_inputs(self):
        return (torch.randn(self.batch, 6, generator=torch.Generator().manual_seed(1)),)


class BrokenChain(GRUDecoder):
    """Claims the protocol, but step returns h doubled along dim 1: the state does not chain."""

    def step(self, token, state, memory):
        logits, (h, count) = super().step(token, state, memory)
        return logits, (torch.cat([h, h], 1), count)


def _ocr(batch: int):
    model = ocr.build(small=True, seed=3)
    model.config = dataclasses.replace(ocr.SMALL, batch=batch)
    return model, model.example_inputs()


_CACHE: dict = {}


def captured(kind: str, batch: int):
    """(model, inputs, program, reference tokens), captured once per session."""
    key = (kind, batch)
    if key not in _CACHE:
        model, inputs = _ocr(batch) if kind == "ocr" else (GRUDecoder(batch), None)
        inputs = inputs or model.example_inputs()
        program = decoder.capture_decoder(model, inputs)
        _CACHE[key] = (model, inputs, program, loops.greedy(model, *inputs))
    return _CACHE[key]


CASES = [("ocr", 1), ("ocr", 8), ("gru", 1), ("gru", 8)]
VARIANTS = ["unroll{mode=full}", "unroll{partition=2}", "unroll{boundaries=1:3}"]


# ------------------------------------------------------------------------------------------ capture
def test_capture_records_region_with_pieces():
    model, inputs, program, ref = captured("ocr", 8)
    region = loops.decode_region(program)
    assert region["max_len"] == 5 and region["bos_id"] == 1 and region["eos_id"] == 2 and region["batch"] == 8
    assert all(isinstance(region[k], Program) for k in ("encode", "init_state", "step"))
    assert [s["growth"] for s in region["state"]] == [[0, 0, 1, 0]] * 4        # caches grow on dim 2
    assert region["cache_symbols"] and region["plan"]["variant"] == "loop"
    assert json.dumps(region.to_json())


def test_reference_loop_stops_early_and_pads_with_eos():
    model, inputs, program, ref = captured("gru", 8)
    assert ref.shape == (8, model.max_len) and ref.dtype == torch.long
    first = [(row == 2).nonzero()[0, 0].item() for row in ref]
    assert len(set(first)) > 1                                     # rows finish at different steps
    for row, f in zip(ref, first):
        assert (row[f:] == 2).all()
    trimmed = loops.trim(ref, 2)
    assert trimmed.shape[1] == max(first) + 1 < model.max_len


def test_program_copy_copies_pieces_cheaply():
    _, _, program, _ = captured("gru", 1)
    dup = program.copy()
    a, b = loops.decode_region(program), loops.decode_region(dup)
    assert b is not a and b["step"] is not a["step"] and b["step"].graph is not a["step"].graph
    wa, wb = a["step"].parameters(), b["step"].parameters()
    assert all(wa[k] is wb[k] for k in wa)                        # weights shared, not copied


def test_step_state_that_does_not_chain_names_the_tensor():
    with pytest.raises(InputError) as err:
        decoder.capture_decoder(BrokenChain(2))
    text = str(err.value)
    assert "state[0]" in text and "\n" not in text


# ------------------------------------------------------------------------------------------ tokens
@pytest.mark.parametrize("kind,batch", CASES)
def test_every_variant_matches_reference_loop(kind, batch):
    model, inputs, program, ref = captured(kind, batch)
    assert torch.equal(program(*inputs), ref)                                 # step loop, all steps
    assert torch.equal(decode.compile(program)(*inputs), ref)                 # step loop, early stop
    for spec in VARIANTS:
        out = fxopt.optimize(program, spec, verify=True)
        assert torch.equal(out(*inputs), ref), spec
        compiled = decode.compile(out) if decode.uses_runtime(out) else fxopt.compile(out)
        assert torch.equal(compiled(*inputs), ref), spec


def test_partition_runtime_stops_at_boundary():
    model, inputs, program, ref = captured("gru", 8)
    last = int(loops.trim(ref, 2).shape[1])                      # every row finished by this step
    out = fxopt.optimize(program, "unroll{partition=2}")
    compiled = decode.compile(out)
    assert torch.equal(compiled(*inputs), ref)
    runs = -(-last // 2)
    assert compiled.last_steps == 2 * runs < model.max_len
    assert compiled.last_calls == 2 + runs                       # encoder + init + partitions run


# ------------------------------------------------------------------------------------------ graphs
def test_full_unroll_is_one_static_graph_with_exact_cache_lengths():
    model, inputs, program, ref = captured("ocr", 1)
    out = fxopt.optimize(program, "unroll{mode=full}")
    nodes = list(out.graph.nodes)
    assert not [n for n in nodes if n.op == "call_module"]
    assert not [n for n in nodes if isinstance(n.meta.get("val"), torch.SymInt)]
    cats = [n.meta["val"].shape[2] for n in nodes if n.target is aten.cat.default
            and n.meta["val"].dim() == 4]
    # 2 layers x (k, v) per step; step t's caches hold t + 1 positions: no padding to max_len.
    assert sorted(set(cats)) == list(range(1, model.max_len + 1))
    assert all(n.meta["provenance"]["pass"] in ("unroll", "capture") for n in nodes)


def test_full_unroll_flops_below_padded_loop():
    model, inputs, program, ref = captured("ocr", 1)
    region = loops.decode_region(program)
    out = fxopt.optimize(program, "unroll{mode=full}")
    flops = loops.decoder_flops(region)
    enc = int(cost.graph_cost(region["encode"].graph_module).evaluate().flops)
    total = int(cost.graph_cost(out.graph_module).evaluate().flops)
    assert flops["exact"] < flops["padded"]
    # The unrolled graph is the encoder + exactly the per-step costs (+ argmax/where/eq/or per step).
    assert 0 <= total - enc - flops["exact"] < 10 * model.max_len * region["batch"] * 12
    assert out.reports[0].details["decoder_flops_padded"] == flops["padded"]


def test_partitioned_graph_has_one_submodule_per_partition():
    _, _, program, _ = captured("gru", 1)
    out = fxopt.optimize(program, "unroll{partition=4}")       # max_len 9 -> 4, 4, 1
    report = out.reports[0]
    assert report.details["steps_per_partition"] == [4, 4, 1] and report.details["graphs"] == 4
    subs = [n.target for n in out.graph.nodes if n.op == "call_module"]
    assert subs == ["decode_encode", "decode_init", "decode_part0", "decode_part1", "decode_part2"]


def test_unroll_is_idempotent():
    _, _, program, _ = captured("gru", 1)
    for spec in ("unroll{mode=full}", "unroll{partition=3}"):
        once = fxopt.optimize(program, spec)
        again = fxopt.optimize(once, spec)
        assert once.reports[0].modified and not again.reports[0].modified


def test_no_decode_loop_is_left_untouched():
    model, inputs, program = shared_capture("block")
    out = fxopt.optimize(program, "unroll")
    assert not out.reports[0].modified and "nothing to unroll" in out.reports[0].notes[0]
    assert [n.name for n in out.graph.nodes] == [n.name for n in program.graph.nodes]


def test_bad_options_are_one_line_errors():
    for spec in ("unroll{partition=0}", "unroll{mode=full,boundaries=auto}", "unroll{boundaries=auto}"):
        with pytest.raises(InputError):
            fxopt.optimize(captured("gru", 1)[2], spec)
    with pytest.raises(InputError, match="must increase"):
        fxopt.optimize(captured("gru", 1)[2], "unroll{boundaries=5:3}")
    with pytest.raises(InputError, match="exceeds"):
        fxopt.optimize(captured("gru", 1)[2], "unroll{max_len=50}")


# ------------------------------------------------------------------------------------------ boundaries
def test_auto_boundaries_fit_the_length_histogram(tmp_path):
    model, inputs, program, ref = captured("gru", 8)
    lengths = tmp_path / "lengths.json"
    lengths.write_text(json.dumps([2] * 80 + [3] * 15 + [9] * 5))
    out = fxopt.optimize(program, f"unroll{{boundaries=auto,lengths={lengths},partition=5,call_overhead_us=1}}")
    d = out.reports[0].details
    assert d["boundaries"][0] in (2, 3) and d["boundaries"][-1] == 9
    assert d["expected"]["cost_us"] <= d["expected_even"]["cost_us"]
    assert d["expected"]["steps"] < d["expected_even"]["steps"]
    assert torch.equal(decode.compile(out)(*inputs), ref)


def test_decode_line_says_steps_partitions_nodes_and_expected_calls(tmp_path):
    from fxopt.tools.report import decode_line

    program = captured("gru", 8)[2]
    lengths = tmp_path / "lengths.json"
    lengths.write_text(json.dumps([2] * 80 + [9] * 20))
    auto = fxopt.optimize(program, f"unroll{{boundaries=auto,lengths={lengths},partition=3,call_overhead_us=1}}")
    d = auto.reports[0].details
    line = decode_line(auto.reports)
    assert line.startswith(f"decode loop: 9 steps unrolled into {len(d['steps_per_partition'])} partitions of "
                           + "/".join(map(str, d["steps_per_partition"])))
    assert f"{len(d['steps_per_partition']) + 2} graphs to compile (encoder, initial state and partitions)" in line
    assert f"{d['expected']['steps']:g} steps in {d['expected']['calls']:g} partition calls" in line
    assert "(even partitions of 3: " in line and "partition calls)" in line
    even = fxopt.optimize(program, "unroll{partition=3}")
    assert "3 partitions of 3 steps (" in decode_line(even.reports) and " nodes each), 5 graphs" in decode_line(even.reports)
    full = fxopt.optimize(program, "unroll{mode=full}")
    assert decode_line(full.reports) == (f"decode loop: 9 steps unrolled into one graph "
                                         f"({full.reports[0].details['nodes_per_graph'][0]} nodes), 1 graph to compile")
    assert decode_line(fxopt.optimize(program, "dce").reports) is None


def test_lengths_file_formats(tmp_path):
    csv_file = tmp_path / "l.csv"
    csv_file.write_text("length,count\n2,3\n5,1\n40,1\n")
    assert bnd.read_lengths(str(csv_file), 9) == [0, 0, 3, 0, 0, 1, 0, 0, 0, 1]
    bad = tmp_path / "bad.json"
    bad.write_text('[0, 2]')
    with pytest.raises(InputError, match="bad.json"):
        bnd.read_lengths(str(bad), 9)


@settings(max_examples=40, derandomize=True, deadline=None)
@given(hist=st.lists(st.integers(0, 5), min_size=6, max_size=6).filter(any),
       costs=st.lists(st.floats(0.1, 3.0), min_size=5, max_size=5), overhead=st.floats(0.0, 4.0))
def test_dp_boundaries_are_optimal(hist, costs, overhead):
    """The DP's stops cost no more than every other set of stops (brute force over all 2^4 subsets)."""
    hist = [0] + hist[1:]
    if not any(hist):
        return
    n = len(costs)
    best = bnd.expected(hist, bnd.choose_boundaries(hist, costs, overhead), costs, overhead)["cost_us"]
    for mask in range(2 ** (n - 1)):
        stops = [i + 1 for i in range(n - 1) if mask >> i & 1] + [n]
        assert best <= bnd.expected(hist, stops, costs, overhead)["cost_us"] + 1e-6


# ------------------------------------------------------------------------------------------ artifact
def test_save_load_in_new_process(tmp_path):
    model, inputs, program, ref = captured("gru", 8)
    out = fxopt.optimize(program, "unroll{partition=4}")
    decode.compile(out).save(str(tmp_path / "art"))
    torch.save(inputs[0], tmp_path / "x.pt")
    code = ("import sys, torch; from fxopt.backends import decode; "
            f"c = decode.load({str(tmp_path / 'art')!r}); x = torch.load({str(tmp_path / 'x.pt')!r}); "
            "print(c(x).tolist(), c.last_calls)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 0, done.stderr[-2000:]
    tokens, calls = done.stdout.strip().rsplit(" ", 1)
    assert json.loads(tokens) == ref.tolist() and int(calls) < 2 + 3
    manifest = json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert manifest["runtime"] == decode.RUNTIME and manifest["decode"]["parts"] == [[0, 4], [4, 8], [8, 9]]
    # The reference backend can also load it (it then runs every partition).
    assert torch.equal(fxopt.load(str(tmp_path / "art"))(*inputs), ref)
