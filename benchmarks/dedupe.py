"""`dedupe` on the zoo: weight bytes and node counts before/after, per model, plus the two-tower anchor and
several models deployed together through one shared weight store.

Columns: ``bytes`` before -> after the pass (unique weight bytes), ``<=1KiB`` what a dedupe that only merges
tensors of at most 1 KiB would keep (onnxscript's optimizer rule), tensors merged, CSE and copy nodes
removed, nodes before -> after, pass seconds. ``python -m benchmarks.dedupe [--quick]``: the full run uses
the default-size moderation, ranking and resnet50 models (ocr always runs small, after ``unroll``, which
turns its decode loop into step graphs: the default's 75 steps take minutes); ``--quick`` uses the small
variants of all. Node counts cover every graph of a program (root and submodules).

Headline: the anchor's bytes (exact dedupe vs the 1 KiB rule) and the bytes saved across models.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings

import torch

import fxopt
from fxopt.backends.shared_store import load_many, save_many
from fxopt.passes.dedupe import Dedupe, graph_views, optimize_many
from fxopt.ir.tensor_identity import content_key, identity_key, tensor_bytes
from tests.conftest import TwinTowers

SMALL_TENSOR = 1024


def small_only_bytes(program) -> int:
    """Unique weight bytes when only tensors of at most 1 KiB are merged (larger ones always kept)."""
    seen, total = set(), 0
    views = graph_views(program)
    for t in {identity_key(t): t for v in views for t in v.parameters().values()}.values():
        nbytes = tensor_bytes(t)
        if nbytes <= SMALL_TENSOR:
            key = content_key(t)
            if key in seen:
                continue
            seen.add(key)
        total += nbytes
    return total


def _row(name: str, model, inputs, before: str = "") -> dict:
    program = fxopt.capture(model, inputs)
    if before:
        program = fxopt.optimize(program, before, verify=False)
    work = program.copy()
    start = time.perf_counter()
    result = Dedupe().run(work)
    seconds = time.perf_counter() - start
    work.dirty = True
    d = result.details
    ok = True
    with torch.no_grad():
        for got, want in zip(work.run_flat(work.flat_example_inputs()),
                             program.run_flat(program.flat_example_inputs())):
            ok &= torch.allclose(got.double(), want.double(), rtol=1e-4, atol=1e-5)
    return {"model": name, "bytes_before": d["weight_bytes_before"], "bytes_after": d["weight_bytes_after"],
            "small_only": small_only_bytes(program), "tensors_merged": d["tensors_merged"],
            "cse": d["cse_nodes_removed"], "copies": d["copies_removed"], "nodes_before": d["nodes_before"],
            "nodes_after": d["nodes_after"], "seconds": seconds, "numerics_ok": bool(ok)}


def _across(small: bool) -> dict:
    """Two moderation deployments (same pretrained towers, different task heads) through optimize_many and
    one shared store; returns bytes before/after, store bytes, shared data pointers after loading."""
    model_a, inputs = fxopt.zoo.get("moderation", small=small, seed=0)
    model_b, _ = fxopt.zoo.get("moderation", small=small, seed=0)
    with torch.random.fork_rng():
        torch.manual_seed(7)
        for head in model_b.task_heads.values():
            head.reset_parameters()
    programs = [fxopt.capture(model_a, inputs), fxopt.capture(model_b, inputs)]
    results = optimize_many(programs, "dedupe")
    with tempfile.TemporaryDirectory() as tmp:
        info = save_many([fxopt.compile(p) for p in results], os.path.join(tmp, "store"), names=["a", "b"])
        file_bytes = os.path.getsize(os.path.join(tmp, "store", "weights.safetensors"))
        loaded = load_many(os.path.join(tmp, "store"))
        ptrs = [{t.data_ptr() for t in c.graph_module.state_dict().values()} for c in loaded.values()]
        ok = all(torch.equal(g, w) for g, w in zip(loaded["b"](*inputs), model_b(*inputs)))
    return {**results.details, "store_bytes": info["store_bytes"], "separate_bytes": info["separate_bytes"],
            "store_file_bytes": file_bytes, "shared_after_load": len(ptrs[0] & ptrs[1]), "numerics_ok": ok}


def run(small: bool = False) -> dict:
    """Measure the anchor, every zoo model and the across-models case; returns ``{"rows", "across"}``."""
    torch.manual_seed(0)
    rows = [_row("two towers", TwinTowers().eval(), (torch.randn(2, 242), torch.randn(2, 242)))]
    for name in ("moderation", "ocr", "ranking", "resnet50"):
        model, inputs = fxopt.zoo.get(name, small=small or name == "ocr")
        label = name + (" (small)" if small or name == "ocr" else "") + (" +unroll" if name == "ocr" else "")
        rows.append(_row(label, model, inputs, before="unroll" if name == "ocr" else ""))
    return {"rows": rows, "across": _across(small)}


def main(argv=None) -> dict:
    """Print the table and the across-models figures; returns what :func:`run` returns."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small zoo variants only")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    result = run(small=args.quick)
    print("dedupe: unique weight bytes and nodes before -> after (numerics checked against the captured graph)")
    print(f"  {'model':<26} {'bytes before':>13} {'after':>12} {'<=1KiB rule':>12} {'merged':>6} "
          f"{'cse':>5} {'copies':>6} {'nodes':>13} {'pass s':>7} ok")
    for r in result["rows"]:
        print(f"  {r['model']:<26} {r['bytes_before']:>13,} {r['bytes_after']:>12,} {r['small_only']:>12,} "
              f"{r['tensors_merged']:>6} {r['cse']:>5} {r['copies']:>6} "
              f"{r['nodes_before']:>6}->{r['nodes_after']:<6} {r['seconds']:>7.2f} {r['numerics_ok']}")
    a = result["across"]
    print("across models (two moderation deployments, same towers, own heads; optimize_many + save_many):")
    print(f"  weight bytes {a['weight_bytes_before']:,} -> {a['weight_bytes_after']:,} "
          f"(saved {a['weight_bytes_saved']:,}); store holds {a['store_bytes']:,} bytes "
          f"(file {a['store_file_bytes']:,}) vs {a['separate_bytes']:,} in separate artifacts; "
          f"{a['shared_after_load']} tensors share memory after load_many; numerics ok: {a['numerics_ok']}")
    return result


if __name__ == "__main__":
    main()
