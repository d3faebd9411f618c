"""``fxopt bench``: the original model (eager), ``torch.compile`` and fxopt's artifacts, timed side by side.

    fxopt bench zoo:ranking --batch 64,256,1024 --against eager,compile --backend reference,xla
    fxopt bench out/ranking                      # an artifact written by `fxopt run`

For each batch size every system is built (setup time reported apart, never timed), checked against the
eager model's outputs, then timed interleaved (see :mod:`fxopt.tools.bench_measure` for what p50, p99,
throughput and memory mean). It prints a table, and writes ``bench.json`` plus PNG charts
(``throughput.png``, ``latency.png``) into the output directory. A system that is not registered or fails
to build is one "not available" line; the rest still run.

Model specs are captured once per batch size with static shapes (why: :mod:`fxopt.tools.bench_systems`).
An artifact directory is benched as saved: with a static batch it runs only at that batch (a line says so
when other batches were asked); eager / torch.compile are rebuilt from the manifest's ``source`` when it is
a model spec this process can resolve.
"""
from __future__ import annotations

# local imports: commands import torch and the compiler only when they run, so `fxopt --help` and argument errors answer without them (startup cost)
import datetime
import os
import platform
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from fxopt.errors import InputError
from fxopt.tools.bench_measure import (  # noqa: F401 - measure/Timing re-exported as the bench API
    Timing, measure, measure_side_by_side, peak_torch_memory)
from fxopt.tools.bench_systems import System

__all__ = ["BenchResult", "Timing", "bench", "measure", "measure_side_by_side", "parse_batches", "parse_names",
           "parse_prices", "price_for", "cost_per_million", "results_table", "write_outputs",
           "machine_info"]

BENCH_FORMAT = "fxopt-bench"
BENCH_VERSION = 1
DEFAULT_BATCHES = (64, 256, 1024)
AGAINST = ("eager", "compile")
MEMORY_METHOD = ("peak bytes of tensors allocated through PyTorch's CPU allocator during one call, above "
                 "what was live before it (torch.profiler memory events; weights and inputs excluded); "
                 "null when the runtime allocates outside PyTorch")


# ------------------------------------------------------------------------------------------ parsing
def parse_batches(text: str) -> list[int]:
    """``"64,256,1024"`` -> ``[64, 256, 1024]``; raises InputError (one line) unless every item is a
    positive integer."""
    items = [t.strip() for t in str(text).split(",")]
    out: list[int] = []
    for item in items:
        if not item.isdigit() or int(item) < 1:
            raise InputError(f"--batch: expected comma-separated positive integers like 64,256,1024, "
                             f"got {text!r}")
        if int(item) not in out:
            out.append(int(item))
    return out


def parse_names(text: str | None, option: str, allowed: Sequence[str] | None = None) -> list[str]:
    """A comma-separated list of names (empty text or ``none`` -> ``[]``); with ``allowed``, raises
    InputError naming ``option`` for any other name."""
    if text is None or text.strip().lower() in ("", "none"):
        return []
    names = [t.strip() for t in text.split(",") if t.strip()]
    if allowed is not None:
        for name in names:
            if name not in allowed:
                raise InputError(f"{option}: unknown system {name!r}; choose from {', '.join(allowed)} "
                                 "(or 'none')")
    return list(dict.fromkeys(names))


def parse_prices(text: str | None) -> dict[str, float]:
    """``"eager=0.1,xla=0.5"`` -> ``{"eager": 0.1, "xla": 0.5}`` (price per hour of the machine running
    that system); raises InputError (one line) on a malformed item."""
    prices: dict[str, float] = {}
    if not text:
        return prices
    for item in text.split(","):
        name, sep, value = item.partition("=")
        try:
            price = float(value)
        except ValueError:
            price = -1.0
        if not sep or not name.strip() or price < 0:
            raise InputError(f"--price-per-hour: expected SYSTEM=PRICE items like eager=0.1,xla=0.5, "
                             f"got {item!r}")
        prices[name.strip()] = price
    return prices


def price_for(system: str, prices: dict[str, float]) -> float | None:
    """The price per hour for ``system`` (``fxopt:xla`` also matches the key ``xla``), or None."""
    if system in prices:
        return prices[system]
    short = system.split(":", 1)[-1]
    return prices.get(short)


def cost_per_million(price_per_hour: float, throughput: float) -> float:
    """Cost of one million inferences at ``throughput`` inferences/s on a machine costing
    ``price_per_hour``."""
    return price_per_hour / 3600.0 / throughput * 1e6


