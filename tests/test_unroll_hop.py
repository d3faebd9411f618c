"""Tests of `unroll` on loops already in the graph: torch.export `scan` / `while_loop` higher-order ops
(fxopt.passes.unroll.hop).

Models: a GRU cell + output head scanned over a sequence (`scan`), a transformer block followed by a linear
RNN scanned over its tokens, a fixed-count loop (`while_loop` whose trip count is provable), and a greedy
decoder that stops at EOS (`while_loop` with a data-dependent stop; the `length` input makes every row emit
EOS at a chosen step, so stops can be put exactly at and between partition boundaries).
"""
from __future__ import annotations

import operator

import pytest
import torch
from torch._higher_order_ops import scan, while_loop

import fxopt
from fxopt.ir.numerics import assert_outputs_close
from fxopt.ir.provenance import portable_path
from fxopt.passes.unroll import hop as unroll_hop

aten = torch.ops.aten
HOPS = (torch.ops.higher_order.scan, torch.ops.higher_order.while_loop)
K = 4          # steps per partition in the partitioned tests
MAX_LEN = 11   # decoder's longest output


class GRUScan(torch.nn.Module):
    """A GRU cell with a linear output head run over a sequence with ``scan``: (xs [T, B, 4], h0 [B, 8]) ->
    (h_T [B, 8], ys [T, B, 3])."""

    def __init__(self):
        super().__init__()
        self.cell = torch.nn.GRUCell(4, 8)
        self.out = torch.nn.Linear(8, 3)

    def forward(self, xs, h0):
        def combine(h, x):
            h2 = self.cell(x, h)
            return h2, self.out(h2)

        return scan(combine, h0, xs)


class BlockThenRNN(torch.nn.Module):
    """A pre-norm transformer block, then a linear RNN (``h = tanh(W h + U x_t)``) scanned over its tokens
    (``dim=1``): x [B, T, 32] -> (h_T [B, 16], per-token states [B, T, 16])."""

    def __init__(self, block):
        super().__init__()
        self.block = block
        self.w = torch.nn.Linear(16, 16, bias=False)
        self.u = torch.nn.Linear(32, 16)

    def forward(self, x):
        y = self.block(x)

        def combine(h, x_t):
            h2 = torch.tanh(self.w(h) + self.u(x_t))
            return h2, h2.clone()

        h0 = torch.zeros(x.shape[0], 16)
        h, hs = scan(combine, h0, y, dim=1)
        return h, hs


class CountLoop(torch.nn.Module):
    """``for i in range(n): h = tanh(fc(h))`` written as a while_loop over a counter: x [B, 8] -> (h, i)."""

    def __init__(self, n: int = 5):
        super().__init__()
        self.fc = torch.nn.Linear(8, 8)
        self.n = n

    def forward(self, x):
        def cond(i, h):
            return i < self.n

        def body(i, h):
            return i + 1, torch.tanh(self.fc(h))

        i, h = while_loop(cond, body, (torch.tensor(0), x))
        return h, i


class GreedyDecoder(torch.nn.Module):
    """A GRU-style greedy decoder stopping when every row has emitted EOS (or after MAX_LEN steps).

    (h0 [B, 16], length [B] int64) -> (tokens [B, MAX_LEN] (EOS after a row's end), steps run, h).
    Row r's EOS logit gets +50 from step ``length[r]`` on, so it emits EOS exactly at that step; the loop
    runs ``min(max(length), MAX_LEN)`` steps."""

    def __init__(self, vocab: int = 9, d: int = 16, eos: int = 0):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, d)
        self.cell = torch.nn.Linear(2 * d, d)
        self.head = torch.nn.Linear(d, vocab)
        with torch.no_grad():
            self.head.bias[eos] = -20.0
        self.eos = eos
        self.register_buffer("eos_hot", torch.nn.functional.one_hot(torch.tensor(eos), vocab).float())

    def forward(self, h0, length):
        batch = h0.shape[0]
        pos = torch.arange(MAX_LEN)

        def cond(i, tok, h, done, out):
            return (i < MAX_LEN) & ~done.all()

        def body(i, tok, h, done, out):
            h = torch.tanh(self.cell(torch.cat([self.emb(tok), h], -1)))
            bonus = (i + 1 >= length).float().unsqueeze(1) * 50.0 * self.eos_hot
            nxt = (self.head(h) + bonus).argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, self.eos), nxt)
            out = torch.where(pos.unsqueeze(0) == i, nxt.unsqueeze(1), out)
            return i + 1, nxt, h, done | (nxt == self.eos), out

        init = (torch.zeros((), dtype=torch.long), torch.ones(batch, dtype=torch.long), h0,
                torch.zeros(batch, dtype=torch.bool), torch.full((batch, MAX_LEN), self.eos, dtype=torch.long))
        i, tok, h, done, out = while_loop(cond, body, init)
        return out, i, h


