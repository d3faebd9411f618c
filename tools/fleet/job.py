"""One unit of fleet work, run in a worker process (the pool, a Ray task, a Kubernetes pod): a model, or a
group of models that share one weight store. Everything crossing into and out of here is plain data.

A unit never raises: a failure becomes its result (``status: "failed"`` and the error's first line), so a
failing model never stops the others.
"""
from __future__ import annotations

# local imports: torch and the compiler load in the worker that runs a unit, never in the CLI's parent (startup cost)

import dataclasses
import json
import os
import time
from typing import Any

from fxopt.tools.fleet.spec import ModelJob

__all__ = ["run_unit", "run_model", "run_group", "STATE_DIR"]

#: Under --out: one JSON file per finished unit, ``{"job_key": ...}``, so a re-run keeps what is done.
STATE_DIR = ".fleet"


def _blank(job: ModelJob, path: str) -> dict:
    return {"model": job.name, "spec": job.model, "backend": job.backend, "group": job.group,
            "status": "failed", "error": None, "cache": "miss", "path": path,
            "seconds": {}, "nodes_before": None, "nodes_after": None,
            "weight_bytes_before": None, "weight_bytes_after": None, "shared_bytes": None}


def _error_line(exc: BaseException) -> str:
    from fxopt.errors import FxoptError  # local: as run_unit

    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if isinstance(exc, FxoptError) else f"internal error: {type(exc).__name__}: {text}"


def _state_path(out: str, name: str) -> str:
    return os.path.join(out, STATE_DIR, f"{name}.json")


