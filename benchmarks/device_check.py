"""The device check behind ``benchmarks/device_check.sh``: eager vs torch.compile vs fxopt-xla on one device.

    python -m benchmarks.device_check --device cuda --out out/device_check     # what the .sh runs on a GPU
    python -m benchmarks.device_check --device cpu --quick                     # the same code path, here

Models: zoo:ranking and zoo:resnet50 (the zoo's sizes; ``--quick``: small variants), a Hugging Face BERT
encoder and a Mixtral-style MoE built from tiny configs in code (random weights, no download; skipped with a
line when transformers is missing). Batches 1, 64, 256 (``--quick``: 1 and 8). Systems on ``--device``:

- ``eager``: the model moved to the device;
- ``torch.compile``: inductor on the device;
- ``fxopt-xla``: ``fxopt.export(..., backend="xla")`` of the CPU model (its "first call" includes the export:
  capture, verified passes, XLA compile and the check) with the whole graph in XLA (no
  ``split``: a CPU partition would hold CPU weights next to device inputs), run by JAX on its default
  device with the inputs on ``--device``; where the graph has ops XLA does not lower, the default pipeline
  (with ``split``) is tried and the cell says so.

Each cell: p50 latency over interleaved rounds (device synchronised after each call), ratio to eager and to
torch.compile, and the max abs error against eager PyTorch on the CPU. A system that cannot run is a cell with
its one-line reason; the rest still run. Writes ``device_check.json`` and ``device_check.md`` into ``--out``.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
import warnings
from typing import Any, Callable

import torch

import fxopt
from fxopt.tools.bench_systems import resize_batch

WHOLE_GRAPH = "canonicalize,fold-constants,dedupe,moe,dce"
SYSTEMS = ("eager", "torch.compile", "fxopt-xla")


def models(quick: bool) -> dict[str, Callable[[], tuple[torch.nn.Module, tuple]]]:
    """Builders of the check's models, by name."""
    def zoo(name):
        return lambda: fxopt.zoo.get(name, small=quick)

    def bert():
        from transformers import BertConfig, BertModel
        torch.manual_seed(0)
        cfg = BertConfig(vocab_size=1000, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=256, max_position_embeddings=128)
        return BertModel(cfg).eval(), (torch.randint(0, 1000, (2, 64), generator=torch.Generator().manual_seed(0)),)

    def mixtral():
        from transformers import MixtralConfig, MixtralModel
        torch.manual_seed(0)
        cfg = MixtralConfig(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
                            num_experts_per_tok=2, max_position_embeddings=128, use_cache=False)
        return MixtralModel(cfg).eval(), (torch.randint(0, 1000, (2, 32), generator=torch.Generator().manual_seed(0)),)

    # cheapest to compile first, so a run cut short by its time bound still has most of the table
    return {"ranking": zoo("ranking"), "bert": bert, "mixtral-moe": mixtral, "resnet50": zoo("resnet50")}


def _to(value: Any, device: str) -> Any:
    return torch.utils._pytree.tree_map(lambda t: t.to(device) if isinstance(t, torch.Tensor) else t, value)


def _first(out: Any) -> torch.Tensor:
    leaves = torch.utils._pytree.tree_flatten(out)[0]
    return next(x for x in leaves if isinstance(x, torch.Tensor)).detach().float().cpu()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}"


def build_systems(model: torch.nn.Module, inputs: tuple, device: str) -> tuple[dict, dict]:
    """``({system: callable}, {system: note or error})`` for one model at one batch."""
    fns, notes = {}, {}
    on_device = copy.deepcopy(model).to(device).eval()
    fns["eager"] = on_device
    try:
        fns["torch.compile"] = torch.compile(copy.deepcopy(model).to(device).eval(), dynamic=False)
    except Exception as exc:  # noqa: BLE001 - one cell
        notes["torch.compile"] = _one_line(exc)
    t0 = time.perf_counter()
    try:
        compiled, _ = fxopt.export(model, inputs, backend="xla", passes=WHOLE_GRAPH)
        notes["fxopt-xla"] = "whole graph in XLA"
    except fxopt.FxoptError as exc:
        try:
            compiled, _ = fxopt.export(model, inputs, backend="xla")
            notes["fxopt-xla"] = f"with split (the whole graph does not lower: {exc})"[:200]
        except Exception as exc2:  # noqa: BLE001 - one cell
            compiled, notes["fxopt-xla"] = None, _one_line(exc2)
    if compiled is not None:
        fns["fxopt-xla"] = compiled
        notes["_export_s"] = time.perf_counter() - t0   # fxopt compiles (and checks) before its first call
    return fns, notes


