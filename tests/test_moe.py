"""`moe`: dense and top-k routed experts fused into batched matmuls, horizontal fusion of parallel linears.

Numerics are checked against the original model; Before/Expected as op counts."""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import fxopt
from fxopt.errors import InputError
from fxopt.passes.moe import FuseExperts
from fxopt.passes.registry import build_pipeline
from tests.conftest import AttentionBlock, TinyEncoder


def _count(program, name):
    return sum(1 for n in program.graph.nodes
               if n.op == "call_function" and getattr(n.target, "__name__", "").split(".")[0] == name)


def _bmms(program):
    """Batched matmuls: ``bmm``, or ``baddbmm`` where the experts have a bias."""
    return _count(program, "bmm") + _count(program, "baddbmm")


def _run(pass_, program):
    """Run a pass on a copy of ``program``; returns (copy, result)."""
    work = program.copy()
    result = pass_.run(work)
    work.dirty = True
    work.graph.lint()
    return work, result


def _expert(d, h, o, act=nn.ReLU):
    return nn.Sequential(nn.Linear(d, h), act(), nn.Linear(h, o))


class LoopMoE(nn.Module):
    """Top-k routing as a ModuleList loop: where(idx == e) / x[tok] / index_add. ``drop`` routes tokens whose
    gate probability is below it to no expert (id -1)."""

    def __init__(self, d=8, h=16, o=8, num_experts=4, k=1, drop=0.0):
        super().__init__()
        self.k, self.o, self.drop = k, o, drop
        self.gate = nn.Linear(d, num_experts)
        self.experts = nn.ModuleList(_expert(d, h, o) for _ in range(num_experts))

    def forward(self, x):
        w, idx = torch.topk(torch.softmax(self.gate(x), -1), self.k)
        if self.drop:
            idx = torch.where(w >= self.drop, idx, -1)
        out = x.new_zeros(x.shape[0], self.o)
        for e, expert in enumerate(self.experts):
            tok, slot = torch.where(idx == e)
            out = out.index_add(0, tok, expert(x[tok]) * w[tok, slot].unsqueeze(-1))
        return out


class MaskMoE(nn.Module):
    """Top-k routing as one-hot masks multiplied into every expert's output."""

    def __init__(self, d=8, h=16, o=8, num_experts=4, k=1, experts=None):
        super().__init__()
        self.k = k
        self.gate = nn.Linear(d, num_experts)
        self.experts = experts if experts is not None else nn.ModuleList(
            _expert(d, h, o) for _ in range(num_experts))

    def forward(self, x):
        probs = torch.softmax(self.gate(x), -1)
        w, idx = torch.topk(probs, self.k)
        gates = torch.zeros_like(probs).scatter(1, idx, w)
        out = 0
        for e, expert in enumerate(self.experts):
            out = out + gates[:, e:e + 1] * expert(x)
        return out


_CACHE: dict = {}


def _loop(**kwargs):
    """A captured LoopMoE, shared between tests (capturing the loop is the slow part)."""
    key = tuple(sorted(kwargs.items()))
    if key not in _CACHE:
        _CACHE[key] = _capture(LoopMoE(**kwargs), 7, 8)
    return _CACHE[key]


def _capture(model, *shape):
    torch.manual_seed(1)
    model = model.eval()
    x = torch.randn(*shape)
    return model, fxopt.capture(model, (x,))


# ------------------------------------------------------------------------------------------------ dense
@pytest.fixture(scope="module")
def ranking():
    model, inputs = fxopt.zoo.get("ranking", small=True)
    return model, inputs, fxopt.capture(model, inputs)


def test_ranking_experts_become_two_bmms(ranking):
    model, inputs, program = ranking
    # Before: 4 experts x 2 linears (addmm) plus the gate, bottom, cross and top linears
    assert _count(program, "addmm") == 15 and _bmms(program) == 0
    out = fxopt.optimize(program, "moe", verify=True)
    details = out.reports[-1].details
    # Expected: the 8 expert addmms become 2 bmms over stacked [4, in, out] weights
    assert _count(out, "addmm") == 7 and _bmms(out) == 2
    assert details["groups_found"] == 1 and details["experts_fused"] == 4
    assert (details["matmul_nodes_before"], details["matmul_nodes_after"]) == (15, 9)
    assert details["flops_after"] == details["flops_before"]
    torch.testing.assert_close(out(*inputs), model(*inputs))


