"""split: op support per target, min-cut placement, acyclic partitions, runnable partitions."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

import fxopt
from benchmarks.split_graphs import branched_program
from fxopt.ir import targets as support
from fxopt.errors import InputError
from fxopt.ir.devices import get_profile
from fxopt.passes.manager import optimize
from fxopt.passes.split import Split, extract_partitions, partitions_region, run_partitions
from fxopt.passes.split.partition import is_acyclic
from fxopt.passes.split.placement import analyse, place


def _split(program, **options):
    work = program.copy()
    result = Split(**options).run(work)
    work.dirty = True
    return work, result


def _by_module(program, device):
    """Top-level module names (or op names outside modules) of the call_function nodes on ``device``."""
    out = set()
    for n in program.graph.nodes:
        if n.op == "call_function" and n.meta["placement"] == device:
            module = (n.meta.get("provenance") or {}).get("module") or ""
            out.add(module.split(".")[0] or support.packet_name(n.target))
    return out


def _same(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) or (x.is_floating_point() and torch.allclose(
        x, y, equal_nan=True)) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def ranking():
    model, inputs = fxopt.zoo.get("ranking")          # default size: batch 64, where offloading pays
    return fxopt.capture(model, inputs), model, inputs


@pytest.fixture(scope="module")
def encoder_program():
    from conftest import captured
    return captured("encoder")[2]


# ------------------------------------------------------------------------------------------ support tables
def test_support_data_ships_and_maps_core_aten():
    assert len(support.neuron_operators()) == 174 and "aten::embedding" not in support.neuron_operators()
    assert support.tensorrt_operators()["Gemm"]["supported"]
    assert "neuron" in support.data_source("neuron").lower() or "aws" in support.data_source("neuron").lower()


def test_ranking_ops_support_per_target(ranking):
    program = ranking[0]
    nodes = {support.packet_name(n.target): n for n in program.graph.nodes if n.op == "call_function"}
    for target in support.TARGETS:
        table = support.support_table(target)
        assert table.supports(nodes["addmm"]) and table.supports(nodes["cat"]), target
        # neuron and tensorrt cannot take an embedding bag; the XLA lowering can (segment sums)
        assert table.supports(nodes["_embedding_bag"]) == (target == "xla"), target
    why = support.support_table("neuron").why_not(nodes["_embedding_bag"])
    assert "aten::embedding_bag" in why


def test_tensorrt_checks_dtypes():
    class IntMatmul(torch.nn.Module):
        def forward(self, a, b):
            return a @ b, a.float() @ b.float()

    program = fxopt.capture(IntMatmul(), (torch.ones(2, 3, dtype=torch.int64), torch.ones(3, 2, dtype=torch.int64)))
    mms = [n for n in program.graph.nodes if n.op == "call_function" and support.packet_name(n.target) == "mm"]
    table = support.support_table("tensorrt")
    assert [table.supports(n) for n in mms] == [False, True]
    assert "INT64" in table.why_not(mms[0])


# ------------------------------------------------------------------------------------------ the zoo model
def test_ranking_cost_policy_puts_dense_math_on_accelerator_and_unsupported_tables_on_cpu(ranking):
    program, model, inputs = ranking
    # neuron cannot take embedding bags, so they stay with the host; xla can, and on the h100 profile the cost
    # model finds the tables faster there (its tables fit; the model has no memory-capacity constraint)
    for target in ("neuron", "xla"):
        after = optimize(program, f"split{{target={target}}}", verify=True)
        cpu, acc = _by_module(after, "cpu"), _by_module(after, target)
        if target == "neuron":
            assert {"tables", "cat"} <= cpu, (target, cpu)
        assert {"cross", "moe", "top"} <= acc, (target, acc)
        details = after.reports[-1].details
        assert details["transfers"] >= 2 and details["transfer_bytes"] > 0
        assert details["estimated_us"]["after"] < details["estimated_us"]["before"]
        region = partitions_region(after)
        assert region["transfers"]["count"] == details["transfers"] and region["target"] == target
        torch.testing.assert_close(after(*inputs), model(*inputs))
        assert _same(run_partitions(after, after.flat_example_inputs()), program.run_flat(program.flat_example_inputs()))


def test_support_policy_puts_every_supported_op_on_the_accelerator(ranking):
    after, result = _split(ranking[0], target="neuron", policy="support", min_ops=1)
    table = support.support_table("neuron")
    constant: set = set()  # computed from weights only (arange, permute(weight)): they join their reader
    for n in after.graph.nodes:
        if n.op == "call_function" and all(a.op == "get_attr" or a in constant for a in n.all_input_nodes):
            constant.add(n)
            assert n.meta["placement"] == next(iter(n.users)).meta["placement"], n.name
        elif n.op == "call_function" and n.target.__name__ == "getitem":
            assert n.meta["placement"] == n.args[0].meta["placement"], n.name   # with its producer
        elif n.op == "call_function":
            assert n.meta["placement"] == ("neuron" if table.supports(n) else "cpu"), n.name
    assert result.details["transfers"] > 2


def test_every_node_placed_and_weights_resident_where_used(ranking):
    after, _ = _split(ranking[0], target="xla")
    for n in after.graph.nodes:
        assert n.meta["placement"] in ("cpu", "xla")
        if n.op == "call_function":
            assert n.meta["partition"].startswith(n.meta["placement"])
        if n.op == "get_attr":
            users = {u.meta["placement"] for u in n.users}
            assert set(n.meta["resident_on"]) == users
    assert all(n.meta["placement"] == "cpu" for n in after.graph.nodes if n.op in ("placeholder", "output"))


def test_split_is_idempotent_and_leaves_the_graph_alone(ranking):
    once, first = _split(ranking[0], target="xla")
    code = once.graph.python_code("self").src
    twice, second = _split(once, target="xla")
    assert first.modified and not second.modified
    assert twice.graph.python_code("self").src == code == ranking[0].graph.python_code("self").src
    assert sum(1 for r in twice.regions if r.get("kind") == "partitions") == 1


def test_large_min_ops_sends_small_partitions_to_cpu(ranking):
    after, result = _split(ranking[0], target="xla", min_ops=10_000)
    assert result.details["partitions"]["xla"] == 0 and result.details["transfers"] == 0
    assert all(n.meta["placement"] == "cpu" for n in after.graph.nodes)


# ------------------------------------------------------------------------------------------ transformer
def test_encoder_embedding_on_cpu_for_neuron_and_partitions_run(encoder_program):
    after, result = _split(encoder_program, target="neuron", policy="support")
    emb = next(n for n in after.graph.nodes if n.op == "call_function" and support.packet_name(n.target) == "embedding")
    assert emb.meta["placement"] == "cpu" and result.details["unsupported"]["embedding"] == 1
    parts = extract_partitions(after)
    assert [d for _, d, *_ in parts][:2] == ["cpu", "neuron"]
    assert all(isinstance(m, torch.fx.GraphModule) for _, _, m, _, _ in parts)
    flat = after.flat_example_inputs()
    assert _same(run_partitions(after, flat, parts), encoder_program.run_flat(flat))


def test_options_and_defaults(encoder_program):
    assert Split().resolve(encoder_program) == ("xla", "h100")
    prog = encoder_program.copy()
    prog.target = "tensorrt"
    assert Split().resolve(prog) == ("tensorrt", "t4")
    assert Split(target="neuron", profile="h100").resolve(prog) == ("neuron", "h100")
    for bad in ("split{min_ops=0}", "split{profile=cpu}", "split{profile=tpu}", "split{target=gpu}"):
        with pytest.raises(InputError, match="split"):
            optimize(encoder_program, bad, verify=False)
    with pytest.raises(InputError, match="run the 'split' pass first"):
        extract_partitions(encoder_program)


# ------------------------------------------------------------------------------------------ the cut itself
def _objective(info, on_acc, acc):
    """Estimated time of an assignment, computed independently of the flow network."""
    total = 0.0
    for i, node in enumerate(info.nodes):
        if node.op == "call_function":
            total += info.times[i][1] if on_acc[i] else info.times[i][0]
    for i, node in enumerate(info.nodes):
        if info.kind[i] == "weight":
            continue
        readers = {on_acc[u] for u in info.users[i] if info.kind[u] not in ("weight", "follow")
                   and info.nodes[u].op in ("call_function", "output")}
        here = on_acc[i] if node.op == "call_function" else False
        if any(r != here for r in readers):
            total += acc.link_latency + info.nbytes[i] / acc.link_bandwidth
    return total


@pytest.mark.parametrize("seed", range(4))
def test_min_cut_is_optimal_against_brute_force(seed):
    program = branched_program(14, unsupported=0.2, dim=96, window=4, seed=seed)
    acc = get_profile("h100")
    info = analyse(program.graph, support.support_table("xla"), get_profile("cpu"), acc)
    free = [i for i, k in enumerate(info.kind) if k == "free"]
    best = math.inf
    for bits in itertools.product((False, True), repeat=len(free)):
        on_acc = [False] * len(info.nodes)
        for i, b in zip(free, bits):
            on_acc[i] = b
        best = min(best, _objective(info, on_acc, acc))
    for solver in ("networkx", "scipy"):
        placement = place(info, acc, "cost", solver=solver)
        assert _objective(info, placement.on_acc, acc) == pytest.approx(best, rel=1e-6), solver
        pinned = sum(info.times[i][0] for i, k in enumerate(info.kind) if k == "pinned")
        assert placement.cut_seconds + pinned == pytest.approx(best, rel=1e-6)  # pinned ops are not in the cut


def test_solvers_agree_on_a_larger_graph():
    program = branched_program(600, dim=128, seed=3)
    acc = get_profile("t4")
    info = analyse(program.graph, support.support_table("tensorrt"), get_profile("cpu"), acc)
    a, b = place(info, acc, solver="networkx"), place(info, acc, solver="scipy")
    assert a.cut_seconds == pytest.approx(b.cut_seconds, rel=1e-6)
    assert _objective(info, a.on_acc, acc) == pytest.approx(_objective(info, b.on_acc, acc), rel=1e-6)


# ------------------------------------------------------------------------------------------ properties
@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(n=st.integers(8, 120), unsupported=st.sampled_from([0.0, 0.2, 0.5]), window=st.integers(1, 8),
       seed=st.integers(0, 1000), policy=st.sampled_from(["cost", "support"]), min_ops=st.integers(1, 4),
       dim=st.sampled_from([4, 256]))
def test_partitions_are_acyclic_complete_and_run_like_the_original(n, unsupported, window, seed, policy,
                                                                   min_ops, dim):
    program = branched_program(n, unsupported=unsupported, dim=dim, window=window, seed=seed)
    after, _ = _split(program, target="xla", policy=policy, min_ops=min_ops)
    region = partitions_region(after)
    by_name = {node.name: node for node in after.graph.nodes}
    assert is_acyclic(region["partitions"], by_name)
    listed = [name for rec in region["partitions"] for name in rec["nodes"]]
    calls = [node.name for node in after.graph.nodes if node.op == "call_function"]
    assert sorted(listed) == sorted(calls)                              # every node placed exactly once
    for rec in region["partitions"]:
        assert all(by_name[name].meta["placement"] == rec["device"] for name in rec["nodes"])
        if rec["device"] != "cpu":
            assert len(rec["nodes"]) >= min_ops
    assert all(node.meta["placement"] == "cpu" for node in after.graph.nodes
               if node.op == "call_function" and node.target is torch.ops.aten.special_bessel_j0.default)
    flat = after.flat_example_inputs()
    assert _same(run_partitions(after, flat), program.run_flat(flat))


def test_split_handles_data_dependent_sizes():
    """Routing with torch.where has unbacked sizes (u0...): their cost counts at the shape env's bound, so
    placement runs instead of failing, and the partitions still reproduce the model."""

    class Routed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gate = torch.nn.Linear(8, 2)
            self.experts = torch.nn.ModuleList(torch.nn.Linear(8, 8) for _ in range(2))

        def forward(self, x):
            idx = self.gate(x).argmax(-1)
            out = torch.zeros_like(x)
            for e, expert in enumerate(self.experts):
                (tok,) = torch.where(idx == e)
                out = out.index_add(0, tok, expert(x[tok]))
            return out

    torch.manual_seed(0)
    model, x = Routed().eval(), torch.randn(16, 8)
    program = fxopt.capture(model, (x,))
    costs = [n.meta["cost"] for n in program.graph.nodes if n.meta.get("cost") is not None]
    assert any(s.name.startswith("u") for c in costs if c.is_symbolic for s in c.free_symbols)
    after = optimize(program, "split{target=xla}", verify=True)
    torch.testing.assert_close(run_partitions(after, [x])[0], model(x))


class _Positives(torch.nn.Module):
    def forward(self, x):
        return (x[x > 0] * 2).sum() + x.sum()


@pytest.mark.parametrize("target", ["tensorrt", "neuron"])
def test_fixed_shape_targets_refuse_data_dependent_sizes(target):
    from fxopt.ir.targets import support_table

    program = fxopt.capture(_Positives(), (torch.randn(6),))
    table = support_table(target)
    doubled = next(n for n in program.graph.nodes if n.op == "call_function" and n.target is torch.ops.aten.mul.Tensor)
    total = [n for n in program.graph.nodes if n.op == "call_function" and n.target is torch.ops.aten.sum.dim_IntList][-1]
    assert "data-dependent size" in table.why_not(doubled)     # x[x > 0] has a size known only at run time
    assert table.why_not(total) is None                         # x.sum() has none
    assert table.dtype_key(doubled) != table.dtype_key(total)   # verdicts cached per op must not mix the two


def test_split_keeps_data_dependent_sizes_off_tensorrt():
    program = fxopt.capture(_Positives(), (torch.randn(6),))
    after = fxopt.optimize(program, "split{target=tensorrt,policy=support}", target="tensorrt")
    for node in after.graph.nodes:
        if node.op == "call_function" and node.target is torch.ops.aten.mul.Tensor:
            assert node.meta["placement"] == "cpu"
    x = torch.randn(6)
    torch.testing.assert_close(fxopt.compile(after, "tensorrt")(x), _Positives()(x))


class _ReturnsAPositionId(torch.nn.Module):
    """Returns a value computed from nothing but a shape (as the next position id of a prompt is)."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 8)

    def forward(self, x):
        next_position = torch.arange(0, x.shape[1]).unsqueeze(0)[:, -1:] + 1
        return self.fc(x).relu(), next_position


def test_a_constant_only_the_output_reads_joins_the_accelerator_partition():
    program = fxopt.capture(_ReturnsAPositionId(), (torch.randn(2, 8),))
    work, _ = _split(program, target="xla", policy="support")
    parts = partitions_region(work)["partitions"]
    assert [p["device"] for p in parts] == ["xla"]          # Before: a cpu partition of its own for arange
    flat = work.flat_example_inputs()
    out = run_partitions(work, flat)
    assert _same(out, program.run_flat(flat)) and out[1].tolist() == [[8]]
