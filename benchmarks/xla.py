"""XLA backend: eager PyTorch vs torch.compile vs fxopt-xla, side by side in one run.

Workloads:
- ``zoo:ranking`` at its default size (8 EmbeddingBag tables x 20 000 rows, DCN cross, 16-expert MoE, MLPs),
  captured once with a dynamic batch dim and run at batch 64/256/512/1024. fxopt systems:
  ``fxopt-xla`` (pipeline ``canonicalize,fold-constants,dedupe,moe,dce``: the whole graph, embedding bags
  included, in one XLA executable) and ``fxopt-xla+split`` (``...,split{target=xla,policy=support}``: ops the
  support table lacks, the embedding bags today, stay in PyTorch on the CPU, the rest runs in XLA).
- the fused MoE of ``benchmarks/moe.py`` (dense softmax gating over E experts Linear(64,128)-ReLU-Linear(128,64),
  fused by the ``moe`` pass into stacked bmm) at batch 256.

Every system of one configuration is timed in interleaved blocks (``benchmarks.timing.block_interleaved``:
rounds over the systems, five timed calls each after an untimed one, so PyTorch's leftover OpenMP spinning
after an eager call is not charged to the XLA system after it) so machine noise hits all alike: throughput = batch / median latency, p50/p99 latency per call. ``xla-exe`` is the XLA executable alone on
inputs already converted to JAX (no input checks, no DLPack in/out): the floor of fxopt-xla's overhead.
Headline: ``ranking b512 fxopt-xla vs eager: N.NNx``.

    python -m benchmarks.xla [--quick] [--repeat N] [--no-compile] [--threads N]
"""
from __future__ import annotations

import argparse
import statistics
import warnings

import torch

import fxopt
from benchmarks.timing import block_interleaved, load_average, machine_line

BASE_PIPELINE = "canonicalize,fold-constants,dedupe,moe,dce"
SPLIT_PIPELINE = BASE_PIPELINE + ",split{target=xla,policy=support}"


