"""The whole ``fxopt.optimize(program, "split")`` call on big graphs, against one ``GraphModule.recompile()``.

``python -m benchmarks.split_call [--nodes 20000,50000] [--repeat 3]``

Per size (``benchmarks.split_graphs.branched_program``: a DAG of elementwise ops and matmuls, 20% of them
unsupported on xla), best of ``--repeat``: one recompile of the graph (the unit), the program copy
``optimize`` makes, the split pass alone, and ``optimize(program, "split{target=xla}")`` with and without
verification. Prints seconds and each as a ratio of the recompile, with the load average (the machine is
shared: compare ratios).
"""
from __future__ import annotations

import argparse
import os
import fxopt
from benchmarks.split_graphs import branched_program
from benchmarks.timing import best_of


def run(nodes: int, repeat: int) -> dict:
    """Seconds of each step on a ``nodes``-node graph: ``{"nodes", "recompile", "copy", "pass", "optimize",
    "optimize_verify"}``."""
    program = branched_program(nodes)
    program.ensure_compiled()
    spec = "split{target=xla}"
    pass_seconds: list[float] = []

    def optimize(verify: bool) -> None:
        result = fxopt.optimize(program, spec, target="xla", verify=verify)
        pass_seconds.append(result.reports[0].seconds)

    return {
        "nodes": program.num_nodes(),
        "recompile": best_of(program.graph_module.recompile, repeat),
        "copy": best_of(program.copy, repeat),
        "optimize": best_of(lambda: optimize(False), repeat),
        "optimize_verify": best_of(lambda: optimize(True), repeat),
        "pass": min(pass_seconds),
    }


def main(argv: list[str] | None = None) -> int:
    """Print one row per size; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="20000,50000")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"load average {os.getloadavg()[0]:.1f}; seconds (x one recompile)")
    print("| nodes | recompile | copy | split pass | optimize | optimize, verified |")
    print("|---|---|---|---|---|---|")
    for n in (int(x) for x in args.nodes.split(",")):
        r = run(n, args.repeat)
        unit = r["recompile"]
        cells = [f"{r[k]:.2f} s ({r[k] / unit:.2f}x)" for k in ("copy", "pass", "optimize", "optimize_verify")]
        print(f"| {r['nodes']} | {unit:.2f} s | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