def test_ranking_dead_expert_weights_are_removed(ranking):
    _, _, program = ranking
    out = fxopt.optimize(program, "moe", verify=False)
    targets = [n.target for n in out.graph.nodes if n.op == "get_attr"]
    assert not any(t.startswith("moe.experts") for t in targets)
    # the stacked weights hold exactly the experts' parameters, once
    assert out.parameter_bytes() == program.parameter_bytes()


def test_moe_is_idempotent(ranking):
    _, _, program = ranking
    once = fxopt.optimize(program, "moe", verify=False)
    twice, result = _run(FuseExperts(), once)
    assert not result.modified and twice.num_nodes() == once.num_nodes()


@pytest.mark.parametrize("k", [1, 2])
def test_one_hot_mask_routing_is_fused_densely(k):
    model, program = _capture(MaskMoE(k=k), 6, 8)
    out = fxopt.optimize(program, "moe{horizontal=false}", verify=True)
    assert out.reports[-1].details["experts_fused"] == 4 and _bmms(out) == 2
    x = torch.randn(6, 8)
    torch.testing.assert_close(out(x), model(x))


# ------------------------------------------------------------------------------------------------ routed
@pytest.mark.parametrize("k", [1, 2])
def test_loop_routing_becomes_one_grouped_chain(k):
    model, program = _loop(k=k)
    # Before: per expert one nonzero and two addmms, accumulated by index_put
    assert _count(program, "nonzero") == 4 and _count(program, "addmm") == 9
    after, result = _run(FuseExperts(), program)
    after.graph.lint()
    # Expected: no nonzero (topk's ids are all in range), one padded bmm chain, one index_add accumulate
    # (top-1: every token has exactly one product, so rows come back in token order and nothing is added up)
    assert _count(after, "nonzero") == 0 and _bmms(after) == 2 and _count(after, "addmm") == 1
    assert _count(after, "index_add") == (1 if k == 2 else 0) and _count(after, "index_put") == 0
    assert result.details["routed_groups"] == 1 and result.details["experts_fused"] == 4
    assert not any(n.target is torch.ops.aten._assert_scalar.default for n in after.graph.nodes)
    for seed in range(4):
        x = torch.randn(7, 8, generator=torch.Generator().manual_seed(seed)) * (1 + 3 * seed)
        torch.testing.assert_close(after(x), model(x))


class ResidualTop1(nn.Module):
    """Top-1 loop accumulating into the input itself (a residual), experts ungated."""

    def __init__(self, d=8, num_experts=4):
        super().__init__()
        self.gate = nn.Linear(d, num_experts)
        self.experts = nn.ModuleList(_expert(d, 16, d) for _ in range(num_experts))

    def forward(self, x):
        idx = torch.argmax(self.gate(x), -1, keepdim=True)
        out = x * 2
        for e, expert in enumerate(self.experts):
            tok, _ = torch.where(idx == e)
            out = out.index_add(0, tok, expert(x[tok]))
        return out


