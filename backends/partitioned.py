"""Partitioned artifacts: what every accelerator backend (xla, tensorrt, neuron) shares.

A program that went through ``split`` holds a ``partitions`` region: the graph cut into CPU and accelerator
partitions in execution order. :func:`plan_stages` turns it into :class:`StagePlan` s (one runnable
GraphModule per partition, reading and writing values by name). Without a region the whole graph is one
accelerator stage. A backend compiles the accelerator stages into its own :class:`Stage` subclass; CPU
stages become :class:`TorchStage` s (PyTorch eager, saved like the reference backend's graph).
:class:`PartitionedCompiled` runs the stages in order, passing values by name, and saves them.

Artifact layout (beside the manifest's usual keys)::

    manifest["stitch"] = {"placeholders": [graph input names, in order],
                          "outputs": [{"value": name} | {"constant": key} | {"literal": v}, ...]}
    manifest["partitions"] = [{"name", "device", "runtime", "inputs", "outputs", "files",
                               "steps": {"done_here", "left_for_target"}, ...backend keys}, ...]
    constants.safetensors     graph outputs that are weights (rare), when there are any

A stage's files are plain names inside the artifact directory; :func:`safe_file` refuses anything else.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.fx

from fxopt.backends.base import Compiled, capture_notes, common_kwargs, io_specs
from fxopt.backends.fast_graph import fast_forward
from fxopt.backends.reinplace import inplace_plan
from fxopt.errors import BackendError, InputError
from fxopt.ir import serialize
from fxopt.ir.program import Program, fetch_attr
from fxopt.ir.partitions import partition_module, partitions_region
from safetensors.torch import save_file
from safetensors.torch import load_file
from fxopt.backends import decode

__all__ = ["StagePlan", "Stage", "TorchStage", "PartitionedCompiled", "plan_stages", "compile_partitioned",
           "load_partitioned", "record_values", "safe_file", "CONSTANTS_FILE"]

CONSTANTS_FILE = "constants.safetensors"


@dataclass
class StagePlan:
    """One partition to compile: ``module`` takes the values named ``inputs`` positionally and returns a
    tuple of the values named ``outputs``; ``device`` is ``"cpu"`` or the backend's target. Weights are
    shared with the program (read them, never modify them)."""

    name: str
    device: str
    module: torch.fx.GraphModule
    inputs: list[str]
    outputs: list[str]


class Stage:
    """A compiled partition. Subclasses set ``runtime`` and implement :meth:`run` and :meth:`write`."""

    runtime = "base"

    def __init__(self, name: str, device: str, inputs: list[str], outputs: list[str]):
        """``name``/``device``/``inputs``/``outputs`` as in :class:`StagePlan`."""
        self.name = name
        self.device = device
        self.inputs = list(inputs)
        self.outputs = list(outputs)

    def run(self, args: list) -> tuple:  # pragma: no cover - abstract
        """Run on the input values (torch tensors, in ``inputs`` order); returns the output tensors."""
        raise NotImplementedError

    def write(self, directory: str) -> dict:  # pragma: no cover - abstract
        """Write this stage's files into ``directory``; returns the manifest entry's backend keys: at least
        ``files`` (plain file names) and ``steps`` ({"done_here": [...], "left_for_target": [...]})."""
        raise NotImplementedError

    def compile_notes(self) -> list[str]:
        """One line per compile this stage made at run time (e.g. XLA: compiled, or reused from the
        persistent cache); none by default."""
        return []

    def entry(self, directory: str) -> dict:
        """The full manifest entry: name, device, runtime, inputs, outputs plus what :meth:`write` returns."""
        return {"name": self.name, "device": self.device, "runtime": self.runtime,
                "inputs": self.inputs, "outputs": self.outputs, **self.write(directory)}


class TorchStage(Stage):
    """A partition run eagerly by PyTorch (CPU partitions of every backend)."""

    runtime = "pytorch-eager"

    def __init__(self, module: torch.fx.GraphModule, name: str, device: str, inputs: list[str],
                 outputs: list[str], inplace_ops: list[str] | None = None):
        """``module``: the partition's GraphModule (see :class:`StagePlan`); ``inplace_ops``: its ops run in
        place (saved with the artifact; None plans them from the module's shapes)."""
        super().__init__(name, device, inputs, outputs)
        self.module = module
        self.inplace_ops = inplace_plan(module.graph) if inplace_ops is None else list(inplace_ops)
        self._forward = fast_forward(module, self.inplace_ops)

    @classmethod
    def from_plan(cls, plan: StagePlan) -> "TorchStage":
        """A TorchStage running ``plan.module``."""
        return cls(plan.module, plan.name, plan.device, plan.inputs, plan.outputs)

    def run(self, args: list) -> tuple:
        """Run the module; returns its outputs as a tuple."""
        out = self._forward(*args)
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)

    def write(self, directory: str) -> dict:
        """Write ``<name>.json`` + ``<name>.safetensors`` (the safe graph format)."""
        files = serialize.save_graph_module(self.module, directory, stem=self.name)
        return {"files": sorted(os.path.basename(f) for f in files), "inplace_ops": self.inplace_ops,
                "steps": {"done_here": ["graph serialized", "weights saved (safetensors)",
                                        "runs with PyTorch eager on the host CPU"],
                          "left_for_target": []}}

    @classmethod
    def load(cls, directory: str, entry: dict) -> "TorchStage":
        """Rebuild a saved TorchStage from its manifest entry."""
        gm = serialize.load_graph_module(directory, stem=safe_stem(entry["name"]))
        return cls(gm, entry["name"], entry.get("device", "cpu"), entry["inputs"], entry["outputs"],
                   inplace_ops=entry.get("inplace_ops", []))