def _kept(out: str, name: str, marker: str, job_key: str | None = None, graph_key: str | None = None) -> bool:
    """Whether a previous run left this unit's output in place under the same job key (known before
    capture) or graph key (after it)."""
    if (job_key is None and graph_key is None) or not os.path.isfile(os.path.join(out, name, marker)):
        return False
    try:
        with open(_state_path(out, name), encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and ((job_key is not None and state.get("job_key") == job_key) or
                                        (graph_key is not None and state.get("graph_key") == graph_key))


def _mark_done(out: str, name: str, job_key: str | None, graph_key: str | None) -> None:
    from fxopt.ir.files import write_text_atomic

    os.makedirs(os.path.join(out, STATE_DIR), exist_ok=True)
    write_text_atomic(_state_path(out, name), json.dumps({"job_key": job_key, "graph_key": graph_key}))


def _fetched(cache, key: str, dest: str) -> bool:
    """Copy cache entry ``key`` to ``dest``; False (compile instead) when the entry cannot be used."""
    from fxopt.errors import InputError

    try:
        cache.fetch(key, dest)
    except (OSError, InputError):
        return False
    return True


def _options(job: ModelJob) -> dict:
    """What beside the source, passes and backend shapes ``job``'s artifact (part of its job key)."""
    return {"small": job.small, "input": list(job.input), "batch": job.batch}


def _capture(job: ModelJob):
    """Capture ``job``'s model as ``fxopt run`` would (``small``, ``input``, ``batch``)."""
    from fxopt.api import capture
    from fxopt.tools.model_inputs import inputs_maker, parse_input_specs, rebatching_maker

    spec = job.model + ("{small=true}" if job.small else "")
    maker = inputs_maker(parse_input_specs(list(job.input)), None)
    if job.batch is not None:
        maker = rebatching_maker(maker, job.batch)
    return capture(spec, maker)


def _pipeline_text(job: ModelJob) -> str:
    from fxopt.passes.registry import default_pipeline

    return job.passes if job.passes is not None else default_pipeline(job.target)


def run_model(job: ModelJob, out: str, cache_dir: str | None) -> dict:
    """Compile one model into ``out/<name>`` (capture, the pipeline verified, compile, check, save), through
    the cache at ``cache_dir`` (None: no cache). Returns its result row (see :mod:`fxopt.tools.fleet`)."""
    dest = os.path.join(out, job.name)
    result = _blank(job, dest)
    try:
        _run_model(job, out, cache_dir, dest, result)
        result["status"] = result.get("status_ok", "ok")
    except BaseException as exc:  # noqa: BLE001 - a unit's failure is its result; the fleet goes on
        if isinstance(exc, KeyboardInterrupt):
            raise
        result["status"], result["error"] = "failed", _error_line(exc)
    result.pop("status_ok", None)
    return result


def _run_model(job: ModelJob, out: str, cache_dir: str | None, dest: str, result: dict) -> None:
    from fxopt.api import check_compiled
    from fxopt.backends.base import check_replaceable, compile_program, get_backend
    from fxopt.passes.manager import optimize
    from fxopt.passes.registry import build_pipeline
    from fxopt.tools.compile_cache import Cache, graph_key, job_key, versions

    seconds = result["seconds"]
    get_backend(job.backend)
    passes = _pipeline_text(job)
    pipeline = build_pipeline(passes)
    check_replaceable(dest)
    libs = versions(job.backend)
    jkey = job_key(job.model, _options(job), passes, job.backend, libs)
    if _kept(out, job.name, "manifest.json", job_key=jkey):
        result["status_ok"], result["cache"] = "kept", "kept"
        return
    cache = Cache(cache_dir) if cache_dir else None
    record = cache.job(jkey) if cache else None
    if record and _fetched(cache, record["graph"], dest):
        result["cache"] = "hit (job)"
        _mark_done(out, job.name, jkey, record["graph"])
        return
    t0 = time.perf_counter()
    program = _capture(job)
    seconds["capture"] = time.perf_counter() - t0
    result["nodes_before"] = program.num_nodes()
    result["weight_bytes_before"] = program.parameter_bytes(unique=True)
    gkey = graph_key(program, passes, job.backend, libs)
    if _kept(out, job.name, "manifest.json", graph_key=gkey):
        result["status_ok"], result["cache"] = "kept", "kept"
        return
    if cache and cache.has(gkey) and _fetched(cache, gkey, dest):
        cache.record(jkey, gkey, program.name)
        result["cache"] = "hit (graph)"
        _mark_done(out, job.name, jkey, gkey)
        return
    t0 = time.perf_counter()
    expected = program.run_flat(program.flat_example_inputs())
    optimized = optimize(program, pipeline, target=job.target)
    seconds["optimize"] = time.perf_counter() - t0
    result["nodes_after"] = optimized.num_nodes()
    result["weight_bytes_after"] = optimized.parameter_bytes(unique=True)
    t0 = time.perf_counter()
    compiled = compile_program(optimized, job.backend)
    seconds["compile"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    check_compiled(compiled, program, expected, "run it alone with `fxopt run` to bisect the passes")
    seconds["check"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    compiled.save(dest)
    seconds["save"] = time.perf_counter() - t0
    if cache:
        cache.store(gkey, dest, jkey, program.name)
    _mark_done(out, job.name, jkey, gkey)


def run_group(jobs: list[ModelJob], out: str, cache_dir: str | None) -> list[dict]:
    """Compile the models of one group together into ``out/<group>`` (a shared weight store,
    :func:`fxopt.backends.shared_store.save_many`): each captured, optimized with their common passes by
    :func:`fxopt.optimize_many` (equal weights of different members become one tensor), compiled with the
    reference backend, checked, saved. Returns one result row per member (a failure fails them all)."""
    group = jobs[0].group
    dest = os.path.join(out, group)
    results = [_blank(job, os.path.join(dest, job.name)) for job in jobs]
    try:
        status, cache_state, shared = _run_group(jobs, out, cache_dir, dest, results)
        for r in results:
            r["status"], r["cache"], r["shared_bytes"] = status, cache_state, shared
    except BaseException as exc:  # noqa: BLE001 - as run_model
        if isinstance(exc, KeyboardInterrupt):
            raise
        for r in results:
            r["status"], r["error"] = "failed", _error_line(exc)
    return results


def _run_group(jobs, out, cache_dir, dest, results):
    from fxopt.api import check_compiled
    from fxopt.backends import shared_store
    from fxopt.backends.base import check_replaceable, compile_program
    from fxopt.passes.dedupe.many import optimize_many
    from fxopt.tools.compile_cache import Cache, digest, graph_key, job_key, versions

    group = jobs[0].group
    passes = _pipeline_text(jobs[0])
    check_replaceable(dest, marker="store.json", what="an fxopt shared store", fmt=shared_store.STORE_FORMAT)
    libs = versions("reference")
    member_keys = [job_key(job.model, _options(job), passes, "reference", libs) for job in jobs]
    jkey = None if None in member_keys else digest({"group": group, "members": [j.name for j in jobs],
                                                    "keys": member_keys})
    if _kept(out, group, "store.json", job_key=jkey):
        return "kept", "kept", None
    cache = Cache(cache_dir) if cache_dir else None
    record = cache.job(jkey) if cache else None
    if record and _fetched(cache, record["graph"], dest):
        _mark_done(out, group, jkey, record["graph"])
        return "ok", "hit (job)", None
    programs = []
    for job, r in zip(jobs, results):
        t0 = time.perf_counter()
        programs.append(_capture(job))
        r["seconds"]["capture"] = time.perf_counter() - t0
        r["nodes_before"] = programs[-1].num_nodes()
        r["weight_bytes_before"] = programs[-1].parameter_bytes(unique=True)
    gkey = digest({"group": group, "members": [j.name for j in jobs],
                   "graphs": [graph_key(p, passes, "reference", libs) for p in programs]})
    if _kept(out, group, "store.json", graph_key=gkey):
        return "kept", "kept", None
    if cache and cache.has(gkey) and _fetched(cache, gkey, dest):
        cache.record(jkey, gkey, group)
        _mark_done(out, group, jkey, gkey)
        return "ok", "hit (graph)", None
    t0 = time.perf_counter()
    expected = [p.run_flat(p.flat_example_inputs()) for p in programs]
    optimized = optimize_many(programs, passes)
    elapsed = (time.perf_counter() - t0) / len(jobs)
    compiled = []
    for p, opt, exp, r in zip(programs, optimized, expected, results):
        r["seconds"]["optimize"] = elapsed
        r["nodes_after"] = opt.num_nodes()
        r["weight_bytes_after"] = opt.parameter_bytes(unique=True)
        t0 = time.perf_counter()
        c = compile_program(opt, "reference")
        r["seconds"]["compile"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        check_compiled(c, p, exp, "run the member alone with `fxopt run` to bisect the passes")
        r["seconds"]["check"] = time.perf_counter() - t0
        compiled.append(c)
    t0 = time.perf_counter()
    shared_store.save_many(compiled, dest, names=[j.name for j in jobs])
    for r in results:
        r["seconds"]["save"] = (time.perf_counter() - t0) / len(jobs)
    if cache:
        cache.store(gkey, dest, jkey, group)
    _mark_done(out, group, jkey, gkey)
    return "ok", "miss", optimized.details["weight_bytes_saved"]


def run_unit(kind: str, payload: Any, out: str, cache_dir: str | None, threads: int | None = None) -> list[dict]:
    """The worker entry point: ``kind`` ``"model"`` (``payload``: a ModelJob as a dict) or ``"group"`` (a list
    of them). Sets torch's thread count to ``threads`` (the job's CPU request) first. Returns result rows."""
    import torch  # local: workers load torch; the parent may not

    if threads:
        torch.set_num_threads(max(1, int(threads)))
    if kind == "model":
        return [run_model(ModelJob(**payload), out, cache_dir)]
    return run_group([ModelJob(**p) for p in payload], out, cache_dir)


def as_payload(job: ModelJob) -> dict:
    """``job`` as plain data for another process."""
    return dataclasses.asdict(job)