# ------------------------------------------------------------------------------------------ result
@dataclass
class BenchResult:
    """What :func:`bench` measured: one row per (batch, system) with the figures, plus ``notes`` (what
    was done and how) and ``unavailable`` (one line per system that could not run). ``to_json()`` is the
    ``bench.json`` document."""

    model: str
    kind: str                      # "model" or "artifact"
    batches: list[int]
    systems: list[str]
    rows: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    def row(self, system: str, batch: int) -> dict | None:
        """The row for ``system`` at ``batch``, or None."""
        return next((r for r in self.rows if r["system"] == system and r["batch"] == batch), None)

    def to_json(self) -> dict:
        """``{"format": "fxopt-bench", "version", "model", "kind", "created", "machine", "settings",
        "batches", "systems", "results": [rows], "notes", "unavailable", "memory_method"}``."""
        return {"format": BENCH_FORMAT, "version": BENCH_VERSION, "model": self.model, "kind": self.kind,
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "machine": machine_info(), "settings": self.settings, "batches": self.batches,
                "systems": self.systems, "results": self.rows, "notes": self.notes,
                "unavailable": self.unavailable, "memory_method": MEMORY_METHOD}


def machine_info() -> dict:
    """Where the figures come from: CPU model, cores, torch threads, torch/python versions, platform."""
    import torch

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "load_average_1m": load_average()}


# ------------------------------------------------------------------------------------------ bench
def bench(model_spec: Any, batches: Sequence[int] | None = None, against: Sequence[str] = AGAINST,
          backends: Sequence[str] = ("reference",), *, example_inputs: Any = None, small: bool = False,
          warmup: int = 3, reps: int = 20, prices: dict[str, float] | None = None, memory: bool = True,
          passes: str | None = None, clock: Callable[[], float] = time.perf_counter,
          log: Callable[[str], None] | None = None) -> BenchResult:
    """Bench a model (nn.Module, ``zoo:NAME``, ``file.py:Attr``, ``.pt2``; ``small`` picks a zoo model's
    small variant) or an artifact directory at each of ``batches`` (default 64, 256, 1024 for a model; the
    artifact's own batch for an artifact).

    ``against``: baselines among ``eager``, ``compile``; ``backends``: fxopt backends to compile with
    (after ``passes``, default each backend's default pipeline). ``warmup``/``reps``/``clock``: see
    :func:`measure_side_by_side`. ``prices``: price per hour per system (``eager``, ``compile``, backend
    name) for the cost-per-million column. ``log`` receives progress lines. Returns a :class:`BenchResult`;
    raises InputError for a model that cannot be resolved or bad arguments. The model is never modified."""
    log = log or (lambda _line: None)
    start_load = load_average()
    for name in against:
        if name not in AGAINST:
            raise InputError(f"--against: unknown system {name!r}; choose from {', '.join(AGAINST)}")
    if reps < 1 or warmup < 0:
        raise InputError(f"--reps must be >= 1 and --warmup >= 0 (got {reps}, {warmup})")
    settings = {"warmup": warmup, "reps": reps, "against": list(against), "backends": list(backends),
                "passes": passes, "interleaved": True,
                "throughput": "batch / mean latency of the timed calls",
                "percentiles": "linear interpolation between order statistics"}
    if isinstance(model_spec, (str, os.PathLike)) and os.path.isdir(model_spec):
        plan = _artifact_plan(os.fspath(model_spec), batches, against, log)
    else:
        plan = _model_plan(model_spec, example_inputs, small, batches, against, backends, passes, log)
    result = BenchResult(model=plan.name, kind=plan.kind, batches=plan.batches, systems=[],
                         notes=plan.notes, unavailable=plan.unavailable, settings=settings)
    settings["capture"] = plan.capture_text
    for batch in plan.batches:
        log(f"batch {batch}: building systems")
        inputs, systems, reference = plan.build(batch, result.unavailable)
        if not systems:
            continue
        log(f"batch {batch}: timing {', '.join(s.name for s in systems)} ({warmup} warm-up + {reps} reps)")
        timings = measure_side_by_side({s.name: s.fn for s in systems}, inputs, warmup=warmup, reps=reps,
                                       batch=batch, clock=clock)
        for system in systems:
            if system.name not in result.systems:
                result.systems.append(system.name)
            row = {"system": system.name, **timings[system.name].to_dict(), "setup_s": system.setup_s,
                   "notes": system.notes, "max_abs_error_vs_eager": reference.get(system.name)}
            row["peak_memory_bytes"] = peak_torch_memory(system.fn, inputs) if memory else None
            result.rows.append(row)
        _add_ratios(result, batch, prices or {})
        del systems, inputs
    result.notes += noise_warnings(start_load, load_average(), result.rows)
    return result


