"""fxopt bench: measurement logic (percentiles, interleaving, memory), the bench.json schema, charts, the CLI
and the artifact case, on small real models. No timing assertions: timings come from an injected clock."""
from __future__ import annotations

import itertools
import json
import os
import sys
import textwrap

import numpy as np
import pytest
import torch

import fxopt
from fxopt.backends import base as backends_base
from fxopt.errors import BackendError, InputError
from fxopt.tools import bench as B
from fxopt.tools import bench_charts, bench_systems
from fxopt.tools.bench_measure import (Timing, measure, measure_side_by_side, peak_from_events,
                                       peak_torch_memory, percentile)
from fxopt.tools.cli import main as cli_main

from conftest import captured

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def ticking_clock(step: float = 1.0):
    """A clock advancing by ``step`` at every reading: every timed call lasts exactly ``step``."""
    counter = itertools.count()
    return lambda: next(counter) * step


# ------------------------------------------------------------------------------------------ measurement
def test_percentiles_match_numpy_linear_interpolation():
    samples = [0.9, 0.1, 0.5, 0.3, 0.7, 2.0, 0.2]
    for q in (0, 1, 25, 50, 90, 99, 100):
        assert percentile(samples, q) == pytest.approx(float(np.percentile(samples, q)))


def test_timing_figures_from_known_samples():
    t = Timing(batch=8, samples=[float(i) for i in range(1, 101)])
    assert (t.p50, t.p99, t.mean) == pytest.approx((50.5, 99.01, 50.5))
    assert t.throughput == pytest.approx(8 / 50.5)
    d = t.to_dict()
    assert d["p50_ms"] == pytest.approx(50500.0) and d["reps"] == 100 and len(d["samples_ms"]) == 100


def test_measure_excludes_warmup_and_reads_the_injected_clock():
    readings = iter([0.0, 0.010, 1.0, 1.030, 2.0, 2.020])   # three timed calls: 10, 30, 20 ms
    calls = []
    timing = measure(lambda x: calls.append(x), (torch.zeros(4, 3),), warmup=2, reps=3,
                     clock=lambda: next(readings))
    assert len(calls) == 5                       # 2 warm-up + 3 timed
    assert timing.samples == pytest.approx([0.010, 0.030, 0.020])
    assert timing.batch == 4 and timing.p50 == pytest.approx(0.020)
    assert timing.throughput == pytest.approx(4 / 0.020)


def test_side_by_side_interleaves_systems_after_all_warmups():
    order = []
    fns = {name: (lambda name: lambda *a: order.append(name))(name) for name in ("a", "b")}
    timings = measure_side_by_side(fns, (torch.zeros(2),), warmup=1, reps=3, clock=ticking_clock())
    assert order == ["a", "b", "a", "b", "a", "b", "a", "b"]
    assert timings["a"].samples == timings["b"].samples == [1.0, 1.0, 1.0]


def test_peak_from_events_tracks_the_running_sum_in_time_order():
    events = [(3, -100), (1, 100), (2, 50), (4, 200), (5, -250)]   # out of order on purpose
    assert peak_from_events(events) == 250
    assert peak_from_events([(1, -10)]) is None


def test_peak_torch_memory_sees_the_activations_of_a_real_mlp():
    model = torch.nn.Sequential(torch.nn.Linear(64, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 8)).eval()
    x = torch.randn(256, 64)
    peak = peak_torch_memory(model, (x,))
    hidden = 256 * 1024 * 4
    assert hidden <= peak <= 4 * hidden          # the hidden activation (plus relu's output) is live at once
    assert peak_torch_memory(lambda t: t, (x,)) is None   # allocates nothing through PyTorch: n/a, not 0


def test_resize_batch_cycles_rows_and_leaves_the_inputs_alone(encoder):
    _, (ids,) = encoder
    before = ids.clone()
    (bigger,) = bench_systems.resize_batch((ids,), 5)
    assert bigger.shape == (5, 8)
    assert torch.equal(bigger[2], ids[0]) and torch.equal(bigger[3], ids[1])
    assert torch.equal(ids, before)
    with pytest.raises(InputError, match="batch dim"):
        bench_systems.resize_batch((3,), 4)


# ------------------------------------------------------------------------------------------ parsing
def test_parse_batches_rejects_bad_items_with_one_line():
    assert B.parse_batches("64, 256,64,1024") == [64, 256, 1024]
    for bad in ("64,x", "0", "", "-4", "1.5"):
        with pytest.raises(InputError) as info:
            B.parse_batches(bad)
        assert "--batch" in str(info.value) and "\n" not in str(info.value)


def test_prices_give_cost_per_million():
    prices = B.parse_prices("eager=0.1,xla=3.6")
    assert prices == {"eager": 0.1, "xla": 3.6}
    assert B.price_for("fxopt:xla", prices) == 3.6 and B.price_for("compile", prices) is None
    assert B.cost_per_million(3.6, 1000.0) == pytest.approx(1.0)   # $1/s-hour... 1e6 inferences in 1000 s
    with pytest.raises(InputError, match="price-per-hour"):
        B.parse_prices("eager:0.1")


