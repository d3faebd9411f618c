"""Decode-loop variants: the step loop vs partitions of 25 vs a full unroll (reference backend), and on the XLA
backend partitions of 25 (each piece an XLA executable, the host checking EOS between them) and the full
unroll (one XLA executable for encoder + every step); the XLA rows are skipped without jax. With
``--hf`` (or alone with ``--only hf``), the same for Hugging Face generation (``decode=GenerationSpec``) on
tiny GPT-2 and T5 configs, against ``model.generate`` (see :func:`run_hf`).

For zoo:ocr (small always; the default size unless ``--quick``): capture time of the decode loop, then per
variant the compile time (``optimize`` + ``compile``), the time per sequence (batch latency / batch, median
of interleaved runs, so machine noise hits every variant alike), graph calls per sequence (host round
trips: encoder + init + steps or partitions run), and whether the tokens equal the plain Python loop's.
The plain Python loop on the eager model (``loops.greedy``) is the baseline row.

Headline: step-loop time / variant time (>1 means the variant is faster than the compiled step loop).
"""
from __future__ import annotations

import os
import time

import torch

import fxopt
from benchmarks.timing import interleaved_medians, machine_line, one_thread, parse_repeat_args
from fxopt.backends import decode
from fxopt.ir import loops
from fxopt.ir.capture import decoder
from fxopt.zoo import ocr


def _compile(program, spec: str | None, backend: str = "reference"):
    start = time.perf_counter()
    prog = fxopt.optimize(program, spec, verify=False) if spec else program
    if backend == "reference" and decode.uses_runtime(prog):
        compiled = decode.compile(prog)
    else:                       # an accelerator backend compiles a decode program piece by piece itself
        compiled = fxopt.compile(prog, backend)
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
        variants.append((f"partitions of {partition} on xla",
                         f"unroll{{partition={partition}}},split{{target=xla,policy=support}}", "xla"))
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


HF_NEW = 32          # max_new_tokens of the Hugging Face rows
HF_PROMPTS = 32      # prompts whose stop lengths make the histogram


def _hf_model(name: str):
    """A tiny random-weight GPT-2 or T5, a little larger than the tests' (4 layers, hidden 64, vocab 512)."""
    from transformers import GPT2Config, GPT2LMHeadModel, T5Config, T5ForConditionalGeneration

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if name == "gpt2":
            return GPT2LMHeadModel(GPT2Config(vocab_size=512, n_embd=64, n_layer=4, n_head=4, n_inner=256,
                                              n_positions=128, bos_token_id=0, eos_token_id=0)).eval()
        return T5ForConditionalGeneration(T5Config(vocab_size=512, d_model=64, d_kv=16, d_ff=256, num_layers=4,
                                                   num_heads=4, dropout_rate=0.0, decoder_start_token_id=0)).eval()


def _stop_lengths(model, prompts: list, eos: int) -> list[int]:
    """Per prompt, the 1-based position of its first ``eos`` in ``generate``'s new tokens (HF_NEW + 1 if none)."""
    lengths = []
    for ids in prompts:
        with torch.no_grad():
            out = model.generate(ids, do_sample=False, max_new_tokens=HF_NEW, eos_token_id=eos,
                                 pad_token_id=eos)
        new = out[0, (ids.shape[1] if not model.config.is_encoder_decoder else 1):]
        hit = (new == eos).nonzero()
        lengths.append(int(hit[0]) + 1 if hit.numel() else HF_NEW + 1)
    return lengths


def _pick_eos(model, prompts: list) -> int:
    """The token whose first appearance across the prompts' unconstrained outputs is spread the most: an EOS
    under which requests stop at different lengths, as real ones do (random weights rarely emit their own)."""
    from transformers.utils import logging as hf_logging

    seen: dict[int, list[int]] = {}
    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()    # eos_token_id=-1 (never stop) is what is meant here; no warning per call
    try:
        outs = []
        for ids in prompts:
            with torch.no_grad():
                outs.append(model.generate(ids, do_sample=False, max_new_tokens=HF_NEW, eos_token_id=-1,
                                           pad_token_id=0))
    finally:
        hf_logging.set_verbosity(before)
    for ids, out in zip(prompts, outs):
        new = out[0, (ids.shape[1] if not model.config.is_encoder_decoder else 1):].tolist()
        for tok in set(new):
            seen.setdefault(tok, []).append(new.index(tok) + 1)
    return max(seen, key=lambda t: (len(seen[t]), len(set(seen[t]))))


