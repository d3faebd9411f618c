"""`moe` on real-world expert shapes: eager model vs the `moe`-fused program (reference backend: the fused
FX graph run by PyTorch).

Cases: dense softmax-gated SwiGLU experts (``down(silu(gate(x)) * up(x))``) on a [B, T, d] input, the same with
one ``gate_up`` linear + ``chunk``, and top-2 routed SwiGLU experts in the HF Mixtral loop form
(``one_hot(idx, E).permute(2, 1, 0)``, ``x[None, tok]``, ``index_add_``) and in fxopt's ``where(idx == e)``
form. d=64, hidden 128, E experts, B*T rows. Every case goes through `fxopt.optimize(..., "moe", verify=True)`. Eager and fused run round-robin in one process (warm: `benchmarks.timing.warm_round_robin`); the ratio is
what compares across this noisy shared machine. A routed case whose rewrite did not apply says so in the
``fused`` column (matmul nodes before -> after).

    python -m benchmarks.moe_shapes [--quick] [--threads N] [--repeat N]
"""
from __future__ import annotations

import argparse

import torch

import fxopt
from benchmarks.timing import warm_round_robin
from fxopt.passes.moe import count_matmuls
from tests.test_moe_shapes import DenseMoE, GateUp, HFLoopMoE, SwiGLU, WhereMoE

D, H = 64, 128


def _cases(quick: bool) -> list:
    """``(name, factory, input shape)`` per configuration."""
    grid = [(8, 2, 32)] if quick else [(8, 2, 32), (8, 4, 128), (16, 4, 64)]
    out = []
    for e, b, t in grid:
        out.append((f"dense swiglu 3-D E{e} {b}x{t}", lambda e=e: DenseMoE([SwiGLU(D, H) for _ in range(e)], D),
                    (b, t, D)))
        out.append((f"dense gate_up 3-D E{e} {b}x{t}", lambda e=e: DenseMoE([GateUp(D, H) for _ in range(e)], D),
                    (b, t, D)))
        out.append((f"routed HF top2 E{e} {b}x{t}",
                    lambda e=e: HFLoopMoE(torch.nn.ModuleList(SwiGLU(D, H) for _ in range(e)), d=D), (b, t, D)))
        out.append((f"routed where top2 E{e} {b * t}",
                    lambda e=e: WhereMoE(num_experts=e, d=D, h=H), (b * t, D)))
    return out


def run_case(name, factory, shape, repeat: int, budget_s: float) -> dict:
    """Capture, fuse (``optimize`` with verification), check numerics, time. Returns one result row."""
    torch.manual_seed(0)
    model = factory().eval()
    x = torch.randn(*shape)
    program = fxopt.capture(model, (x,))
    before = count_matmuls(program.graph_module)
    try:
        fused = fxopt.optimize(program, "moe", verify=True)
        after = count_matmuls(fused.graph_module)
        torch.testing.assert_close(fused(x), model(x), rtol=1e-4, atol=1e-4)
    except Exception as exc:  # noqa: BLE001 - a rewrite that does not apply is reported, not hidden
        return {"case": name, "matmuls": f"{before}->?", "eager_us": float("nan"), "fused_us": float("nan"),
                "speedup": float("nan"), "note": f"{type(exc).__name__}: {str(exc)[:60]}"}
    t = warm_round_robin({"eager": lambda: model(x), "fused": lambda: fused(x)}, repeat, budget_s)
    return {"case": name, "matmuls": f"{before}->{after}", "eager_us": t["eager"] * 1e6,
            "fused_us": t["fused"] * 1e6, "speedup": t["eager"] / t["fused"], "note": ""}


def main(argv=None) -> list[dict]:
    """Run the grid (``--quick``: one size); prints a table and returns the rows."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    ap.add_argument("--repeat", type=int, default=50)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [run_case(*c, repeat=args.repeat, budget_s=2.0 if args.quick else 6.0) for c in _cases(args.quick)]
    print(f"{'case':34} {'matmuls':>9} {'eager us':>9} {'fused us':>9} {'x eager':>8}  note")
    for r in rows:
        print(f"{r['case']:34} {r['matmuls']:>9} {r['eager_us']:9.0f} {r['fused_us']:9.0f} {r['speedup']:8.2f}  "
              f"{r['note']}")
    return rows


if __name__ == "__main__":
    main()
