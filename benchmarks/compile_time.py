"""fxopt's own wall time: capture against torch.export + run_decompositions, the headline command's stages,
a cached re-run, and the pass manager's overhead beyond the passes.

``python -m benchmarks.compile_time [--models ocr,resnet50,llama8,synthetic5000,synthetic20000,synthetic50000]
[--whole] [--no-headline] [--no-overhead]``

Side by side, in one process, after one warm-up capture:

- per model: ``torch.export.export(strict=False)`` + ``run_decompositions()`` (what a user of torch alone
  runs; for zoo:ocr that is the model's own ``forward``, the 75-step greedy loop traced out) against
  ``fxopt.capture`` (block-wise capture on; zoo:ocr through the decode-loop protocol); ``--whole`` adds
  ``fxopt.capture`` with ``FXOPT_BLOCK_CAPTURE=0``. Ratio = torch's seconds / fxopt's.
- the headline command ``fxopt run --passes unroll,dedupe zoo:ocr`` (its own stage line), first run and a
  re-run from the compile cache, each in a fresh process (wall seconds include Python start-up).
- ``optimize(program, "split")`` on a 50k-node graph: seconds beyond the pass itself.

Goals (issue 30): capture >= 5x faster than export + decompositions on models with repeated blocks; the
headline command under 60 s; a cached re-run under 5 s; optimize overhead under 0.5 s at 50k nodes.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys
import tempfile
import time
import warnings

import torch
from torch import nn

import fxopt
from benchmarks.timing import load_average
from fxopt.ir.capture import blocks, eval_mode

MODELS = ("ocr", "resnet50", "llama8", "synthetic5000", "synthetic20000", "synthetic50000")
HEADLINE = ["run", "--passes", "unroll,dedupe", "zoo:ocr"]


class SyntheticBlock(nn.Module):
    """20 core-ATen nodes: a norm, two projections, a gate and a residual."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.a = nn.Linear(width, width)
        self.b = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        h = torch.tanh(self.a(h)) * torch.sigmoid(self.b(h))
        return x + torch.relu(h) + h * 0.5 - x


