"""Where a fuzz campaign's time goes: per random program, drawing it, capturing it, and each pass's checks.

    python -m benchmarks.fuzz_rate [--quick] [--programs N] [--seed S]

Draws N programs from ``model_specs(dynamic=True)`` and times, side by side in one run, the stages of
:func:`fxopt.tools.fuzz.check_program`: the draw, the capture (torch.export + core-ATen decomposition), and
for every registered pass its checks (optimize with verification, fresh-input comparison, idempotence run),
plus one random pipeline. Prints mean milliseconds per program per stage, each stage's share, and the
programs/s this gives on one core; returns the results as a dict.
"""
from __future__ import annotations

import argparse
import time
import warnings


def main(argv=None) -> dict:
    """Run the measurement (see the module docstring); prints a table and returns
    ``{"programs", "ms": {stage: mean ms}, "programs_per_second"}``."""
    import torch
    from hypothesis import HealthCheck, Phase, given, seed, settings

    from fxopt.passes.registry import pass_names
    from fxopt.tools import fuzz
    from fxopt.tools.graphgen import capture_spec, model_specs

    p = argparse.ArgumentParser(prog="python -m benchmarks.fuzz_rate")
    p.add_argument("--quick", action="store_true", help="5 programs")
    p.add_argument("--programs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    count = 5 if args.quick else args.programs
    passes = [n for n in pass_names() if not n.startswith("test-")]
    torch.set_num_threads(1)
    totals: dict[str, float] = {}
    specs = []

    def add(stage: str, seconds: float) -> None:
        totals[stage] = totals.get(stage, 0.0) + seconds

    last = [time.perf_counter()]

    @seed(args.seed)
    @settings(max_examples=count, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(spec=model_specs(dynamic=True))
    def draw(spec):
        now = time.perf_counter()
        add("draw", now - last[0])
        specs.append(spec)
        last[0] = time.perf_counter()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        draw()
        for spec in specs:
            t0 = time.perf_counter()
            capture_spec(spec)
            add("capture", time.perf_counter() - t0)
            t0 = time.perf_counter()
            fuzz.check_program(spec, [], False, {})  # capture + eager comparison only
            base = time.perf_counter() - t0
            spent = 0.0
            for name in passes:
                t0 = time.perf_counter()
                fuzz.check_program(spec, [name], False, {})
                cost = max(0.0, time.perf_counter() - t0 - base)
                add(f"pass {name}", cost)
                spent += cost
            t0 = time.perf_counter()
            fuzz.check_program(spec, passes, True, {})
            add("pipeline", max(0.0, time.perf_counter() - t0 - base - spent))
    n = max(1, len(specs))
    ms = {stage: 1000 * seconds / n for stage, seconds in totals.items()}
    per_program = sum(ms.values())
    print(f"{'stage':<24} {'ms/program':>11} {'share':>7}")
    print("-" * 44)
    for stage, value in ms.items():
        print(f"{stage:<24} {value:>11.1f} {100 * value / per_program:>6.1f}%")
    print("-" * 44)
    rate = 1000 / per_program if per_program else 0.0
    print(f"{'total':<24} {per_program:>11.1f}  -> {rate:.2f} programs/s on one core ({len(specs)} programs)")
    return {"programs": len(specs), "ms": ms, "programs_per_second": rate}


if __name__ == "__main__":  # pragma: no cover
    main()
