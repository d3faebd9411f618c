"""``split`` on the Hugging Face corpus: where each placement sends the ops, in how many pieces, at what estimate.

``python -m benchmarks.split_corpus [--models bert,gpt2,...] [--targets xla,tensorrt,neuron] [--json FILE]``

The corpus is tests/corpus (tiny-config Hugging Face models, built in code, no downloads). Per model and
target it runs the target's default pipeline up to ``split`` once, then each placement below on a copy, and
prints accelerator ops / all ops, partitions (CPU + accelerator), transfers, and the cost model's latency and
throughput estimates (sum and max of the CPU, accelerator and link busy times per request) next to all-CPU.
These are estimates on the built-in profiles (xla: h100, tensorrt: t4, neuron: inf1), not measurements.

Placements: ``support`` (every supported op on the accelerator), ``latency`` and ``throughput``
(``policy=cost`` with that objective). The default pipelines use the one in ``DEFAULTS``; ``--summary`` ends
with one row per model of those and of support (the table in docs/passes/split.md).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

PLACEMENTS = {"support": {"policy": "support"}, "latency": {"objective": "latency"},
              "throughput": {"objective": "throughput"}}


def _pre_split(target: str) -> str:
    """The target's default pipeline without its final split."""
    from fxopt.passes.registry import default_pipeline
    spec = default_pipeline(target)
    cut = spec.rfind(",split")
    assert cut > 0, spec
    return spec[:cut]


def _row(model: str, target: str, placement: str, program) -> dict:
    from fxopt.passes.split import Split
    work = program.copy()
    result = Split(target=target, **PLACEMENTS[placement]).run(work)
    d = result.details
    before, after = d["estimate"]["busy_us_before"], d["estimate"]["busy_us_after"]
    return {"model": model, "target": target, "placement": placement,
            "acc_ops": d["ops"][target], "ops": d["ops"][target] + d["ops"]["cpu"],
            "partitions_cpu": d["partitions"]["cpu"], "partitions_acc": d["partitions"][target],
            "transfers": d["transfers"],
            "all_cpu_us": round(sum(before.values()), 3),
            "latency_us": round(sum(after.values()), 3), "throughput_us": round(max(after.values()), 3),
            "fallback": d["estimate"].get("fallback")}


def main(argv: list[str] | None = None) -> int:
    """Print one row per (model, target, placement); returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated corpus names (default: all)")
    parser.add_argument("--targets", default="xla,tensorrt,neuron")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--summary", action="store_true",
                        help="end with one row per model: each target's default placement and the support one")
    args = parser.parse_args(argv)

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
    import fxopt
    import torch
    from corpus import BUILDERS, hf_model

    torch.set_num_threads(1)
    names = args.models.split(",") if args.models else list(BUILDERS)
    targets = args.targets.split(",")
    rows = []
    print("| model | target | placement | acc ops / ops | partitions cpu+acc | transfers | latency us "
          "(all-CPU) | throughput us |", flush=True)
    print("|---|---|---|---|---|---|---|---|", flush=True)
    for name in names:
        start = time.perf_counter()
        try:
            model, kwargs = hf_model(name)
            program = fxopt.capture(model, example_kwargs=kwargs)
        except Exception as exc:  # noqa: BLE001 - a benchmark row, not a test: report and go on
            print(f"| {name} | - | capture failed: {str(exc).splitlines()[0][:120]} |", flush=True)
            continue
        for target in targets:
            prepared = fxopt.optimize(program, _pre_split(target), target=target, verify=False)
            for placement in PLACEMENTS:
                r = _row(name, target, placement, prepared)
                rows.append(r)
                print(f"| {name} | {target} | {placement} | {r['acc_ops']} / {r['ops']} | "
                      f"{r['partitions_cpu']}+{r['partitions_acc']} | {r['transfers']} | "
                      f"{r['latency_us']:.4g} ({r['all_cpu_us']:.4g}) | {r['throughput_us']:.4g} |", flush=True)
        print(f"<!-- {name}: {time.perf_counter() - start:.0f} s -->", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    if args.summary:
        print()
        print(summary(rows, targets))
    return 0


#: The placement each target's default pipeline uses (passes/registry.py DEFAULT_PIPELINES), and the one it
#: used before 2026-12-03.
DEFAULTS = {"xla": "support", "tensorrt": "throughput", "neuron": "throughput"}
BEFORE = {"xla": "support", "tensorrt": "latency", "neuron": "support"}


def summary(rows: list[dict], targets: list[str]) -> str:
    """One markdown row per model: per target, the default placement before 2026-12-03 and now (one column
    where they are the same): accelerator ops / all ops, partitions (CPU + accelerator), transfers and the
    throughput estimate (us per request at the busiest resource)."""
    def cell(r: dict) -> str:
        return (f"{r['acc_ops']}/{r['ops']}, {r['partitions_cpu']}+{r['partitions_acc']}, {r['transfers']} tr, "
                f"{r['throughput_us']:.3g} us")

    columns = []
    for t in targets:
        columns += [(t, BEFORE[t], "before")] if BEFORE[t] != DEFAULTS[t] else []
        columns.append((t, DEFAULTS[t], "now" if BEFORE[t] != DEFAULTS[t] else "default"))
    by_key = {(r["model"], r["target"], r["placement"]): r for r in rows}
    lines = ["| model | all-CPU us | " + " | ".join(f"{t} {p} ({when})" for t, p, when in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for model in dict.fromkeys(r["model"] for r in rows):
        first = next(r for r in rows if r["model"] == model)
        cells = [cell(by_key[(model, t, p)]) if (model, t, p) in by_key else "-" for t, p, _ in columns]
        lines.append(f"| {model} | {first['all_cpu_us']:.3g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
