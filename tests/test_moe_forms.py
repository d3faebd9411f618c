"""`moe` on the expert forms real models use: masked top-1 (one-hot masks of an argmax) routed instead of
dense, transformers 5.x stacked-weight experts (already routed through ``fxopt::grouped_mm``) counted and
given each target's form, their XLA lowering (``lax.ragged_dot``, ``histc``), and capture of modules that
convert their own weights in ``forward`` (Switch Transformers' router).

Before/Expected as op counts; numerics against the eager model; idempotence."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import fxopt
from fxopt.errors import InputError
from fxopt.passes.moe.stacked import histc_as_count, static_grouped_mm

GROUPED_MM = torch.ops.fxopt.grouped_mm.default


def _ops(program, target) -> int:
    return sum(1 for n in program.graph.nodes if n.op == "call_function" and n.target is target)


def _matmuls(program) -> int:
    return sum(1 for n in program.graph.nodes if n.op == "call_function" and
               n.target in (torch.ops.aten.mm.default, torch.ops.aten.addmm.default))


class Expert(nn.Module):
    def __init__(self, d: int, h: int):
        super().__init__()
        self.up, self.down = nn.Linear(d, h), nn.Linear(h, d)

    def forward(self, x):
        return self.down(torch.relu(self.up(x)))


class MaskedTop1(nn.Module):
    """Top-1 experts as users write them for static shapes: every expert on every token, a one-hot mask of
    the argmax keeps one result. ``form`` picks the spelling of the mask and of the id."""

    def __init__(self, experts: int = 4, d: int = 16, h: int = 32, form: str = "argmax", extra_class: bool = False):
        super().__init__()
        self.form = form
        self.gate = nn.Linear(d, experts + int(extra_class))
        self.experts = nn.ModuleList(Expert(d, h) for _ in range(experts))

    def forward(self, x):
        logits = self.gate(x)
        if self.form == "topk":
            idx = torch.topk(logits, 1).indices                      # [N, 1]
            masks = [(idx == i).to(x.dtype) for i in range(len(self.experts))]
        else:
            idx = logits.argmax(-1)
            masks = [(idx == i).to(x.dtype).unsqueeze(-1) if self.form == "to-first"
                     else (idx == i).unsqueeze(-1).to(x.dtype) for i in range(len(self.experts))]
        out = x if self.form == "residual" else torch.zeros_like(x, dtype=torch.float64 if self.form == "f64" else None)
        for mask, expert in zip(masks, self.experts):
            out = out + mask * expert(x)
        return out


def _captured(model, *shape):
    torch.manual_seed(0)
    model = model.eval()
    x = torch.randn(*shape)
    return model, x, fxopt.capture(model, (x,))


# ------------------------------------------------------------------------------------------- masked top-1
@pytest.mark.parametrize("form", ["argmax", "to-first", "topk", "residual"])
def test_masked_top1_is_routed_not_dense(form):
    model, x, program = _captured(MaskedTop1(form=form), 12, 16)
    # Before: 4 experts x 2 linears + the gate
    assert _matmuls(program) == 9 and _ops(program, GROUPED_MM) == 0
    out = fxopt.optimize(program, "moe{horizontal=false}")
    details = out.reports[-1].details
    # Expected: the gate only, one grouped matmul per expert linear, no batched (dense) matmul
    assert details["masked_groups"] == 1 and details["dense_groups"] == 0 and details["experts_fused"] == 4
    assert _matmuls(out) == 1 and _ops(out, GROUPED_MM) == 2
    assert _ops(out, torch.ops.aten.bmm.default) + _ops(out, torch.ops.aten.baddbmm.default) == 0
    torch.testing.assert_close(out(x), model(x))
    x2 = torch.randn(12, 16)
    torch.testing.assert_close(out(x2), model(x2))


def test_masked_top1_routing_is_idempotent():
    _, _, program = _captured(MaskedTop1(), 12, 16)
    once = fxopt.optimize(program, "moe{horizontal=false}")
    again = fxopt.optimize(once, "moe{horizontal=false}")
    assert again.reports[-1].modified is False and _ops(again, GROUPED_MM) == 2


def test_masks_of_ids_not_provably_in_range_stay_dense():
    # the gate scores 5 classes for 4 experts: a token may pick class 4 and get no expert, so routing
    # every token to one expert would be wrong
    model, x, program = _captured(MaskedTop1(extra_class=True), 12, 16)
    out = fxopt.optimize(program, "moe{horizontal=false}")
    details = out.reports[-1].details
    assert details["masked_groups"] == 0 and details["dense_groups"] == 1
    torch.testing.assert_close(out(x), model(x))


def test_a_sum_that_promotes_the_dtype_stays_dense():
    # float32 products summed into float64 zeros: the result is float64, which the routed form would not be
    model, x, program = _captured(MaskedTop1(form="f64"), 12, 16)
    out = fxopt.optimize(program, "moe{horizontal=false}")
    assert out.reports[-1].details["masked_groups"] == 0
    torch.testing.assert_close(out(x), model(x))


def test_masked_top1_stays_dense_for_fixed_shape_targets():
    _, _, program = _captured(MaskedTop1(), 12, 16)
    out = fxopt.optimize(program, "moe{horizontal=false}", target="tensorrt")
    assert out.reports[-1].details["masked_groups"] == 0 and _ops(out, GROUPED_MM) == 0


def test_masked_option_dense_keeps_the_dense_form():
    _, _, program = _captured(MaskedTop1(), 12, 16)
    out = fxopt.optimize(program, "moe{horizontal=false,masked=dense}")
    assert out.reports[-1].details["dense_groups"] == 1 and _ops(out, GROUPED_MM) == 0


# ------------------------------------------------------------------------------------------- stacked experts
class Stacked(nn.Module):
    """Experts as transformers 5.x holds them: stacked [E, in, out] weights, rows sorted by expert, one
    grouped matmul per linear (``ends`` from histc + cumsum, as HF computes them)."""

    def __init__(self, experts: int = 4, d: int = 16, h: int = 32):
        super().__init__()
        self.experts = experts
        self.gate = nn.Linear(d, experts)
        self.w1 = nn.Parameter(torch.randn(experts, d, h) / d ** 0.5)
        self.w2 = nn.Parameter(torch.randn(experts, h, d) / h ** 0.5)

    def forward(self, x):
        idx = self.gate(x).argmax(-1)
        ids, order = torch.sort(idx, stable=True)
        counts = torch.histc(ids.float(), bins=self.experts, min=0, max=self.experts - 1)
        ends = torch.cumsum(counts, 0).to(torch.int32)
        rows = x[order]
        h = torch.relu(torch.ops.fxopt.grouped_mm(rows, self.w1, ends))
        y = torch.ops.fxopt.grouped_mm(h, self.w2, ends)
        return torch.zeros_like(y).index_copy(0, order, y)


def test_stacked_experts_are_found_and_kept_for_the_reference_target():
    model, x, program = _captured(Stacked(), 10, 16)
    # Before: histc + cumsum give the ends
    assert _ops(program, torch.ops.aten.histc.default) == 1 and _ops(program, torch.ops.aten.cumsum.default) == 1
    out = fxopt.optimize(program, "moe")
    report = out.reports[-1]
    assert report.details["stacked_groups"] == 1 and report.details["groups_found"] == 1
    assert "kept as grouped matmuls" in report.notes[0]
    # Expected: the grouped matmuls kept, the ends one searchsorted of the sorted ids
    assert _ops(out, GROUPED_MM) == 2 and _ops(out, torch.ops.aten.searchsorted.Tensor) == 1
    assert _ops(out, torch.ops.aten.histc.default) == 0 and _ops(out, torch.ops.aten.cumsum.default) == 0
    torch.testing.assert_close(out(x), model(x))
    assert fxopt.optimize(out, "moe").reports[-1].modified is False


class StackedNoRange(Stacked):
    """The ids come from the caller: histc drops ids outside 0..E-1, searchsorted would count them."""

    def forward(self, x, idx):
        ids, order = torch.sort(idx, stable=True)
        counts = torch.histc(ids.float(), bins=self.experts, min=0, max=self.experts - 1)
        ends = torch.cumsum(counts, 0).to(torch.int32)
        return torch.ops.fxopt.grouped_mm(x[order], self.w1, ends)


def test_ends_of_ids_not_provably_in_range_keep_their_histogram():
    program = fxopt.capture(StackedNoRange().eval(), (torch.randn(10, 16), torch.randint(0, 4, (10,))))
    out = fxopt.optimize(program, "moe")
    assert _ops(out, torch.ops.aten.histc.default) == 1 and _ops(out, torch.ops.aten.searchsorted.Tensor) == 0


@pytest.mark.parametrize("target", ["tensorrt", "neuron"])
def test_stacked_experts_take_the_static_form_for_fixed_shape_targets(target):
    model, x, program = _captured(Stacked(), 10, 16)
    out = fxopt.optimize(program, "moe", target=target)
    assert _ops(out, GROUPED_MM) == 0 and _ops(out, torch.ops.aten.histc.default) == 0
    assert _ops(out, torch.ops.aten.bmm.default) == 2
    torch.testing.assert_close(out(x), model(x))
    assert fxopt.optimize(out, "moe", target=target).reports[-1].modified is False


def test_static_grouped_mm_equals_the_grouped_matmul_with_empty_groups():
    # Before: grouped_mm(rows, W, ends); Expected: bmm over every expert, masked sum; equal values
    graph = torch.fx.Graph()
    rows, ends = graph.placeholder("rows"), graph.placeholder("ends")
    weights = graph.get_attr("w")
    out = graph.call_function(GROUPED_MM, (rows, weights, ends))
    graph.output(out)
    gm = torch.fx.GraphModule({"w": torch.randn(4, 8, 6)}, graph)
    values = (torch.randn(7, 8), torch.tensor([2, 2, 7, 7], dtype=torch.int32))   # experts 1 and 3 get none
    for node, value in zip(gm.graph.nodes, (*values, gm.w)):
        node.meta["val"] = value
    expected = gm(*values)
    out.replace_all_uses_with(static_grouped_mm(gm, out, "moe"))
    gm.graph.erase_node(out)
    gm.recompile()
    assert not any(n.target is GROUPED_MM for n in gm.graph.nodes)
    torch.testing.assert_close(gm(*values), expected)


def _histc_graph(ids_dtype, bins, lo, hi):
    graph = torch.fx.Graph()
    ids = graph.placeholder("ids")
    cast = graph.call_function(torch.ops.aten._to_copy.default, (ids,), {"dtype": torch.float32})
    hist = graph.call_function(torch.ops.aten.histc.default, (cast, bins, lo, hi))
    graph.output(hist)
    gm = torch.fx.GraphModule({}, graph)
    ids.meta["val"] = torch.zeros(9, dtype=ids_dtype)
    cast.meta["val"] = torch.zeros(9)
    hist.meta["val"] = torch.zeros(bins)
    return gm, hist


def test_histc_of_integer_ids_becomes_a_one_hot_count():
    gm, hist = _histc_graph(torch.int64, 5, 0, 4)
    ids = torch.tensor([0, 4, 4, 2, 9, -1, 3, 0, 4])                      # 9 and -1 are outside: not counted
    expected = gm(ids)
    hist.replace_all_uses_with(histc_as_count(gm, hist, "moe"))
    gm.graph.erase_node(hist)
    gm.recompile()
    torch.testing.assert_close(gm(ids), expected)


def test_histc_over_another_range_is_not_a_count():
    gm, hist = _histc_graph(torch.int64, 5, 0, 10)                        # bins of width 2: not one id each
    assert histc_as_count(gm, hist, "moe") is None


# ------------------------------------------------------------------------------------------- XLA lowering
jax = pytest.importorskip("jax")


class GroupedMM(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 16, 8))

    def forward(self, rows, ends):
        return torch.ops.fxopt.grouped_mm(rows, self.w, ends)


class Histc(nn.Module):
    def __init__(self, bins, lo, hi):
        super().__init__()
        self.bins, self.lo, self.hi = bins, lo, hi

    def forward(self, x):
        return torch.histc(x, bins=self.bins, min=self.lo, max=self.hi)


@pytest.mark.numerics
@pytest.mark.parametrize("rows, ends", [
    (11, [3, 3, 9, 11]),                               # an empty group, fewer rows than one tile per group
    (200, [0, 70, 70, 71, 150, 150, 199, 200]),        # several tiles per group, empty first group
], ids=["small", "tiles"])
def test_xla_grouped_mm_matches_the_grouped_matmul(rows, ends):
    weights = torch.randn(len(ends), 16, 8)
    model = GroupedMM()
    model.w = nn.Parameter(weights)
    rows, ends = torch.randn(rows, 16), torch.tensor(ends, dtype=torch.int32)
    program = fxopt.capture(model.eval(), (rows, ends))
    compiled = fxopt.compile(program, "xla")
    torch.testing.assert_close(compiled(rows, ends), program(rows, ends), atol=1e-5, rtol=1e-5)


@pytest.mark.numerics
def test_xla_runs_grouped_mm_as_one_partition():
    rows, ends = torch.randn(11, 16), torch.tensor([3, 3, 9, 11], dtype=torch.int32)
    program = fxopt.capture(GroupedMM().eval(), (rows, ends))
    compiled = fxopt.compile(program, "xla")
    torch.testing.assert_close(compiled(rows, ends), program(rows, ends), atol=1e-5, rtol=1e-5)


@pytest.mark.numerics
@pytest.mark.parametrize("bins, lo, hi", [(4, 0.0, 3.0), (7, -1.5, 2.0), (5, 0.0, 0.0)])
def test_xla_histc_matches_torch(bins, lo, hi):
    torch.manual_seed(0)
    x = torch.cat([torch.randn(40), torch.tensor([lo, hi, -9.0, 9.0, 0.5])])   # edges and outside values
    program = fxopt.capture(Histc(bins, lo, hi).eval(), (x,))
    compiled = fxopt.compile(program, "xla")
    torch.testing.assert_close(compiled(x), torch.histc(x, bins, lo, hi))


# ------------------------------------------------------------------------------------------- Hugging Face
HF_MOE = ["mixtral", "qwen2_moe", "olmoe"]


@pytest.fixture(scope="module")
def hf_programs():
    pytest.importorskip("transformers")
    from corpus import BUILDERS

    cache = {}

    def get(name):
        if name not in cache:
            model, inputs = BUILDERS[name]()
            cache[name] = (model, inputs, fxopt.capture(model, inputs))
        return cache[name]

    return get


@pytest.mark.parametrize("name", HF_MOE)
def test_hf_moe_expert_layers_are_found(hf_programs, name):
    model, inputs, program = hf_programs(name)
    optimized = fxopt.optimize(program, "moe")
    report = optimized.reports[-1]
    assert report.details["stacked_groups"] == 2 and report.details["groups_found"] >= 2   # one per layer
    # the reference form: ends by searchsorted, the unsort by index_copy, HF's bookkeeping gone
    assert _ops(optimized, torch.ops.aten.histc.default) == 0 and _ops(optimized, torch.ops.aten.index_put.default) == 0
    assert _ops(optimized, torch.ops.aten.index_copy.default) == 2                        # one per layer
    with torch.no_grad():
        torch.testing.assert_close(optimized(*inputs)[0], model(*inputs)[0])


@pytest.mark.numerics
@pytest.mark.parametrize("name", HF_MOE)
def test_hf_moe_layers_stay_inside_one_xla_partition(hf_programs, name):
    model, inputs, program = hf_programs(name)
    optimized = fxopt.optimize(program, target="xla")
    partition = {n.meta["partition"] for n in optimized.graph.nodes if n.op == "call_function" and
                 n.target in (GROUPED_MM, torch.ops.aten.histc.default, torch.ops.aten.sort.default)}
    assert len(partition) == 1 and partition.pop().startswith("xla")
    assert sum(1 for n in optimized.graph.nodes if n.meta.get("partition", "").startswith("xla")) > \
        0.9 * sum(1 for n in optimized.graph.nodes if n.op == "call_function")
    assert _ops(optimized, GROUPED_MM) == 4                                  # 2 layers x 2 linears, kept
    compiled = fxopt.compile(optimized, "xla")
    with torch.no_grad():
        torch.testing.assert_close(compiled(*inputs)[0], model(*inputs)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.numerics
@pytest.mark.parametrize("name", HF_MOE)
def test_hf_moe_static_form_for_tensorrt_keeps_numerics(hf_programs, name):
    model, inputs, program = hf_programs(name)
    optimized = fxopt.optimize(program, "canonicalize,stable-sort,moe", target="tensorrt")
    assert _ops(optimized, GROUPED_MM) == 0 and _ops(optimized, torch.ops.aten.histc.default) == 0
    with torch.no_grad():
        torch.testing.assert_close(optimized(*inputs)[0], model(*inputs)[0], atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------- capture
class SelfConverting(nn.Module):
    """Converts a submodule's weights inside forward, as Switch Transformers' router does."""

    def __init__(self, dtype=torch.float32):
        super().__init__()
        self.dtype = dtype
        self.lin = nn.Linear(8, 4)

    def forward(self, x):
        self.lin = self.lin.to(self.dtype)
        return self.lin(x.to(self.dtype))


def test_a_conversion_that_changes_nothing_is_captured():
    model = SelfConverting().eval()
    x = torch.randn(3, 8)
    program = fxopt.capture(model, (x,))
    torch.testing.assert_close(program(x), model(x))
    assert model.lin.weight.dtype == torch.float32


def test_a_conversion_that_changes_weights_is_one_line_with_the_fix():
    with pytest.raises(InputError, match=r"convert the model once before capture") as info:
        fxopt.capture(SelfConverting(torch.float64).eval(), (torch.randn(3, 8),))
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------- Switch
@pytest.fixture(scope="module")
def switch():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.SwitchTransformersConfig(
        vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_sparse_encoder_layers=1, num_heads=4,
        num_experts=4, expert_capacity=3, num_decoder_layers=2, num_sparse_decoder_layers=1)
    model = transformers.SwitchTransformersEncoderModel(config).eval()
    inputs = (torch.randint(0, 100, (2, 8)), torch.ones(2, 8, dtype=torch.long))
    return model, inputs, fxopt.capture(model, inputs)


def test_switch_experts_capture_with_a_static_loop(switch):
    model, inputs, program = switch
    assert any("SwitchTransformersExperts module(s) captured with a static loop" in n for n in program.notes)
    assert "forward" not in model.encoder.block[1].layer[1].mlp.experts.__dict__   # the model is left as it was
    with torch.no_grad():
        torch.testing.assert_close(program(*inputs)["last_hidden_state"], model(*inputs).last_hidden_state)


def test_switch_experts_are_one_routed_group_with_dropped_tokens_skipped(switch):
    model, inputs, program = switch
    # capacity 3 for 16 tokens over 4 experts: the router drops tokens, which the routed form must skip
    with torch.no_grad():
        kept = model.encoder.block[1].layer[1].mlp.router(torch.randn(2, 8, 32))[0].sum()
    assert kept < 16
    out = fxopt.optimize(program, "moe")
    details = out.reports[-1].details
    assert details["routed_groups"] == 1 and details["experts_fused"] == 4
    with torch.no_grad():
        torch.testing.assert_close(out(*inputs)["last_hidden_state"], model(*inputs).last_hidden_state)


@pytest.mark.numerics
def test_switch_experts_stay_inside_one_xla_partition(switch):
    model, inputs, program = switch
    optimized = fxopt.optimize(program, target="xla")
    moe = next(r for r in optimized.reports if r.spec.startswith("moe"))
    assert moe.details["static_routed_groups"] == 1                   # the dense form: static shapes
    placements = {n.meta["placement"] for n in optimized.graph.nodes if n.op == "call_function" and
                  n.target in (torch.ops.aten.bmm.default, torch.ops.aten.baddbmm.default)}
    assert placements == {"xla"} and _ops(optimized, torch.ops.aten.nonzero.default) == 0
    compiled = fxopt.compile(optimized, "xla")
    with torch.no_grad():
        torch.testing.assert_close(compiled(*inputs)["last_hidden_state"], model(*inputs).last_hidden_state,
                                   atol=1e-5, rtol=1e-5)
