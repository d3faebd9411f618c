"""The reference runtime, piece by piece: the GraphModule as FX generates it, vs the same code with ATen ops
bound to their C++ handles (``backends/fast_graph``), vs that plus dead scratch buffers written in place
(``backends/reinplace``, what the reference backend runs), timed side by side (warm round-robin, one thread).

Graphs: the zoo models after the default reference pipeline, and the routed (top-1) and dense expert graphs
of ``benchmarks.moe`` at E=16, batch 256 after ``moe``. Headline: time saved by writing in place, per graph.

    python -m benchmarks.runtime [--quick] [--repeat N]
"""
from __future__ import annotations

import argparse
import warnings

import torch

import fxopt
from benchmarks.timing import one_thread, warm_round_robin
from fxopt.backends.fast_graph import fast_forward
from fxopt.backends.reinplace import inplace_plan
from fxopt.passes.registry import default_pipeline


def _graphs(quick: bool):
    """(name, optimized Program, example inputs) per graph."""
    from benchmarks.moe import Dense, LoopTopK

    for name, model_cls in (("moe top-1 E16 B256", LoopTopK), ("moe dense E16 B256", Dense)):
        torch.manual_seed(0)
        model = model_cls(16).eval()
        x = torch.randn(256, 64)
        yield name, fxopt.optimize(fxopt.capture(model, (x,)), "moe", verify=True), (x,)
    for zoo_name in (("ranking",) if quick else ("ranking", "moderation", "ocr", "resnet50")):
        model, inputs = fxopt.zoo.get(zoo_name, small=True)
        program = fxopt.capture(model, inputs)
        yield f"zoo:{zoo_name} (small)", fxopt.optimize(program, default_pipeline("reference")), inputs


def run(quick: bool = False, repeat: int = 30, budget_s: float = 20.0) -> list[dict]:
    """Time the three runtimes on each graph; returns one row per graph."""
    rows = []
    with one_thread():
        for name, program, inputs in _graphs(quick):
            gm = program.graph_module
            flat = program.flatten_inputs(inputs)
            plan = inplace_plan(gm.graph)
            bound, inplace = fast_forward(gm, []), fast_forward(gm, plan)
            want = gm(*flat)
            for got in (bound(*flat), inplace(*flat)):
                for a, b in zip(got if isinstance(got, (tuple, list)) else (got,),
                                want if isinstance(want, (tuple, list)) else (want,)):
                    torch.testing.assert_close(a, b, rtol=0, atol=0)
            times = warm_round_robin({"graph_module": lambda: gm(*flat), "bound": lambda: bound(*flat),
                                      "in_place": lambda: inplace(*flat)}, repeat, budget_s)
            rows.append({"graph": name, "ops": sum(n.op == "call_function" for n in gm.graph.nodes),
                         "in_place_ops": len(plan), **{f"{k}_us": v * 1e6 for k, v in times.items()},
                         "bound_vs_gm": times["graph_module"] / times["bound"],
                         "in_place_vs_bound": times["bound"] / times["in_place"],
                         "total_vs_gm": times["graph_module"] / times["in_place"]})
    return rows


def main(argv=None) -> list[dict]:
    """Print the table; returns the rows."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the moe graphs and zoo:ranking only")
    parser.add_argument("--repeat", type=int, default=30, help="timed rounds per graph")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    rows = run(args.quick, args.repeat)
    print("reference runtime, one thread, warm round-robin medians (ratios > 1: the right-hand runtime is faster)")
    print(f"  {'graph':<24} {'ops':>5} {'in place':>8} {'GraphModule us':>15} {'bound us':>9} {'in place us':>12}"
          f" {'bound/GM':>9} {'in-place/bound':>15} {'total':>6}")
    for r in rows:
        print(f"  {r['graph']:<24} {r['ops']:>5} {r['in_place_ops']:>8} {r['graph_module_us']:>15.0f} "
              f"{r['bound_us']:>9.0f} {r['in_place_us']:>12.0f} {r['bound_vs_gm']:>8.2f}x "
              f"{r['in_place_vs_bound']:>14.2f}x {r['total_vs_gm']:>5.2f}x")
    return rows


if __name__ == "__main__":
    main()