def run_hf(name: str, repeat: int, lengths_file: str) -> dict:
    """Hugging Face generation at batch 1: ``generate`` vs fxopt's step loop, partitions (even, and
    ``boundaries=auto`` from the prompts' stop-length histogram) and full unroll on the reference backend,
    and partitions / full unroll on xla. Each request is one of HF_PROMPTS prompts, cycled through the timed
    calls, so early stops follow the histogram. Returns ``{"model", "rows", "histogram", ...}``."""
    import json

    model = _hf_model(name)
    g = torch.Generator().manual_seed(2)
    prompts = [torch.randint(3, 512, (1, 8), generator=g) for _ in range(HF_PROMPTS)]
    eos = _pick_eos(model, prompts)
    lengths = _stop_lengths(model, prompts, eos)
    with open(lengths_file, "w") as f:
        json.dump(lengths, f)
    spec = fxopt.GenerationSpec(max_new_tokens=HF_NEW, eos_token_id=eos, pad_token_id=eos)
    start = time.perf_counter()
    program = fxopt.capture(model, (prompts[0],), decode=spec)
    capture_s = time.perf_counter() - start
    settings = loops.decode_region(program)["generation"]
    first_stop = 8
    variants = [("generate", None, None), ("step loop", "", "reference"),
                (f"partitions of {first_stop}", f"unroll{{partition={first_stop}}}", "reference"),
                ("partitions (boundaries=auto)", f"unroll{{boundaries=auto,lengths={lengths_file},device=cpu}}",
                 "reference"), ("full unroll", "unroll{mode=full}", "reference")]
    if _has_jax():
        variants += [(f"xla partitions of {first_stop}", f"unroll{{partition={first_stop}}}", "xla"),
                     ("xla partitions (boundaries=auto)",
                      f"unroll{{boundaries=auto,lengths={lengths_file},device=cpu}}", "xla"),
                     ("xla full unroll", "unroll{mode=full}", "xla")]
    built = []
    for label, passes, backend in variants:
        if passes is None:
            built.append((label, None, 0.0))
            continue
        start = time.perf_counter()
        prog = fxopt.optimize(program, passes or None, verify=False, target=backend) if passes else program
        compiled = fxopt.compile(prog, backend)
        compiled(prompts[0])                    # XLA compiles on the first call: count it here
        built.append((label, compiled, time.perf_counter() - start))
    counter = {"i": 0}

    def call(compiled):
        ids = prompts[counter["i"] % len(prompts)]
        counter["i"] += 1
        if compiled is None:
            with torch.no_grad():
                return model.generate(ids, do_sample=False, max_new_tokens=HF_NEW, eos_token_id=eos,
                                      pad_token_id=eos)
        return fxopt.as_generate(compiled(ids), settings, ids)

    fns = [lambda c=c: call(c) for _, c, _ in built]
    times = interleaved_medians(fns, repeat * len(prompts) // 4 or 1)
    same = {}
    for label, compiled, _ in built:
        ok = True
        for ids in prompts[:8]:
            with torch.no_grad():
                ref = model.generate(ids, do_sample=False, max_new_tokens=HF_NEW, eos_token_id=eos, pad_token_id=eos)
            got = ref if compiled is None else fxopt.as_generate(compiled(ids), settings, ids)
            ok = ok and torch.equal(got, ref)
        same[label] = ok
    base = times[0]
    rows = [{"variant": label, "compile_s": cs, "ms_per_seq": 1e3 * t, "vs_generate": base / t,
             "same_tokens": same[label]} for (label, _, cs), t in zip(built, times)]
    return {"model": name, "max_new_tokens": HF_NEW, "eos": eos, "capture_s": capture_s, "rows": rows,
            "mean_length": sum(min(n, HF_NEW) for n in lengths) / len(lengths),
            "first_partition_fraction": sum(n <= first_stop for n in lengths) / len(lengths)}


def print_hf(res: dict, repeat: int) -> None:
    """One table of :func:`run_hf`'s rows."""
    print(f"{res['model']} (tiny, random weights) greedy generation, batch 1, max_new_tokens {res['max_new_tokens']}, "
          f"EOS {res['eos']}: mean length {res['mean_length']:.1f} tokens, "
          f"{res['first_partition_fraction']:.0%} of requests finish within the first partition (8 tokens); "
          f"capture {res['capture_s']:.1f} s; median of interleaved runs:")
    print(f"  {'variant':<32}{'compile s':>10}{'ms/seq':>9}{'vs generate':>13}  same tokens")
    for r in res["rows"]:
        print(f"  {r['variant']:<32}{r['compile_s']:>10.2f}{r['ms_per_seq']:>9.3f}{r['vs_generate']:>12.2f}x"
              f"  {r['same_tokens']}")


def main(argv=None) -> list[dict]:
    """Print a table per OCR size (and, with ``--hf``, per Hugging Face model); returns the results."""
    import sys
    import tempfile

    argv = list(sys.argv[1:] if argv is None else argv)
    only_hf = "--only" in argv and argv[argv.index("--only") + 1] == "hf"
    if only_hf:
        del argv[argv.index("--only"):argv.index("--only") + 2]
    hf = only_hf or "--hf" in argv
    argv = [a for a in argv if a != "--hf"]
    args = parse_repeat_args(argv, __doc__, "small OCR only, few repetitions", (5, 10))
    repeat = args.repeat
    results = []
    if hf:
        with one_thread(), tempfile.TemporaryDirectory() as tmp:
            print(machine_line(os.getloadavg()[0]))
            for name in ("gpt2", "t5"):
                res = run_hf(name, repeat, os.path.join(tmp, f"{name}-lengths.json"))
                print_hf(res, repeat)
                results.append(res)
    if only_hf:
        return results
    for small in ((True,) if args.quick else (True, False)):
        with one_thread():
            res = run(small, repeat)
        results.append(res)
        f = res["flops"]
        print(f"zoo:ocr {res['size']} (batch {res['batch']}, max_len {res['max_len']}, all rows finished after "
              f"{res['steps_run']} steps; capture {res['capture_s']:.1f} s; decoder FLOPs exact "
              f"{f['exact']:.3g} vs padded {f['padded']:.3g} = {f['ratio']:.2f}x), reference backend, "
              f"median of {repeat}:")
        print(f"  {'variant':<29}{'compile s':>10}{'ms/seq':>9}{'calls/seq':>11}{'vs step loop':>14}  same tokens")
        for r in res["rows"]:
            calls = "-" if r["calls_per_seq"] is None else f"{r['calls_per_seq']:.2f}"
            print(f"  {r['variant']:<29}{r['compile_s']:>10.2f}{r['ms_per_seq']:>9.3f}{calls:>11}"
                  f"{r['speedup_vs_step_loop']:>13.2f}x  {r['same_tokens']}")
    return results


if __name__ == "__main__":
    main()