# ------------------------------------------------------------------------------------------ bench()
@pytest.fixture(scope="module")
def encoder_bench():
    """One bench of a TinyEncoder at batches 2 and 3 (eager, reference, a broken and an unknown backend),
    priced, with a clock ticking 0.5 s per reading; returns (result, model state before, model)."""
    from conftest import TinyEncoder

    class Broken:
        def compile(self, program):
            raise BackendError("op aten::foo is not supported by the broken backend")

    torch.manual_seed(0)
    model = TinyEncoder().eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    backends_base.register_backend("broken-test", Broken)
    try:
        result = B.bench(model, [2, 3], against=("eager",), backends=("reference", "broken-test", "nosuch"),
                         example_inputs=model.example_inputs(), warmup=1, reps=3,
                         prices={"eager": 3.6, "reference": 7.2}, passes="canonicalize,dce",
                         clock=ticking_clock(0.5))
    finally:
        backends_base.BACKENDS.unregister("broken-test")
    return result, state, model


def test_bench_rows_ratios_and_costs(encoder_bench):
    result, _, _ = encoder_bench
    assert [(r["batch"], r["system"]) for r in result.rows] == [
        (2, "eager"), (2, "fxopt:reference"), (3, "eager"), (3, "fxopt:reference")]
    ref = result.row("fxopt:reference", 3)
    assert ref["p50_ms"] == pytest.approx(500.0) and ref["speedup_vs_eager"] == pytest.approx(1.0)
    assert ref["throughput"] == pytest.approx(6.0)                       # batch 3 / 0.5 s
    assert ref["cost_per_million"] == pytest.approx(7.2 / 3600 / 6.0 * 1e6)
    assert ref["max_abs_error_vs_eager"] < 1e-4 and ref["setup_s"] > 0
    assert ref["peak_memory_bytes"] > 0 and ref["speedup_vs_compile"] is None


def test_unavailable_backends_are_one_line_each(encoder_bench):
    result, _, _ = encoder_bench
    lines = "\n".join(result.unavailable)
    assert "fxopt:nosuch: not available: no backend registered" in lines
    assert "fxopt:broken-test: not available: BackendError: op aten::foo" in lines
    assert len(result.unavailable) == 2 and all("\n" not in line for line in result.unavailable)


def test_bench_leaves_the_model_untouched(encoder_bench):
    _, state, model = encoder_bench
    assert not model.training
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_a_failing_torch_compile_is_one_line_and_the_rest_runs(encoder, monkeypatch):
    def fail(model, inputs):
        raise RuntimeError("inductor: no C++ compiler found\nsecond line")

    monkeypatch.setattr(bench_systems, "compile_system", fail)
    model, inputs = encoder
    result = B.bench(model, [2], against=("eager", "compile"), backends=(), example_inputs=inputs,
                     warmup=0, reps=1, memory=False, clock=ticking_clock())
    assert result.systems == ["eager"]
    assert result.unavailable == ["compile: not available: RuntimeError: inductor: no C++ compiler found "
                                  "second line"]


def test_bench_json_schema(encoder_bench, tmp_path):
    result, _, _ = encoder_bench
    paths, notes = B.write_outputs(result, str(tmp_path), charts=False)
    doc = json.loads((tmp_path / "bench.json").read_text())
    assert paths == [str(tmp_path / "bench.json")] and notes == []
    assert doc["format"] == "fxopt-bench" and doc["version"] == 1 and doc["kind"] == "model"
    assert {"model", "kind", "created", "machine", "settings", "batches", "systems", "results", "notes",
            "unavailable", "memory_method"} <= set(doc)
    assert doc["systems"] == ["eager", "fxopt:reference"] and doc["batches"] == [2, 3]
    row = doc["results"][1]
    for key in ("system", "batch", "reps", "p50_ms", "p99_ms", "mean_ms", "throughput", "samples_ms",
                "setup_s", "speedup_vs_eager", "throughput_vs_eager", "peak_memory_bytes",
                "max_abs_error_vs_eager", "price_per_hour", "cost_per_million"):
        assert key in row
    assert row["samples_ms"] == [500.0, 500.0, 500.0] and doc["settings"]["capture"].startswith("per batch")
    assert doc["machine"]["cores"] == os.cpu_count() and doc["machine"]["torch"] == torch.__version__


# ------------------------------------------------------------------------------------------ charts
def _document(tmp_path):
    rows = [{"system": s, "batch": b, "throughput": b * k, "samples_ms": [1.0 * k, 2.0 * k, 3.0 * k]}
            for b in (4, 16) for s, k in (("eager", 1), ("fxopt:reference", 2))]
    return {"model": "toy", "machine": {"cpu": "test cpu", "cores": 2, "torch": torch.__version__},
            "results": rows}


