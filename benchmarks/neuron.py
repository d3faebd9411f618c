"""The neuron backend on the zoo models: what it costs to emit the artifact, and what the CPU stand-in runs at.

Per model (small variants with ``--quick``; OCR fully unrolled, or its encoder with ``--quick``):
partitions placed on neuron, seconds to compile (op check + TorchScript traces + checks), to load by
re-tracing the safe FX graph (the default) and by ``torch.jit.load`` (``FXOPT_NEURON_LOAD=torchscript``),
and the latency of the eager model vs the artifact's ``torchscript-cpu`` partitions, timed interleaved in
one run (the ratio is what to read; it is *not* Neuron performance: no Neuron hardware here).

Bucketing row: a dynamic-batch TinyEncoder-style model compiled with ``neuron{buckets=4;16}``; latency of a
batch of 3 (padded to 4) and 9 (padded to 16) vs eager at those batches.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch
import torch.utils._pytree as pytree

import fxopt
from benchmarks.timing import interleaved_medians
from benchmarks.zoo_models import zoo_model

SPLIT = "canonicalize,fold-constants,dedupe,moe,dce,split{target=neuron,policy=support}"


def _seconds(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def run_zoo(names, quick: bool, repeat: int) -> list[dict]:
    """One row per zoo model: partitions, compile/load seconds, eager vs artifact latency."""
    rows = []
    for name in names:
        label, model, inputs, pipeline = zoo_model(name, quick, SPLIT)
        program = fxopt.capture(model, inputs)
        optimized = fxopt.optimize(program, pipeline, verify=False)
        compiled, compile_s = _seconds(lambda: fxopt.compile(optimized, "neuron"))
        with tempfile.TemporaryDirectory() as tmp:
            path = compiled.save(os.path.join(tmp, "a"))
            os.environ.pop("FXOPT_NEURON_LOAD", None)
            _, retrace_s = _seconds(lambda: fxopt.load(path))
            os.environ["FXOPT_NEURON_LOAD"] = "torchscript"
            try:
                _, jitload_s = _seconds(lambda: fxopt.load(path))
            finally:
                os.environ.pop("FXOPT_NEURON_LOAD", None)
        eager_s, art_s = interleaved_medians([lambda: model(*inputs), lambda: compiled(*inputs)], repeat)
        with torch.no_grad():
            pairs = zip(pytree.tree_leaves(model(*inputs)), pytree.tree_leaves(compiled(*inputs)))
            err = max((float((a.double() - e.double()).abs().max()) for e, a in pairs if e.numel()), default=0.0)
        rows.append({"model": label, "max_abs_error": err, "partitions": " ".join(f"{n}:{r}" for n, _, r in compiled.summary()),
                     "compile_s": compile_s, "load_retrace_s": retrace_s, "load_jit_s": jitload_s,
                     "eager_ms": eager_s * 1e3, "artifact_ms": art_s * 1e3, "eager_over_artifact": eager_s / art_s})
    return rows


def run_buckets(repeat: int) -> list[dict]:
    """Padding cost: a dynamic-batch encoder under neuron{buckets=4;16} vs eager at the real batch."""
    from tests.conftest import TinyEncoder

    torch.manual_seed(0)
    model = TinyEncoder().eval()
    program = fxopt.capture(model, (torch.randint(0, 100, (4, 8)),),
                            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},))
    compiled = fxopt.compile(fxopt.optimize(program, SPLIT, verify=False), "neuron{buckets=4;16}")
    rows = []
    for batch, bucket in ((3, 4), (4, 4), (9, 16), (16, 16)):
        ids = torch.randint(0, 100, (batch, 8))
        eager_s, art_s = interleaved_medians([lambda: model(ids), lambda: compiled(ids)], repeat)
        with torch.no_grad():
            err = float((compiled(ids) - model(ids)).abs().max())
        rows.append({"batch": batch, "bucket": bucket, "eager_ms": eager_s * 1e3, "artifact_ms": art_s * 1e3,
                     "eager_over_artifact": eager_s / art_s, "max_abs_error": err})
    return rows


def main(argv=None) -> dict:
    """Print the zoo table and the bucketing table; returns ``{"zoo": rows, "buckets": rows}``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.neuron", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small zoo models, OCR encoder only, fewer repeats")
    parser.add_argument("--models", default="ranking,moderation,resnet50,ocr")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: steadier on a shared machine)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeat = 5 if args.quick else 20
    zoo = run_zoo([m for m in args.models.split(",") if m], args.quick, repeat)
    print(f"{'model':26} {'partitions':58} {'compile s':>9} {'load fx s':>9} {'load jit s':>10} "
          f"{'eager ms':>9} {'artifact ms':>11} {'eager/art':>9} {'max err':>8}")
    for r in zoo:
        print(f"{r['model']:26} {r['partitions'][:58]:58} {r['compile_s']:9.2f} {r['load_retrace_s']:9.2f} "
              f"{r['load_jit_s']:10.2f} {r['eager_ms']:9.2f} {r['artifact_ms']:11.2f} {r['eager_over_artifact']:9.2f} "
              f"{r['max_abs_error']:8.2g}")
    buckets = run_buckets(repeat)
    print(f"\n{'batch':>5} {'bucket':>6} {'eager ms':>9} {'artifact ms':>11} {'eager/art':>9} {'max err':>9}")
    for r in buckets:
        print(f"{r['batch']:5d} {r['bucket']:6d} {r['eager_ms']:9.3f} {r['artifact_ms']:11.3f} "
              f"{r['eager_over_artifact']:9.2f} {r['max_abs_error']:9.2g}")
    print("\n(torchscript-cpu partitions on this host's CPU; Neuron latency needs an SDK host and hardware)")
    return {"zoo": zoo, "buckets": buckets}


if __name__ == "__main__":
    main()
