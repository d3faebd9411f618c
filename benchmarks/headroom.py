"""Headroom: how much of this machine's matmul peak a small compute-bound model reaches, eager vs XLA.

The model (Snap's headroom example) is ``y = (x ⊕ a) B c``: an outer addition of two d-vectors
(``X[i, j] = x[i] + a[j]``, d² adds), a d×d by d×d matmul (2d³ FLOPs) and a matrix-vector product with c
(2d² FLOPs): d-sized input and output, ≈ 2d³ FLOPs. Sustained GFLOP/s counts those nominal FLOPs
(2d³ + 3d²) per call; the fraction of peak divides by the peak measured here with ``torch.mm`` on large
square fp32 matrices (the best call over a few sizes, so the peak is what this machine can do right now).

Columns: ``eager`` (the PyTorch module) and ``xla`` (``fxopt.compile(program, "xla")`` after the xla
default pipeline) when that backend is registered; otherwise the column says "xla backend not available".
Timings are interleaved (``fxopt.tools.bench_measure``); compare ratios, not seconds, on a shared machine.

    python -m benchmarks.headroom [--quick] [--d 128,256,512]
"""
from __future__ import annotations

import argparse
import math
import time
import warnings

import torch

from fxopt.tools.bench_measure import measure_side_by_side


class Headroom(torch.nn.Module):
    """``forward(x [d]) -> (x ⊕ a) @ B @ c`` [d] with fixed random ``a`` [d], ``B`` [d, d], ``c`` [d]."""

    def __init__(self, d: int, seed: int = 0):
        """Takes the size ``d`` and a seed for the weights."""
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.a = torch.nn.Parameter(torch.randn(d, generator=gen), requires_grad=False)
        self.B = torch.nn.Parameter(torch.randn(d, d, generator=gen) / math.sqrt(d), requires_grad=False)
        self.c = torch.nn.Parameter(torch.randn(d, generator=gen) / math.sqrt(d), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Takes x [d]; returns y [d]."""
        outer = x.unsqueeze(1) + self.a.unsqueeze(0)   # [d, d]
        return (outer @ self.B) @ self.c


def nominal_flops(d: int) -> int:
    """FLOPs of one call at size ``d``: d² (outer add) + 2d³ (matmul) + 2d² (matrix-vector)."""
    return 2 * d ** 3 + 3 * d ** 2


def peak_matmul_gflops(sizes: tuple[int, ...] = (1024, 2048), reps: int = 5) -> float:
    """This machine's fp32 matmul throughput now: the best ``torch.mm`` call on n×n matrices over n in
    ``sizes`` (one warm-up and ``reps`` timed calls each), in GFLOP/s."""
    best = 0.0
    with torch.no_grad():
        for n in sizes:
            a, b = torch.randn(n, n), torch.randn(n, n)
            torch.mm(a, b)
            for _ in range(reps):
                start = time.perf_counter()
                torch.mm(a, b)
                best = max(best, 2 * n ** 3 / (time.perf_counter() - start) / 1e9)
    return best


def xla_runner(model: torch.nn.Module, x: torch.Tensor):
    """``(callable, None)`` compiled with fxopt's xla backend, or ``(None, reason)`` when the backend is
    not registered or fails on this model."""
    from fxopt.backends.base import backend_names

    if "xla" not in backend_names():
        return None, "xla backend not available (not registered)"
    import fxopt
    from fxopt.passes.registry import default_pipeline

    try:
        program = fxopt.capture(model, (x,))
        compiled = fxopt.compile(fxopt.optimize(program, default_pipeline("xla"), target="xla", verify=False),
                                 "xla")
        compiled(x)
    except Exception as exc:  # noqa: BLE001 - reported as one line, the eager column still runs
        return None, f"xla backend not available: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    return compiled, None


def run(sizes: list[int], reps: int, peak_sizes: tuple[int, ...]) -> dict:
    """Measure the peak, then eager (and xla) at each d; returns ``{"peak_gflops", "peak_sizes", "xla_note",
    "rows": [{"d", "flops", "eager_ms", "eager_gflops", "eager_fraction", "xla_ms", ...}]}``."""
    peak = peak_matmul_gflops(peak_sizes)
    rows, notes = [], []
    for d in sizes:
        model = Headroom(d).eval()
        x = torch.randn(d, generator=torch.Generator().manual_seed(1))
        fns = {"eager": model}
        xla, note = xla_runner(model, x)
        if note and note not in notes:
            notes.append(note)
        if xla is not None:
            fns["xla"] = xla
            with torch.no_grad():
                err = float((xla(x) - model(x)).abs().max())
        timings = measure_side_by_side(fns, (x,), warmup=2, reps=reps, batch=1)
        row = {"d": d, "flops": nominal_flops(d)}
        for name in ("eager", "xla"):
            t = timings.get(name)
            if t is None:
                row.update({f"{name}_ms": None, f"{name}_gflops": None, f"{name}_fraction": None})
                continue
            gflops = nominal_flops(d) / t.p50 / 1e9
            row.update({f"{name}_ms": t.p50 * 1e3, f"{name}_gflops": gflops, f"{name}_fraction": gflops / peak})
        if xla is not None:
            row["xla_max_abs_error"] = err
        rows.append(row)
    return {"peak_gflops": peak, "peak_sizes": list(peak_sizes), "xla_note": "; ".join(notes) or None,
            "rows": rows}


def _cell(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main(argv=None) -> dict:
    """Print the headroom table (``--quick``: smaller d and fewer reps); returns :func:`run`'s dict."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="d in 64..512, 5 reps, peak from n=1024,2048")
    parser.add_argument("--d", default=None, help="comma-separated sizes (default 128..2048, quick 64..512)")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    sizes = [int(t) for t in args.d.split(",")] if args.d else (
        [64, 128, 256, 512] if args.quick else [128, 256, 512, 1024, 2048])
    reps = args.reps or (5 if args.quick else 20)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(sizes, reps, peak_sizes=(1024, 2048) if args.quick else (1024, 2048, 4096))
    print(f"headroom y = (x ⊕ a) B c; peak fp32 matmul here: {result['peak_gflops']:.1f} GFLOP/s "
          f""
          f"(best torch.mm call, n in {result['peak_sizes']}; {torch.get_num_threads()} threads); "
          f"p50 of {reps} interleaved reps")
    print(f"  {'d':>5} {'MFLOP':>9} {'eager ms':>9} {'GFLOP/s':>8} {'of peak':>8} {'xla ms':>9} {'GFLOP/s':>8} "
          f"{'of peak':>8} {'xla/eager':>9}")
    for r in result["rows"]:
        ratio = r["eager_ms"] / r["xla_ms"] if r.get("xla_ms") else None
        print(f"  {r['d']:>5} {r['flops'] / 1e6:>9.1f} {r['eager_ms']:>9.3f} {r['eager_gflops']:>8.1f} "
              f"{r['eager_fraction']:>8.1%} {_cell(r['xla_ms'], '9.3f'):>9} {_cell(r['xla_gflops'], '8.1f'):>8} "
              f"{_cell(r['xla_fraction'], '8.1%'):>8} {_cell(ratio, '8.2f') + ('x' if ratio else ''):>9}")
    if result["xla_note"]:
        print(f"  xla: {result['xla_note']}")
    return result


if __name__ == "__main__":
    main()
