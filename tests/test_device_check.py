"""The GPU check (benchmarks/device_check.sh): without a GPU it says so in one line and exits 0; its table
code runs here on the CPU, so the script a GPU machine runs is not untested code."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has nvidia-smi")
def test_without_a_gpu_the_check_says_so_in_one_line_and_exits_0():
    done = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "device_check.sh")], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0
    assert done.stdout.strip().splitlines() == [
        "device_check: no NVIDIA GPU on this machine (nvidia-smi finds none); nothing to check"]


def test_the_table_is_written_with_every_system_on_the_cpu(tmp_path):
    pytest.importorskip("jax")
    done = subprocess.run([sys.executable, "-m", "benchmarks.device_check", "--device", "cpu", "--quick",
                           "--models", "ranking", "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads((tmp_path / "device_check.json").read_text())["rows"]
    assert {(r["batch"], r["system"]) for r in rows} == {(b, s) for b in (1, 8)
                                                          for s in ("eager", "torch.compile", "fxopt-xla")}
    assert all(r["max_error"] < 1e-4 for r in rows)
    assert "| ranking | 8 | fxopt-xla |" in (tmp_path / "device_check.md").read_text()