class SyntheticStack(nn.Module):
    """``depth`` SyntheticBlocks in a row: about ``20 * depth`` nodes once captured."""

    def __init__(self, depth: int, width: int = 16) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(SyntheticBlock(width) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def build(name: str) -> tuple[nn.Module, tuple]:
    """The model and example inputs benchmarked as ``name`` (see MODELS)."""
    torch.manual_seed(0)
    if name.startswith("synthetic"):
        return SyntheticStack(int(name[len("synthetic"):]) // 20).eval(), (torch.randn(8, 16),)
    if name == "llama8":
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(vocab_size=1000, hidden_size=128, num_hidden_layers=8, num_attention_heads=4,
                             num_key_value_heads=2, intermediate_size=256, max_position_embeddings=128,
                             use_cache=False)
        model = LlamaForCausalLM(config).eval()
        return _Logits(model).eval(), (torch.randint(3, 1000, (2, 32)),)
    return fxopt.zoo.get(name)


class _Logits(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids).logits


def _quiet():
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
    return stack


def torch_export_seconds(model: nn.Module, inputs: tuple) -> tuple[float, int]:
    """Seconds of torch.export (non-strict) + run_decompositions, and the node count."""
    start = time.perf_counter()
    with _quiet(), eval_mode(model), torch.no_grad():
        ep = torch.export.export(model, inputs, strict=False).run_decompositions()
    return time.perf_counter() - start, len(ep.graph.nodes)


def capture_seconds(model: nn.Module, inputs: tuple, blockwise: bool = True) -> tuple[float, int, str]:
    """Seconds of fxopt.capture, its node count and how it captured."""
    old = os.environ.get(blocks.ENV_SWITCH)
    os.environ[blocks.ENV_SWITCH] = "1" if blockwise else "0"
    try:
        start = time.perf_counter()
        with _quiet():
            program = fxopt.capture(model, inputs)
        return time.perf_counter() - start, len(program.graph.nodes), program.capture_summary
    finally:
        if old is None:
            os.environ.pop(blocks.ENV_SWITCH, None)
        else:
            os.environ[blocks.ENV_SWITCH] = old


def headline(cache_dir: str) -> list[tuple[str, float, str]]:
    """``(label, wall seconds, the command's own time line)`` of the headline command: first run (no cache
    entry yet) and the re-run served by the compile cache, each in a fresh process."""
    rows = []
    env = {k: v for k, v in os.environ.items() if k != "FXOPT_NO_CACHE"}
    for label in ("first run", "cached re-run"):
        with tempfile.TemporaryDirectory() as out:
            cmd = [sys.executable, "-m", "fxopt.tools.cli", *HEADLINE, "--out", out, "--cache", cache_dir]
            start = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            wall = time.perf_counter() - start
        line = next((ln for ln in done.stdout.splitlines() if ln.startswith("time:")), "")
        if done.returncode != 0:
            line = f"exit {done.returncode}: {(done.stderr or done.stdout).strip().splitlines()[-1:]}"
        elif not line:
            line = next((ln for ln in done.stdout.splitlines() if "cache" in ln.lower()), "")
        rows.append((label, wall, line.strip()))
    return rows


def optimize_overhead(nodes: int = 50_000) -> dict:
    """Seconds of ``optimize(program, "split{target=xla}")`` on a ``nodes``-node graph
    (benchmarks.split_graphs'), verification off: ``{"copy": optimize on a copy (the library default),
    "inplace": optimize in place (what the CLI does), "pass_copy"/"pass_inplace": the pass itself in each}``."""
    from benchmarks.split_graphs import branched_program

    program = branched_program(nodes)
    program.ensure_compiled()
    spec = "split{target=xla}"
    out = {}
    for label, inplace in (("copy", False), ("inplace", True)):
        start = time.perf_counter()
        result = fxopt.optimize(program, spec, target="xla", verify=False, inplace=inplace)
        out[label] = time.perf_counter() - start
        out[f"pass_{label}"] = result.reports[0].seconds
    return out


def main(argv=None) -> dict:
    """Run the benchmark (see the module doc); prints one table and returns the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--whole", action="store_true", help="also time fxopt.capture without block-wise capture")
    parser.add_argument("--no-headline", action="store_true")
    parser.add_argument("--no-overhead", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"load average at start: {load_average():.2f}")
    warm, warm_inputs = build("synthetic100")
    torch_export_seconds(warm, warm_inputs)
    capture_seconds(warm, warm_inputs)
    figures: dict = {"models": {}}
    print(f"{'model':16s} {'nodes':>7s} {'export+decomp':>14s} {'fxopt.capture':>14s} {'ratio':>7s}"
          + (f" {'capture whole':>14s}" if args.whole else "") + "  how")
    for name in [m for m in args.models.split(",") if m]:
        model, inputs = build(name)
        export_s, export_nodes = torch_export_seconds(model, inputs)
        cap_s, nodes, how = capture_seconds(model, inputs)
        row = {"export_s": export_s, "export_nodes": export_nodes, "capture_s": cap_s, "nodes": nodes,
               "ratio": export_s / cap_s, "how": how or "whole-model export"}
        line = f"{name:16s} {nodes:7d} {export_s:13.2f}s {cap_s:13.2f}s {export_s / cap_s:6.2f}x"
        if args.whole:
            row["capture_whole_s"] = capture_seconds(model, inputs, blockwise=False)[0]
            line += f" {row['capture_whole_s']:13.2f}s"
        figures["models"][name] = row
        print(f"{line}  {row['how']}", flush=True)
    if not args.no_headline:
        with tempfile.TemporaryDirectory() as cache:
            figures["headline"] = headline(cache)
        for label, wall, line in figures["headline"]:
            print(f"fxopt {' '.join(HEADLINE)} ({label}): {wall:.1f} s wall; {line}")
    if not args.no_overhead:
        o = figures["overhead_50k"] = optimize_overhead()
        for label in ("copy", "inplace"):
            print(f"optimize(program, 'split') at 50k nodes, {label}: {o[label]:.2f} s, the pass "
                  f"{o[f'pass_{label}']:.2f} s, overhead {o[label] - o[f'pass_{label}']:.2f} s")
    print(f"load average at end: {load_average():.2f}")
    return figures


if __name__ == "__main__":
    main()
