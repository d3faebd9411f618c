#!/usr/bin/env bash
# The GPU check (issue #29): one command for a machine with an NVIDIA GPU, bounded to ten minutes.
#
#     bash benchmarks/device_check.sh            # writes out/device_check/device_check.{json,md}
#
# Runs zoo:ranking, zoo:resnet50, a Hugging Face BERT encoder and a Mixtral-style MoE (tiny configs, random
# weights) through fxopt's xla backend on the GPU and through torch eager and torch.compile on CUDA, and writes
# one table: p50 latency per batch, ratios to eager and torch.compile, max error against eager on the CPU.
# Without a GPU it says so in one line and exits 0. It installs nothing from the network (the GPU machines
# reach none): what is missing (jax with CUDA, triton, transformers) becomes a "not available" cell.
set -uo pipefail
cd "$(dirname "$0")/.."

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "device_check: no NVIDIA GPU on this machine (nvidia-smi finds none); nothing to check"
    exit 0
fi
OUT="${OUT:-out}/device_check"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
# fxopt from this checkout, without reinstalling what the machine has (torch with CUDA, jax with CUDA)
if ! "$PY" -c "import fxopt" >/dev/null 2>&1; then
    "$PY" -m pip install --quiet --no-deps --no-build-isolation -e . >/dev/null 2>&1 \
        || export PYTHONPATH="$(cd .. && pwd)/.fxopt-src${PYTHONPATH:+:$PYTHONPATH}"
    if [ -n "${PYTHONPATH:-}" ] && [ ! -e "$(cd .. && pwd)/.fxopt-src/fxopt" ]; then
        mkdir -p "$(cd .. && pwd)/.fxopt-src" && ln -s "$(pwd)" "$(cd .. && pwd)/.fxopt-src/fxopt"
    fi
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1 > "$OUT/gpu.txt"
timeout 600 "$PY" -m benchmarks.device_check --device cuda --out "$OUT" "$@"
status=$?
if [ "$status" = 124 ]; then
    echo "device_check: stopped at the ten-minute bound; the table holds what finished ($OUT)"
fi
exit "$status"
