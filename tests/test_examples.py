"""The scripts in examples/ run as a user runs them (in a fresh process) and do what they say."""
from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_train_then_export_trains_exports_and_reloads_an_artifact_that_matches(tmp_path):
    out = tmp_path / "ctr"
    done = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "train_then_export.py"),
                           "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "trained 20 steps" in done.stdout
    assert "check: the xla artifact reproduces the model" in done.stdout
    assert (out / "manifest.json").is_file()
    assert "reloaded" in done.stdout and "warning" not in done.stderr.lower()


def test_generate_on_xla_matches_generate_compiled_and_reloaded(tmp_path):
    out = tmp_path / "gen"
    done = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "generate_on_xla.py"), "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "tokens equal generate's on new prompts: True" in done.stdout
    assert "tokens equal generate's: True" in done.stdout and (out / "manifest.json").is_file()
