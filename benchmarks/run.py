"""Run every benchmark and print each one's headline ratio: ``python -m benchmarks.run``.

Benchmarks print ratios measured side by side in one run (these machines are noisy: seconds are not
comparable across runs, ratios are). Add a benchmark as a module with ``main(argv) -> result`` and list it here.
"""
from __future__ import annotations

import argparse
import warnings

from benchmarks import dedupe, pass_manager, zoo_reference


def main(argv=None) -> None:
    """Run all benchmarks (``--quick`` shrinks them for a smoke run)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, few repetitions")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    headlines = []
    r = pass_manager.main(["--nodes", "5000" if args.quick else "50000", "--repeat", "1" if args.quick else "3"])
    headlines.append(f"pass_manager: 10 no-op passes = {r['ratio_vs_recompile']:.2f}x one recompile; "
                     f"{r['speedup_vs_fx']:.1f}x faster than torch.fx PassManager")
    print()
    rows = zoo_reference.main(["--repeat", "3" if args.quick else "10"] + (["--small"] if args.quick else []))
    headlines.append("zoo_reference: eager/fxopt latency " +
                     ", ".join(f"{r['model']} {r['speedup']:.2f}x" for r in rows))
    print()
    from benchmarks import runtime
    rt = runtime.main(["--quick"] if args.quick else [])
    headlines.append("runtime: writing dead buffers in place vs the op binding alone: " +
                     ", ".join(f"{r['graph']} {r['in_place_vs_bound']:.2f}x" for r in rt))
    print()
    from benchmarks import moe
    rows = moe.main(["--quick"] if args.quick else [])
    key = next(r for r in rows if (r["E"], r["batch"], r["mode"]) == (16, 256, "top1"))
    headlines.append(f"moe: E=16 B=256 top-1 fxopt {key['speedup_vs_eager']:.2f}x eager, "
                     f"{key.get('speedup_vs_compile', float('nan')):.2f}x torch.compile")
    print()
    d = dedupe.main(["--quick"] if args.quick else [])
    anchor, across = d["rows"][0], d["across"]
    headlines.append(f"dedupe: two towers {anchor['bytes_before']:,} -> {anchor['bytes_after']:,} bytes "
                     f"(1 KiB rule: {anchor['small_only']:,}); across models "
                     f"{across['weight_bytes_before']:,} -> {across['weight_bytes_after']:,} bytes")
    print()
    from benchmarks import unroll
    u = {r["variant"]: r for r in unroll.main(["--quick"] if args.quick else [])[-1]["rows"]}
    headlines.append("unroll: zoo:ocr vs compiled step loop: " + ", ".join(
        f"{k} {v['speedup_vs_step_loop']:.2f}x" for k, v in u.items() if k.startswith(("partitions", "full"))))
    print()
    from benchmarks import unroll_hop
    hop = unroll_hop.main(["--quick"] if args.quick else [])
    headlines.append("unroll (scan/while_loop in the graph): " + "; ".join(
        f"{r['variant']} {r['speedup']:.2f}x" for res in hop for r in res["rows"][1:]))
    print()
    from benchmarks import split
    s = [r for r in split.main(["--quick"] if args.quick else []) if r["status"] == "ok"]
    big = max((r for r in s if r["method"] == "split-cost"), key=lambda r: r["nodes"])
    headlines.append(f"split: {big['nodes']} nodes placed+partitioned in {big['seconds']:.2f} s, "
                     f"{big['transfers']} transfers; anchors: " + ", ".join(
                         f"{r['method']}@{r['nodes']} {r['seconds']:.1f} s/{r['transfers']}" for r in s
                         if r["method"] in ("capability", "splitter")))
    print()
    from benchmarks import headroom
    h = headroom.main(["--quick"] if args.quick else [])
    top = max(h["rows"], key=lambda r: r["eager_fraction"])
    headlines.append(f"headroom: eager peaks at {top['eager_fraction']:.0%} of matmul peak "
                     f"({h['peak_gflops']:.0f} GFLOP/s) at d={top['d']}; xla " + (
                         h["xla_note"] or ", ".join(f"d={r['d']} " + (f"{r['xla_fraction']:.0%}" if r["xla_fraction"] is not None
                                                        else "n/a") for r in h["rows"])))
    print()
    try:
        from benchmarks import xla
    except ImportError as exc:
        headlines.append(f"xla: skipped (benchmarks.xla not importable: {exc})")
    else:
        x = xla.main(["--quick"] if args.quick else [])
        x = x if isinstance(x, dict) else {}
        speedup = x.get("speedup_b512")
        headlines.append(f"xla: {x['headline']}" if x.get("headline") else
                         f"xla: zoo:ranking batch 512 xla {speedup:.2f}x eager" if speedup is not None else
                         "xla: see its table above")
    print()
    from benchmarks import cli_startup
    c = {r["command"]: r for r in cli_startup.main(["--runs", "3" if args.quick else "10"])}
    headlines.append(f"cli_startup: fxopt --help {c['fxopt --help']['median_s']:.2f} s, a typo "
                     f"{c['fxopt rnu (typo)']['median_s']:.2f} s (goal < 1 s)")
    print()
    from benchmarks import compile_backend
    rows = compile_backend.main(["--quick"] if args.quick else [])
    key = next(r for r in rows if r["workload"] == "ranking b256" and r["system"] == "fxopt-xla")
    headlines.append(f"compile_backend: ranking b256 torch.compile(backend=fxopt, xla) {key['vs_inductor']:.2f}x "
                     f"inductor, {key['vs_eager']:.2f}x eager (goal >= 1x inductor)")
    print("\nheadlines:")
    for line in headlines:
        print("  " + line)


if __name__ == "__main__":
    main()
