"""How fast the ``fxopt`` command answers when it has nothing to compile: ``python -m benchmarks.cli_startup``.

Times whole processes (the installed ``fxopt`` console script), interleaved round-robin so noise hits all
alike, and prints the median of ``--runs`` runs per command, with two yardsticks measured in the same run: a
bare ``python -c pass`` and ``python -c "import torch"`` (what every command paid before the CLI parsed its
arguments first). Goal (issue #23): ``fxopt --help`` and a typo'd command under 1 s on a 2-core machine.

    python -m benchmarks.cli_startup [--runs 10]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

from benchmarks.timing import load_average, machine_line

COMMANDS = {
    "fxopt --help": ["--help"],
    "fxopt rnu (typo)": ["rnu"],
    "fxopt passes": ["passes"],
    "fxopt zoo": ["zoo"],
    "fxopt run -h": ["run", "-h"],
    "fxopt run --input bad": ["run", "--input", "x=float33[2]", "zoo:ranking"],
}
GOAL_S = 1.0


def _fxopt() -> list[str]:
    exe = shutil.which("fxopt", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    return [exe] if exe else [sys.executable, "-m", "fxopt.tools.cli"]


def main(argv: list[str] | None = None) -> list[dict]:
    """Time the commands; prints the table and returns its rows ``{command, median_s, vs_import_torch}``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args(argv)
    fxopt = _fxopt()
    argvs = {name: fxopt + rest for name, rest in COMMANDS.items()}
    argvs["python -c pass"] = [sys.executable, "-c", "pass"]
    argvs["python -c 'import torch'"] = [sys.executable, "-c", "import torch"]
    load_before = load_average()
    samples: dict[str, list[float]] = {name: [] for name in argvs}
    for _ in range(args.runs):
        for name, cmd in argvs.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            samples[name].append(time.perf_counter() - t0)
    torch_s = statistics.median(samples["python -c 'import torch'"])
    rows = []
    print(f"{'command':<28} {'median':>8} {'vs import torch':>16} {'goal < 1 s':>11}")
    for name, values in samples.items():
        median = statistics.median(values)
        goal = ("yes" if median < GOAL_S else "NO") if name in COMMANDS else ""
        print(f"{name:<28} {median:>7.3f}s {median / torch_s:>15.2f}x {goal:>11}")
        rows.append({"command": name, "median_s": median, "vs_import_torch": median / torch_s})
    print(f"({args.runs} runs each, interleaved)")
    print(machine_line(load_before))
    return rows


if __name__ == "__main__":
    main()
