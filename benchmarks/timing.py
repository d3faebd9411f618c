"""Timing helpers shared by the benchmarks."""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time
import warnings

import torch

from fxopt.tools.bench import load_average, machine_info, noise_warnings  # noqa: F401 - load_average for the benchmarks


def best_of(fn, repeat: int) -> float:
    """The fastest of ``repeat`` calls of ``fn``, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


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


def machine_line(load_before: float | None = None) -> str:
    """One line naming where figures come from: the CPU model, cores, torch threads and the load average
    (before the run when given, and now), plus ``fxopt bench``'s warning line when the load exceeded the
    cores (then other work competed for the CPU and the figures do not hold on a quiet machine)."""
    info = machine_info()
    loads = [x for x in (load_before, info["load_average_1m"]) if x is not None]
    line = (f"machine: {info['cpu'] or '?'}, {info['cores']} cores, torch threads {info['torch_threads']}, "
            f"load average {' -> '.join(f'{x:.1f}' for x in loads) or '?'}")
    return "\n".join([line, *noise_warnings(load_before, info["load_average_1m"], [])])


def block_interleaved(fns: dict, rounds: int, block: int = 5, budget_s: float | None = None) -> dict[str, list[float]]:
    """Seconds per call for each callable of ``fns``: ``rounds`` rounds, each calling every system in turn
    for a block of ``block`` timed calls after one untimed call (at least 3 rounds; stop early once
    ``budget_s`` is spent). Returns ``{name: [seconds, ...]}``.

    Why blocks and an untimed lead-in rather than alternating single calls: after a call into PyTorch its
    OpenMP workers keep spinning (libgomp's default wait policy) for a while; a runtime with its own
    threads (XLA's) called right then shares the cores with them. Alternating single calls charged that to
    XLA: on zoo:ranking at batch 256 (2026-12-02, 2 cores) fxopt-xla measured 15.5 ms right after eager and
    12.3 ms right after another XLA system, and with OMP_WAIT_POLICY=PASSIVE 11-12 ms anywhere. The lead-in
    call absorbs the previous system's tail; rounds still interleave systems against slow drift."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(rounds):
            for name, fn in fns.items():
                fn()
                for _ in range(block):
                    t0 = time.perf_counter()
                    fn()
                    samples[name].append(time.perf_counter() - t0)
            if budget_s is not None and i >= 2 and time.perf_counter() - start > budget_s:
                break
    return samples

