"""Measurement for ``fxopt bench``: latency samples, percentiles, throughput, and per-call memory.

Timing rules (what every figure in ``fxopt bench`` means):

- ``warmup`` calls per system are made first and never recorded (they absorb lazy compilation, allocator
  growth and cache warm-up);
- then ``reps`` rounds; each round calls every system once, in turn (interleaved), so a burst of noise on
  a shared machine hits all systems alike and their *ratios* stay meaningful;
- a sample is the wall-clock time of one call (``clock()`` before and after, default
  ``time.perf_counter``), with autograd off;
- p50/p99 are percentiles of the samples with linear interpolation between order statistics (numpy's
  default); with few reps p99 is close to the slowest sample, and the JSON keeps every sample;
- throughput is ``batch / mean latency`` (inferences per second sustained over the timed calls).

Memory (:func:`peak_torch_memory`): the peak of live tensor bytes allocated through PyTorch's CPU
allocator during one call, above what was live before it (activations and workspace; weights and inputs
excluded), read from ``torch.profiler`` memory events at op granularity. Runtimes that allocate outside
PyTorch (JAX/XLA, onnxruntime) are invisible to it: when one call allocates nothing through PyTorch the
figure is ``None`` ("n/a"), never 0.
"""
from __future__ import annotations

# local imports: commands import torch and the compiler only when they run, so `fxopt --help` and argument errors answer without them (startup cost)
import contextlib
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch

Clock = Callable[[], float]


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``samples`` with linear interpolation between the closest
    ranks (numpy's default method); raises ValueError for no samples or ``q`` outside [0, 100]."""
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} outside [0, 100]")
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Timing:
    """Latency samples (seconds, one per timed call) of one system at one batch size, with the figures
    derived from them: ``p50``, ``p99``, ``mean`` (seconds) and ``throughput`` (inferences/s)."""

    batch: int
    samples: list[float] = field(default_factory=list)

    @property
    def p50(self) -> float:
        """Median latency in seconds."""
        return percentile(self.samples, 50.0)

    @property
    def p99(self) -> float:
        """99th-percentile latency in seconds (linear interpolation; near the max with few samples)."""
        return percentile(self.samples, 99.0)

    @property
    def mean(self) -> float:
        """Mean latency in seconds."""
        return statistics.fmean(self.samples)

    @property
    def throughput(self) -> float:
        """Inferences per second sustained over the timed calls: ``batch / mean``."""
        return self.batch / self.mean if self.mean > 0 else float("inf")

    def to_dict(self) -> dict:
        """A JSON-ready dict: batch, reps, p50_ms, p99_ms, mean_ms, min_ms, max_ms, throughput, samples_ms."""
        ms = [s * 1e3 for s in self.samples]
        return {"batch": self.batch, "reps": len(self.samples), "p50_ms": self.p50 * 1e3,
                "p99_ms": self.p99 * 1e3, "mean_ms": self.mean * 1e3, "min_ms": min(ms), "max_ms": max(ms),
                "throughput": self.throughput, "samples_ms": ms}


def batch_of(inputs: Any) -> int:
    """The batch size of ``inputs`` (a tuple/pytree of tensors): dim 0 of the first tensor with a dim;
    1 when there is none."""
    import torch.utils._pytree as pytree

    for leaf in pytree.tree_flatten(inputs)[0]:
        if isinstance(leaf, torch.Tensor) and leaf.dim() > 0:
            return int(leaf.shape[0])
    return 1


def measure_side_by_side(fns: Mapping[str, Callable[..., Any]], inputs: Sequence[Any], *, warmup: int = 3,
                         reps: int = 20, batch: int | None = None,
                         clock: Clock = time.perf_counter) -> dict[str, Timing]:
    """Time each ``fns[name](*inputs)`` ``reps`` times, interleaved round-robin after ``warmup`` untimed
    calls each (see the module docstring). Returns ``{name: Timing}``; ``batch`` defaults to
    :func:`batch_of` ``(inputs)``. ``clock`` is injectable for tests."""
    if reps < 1:
        raise ValueError("reps must be >= 1")
    batch = batch_of(inputs) if batch is None else batch
    timings = {name: Timing(batch=batch) for name in fns}
    with torch.no_grad():
        for fn in fns.values():
            for _ in range(warmup):
                fn(*inputs)
        for _ in range(reps):
            for name, fn in fns.items():
                start = clock()
                fn(*inputs)
                timings[name].samples.append(clock() - start)
    return timings


def measure(fn: Callable[..., Any], inputs: Sequence[Any], warmup: int = 3, reps: int = 20, *,
            batch: int | None = None, clock: Clock = time.perf_counter) -> Timing:
    """Time ``fn(*inputs)``: ``warmup`` untimed calls, then ``reps`` timed ones. Returns a :class:`Timing`
    (p50, p99, mean, throughput); ``clock`` is injectable for tests."""
    return measure_side_by_side({"fn": fn}, inputs, warmup=warmup, reps=reps, batch=batch, clock=clock)["fn"]


def peak_torch_memory(fn: Callable[..., Any], inputs: Sequence[Any]) -> int | None:
    """Peak bytes of tensors allocated through PyTorch's CPU allocator during one ``fn(*inputs)`` call,
    above what was live before it (every allocation and free recorded by ``torch.profiler`` with
    ``profile_memory``). Returns ``None`` when the call allocated nothing through PyTorch (its runtime
    allocates elsewhere: the figure would be meaningless)."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), _quiet_native_stderr(), \
            profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn(*inputs)
    events = [(e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]"]
    return peak_from_events(events)


@contextlib.contextmanager
def _quiet_native_stderr():
    """Send file descriptor 2 to /dev/null inside the block: the profiler's native code logs a line to it
    at every start and stop, which Python cannot silence otherwise."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def peak_from_events(events: Sequence[tuple[float, int]]) -> int | None:
    """The peak running sum of ``(time, bytes_delta)`` events taken in time order (allocations positive,
    frees negative), floored at 0; ``None`` when no event allocates anything."""
    if not any(delta > 0 for _, delta in events):
        return None
    current = peak = 0
    for _, delta in sorted(events, key=lambda e: e[0]):
        current += delta
        peak = max(peak, current)
    return int(peak)
