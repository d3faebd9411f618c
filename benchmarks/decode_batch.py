"""Decode loops with a dynamic batch: one capture for every batch vs one static capture per batch.

For zoo:ocr small (seed 1; inputs are scaled noise, on which its rows decode differently): the decode loop
captured once with ``dynamic_shapes="batch"`` (example batch 2) and once per batch statically (batch 1 and
8). Per batch and variant (step loop on the decode runtime, partitions of 2, full unroll on the reference
backend): the build time (``optimize`` + ``compile``), ms per sequence for the dynamic and the static
artifact (medians of interleaved runs, so machine noise hits both alike), dynamic/static time, and whether
both give the tokens of the plain Python loop.

Headline: capture time of the one dynamic capture vs the static captures it replaces, and the dynamic
graphs' time relative to the static ones (the cost of symbolic sizes: ``sym_size`` nodes, no constant
shapes).
"""
from __future__ import annotations

import time

import torch

import fxopt
from benchmarks.timing import interleaved_medians, one_thread, parse_repeat_args
from fxopt.backends import decode
from fxopt.ir import loops

BATCHES = (1, 8)
VARIANTS = (("step loop", None), ("partitions of 2", "unroll{partition=2}"), ("full unroll", "unroll{mode=full}"))


def _images(batch: int) -> torch.Tensor:
    return 3 * torch.randn(batch, 1, 16, 32, generator=torch.Generator().manual_seed(batch))


def _capture(model, inputs, dynamic: bool):
    start = time.perf_counter()
    program = fxopt.capture(model, inputs, dynamic_shapes="batch" if dynamic else None)
    return program, time.perf_counter() - start


def _build(program, spec: str | None):
    start = time.perf_counter()
    prog = fxopt.optimize(program, spec, verify=False) if spec else program
    compiled = decode.compile(prog) if decode.uses_runtime(prog) else fxopt.compile(prog)
    return compiled, time.perf_counter() - start


def run(repeat: int) -> dict:
    """Benchmark zoo:ocr small; returns ``{"capture": {...}, "rows": [...]}``."""
    model, example = fxopt.zoo.get("ocr", small=True, seed=1)
    dynamic, dyn_s = _capture(model, example, True)
    static, static_s = {}, {}
    for b in BATCHES:
        static[b], static_s[b] = _capture(model, (_images(b),), False)
    rows = []
    for label, spec in VARIANTS:
        dyn_compiled, dyn_build = _build(dynamic, spec)
        for b in BATCHES:
            x = _images(b)
            ref = loops.greedy(model, x)
            st_compiled, st_build = _build(static[b], spec)
            t_dyn, t_st = interleaved_medians([lambda: dyn_compiled(x), lambda: st_compiled(x)], repeat)
            rows.append({"variant": label, "batch": b, "build_s_dynamic": dyn_build, "build_s_static": st_build,
                         "ms_per_seq_dynamic": 1e3 * t_dyn / b, "ms_per_seq_static": 1e3 * t_st / b,
                         "dynamic_vs_static": t_dyn / t_st,
                         "same_tokens": bool(torch.equal(dyn_compiled(x), ref) and torch.equal(st_compiled(x), ref))})
    return {"capture": {"dynamic_s": dyn_s, "static_s": static_s}, "rows": rows}


def main(argv=None) -> dict:
    """Print the table; returns the results."""
    repeat = parse_repeat_args(argv, __doc__, "few repetitions", (5, 20)).repeat
    with one_thread():
        res = run(repeat)
    cap = res["capture"]
    print(f"zoo:ocr small: one dynamic-batch capture {cap['dynamic_s']:.1f} s vs static captures "
          + ", ".join(f"batch {b} {s:.1f} s" for b, s in cap["static_s"].items())
          + f"; reference backend, one thread, median of {repeat}:")
    print(f"  {'variant':<17}{'batch':>6}{'build s dyn':>12}{'build s static':>15}{'ms/seq dyn':>12}"
          f"{'ms/seq static':>14}{'dyn/static':>11}  same tokens")
    for r in res["rows"]:
        print(f"  {r['variant']:<17}{r['batch']:>6}{r['build_s_dynamic']:>12.2f}{r['build_s_static']:>15.2f}"
              f"{r['ms_per_seq_dynamic']:>12.3f}{r['ms_per_seq_static']:>14.3f}{r['dynamic_vs_static']:>10.2f}x"
              f"  {r['same_tokens']}")
    return res


if __name__ == "__main__":
    main()
