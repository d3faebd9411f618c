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
    manifest["accelerator_ops"], manifest["total_ops"]        ops (not getitem/bookkeeping) on the accelerator
    manifest["accelerator_flops_fraction"]                    and in all; their share of the FLOPs (0.0 if none)
    manifest["accelerator_warning"]    the one-line "no/little <target> work" note, or null (no_accelerator_work)
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
from fxopt.ir import loops, loops_batch, serialize
from fxopt.ir.program import Program, fetch_attr
from fxopt.ir.nodes import packet_name
from fxopt.ir.partitions import accelerator_work, node_flops, partition_module, partitions_region, placements
from fxopt.ir.targets import TARGETS, is_bookkeeping, support_table
from safetensors.torch import save_file
from safetensors.torch import load_file
from fxopt.backends import decode

__all__ = ["StagePlan", "Stage", "TorchStage", "PartitionedCompiled", "plan_stages", "compile_partitioned",
           "load_partitioned", "compile_decode", "load_decode", "record_values", "safe_file", "CONSTANTS_FILE", "MIN_ACCELERATOR_FRACTION",
           "WORK_KEYS", "work_summary", "no_accelerator_work"]

CONSTANTS_FILE = "constants.safetensors"

#: Below this share of the FLOPs on the accelerator, an accelerator artifact says so (one warning line, see
#: :func:`no_accelerator_work`); ``fxopt run --min-accelerator-fraction`` overrides it.
MIN_ACCELERATOR_FRACTION = 0.05

