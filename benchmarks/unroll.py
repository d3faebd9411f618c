"""Decode-loop variants: the step loop vs partitions of 25 vs a full unroll (reference backend), and the full
unroll through the XLA backend (one XLA executable for encoder + every step; skipped without jax).

For zoo:ocr (small always; the default size unless ``--quick``): capture time of the decode loop, then per
variant the compile time (``optimize`` + ``compile``), the time per sequence (batch latency / batch, median
of interleaved runs, so machine noise hits every variant alike), graph calls per sequence (host round
trips: encoder + init + steps or partitions run), and whether the tokens equal the plain Python loop's.
The plain Python loop on the eager model (``loops.greedy``) is the baseline row.

Headline: step-loop time / variant time (>1 means the variant is faster than the compiled step loop).
"""
from __future__ import annotations

import time

import torch

import fxopt
from benchmarks.timing import interleaved_medians, one_thread, parse_repeat_args
from fxopt.backends import decode
from fxopt.ir import loops
from fxopt.ir.capture import decoder
from fxopt.zoo import ocr


def _compile(program, spec: str | None, backend: str = "reference"):
    start = time.perf_counter()
    prog = fxopt.optimize(program, spec, verify=False) if spec else program
    compiled = decode.compile(prog) if decode.uses_runtime(prog) else fxopt.compile(prog, backend)
    if backend != "reference":
        compiled(*program.example_inputs)  # the XLA compile happens on the first call: count it here
    return compiled, time.perf_counter() - start


def _has_jax() -> bool:
    try:
        import jax  # noqa: F401
    except ImportError:
        return False
    return True


def run(small: bool, repeat: int, partition: int = 25) -> dict:
    """Benchmark one OCR size; returns ``{"size", "capture_s", "rows": [...]}``."""
    model = ocr.build(small=small, seed=3 if small else 0)
    inputs = model.example_inputs()
    batch = inputs[0].shape[0]
    start = time.perf_counter()
    program = decoder.capture_decoder(model, inputs)
    capture_s = time.perf_counter() - start
    reference = loops.greedy(model, *inputs)
    variants: list[tuple] = [("python loop (eager model)", None), ("step loop", ""),
                (f"partitions of {partition}", f"unroll{{partition={partition}}}"),
                ("full unroll", "unroll{mode=full}")]
    if _has_jax():
        variants.append(("full unroll on xla", "unroll{mode=full}", "xla"))
    built = []
    for label, spec, *backend in variants:
        if spec is None:
            built.append((label, lambda: loops.greedy(model, *inputs), 0.0, None))
            continue
        compiled, seconds = _compile(program, spec or None, *backend)
        built.append((label, lambda c=compiled: c(*inputs), seconds, compiled))
    times = interleaved_medians([fn for _, fn, _, _ in built], repeat)
    rows = []
    for (label, fn, compile_s, compiled), t in zip(built, times):
        tokens = fn()
        calls = getattr(compiled, "last_calls", 1) if compiled is not None else None
        rows.append({"variant": label, "compile_s": compile_s, "ms_per_seq": 1e3 * t / batch,
                     "calls_per_seq": None if calls is None else calls / batch,
                     "calls_per_batch": calls, "same_tokens": bool(torch.equal(tokens, reference))})
    loop_ms = next(r["ms_per_seq"] for r in rows if r["variant"] == "step loop")
    for r in rows:
        r["speedup_vs_step_loop"] = loop_ms / r["ms_per_seq"]
    steps = int(loops.trim(reference, model.eos_id).shape[1])
    return {"size": "small" if small else "default", "batch": batch, "max_len": model.max_len,
            "steps_run": steps, "capture_s": capture_s, "rows": rows,
            "flops": loops.decoder_flops(loops.decode_region(program))}


def main(argv=None) -> list[dict]:
    """Print a table per OCR size; returns the results."""
    args = parse_repeat_args(argv, __doc__, "small OCR only, few repetitions", (5, 10))
    repeat = args.repeat
    results = []
    for small in ((True,) if args.quick else (True, False)):
        with one_thread():
            res = run(small, repeat)
        results.append(res)
        f = res["flops"]
        print(f"zoo:ocr {res['size']} (batch {res['batch']}, max_len {res['max_len']}, all rows finished after "
              f"{res['steps_run']} steps; capture {res['capture_s']:.1f} s; decoder FLOPs exact "
              f"{f['exact']:.3g} vs padded {f['padded']:.3g} = {f['ratio']:.2f}x), reference backend, "
              f"median of {repeat}:")
        print(f"  {'variant':<27}{'compile s':>10}{'ms/seq':>9}{'calls/seq':>11}{'vs step loop':>14}  same tokens")
        for r in res["rows"]:
            calls = "-" if r["calls_per_seq"] is None else f"{r['calls_per_seq']:.2f}"
            print(f"  {r['variant']:<27}{r['compile_s']:>10.2f}{r['ms_per_seq']:>9.3f}{calls:>11}"
                  f"{r['speedup_vs_step_loop']:>13.2f}x  {r['same_tokens']}")
    return results


if __name__ == "__main__":
    main()
