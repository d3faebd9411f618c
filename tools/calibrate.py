"""``fxopt calibrate --device cpu``: time representative ops on this host and write a device profile.

:func:`calibrate_cpu` times, with torch at its configured thread count (warm-up first, then the median of
repeats):

- ``matmul``: a 512x512 @ 512x512 fp32 ``torch.mm``;
- ``conv2d``: a 1x64x56x56 fp32 input with 64 3x3 filters, padding 1 (a ResNet stage-1 convolution);
- ``add``: an elementwise add of two 8 Mi-element fp32 tensors;
- ``index_select``: 16384 random rows gathered from a 100000 x 64 fp32 table;
- ``copy``: an 8 Mi-element fp32 tensor copy (the host "link", as in :func:`fxopt.ir.devices.measure_cpu_profile`).

FLOPs and bytes follow the cost model's accounting (:mod:`fxopt.ir.cost`): bytes = bytes read + bytes
written; a gather reads only the rows it gathers plus the indices. The profile's ``peak_flops`` is the best
of the matmul and conv achieved FLOP/s, ``mem_bandwidth`` the add's achieved bytes/s, ``link_bandwidth`` the
copy's bytes copied per second and ``link_latency`` 0. The file (:func:`fxopt.ir.device_files.save_profile`)
is what ``split{cpu_profile=FILE}`` reads. The built-in ``cpu`` profile is unchanged: calibration only writes a
file.

This module imports torch only inside its functions (the CLI registers the command before torch is loaded).
"""
from __future__ import annotations

# local imports: torch and the ir modules load only when the command runs (`fxopt --help` stays fast)
import argparse
import datetime
import os
import platform
import statistics
import time
from typing import Any, Callable

__all__ = ["calibrate_cpu", "host_name", "register", "cmd_calibrate", "DEFAULT_OUT", "DEFAULT_BUDGET_S"]

DEFAULT_OUT = "cpu-profile.json"
DEFAULT_BUDGET_S = 2.0
_MIN_REPEATS = 3
_MAX_REPEATS = 1000


def host_name() -> str:
    """The CPU's model name (``platform.processor()``, else /proc/cpuinfo's "model name", else the machine
    type) and the CPU count, e.g. ``"AMD EPYC 7R13 Processor, 2 CPUs"``."""
    name = platform.processor().strip()
    if not name or name == platform.machine():
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as f:
                for line in f:
                    if line.lower().startswith("model name"):
                        name = line.split(":", 1)[1].strip()
                        break
        except OSError:
            pass
    name = name or platform.machine() or "unknown CPU"
    return f"{name}, {os.cpu_count() or '?'} CPUs"


def _median_seconds(fn: Callable[[], Any], share_s: float) -> tuple[float, int]:
    """(median seconds of one call of ``fn``, repeats): one warm-up call, then repeats until ``share_s`` has
    passed (at least 3, at most 1000)."""
    fn()   # warm-up: thread pool, packing buffers, page faults
    times: list[float] = []
    deadline = time.perf_counter() + share_s
    while len(times) < _MAX_REPEATS:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= _MIN_REPEATS and time.perf_counter() >= deadline:
            break
    return max(statistics.median(times), 1e-9), len(times)


def calibrate_cpu(budget_s: float = DEFAULT_BUDGET_S, name: str = "cpu-calibrated"):
    """Time the representative ops (module docstring) in about ``budget_s`` seconds in all (plus one-off
    allocation and warm-up) and return ``(profile, measurements)``: a ``kind="cpu"`` DeviceProfile called
    ``name`` and a JSON-ready dict ``{"host", "cpu_count", "torch_threads", "torch_version", "date",
    "budget_s", "statistic", "ops": {op: {"what", "flops", "bytes", "seconds", "repeats", "flop_per_s",
    "bytes_per_s"}}}`` (``seconds`` is the median of ``repeats`` timed calls)."""
    import torch  # local: the CLI parses arguments before loading torch
    import torch.nn.functional as F

    from fxopt.ir.devices import DeviceProfile

    if not budget_s > 0:
        raise ValueError(f"calibrate_cpu: budget_s must be > 0, got {budget_s!r}")
    f32 = 4
    ops: dict[str, dict] = {}
    cases: list[tuple[str, str, Callable[[], Any], int, int]] = []
    gen = torch.Generator().manual_seed(0)

    n = 512
    a, b, c = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen), torch.empty(n, n)
    cases.append(("matmul", f"{n}x{n} @ {n}x{n} fp32 (torch.mm)", lambda: torch.mm(a, b, out=c),
                  2 * n * n * n, 3 * n * n * f32))

    cin, cout, hw, k = 64, 64, 56, 3
    x = torch.randn(1, cin, hw, hw, generator=gen)
    w = torch.randn(cout, cin, k, k, generator=gen)
    cases.append(("conv2d", f"1x{cin}x{hw}x{hw} * {cout}x{cin}x{k}x{k} fp32, padding 1 (conv2d)",
                  lambda: F.conv2d(x, w, padding=1), 2 * cout * hw * hw * cin * k * k,
                  (x.numel() + w.numel() + cout * hw * hw) * f32))

    m = 8 * 1024 * 1024
    u, v, out = torch.randn(m, generator=gen), torch.randn(m, generator=gen), torch.empty(m)
    cases.append(("add", f"{m} + {m} fp32 elements (torch.add)", lambda: torch.add(u, v, out=out), m,
                  3 * m * f32))

    rows, dim, picked = 100_000, 64, 16384
    table = torch.randn(rows, dim, generator=gen)
    idx = torch.randint(0, rows, (picked,), generator=gen)
    gathered = torch.empty(picked, dim)
    cases.append(("index_select", f"{picked} random rows of a {rows}x{dim} fp32 table (index_select)",
                  lambda: torch.index_select(table, 0, idx, out=gathered), 0,
                  (2 * picked * dim) * f32 + picked * idx.element_size()))

    cases.append(("copy", f"{m} fp32 elements (Tensor.copy_)", lambda: out.copy_(u), 0, 2 * m * f32))

    share = budget_s / len(cases)
    with torch.inference_mode():
        for op, what, fn, flops, nbytes in cases:
            seconds, repeats = _median_seconds(fn, share)
            ops[op] = {"what": what, "flops": flops, "bytes": nbytes, "seconds": seconds, "repeats": repeats,
                       "flop_per_s": flops / seconds, "bytes_per_s": nbytes / seconds}

    peak = max(ops["matmul"]["flop_per_s"], ops["conv2d"]["flop_per_s"])
    copy_rate = ops["copy"]["bytes_per_s"] / 2   # bytes copied per second (read + written counts each twice)
    threads = torch.get_num_threads()
    host = host_name()
    date = datetime.date.today().isoformat()
    profile = DeviceProfile(
        name=name,
        peak_flops=peak,
        mem_bandwidth=ops["add"]["bytes_per_s"],
        link_bandwidth=copy_rate,
        link_latency=0.0,
        kind="cpu",
        precision="fp32",
        peak_flops_fp32=peak,
        description=f"calibrated on {host} ({threads} torch threads) on {date} by `fxopt calibrate`: peak = best "
                    f"of 512^3 matmul / 3x3 conv, memory = 8Mi-element add, link = copy",
    )
    measurements = {"host": host, "cpu_count": os.cpu_count(), "torch_threads": threads,
                    "torch_version": torch.__version__, "date": date, "budget_s": budget_s,
                    "statistic": "median", "ops": ops}
    return profile, measurements


