"""split's objectives: latency / throughput / cost estimates, the never-worse guarantee, placement reasons."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st

import fxopt
from benchmarks.split_graphs import branched_program
from fxopt.errors import InputError
from fxopt.passes.split import Split, partitions_region, run_partitions
from fxopt.passes.split.objectives import Busy, score, sweep_throughput
from fxopt.passes.split.partition import is_acyclic


def _split(program, **options):
    work = program.copy()
    result = Split(**options).run(work)
    work.dirty = True
    return work, result


@pytest.fixture(scope="module")
def ranking_512():
    import dataclasses
    from fxopt.zoo import ranking
    model = ranking.RankingModel(dataclasses.replace(ranking.DEFAULT, batch=512)).eval()
    return fxopt.capture(model, model.example_inputs())


def test_score_of_each_objective():
    busy = Busy(cpu=3e-6, acc=1e-6, link=2e-6)
    assert score("latency", busy) == pytest.approx(6e-6)
    assert score("throughput", busy) == pytest.approx(3e-6)
    # $/h -> $ per million requests: (1 * 3 us + 2 * (1 + 2) us) / 3600 s * 1e6
    assert score("cost", busy, (1.0, 2.0)) == pytest.approx(9e-6 / 3600 * 1e6)


def test_sweep_reaches_the_balanced_placement_of_two_independent_ops():
    # two ops, each 4 us on the CPU and 1 us on the accelerator; no transfers: the best max is 4 us with one
    # op per device? no: both on the accelerator is 2 us; the sweep must find it and prove it with its bound
    def busy(on):
        return Busy(cpu=4e-6 * (2 - sum(on)), acc=1e-6 * sum(on), link=0.0)

    def cut(w):
        options = [(a, b) for a in (0, 1) for b in (0, 1)]
        best = min(options, key=lambda on: w[0] * busy(on).cpu + w[1] * busy(on).acc)
        return list(best), w[0] * busy(best).cpu + w[1] * busy(best).acc

    result = sweep_throughput(cut, busy)
    assert list(result["on_acc"]) == [1, 1]
    assert result["busy"].acc == pytest.approx(2e-6)
    assert result["lower_bound"] <= 2e-6 + 1e-12


@pytest.mark.parametrize("target", ["xla", "tensorrt", "neuron"])
def test_throughput_puts_dense_math_on_the_accelerator_and_beats_all_cpu(ranking_512, target):
    after, result = _split(ranking_512, target=target, objective="throughput")
    estimate = result.details["estimate"]
    assert estimate["objective"] == "throughput"
    assert estimate["after"] < estimate["before"]                     # better than all-CPU
    assert estimate["lower_bound"] <= estimate["after"] + 1e-6        # the Lagrangian bound holds
    on_acc = [n for n in after.graph.nodes if n.op == "call_function" and n.meta["placement"] == target]
    assert any(n.target in (torch.ops.aten.addmm.default, torch.ops.aten.mm.default) for n in on_acc)
    assert result.details["ops"][target] > 0


def test_support_policy_reports_what_forcing_costs(ranking_512):
    _, result = _split(ranking_512, target="xla", policy="support", objective="throughput")
    estimate = result.details["estimate"]
    assert "cost_policy_after" in estimate
    assert any("policy=support" in note and "cost policy would give" in note for note in result.notes)


def test_every_node_gets_a_placement_reason(ranking_512):
    after, _ = _split(ranking_512, target="neuron", objective="throughput")
    reasons = {n.name: n.meta.get("placement_reason") for n in after.graph.nodes}
    assert all(reasons.values())
    bag = next(n for n in after.graph.nodes if "embedding_bag" in str(n.target))
    assert reasons[bag.name].startswith("unsupported on neuron")
    first_input = next(n for n in after.graph.nodes if n.op == "placeholder")
    assert reasons[first_input.name] == "graph input: arrives on the host"


def test_bad_price_is_a_one_line_error():
    with pytest.raises(InputError, match="price_acc"):
        Split(price_acc=-1.0)


@settings(max_examples=20, deadline=None, derandomize=True, database=None)
@given(n=st.integers(8, 100), unsupported=st.sampled_from([0.0, 0.2, 0.5]), window=st.integers(1, 6),
       seed=st.integers(0, 1000), objective=st.sampled_from(["latency", "throughput", "cost"]),
       min_ops=st.integers(1, 4), dim=st.sampled_from([4, 256]))
def test_final_placement_never_worse_than_all_cpu_or_all_accelerator(n, unsupported, window, seed, objective,
                                                                     min_ops, dim):
    program = branched_program(n, unsupported=unsupported, dim=dim, window=window, seed=seed)
    after, result = _split(program, target="xla", objective=objective, min_ops=min_ops)
    _, forced = _split(program, target="xla", objective=objective, min_ops=min_ops, policy="support")
    estimate = result.details["estimate"]
    tolerance = 1e-6 * max(1.0, estimate["before"])
    assert estimate["after"] <= estimate["before"] + tolerance                      # all-CPU
    assert estimate["after"] <= forced.details["estimate"]["after"] + tolerance      # all-accelerator
    region = partitions_region(after)
    assert is_acyclic(region["partitions"], {node.name: node for node in after.graph.nodes})
    flat = after.flat_example_inputs()
    got, want = run_partitions(after, flat), program.run_flat(flat)
    assert all(torch.allclose(a, b, equal_nan=True) for a, b in zip(got, want))


def test_neuron_generation_profile_picks_its_operator_list(ranking_512):
    _, inf1 = _split(ranking_512, target="neuron")
    _, inf2 = _split(ranking_512, target="neuron", profile="inf2")
    assert any("torch-neuronx" in note for note in inf2.notes)
    assert not any("torch-neuronx" in note for note in inf1.notes)
    assert inf2.details["profile"] == "inf2"


def test_trace_records_the_placement_reason_for_the_visualizer(ranking_512):
    program = fxopt.optimize(ranking_512, "split{target=neuron}")
    records = program.trace_json()["snapshots"][-1]["nodes"]
    bag = next(r for r in records if "embedding_bag" in r["target"])
    assert bag["placement_reason"].startswith("unsupported on neuron")


# ------------------------------------------------------------------------------------------ fxopt run --price
def test_price_flag_places_by_cost_at_those_prices(tmp_path, capsys):
    import json

    from fxopt.tools.cli import main
    out = tmp_path / "a"
    code = main(["run", "zoo:ranking", "--small", "--backend", "neuron", "--price", "cpu=0.5,neuron=0.05",
                 "--no-verify", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    split = next(r for r in json.loads((out / "trace.json").read_text())["reports"] if r["name"] == "split")
    assert split["details"]["objective"] == "cost"
    assert split["details"]["estimate"]["prices_usd_per_hour"] == {"cpu": 0.5, "neuron": 0.05}


@pytest.mark.parametrize("argv, words", [
    (["--price", "gpu=1"], "DEVICE one of cpu, acc"),
    (["--price", "cpu=-1"], "must be > 0"),
    (["--price", "cpu=1,cpu=2"], "two prices for the CPU"),
    (["--price", "xla=1", "--backend", "neuron"], "this run compiles for neuron"),
    (["--price", "cpu=1", "--passes", "dce"], "no split pass"),
])
def test_bad_price_flags_exit_2_before_capture(argv, words, tmp_path, capsys):
    from fxopt.tools.cli import main
    out = tmp_path / "never"
    assert main(["run", "zoo:ranking", "--small", *argv, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
    assert not out.exists()
