"""Choosing partition boundaries for a partitioned decoder from a histogram of output lengths.

A request whose output length is ``L`` (the step, 1-based, at which it emits EOS; ``max_len`` if it never
does) runs partition ``[a, b)`` exactly when ``L > a``. With ``c_t`` the estimated time of step ``t`` (the
cost model's step graph at that step's cache length, roofline time on a device profile) and ``o`` a fixed
cost per partition call (host round trip + EOS flag read back), the expected cost of boundaries
``0 = b_0 < b_1 < ... < b_m = max_len`` is::

    sum_j  P(L > b_j) * (sum_{t in [b_j, b_{j+1})} c_t + o)

:func:`choose_boundaries` minimises it exactly by dynamic programming over the boundary positions
(O(max_len^2 * partitions)); :func:`expected` evaluates any boundaries (expected steps, calls, cost).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from typing import Sequence

from fxopt.errors import InputError


def read_lengths(path: str, max_len: int) -> list[float]:
    """Read observed output lengths from ``path`` and return the histogram ``h[L]`` for ``L = 0..max_len``
    (``h[0]`` is always 0; lengths above ``max_len`` count as ``max_len``).

    Accepts JSON (a list of lengths, or an object ``{"length": count}``) or CSV (one length per row, or
    ``length,count`` rows; a header row is skipped). Raises InputError naming the file for anything else.
    """
    if not os.path.isfile(path):
        raise InputError(f"unroll: lengths file {path}: no such file; give a JSON list or CSV of output lengths")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    pairs: list[tuple[float, float]] = []
    try:
        data = json.loads(text)
    except ValueError:
        data = None
        for row in csv.reader(io.StringIO(text)):
            row = [c.strip() for c in row if c.strip()]
            if not row:
                continue
            try:
                nums = [float(c) for c in row[:2]]
            except ValueError:
                if pairs:
                    raise InputError(f"unroll: lengths file {path}: row {row} is not numbers") from None
                continue  # header
            pairs.append((nums[0], nums[1] if len(nums) > 1 else 1.0))
    if isinstance(data, list):
        pairs = [(x, 1.0) for x in data]
    elif isinstance(data, dict):
        try:
            pairs = [(float(k), float(v)) for k, v in data.items()]
        except (TypeError, ValueError):
            raise InputError(f"unroll: lengths file {path}: an object must map lengths to counts") from None
    elif data is not None:
        raise InputError(f"unroll: lengths file {path}: expected a JSON list of lengths or a length->count object")
    hist = [0.0] * (max_len + 1)
    for length, count in pairs:
        if not isinstance(length, (int, float)) or length != length or length < 1 or count < 0:
            raise InputError(f"unroll: lengths file {path}: length {length!r} (count {count!r}) is not a "
                             "positive number of steps")
        hist[min(int(math.ceil(length)), max_len)] += float(count)
    if sum(hist) <= 0:
        raise InputError(f"unroll: lengths file {path}: no lengths")
    return hist


def _survival(hist: Sequence[float]) -> list[float]:
    """``S[a] = P(L > a)`` for ``a = 0..max_len``."""
    total = float(sum(hist))
    out, above = [], total
    for a in range(len(hist)):
        above -= hist[a]
        out.append(max(above, 0.0) / total)
    return out


def choose_boundaries(hist: Sequence[float], step_cost: Sequence[float], overhead: float,
                      max_partitions: int = 0) -> list[int]:
    """Stops ``[b_1, ..., max_len]`` minimising the expected cost (module docstring) for histogram ``hist``
    (index = length), per-step costs ``step_cost[t]`` and per-call ``overhead``; at most ``max_partitions``
    partitions when positive. Ties go to fewer partitions."""
    n = len(step_cost)
    surv = _survival(hist)
    prefix = [0.0]
    for c in step_cost:
        prefix.append(prefix[-1] + c)
    k_max = max_partitions if max_partitions > 0 else n
    inf = float("inf")
    # best[k][a]: min expected cost of steps [a, n) with at most k partitions; choice[k][a]: first stop.
    best = [[inf] * (n + 1) for _ in range(k_max + 1)]
    choice = [[n] * (n + 1) for _ in range(k_max + 1)]
    for k in range(k_max + 1):
        best[k][n] = 0.0
    for k in range(1, k_max + 1):
        for a in range(n - 1, -1, -1):
            for b in range(n, a, -1):  # longest first: ties keep fewer partitions
                rest = best[k - 1][b]
                if rest == inf:
                    continue
                value = surv[a] * (prefix[b] - prefix[a] + overhead) + rest
                current = best[k][a]
                if current == inf or value < current - 1e-12 * max(1.0, abs(current)):
                    best[k][a], choice[k][a] = value, b
    stops, a, k = [], 0, k_max
    while a < n:
        b = choice[k][a]
        stops.append(b)
        a, k = b, k - 1
    return stops


def even_stops(max_len: int, partition: int) -> list[int]:
    """Stops of even partitions of ``partition`` steps (the last one shorter): ``[25, 50, 75]``."""
    return list(range(partition, max_len, partition)) + [max_len]


def parts_of(stops: Sequence[int]) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` from the stops."""
    starts = [0] + list(stops[:-1])
    return list(zip(starts, stops))


def expected(hist: Sequence[float], stops: Sequence[int], step_cost: Sequence[float], overhead: float) -> dict:
    """Expected ``steps``, partition ``calls`` and ``cost`` (seconds) per request for the given stops."""
    surv = _survival(hist)
    steps = calls = total = 0.0
    for a, b in parts_of(stops):
        steps += surv[a] * (b - a)
        calls += surv[a]
        total += surv[a] * (sum(step_cost[a:b]) + overhead)
    return {"steps": round(steps, 3), "calls": round(calls, 3), "cost_us": round(total * 1e6, 3)}
