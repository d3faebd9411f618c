"""``split`` vs torch.fx's CapabilityBasedPartitioner and ``_SplitterBase`` on synthetic branched graphs.

``python -m benchmarks.split [--quick] [--sizes 1000,5000] [--timeout 25]``

Graphs: :func:`benchmarks.split_graphs.branched_program` (matmuls with shared weights, elementwise ops
reading recent values, ~20% ``aten.special_bessel_j0`` that no target supports, scattered). Every method gets the same
support set (the XLA table: everything but special_bessel_j0) and runs in its own subprocess with a time limit, so a
slow or memory-hungry anchor is reported as ``timeout`` instead of stalling the run; a method that timed out
is skipped at larger sizes. Measured per method, with one definition for all:

- seconds: the partitioning call (split: the whole pass; anchors: ``propose_partitions`` + ``fuse_partitions``,
  ``_SplitterBase`` construction (incl. its ShapeProp) + ``__call__``);
- acc parts: accelerator partitions;
- edges cut: data edges between call_function nodes in different units (an accelerator partition, or the host);
- transfers: host <-> accelerator copies: tensor values an accelerator partition reads from the host (graph
  inputs, CPU ops) + values the host (CPU ops, graph output) reads from an accelerator partition, one per
  (value, reading unit);
- peak MB: peak RSS of the subprocess above its RSS after building the graph.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import time

METHODS = ("split-cost", "split-support", "capability", "splitter")
_TARGET = "xla"


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _metrics(graph, unit_of: dict) -> dict:
    """Uniform metrics from ``unit_of``: call_function node name -> accelerator partition id (anything not
    in it runs on the host)."""
    import torch

    edges_cut = transfers = 0
    seen: set = set()
    for node in graph.nodes:
        if node.op not in ("call_function", "output"):
            continue
        reader = unit_of.get(node.name, "host") if node.op == "call_function" else "host"
        for a in node.all_input_nodes:
            if a.op == "get_attr":
                continue
            src = unit_of.get(a.name, "host") if a.op == "call_function" else "host"
            if src == reader:
                continue
            if a.op == "call_function" and node.op == "call_function":
                edges_cut += 1
            if (src == "host") != (reader == "host") and isinstance(a.meta.get("val"), torch.Tensor):
                if (a.name, reader) not in seen:
                    seen.add((a.name, reader))
                    transfers += 1
    return {"acc_parts": len(set(unit_of.values())), "edges_cut": edges_cut, "transfers": transfers}


def _child(method: str, nodes: int, out_path: str, timeout: float) -> None:
    """Run one method on one graph size and write its result as JSON (subprocess entry point)."""
    import warnings

    warnings.filterwarnings("ignore")
    import torch

    from benchmarks.split_graphs import branched_program
    from fxopt.ir.targets import support_table

    program = branched_program(nodes, annotate=method.startswith("split-"))  # only split reads costs
    gm, table = program.graph_module, support_table(_TARGET)
    result: dict = {"method": method, "nodes": nodes}

    def give_up(signum, frame):
        with open(out_path, "w") as f:
            json.dump(dict(result, status="timeout"), f)
        os._exit(3)

    signal.signal(signal.SIGALRM, give_up)
    if method in ("split-cost", "split-support"):
        from fxopt.passes.split import Split, partitions_region
        from fxopt.passes.split.placement import _scipy_flow

        _scipy_flow()  # import scipy before timing, as the anchors' modules are imported before theirs
        base = _rss_mb()
        signal.setitimer(signal.ITIMER_REAL, timeout)

        start = time.perf_counter()
        Split(target=_TARGET, policy=method.split("-")[1], min_ops=2).run(program)
        result["seconds"] = time.perf_counter() - start
        unit_of = {name: rec["name"] for rec in partitions_region(program)["partitions"]
                   if rec["device"] != "cpu" for name in rec["nodes"]}
    else:
        from torch.fx.passes.operator_support import OperatorSupportBase

        class Support(OperatorSupportBase):
            def is_node_supported(self, submodules, node) -> bool:
                return node.op == "call_function" and table.supports(node)

        names = {n: n.name for n in gm.graph.nodes}
        from torch.fx.passes.infra.partitioner import CapabilityBasedPartitioner
        from torch.fx.passes.splitter_base import _SplitterBase, _SplitterSettingBase

        base = _rss_mb()
        signal.setitimer(signal.ITIMER_REAL, timeout)
        if method == "capability":

            start = time.perf_counter()
            partitioner = CapabilityBasedPartitioner(gm, Support(), allows_single_node_partition=False)
            parts = partitioner.propose_partitions()
            unit_of = {names[n]: p.id for p in parts for n in p.nodes}
            partitioner.fuse_partitions(parts)
            result["seconds"] = time.perf_counter() - start
        else:
            start = time.perf_counter()
            saved_argv, sys.argv = sys.argv, sys.argv[:1]  # the settings parse sys.argv
            try:
                settings = _SplitterSettingBase(min_acc_module_size=2)
            finally:
                sys.argv = saved_argv
            splitter = _SplitterBase(gm, program.example_inputs, Support(), settings)
            import contextlib
            import io

            with contextlib.redirect_stdout(io.StringIO()):
                splitter()
            result["seconds"] = time.perf_counter() - start
            unit_of = {name: tag for name, tag in splitter.get_node_submodule_map().items() if "_acc_" in tag}
        signal.setitimer(signal.ITIMER_REAL, 0)
        program = branched_program(nodes, annotate=False)  # the anchors rewrote gm: measure on a fresh copy of the graph
    signal.setitimer(signal.ITIMER_REAL, 0)
    result.update(_metrics(program.graph, unit_of))
    result["peak_mb"] = max(0.0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base)
    with open(out_path, "w") as f:
        json.dump(result, f)


def _run_one(method: str, nodes: int, timeout: float) -> dict:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
        cmd = [sys.executable, "-m", "benchmarks.split", "--child", method, str(nodes), out, str(timeout)]
        try:  # the child stops itself at `timeout`; this outer limit also covers building the graph
            proc = subprocess.run(cmd, env=env, cwd=root, timeout=timeout + 120, capture_output=True, text=True)
        except subprocess.TimeoutExpired:
            return {"method": method, "nodes": nodes, "status": "timeout"}
        if os.path.exists(out) and proc.returncode == 3:
            return {"method": method, "nodes": nodes, "status": "timeout"}
        if proc.returncode != 0 or not os.path.exists(out):
            last = (proc.stderr.strip().splitlines() or ["?"])[-1]
            status = "out of memory" if proc.returncode in (-9, 137) else f"failed: {last[:80]}"
            return {"method": method, "nodes": nodes, "status": status}
        with open(out) as f:
            result = json.load(f)
    result["status"] = "ok" if result["seconds"] <= timeout else "timeout"
    return result


def main(argv=None) -> list[dict]:
    """Run the comparison and print one table; returns the rows (dicts)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1k and 5k nodes, 15 s limit per run")
    parser.add_argument("--sizes", default=None, help="comma-separated node counts (default 1000,5000,20000,50000)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per method run (default 25)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child[0], int(args.child[1]), args.child[2], float(args.child[3]))
        return []
    sizes = [int(s) for s in (args.sizes or ("1000,5000" if args.quick else "1000,5000,20000,50000")).split(",")]
    timeout = args.timeout or (15.0 if args.quick else 25.0)
    rows, gave_up = [], {}
    print(f"split vs torch.fx partitioners (support: {_TARGET} table, ~20% unsupported; limit {timeout:.0f} s/run)")
    print(f"{'nodes':>6} {'method':<14} {'seconds':>8} {'acc parts':>9} {'edges cut':>9} {'transfers':>9} "
          f"{'peak MB':>8}  status")
    for n in sizes:
        for method in METHODS:
            if method in gave_up:
                row = {"method": method, "nodes": n, "status": f"skipped ({gave_up[method]} at smaller size)"}
            else:
                row = _run_one(method, n, timeout)
                if row["status"] != "ok":
                    gave_up[method] = row["status"]
            rows.append(row)
            if row.get("seconds") is not None and row["status"] == "ok":
                print(f"{n:>6} {method:<14} {row['seconds']:>8.2f} {row['acc_parts']:>9} {row['edges_cut']:>9} "
                      f"{row['transfers']:>9} {row['peak_mb']:>8.0f}  ok", flush=True)
            else:
                print(f"{n:>6} {method:<14} {'-':>8} {'-':>9} {'-':>9} {'-':>9} {'-':>8}  {row['status']}", flush=True)
    for n in sizes:
        ours = next((r for r in rows if r["nodes"] == n and r["method"] == "split-cost" and r["status"] == "ok"), None)
        others = [r for r in rows if r["nodes"] == n and r["method"] in ("capability", "splitter")
                  and r["status"] == "ok"]
        if ours and others:
            best = min(others, key=lambda r: r["transfers"])
            print(f"{n:>6}: split-cost {ours['transfers']} transfers vs best anchor {best['method']} "
                  f"{best['transfers']}; {best['seconds'] / max(ours['seconds'], 1e-9):.1f}x the anchor's speed")
    return rows


if __name__ == "__main__":
    main()
