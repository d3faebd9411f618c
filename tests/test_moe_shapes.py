"""`moe` on real-world expert shapes: gated-MLP (SwiGLU) experts, ``gate_up`` + ``chunk`` experts, experts on
3-D [B, T, d] inputs, and the HF Mixtral/Switch routed loop (``one_hot(idx, E).permute(2, 1, 0)``,
``slot, tok = torch.where(mask[e])``, ``x[None, tok].reshape(-1, d)``, ``index_add_``).

Numerics are checked against the original model on several random inputs; Before/Expected as op counts."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import fxopt
from fxopt.passes.moe import FuseExperts
from fxopt.passes.moe.match import as_linear, grow_chain
from fxopt.passes.moe.routing import _column_of, check_group, match_routed
from tests.conftest import AttentionBlock
from tests.test_moe import _bmms, _count, _run


def _matmuls(program):
    return sum(_count(program, n) for n in ("mm", "addmm", "bmm", "baddbmm"))


def _capture(model, *shape):
    torch.manual_seed(1)
    model = model.eval()
    return model, fxopt.capture(model, (torch.randn(*shape),))


def _check_numerics(after, model, shape, seeds=range(3)):
    for seed in seeds:
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * (1 + seed)
        torch.testing.assert_close(after(x), model(x))


# ------------------------------------------------------------------------------------------------ experts
class SwiGLU(nn.Module):
    """LLaMA/Mixtral/Qwen expert: ``down(silu(gate(x)) * up(x))``; ``swap`` writes the product the other way."""

    def __init__(self, d, h, bias=False, act=F.silu, swap=False):
        super().__init__()
        self.gate, self.up, self.down = nn.Linear(d, h, bias=bias), nn.Linear(d, h, bias=bias), nn.Linear(h, d, bias=bias)
        self.act, self.swap = act, swap

    def forward(self, x):
        a, u = self.act(self.gate(x)), self.up(x)
        return self.down(u * a if self.swap else a * u)


class GateUp(nn.Module):
    """One fused ``gate_up`` linear, ``chunk(2, -1)``, then the gated product; ``swap`` activates the second half."""

    def __init__(self, d, h, bias=False, act=F.silu, swap=False):
        super().__init__()
        self.gate_up, self.down = nn.Linear(d, 2 * h, bias=bias), nn.Linear(h, d, bias=bias)
        self.act, self.swap = act, swap

    def forward(self, x):
        g, u = self.gate_up(x).chunk(2, -1)
        if self.swap:
            g, u = u, g
        return self.down(self.act(g) * u)


class MLP(nn.Module):
    """The classic expert ``fc2(act(fc1(x)))``."""

    def __init__(self, d, h, bias=True, act=F.gelu, swap=False):
        super().__init__()
        self.fc1, self.fc2, self.act = nn.Linear(d, h, bias=bias), nn.Linear(h, d, bias=bias), act

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class ParamMLP(nn.Module):
    """An expert written with raw parameters: ``relu(x @ w1.T) @ w2`` (the second matmul has no permute)."""

    def __init__(self, d, h, bias=False, act=torch.relu, swap=False):
        super().__init__()
        self.w1, self.w2, self.act = nn.Parameter(torch.randn(h, d) / 3), nn.Parameter(torch.randn(h, d) / 3), act

    def forward(self, x):
        return self.act(x @ self.w1.t()) @ self.w2


class DenseMoE(nn.Module):
    """Softmax-gated experts, every expert on every row of a 2-D or 3-D input."""

    def __init__(self, experts, d=8):
        super().__init__()
        self.gate = nn.Linear(d, len(experts))
        self.experts = nn.ModuleList(experts)

    def forward(self, x):
        p = torch.softmax(self.gate(x), -1)
        out = 0
        for e, expert in enumerate(self.experts):
            out = out + p[..., e:e + 1] * expert(x)
        return out


def _dense(cls, n=3, d=8, h=16, **kw):
    return DenseMoE([cls(d, h, **kw) for _ in range(n)], d)


# ------------------------------------------------------------------------------------------------ dense, 2-D
def test_gated_mlp_experts_become_three_bmms():
    model, program = _capture(_dense(SwiGLU), 5, 8)
    # Before: gate addmm + 3 experts x (gate, up, down) mm; silu is sigmoid + mul in core ATen
    assert (_count(program, "addmm"), _count(program, "mm"), _bmms(program)) == (1, 9, 0)
    after, result = _run(FuseExperts(horizontal=False), program)
    # Expected: one bmm per linear of the unit over stacked [3, in, out] weights
    assert (_count(after, "addmm"), _count(after, "mm"), _bmms(after)) == (1, 0, 3)
    assert result.details["dense_groups"] == 1 and result.details["experts_fused"] == 3
    _check_numerics(after, model, (5, 8))


def test_experts_that_multiply_in_either_order_are_one_group():
    # Before: silu(gate(x)) * up(x) in experts 0 and 2, up(x) * silu(gate(x)) in expert 1
    model, program = _capture(DenseMoE([SwiGLU(8, 16, swap=s) for s in (False, True, False)], 8), 5, 8)
    after, result = _run(FuseExperts(horizontal=False), program)
    # Expected: one group of all three (the product commutes), one bmm per linear
    assert result.details["experts_fused"] == 3 and _count(after, "mm") == 0 and _bmms(after) == 3
    _check_numerics(after, model, (5, 8))


def test_experts_that_subtract_in_opposite_orders_are_not_grouped():
    class SubMLP(MLP):
        def __init__(self, d, h, flip):
            super().__init__(d, h)
            self.other, self.flip = nn.Linear(d, h), flip

        def forward(self, x):
            a, b = torch.relu(self.fc1(x)), self.other(x)
            return self.fc2(b - a if self.flip else a - b)

    model, program = _capture(DenseMoE([SubMLP(8, 16, flip) for flip in (False, True, False)], 8), 5, 8)
    after, result = _run(FuseExperts(horizontal=False), program)
    assert result.details["experts_fused"] == 2          # the two `a - b` experts only
    _check_numerics(after, model, (5, 8))


def test_gate_up_chunk_experts_become_two_bmms():
    model, program = _capture(_dense(GateUp), 5, 8)
    assert _count(program, "mm") == 6 and _count(program, "split_with_sizes") == 3
    after, result = _run(FuseExperts(horizontal=False), program)
    # Expected: gate_up and down batched; one split of the batched [3, rows, 32] along the last dim
    assert _count(after, "mm") == 0 and _bmms(after) == 2 and _count(after, "split_with_sizes") == 1
    assert result.details["experts_fused"] == 3
    _check_numerics(after, model, (5, 8))


# ------------------------------------------------------------------------------------------------ dense, 3-D
@pytest.mark.parametrize("cls, bias, linears", [(SwiGLU, False, 3), (SwiGLU, True, 3), (GateUp, False, 2),
                                                 (MLP, True, 2), (ParamMLP, False, 2)])
def test_experts_on_3d_inputs_are_fused(cls, bias, linears):
    model, program = _capture(_dense(cls, n=4, bias=bias), 2, 5, 8)
    # Before: each expert linear is view -> mm/addmm -> view on [2, 5, 8]
    assert _matmuls(program) == 1 + 4 * linears and _bmms(program) == 0
    after, result = _run(FuseExperts(horizontal=False), program)
    # Expected: the 4 experts' linears become one batched matmul each over the 10 flattened rows
    assert _matmuls(after) == 1 + linears and _bmms(after) == linears
    assert result.details["experts_fused"] == 4
    _check_numerics(after, model, (2, 5, 8))


def test_3d_experts_with_a_dynamic_batch_through_optimize():
    torch.manual_seed(1)
    model = _dense(SwiGLU).eval()
    batch = torch.export.Dim("batch", min=2, max=64)
    program = fxopt.capture(model, (torch.randn(2, 5, 8),), dynamic_shapes=({0: batch},))
    out = fxopt.optimize(program, "moe{horizontal=false}", verify=True)
    assert out.reports[-1].details["experts_fused"] == 3 and _bmms(out) == 3
    for b in (3, 9):
        x = torch.randn(b, 5, 8)
        torch.testing.assert_close(out(x), model(x))


class MoEBlock(AttentionBlock):
    """A transformer layer (the conftest attention) whose FFN is 4 softmax-gated SwiGLU experts."""

    def __init__(self, d=32):
        super().__init__(d)
        del self.fc1, self.fc2
        self.moe = _dense(SwiGLU, n=4, d=d, h=48)

    def forward(self, x):
        b, t, d = x.shape
        h = self.ln1(x)
        q, k, v = (proj(h).view(b, t, self.heads, d // self.heads).transpose(1, 2)
                   for proj in (self.q, self.k, self.v))
        y = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, -1) @ v
        x = x + self.o(y.transpose(1, 2).reshape(b, t, d))
        return x + self.moe(self.ln2(x))


def test_transformer_layer_with_gated_experts():
    model, program = _capture(MoEBlock(), 2, 8, 32)
    # Before: q, k, v, o and the router addmm, 12 expert mm, attention's 2 bmm
    assert (_count(program, "addmm"), _count(program, "mm"), _bmms(program)) == (5, 12, 2)
    out = fxopt.optimize(program, "moe", verify=True)
    details = out.reports[-1].details
    # Expected: the experts' 12 mms become 3 bmms; q/k/v become one wide addmm (horizontal, untouched by
    # expert matching: a lone linear is no expert)
    assert details["dense_groups"] == 1 and details["experts_fused"] == 4
    assert details["horizontal_groups"] == 1 and details["linears_fused"] == 3
    assert (_count(out, "addmm"), _count(out, "mm"), _bmms(out)) == (3, 0, 3 + 2)
    _check_numerics(out, model, (2, 8, 32))


def test_dense_fusion_is_idempotent_on_3d_experts():
    _, program = _capture(_dense(GateUp), 2, 5, 8)
    once, first = _run(FuseExperts(), program)
    twice, second = _run(FuseExperts(), once)
    assert first.modified and not second.modified and twice.num_nodes() == once.num_nodes()


def test_up_projection_alone_is_not_an_expert():
    _, program = _capture(_dense(SwiGLU, n=2), 5, 8)
    units = [grow_chain(lin) for n in program.graph.nodes if (lin := as_linear(n)) is not None]
    full = [u for u in units if not u.partial and len(u.linears) == 3]
    # each expert is found once, from its gate projection; its up projection is a partial unit
    assert len(full) == 2 and sum(u.partial for u in units) == 2
    assert full[0].key == full[1].key and not (full[0].members & full[1].members)


# ------------------------------------------------------------------------------------------------ routed
class WhereMoE(nn.Module):
    """fxopt's original routed form with gated-MLP experts: ``tok, slot = torch.where(idx == e)``. Tokens whose
    gate probability is under ``drop`` go to no expert (id -1)."""

    def __init__(self, cls=SwiGLU, num_experts=4, d=8, h=16, k=2, drop=0.0):
        super().__init__()
        self.k, self.drop = k, drop
        self.router = nn.Linear(d, num_experts, bias=False)
        self.experts = nn.ModuleList(cls(d, h) for _ in range(num_experts))

    def forward(self, x):
        w, idx = torch.topk(torch.softmax(self.router(x), -1), self.k)
        if self.drop:
            idx = torch.where(w >= self.drop, idx, -1)
        out = x.new_zeros(x.shape)
        for e, expert in enumerate(self.experts):
            tok, slot = torch.where(idx == e)
            out = out.index_add(0, tok, expert(x[tok]) * w[tok, slot, None])
        return out


class HFLoopMoE(nn.Module):
    """The HF Mixtral/Switch ModuleList loop (transformers 4.x ``MixtralSparseMoeBlock``): one-hot expert
    mask permuted to [E, k, N], ``slot, tok = torch.where(mask[e])`` (slot first), ``x[None, tok].reshape``,
    in-place ``index_add_`` with ``.to(dtype)``. ``bucket``: one more class than experts; tokens whose
    probability is under ``drop`` go to that class, which no expert reads."""

    def __init__(self, experts, d=8, k=2, drop=0.0):
        super().__init__()
        self.k, self.drop = k, drop
        self.experts = experts
        self.num_experts = len(experts)
        self.router = nn.Linear(d, self.num_experts, bias=False)

    def forward(self, hidden_states):
        b, t, d = hidden_states.shape
        hidden_states = hidden_states.view(-1, d)
        probs = F.softmax(self.router(hidden_states), dim=1, dtype=torch.float)
        weights, selected = torch.topk(probs, self.k, dim=-1)
        weights = (weights / weights.sum(dim=-1, keepdim=True)).to(hidden_states.dtype)
        classes = self.num_experts
        if self.drop:
            selected = torch.where(weights >= self.drop, selected, self.num_experts)
            classes += 1
        out = torch.zeros_like(hidden_states)
        expert_mask = F.one_hot(selected, num_classes=classes).permute(2, 1, 0)
        for e in range(self.num_experts):
            slot, tok = torch.where(expert_mask[e])
            current = hidden_states[None, tok].reshape(-1, d)
            current = self.experts[e](current) * weights[tok, slot, None]
            out.index_add_(0, tok, current.to(hidden_states.dtype))
        return out.reshape(b, t, d)


def _switch_experts(n=4):
    """``n`` real transformers SwitchTransformersDenseActDense experts (tiny random config)."""
    from transformers import SwitchTransformersConfig
    from transformers.models.switch_transformers.modeling_switch_transformers import (
        SwitchTransformersDenseActDense,
    )
    config = SwitchTransformersConfig(d_model=8, d_ff=16, num_experts=n, dense_act_fn="relu")
    torch.manual_seed(0)
    return nn.ModuleList(SwitchTransformersDenseActDense(config) for _ in range(n))


_CACHE: dict = {}

def _cached(name, factory, *shape):
    if name not in _CACHE:
        torch.manual_seed(0)
        _CACHE[name] = _capture(factory(), *shape)
    return _CACHE[name]


def test_where_loop_with_gated_experts_and_dropped_tokens():
    model, program = _cached("where", lambda: WhereMoE(drop=0.3), 7, 8)
    assert _count(program, "nonzero") == 4 and _count(program, "mm") == 1 + 12
    after, result = _run(FuseExperts(), program)
    # Expected: one grouped chain of 3 bmms (gate, up, down) and one index_add; one nonzero keeps valid pairs
    assert result.details["routed_groups"] == 1 and result.details["experts_fused"] == 4
    assert _count(after, "mm") == 1 and _bmms(after) == 3 and _count(after, "nonzero") == 1
    x = torch.randn(7, 8, generator=torch.Generator().manual_seed(5))
    x[3] *= 1e-3                                              # router probabilities ~1/4 < 0.3: dropped
    with torch.no_grad():
        w, idx = torch.topk(torch.softmax(model.router(x), -1), 2)
    assert (w < 0.3).all(dim=1)[3]                            # a token routed to no expert at all
    torch.testing.assert_close(after(x), model(x))
    same = x[:1].repeat(7, 1) + 1e-3 * x                      # all tokens alike: some experts get none
    with torch.no_grad():
        assert len(torch.topk(model.router(same), 2)[1].unique()) < 4
    torch.testing.assert_close(after(same), model(same))
    _check_numerics(after, model, (7, 8))


def test_hf_loop_with_real_switch_experts_is_one_group():
    model, program = _cached("switch", lambda: HFLoopMoE(_switch_experts()), 2, 5, 8)
    # Before: per expert one nonzero over the one-hot mask and two mm (wi, wo)
    assert _count(program, "nonzero") == 4 and _count(program, "mm") == 1 + 8
    after, result = _run(FuseExperts(), program)
    assert result.details["routed_groups"] == 1 and result.details["experts_fused"] == 4
    assert _bmms(after) == 2 and _count(after, "index_add") == 1 and _count(after, "index_put") == 0
    _check_numerics(after, model, (2, 5, 8), seeds=range(4))


def test_hf_loop_experts_are_matched_as_one_group():
    _, program = _cached("switch", lambda: HFLoopMoE(_switch_experts()), 2, 5, 8)
    units = [grow_chain(lin) for n in program.graph.nodes if (lin := as_linear(n)) is not None]
    routed = sorted((r for r in map(match_routed, units) if r is not None), key=lambda r: r.expert_id)
    # one_hot(idx, 4).permute(2, 1, 0)[e] -> nonzero columns (slot, tok): tok is column 1, slot column 0
    assert [r.expert_id for r in routed] == [0, 1, 2, 3] and check_group(routed) is None
    assert all(_column_of(r.tok)[1] == 1 and _column_of(r.slot)[1] == 0 for r in routed)
    assert len({r.idx for r in routed}) == 1 and all(len(r.asserts) == 1 for r in routed)
    assert len({r.chain.key for r in routed}) == 1 and len(routed[0].chain.linears) == 2   # wi, wo


def test_hf_loop_leaves_no_per_expert_matmul():
    _, program = _cached("switch", lambda: HFLoopMoE(_switch_experts()), 2, 5, 8)
    after, _ = _run(FuseExperts(), program)
    assert _count(after, "mm") == 1 and _count(after, "_assert_tensor_metadata") == 1
    assert _count(after, "nonzero") == 0                       # topk ids are all in range: no filtering


def test_hf_loop_with_gated_experts_tokens_to_no_expert():
    factory = lambda: HFLoopMoE(nn.ModuleList(SwiGLU(8, 16) for _ in range(4)), drop=0.55)  # noqa: E731
    model, program = _cached("hf_swiglu", factory, 2, 5, 8)
    after, result = _run(FuseExperts(), program)
    assert result.details["routed_groups"] == 1 and _bmms(after) == 3
    x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(2))
    x[1, 2] *= 1e-3                                           # both renormalized weights ~1/2 < 0.55
    with torch.no_grad():
        w = torch.topk(F.softmax(model.router(x.view(-1, 8)), 1), 2)[0]
        w = w / w.sum(-1, keepdim=True)
    assert (w < 0.55).all(dim=1)[7] and (w >= 0.55).any()     # token 7 goes to no expert, others do not
    torch.testing.assert_close(after(x), model(x))
    same = x[:, :1].expand(2, 5, 8) + 1e-3 * x
    torch.testing.assert_close(after(same), model(same))
    _check_numerics(after, model, (2, 5, 8))


def test_routed_fusion_is_idempotent():
    _, program = _cached("where", lambda: WhereMoE(drop=0.3), 7, 8)
    once, first = _run(FuseExperts(), program)
    _, second = _run(FuseExperts(), once)
    assert first.modified and not second.modified


# ------------------------------------------------------------------------------------------------ must not fuse
VARIANTS = {
    "swiglu": lambda h: SwiGLU(6, h),
    "swiglu_swapped": lambda h: SwiGLU(6, h, swap=True),          # same ops, product wired the other way
    "swiglu_gelu": lambda h: SwiGLU(6, h, act=F.gelu),
    "gate_up": lambda h: GateUp(6, h),
    "gate_up_swapped": lambda h: GateUp(6, h, swap=True),         # activates the other half of the chunk
    "mlp": lambda h: MLP(6, h, bias=False, act=F.silu),
}


@settings(max_examples=4, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(st.sampled_from(sorted(VARIANTS)), st.sampled_from([8, 12])), min_size=2, max_size=4),
       st.booleans())
def test_property_only_identical_units_fuse(specs, three_d):
    """Random mixes of gated and plain experts (op, wiring, hidden size), on 2-D or 3-D inputs: the output
    never moves, and exactly the structures present at least twice fuse."""
    torch.manual_seed(0)
    model = DenseMoE([VARIANTS[v](h) for v, h in specs], d=6)
    shape = (2, 3, 6) if three_d else (5, 6)
    model, program = _capture(model, *shape)
    after, result = _run(FuseExperts(horizontal=False), program)
    counts: dict = {}
    for s in specs:
        counts[s] = counts.get(s, 0) + 1
    expected = sum(c for c in counts.values() if c >= 2)
    assert result.details["experts_fused"] == expected and result.modified == (expected > 0)
    assert result.details["dense_groups"] == sum(1 for c in counts.values() if c >= 2)
    _check_numerics(after, model, shape, seeds=range(2))
