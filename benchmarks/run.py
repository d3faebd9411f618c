"""Run every benchmark and print each one's headline ratio: ``python -m benchmarks.run``.

Benchmarks print ratios measured side by side in one run (these machines are noisy: seconds are not
comparable across runs, ratios are). Add a benchmark as a module with ``main(argv) -> result`` and list it here.
"""
from __future__ import annotations

import argparse
import warnings

from benchmarks import pass_manager, zoo_reference


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
    print("\nheadlines:")
    for line in headlines:
        print("  " + line)


if __name__ == "__main__":
    main()
