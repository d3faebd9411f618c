"""``fxopt fleet`` against running ``fxopt run`` once per model, side by side in one run.

``python -m benchmarks.fleet [--workers 2]``

Eight small models (the four zoo models' small variants at two batch sizes each, reference backend) compiled
four ways: ``fxopt run`` eight times one after another (each its own process: what a script calling the CLI
does), ``fxopt fleet`` on the process pool, ``fxopt fleet --ray local`` (a Ray instance with ``--workers``
CPUs started for the run), and the pool again with the first run's cache (every model a cache hit). Prints
each wall time as a ratio of the serial runs. The machine is shared: compare ratios.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

MODELS = [(f"{name}_b{batch}", name, batch) for name in ("ranking", "moderation", "resnet50", "ocr")
          for batch in (2, 4)]


def _fleet_file(path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write('[defaults]\nbackend = "reference"\n\n')
        for name, zoo, batch in MODELS:
            f.write(f'[[model]]\nname = "{name}"\nmodel = "zoo:{zoo}"\nsmall = true\nbatch = {batch}\n\n')


def _timed(argv: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stdout[-800:]}{proc.stderr[-800:]}")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    """Print the four wall times and their ratios to the serial runs; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    fxopt = [sys.executable, "-m", "fxopt.tools.cli"]
    root = tempfile.mkdtemp(prefix="fxopt-fleet-bench-")
    try:
        spec = os.path.join(root, "fleet.toml")
        _fleet_file(spec)
        serial = sum(_timed([*fxopt, "run", f"zoo:{zoo}", "--small", "--batch", str(batch),
                             "-o", os.path.join(root, "serial", name)]) for name, zoo, batch in MODELS)
        cache = os.path.join(root, "cache")
        pool = _timed([*fxopt, "fleet", spec, "--out", os.path.join(root, "pool"), "--cache", cache,
                       "--workers", str(args.workers)])
        ray = _timed([*fxopt, "fleet", spec, "--out", os.path.join(root, "ray"), "--no-cache", "--ray", "local"])
        cached = _timed([*fxopt, "fleet", spec, "--out", os.path.join(root, "cached"), "--cache", cache,
                         "--workers", str(args.workers)])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"{len(MODELS)} small models, reference backend, {args.workers} workers; load average "
          f"{os.getloadavg()[0]:.1f} at the end")
    print("| run | wall s | vs serial `fxopt run` x8 |")
    print("|---|---|---|")
    for label, seconds in (("`fxopt run` x8, one after another", serial), ("`fxopt fleet` (process pool)", pool),
                           ("`fxopt fleet --ray local`", ray), ("`fxopt fleet`, cached re-run", cached)):
        print(f"| {label} | {seconds:.1f} | {serial / seconds:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
