"""split keeps the weights it places on the accelerator within the accelerator's memory
(passes/split/capacity.py): the readers of the largest weights that do not fit stay on the host."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st

import fxopt
from benchmarks.split_graphs import branched_program
from fxopt.errors import InputError
from fxopt.ir.devices import PROFILES
from fxopt.passes.split import Split, partitions_region, run_partitions


class BagThenLinear(torch.nn.Module):
    """An embedding table (1000 x 16 fp32 = 64 kB) pooled by a bag, then a 16 -> 8 linear (544 B of weights)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.bag = torch.nn.EmbeddingBag(1000, 16, mode="sum")
        self.head = torch.nn.Linear(16, 8)

    def forward(self, ids):
        return self.head(self.bag(ids)).relu()


TABLE_BYTES = 1000 * 16 * 4


@pytest.fixture(scope="module")
def bag_program():
    ids = torch.randint(0, 1000, (4, 5), generator=torch.Generator().manual_seed(0))
    return fxopt.capture(BagThenLinear().eval(), (ids,))


def _split(program, **options):
    work = program.copy()
    result = Split(**options).run(work)
    work.dirty = True
    return work, result


def _where(program, op: str) -> str:
    return next(n.meta["placement"] for n in program.graph.nodes if op in str(n.target))


def _resident_bytes(program, device: str) -> int:
    seen = {}
    for n in program.graph.nodes:
        if n.op == "get_attr" and device in n.meta.get("resident_on", []):
            seen[n.target] = n.meta["val"].numel() * n.meta["val"].element_size()
    return sum(seen.values())


def test_without_a_memory_limit_every_supported_op_goes_to_the_accelerator(bag_program):
    # Before: bag -> addmm -> relu, policy=support, h100's 80 GB. Expected: all three on xla.
    after, result = _split(bag_program, target="xla", policy="support")
    assert [_where(after, op) for op in ("embedding_bag", "addmm", "relu")] == ["xla", "xla", "xla"]
    assert result.details["memory"]["kept_on_host"] == []


def test_a_table_larger_than_the_budget_keeps_its_lookup_on_the_host(bag_program):
    # Before: the same graph, 16 kB for weights. Expected: the bag (its 64 kB table) on the CPU with a
    # memory reason, the linear (544 B) and relu on xla; the outputs equal the captured model's.
    after, result = _split(bag_program, target="xla", policy="support", acc_memory=16e3)
    assert [_where(after, op) for op in ("embedding_bag", "addmm", "relu")] == ["cpu", "xla", "xla"]
    bag = next(n for n in after.graph.nodes if "embedding_bag" in str(n.target))
    assert bag.meta["placement_reason"].startswith("memory: weight bag.weight (64 kB)")
    assert partitions_region(after)["memory"]["kept_on_host"] == ["bag.weight"]
    assert _resident_bytes(after, "xla") <= 16e3
    assert any(note.startswith("memory: 1 weight(s) kept on the host") for note in result.notes)
    expected = bag_program.run_flat(bag_program.flat_example_inputs())
    torch.testing.assert_close(run_partitions(after, bag_program.flat_example_inputs()), expected)


def test_the_memory_limit_is_idempotent(bag_program):
    once, _ = _split(bag_program, target="xla", policy="support", acc_memory=16e3)
    result = Split(target="xla", policy="support", acc_memory=16e3).run(once)
    assert not result.modified


def test_an_op_computed_from_a_weight_travels_with_it():
    # Before: x @ w.t() where w (64 kB) is transposed by its own op. Expected: with 16 kB for weights both
    # the transpose and the matmul stay on the host (the transposed weight is no smaller).
    class TransposedWeight(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(128, 128), requires_grad=False)

        def forward(self, x):
            return (x @ self.w.t()).relu()

    program = fxopt.capture(TransposedWeight().eval(), (torch.randn(4, 128),))
    after, _ = _split(program, target="xla", policy="support", acc_memory=16e3)
    calls = [n for n in after.graph.nodes if n.op == "call_function"]
    weight_readers = [n for n in calls if any(a.op == "get_attr" for a in n.all_input_nodes)]
    assert weight_readers and all(n.meta["placement"] == "cpu" for n in weight_readers)
    assert _resident_bytes(after, "xla") == 0


def test_the_cost_policy_respects_the_limit_too(bag_program):
    after, _ = _split(bag_program, target="xla", objective="throughput", acc_memory=16e3)
    assert _where(after, "embedding_bag") == "cpu" and _resident_bytes(after, "xla") <= 16e3


@pytest.mark.parametrize("name", sorted(k for k, p in PROFILES.items() if p.kind == "accelerator"))
def test_every_accelerator_profile_has_its_memory(name):
    assert PROFILES[name].memory_bytes >= 1e9


def test_acc_memory_must_be_a_number_of_bytes():
    with pytest.raises(InputError, match="acc_memory must be a number of bytes"):
        Split(acc_memory=-1)


@settings(max_examples=15, deadline=None)
@given(budget=st.floats(min_value=0, max_value=1.3e6), policy=st.sampled_from(["cost", "support"]),
       seed=st.integers(0, 50))
def test_resident_weights_never_exceed_the_budget(budget, policy, seed):
    program = branched_program(120, seed=seed, unsupported=0.1)   # four 256 x 256 fp32 weights, 262 kB each
    after, _ = _split(program, target="xla", policy=policy, acc_memory=budget or 1.0)
    assert _resident_bytes(after, "xla") <= (budget or 1.0)