def test_charts_are_valid_pngs(tmp_path):
    paths, note = bench_charts.write_charts(_document(tmp_path), str(tmp_path))
    assert note is None
    assert sorted(os.path.basename(p) for p in paths) == ["latency.png", "throughput.png"]
    for path in paths:
        with open(path, "rb") as f:
            assert f.read(8) == PNG_SIGNATURE
        from PIL import Image   # matplotlib depends on pillow

        with Image.open(path) as image:
            assert image.size[0] > 300 and image.size[1] > 200


def test_charts_are_skipped_with_a_note_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # import matplotlib -> ImportError
    paths, note = bench_charts.write_charts(_document(tmp_path), str(tmp_path))
    assert paths == [] and "matplotlib is not installed" in note and not os.listdir(tmp_path)


# ------------------------------------------------------------------------------------------ CLI
def test_cli_bench_zoo_small_writes_json_and_charts(tmp_path, capsys):
    out = tmp_path / "bench"
    code = cli_main(["bench", "zoo:ranking", "--small", "--batch", "8", "--against", "eager",
                     "--reps", "2", "--warmup", "1", "--price-per-hour", "eager=0.1,reference=0.2",
                     "-o", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "fxopt:reference" in printed and "$/M inf" in printed
    assert sorted(os.listdir(out)) == ["bench.json", "latency.png", "throughput.png"]
    doc = json.loads((out / "bench.json").read_text())
    assert [(r["batch"], r["system"]) for r in doc["results"]] == [(8, "eager"), (8, "fxopt:reference")]
    assert all(r["max_abs_error_vs_eager"] < 1e-4 for r in doc["results"])


@pytest.mark.parametrize("argv, message", [
    (["--batch", "64,x"], "--batch: expected comma-separated positive integers"),
    (["--against", "eager,jit"], "--against: unknown system 'jit'"),
    (["--price-per-hour", "eager"], "--price-per-hour: expected SYSTEM=PRICE"),
])
def test_cli_bad_arguments_exit_2_with_one_line(argv, message, capsys):
    code = cli_main(["bench", "zoo:ranking", *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("fxopt: error: ") and message in err and err.count("\n") == 1


def test_cli_unknown_model_exits_2(capsys):
    assert cli_main(["bench", "zoo:nosuch", "--against", "eager"]) == 2
    assert "unknown zoo model 'nosuch'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ artifact
MODEL_FILE = textwrap.dedent("""
    import torch

    class Small(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.fc1 = torch.nn.Linear(6, 16)
            self.fc2 = torch.nn.Linear(16, 2)

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(x)))

        def example_inputs(self):
            return (torch.randn(3, 6),)
""")


def test_artifact_with_a_static_batch_runs_only_at_its_batch(tmp_path, capsys):
    (tmp_path / "small_model.py").write_text(MODEL_FILE)
    spec = f"{tmp_path / 'small_model.py'}:Small"
    program = fxopt.capture(spec)
    fxopt.compile(fxopt.optimize(program, "canonicalize,dce", verify=False)).save(str(tmp_path / "art"))
    out = tmp_path / "bench"
    code = cli_main(["bench", str(tmp_path / "art"), "--batch", "3,64", "--against", "eager", "--reps", "2",
                     "--no-charts", "-o", str(out)])
    printed = " ".join(capsys.readouterr().out.split())
    assert code == 0
    assert "static batch of 3: benched at batch 3 only (asked 3,64)" in printed
    doc = json.loads((out / "bench.json").read_text())
    assert doc["kind"] == "artifact" and doc["batches"] == [3]
    assert [r["system"] for r in doc["results"]] == ["eager", "fxopt:reference"]   # eager rebuilt from source
    assert doc["results"][1]["max_abs_error_vs_eager"] < 1e-5


def test_artifact_without_a_resolvable_source_benches_alone(tmp_path):
    model, inputs, program = captured("encoder")
    fxopt.compile(program).save(str(tmp_path / "art"))
    result = B.bench(str(tmp_path / "art"), None, against=("eager",), warmup=0, reps=1,
                     clock=ticking_clock())
    assert result.systems == ["fxopt:reference"] and result.batches == [2]
    assert result.unavailable[0].startswith("eager: not available: cannot rebuild the artifact's source model")
    assert any("synthesized" in n for n in result.notes)


def test_noise_warnings_name_a_loaded_machine_and_a_wide_spread():
    cores = os.cpu_count() or 1
    rows = [{"system": "eager", "batch": 64, "p50_ms": 1.0, "p99_ms": 1.2},
            {"system": "fxopt:xla", "batch": 64, "p50_ms": 1.0, "p99_ms": 3.5}]
    notes = B.noise_warnings(cores + 3.0, 0.5, rows)
    assert len(notes) == 2
    assert f"on {cores} cores" in notes[0] and "do not hold on a quiet machine" in notes[0]
    assert "fxopt:xla at batch 64 (3.5x)" in notes[1] and "eager" not in notes[1]
    assert B.noise_warnings(0.1, 0.2, rows[:1]) == []
