"""Where fleet units run: a local process pool (the default), a Ray cluster, or this process.

No scheduler of fxopt's own: the pool is :class:`concurrent.futures.ProcessPoolExecutor` (spawned workers,
so each has its own torch), Ray places each unit as a task with the unit's CPU and memory request, and
Kubernetes runs them as an indexed Job (:mod:`fxopt.tools.fleet.k8s`). Every unit writes its own output
directory and the shared cache; results come back as plain rows.
"""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import os

from fxopt.errors import InputError
from fxopt.tools.fleet.job import as_payload, run_unit
from fxopt.tools.fleet.spec import FleetSpec, ModelJob

__all__ = ["ENGINES", "units", "run_units"]

ENGINES = ("pool", "ray", "serial")


def units(spec: FleetSpec) -> list[tuple[str, object, float, float]]:
    """The fleet's units in file order: ``(kind, payload, cpus, memory_gb)``, one per ungrouped model and
    one per group (its members together, at the largest member's request)."""
    out, seen = [], set()
    groups = spec.groups()
    for job in spec.models:
        if job.group is None:
            out.append(("model", as_payload(job), job.cpus, job.memory_gb))
        elif job.group not in seen:
            seen.add(job.group)
            members: list[ModelJob] = groups[job.group]
            out.append(("group", [as_payload(m) for m in members], max(m.cpus for m in members),
                        max(m.memory_gb for m in members)))
    return out


def run_units(work: list, out: str, cache: str | None, engine: str = "pool", workers: int | None = None,
              ray_address: str | None = None) -> list[dict]:
    """Run ``work`` (from :func:`units`) on ``engine`` and return every result row, in ``work``'s order."""
    if engine == "serial":
        return [row for kind, payload, cpus, _ in work for row in run_unit(kind, payload, out, cache, cpus)]
    if engine == "pool":
        return _pool(work, out, cache, workers)
    if engine == "ray":
        return _ray(work, out, cache, ray_address)
    raise InputError(f"unknown fleet engine {engine!r}; one of {', '.join(ENGINES)}")


def _pool(work: list, out: str, cache: str | None, workers: int | None) -> list[dict]:
    count = max(1, min(len(work), workers or os.cpu_count() or 1))
    context = multiprocessing.get_context("spawn")   # fork would copy this process's torch threads and locks
    with concurrent.futures.ProcessPoolExecutor(max_workers=count, mp_context=context) as pool:
        futures = [pool.submit(run_unit, kind, payload, out, cache, cpus) for kind, payload, cpus, _ in work]
        rows = []
        for future, (kind, payload, _, _) in zip(futures, work):
            try:
                rows.extend(future.result())
            except Exception as exc:  # noqa: BLE001 - a worker that died (killed, out of memory) fails its unit
                rows.extend(_lost(kind, payload, f"worker process failed: {type(exc).__name__}: {exc}"))
        return rows


def _ray(work: list, out: str, cache: str | None, address: str | None) -> list[dict]:
    try:
        import ray  # local: an optional dependency (pip install 'fxopt[fleet]')
    except ImportError:
        raise InputError("--ray needs Ray: pip install 'fxopt[fleet]' (or run without --ray: a local process "
                         "pool)") from None
    if not ray.is_initialized():
        try:
            ray.init(address=None if address in (None, "local") else address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise InputError(f"--ray {address}: cannot connect to a Ray cluster ({str(exc).splitlines()[0]}); "
                             f"give its address (ray://host:10001 or host:6379) or 'local' to start one "
                             f"here") from None
    task = ray.remote(run_unit)
    refs = [task.options(num_cpus=cpus, memory=int(memory_gb * 2**30), max_retries=0)
            .remote(kind, payload, out, cache, cpus) for kind, payload, cpus, memory_gb in work]
    rows = []
    for ref, (kind, payload, _, _) in zip(refs, work):
        try:
            rows.extend(ray.get(ref))
        except Exception as exc:  # noqa: BLE001 - a task Ray could not run (a node lost) fails its unit
            rows.extend(_lost(kind, payload, f"Ray task failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"))
    return rows


def _lost(kind: str, payload, why: str) -> list[dict]:
    members = [payload] if kind == "model" else payload
    return [{"model": m["name"], "spec": m["model"], "backend": m["backend"], "group": m.get("group"),
             "status": "failed", "error": why, "cache": "miss", "path": None, "seconds": {},
             "nodes_before": None, "nodes_after": None, "weight_bytes_before": None,
             "weight_bytes_after": None, "shared_bytes": None} for m in members]