def load_average() -> float | None:
    """The 1-minute load average (None where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


# p99/p50 above this: the samples are too spread for their ratios to mean much
WIDE_SPREAD = 2.0


def noise_warnings(load_before: float | None, load_after: float | None, rows: Sequence[dict]) -> list[str]:
    """One-line warnings about figures that cannot be trusted: a 1-minute load average above the cores before
    or after the run (other work competed for them), and systems whose p99 is more than WIDE_SPREAD times
    their p50."""
    notes = []
    cores = os.cpu_count() or 1
    loads = [x for x in (load_before, load_after) if x is not None]
    if loads and max(loads) > cores:
        notes.append(f"warning: the load average was {max(loads):.1f} on {cores} cores: other work competed "
                     "for the CPU, so these figures (ratios included) do not hold on a quiet machine; rerun "
                     "when it is idle")
    wide = [f"{r['system']} at batch {r['batch']} ({r['p99_ms'] / r['p50_ms']:.1f}x)" for r in rows
            if r.get("p50_ms") and r.get("p99_ms") and r["p99_ms"] / r["p50_ms"] > WIDE_SPREAD]
    if wide:
        notes.append(f"warning: wide spread (p99 > {WIDE_SPREAD:g}x p50): {', '.join(wide[:4])}"
                     f"{f' and {len(wide) - 4} more' if len(wide) > 4 else ''}; more --reps or a quieter machine")
    return notes


def _add_ratios(result: BenchResult, batch: int, prices: dict[str, float]) -> None:
    rows = [r for r in result.rows if r["batch"] == batch]
    base = {r["system"]: r for r in rows}
    for r in rows:
        for other in AGAINST:
            b = base.get(other)
            r[f"speedup_vs_{other}"] = b["p50_ms"] / r["p50_ms"] if b and r["p50_ms"] > 0 else None
            r[f"throughput_vs_{other}"] = r["throughput"] / b["throughput"] if b and b["throughput"] else None
        price = price_for(r["system"], prices)
        r["price_per_hour"] = price
        r["cost_per_million"] = cost_per_million(price, r["throughput"]) if price is not None else None


@dataclass
class _Plan:
    """How to build the systems at a batch: ``build(batch, unavailable) -> (inputs, systems,
    {system: max abs error vs eager})``."""

    name: str
    kind: str
    batches: list[int]
    capture_text: str
    build: Callable[[int, list[str]], tuple[tuple, list[System], dict]]
    notes: list[str] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    text = text if len(text) <= 300 else text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _resolve(model_spec: Any, example_inputs: Any, small: bool) -> tuple[Any, tuple, str]:
    """The model, its example inputs and a display name."""
    import torch

    from fxopt.api import resolve_model

    if isinstance(model_spec, str) and model_spec.startswith("zoo:") and small and "{" not in model_spec:
        model_spec += "{small=true}"
    model, inputs, name = resolve_model(model_spec, example_inputs)
    if isinstance(model, torch.export.ExportedProgram):
        model = model.module()
    name = os.fspath(model_spec) if isinstance(model_spec, (str, os.PathLike)) else name
    if inputs is None:
        raise InputError(f"{name}: no example inputs; pass them (example_inputs=) or give the model an "
                         "example_inputs() method")
    inputs = inputs if isinstance(inputs, tuple) else (tuple(inputs) if isinstance(inputs, list) else (inputs,))
    return model, inputs, name


def _check(outputs_fn: Callable[..., Any], inputs: tuple, expected: list | None) -> float | None:
    from fxopt.tools.bench_systems import flat_outputs
    from fxopt.ir.numerics import max_abs_error

    if expected is None:
        return None
    import torch

    with torch.no_grad():
        return max_abs_error(expected, flat_outputs(outputs_fn(*inputs)))


def _model_plan(model_spec, example_inputs, small, batches, against, backends, passes, log) -> _Plan:
    import torch

    from fxopt.backends.base import backend_names
    from fxopt.tools import bench_systems as bs

    model, base_inputs, name = _resolve(model_spec, example_inputs, small)
    batches = list(batches or DEFAULT_BATCHES)
    unavailable: list[str] = []
    usable = []
    for backend in backends:
        if backend not in backend_names():
            unavailable.append(f"fxopt:{backend}: not available: no backend registered under that name "
                               f"(registered: {', '.join(backend_names())})")
        else:
            usable.append(backend)
    failed: set[str] = set()

    def build(batch: int, lines: list[str]):
        inputs = bs.resize_batch(base_inputs, batch)
        systems: list[System] = []
        errors: dict[str, float | None] = {}
        try:
            with torch.no_grad():
                expected = bs.flat_outputs(model(*inputs))
        except Exception as exc:  # noqa: BLE001 - the model itself cannot run at this batch
            raise InputError(f"{name}: the model fails on its inputs at batch {batch} "
                             f"(rows of the example inputs cycled): {_one_line(exc)}") from exc
        if "eager" in against:
            systems.append(bs.eager_system(model))
            errors["eager"] = 0.0
        if "compile" in against and "compile" not in failed:
            log(f"batch {batch}: torch.compile")
            try:
                system = bs.compile_system(model, inputs)
                errors["compile"] = _check(system.fn, inputs, expected)
                systems.append(system)
            except Exception as exc:  # noqa: BLE001 - one line, the rest runs
                failed.add("compile")
                lines.append(f"compile: not available: {_one_line(exc)}")
        todo = [b for b in usable if b not in failed]
        if todo:
            log(f"batch {batch}: fxopt capture")
            try:
                program, capture_s = bs.capture_program(model, inputs)
            except Exception as exc:  # noqa: BLE001
                failed.update(todo)
                lines.append(f"fxopt: capture failed at batch {batch}: {_one_line(exc)}")
                todo = []
            for backend in todo:
                log(f"batch {batch}: fxopt passes + {backend} backend")
                try:
                    system = bs.backend_system(program, backend, capture_s, passes)
                    errors[system.name] = _check(system.fn, inputs, expected)
                    systems.append(system)
                except Exception as exc:  # noqa: BLE001
                    failed.add(backend)
                    lines.append(f"fxopt:{backend}: not available: {_one_line(exc)}")
        return inputs, systems, errors

    notes = ["fxopt captures the model once per batch size with static shapes (shape-specialized graphs, "
             "as the accelerator backends compile them); torch.compile gets one static-shape graph per "
             "batch too; setup (capture, passes, compile) is excluded from the timings",
             f"inputs at batch B: rows of the example inputs (batch {_batch0(base_inputs)}) cycled to B rows"]
    return _Plan(name=name, kind="model", batches=batches, capture_text="per batch size, static shapes",
                 build=build, notes=notes, unavailable=unavailable)


def _batch0(inputs: tuple) -> int:
    from fxopt.tools.bench_measure import batch_of

    return batch_of(inputs)


def _artifact_plan(directory: str, batches, against, log) -> _Plan:
    import torch

    from fxopt.backends.base import check_inputs, read_manifest
    from fxopt.tools import bench_systems as bs

    manifest = read_manifest(directory)
    static = bs.artifact_batch(manifest)
    notes: list[str] = []
    unavailable: list[str] = []
    system, compiled = bs.artifact_system(directory)
    source = manifest.get("source") or ""
    model, base_inputs = None, None
    if against:
        try:
            model, base_inputs, _ = _resolve(source, None, False) if source else (None, None, None)
            if model is None:
                raise InputError("the manifest names no source model")
        except Exception as exc:  # noqa: BLE001
            for name in against:
                unavailable.append(f"{name}: not available: cannot rebuild the artifact's source model "
                                   f"{source!r} ({_one_line(exc)})")
            model = None
    default_batch = static or (_batch0(base_inputs) if base_inputs is not None else 1)
    asked = list(batches or [default_batch])
    if static is not None:
        if asked != [static]:
            notes.append(f"the artifact has a static batch of {static}: benched at batch {static} only "
                         f"(asked {','.join(str(b) for b in asked)}); rerun `fxopt bench MODEL` for other batches")
        asked = [static]
    failed: set[str] = set()

    def build(batch: int, lines: list[str]):
        inputs = None
        if model is not None:
            candidate = bs.resize_batch(base_inputs, batch)
            try:
                import torch.utils._pytree as pytree

                check_inputs(pytree.tree_flatten((candidate, {}))[0], manifest["inputs"])
                inputs = candidate
            except InputError as exc:
                lines.append(f"eager/compile: not available: the source model's inputs do not fit the "
                             f"artifact ({_one_line(exc)})")
                failed.update(AGAINST)
        if inputs is None:
            inputs = bs.synthetic_inputs(manifest["inputs"], batch, compiled.in_spec)
            note = "inputs synthesized from the manifest's input specs (floats N(0,1), integers 0)"
            if note not in notes:
                notes.append(note)
        systems: list[System] = []
        errors: dict[str, float | None] = {}
        expected = None
        if model is not None and not failed:
            with torch.no_grad():
                expected = bs.flat_outputs(model(*inputs))
            if "eager" in against:
                systems.append(bs.eager_system(model))
                errors["eager"] = 0.0
            if "compile" in against:
                try:
                    csys = bs.compile_system(model, inputs)
                    errors["compile"] = _check(csys.fn, inputs, expected)
                    systems.append(csys)
                except Exception as exc:  # noqa: BLE001
                    lines.append(f"compile: not available: {_one_line(exc)}")
        try:
            errors[system.name] = _check(system.fn, inputs, expected)
            systems.append(system)
        except Exception as exc:  # noqa: BLE001
            lines.append(f"{system.name}: not available: the artifact fails at batch {batch}: {_one_line(exc)}")
        return inputs, systems, errors

    notes.append(f"artifact {directory}: backend {manifest.get('backend')}, passes "
                 f"{','.join(manifest.get('passes') or []) or 'none'}; setup = load time")
    name = f"{manifest.get('program', directory)} (artifact {directory})"
    return _Plan(name=name, kind="artifact", batches=asked,
                 capture_text="as saved in the artifact" + (f" (static batch {static})" if static else ""),
                 build=build, notes=notes, unavailable=unavailable)


# ------------------------------------------------------------------------------------------ output
def write_outputs(result: BenchResult, directory: str, charts: bool = True) -> tuple[list[str], list[str]]:
    """Write ``bench.json`` (and, with ``charts``, the PNG charts) into ``directory`` (created if
    missing). Returns ``(paths written, notes)``; a note says why charts were skipped, if they were."""
    from fxopt.backends.base import write_json

    os.makedirs(directory, exist_ok=True)
    document = result.to_json()
    path = os.path.join(directory, "bench.json")
    write_json(path, document)
    paths, notes = [path], []
    if charts:
        from fxopt.tools import bench_charts

        written, note = bench_charts.write_charts(document, directory)
        paths.extend(written)
        if note:
            notes.append(note)
    return paths, notes


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def results_table(result: BenchResult):
    """A rich Table: one row per (batch, system) with p50/p99 ms, throughput (inferences/s), p50 speedup
    over each baseline that ran, peak memory, setup time, max error vs eager and (when priced) dollars per
    million inferences."""
    from rich.table import Table

    from fxopt.tools.report import human_bytes, human_seconds

    priced = any(r.get("cost_per_million") is not None for r in result.rows)
    has = {name: any(r["system"] == name for r in result.rows) for name in AGAINST}
    table = Table(title=f"fxopt bench {result.model}", title_justify="left")
    columns = [("batch", "right"), ("system", "left"), ("p50 ms", "right"), ("p99 ms", "right"),
               ("inf/s", "right")]
    columns += [(f"x {name}", "right") for name in AGAINST if has[name]]
    columns += [("peak mem", "right"), ("setup", "right"), ("max err", "right")]
    columns += [("$/M inf", "right")] if priced else []
    for col, justify in columns:
        table.add_column(col, justify=justify, no_wrap=True)
    previous = None
    for r in result.rows:
        if previous is not None and r["batch"] != previous:
            table.add_section()
        previous = r["batch"]
        mem = r.get("peak_memory_bytes")
        cells = [str(r["batch"]), r["system"], f"{r['p50_ms']:.3f}", f"{r['p99_ms']:.3f}",
                 f"{r['throughput']:,.0f}"]
        cells += [_fmt(r.get(f"speedup_vs_{name}"), ".2f", "x") for name in AGAINST if has[name]]
        cells += ["n/a" if mem is None else human_bytes(mem), human_seconds(r["setup_s"]),
                  _fmt(r.get("max_abs_error_vs_eager"), ".1e")]
        if priced:
            cells.append(_fmt(r.get("cost_per_million"), ".4f"))
        table.add_row(*cells)
    return table
