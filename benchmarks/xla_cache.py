"""The persistent XLA compile cache: a loaded artifact's first call, cold vs cached, in fresh processes.

    python -m benchmarks.xla_cache [--models ranking,resnet50] [--small]

For each zoo model an xla artifact is written (in this process, with the cache off), then two fresh processes
each load it and make the first call, sharing one new, empty cache directory (``$FXOPT_XLA_CACHE``): the
first compiles (a miss, stored), the second is served from the cache. Each child reports the seconds of
``fxopt.load``, of the first and the second call, and what the XLA stage said about its compile (and how
long it took). The table gives the first call, the first call's extra over a warm call (what a cold start
costs beyond running the model once), and the compile step alone. Goal (issue #29): the cached first call
>= 10x faster than the cold one.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r'''
import json, sys, time
t0 = time.perf_counter()
import fxopt, torch
from safetensors.torch import load_file
t1 = time.perf_counter()
art = fxopt.load(sys.argv[1])
t2 = time.perf_counter()
ins = load_file(sys.argv[2]); args = [ins[f"in{i}"] for i in range(len(ins))]
art(*args)
t3 = time.perf_counter()
art(*args)
t4 = time.perf_counter()
notes = [line for s in art.stages for line in s.compile_notes()]
events = [e for s in art.stages for e in getattr(s, "compile_events", [])]
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_call_s": t3 - t2, "second_call_s": t4 - t3,
                  "compile_s": sum(e["seconds"] for e in events), "notes": notes}))
'''


def _child(artifact: str, inputs: str, cache_dir: str) -> dict:
    env = dict(os.environ, FXOPT_XLA_CACHE=cache_dir)
    done = subprocess.run([sys.executable, "-c", CHILD, artifact, inputs], env=env, capture_output=True,
                          text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the benchmark; prints one row per model and returns the rows."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="ranking,resnet50")
    parser.add_argument("--small", action="store_true", help="the zoo's small variants")
    args = parser.parse_args(argv)
    os.environ["FXOPT_XLA_CACHE"] = "off"     # building the artifacts here must not warm the cache
    import warnings

    import fxopt
    from safetensors.torch import save_file

    warnings.filterwarnings("ignore")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            model, inputs = fxopt.zoo.get(name, small=args.small)
            artifact = os.path.join(tmp, name)
            fxopt.export(model, inputs, backend="xla", out=artifact)
            inputs_file = os.path.join(tmp, f"{name}_in.st")
            save_file({f"in{i}": t.contiguous() for i, t in enumerate(inputs)}, inputs_file)
            cache_dir = os.path.join(tmp, f"cache-{name}")
            cold = _child(artifact, inputs_file, cache_dir)
            warm = _child(artifact, inputs_file, cache_dir)
            over = {k: v["first_call_s"] - v["second_call_s"] for k, v in (("cold", cold), ("warm", warm))}
            rows.append({"model": name, "cold": cold, "warm": warm, "speedup": cold["first_call_s"] / warm["first_call_s"],
                         "overhead_speedup": over["cold"] / max(over["warm"], 1e-6),
                         "compile_speedup": cold["compile_s"] / max(warm["compile_s"], 1e-6)})
    print(f"{'model':<10} {'1st call cold':>13} {'cached':>8} {'ratio':>6} | {'1st minus 2nd call: cold':>24} "
          f"{'cached':>8} {'ratio':>6} | {'compile cold':>12} {'cached':>8} {'ratio':>6}")
    for r in rows:
        c, w = r["cold"], r["warm"]
        print(f"{r['model']:<10} {c['first_call_s']:>12.2f}s {w['first_call_s']:>7.3f}s {r['speedup']:>5.1f}x | "
              f"{c['first_call_s'] - c['second_call_s']:>23.2f}s {w['first_call_s'] - w['second_call_s']:>7.3f}s "
              f"{r['overhead_speedup']:>5.1f}x | {c['compile_s']:>11.2f}s {w['compile_s']:>7.3f}s "
              f"{r['compile_speedup']:>5.1f}x")
        for label in ("cold", "warm"):
            for note in r[label]["notes"]:
                print(f"  {label}: {note}")
    print("goal: cached first call >= 10x faster than cold")
    return rows


if __name__ == "__main__":
    main()
