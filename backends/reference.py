"""The reference backend: the optimized FX graph run by PyTorch eagerly on the CPU.

Always available; the oracle other backends are checked against. Its artifact is one partition: the graph
as JSON plus its weights as safetensors (see :mod:`fxopt.ir.serialize`), loadable without the model's code.
"""
from __future__ import annotations

import os

import torch

from fxopt.backends.base import BackendDefaults, Compiled, capture_notes, common_kwargs, io_specs
from fxopt.backends.fast_graph import fast_forward
from fxopt.backends.reinplace import inplace_plan
from fxopt.ir import serialize
from fxopt.ir.program import Program
from fxopt.backends import decode


class ReferenceCompiled(Compiled):
    """A flat GraphModule run eagerly."""

    backend = "reference"

    def __init__(self, graph_module: torch.fx.GraphModule, inplace_ops: list[str] | None = None, **kwargs):
        """``graph_module``: the flat graph; ``inplace_ops``: its ops the runtime writes in place (saved
        with the artifact; None plans them from the graph's shapes); other keyword arguments as in
        :class:`Compiled`."""
        super().__init__(**kwargs)
        self.graph_module = graph_module
        self.inplace_ops = inplace_plan(graph_module.graph) if inplace_ops is None else list(inplace_ops)
        self._forward = fast_forward(graph_module, self.inplace_ops)

    def run_flat(self, flat_inputs: list) -> tuple:
        """Run the graph; returns its flat outputs."""
        out = self._forward(*flat_inputs)
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)

    def write_partitions(self, directory: str) -> list[dict]:
        """Write ``graph.json`` + ``graph.safetensors``; returns the single partition entry."""
        files = serialize.save_graph_module(self.graph_module, directory, stem="graph")
        return [{
            "name": "main",
            "device": "cpu",
            "runtime": "pytorch-eager",
            "files": sorted(os.path.basename(f) for f in files),
            "inplace_ops": self.inplace_ops,
            "steps": {
                "done_here": ["graph serialized", "weights saved (safetensors)", "runs with PyTorch eager"],
                "left_for_target": [],
            },
        }]


class ReferenceBackend(BackendDefaults):
    """Compiles a Program to a :class:`ReferenceCompiled` and loads saved ones (a :class:`Backend`: no
    options, runs every op)."""

    name = "reference"
    target = "reference"

    def compile(self, program: Program) -> ReferenceCompiled:
        """Take ``program`` (left unmodified) and return a runnable artifact sharing its weights. Programs
        with a decode loop get the decode runtime (encoder, then steps or partitions with early stop)."""
        if decode.uses_runtime(program):
            return decode.compile(program)
        prog = program.copy()
        prog.ensure_compiled()
        inputs, outputs = io_specs(prog)
        return ReferenceCompiled(
            prog.graph_module, name=prog.name, in_spec=prog.in_spec, out_spec=prog.out_spec,
            input_specs=inputs, output_specs=outputs, trace=prog.trace_json(),
            passes=[r.spec for r in prog.reports if r.status == "ran"],
            extra={"dynamic_dims": prog.dynamic_dims, "source": prog.source, **capture_notes(prog)},
        )

    def load(self, directory: str, manifest: dict) -> ReferenceCompiled:
        """Rebuild the artifact in ``directory`` described by ``manifest``."""
        if manifest.get("runtime") == "decode-partitions":
            return decode.load(directory, manifest)
        gm = serialize.load_graph_module(directory, stem="graph")
        inplace = manifest["partitions"][0].get("inplace_ops", []) if manifest["partitions"] else []
        return ReferenceCompiled(gm, inplace_ops=inplace, **common_kwargs(manifest))