# ------------------------------------------------------------------------------------------ the command
def register(add) -> None:
    """Add the ``calibrate`` subcommand to the ``fxopt`` CLI (``add`` is tools.cli's sub-parser factory)."""
    from fxopt.tools.cli import NumberArg  # local: cli imports this module to register it

    seconds = NumberArg(float, lambda v: 0 < v < float("inf"), "seconds > 0", "seconds")
    p = add("calibrate", "time representative ops on this host and write a device profile for split",
            "Time a matmul, a convolution, an elementwise add, a gather and a copy with torch on this machine "
            "(at torch's thread count) and write a device profile file that `split{cpu_profile=FILE}` reads. "
            "The built-in `cpu` profile is not changed.")
    p.add_argument("--device", metavar="DEVICE", default="cpu",
                   help="the device to time: cpu (the only one that can be timed here; default: cpu)")
    p.add_argument("--out", metavar="FILE", default=DEFAULT_OUT,
                   help=f"the profile file to write (default: {DEFAULT_OUT} in the working directory)")
    p.add_argument("--budget", metavar="SECONDS", type=seconds, default=DEFAULT_BUDGET_S,
                   help=f"about how long to time, in seconds, spread over the ops (default: {DEFAULT_BUDGET_S:g})")
    p.set_defaults(handler=cmd_calibrate)


def cmd_calibrate(args: argparse.Namespace) -> int:
    """``fxopt calibrate``: time, print the measurements, write the file; returns 0 (errors are raised as
    InputErrors: exit 2)."""
    from fxopt.errors import InputError

    device = str(args.device).strip().lower()
    if device != "cpu":
        raise InputError(f"--device {args.device}: only the cpu can be calibrated (this host, with torch); an "
                         f"accelerator cannot be timed here: use its built-in profile (split{{profile=NAME}})")
    out = args.out
    directory = os.path.dirname(os.path.abspath(out))
    if os.path.isdir(out) or not os.path.isdir(directory):
        raise InputError(f"--out {out}: not a file in an existing directory; give a path such as {DEFAULT_OUT}")

    from rich.table import Table
    from rich.text import Text

    from fxopt.ir.device_files import is_profile_path, save_profile
    from fxopt.tools import report
    from fxopt.tools.cli import _display_path, _stdout_console

    profile, measurements = calibrate_cpu(args.budget)
    path = save_profile(profile, out, measurements)

    console = _stdout_console()
    table = Table(title=f"fxopt calibrate --device cpu: {measurements['host']}, {measurements['torch_threads']} "
                        f"torch threads (median of repeats)", title_justify="left", box=None)
    for column, justify in (("op", "left"), ("FLOP/s", "right"), ("B/s", "right"), ("median", "right"),
                            ("repeats", "right"), ("what", "left")):
        table.add_column(column, justify=justify, no_wrap=column != "what")
    for op, m in measurements["ops"].items():
        table.add_row(op, report.human(m["flop_per_s"], "FLOP/s") if m["flops"] else "-",
                      report.human(m["bytes_per_s"], "B/s"), report.human_seconds(m["seconds"]),
                      str(m["repeats"]), m["what"])
    console.print(table)
    console.print(Text(f"profile {profile.name}: peak_flops {report.human(profile.peak_flops, 'FLOP/s')} (best of "
                       f"matmul, conv2d), mem_bandwidth {report.human(profile.mem_bandwidth, 'B/s')} (add), "
                       f"link_bandwidth {report.human(profile.link_bandwidth, 'B/s')} (copy), link_latency 0"),
                  soft_wrap=True)
    shown = _display_path(os.path.abspath(path))
    if not is_profile_path(shown):   # split reads a bare word as a built-in profile's name
        shown = os.path.join(".", shown)
    console.print(Text(f"wrote {shown}: use it with --passes 'split{{cpu_profile={shown}}}' (it replaces split's "
                       f"CPU side; the built-in cpu profile is unchanged)"), soft_wrap=True)
    return 0