def test_top1_with_every_token_routed_reads_rows_back_in_token_order():
    # Before: one index_put per expert into a zero accumulator; Expected: no scatter at all, the gated rows
    # in token order are the result (each token has exactly one product)
    model, program = _loop(k=1)
    after, _ = _run(FuseExperts(), program)
    assert _count(after, "index_add") == 0 and _count(after, "index_put") == 0
    x = torch.randn(7, 8, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(after(x), model(x))


def test_top1_into_a_non_zero_accumulator_adds_each_token_once():
    torch.manual_seed(0)
    model, program = _capture(ResidualTop1(), 7, 8)
    after, result = _run(FuseExperts(), program)
    assert result.details["routed_groups"] == 1 and _count(after, "index_add") == 0
    result_node = after.output_node().args[0][0]     # x * 2 + each token's one expert output
    assert result_node.target is torch.ops.aten.add.Tensor
    assert result_node.args[0].target is torch.ops.aten.mul.Tensor
    for seed in range(3):
        x = torch.randn(7, 8, generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(after(x), model(x))
    assert _run(FuseExperts(), after)[1].modified is False


def test_loop_routing_experts_without_tokens_and_tokens_without_experts():
    model, program = _capture(LoopMoE(k=2, drop=0.4), 7, 8)
    after, result = _run(FuseExperts(), program)
    assert result.details["routed_groups"] == 1
    assert _count(after, "nonzero") == 1            # ids may be -1 here: one nonzero keeps the valid pairs
    torch.manual_seed(3)
    x = torch.randn(7, 8)
    with torch.no_grad():
        w, idx = torch.topk(torch.softmax(model.gate(x), -1), 2)
        routed = torch.where(w >= 0.4, idx, -1)
    assert (routed == -1).all(dim=1).any()                 # a token routed to no expert at all
    torch.testing.assert_close(after(x), model(x))
    # all 7 tokens near one input: the other experts receive no token
    same = x[:1].repeat(7, 1) + 1e-3 * x[:7]
    with torch.no_grad():
        assert len(torch.topk(torch.softmax(model.gate(same), -1), 2)[1].unique()) < 4
    torch.testing.assert_close(after(same), model(same))


@pytest.mark.parametrize("drop", [0.0, 0.4])
def test_segment_strategy_runs_each_expert_on_its_slice(drop):
    model, program = _capture(LoopMoE(k=2, drop=drop), 7, 8)
    after, result = _run(FuseExperts(grouped="segment"), program)
    after.graph.lint()
    # Expected: no batched matmul; each expert's two linears once, on its slice of the sorted rows
    assert result.details["segment_groups"] == 1 and result.details["padded_groups"] == 0
    assert _bmms(after) == 0 and _count(after, "addmm") == 1 + 2 * 4
    assert _count(after, "split_with_sizes") == 1 and _count(after, "index_add") == 1
    assert _count(after, "nonzero") == (1 if drop else 0)
    for seed in range(4):
        x = torch.randn(7, 8, generator=torch.Generator().manual_seed(seed)) * (1 + 3 * seed)
        torch.testing.assert_close(after(x), model(x))
    same = x[:1].repeat(7, 1) + 1e-3 * x[:7]                  # most experts receive no token
    torch.testing.assert_close(after(same), model(same))


def test_auto_strategy_follows_rows_per_expert_and_target():
    _, program = _loop(k=1)                     # 7 tokens over 4 experts: under 2 rows each
    assert _run(FuseExperts(), program)[1].details["padded_groups"] == 1
    # enough rows per expert: unpadded, one grouped matmul per linear where PyTorch runs the graph ...
    assert _run(FuseExperts(segment_rows=1), program)[1].details["grouped_mm_groups"] == 1
    # ... and the static dense form for a target whose compiler takes fixed shapes only
    elsewhere = program.copy()
    elsewhere.target = "xla"
    assert _run(FuseExperts(segment_rows=1), elsewhere)[1].details["static_routed_groups"] == 1


@pytest.mark.parametrize("kwargs", [dict(k=1), dict(k=2), dict(k=2, drop=0.3)], ids=["top1", "top2", "dropped"])
def test_dense_strategy_has_static_shapes_and_the_loops_numerics(kwargs):
    model, program = _loop(**kwargs)
    # Before: one nonzero per expert (data-dependent sizes); Expected: none, one batched chain
    assert _count(program, "nonzero") == 4
    after, result = _run(FuseExperts(grouped="dense", horizontal=False), program)
    assert result.details["static_routed_groups"] == 1 and _count(after, "nonzero") == 0 and _bmms(after) == 2
    from torch.fx.experimental.symbolic_shapes import free_unbacked_symbols
    assert not any(free_unbacked_symbols(n.meta["val"].shape) for n in after.graph.nodes
                   if isinstance(n.meta.get("val"), torch.Tensor))
    x = torch.randn(7, 8)
    torch.testing.assert_close(after(x), model(x))
    assert _run(FuseExperts(grouped="dense", horizontal=False), after)[1].modified is False


@pytest.mark.parametrize("kwargs", [dict(k=1), dict(k=2), dict(k=2, drop=0.3)], ids=["top1", "top2", "dropped"])
def test_grouped_mm_strategy_is_one_grouped_matmul_per_linear(kwargs):
    model, program = _loop(**kwargs)
    after, result = _run(FuseExperts(grouped="grouped_mm"), program)
    grouped = [n for n in after.graph.nodes if n.target is torch.ops.fxopt.grouped_mm.default]
    assert len(grouped) == 2 and _count(after, "addmm") == 1 and _bmms(after) == 0    # addmm: the gate
    assert result.details["grouped_mm_groups"] == 1
    for seed in range(4):
        x = torch.randn(7, 8, generator=torch.Generator().manual_seed(seed)) * (1 + 3 * seed)
        torch.testing.assert_close(after(x), model(x))
        torch.testing.assert_close(fxopt.compile(after, "reference")(x), model(x))
    assert _run(FuseExperts(grouped="grouped_mm"), after)[1].modified is False


def test_grouped_mm_strategy_with_widths_the_aten_kernel_rejects():
    # 6 float32 features = 24-byte rows: ATen's _grouped_mm refuses the stride, fxopt::grouped_mm loops
    torch.manual_seed(0)
    model, program = _capture(LoopMoE(d=6, h=10, o=6, k=2), 9, 6)
    after, _ = _run(FuseExperts(grouped="grouped_mm"), program)
    x = torch.randn(9, 6)
    torch.testing.assert_close(after(x), model(x))
    _, auto = _run(FuseExperts(segment_rows=1), program)
    assert auto.details["segment_groups"] == 1 and "not grouped_mm" in " ".join(auto.notes)


@pytest.mark.parametrize("model", [LoopMoE(k=2), MaskMoE(k=2)], ids=["routed", "dense"])
def test_a_dynamic_batch_stays_symbolic(model):
    torch.manual_seed(1)
    model = model.eval()
    program = fxopt.capture(model, (torch.randn(6, 8),), dynamic_shapes="batch")
    out = fxopt.optimize(program, "moe", verify=True)
    assert out.reports[-1].details["experts_fused"] == 4
    # choosing a strategy reads example sizes without guarding: the batch is not specialized to 6
    (x,) = out.placeholders()
    assert not x.meta["val"].shape[0].node.expr.is_number
    compiled = fxopt.compile(out, "reference")       # its input spec would reject other batches if specialized
    for batch in (1, 11):
        x = torch.randn(batch, 8, generator=torch.Generator().manual_seed(batch))
        torch.testing.assert_close(compiled(x), model(x))


def test_routing_option_selects_groups():
    _, program = _loop(k=1)
    _, dense_only = _run(FuseExperts(routing="dense", horizontal=False), program)
    assert not dense_only.modified
    _, topk = _run(FuseExperts(routing="topk", horizontal=False), program)
    assert topk.modified and topk.details["routed_groups"] == 1


# ------------------------------------------------------------------------------------------------ must not fuse
def test_experts_with_different_structure_are_not_merged():
    d, o = 8, 8
    experts = nn.ModuleList([
        _expert(d, 16, o), _expert(d, 16, o),                  # identical pair: fused
        _expert(d, 16, o, act=nn.GELU),                          # other activation
        _expert(d, 32, o),                                       # other hidden size
        nn.Sequential(nn.Linear(d, 16), nn.ReLU(), nn.Linear(16, o), nn.Sigmoid()),  # an extra op
    ])
    model, program = _capture(MaskMoE(num_experts=5, experts=experts), 6, 8)
    out = fxopt.optimize(program, "moe{horizontal=false}", verify=True)
    details = out.reports[-1].details
    assert details["groups_found"] == 1 and details["experts_fused"] == 2
    assert _bmms(out) == 2 and _count(out, "addmm") == 1 + 2 * 3


def test_all_different_experts_leave_the_graph_untouched():
    experts = nn.ModuleList([_expert(8, 16, 8), _expert(8, 16, 8, act=nn.GELU), _expert(8, 32, 8)])
    _, program = _capture(MaskMoE(num_experts=3, experts=experts), 6, 8)
    after, result = _run(FuseExperts(horizontal=False), program)
    assert not result.modified and after.graph_module.code == program.graph_module.code


def test_single_expert_is_nothing_to_do():
    _, program = _capture(MaskMoE(num_experts=1), 6, 8)
    after, result = _run(FuseExperts(horizontal=False), program)
    assert not result.modified and result.details["experts_fused"] == 0
    assert after.graph_module.code == program.graph_module.code
    _, loop = _capture(LoopMoE(num_experts=1), 6, 8)
    assert not FuseExperts(horizontal=False).run(loop.copy()).modified


def test_min_experts_threshold():
    _, program = _capture(MaskMoE(num_experts=4), 6, 8)
    _, result = _run(FuseExperts(min_experts=5, horizontal=False), program)
    assert not result.modified


# ------------------------------------------------------------------------------------------------ horizontal
def test_qkv_projections_become_one_wide_linear(block):
    model, inputs = block
    program = fxopt.capture(model, inputs)
    assert _count(program, "addmm") == 6
    out = fxopt.optimize(program, "moe", verify=True)
    details = out.reports[-1].details
    # Expected: q, k, v → one addmm over a [32, 96] weight and three column slices
    assert details["horizontal_groups"] == 1 and details["linears_fused"] == 3
    assert _count(out, "addmm") == 4 and details["matmul_nodes_after"] == details["matmul_nodes_before"] - 2
    assert details["flops_after"] == details["flops_before"]
    torch.testing.assert_close(out(*inputs), model(*inputs))


def test_horizontal_on_a_whole_encoder_and_multitask_heads(encoder):
    model, inputs = encoder
    out = fxopt.optimize(fxopt.capture(model, inputs), "moe", verify=True)
    assert out.reports[-1].details["horizontal_groups"] == 2
    torch.testing.assert_close(out(*inputs), model(*inputs))

    class Heads(nn.Module):
        def __init__(self):
            super().__init__()
            self.trunk = nn.Linear(8, 16)
            self.heads = nn.ModuleList([nn.Linear(16, 1), nn.Linear(16, 5), nn.Linear(16, 3)])

        def forward(self, x):
            h = torch.relu(self.trunk(x))
            return tuple(head(h) for head in self.heads)

    heads, program = _capture(Heads(), 4, 8)
    out = fxopt.optimize(program, "moe", verify=True)
    assert out.reports[-1].details["linears_fused"] == 3 and _count(out, "addmm") == 2
    x = torch.randn(4, 8)
    for a, b in zip(out(x), heads(x)):
        torch.testing.assert_close(a, b)
    _, off = _run(FuseExperts(horizontal=False), program)
    assert not off.modified


# ------------------------------------------------------------------------------------------------ options, artifact
def test_options_parse_and_reject_bad_values():
    (p,) = build_pipeline("moe{min_experts=3,routing=dense,horizontal=false}")
    assert FuseExperts().max_dense_rows == 0          # no limit: see docs/passes/moe.md
    assert (p.min_experts, p.routing, p.horizontal) == (3, "dense", False)
    assert p.spec() == "moe{min_experts=3,routing=dense,horizontal=false}"
    with pytest.raises(InputError, match="min_experts"):
        build_pipeline("moe{min_experts=1}")
    with pytest.raises(InputError, match="routing"):
        build_pipeline("moe{routing=sparse}")
    with pytest.raises(InputError, match="grouped"):
        build_pipeline("moe{grouped=ragged}")
    with pytest.raises(InputError, match="segment_rows"):
        build_pipeline("moe{segment_rows=0}")


def test_fused_ranking_saves_and_loads(ranking, tmp_path):
    model, inputs, program = ranking
    compiled = fxopt.compile(fxopt.optimize(program, "moe", verify=False))
    compiled.save(tmp_path / "art")
    torch.testing.assert_close(fxopt.load(str(tmp_path / "art"))(*inputs), model(*inputs))


# ------------------------------------------------------------------------------------------------ property
@settings(max_examples=5, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(st.sampled_from([8, 12]), st.sampled_from(["relu", "gelu"])), min_size=1, max_size=4))
def test_property_only_identical_experts_fuse(specs):
    """Random expert mixes: the output never moves, and exactly the structures present at least twice fuse."""
    acts = {"relu": nn.ReLU, "gelu": nn.GELU}
    experts = nn.ModuleList(_expert(6, h, 4, act=acts[a]) for h, a in specs)
    model, program = _capture(MaskMoE(d=6, o=4, num_experts=len(specs), experts=experts), 5, 6)
    after, result = _run(FuseExperts(horizontal=False), program)
    counts: dict = {}
    for s in specs:
        counts[s] = counts.get(s, 0) + 1
    expected = sum(c for c in counts.values() if c >= 2)
    assert result.details["experts_fused"] == expected and result.modified == (expected > 0)
    x = torch.randn(3, 6)
    torch.testing.assert_close(after(x), model(x))


def test_dense_groups_above_max_dense_rows_are_left_alone():
    _, program = _capture(MaskMoE(num_experts=4), 6, 8)
    _, result = _run(FuseExperts(max_dense_rows=4, horizontal=False), program)
    assert not result.modified and "max_dense_rows=4" in result.notes[0]


def test_dense_experts_left_for_their_rows_are_not_fused_horizontally_either():
    _, program = _capture(MaskMoE(num_experts=4), 6, 8)
    # the gate linear and the 4 experts' first linears read x: only their horizontal fusion would remain
    assert _run(FuseExperts(routing="none"), program)[1].details["linears_fused"] == 5
    after, result = _run(FuseExperts(max_dense_rows=4), program)
    assert result.details["experts_fused"] == 0 and result.details["linears_fused"] == 0
    assert not result.modified and _count(after, "addmm") == _count(program, "addmm")
