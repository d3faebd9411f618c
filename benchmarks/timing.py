"""Timing helpers shared by the benchmarks."""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time
import warnings

import torch


def interleaved_medians(fns: list, repeat: int) -> list[float]:
    """Median seconds per callable in ``fns``, after one warm-up call each, timing them round-robin
    ``repeat`` times so machine noise hits all of them alike."""
    samples: list[list[float]] = [[] for _ in fns]
    with torch.no_grad():
        for fn in fns:
            fn()
        for _ in range(repeat):
            for i, fn in enumerate(fns):
                start = time.perf_counter()
                fn()
                samples[i].append(time.perf_counter() - start)
    return [statistics.median(s) for s in samples]


@contextlib.contextmanager
def one_thread():
    """Run the block with one torch intra-op thread (on a shared 2-core machine that keeps variants
    comparable), restoring the previous count afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def warm_round_robin(fns: dict, repeat: int, budget_s: float, burst: int = 3) -> dict:
    """``{name: median seconds per call}`` for the callables in ``fns``, timed round-robin (stops early once ``budget_s`` is spent). Each
    turn runs the fn once untimed, then times ``burst`` calls in a row: measured first after another fn,
    a fn paid for that fn's cache footprint (running right after the eager loop cost the next fn ~20% here),
    so each is timed warm, as a serving loop calling one model runs."""
    samples = {k: [] for k in fns}
    with torch.no_grad():
        for fn in fns.values():
            fn()
            fn()
        start = time.perf_counter()
        for _ in range(repeat):
            for name, fn in fns.items():
                fn()
                t0 = time.perf_counter()
                for _ in range(burst):
                    fn()
                samples[name].append((time.perf_counter() - t0) / burst)
            if time.perf_counter() - start > budget_s and len(samples[next(iter(fns))]) >= 3:
                break
    return {k: statistics.median(v) for k, v in samples.items()}


def parse_repeat_args(argv, description: str, quick_help: str, repeats: tuple[int, int]) -> argparse.Namespace:
    """Parse the ``--quick`` / ``--repeat N`` options most benchmarks take (and silence warnings); returns
    the arguments with ``repeat`` resolved to N, else ``repeats[0]`` with --quick, else ``repeats[1]``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--repeat", type=int, default=None)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    args.repeat = args.repeat or (repeats[0] if args.quick else repeats[1])
    return args
