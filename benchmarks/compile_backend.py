"""``torch.compile(backend="fxopt")`` against eager and inductor, side by side: ``python -m benchmarks.compile_backend``.

Workloads: ``zoo:ranking`` (default size: 8 EmbeddingBag tables x 20 000 rows, DCN cross, 16-expert MoE) at
batch 64 and 256, and a Hugging Face BERT encoder built from a tiny config in code (2 layers, hidden 128,
sequence 64; random weights, no download) at batch 8 and 64. Systems, each on its own copy of the model:

- ``eager``: the model itself;
- ``inductor``: ``torch.compile(model)`` (PyTorch's default backend);
- ``fxopt-reference``, ``fxopt-xla``: ``torch.compile(model, backend="fxopt", options={"backend": ...})``:
  dynamo's graphs through fxopt's default pipeline for the target, checked, then run by that backend.

Every call runs under ``torch.no_grad()`` with ``dynamic=False`` (one static graph per batch). The first
call of each compiled system is its compile time (dynamo + the backend), reported apart; then the systems
are timed in interleaved blocks (``benchmarks.timing.block_interleaved``: rounds over the systems, five
timed calls each after one untimed call, so one system's leftover OpenMP spinning is not charged to the
next), and the table gives median latency with ratios to eager and to inductor measured in this run. Goal (issue #23): fxopt-xla >= inductor on zoo:ranking at
batch 256 on this CPU, and no fxopt system slower than eager.

    python -m benchmarks.compile_backend [--quick] [--repeat N]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings

import torch

import fxopt
from benchmarks.timing import block_interleaved, load_average, machine_line
from fxopt.tools.bench_systems import resize_batch

SYSTEMS = ("eager", "inductor", "fxopt-reference", "fxopt-xla")


def ranking() -> tuple[torch.nn.Module, tuple]:
    """zoo:ranking at its default size and its example inputs."""
    return fxopt.zoo.get("ranking")


def bert() -> tuple[torch.nn.Module, tuple]:
    """A Hugging Face BertModel from a tiny config (random weights) and input ids [2, 64]."""
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=1000, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=256, max_position_embeddings=128)
    torch.manual_seed(0)
    model = BertModel(config).eval()
    ids = torch.randint(0, 1000, (2, 64), generator=torch.Generator().manual_seed(0))
    return model, (ids,)


def build(system: str, model: torch.nn.Module):
    """The callable for ``system`` on a private copy of ``model``."""
    model = copy.deepcopy(model).eval()
    if system == "eager":
        return model
    if system == "inductor":
        return torch.compile(model, dynamic=False)
    backend = system.removeprefix("fxopt-")
    return torch.compile(model, backend="fxopt", dynamic=False, options={"backend": backend})


def measure(name: str, model: torch.nn.Module, inputs: tuple, repeat: int, budget_s: float) -> list[dict]:
    """First-call seconds and interleaved median latency of every system on ``inputs``; one row per system."""
    torch._dynamo.reset()
    fns, first = {}, {}
    with torch.no_grad():
        expected = model(*inputs)
        for system in SYSTEMS:
            fn = build(system, model)
            t0 = time.perf_counter()
            out = fn(*inputs)
            first[system] = time.perf_counter() - t0
            got, want = _first_tensor(out), _first_tensor(expected)
            if not torch.allclose(got, want, atol=1e-3, rtol=1e-3):
                raise AssertionError(f"{name}: {system} differs from eager by {(got - want).abs().max():.3g}")
            fns[system] = fn
        samples = block_interleaved({s: (lambda fn=fn: fn(*inputs)) for s, fn in fns.items()},
                                    max(3, repeat // 5), block=5, budget_s=budget_s)
    medians = {s: statistics.median(v) for s, v in samples.items()}
    return [{"workload": name, "system": s, "first_call_s": (first[s] if s != "eager" else 0.0),
             "median_ms": medians[s] * 1e3, "vs_eager": medians["eager"] / medians[s],
             "vs_inductor": medians["inductor"] / medians[s], "runs": len(samples[s])} for s in SYSTEMS]


def _first_tensor(out):
    leaves = torch.utils._pytree.tree_flatten(out)[0]
    return next(x for x in leaves if isinstance(x, torch.Tensor)).float()


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the benchmark; prints the table and the headline, returns the rows."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one batch per workload, few repetitions")
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    load_before = load_average()
    repeat, budget = (10, 5.0) if args.quick else (args.repeat, 20.0)
    rows = []
    model, base = ranking()
    for batch in ((256,) if args.quick else (64, 256)):
        rows += measure(f"ranking b{batch}", model, resize_batch(base, batch), repeat, budget)
    model, base = bert()
    for batch in ((8,) if args.quick else (8, 64)):
        rows += measure(f"bert-tiny b{batch}", model, resize_batch(base, batch), repeat, budget)
    print(f"{'workload':<16} {'system':<16} {'first call':>10} {'median':>10} {'vs eager':>9} {'vs inductor':>12}")
    for r in rows:
        first = f"{r['first_call_s']:.1f}s" if r["system"] != "eager" else "-"
        print(f"{r['workload']:<16} {r['system']:<16} {first:>10} {r['median_ms']:>8.3f}ms {r['vs_eager']:>8.2f}x "
              f"{r['vs_inductor']:>11.2f}x")
    key = next(r for r in rows if r["workload"] == "ranking b256" and r["system"] == "fxopt-xla")
    print(f"headline: ranking b256 fxopt-xla {key['vs_inductor']:.2f}x inductor, {key['vs_eager']:.2f}x eager "
          f"(goal >= 1x inductor)")
    print(machine_line(load_before))
    return rows


if __name__ == "__main__":
    main()