# ------------------------------------------------------------------------------------------ planning
def plan_stages(program: Program, target: str) -> list[StagePlan]:
    """The stages of ``program`` for a backend of ``target``: its ``split`` partitions when it has them
    (their device must be ``"cpu"`` or ``target``), else the whole graph as one ``target`` stage.

    Raises BackendError for decode-loop programs (only the reference backend runs those) and for a program
    split for another target."""

    if decode.uses_runtime(program):
        raise BackendError(f"program '{program.name}' has a decode loop (unroll partitions), which only the "
                           "reference backend runs; use --backend reference, or unroll{mode=full}")
    region = partitions_region(program, required=False)
    records = region["partitions"] if region is not None else [_whole_graph_record(program, target)]
    for rec in records:
        if rec["device"] not in ("cpu", target):
            raise BackendError(f"program '{program.name}' was split for '{rec['device']}', not '{target}'; "
                               f"run split{{target={target}}} instead")
    by_name = {n.name: n for n in program.graph.nodes}
    plans = []
    for rec in records:
        module = partition_module(program, rec, by_name)
        plans.append(StagePlan(rec["name"], rec["device"], module, list(rec["inputs"]), list(rec["outputs"])))
    return plans


def record_values(program: Program, flat_inputs: list, wanted: set[str]) -> dict[str, Any]:
    """Run ``program`` on ``flat_inputs`` (placeholder order, no grad) and return ``{name: value}`` for the
    nodes named in ``wanted``: the example values a backend traces or checks a stage with."""
    values: dict[str, Any] = {}

    class _Recorder(torch.fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            if n.name in wanted:
                values[n.name] = out
            return out

    with torch.no_grad():
        _Recorder(program.graph_module).run(*flat_inputs)
    return values


def _whole_graph_record(program: Program, device: str) -> dict:
    calls = [n for n in program.graph.nodes if n.op == "call_function"]
    members = set(calls)
    inputs = [p.name for p in program.placeholders() if p.users]
    outputs = []
    for a in _flat_outputs(program):
        if isinstance(a, torch.fx.Node) and a in members and a.name not in outputs:
            outputs.append(a.name)
    return {"name": "main", "device": device, "nodes": [n.name for n in calls],
            "inputs": inputs, "outputs": outputs}


def _flat_outputs(program: Program) -> list:
    outs = program.output_node().args[0]
    return list(outs) if isinstance(outs, (tuple, list)) else [outs]


def _output_refs(program: Program) -> tuple[list[dict], dict[str, torch.Tensor]]:
    refs, constants = [], {}
    for i, a in enumerate(_flat_outputs(program)):
        if isinstance(a, torch.fx.Node) and a.op == "get_attr":
            key = f"output_{i}"
            constants[key] = fetch_attr(program.graph_module, a.target).detach().contiguous()
            refs.append({"constant": key})
        elif isinstance(a, torch.fx.Node):
            refs.append({"value": a.name})
        elif a is None or isinstance(a, (bool, int, float, str)):
            refs.append({"literal": a})
        else:
            raise BackendError(f"program '{program.name}': output {i} is {type(a).__name__}, which a "
                               "partitioned artifact cannot hold; return tensors, numbers or None")
    return refs, constants


# ------------------------------------------------------------------------------------------ runtime
class PartitionedCompiled(Compiled):
    """Stages run in order, values passed by name; callable like the original model."""

    def __init__(self, stages: list[Stage], placeholders: list[str], output_refs: list[dict],
                 constants: dict[str, torch.Tensor], backend: str, **kwargs):
        """``stages`` in execution order; ``placeholders``: graph input names in flat-input order;
        ``output_refs``: one ``{"value"|"constant"|"literal": ...}`` per flat output; other keyword
        arguments as in :class:`~fxopt.backends.base.Compiled`."""
        super().__init__(**kwargs)
        self.backend = backend
        self.stages = stages
        self.placeholders = list(placeholders)
        self.output_refs = list(output_refs)
        self.constants = dict(constants)
        self.extra = {**self.extra, "stitch": {"placeholders": self.placeholders, "outputs": self.output_refs}}

    def run_flat(self, flat_inputs: list) -> tuple:
        """Run every stage in order; returns the flat outputs."""
        env: dict[str, Any] = dict(zip(self.placeholders, flat_inputs))
        for stage in self.stages:
            try:
                args = [env[name] for name in stage.inputs]
            except KeyError as exc:
                raise BackendError(f"partition '{stage.name}' reads {exc}, which no earlier partition "
                                   "makes; the artifact is inconsistent, re-create it") from None
            values = stage.run(args)
            if len(values) != len(stage.outputs):
                raise BackendError(f"partition '{stage.name}' returned {len(values)} values, expected "
                                   f"{len(stage.outputs)}")
            env.update(zip(stage.outputs, values))
        return tuple(self._resolve(ref, env) for ref in self.output_refs)

    def _resolve(self, ref: dict, env: dict) -> Any:
        if "value" in ref:
            return env[ref["value"]]
        if "constant" in ref:
            return self.constants[ref["constant"]]
        return ref.get("literal")

    def write_partitions(self, directory: str) -> list[dict]:
        """Write every stage (and the constant outputs); returns the manifest's partition entries."""
        entries = [stage.entry(directory) for stage in self.stages]
        if self.constants:

            save_file(self.constants, os.path.join(directory, CONSTANTS_FILE))
        return entries

    def summary(self) -> list[tuple[str, str, str]]:
        """``[(partition name, device, runtime), ...]`` in execution order."""
        return [(s.name, s.device, s.runtime) for s in self.stages]


def compile_partitioned(program: Program, backend: str, target: str,
                        compile_stage: Callable[[StagePlan], Stage], extra: dict | None = None
                        ) -> PartitionedCompiled:
    """Compile ``program`` (left unmodified) for ``backend``: accelerator stages by ``compile_stage``, CPU
    stages as :class:`TorchStage`; returns the runnable :class:`PartitionedCompiled`."""
    prog = program.copy()
    prog.ensure_compiled()
    stages: list[Stage] = []
    for plan in plan_stages(prog, target):
        stages.append(TorchStage.from_plan(plan) if plan.device == "cpu" else compile_stage(plan))
    refs, constants = _output_refs(prog)
    inputs, outputs = io_specs(prog)
    idle = no_accelerator_work(prog, target, stages)
    if idle:
        extra = {**(extra or {}), "notes": [*(extra or {}).get("notes", []), idle]}
    return PartitionedCompiled(
        stages, [p.name for p in prog.placeholders()], refs, constants, backend,
        name=prog.name, in_spec=prog.in_spec, out_spec=prog.out_spec, input_specs=inputs,
        output_specs=outputs, trace=prog.trace_json(),
        passes=[r.spec for r in prog.reports if r.status == "ran"],
        extra={"dynamic_dims": prog.dynamic_dims, "source": prog.source, **capture_notes(prog), "target": target,
               **(extra or {})})


def no_accelerator_work(program: Program, target: str, stages: list) -> str | None:
    """One line saying why an artifact for accelerator ``target`` has no ``target`` partition (its split put
    every op on the CPU), or None when some stage runs on ``target``."""
    if any(stage.device != "cpu" for stage in stages):
        return None
    region = partitions_region(program, required=False) or {}
    estimate = (region.get("estimated_time") or {}).get("before")
    why = (f"split's {region.get('policy', 'cost')} policy ({region.get('profile', '?')} profile) found no "
           f"placement faster than the CPU alone ({estimate * 1e6:.3g} us estimated)"
           if region.get("policy") == "cost" and isinstance(estimate, (int, float)) else
           "split put every op on the CPU")
    return (f"no {target} partition: {why}, so the artifact does no {target} work and runs with PyTorch eager "
            f"on the host; split{{target={target},policy=support}} places every supported op on {target}")


def load_partitioned(directory: str, manifest: dict, backend: str,
                     load_stage: Callable[[str, dict], Stage]) -> PartitionedCompiled:
    """Rebuild a saved :class:`PartitionedCompiled`: ``pytorch-eager`` partitions as TorchStages, the
    others by ``load_stage(directory, entry)``. Raises InputError for a manifest that is inconsistent or
    names files outside the directory."""
    stitch = manifest.get("stitch")
    if not isinstance(stitch, dict) or "placeholders" not in stitch or "outputs" not in stitch:
        raise InputError(f"{directory}: manifest has no 'stitch' section; re-create the artifact with `fxopt run`")
    stages: list[Stage] = []
    for entry in manifest["partitions"]:
        for key in ("name", "runtime", "inputs", "outputs"):
            if key not in entry:
                raise InputError(f"{directory}: partition entry without '{key}'; re-create the artifact")
        for f in entry.get("files", []):
            safe_file(directory, f)
        if entry["runtime"] == TorchStage.runtime:
            stages.append(TorchStage.load(directory, entry))
        else:
            stages.append(load_stage(directory, entry))
    constants: dict[str, torch.Tensor] = {}
    if any("constant" in ref for ref in stitch["outputs"]):

        constants = load_file(safe_file(directory, CONSTANTS_FILE))
    return PartitionedCompiled(stages, stitch["placeholders"], stitch["outputs"], constants, backend,
                               **common_kwargs(manifest))


def safe_stem(name: str) -> str:
    """``name`` if it is a plain file stem (letters, digits, ``_ - .``, not starting with a dot), else
    InputError: manifests must not steer reads outside the artifact directory."""
    if not isinstance(name, str) or not name or name.startswith(".") or not all(
            c.isalnum() or c in "_-." for c in name):
        raise InputError(f"manifest names a partition {name!r}, which is not a plain file name; "
                         "the artifact is corrupt or hostile")
    return name


def safe_file(directory: str, name: str) -> str:
    """The path of file ``name`` inside ``directory``; InputError when ``name`` is not a plain file name
    (no separators, no ``..``, not absolute), the file is missing, or it is a symbolic link
    (:func:`fxopt.ir.serialize.plain_file`)."""
    safe_stem(name)
    return serialize.plain_file(directory, name)