def measure(name: str, model: torch.nn.Module, inputs: tuple, device: str, rounds: int) -> list[dict]:
    """One row per system for ``model`` on ``inputs`` (CPU tensors)."""
    with torch.no_grad():
        want = _first(model(*inputs))
        fns, notes = build_systems(model, inputs, device)
        dev_inputs = _to(inputs, device)
        first, errors, samples = {}, {}, {}
        for system, fn in list(fns.items()):
            try:
                t0 = time.perf_counter()
                out = fn(*dev_inputs)
                _sync(device)
                first[system] = time.perf_counter() - t0 + (notes.get("_export_s", 0.0) if system == "fxopt-xla" else 0.0)
                errors[system] = float((_first(out) - want).abs().max())
                samples[system] = []
            except Exception as exc:  # noqa: BLE001 - one cell
                notes[system] = _one_line(exc)
                del fns[system]
        for _ in range(rounds):
            for system, fn in fns.items():
                t0 = time.perf_counter()
                fn(*dev_inputs)
                _sync(device)
                samples[system].append(time.perf_counter() - t0)
    p50 = {s: statistics.median(v) for s, v in samples.items() if v}
    rows = []
    for system in SYSTEMS:
        row = {"model": name, "batch": int(_first(inputs).shape[0]) if inputs else 0, "system": system,
               "note": notes.get(system, "")}
        if system in p50:
            row.update(p50_ms=p50[system] * 1e3, first_call_s=first[system], max_error=errors[system],
                       vs_eager=p50["eager"] / p50[system] if "eager" in p50 else None,
                       vs_compile=p50["torch.compile"] / p50[system] if "torch.compile" in p50 else None)
        rows.append(row)
    return rows


def markdown(rows: list[dict], header: str) -> str:
    """The table as markdown."""
    lines = [header, "", "| model | batch | system | p50 | vs eager | vs torch.compile | max error | first call | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "p50_ms" in r:
            ratio = lambda v: f"{v:.2f}x" if v else "-"  # noqa: E731
            lines.append(f"| {r['model']} | {r['batch']} | {r['system']} | {r['p50_ms']:.3f} ms | "
                         f"{ratio(r['vs_eager'])} | {ratio(r['vs_compile'])} | {r['max_error']:.2g} | "
                         f"{r['first_call_s']:.1f} s | {r['note']} |")
        else:
            lines.append(f"| {r['model']} | {r['batch']} | {r['system']} | not available | | | | | {r['note']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the check; writes device_check.json/.md into ``--out`` and returns the rows."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default="out/device_check")
    parser.add_argument("--quick", action="store_true", help="small models, batches 1 and 8, few rounds")
    parser.add_argument("--models", default=None, help="comma-separated subset of ranking,bert,mixtral-moe,resnet50")
    parser.add_argument("--budget-s", type=float, default=480.0,
                        help="start no new batch after this many seconds (its rows say so); default 480")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("device_check: this torch has no CUDA device (torch.cuda.is_available() is False); nothing to check")
        return []
    import jax  # the xla backend's dependency; fails here with its own message when missing

    builders = models(args.quick)
    names = args.models.split(",") if args.models else list(builders)
    batches = (1, 8) if args.quick else (1, 64, 256)
    rounds = 5 if args.quick else 20
    device_name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else platform.processor() or "cpu"
    header = (f"device_check {time.strftime('%Y-%m-%d')}: {device_name}; torch {torch.__version__}, "
              f"jax {jax.__version__} (default backend {jax.default_backend()}); float32 matmul precision "
              f"{torch.get_float32_matmul_precision()}, cudnn.allow_tf32 {torch.backends.cudnn.allow_tf32}")
    print(header, flush=True)
    start = time.perf_counter()
    rows: list[dict] = []
    for name in names:
        try:
            model, base = builders[name]()
        except Exception as exc:  # noqa: BLE001 - one row: a missing library, a model that does not build
            rows.append({"model": name, "batch": 0, "system": "-", "note": f"not built: {_one_line(exc)}"})
            write(rows, header, args.out)
            continue
        for batch in batches:
            if time.perf_counter() - start > args.budget_s:
                rows += [{"model": name, "batch": batch, "system": s,
                          "note": f"not run: the check's {args.budget_s:.0f} s bound was spent"} for s in SYSTEMS]
                continue
            try:
                got = measure(name, model, resize_batch(base, batch), args.device, rounds)
            except Exception as exc:  # noqa: BLE001 - one failing model must not lose the table
                got = [{"model": name, "batch": batch, "system": s, "note": _one_line(exc)} for s in SYSTEMS]
            rows += got
            print(markdown(got, "").strip(), flush=True)
            write(rows, header, args.out)   # after every cell group: a run stopped at its bound keeps its rows
    write(rows, header, args.out)
    print(f"wrote {args.out}/device_check.md and .json")
    return rows


def write(rows: list[dict], header: str, out: str) -> None:
    """Write ``device_check.json`` and ``device_check.md`` into ``out``."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "device_check.json"), "w", encoding="utf-8") as f:
        json.dump({"header": header, "rows": rows}, f, indent=1)
    with open(os.path.join(out, "device_check.md"), "w", encoding="utf-8") as f:
        f.write(markdown(rows, header))


if __name__ == "__main__":
    main()
