"""The ``fxopt bench`` subcommand: its arguments and handler (:mod:`fxopt.tools.bench` does the work).

Apart from bench itself so that registering the command with the CLI imports no torch.
"""
from __future__ import annotations

# local imports: the handler imports bench (and torch) only when it runs, so `fxopt --help` answers without them
import argparse
import os
from typing import Callable

from fxopt.errors import InputError


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add the ``bench`` subcommand to the ``fxopt`` CLI (``add`` as in tools/cli.py's COMMAND_MODULES)."""
    from fxopt.tools.cli import add_model_input_arguments
    p = add("bench", "time eager vs torch.compile vs fxopt artifacts: p50/p99, throughput, memory",
            "Time the original model (eager), torch.compile and fxopt-compiled artifacts side by side at "
            "each batch size (warm-up excluded, interleaved repetitions). Prints a table and writes "
            "bench.json, throughput.png and latency.png.")
    p.add_argument("model", metavar="MODEL_or_OUT_DIR",
                   help="zoo:NAME, a .pt2 or .onnx file, file.py:Attr, module:Attr, or an artifact directory")
    p.add_argument("--batch", metavar="B,B,...", default=None,
                   help="batch sizes (default: 64,256,1024 for a model, the artifact's batch for an artifact)")
    p.add_argument("--against", metavar="NAMES", default="eager,compile",
                   help="baselines: eager, compile, or none (default: eager,compile)")
    p.add_argument("--backend", metavar="NAMES", default="reference",
                   help="fxopt backends to compile with, comma-separated (default: reference); ignored for "
                        "an artifact directory")
    p.add_argument("--passes", metavar="SPEC", default=None,
                   help="pass pipeline for every backend (default: each backend's default pipeline)")
    p.add_argument("--reps", metavar="N", type=int, default=20, help="timed calls per system (default 20)")
    p.add_argument("--warmup", metavar="N", type=int, default=3, help="untimed calls first (default 3)")
    p.add_argument("--price-per-hour", metavar="SYS=PRICE,...", default=None,
                   help="machine price per hour per system (eager, compile, a backend name), "
                        "e.g. eager=0.1,xla=0.5: adds cost per million inferences")
    add_model_input_arguments(p)
    p.add_argument("--no-memory", action="store_true", help="skip the per-call memory measurement")
    p.add_argument("--no-charts", action="store_true", help="write bench.json only")
    p.add_argument("-o", "--output", metavar="DIR", default=None,
                   help="where bench.json and the charts go (default: out/bench/<model name>)")
    p.set_defaults(handler=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    """``fxopt bench``: run :func:`bench` from parsed arguments, print the table, notes and unavailable
    systems, write bench.json and charts. Returns 0 (InputError -> exit 2 through the CLI)."""
    from rich.text import Text

    from fxopt.tools.bench import AGAINST, bench, parse_batches, parse_names, parse_prices, results_table, \
        write_outputs
    from fxopt.tools.cli import _display_path, _stdout_console, default_output_dir, model_request
    from fxopt.tools.progress import Progress

    batches = parse_batches(args.batch) if args.batch is not None else None
    against = parse_names(args.against, "--against", AGAINST)
    backends = parse_names(args.backend, "--backend")
    prices = parse_prices(args.price_per_hour)
    is_dir = os.path.isdir(args.model)
    spec, inputs = (args.model, None) if is_dir else model_request(args)
    out = args.output or os.path.join("out", "bench", os.path.basename(default_output_dir(
        os.path.basename(os.path.abspath(args.model)) if is_dir else args.model)))
    console = _stdout_console()
    with Progress() as progress:
        result = bench(spec, batches, against, backends, example_inputs=inputs, warmup=args.warmup,
                       reps=args.reps, prices=prices, memory=not args.no_memory, passes=args.passes,
                       log=progress.update)
    console.print(results_table(result))
    for line in result.unavailable:
        console.print(Text(line), soft_wrap=True)
    for line in result.notes:
        console.print(Text("note: " + line), soft_wrap=True)
    if not result.rows:
        raise InputError(f"{args.model}: no system could run; see the lines above")
    paths, chart_notes = write_outputs(result, out, charts=not args.no_charts)
    for line in chart_notes:
        console.print(Text(line))
    console.print(Text("wrote " + ", ".join(_display_path(p) for p in paths)), soft_wrap=True)
    return 0
