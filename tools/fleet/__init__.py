"""``fxopt fleet``: compile many models as independent jobs, through a content-addressed cache.

:func:`fleet` (and ``fxopt fleet fleet.toml``) reads a fleet (:mod:`~fxopt.tools.fleet.spec`), runs one unit
per model, or per group of models deployed together (their weights deduped into one shared store), on a
process pool, a Ray cluster or in this process (:mod:`~fxopt.tools.fleet.engines`), and returns one row per
model::

    {"model", "spec", "backend", "group", "status": "ok" | "kept" | "failed", "error": first line | None,
     "cache": "miss" | "hit (job)" | "hit (graph)" | "kept", "path",
     "seconds": {"capture", "optimize", "compile", "check", "save"},   # the stages that ran
     "nodes_before", "nodes_after", "weight_bytes_before", "weight_bytes_after",
     "shared_bytes"}                                                     # a group's bytes saved by sharing

A failing model never stops the others; a re-run keeps what a previous run finished (``kept``) and takes
what another fleet compiled from the cache (:mod:`fxopt.tools.compile_cache`, which `fxopt run` uses too). See docs/fleet.md.
"""
from __future__ import annotations

import os
from typing import Any

from fxopt.errors import InputError
from fxopt.tools.fleet.engines import ENGINES, run_units, units
from fxopt.tools.fleet.spec import FleetSpec, ModelJob, parse_fleet, read_fleet

__all__ = ["fleet", "FleetSpec", "ModelJob", "read_fleet", "parse_fleet", "summary", "ENGINES"]


def fleet(spec: str | dict | FleetSpec, out: str = "fleet-out", *, cache: str | None = "", engine: str = "pool",
          workers: int | None = None, ray_address: str | None = None, only: list[int] | None = None) -> list[dict]:
    """Compile every model of ``spec`` (a fleet file's path, its parsed dict, or a FleetSpec) into ``out``.

    ``cache``: the cache directory ("" = ``out/.cache``; None = none); ``engine``: ``pool`` (``workers``
    processes, default the CPU count), ``ray`` (``ray_address``: ``auto``, an address, or ``local``; an
    already initialised Ray is used as it is) or ``serial``; ``only``: run just these unit indices (what each
    pod of the Kubernetes Job runs). Returns the result rows (module docstring). Raises InputError for a bad
    fleet, before any model runs."""
    if isinstance(spec, str):
        spec = read_fleet(spec)
    elif isinstance(spec, dict):
        spec = parse_fleet(spec)
    if not isinstance(spec, FleetSpec):
        raise InputError(f"fleet: expected a fleet file, a dict or a FleetSpec, got {type(spec).__name__}")
    if engine not in ENGINES:
        raise InputError(f"fleet: unknown engine {engine!r}; one of {', '.join(ENGINES)}")
    out = os.path.abspath(out)
    cache_dir = None if cache is None else os.path.abspath(cache or os.path.join(out, ".cache"))
    work = units(spec)
    if only is not None:
        bad = [i for i in only if not 0 <= i < len(work)]
        if bad:
            raise InputError(f"fleet: unit index {bad[0]} out of range; the fleet has {len(work)} units (0.."
                             f"{len(work) - 1})")
        work = [work[i] for i in only]
    os.makedirs(out, exist_ok=True)
    return run_units(work, out, cache_dir, engine, workers, ray_address)


def summary(rows: list[dict]) -> dict[str, Any]:
    """Counts over result rows: ``{"models", "ok", "kept", "failed", "cache_hits", "cache_misses"}``."""
    return {"models": len(rows),
            "ok": sum(r["status"] == "ok" for r in rows),
            "kept": sum(r["status"] == "kept" for r in rows),
            "failed": sum(r["status"] == "failed" for r in rows),
            "cache_hits": sum(r["cache"].startswith("hit") for r in rows),
            "cache_misses": sum(r["cache"] == "miss" and r["status"] != "failed" for r in rows)}
