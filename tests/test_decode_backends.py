"""Decode loops on the tensorrt and neuron backends (xla: tests/generation_tests.py, tests/test_loop_spec.py):
each piece compiled by the backend, the host checking EOS between partitions, tokens equal to the model's
own loop, saved and loaded; and an honest warning when split keeps every piece on the CPU."""
from __future__ import annotations

import pytest
import torch

import fxopt

from test_loop_spec import _early_eos_model, _padded, _spec

RUNTIMES = {"tensorrt": "onnxruntime", "neuron": "torchscript-cpu"}


@pytest.fixture(scope="module")
def captured():
    model, x = _early_eos_model()
    return fxopt.capture(model, (x,), decode=_spec(model)), x, _padded(model(x), model.eos, 10)


@pytest.mark.parametrize("backend", sorted(RUNTIMES))
def test_every_partition_piece_runs_on_the_accelerator_runtime_and_tokens_match(captured, backend, tmp_path):
    program, x, expected = captured
    optimized = fxopt.optimize(program, f"unroll{{partition=4}},split{{target={backend},policy=support}}")
    compiled = fxopt.compile(optimized, backend)
    assert compiled.extra.get("accelerator_warning") is None
    parts = [name for name in compiled.pieces if name.startswith("decode_part")]
    assert len(parts) == 3
    for name in parts:
        assert RUNTIMES[backend] in {stage.runtime for stage in compiled.pieces[name].stages}, name
    assert torch.equal(compiled(x), expected)
    compiled.save(str(tmp_path / "art"))
    assert torch.equal(fxopt.load(str(tmp_path / "art"))(x), expected)


@pytest.mark.parametrize("backend", sorted(RUNTIMES))
def test_default_pipeline_says_when_no_piece_does_accelerator_work(captured, backend):
    program, x, expected = captured
    compiled = fxopt.compile(fxopt.optimize(program, target=backend), backend)
    assert compiled.extra["accelerator_warning"].startswith(f"no {backend} partition in any decode piece")
    assert torch.equal(compiled(x), expected)


def test_neuron_buckets_a_dynamic_batch_decode_loop_piece_by_piece(tmp_path):
    model, x = _early_eos_model()
    program = fxopt.capture(model, (x,), decode=_spec(model), dynamic_shapes="batch")
    optimized = fxopt.optimize(program, "unroll{partition=4},split{target=neuron,policy=support}")
    compiled = fxopt.compile(optimized, "neuron{buckets=1;4;8}")
    assert not compiled.extra.get("notes")          # Before: every piece refused ("an expression") and on the host
    sizes = {name: list((piece.get("buckets") or {}).get("sizes", {}).values())
             for name, piece in compiled.extra["pieces"].items()}
    assert sizes == {name: [[1, 4, 8]] for name in sizes} and len(sizes) == 5
    compiled.save(str(tmp_path / "art"))
    loaded = fxopt.load(str(tmp_path / "art"))
    for batch in (1, 3, 6):
        rows = torch.randn(batch, 6, generator=torch.Generator().manual_seed(batch))
        assert torch.equal(loaded(rows), _padded(model(rows), model.eos, 10)), batch


def test_buckets_line_counts_the_traces_of_every_bucketed_piece():
    from fxopt.tools.report import buckets_line

    piece = {"buckets": {"sizes": {"s0": [1, 4, 8]}}}
    manifest = {"pieces": {"decode_encode": piece, "decode_init": {}, "decode_part0": piece}}
    assert buckets_line(manifest) == "buckets: 3 graphs, 2 bucketed (1/4/8): 7 traces to compile"
    two = {"buckets": {"sizes": {"s0": [1, 4], "s1": [16, 32, 64]}}}
    assert buckets_line(two) == "buckets: 1 graph, 1 bucketed (1/4 x 16/32/64): 6 traces to compile"
    assert buckets_line({"buckets": {"sizes": {"s0": [2]}}}) is None and buckets_line({}) is None