#: The manifest keys of :func:`work_summary` (top level, beside ``target``).
WORK_KEYS = ("accelerator_ops", "total_ops", "accelerator_flops_fraction")


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

    #: whether :meth:`run_native` takes and returns the runtime's own arrays (XLA: jax.Arrays)
    native = False

    def run(self, args: list) -> tuple:  # pragma: no cover - abstract
        """Run on the input values (torch tensors, in ``inputs`` order); returns the output tensors."""
        raise NotImplementedError

    def run_native(self, args: list) -> tuple:
        """Run on torch tensors or this runtime's own arrays; returns outputs in the runtime's own form, so
        the next partition of the same runtime takes them without a conversion. Default: :meth:`run`."""
        return self.run(args)

    def to_host(self, value: Any) -> Any:
        """A value :meth:`run_native` returned, as a torch tensor (default: unchanged)."""
        return value

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

    Raises BackendError for decode-loop programs (:func:`compile_decode` compiles their pieces) and for a
    program split for another target."""

    if decode.uses_runtime(program):
        raise BackendError(f"program '{program.name}' has a decode loop: its backend compiles each piece "
                           "(compile_decode)")
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
def _unchanged(value: Any) -> Any:
    return value


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

    @property
    def native(self) -> bool:
        """Whether :meth:`run_flat_native` may take and return a runtime's own arrays (some stage does)."""
        return any(stage.native for stage in self.stages)

    def to_host(self, value: Any) -> Any:
        """A value :meth:`run_flat_native` returned, as a torch tensor."""
        convert = self.__dict__.get("_to_host")
        if convert is None:   # the first native stage's conversion (one runtime per artifact), found once
            convert = next((stage.to_host for stage in self.stages if stage.native), _unchanged)
            self._to_host = convert
        return convert(value)

    def run_flat(self, flat_inputs: list) -> tuple:
        """Run every stage in order; returns the flat outputs (torch tensors)."""
        return tuple(self.to_host(v) for v in self.run_flat_native(flat_inputs))

    def run_flat_native(self, flat_inputs: list) -> tuple:
        """Run every stage in order, values passing between partitions of one runtime in its own arrays
        (converted only where a PyTorch partition reads them); returns the flat outputs, each a torch tensor
        or the runtime's own array (see :meth:`to_host`)."""
        env: dict[str, Any] = dict(zip(self.placeholders, flat_inputs))
        for stage in self.stages:
            try:
                args = [env[name] for name in stage.inputs]
            except KeyError as exc:
                raise BackendError(f"partition '{stage.name}' reads {exc}, which no earlier partition "
                                   "makes; the artifact is inconsistent, re-create it") from None
            values = stage.run_native(args) if stage.native else stage.run([self.to_host(a) for a in args])
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
    stages as :class:`TorchStage`; returns the runnable :class:`PartitionedCompiled`. Decode-loop programs
    go through :func:`compile_decode` instead."""
    prog = program.copy()
    prog.ensure_compiled()
    stages: list[Stage] = []
    for plan in plan_stages(prog, target):
        stages.append(TorchStage.from_plan(plan) if plan.device == "cpu" else compile_stage(plan))
    refs, constants = _output_refs(prog)
    inputs, outputs = io_specs(prog)
    work = accelerator_work(prog, target, is_bookkeeping)
    idle = no_accelerator_work(prog, target, stages, work=work)
    extra = {**(extra or {}), **work_summary(work), "accelerator_warning": idle}
    if idle:
        extra["notes"] = [*extra.get("notes", []), idle]
    return PartitionedCompiled(
        stages, [p.name for p in prog.placeholders()], refs, constants, backend,
        name=prog.name, in_spec=prog.in_spec, out_spec=prog.out_spec, input_specs=inputs,
        output_specs=outputs, trace=prog.trace_json(),
        passes=[r.spec for r in prog.reports if r.status == "ran"],
        extra={"dynamic_dims": prog.dynamic_dims, "source": prog.source, **capture_notes(prog), "target": target,
               **(extra or {})})


def compile_decode(program: Program, backend: str, target: str,
                   compile_piece: Callable[[Program], PartitionedCompiled]) -> "decode.PiecewiseDecode":
    """Compile a decode-loop ``program`` (``unroll`` partitions) for an accelerator backend: each piece
    (encoder, init, each partition) becomes a Program of its own, with the example inputs it gets when the
    program runs on its example, and is compiled by ``compile_piece`` (the backend's own ``compile``). A
    piece the backend refuses runs with PyTorch eager on the host, said in one note line per piece (and in
    the artifact's ``accelerator_warning`` when no piece runs on ``target``). Returns the
    :class:`~fxopt.backends.decode.PiecewiseDecode` the host drives, checking EOS between calls. Raises
    BackendError for the step loop (its step changes shape every step: unroll first)."""
    plan = decode.plan_of(program)
    if plan["variant"] == "loop":
        raise BackendError(f"program '{program.name}' is a decode step loop, whose step graph changes shape every "
                           f"step; {target} compiles fixed shapes: run unroll first (partitions, the default of "
                           f"--backend {target}'s pipeline) or unroll{{mode=full}}")
    prog = program.copy()
    prog.ensure_compiled()
    names = decode.piece_names(plan)
    examples = _piece_inputs(prog, set(names))
    split = (loops.decode_region(prog) or {}).get("piece_partitions") or {}   # split's plan per piece
    pieces: dict[str, PartitionedCompiled] = {}
    notes: list[str] = []
    works: list[dict] = []
    for name in names:
        piece = Program(graph_module=getattr(prog.graph_module, name), example_inputs=tuple(examples[name]),
                        name=f"{prog.name}.{name}", source=prog.source, target=target,
                        regions=[split[name]] if name in split else [])
        if prog.dynamic_dims:   # a dynamic-batch decode loop: each piece names its own symbolic dims
            piece.dynamic_dims = loops_batch.input_dims(piece)
        works.append(accelerator_work(piece, target, is_bookkeeping))
        try:
            compiled = compile_piece(piece)
        except (InputError, BackendError) as exc:
            notes.append(f"decode piece {name} runs with PyTorch eager on the host: {target} refused it "
                         f"({str(exc).splitlines()[0][:200]})")
            compiled = _host_only(piece, backend, target)
        for stage in compiled.stages:          # unique file stems: every piece names its stages main, ...
            stage.name = f"{name}_{stage.name}"
        pieces[name] = compiled
    on_target = [n for n, c in pieces.items() if any(st.device != "cpu" for st in c.stages)]
    flops = sum(w.get("flops", 0.0) for w in works)
    work = {"accelerator_ops": sum(w["accelerator_ops"] for w in works), "total_ops": sum(w["total_ops"] for w in works),
            "accelerator_flops_fraction": (sum(w["accelerator_flops_fraction"] * w.get("flops", 0.0) for w in works)
                                           / flops if flops else 0.0)}
    why = notes[0] if notes else next((c.extra["accelerator_warning"] for c in reversed(pieces.values())
                                      if c.extra.get("accelerator_warning")), "no piece has an op for it")
    why = why.split(": ", 1)[1] if why.startswith(f"no {target} partition: ") else why
    idle = None if on_target else f"no {target} partition in any decode piece: {why}"
    inputs, outputs = io_specs(prog)
    first = pieces[names[0]].extra
    return decode.PiecewiseDecode(
        pieces, plan, backend, name=prog.name, in_spec=prog.in_spec, out_spec=prog.out_spec, input_specs=inputs,
        output_specs=outputs, trace=prog.trace_json(), passes=[r.spec for r in prog.reports if r.status == "ran"],
        extra={"dynamic_dims": prog.dynamic_dims, "source": prog.source, **capture_notes(prog), "target": target,
               **({"backend_options": first["backend_options"]} if "backend_options" in first else {}),
               **work, "accelerator_warning": idle, "decode_pieces_on_target": on_target,
               **({"notes": notes} if notes else {})})


def _piece_inputs(program: Program, names: set[str]) -> dict[str, list]:
    """``{submodule name: its flat example inputs}`` from one run of ``program`` on its example inputs
    (the first call of each named submodule)."""
    seen: dict[str, list] = {}

    class _Recorder(torch.fx.Interpreter):
        def call_module(self, target, args, kwargs):
            if target in names and target not in seen:
                seen[target] = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
            return super().call_module(target, args, kwargs)

    with torch.no_grad():
        _Recorder(program.graph_module).run(*program.flat_example_inputs())
    return seen


def _host_only(piece: Program, backend: str, target: str) -> PartitionedCompiled:
    """``piece`` as one PyTorch-eager stage (what runs a piece the accelerator refused)."""
    piece.ensure_compiled()
    record = _whole_graph_record(piece, "cpu")
    module = partition_module(piece, record, {n.name: n for n in piece.graph.nodes})
    stage = TorchStage(module, "main", "cpu", record["inputs"], record["outputs"])
    refs, constants = _output_refs(piece)
    inputs, outputs = io_specs(piece)
    return PartitionedCompiled([stage], [p.name for p in piece.placeholders()], refs, constants, backend,
                               name=piece.name, in_spec=None, out_spec=None, input_specs=inputs,
                               output_specs=outputs, extra={"target": target})


def work_summary(work: dict) -> dict:
    """The manifest's ``accelerator_ops`` / ``total_ops`` / ``accelerator_flops_fraction`` from an
    :func:`fxopt.ir.partitions.accelerator_work` dict."""
    return {key: work[key] for key in WORK_KEYS}


def no_accelerator_work(program: Program, target: str, stages: list | None = None,
                        min_fraction: float | None = None, work: dict | None = None) -> str | None:
    """One line saying why an artifact for accelerator ``target`` does (almost) no ``target`` work, naming the
    fix; None when it does enough.

    It fires when no stage runs on ``target`` (``stages``: the compiled stages, or None to judge by the
    placements alone), when no op does, or when the ``target`` share of the FLOPs is below ``min_fraction``
    (default :data:`MIN_ACCELERATOR_FRACTION`; 0 turns that check off; a graph without FLOPs never fails it).
    The line starts ``no <target> partition:`` (or ``no <target> work:`` / ``little <target> work:``), says
    why from ``split``'s region and each node's ``placement_reason`` (the cost policy's objective, the
    unsupported op that blocks the most FLOPs or is the most common, accelerator islands under ``min_ops``)
    and names the fix (``split{objective=throughput}``, ``policy=support``, ``min_ops=1``, or the op to
    replace). ``work``: :func:`fxopt.ir.partitions.accelerator_work` of ``program``, when the caller has it."""
    min_fraction = MIN_ACCELERATOR_FRACTION if min_fraction is None else min_fraction
    work = work if work is not None else accelerator_work(program, target, is_bookkeeping)
    no_stage = stages is not None and not any(stage.device != "cpu" for stage in stages)
    no_ops = work["total_ops"] > 0 and work["accelerator_ops"] == 0
    fraction = work["accelerator_flops_fraction"]
    low = work.get("flops", 0.0) > 0 and fraction < min_fraction
    if not (no_stage or no_ops or low):
        return None
    why, fix = _shortfall_reason(program, target)
    if no_stage or no_ops:
        head = f"no {target} partition" if no_stage else f"no {target} work"
        return (f"{head}: {why}, so the artifact does no {target} work and runs with PyTorch eager on the host; "
                f"{fix}")
    return (f"little {target} work: {work['accelerator_ops']} of {work['total_ops']} ops and {fraction:.1%} of "
            f"the FLOPs run on {target} (below the minimum {min_fraction:.0%}): {why}; {fix}")


def _shortfall_reason(program: Program, target: str) -> tuple[str, str]:
    """(why the ops are on the CPU, the fix) from ``split``'s region and the nodes' placement reasons."""
    region = partitions_region(program, required=False) or {}
    where = placements(program, target)
    pinned = set(region.get("unsupported") or {})
    has_reasons = any("placement_reason" in n.meta for n in program.graph.nodes)
    gm = program.graph_module
    bounds: dict = {}
    blocked_flops: dict[str, float] = {}
    blocked_count: dict[str, int] = {}
    blocked_why: dict[str, str] = {}
    supported_on_cpu = fell = 0
    cpu_flops = 0.0
    for node in program.graph.nodes:
        if node.op != "call_function" or is_bookkeeping(node) or where.get(node.name, "cpu") != "cpu":
            continue
        flops = node_flops(node, gm, bounds)
        cpu_flops += flops
        reason = str(node.meta.get("placement_reason") or "")
        packet = packet_name(node.target)
        unsupported = reason.startswith("unsupported on") if has_reasons else packet in pinned
        if unsupported:
            name = packet if "::" in packet else f"aten::{packet}"
            blocked_flops[name] = blocked_flops.get(name, 0.0) + flops
            blocked_count[name] = blocked_count.get(name, 0) + 1
            blocked_why.setdefault(name, reason.split(": ", 1)[-1] if reason else f"unsupported on {target}")
        else:
            supported_on_cpu += 1
            fell += reason.startswith("min_ops")
    blocker = None
    if blocked_count:
        blocker = max(blocked_count, key=lambda k: (blocked_flops[k], blocked_count[k], k))
    blocker_text = ""
    if blocker is not None:
        share = blocked_flops[blocker] / cpu_flops if cpu_flops > 0 else 0.0
        blocker_text = (f"{blocker} (x{blocked_count[blocker]}" + (f", {share:.0%} of the CPU FLOPs" if share else "")
                        + f"): {blocked_why[blocker]}")
    if region.get("policy") == "cost" and supported_on_cpu:
        objective = region.get("objective", "latency")
        why = (f"split's cost policy (objective={objective}, {region.get('profile', '?')} profile) found no "
               f"placement better than the CPU alone{_estimate_text(region)}")
        if blocker_text:
            why += f", and {target} does not support {blocker_text}"
        other = [f"split{{target={target},objective=throughput}}"] if objective != "throughput" else []
        fix = ("try " + " or ".join(other + [f"split{{target={target},policy=support}}"]) +
               f" (places every supported op on {target})")
        return why, fix
    if blocker_text:
        elsewhere = _targets_supporting(program, target, blocker)
        return (f"blocked by {blocker_text}",
                f"replace or decompose {blocker} before split" +
                (f", or compile for {' or '.join(elsewhere)}, which support it" if elsewhere else ""))
    if fell:
        return (f"its {target} islands are smaller than split's min_ops={region.get('min_ops', '?')}",
                f"split{{target={target},min_ops=1}} keeps small {target} partitions")
    return ("split put every op on the CPU",
            f"split{{target={target},policy=support}} places every supported op on {target}")


def _targets_supporting(program: Program, target: str, op: str) -> list[str]:
    """The other accelerator targets (``--backend`` names) whose op table takes the nodes of packet ``op``."""
    nodes = [n for n in program.graph.nodes if n.op == "call_function"
             and (lambda p: (p if "::" in p else f"aten::{p}"))(packet_name(n.target)) == op]
    found = []
    for other in TARGETS:
        if other == target or not nodes:
            continue
        try:
            table = support_table(other)
            if all(table.supports(n) for n in nodes):
                found.append(other)
        except Exception:  # noqa: BLE001 - a hint only: a table that cannot be read names nothing
            continue
    return found


def _estimate_text(region: dict) -> str:
    estimate = region.get("estimate") or {}
    before = estimate.get("before")
    if isinstance(before, (int, float)) and estimate.get("unit") == "usd_per_million_requests":
        return f" (${before:.3g} per million requests estimated)"
    if isinstance(before, (int, float)) and estimate.get("unit") == "us_per_request":
        return f" ({before:.3g} us estimated)"
    seconds = (region.get("estimated_time") or {}).get("before")
    return f" ({seconds * 1e6:.3g} us estimated)" if isinstance(seconds, (int, float)) else ""


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
    kwargs = common_kwargs(manifest)
    kept = {k: manifest[k] for k in (*WORK_KEYS, "accelerator_warning") if k in manifest}
    if kept:
        kwargs["extra"] = kept
    return PartitionedCompiled(stages, stitch["placeholders"], stitch["outputs"], constants, backend, **kwargs)


def load_decode(directory: str, manifest: dict, backend: str,
                load_piece: Callable[[str, dict], Compiled]) -> "decode.PiecewiseDecode":
    """Rebuild a saved :class:`~fxopt.backends.decode.PiecewiseDecode`: each piece by ``load_piece``
    (the backend's own ``load``) from a manifest of its tagged partition entries and its keys in
    ``manifest["pieces"]``."""
    pieces_meta = manifest.get("pieces")
    if not isinstance(pieces_meta, dict) or not isinstance(manifest.get("decode"), dict):
        raise InputError(f"{directory}: decode manifest without 'pieces' or 'decode'; re-create the artifact")
    pieces = {}
    for name, meta in pieces_meta.items():
        if not isinstance(meta, dict):
            raise InputError(f"{directory}: decode piece {name!r} is not an object; the artifact is corrupt")
        entries = [e for e in manifest["partitions"] if isinstance(e, dict) and e.get("piece") == name]
        piece_manifest = {**{k: v for k, v in manifest.items() if k not in ("runtime", "decode", "pieces")},
                          **meta, "partitions": entries, "in_spec": None, "out_spec": None, "in_structure": None,
                          "out_structure": None, "program": f"{manifest.get('program', 'model')}.{name}"}
        pieces[name] = load_piece(directory, piece_manifest)
    kwargs = common_kwargs(manifest)
    kwargs["extra"] = {k: manifest[k] for k in ("dynamic_dims", "source", "target", "accelerator_warning",
                                                 "decode_pieces_on_target") if k in manifest}
    return decode.PiecewiseDecode(pieces, manifest["decode"], backend, **kwargs)


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