# ------------------------------------------------------------------------------------------------ helpers
def _seeded(cls, *args):
    torch.manual_seed(0)
    return cls(*args).eval()


def _gru_inputs(seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(6, 2, 4, generator=g), torch.randn(2, 8, generator=g)


def _dec_inputs(lengths, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(len(lengths), 16, generator=g), torch.tensor(lengths, dtype=torch.long)


def _leaves(x):
    return torch.utils._pytree.tree_leaves(x)


def _assert_close(got, want, program):
    """Outputs (any runtime) against the model's under the shared rule (fxopt.ir.numerics), with the rounding
    depths of ``program``'s graph."""
    got, want = _leaves(got), _leaves(want)
    assert len(got) == len(want)
    assert_outputs_close(got, want, program)


def _assert_equal(got, want):
    got, want = _leaves(got), _leaves(want)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and torch.equal(a, b), (a, b)


def _loops(program):
    return [n for n in program.graph.nodes if n.op == "call_function" and n.target in HOPS]


def _count(program, target):
    return sum(1 for n in program.graph.nodes if n.op == "call_function" and n.target is target)


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def gru():
    model = _seeded(GRUScan)
    program = fxopt.capture(model, _gru_inputs(0))
    return model, program, fxopt.optimize(program, "unroll{mode=full}", verify=True)


@pytest.fixture(scope="module")
def count():
    model = _seeded(CountLoop)
    program = fxopt.capture(model, (torch.randn(3, 8),))
    return model, program, fxopt.optimize(program, "unroll{mode=full}", verify=True)


@pytest.fixture(scope="module")
def decoder():
    model = _seeded(GreedyDecoder)
    program = fxopt.capture(model, _dec_inputs([3, 5, 2]))
    return model, program, fxopt.optimize(program, f"unroll{{partition={K}}}", verify=True)


# ------------------------------------------------------------------------------------------------ scan
def test_capture_keeps_scan_as_one_hop_node(gru):
    _, program, _ = gru
    (loop,) = _loops(program)
    assert loop.target is torch.ops.higher_order.scan
    assert [u.target for u in loop.users] == [operator.getitem, operator.getitem]
    assert all("val" in u.meta for u in loop.users)
    assert unroll_hop.has_hop_loops(program)


def test_scan_full_unroll_inlines_one_combine_per_step(gru):
    _, before, after = gru
    assert _loops(after) == []
    steps = 6
    assert _count(after, aten.select.int) == steps
    assert _count(after, aten.stack.default) == 1
    # GRUCell: two addmm (input and hidden projections) + the output head, per step
    assert _count(after, aten.addmm.default) == 3 * steps
    report = after.reports[-1]
    assert report.modified and report.verified == "ok"
    assert report.details["loops"] == 1 and report.details["unrolled"] == 1
    assert report.details["steps_inlined"] == steps
    assert report.details["nodes_added"] == after.num_nodes() - before.num_nodes()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_scan_unrolled_matches_model(gru, seed):
    model, _, after = gru
    inputs = _gru_inputs(seed)
    with torch.no_grad():
        _assert_close(after(*inputs), model(*inputs), after)


def test_scan_unroll_is_idempotent(gru):
    _, _, after = gru
    again = fxopt.optimize(after, "unroll{mode=full}")
    assert not again.reports[-1].modified
    assert again.num_nodes() == after.num_nodes()


def test_scan_is_unrolled_in_partitioned_mode_too(gru):
    _, program, after = gru
    part = fxopt.optimize(program, "unroll{partition=2}", verify=True)
    assert _loops(part) == [] and part.num_nodes() == after.num_nodes()


def test_scan_unroll_leaves_the_input_program_alone(gru):
    _, program, _ = gru
    assert len(_loops(program)) == 1


def test_inlined_nodes_record_loop_step_and_pass(gru):
    _, _, after = gru
    made = [n for n in after.graph.nodes if n.meta.get("provenance", {}).get("pass") == "unroll"]
    steps = {n.meta["unroll_step"] for n in made if "unroll_step" in n.meta}
    assert steps == set(range(6))
    assert all(n.meta["provenance"]["origin"] == "scan" for n in made)


def test_inlined_nodes_name_the_models_scan_line(gru):
    _, program, after = gru
    line = next(i for i, text in enumerate(open(__file__).read().splitlines(), 1)
                if "return scan(combine, h0, xs)" in text)
    sources = {n.meta["provenance"]["source"] for n in after.graph.nodes
               if n.meta.get("provenance", {}).get("pass") == "unroll"}
    assert sources == {f"{portable_path(__file__)}:{line}"}
    # what torch 2.13 records for the loop node itself: dynamo's generated code
    assert _loops(program)[0].meta["provenance"]["source"].startswith("<eval_with_key>")


class TwoCarryReverse(torch.nn.Module):
    """A scan with two carries and two xs, over dim 1 in reverse: export moves dim/reverse outside."""

    def forward(self, xs, h0, c0):
        def combine(carry, x):
            (h, c), (a, b) = carry, x
            return (h + a.sum(), c * 0.5 + b), h * c

        (h, c), ys = scan(combine, (h0, c0), (xs, xs * 2), dim=1, reverse=True)
        return h, c, ys


def test_scan_with_two_carries_in_reverse():
    model = TwoCarryReverse()
    inputs = (torch.randn(2, 5, 3), torch.randn(2, 3), torch.randn(2, 3))
    after = fxopt.optimize(fxopt.capture(model, inputs), "unroll{mode=full}", verify=True)
    assert _loops(after) == [] and _count(after, aten.select.int) == 2 * 5
    new = (torch.randn(2, 5, 3), torch.randn(2, 3), torch.randn(2, 3))
    _assert_close(after(*new), model(*new), after)


class ScanInCountLoop(torch.nn.Module):
    """A counter while_loop (3 steps) whose body scans a linear RNN over xs: nested loops."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, xs, h0):
        def cond(i, h):
            return i < 3

        def body(i, h):
            def combine(h, x):
                h2 = torch.tanh(self.fc(h) + x)
                return h2, h2.sum(-1)

            h, ys = scan(combine, h, xs)
            return i + 1, h + ys.mean()

        return while_loop(cond, body, (torch.tensor(0), h0))[1]


def test_nested_scan_surfaces_and_is_unrolled():
    model = _seeded(ScanInCountLoop)
    inputs = (torch.randn(5, 2, 4), torch.randn(2, 4))
    after = fxopt.optimize(fxopt.capture(model, inputs), "unroll{mode=full}", verify=True)
    details = after.reports[-1].details
    assert _loops(after) == [] and details["loops"] == 4 and details["steps_inlined"] == 3 + 3 * 5
    assert _count(after, aten.tanh.default) == 3 * 5
    assert not any(isinstance(m, torch.fx.GraphModule) for m in after.graph_module.children())
    new = (torch.randn(5, 2, 4), torch.randn(2, 4))
    with torch.no_grad():
        _assert_close(after(*new), model(*new), after)


@pytest.mark.numerics
def test_unrolled_scan_runs_on_reference_and_xla(gru, tmp_path):
    model, _, after = gru
    inputs = _gru_inputs(4)
    want = model(*inputs)
    for backend in ("reference", "xla"):
        compiled = fxopt.compile(after, backend)
        _assert_close(compiled(*inputs), want, after)
        compiled.save(tmp_path / backend)
        _assert_close(fxopt.load(tmp_path / backend)(*inputs), want, after)


def test_transformer_block_then_scan(block):
    model = BlockThenRNN(block[0]).eval()
    x = block[1][0]
    program = fxopt.capture(model, (x,))
    after = fxopt.optimize(program, "unroll{mode=full}", verify=True)
    assert len(_loops(program)) == 1 and _loops(after) == []
    assert _count(after, aten.tanh.default) == x.shape[1]
    x2 = torch.randn_like(x)
    with torch.no_grad():
        _assert_close(after(x2), model(x2), after)


def test_scan_longer_than_max_len_is_left_with_note(gru):
    _, program, _ = gru
    left = fxopt.optimize(program, "unroll{mode=full,max_len=4}")
    report = left.reports[-1]
    assert not report.modified and len(_loops(left)) == 1
    assert any("'scan'" in n and "6 steps, more than 4" in n for n in report.notes)


# ------------------------------------------------------------------------------------------------ while_loop
def test_counter_loop_is_unrolled_fully(count):
    _, before, after = count
    assert len(_loops(before)) == 1 and _loops(after) == []
    assert _count(after, aten.tanh.default) == 5
    details = after.reports[-1].details
    assert details["per_loop"][0] == {"node": "while_loop", "kind": "while_loop", "action": "unrolled",
                                      "steps": 5, "steps_inlined": 5}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_counter_loop_unrolled_matches_model(count, seed):
    model, _, after = count
    x = torch.randn(3, 8, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        _assert_close(after(x), model(x), after)


def test_counter_loop_unroll_is_idempotent(count):
    _, _, after = count
    again = fxopt.optimize(after, "unroll{mode=full}")
    assert not again.reports[-1].modified and again.num_nodes() == after.num_nodes()


@pytest.mark.numerics
def test_counter_loop_runs_on_reference_and_xla(count):
    model, _, after = count
    x = torch.randn(3, 8)
    for backend in ("reference", "xla"):
        _assert_close(fxopt.compile(after, backend)(x), model(x), after)


def test_counter_loop_over_max_len_is_left_with_note(count):
    _, program, _ = count
    left = fxopt.optimize(program, "unroll{mode=full,max_len=3}")
    assert len(_loops(left)) == 1 and not left.reports[-1].modified
    assert any("more than 3 steps" in n for n in left.reports[-1].notes)


def test_provable_loop_within_partition_is_unrolled(count):
    _, program, _ = count
    part = fxopt.optimize(program, "unroll{partition=8}", verify=True)
    assert _loops(part) == [] and part.reports[-1].details["unrolled"] == 1


def test_decoder_stop_not_provable_left_alone_with_note(decoder):
    _, program, _ = decoder
    left = fxopt.optimize(program, "unroll{mode=full}")
    report = left.reports[-1]
    assert not report.modified and left.num_nodes() == program.num_nodes()
    (note,) = [n for n in report.notes if "left as a loop" in n]
    assert "'while_loop'" in note and "not a compile-time constant" in note and "mode=partitioned" in note
    assert report.details["left"] == 1 and report.details["unrolled"] == 0


def test_partitioned_body_runs_k_predicated_steps(decoder):
    _, program, after = decoder
    (loop,) = _loops(after)
    assert loop.target is torch.ops.higher_order.while_loop
    body = getattr(after.graph_module, loop.args[1].target)
    orig = getattr(program.graph_module, _loops(program)[0].args[1].target)
    per_step = sum(1 for n in orig.graph.nodes if n.target is aten.addmm.default)
    assert sum(1 for n in body.graph.nodes if n.target is aten.addmm.default) == K * per_step
    n_carry = len(loop.args[2])
    assert sum(1 for n in body.graph.nodes if n.target is aten.where.self) == (K - 1) * n_carry + K * 2
    details = after.reports[-1].details
    assert details["partitioned"] == 1 and details["per_loop"][0]["partition"] == K


@pytest.mark.parametrize("lengths", [[1], [K - 1], [K], [K + 1], [2 * K], [2 * K + 1], [MAX_LEN],
                                     [MAX_LEN + 3], [2, K, 7], [K + 2, 1, 2 * K]])
def test_partitioned_decoder_identical_at_and_between_boundaries(decoder, lengths):
    model, _, after = decoder
    inputs = _dec_inputs(lengths + [1] * (3 - len(lengths)), seed=len(lengths) + lengths[0])
    with torch.no_grad():
        want = model(*inputs)
        got = after(*inputs)
    _assert_equal(got, want)
    assert int(got[1]) == min(max(lengths), MAX_LEN)


def test_partitioned_is_idempotent(decoder):
    _, _, after = decoder
    again = fxopt.optimize(after, f"unroll{{partition={K}}}")
    report = again.reports[-1]
    assert not report.modified and again.num_nodes() == after.num_nodes()
    assert any("already runs 4 steps per iteration" in n for n in report.notes)


def test_partitioned_decoder_reference_backend_roundtrip(decoder, tmp_path):
    model, _, after = decoder
    inputs = _dec_inputs([6, 2, 9], seed=5)
    compiled = fxopt.compile(after, "reference")
    compiled.save(tmp_path / "dec")
    with torch.no_grad():
        want = model(*inputs)
    _assert_equal(compiled(*inputs), want)
    _assert_equal(fxopt.load(tmp_path / "dec")(*inputs), want)


class ZeroTrip(torch.nn.Module):
    """A while_loop whose condition is false at once: the outputs are the inputs."""

    def forward(self, x):
        i, h = while_loop(lambda i, h: i < 0, lambda i, h: (i + 1, h * 2), (torch.tensor(0), x))
        return h, i


class IntCounter(torch.nn.Module):
    """A while_loop over a Python int counter (exported as a constant int carry)."""

    def forward(self, x):
        return while_loop(lambda i, h: i < 4, lambda i, h: (i + 1, h * 2), (0, x))[1]


def test_zero_trip_loop_returns_copies_of_its_inputs():
    x = torch.randn(2, 3)
    after = fxopt.optimize(fxopt.capture(ZeroTrip(), (x,)), "unroll{mode=full}", verify=True)
    assert _loops(after) == [] and after.reports[-1].details["per_loop"][0]["steps"] == 0
    out_h = after.output_node().args[0][0]
    assert out_h.target is aten.clone.default  # not the placeholder itself: outputs never alias inputs
    _assert_equal(after(x), ZeroTrip()(x))


def test_python_int_counter_is_unrolled_without_dead_nodes():
    x = torch.randn(2, 3)
    after = fxopt.optimize(fxopt.capture(IntCounter(), (x,)), "unroll{mode=full}", verify=True)
    assert _loops(after) == [] and _count(after, aten.mul.Tensor) == 4
    assert all(n.users or n.op == "output" for n in after.graph.nodes)
    _assert_equal(after(x), IntCounter()(x))
