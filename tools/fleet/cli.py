"""``fxopt fleet FILE``: the command line of :func:`fxopt.tools.fleet.fleet` (docs/fleet.md).

Exit codes: 0 when every model compiled (or was kept / taken from the cache), 1 when any model failed (each
failure one line; the others still ran), 2 for a bad fleet file or bad arguments (nothing ran).
"""
from __future__ import annotations

# local imports: commands import torch and the compiler only when they run, so `fxopt --help` and argument errors answer without them (startup cost)
import argparse
import json
import os

__all__ = ["register", "cmd_fleet"]


def register(add) -> None:
    """Add the ``fleet`` subcommand to the ``fxopt`` CLI (``add`` is tools.cli's sub-parser factory)."""
    p = add("fleet", "compile many models as jobs (a process pool, Ray, or a Kubernetes Job), with a cache",
            "Read FILE (TOML: [[model]] entries with model, backend, passes, group, ...; docs/fleet.md) and "
            "compile every model into --out/<name> as its own job: capture, the pipeline verified, compile, "
            "check, save. Models of one group share one weight store. A content-addressed cache (--cache) "
            "skips models compiled before; a re-run keeps finished artifacts. Exit 1 when any model failed.")
    p.add_argument("file", metavar="FILE", help="the fleet file (TOML)")
    p.add_argument("--out", metavar="DIR", default="fleet-out", help="where the artifacts go (default: fleet-out)")
    p.add_argument("--cache", metavar="DIR", default="",
                   help="the shared cache directory (default: OUT/.cache); every worker must see it")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    engine = p.add_mutually_exclusive_group()
    engine.add_argument("--ray", metavar="ADDRESS", nargs="?", const="auto",
                        help="run each unit as a Ray task: 'auto' (the cluster this machine is in, the default "
                             "when the flag has no value), an address (ray://host:10001), or 'local' (start a "
                             "Ray instance here)")
    engine.add_argument("--serial", action="store_true", help="run the units one after another in this process")
    engine.add_argument("--emit", choices=["k8s"],
                        help="write a Kubernetes indexed Job (OUT/fleet-job.json) that runs the fleet, instead "
                             "of running it")
    p.add_argument("--workers", metavar="N", type=int, help="process-pool size (default: the CPU count)")
    p.add_argument("--index", metavar="I", action="append", type=int,
                   help="run only unit I (0-based, file order; a group is one unit); repeatable")
    p.add_argument("--json", metavar="FILE", help="also write the result rows as JSON (for CI)")
    p.add_argument("--image", default="fxopt:latest", help="with --emit k8s: the container image with fxopt")
    p.add_argument("--k8s-claim", default="fxopt-fleet",
                   help="with --emit k8s: the ReadWriteMany PersistentVolumeClaim holding FILE, OUT and the "
                        "cache (mounted at /fleet)")
    p.set_defaults(handler=cmd_fleet)


def cmd_fleet(args: argparse.Namespace) -> int:
    """``fxopt fleet``: run (or emit) the fleet, print one table row per model; returns 0, or 1 on failures."""
    from rich.table import Table
    from rich.text import Text

    from fxopt.errors import InputError
    from fxopt.tools import report
    from fxopt.tools.cli import _display_path, _stdout_console
    from fxopt.tools.fleet import fleet, read_fleet, summary
    from fxopt.tools.fleet.k8s import MOUNT, write_job

    spec = read_fleet(args.file)
    console = _stdout_console()
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers {args.workers}: give at least 1")
    if args.emit == "k8s":
        path = write_job(spec, os.path.join(args.out, "fleet-job.json"),
                         fleet_file=f"{MOUNT}/{os.path.basename(args.file)}", out=f"{MOUNT}/out",
                         cache=f"{MOUNT}/cache", image=args.image, claim=args.k8s_claim)
        pods = json.load(open(path, encoding="utf-8"))["spec"]["completions"]
        console.print(Text(f"wrote {_display_path(path)}: an indexed Job of {pods} pod(s) for {len(spec.models)} "
                           f"model(s); copy "
                           f"{os.path.basename(args.file)} (and model files) into the claim '{args.k8s_claim}', "
                           f"then `kubectl apply -f {os.path.basename(path)}`"), soft_wrap=True)
        return 0
    engine = "ray" if args.ray else "serial" if args.serial else "pool"
    rows = fleet(spec, args.out, cache=None if args.no_cache else args.cache, engine=engine,
                 workers=args.workers, ray_address=args.ray, only=args.index)
    table = Table(title=f"fxopt fleet {args.file} ({engine})", title_justify="left")
    for column, justify in (("model", "left"), ("status", "left"), ("cache", "left"), ("seconds", "right"),
                            ("nodes", "right"), ("weights", "right"), ("shared", "right"), ("artifact", "left")):
        table.add_column(column, justify=justify, no_wrap=column not in ("artifact",))
    for r in rows:
        seconds = sum(r["seconds"].values())
        nodes = (f"{r['nodes_before']} → {r['nodes_after']}" if r["nodes_after"] is not None
                 else str(r["nodes_before"] or "-"))
        weights = (f"{report.human(r['weight_bytes_before'], 'B')} → {report.human(r['weight_bytes_after'], 'B')}"
                   if r["weight_bytes_after"] is not None else "-")
        table.add_row(r["model"], r["status"], r["cache"], f"{seconds:.1f}" if r["seconds"] else "-", nodes, weights,
                      report.human(r["shared_bytes"], "B") if r["shared_bytes"] else "-",
                      _display_path(r["path"]) if r["path"] and r["status"] != "failed" else "-")
    console.print(table)
    for r in rows:
        if r["status"] == "failed":
            console.print(Text(f"failed: {r['model']} ({r['spec']}): {r['error']}"), soft_wrap=True)
    counts = summary(rows)
    console.print(Text(f"{counts['ok'] + counts['kept']} of {counts['models']} model(s) compiled ({counts['kept']} "
                       f"kept from a previous run), {counts['failed']} failed; cache: {counts['cache_hits']} "
                       f"hit(s), {counts['cache_misses']} miss(es)"), soft_wrap=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"summary": counts, "models": rows}, f, indent=1)
    return 1 if counts["failed"] else 0
