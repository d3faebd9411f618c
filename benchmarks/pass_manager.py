"""Pass-manager overhead on a 50k-node graph: fxopt's manager (lazy recompile) against torch.fx's
PassManager (recompiles after every pass) and against a single GraphModule.recompile().

Headline: time of fxopt's 10-pass pipeline that changes nothing, as a ratio of one recompile.
"""
from __future__ import annotations

import argparse

from torch.fx.passes.infra.pass_base import PassResult as FxPassResult
from torch.fx.passes.infra.pass_manager import PassManager as FxPassManager

import fxopt
from fxopt.passes.manager import optimize as _optimize  # noqa: F401
from benchmarks.synthetic import chain_program
from benchmarks.timing import best_of


def run(num_nodes: int = 50_000, repeat: int = 3) -> dict:
    """Measure and return ``{"recompile_s", "fxopt_s", "fx_s", "ratio_vs_recompile", "speedup_vs_fx"}``."""
    program = chain_program(num_nodes)
    gm = program.graph_module
    pipeline = ["dce", "canonicalize", "fold-constants"] * 3 + ["dce"]  # 10 real passes, nothing to do
    recompile_s = best_of(gm.recompile, repeat)
    fxopt_s = best_of(lambda: fxopt.optimize(program, pipeline, verify=False), repeat)
    copy_s = best_of(program.copy, repeat)
    inplace_s = best_of(lambda: _optimize(program, pipeline, verify=False, inplace=True), repeat)

    def noop(module):
        return FxPassResult(module, False)

    fx_manager = FxPassManager(passes=[noop] * 10)
    fx_s = best_of(lambda: fx_manager(gm), repeat)
    return {
        "nodes": program.num_nodes(),
        "recompile_s": recompile_s,
        "fxopt_s": fxopt_s,
        "fx_s": fx_s,
        "copy_s": copy_s,
        "inplace_s": inplace_s,
        "ratio_vs_recompile": fxopt_s / recompile_s,
        "speedup_vs_fx": fx_s / fxopt_s,
    }


def main(argv=None) -> dict:
    """Print the measurements; returns them."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    r = run(args.nodes, args.repeat)
    print(f"pass manager, {r['nodes']} nodes, 10 passes that change nothing:")
    print(f"  one GraphModule.recompile()        {r['recompile_s']:.3f} s")
    print(f"  fxopt.optimize (lazy recompile)    {r['fxopt_s']:.3f} s  = {r['ratio_vs_recompile']:.2f}x one recompile")
    print(f"    of which the input copy          {r['copy_s']:.3f} s  (inplace=True skips it: "
          f"{r['inplace_s']:.3f} s for the 10 passes)")
    print(f"  torch.fx PassManager, no-op passes {r['fx_s']:.3f} s  -> fxopt is {r['speedup_vs_fx']:.1f}x faster")
    return r


if __name__ == "__main__":
    main()