def sample(fns: dict, repeat: int, budget_s: float) -> dict[str, list[float]]:
    """Seconds per call for each callable in ``fns`` (two warm-up calls each), timed in interleaved blocks
    (:func:`benchmarks.timing.block_interleaved`: about ``repeat`` calls each, or until ``budget_s`` is
    spent); returns ``{name: [seconds, ...]}``."""
    with torch.no_grad():
        for fn in fns.values():
            fn()
            fn()
    return block_interleaved(fns, max(3, repeat // 5), block=5, budget_s=budget_s)


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, nearest-rank."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * len(s) + 0.5)) - 1))]


def _rows(workload: str, batch: int, samples: dict) -> list[dict]:
    eager = statistics.median(samples["eager"])
    rows = []
    for name, s in samples.items():
        med = statistics.median(s)
        rows.append({"workload": workload, "batch": batch, "system": name, "p50_ms": med * 1e3,
                     "p99_ms": percentile(s, 99) * 1e3, "throughput": batch / med, "vs_eager": eager / med,
                     "rounds": len(s)})
    return rows


def _exe_only(compiled, inputs):
    """A callable running only the XLA executable of a single-partition xla artifact on pre-converted
    JAX inputs (None when the artifact has several partitions)."""
    from fxopt.backends.xla.backend import xla_stages
    from fxopt.backends.xla.lower import to_jax

    stages = xla_stages(compiled)
    if len(compiled.stages) != 1 or len(stages) != 1:
        return None
    stage = stages[0]
    with torch.no_grad():
        compiled(*inputs)
    arrays = [to_jax(t) for t in inputs]
    key = (tuple((tuple(x.shape), str(x.dtype)) for x in arrays), (), str(inputs[0].device))
    exe = stage._executables[key]

    def run():
        out = exe(stage.params, *arrays)
        out[0].block_until_ready()
    return run


def ranking_rows(batches: list[int], repeat: int, budget: float, use_compile: bool) -> list[dict]:
    """Time the ranking model at each batch size; returns one row per (batch, system)."""
    model, inputs = fxopt.zoo.get("ranking")
    cfg = model.config
    batch_dim = torch.export.Dim("batch", min=2, max=max(batches) + 1)
    program = fxopt.capture(model, inputs, dynamic_shapes=tuple({0: batch_dim} for _ in inputs))
    systems = {"fxopt-xla": fxopt.compile(fxopt.optimize(program, BASE_PIPELINE, verify=False), "xla"),
               "fxopt-xla+split": fxopt.compile(fxopt.optimize(program, SPLIT_PIPELINE, verify=False), "xla")}
    compiled_model = torch.compile(model) if use_compile else None
    rows = []
    for b in batches:
        gen = torch.Generator().manual_seed(b)
        dense = torch.log1p(torch.rand(b, cfg.num_dense, generator=gen) * 100)
        ids = [torch.randint(0, cfg.rows, (b, n), generator=gen) for n in cfg.bag_sizes]
        x = (dense, *ids)
        with torch.no_grad():
            want = model(*x)
            for name, c in systems.items():
                torch.testing.assert_close(c(*x), want, rtol=1e-4, atol=1e-4)
        fns = {"eager": lambda: model(*x)}
        if compiled_model is not None:
            fns["torch.compile"] = lambda: compiled_model(*x)
        for name, c in systems.items():
            fns[name] = (lambda c=c: c(*x))
        exe = _exe_only(systems["fxopt-xla"], x)
        if exe is not None:
            fns["xla-exe"] = exe
        rows += _rows("ranking", b, sample(fns, repeat, budget))
    return rows


def moe_rows(experts: list[int], batch: int, repeat: int, budget: float, use_compile: bool) -> list[dict]:
    """Time benchmarks/moe.py's dense-gated MoE (fused by the moe pass) for each expert count."""
    from benchmarks.moe import D_IN, Dense

    rows = []
    for e in experts:
        torch.manual_seed(0)
        model = Dense(e).eval()
        x = torch.randn(batch, D_IN)
        program = fxopt.optimize(fxopt.capture(model, (x,)), BASE_PIPELINE, verify=False)
        fused = sum(r.details.get("experts_fused", 0) for r in program.reports if r.name == "moe")
        compiled = fxopt.compile(program, "xla")
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)
        ref = fxopt.compile(program, "reference")
        fns = {"eager": lambda: model(x), "fxopt-reference": lambda: ref(x)}
        if use_compile:
            tc = torch.compile(model)
            fns["torch.compile"] = lambda: tc(x)
        fns["fxopt-xla"] = lambda: compiled(x)
        exe = _exe_only(compiled, (x,))
        if exe is not None:
            fns["xla-exe"] = exe
        for r in _rows(f"moe E={e}", batch, sample(fns, repeat, budget)):
            r["experts_fused"] = fused
            rows.append(r)
    return rows


def main(argv=None) -> dict:
    """Run the benchmark (``--quick``: ranking at 64/512 and one MoE config); print the table and the
    headline; returns ``{"rows": [...], "speedup_b512": float | None, "headline": str}``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer batch sizes and rounds")
    parser.add_argument("--repeat", type=int, default=50, help="timed rounds per configuration (max)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads (default 0: torch's default; XLA uses its own pool)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    load_before = load_average()
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = [64, 512] if args.quick else [64, 256, 512, 1024]
    budget = 2.0 if args.quick else 6.0
    repeat = min(args.repeat, 20) if args.quick else args.repeat
    rows = ranking_rows(batches, repeat, budget, not args.no_compile)
    rows += moe_rows([16] if args.quick else [8, 16, 32], 256, repeat, budget, not args.no_compile)
    head = f"{'workload':12} {'batch':>5} {'system':16} {'p50 ms':>9} {'p99 ms':>9} {'samples/s':>11} {'x eager':>8}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['workload']:12} {r['batch']:>5} {r['system']:16} {r['p50_ms']:>9.3f} {r['p99_ms']:>9.3f} "
              f"{r['throughput']:>11.0f} {r['vs_eager']:>8.2f}")
    key = next((r for r in rows if r["workload"] == "ranking" and r["batch"] == 512
                and r["system"] == "fxopt-xla"), None)
    speedup = key["vs_eager"] if key else None
    headline = f"ranking b512 fxopt-xla vs eager: {speedup:.2f}x (goal >= 1x, issue #29)" if speedup else ""
    print("\n" + headline)
    print(machine_line(load_before))
    return {"rows": rows, "speedup_b512": speedup, "headline": headline}


if __name__ == "__main__":
    main()
