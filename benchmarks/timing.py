"""Timing helpers shared by the benchmarks."""
from __future__ import annotations

import contextlib
import statistics
import time

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
