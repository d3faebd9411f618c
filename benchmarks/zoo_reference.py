"""Default pipeline on the zoo models through the reference backend: nodes before/after and latency of the
original eager model vs the compiled artifact, timed interleaved in one run (ratios, not seconds).

Headline: median latency ratio eager / fxopt per model (>1 means the artifact is faster).
"""
from __future__ import annotations

import argparse


import fxopt
from benchmarks.timing import interleaved_medians
from fxopt.passes.registry import default_pipeline


def run(models=("ranking", "resnet50", "moderation"), small: bool = False, repeat: int = 10) -> list[dict]:
    """Capture, optimize (default pipeline) and compile each zoo model; returns one row per model."""
    rows = []
    for name in models:
        model, inputs = fxopt.zoo.get(name, small=small)
        program = fxopt.capture(model, inputs)
        optimized = fxopt.optimize(program, default_pipeline("reference"))
        compiled = fxopt.compile(optimized)
        eager_s, fxopt_s = interleaved_medians([lambda: model(*inputs), lambda: compiled(*inputs)], repeat)
        rows.append({"model": name, "nodes_before": program.num_nodes(), "nodes_after": optimized.num_nodes(),
                     "eager_s": eager_s, "fxopt_s": fxopt_s, "speedup": eager_s / fxopt_s})
    return rows


def main(argv=None) -> list[dict]:
    """Print one line per model; returns the rows."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", action="store_true", help="use the small zoo variants")
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args(argv)
    rows = run(small=args.small, repeat=args.repeat)
    print(f"zoo through the reference backend ({default_pipeline('reference')}), median of {args.repeat}:")
    for r in rows:
        print(f"  {r['model']:<11} nodes {r['nodes_before']:>5} -> {r['nodes_after']:<5} "
              f"eager/fxopt latency = {r['speedup']:.2f}x")
    return rows


if __name__ == "__main__":
    main()
