"""The ``neuron`` backend: accelerator partitions as static-shape TorchScript for the AWS Neuron toolchain.

``fxopt.compile(program, "neuron")`` (or ``neuron{device=inf2,buckets=1;4;16,seq_buckets=64;128,instances=2}``):

``device`` is the Neuron generation (:data:`fxopt.ir.targets.NEURON_DEVICES`: ``inf1`` (default), ``inf2``,
``trn1``, ``trn2``); it picks the op list and the ``--target`` of the torch-neuronx compile script.

1. **op check**: every op of every accelerator partition is checked against the generation's documented
   operator list (:func:`fxopt.ir.targets.support_table`: torch-neuron's for inf1, torch-neuronx's for
   inf2/trn1/trn2); an unsupported op is a one-line
   BackendError naming the op and its source line and suggesting ``split{target=neuron}``, which keeps such
   ops on the CPU;
2. **trace**: each accelerator partition is traced with ``torch.jit.trace`` once per bucket shape
   (:mod:`fxopt.backends.neuron_buckets`; a static program has one), on example values computed by running
   the program on the (bucket-sized) example inputs; the trace is run against the eager partition and must
   match (the max error is recorded);
3. **artifact**: per partition ``<name>.fx.json`` + ``<name>.fx.safetensors`` (the safe graph format: what
   ``fxopt.load`` reads) and ``<name>.<bucket>.torchscript.pt`` per bucket (what the target host compiles),
   and in the manifest the exact ``torch_neuron.trace`` / ``torch_neuronx.trace`` script per file
   (:mod:`fxopt.backends.neuron_sdk`), the input shapes, the runtime settings and the steps done here / left
   for the target host.

Here the TorchScript partitions run on the CPU (runtime ``torchscript-cpu``), so the whole stitched program
is checked numerically. Where ``torch_neuronx``/``torch_neuron`` imports, the traces are also compiled for
real (untested: the SDK does not install with torch 2.13).

Loading: ``fxopt.load`` never runs ``torch.jit.load`` on the artifact's TorchScript files by default (a
TorchScript archive is code plus pickled constants); it rebuilds each partition from the safe FX format and
re-traces it at the recorded bucket shapes. Setting ``FXOPT_NEURON_LOAD=torchscript`` in the environment
(the user's choice, never the artifact's) loads the TorchScript files instead, after checking each file's
sha256 against the manifest: faster, for artifacts you produced yourself.
"""
from __future__ import annotations

import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx

from fxopt.backends import neuron_sdk
from fxopt.backends.base import BackendDefaults, io_specs
from fxopt.backends.neuron_buckets import BucketPlan, bucket_key, example_at, parse_sizes, plan_buckets
from fxopt.backends import decode
from fxopt.backends.partitioned import (PartitionedCompiled, Stage, StagePlan, compile_decode, compile_partitioned,
                                        load_decode, load_partitioned, plan_stages, record_values, safe_file, safe_stem)
from fxopt.ir.targets import NEURON_DEVICES, data_source, is_bookkeeping, neuron_operators, packet_name, support_table
from fxopt.ir.targets import neuron_device as _generation
from fxopt.errors import BackendError, InputError
from fxopt.ir import serialize
from fxopt.ir.files import file_sha256
from fxopt.ir.program import Program
from fxopt.ir.provenance import source_of
from fxopt.ir.numerics import first_difference, max_abs_error, output_depths

__all__ = ["NeuronBackend", "NeuronCompiled", "TorchScriptStage", "BucketTrace", "check_ops", "LOAD_ENV"]

BACKEND = "neuron"
TARGET = "neuron"
LOAD_ENV = "FXOPT_NEURON_LOAD"


# ============================================================================================ op check
def _toolchain(device: str) -> str:
    return "torch-neuron" if device == "inf1" else f"torch-neuronx ({device})"


def check_ops(plan: StagePlan, device: str = "inf1") -> Counter:
    """Check every op of accelerator partition ``plan`` against the operator list of Neuron generation
    ``device`` (torch-neuron's for inf1, torch-neuronx's for inf2/trn1/trn2); returns
    ``Counter({op packet: count})``. Raises BackendError (one line: op, source line, what to do) for the
    first unsupported op, InputError for an unknown device."""
    device = _generation(device)
    table = support_table(TARGET, device=device)
    ops: Counter = Counter()
    for node in plan.module.graph.nodes:
        if node.op != "call_function":
            continue
        why = table.why_not(node)
        if why is not None:
            prov = node.meta.get("provenance") or {}
            where = source_of(node)
            module = f" in {prov['module']}" if prov.get("module") else ""
            raise BackendError(f"partition '{plan.name}': {node.target} at {where}{module} (node {node.name}) "
                               f"is not supported by {_toolchain(device)}: {why}; add split{{target=neuron}} to the "
                               "pipeline to run it on the CPU")
        if not is_bookkeeping(node):
            ops[packet_name(node.target)] += 1
    return ops


# ============================================================================================ tracing
class _TensorOnly(torch.nn.Module):
    """``module`` with its non-tensor inputs and outputs (shape numbers, static within a bucket) baked in,
    so ``torch.jit.trace`` sees tensors only."""

    def __init__(self, module: torch.nn.Module, template: list, tensor_pos: list[int]):
        """``template``: one value per input (non-tensors are used as given); ``tensor_pos``: which inputs are
        tensors (the traced function's arguments, in order)."""
        super().__init__()
        self.module = module
        self.template = list(template)
        self.tensor_pos = list(tensor_pos)

    def forward(self, *tensors):
        """Run the module with the tensors placed among the baked values; returns its tensor outputs."""
        args = list(self.template)
        for pos, t in zip(self.tensor_pos, tensors):
            args[pos] = t
        out = self.module(*args)
        out = out if isinstance(out, (tuple, list)) else (out,)
        return tuple(o for o in out if isinstance(o, torch.Tensor))


@dataclass
class BucketTrace:
    """One static-shape trace of a partition: ``key`` (file-name part), ``bucket`` ({symbol: size}),
    ``inputs`` (specs: ``{"name", "shape", "dtype"}`` for tensors, ``{"name", "value"}`` for baked numbers),
    ``constants`` ({output position: number} for baked outputs), ``module`` (the ScriptModule run here),
    ``max_abs_error`` (trace vs eager, at compile time; None after a plain load), ``sha256`` of the saved
    file, and ``neuron_module``/``sdk`` when compiled by the Neuron SDK here."""

    key: str
    bucket: dict
    inputs: list[dict]
    constants: dict[int, Any]
    module: Any
    n_outputs: int
    max_abs_error: float | None = None
    sha256: str | None = None
    neuron_module: Any = None
    sdk: str | None = None

    def shape_key(self) -> tuple:
        """What selects this trace at run time: each input's shape (tensors) or value (numbers)."""
        return tuple(tuple(s["shape"]) if "shape" in s else ("value", s["value"]) for s in self.inputs)

    def tensor_specs(self) -> list[dict]:
        """The specs of the traced function's (tensor) inputs."""
        return [s for s in self.inputs if "shape" in s]


def _spec_of(name: str, value: Any) -> dict:
    if isinstance(value, torch.Tensor):
        return {"name": name, "shape": [int(d) for d in value.shape], "dtype": str(value.dtype).replace("torch.", "")}
    if isinstance(value, (bool, int, float)) or value is None:
        return {"name": name, "value": value}
    raise BackendError(f"partition input '{name}' is a {type(value).__name__}; neuron partitions take tensors "
                       "and numbers only")


def _trace(module: torch.fx.GraphModule, name: str, input_names: list[str], args: list, bucket: dict,
           check: bool, eager: tuple | None = None) -> BucketTrace:
    """Trace ``module`` at ``args``; with ``check`` compare the trace with the eager outputs (``eager``, or
    the module run here when not given; BackendError when they differ)."""

    specs = [_spec_of(n, a) for n, a in zip(input_names, args)]
    tensor_pos = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
    template = [None if isinstance(a, torch.Tensor) else a for a in args]
    if eager is None:
        with torch.no_grad():
            eager = module(*args)
    eager = tuple(eager) if isinstance(eager, (tuple, list)) else (eager,)
    constants = {i: v for i, v in enumerate(eager) if not isinstance(v, torch.Tensor)}
    bad = [v for v in constants.values() if not isinstance(v, (bool, int, float)) and v is not None]
    if bad:
        raise BackendError(f"partition '{name}' returns a {type(bad[0]).__name__}; neuron partitions return "
                           "tensors and numbers only")
    if len(constants) == len(eager):
        raise BackendError(f"partition '{name}' returns no tensor; there is nothing to compile for Neuron")
    wrapper = _TensorOnly(module, template, tensor_pos).eval()
    tensors = tuple(args[i] for i in tensor_pos)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(wrapper, tensors, check_trace=False, strict=False)
            got = traced(*tensors)
    except Exception as exc:  # noqa: BLE001 - torch.jit.trace raises many types
        raise BackendError(f"partition '{name}': torch.jit.trace failed at shapes "
                           f"{[list(t.shape) for t in tensors]}: {type(exc).__name__}: "
                           f"{str(exc).strip().splitlines()[0] if str(exc).strip() else '?'}") from exc
    got = _merge(got, constants, len(eager))
    error = None
    if check:
        problem = first_difference(eager, got, output_depths(module))
        if problem:
            raise BackendError(f"partition '{name}': the TorchScript trace does not reproduce the partition at "
                               f"bucket {bucket_key(bucket)}: {problem}")
        error = max_abs_error(eager, got)
    return BucketTrace(bucket_key(bucket), dict(bucket), specs, constants, traced, len(eager), error)


def _merge(tensors: Any, constants: dict[int, Any], n: int) -> tuple:
    tensors = list(tensors) if isinstance(tensors, (tuple, list)) else [tensors]
    it = iter(tensors)
    return tuple(constants[i] if i in constants else next(it) for i in range(n))


def _script_ops(module: Any) -> set[str]:
    """The TorchScript op names (``aten::addmm``...) in a traced module's inlined graph."""
    try:
        graph = module.inlined_graph
    except Exception:  # noqa: BLE001
        return set()
    return {n.kind() for n in graph.nodes() if n.kind().startswith("aten::")}


# ============================================================================================ stage
class TorchScriptStage(Stage):
    """An accelerator partition traced to static-shape TorchScript, one trace per bucket; run here on the
    CPU (or by the Neuron runtime when the SDK compiled it)."""

    runtime = "torchscript-cpu"

    def __init__(self, module: torch.fx.GraphModule, name: str, device: str, inputs: list[str],
                 outputs: list[str], traces: list[BucketTrace], ops: dict[str, int], loaded_from: str = "compile",
                 neuron_device: str = "inf1"):
        """``module``: the partition's FX GraphModule (saved for re-tracing); ``traces``: one per bucket;
        ``ops``: op counts from :func:`check_ops`; ``loaded_from``: "compile", "fx-retrace" or "torchscript";
        ``neuron_device``: the Neuron generation it was checked for (``inf1``...)."""
        super().__init__(name, device, inputs, outputs)
        self.neuron_device = neuron_device
        self.module = module
        self.traces = list(traces)
        self.ops = dict(ops)
        self.loaded_from = loaded_from
        self._by_shape = {t.shape_key(): t for t in self.traces}

    @classmethod
    def compile(cls, plan: StagePlan, examples: list[tuple[dict, list, tuple | None]],
                sdk: str | None = None, neuron_device: str = "inf1") -> "TorchScriptStage":
        """Check ``plan``'s ops against generation ``neuron_device``'s list and trace it once per ``(bucket,
        input values, eager output values or None)`` in ``examples``, checking each trace against the eager
        values; with ``sdk`` (see :func:`fxopt.backends.neuron_sdk.available_sdk`) also compile each trace for
        Neuron."""
        neuron_device = _generation(neuron_device)
        ops = check_ops(plan, neuron_device)
        traces = []
        for bucket, args, eager in examples:
            tr = _trace(plan.module, plan.name, plan.inputs, args, bucket, check=True, eager=eager)
            if sdk is not None:  # pragma: no cover - needs the Neuron SDK
                tensors = tuple(a for a in args if isinstance(a, torch.Tensor))
                tr.neuron_module, tr.sdk = neuron_sdk.compile_with_sdk(sdk, tr.module, tensors, neuron_device), sdk
            traces.append(tr)
        return cls(plan.module, plan.name, plan.device, plan.inputs, plan.outputs, traces, dict(ops),
                   neuron_device=neuron_device)

    def run(self, args: list) -> tuple:
        """Run the trace whose bucket matches the inputs' shapes; returns the partition's outputs. A shape
        with no trace is a BackendError (the artifact's buckets and the runtime disagree)."""
        key = tuple(tuple(a.shape) if isinstance(a, torch.Tensor) else ("value", a) for a in args)
        tr = self._by_shape.get(key)
        if tr is None:
            have = "; ".join(t.key for t in self.traces)
            raise BackendError(f"partition '{self.name}' has no trace for input shapes "
                               f"{[list(k) if k and k[0] != 'value' else k[1] for k in key]} (buckets: {have}); "
                               "compile with buckets covering this shape")
        if tr.module is None and tr.neuron_module is None:
            tr = self._trace_now(tr, list(args))
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        fn = tr.neuron_module if tr.neuron_module is not None else tr.module
        return _merge(fn(*tensors), tr.constants, tr.n_outputs)

    def _trace_now(self, pending: BucketTrace, args: list) -> BucketTrace:
        """Trace a bucket that was loaded without its trace (loading does no work the file sizes) at
        ``args``, which have that bucket's shapes; returns the trace, kept for later calls."""
        tr = _trace(self.module, self.name, self.inputs, args, pending.bucket, check=False)
        tr.key, tr.sha256 = pending.key, pending.sha256
        self.traces[self.traces.index(pending)] = tr
        self._by_shape[tr.shape_key()] = tr
        return tr

    # ---------------------------------------------------------------------------------------- saving
    def write(self, directory: str) -> dict:
        """Write ``<name>.fx.json/.safetensors`` and one ``<name>.<bucket>.torchscript.pt`` per trace (plus
        ``.neuronx.pt``/``.neuron.pt`` when compiled here); returns the manifest entry's keys."""
        stem = f"{self.name}.fx"
        files = [os.path.basename(f) for f in serialize.save_graph_module(self.module, directory, stem=stem)]
        entries, outside = [], set()
        listed = neuron_operators(self.neuron_device)
        for pending in list(self.traces):
            tr = pending if pending.module is not None else self._trace_now(
                pending, [_example_value(s) for s in pending.inputs])
            ts_file = f"{self.name}.{tr.key}.torchscript.pt"
            path = os.path.join(directory, ts_file)
            torch.jit.save(tr.module, path)
            tr.sha256 = file_sha256(path)
            files.append(ts_file)
            outside |= {op for op in _script_ops(tr.module) if op not in listed}
            entry = {"key": tr.key, "bucket": tr.bucket, "file": ts_file, "sha256": tr.sha256,
                     "inputs": tr.inputs, "n_outputs": tr.n_outputs,
                     "constants": {str(k): v for k, v in tr.constants.items()},
                     "max_abs_error": tr.max_abs_error,
                     "compile": neuron_sdk.compile_snippets(ts_file, tr.tensor_specs(), self.neuron_device),
                     "compile_script": "inf1" if self.neuron_device == "inf1" else "inf2_trn1"}
            if tr.neuron_module is not None:  # pragma: no cover - needs the Neuron SDK
                out = entry["compile"]["inf2_trn1" if tr.sdk == "torch_neuronx" else "inf1"]["output"]
                torch.jit.save(tr.neuron_module, os.path.join(directory, out))
                entry["neuron_file"] = out
                entry["neuron_sha256"] = file_sha256(os.path.join(directory, out))
                files.append(out)
            entries.append(entry)
        return {"files": sorted(files), "fx": stem, "traces": entries, "ops": dict(sorted(self.ops.items())),
                "neuron_device": self.neuron_device,
                "op_list": data_source(TARGET, self.neuron_device),
                "torchscript_ops_not_in_list": sorted(outside),
                "steps": self.steps()}

    def steps(self) -> dict:
        """``{"done_here": [...], "left_for_target": [...]}`` for this partition, honestly."""
        n_ops = sum(self.ops.values())
        buckets = ", ".join(t.key for t in self.traces)
        done = [f"op check against the {_toolchain(self.neuron_device)} operator list passed ({n_ops} ops, "
                f"{len(self.ops)} kinds)"]
        if self.loaded_from == "compile":
            errors = [t.max_abs_error for t in self.traces if t.max_abs_error is not None]
            done.append(f"traced to static-shape TorchScript ({len(self.traces)} bucket shape(s): {buckets})")
            done.append(f"numerics checked on CPU (max error {max(errors, default=0.0):.3g})")
        else:
            done.append(f"reloaded ({self.loaded_from}) as static-shape TorchScript ({buckets})")
        compiled = [t for t in self.traces if t.neuron_module is not None]
        if compiled:  # pragma: no cover - needs the Neuron SDK
            done.append(f"compiled with {compiled[0].sdk}.trace here (untested path)")
            left = ["run and check numerics on Neuron hardware"]
        else:
            how = ("torch_neuron.trace for Inf1" if self.neuron_device == "inf1"
                   else f"torch_neuronx.trace --target {self.neuron_device}")
            left = [f"neuron compile ({how}) of the TorchScript on an SDK host ({len(self.traces)} file(s), "
                    "scripts in manifest.json)",
                    "numerics check on Neuron hardware"]
        return {"done_here": done, "left_for_target": left}

    # ---------------------------------------------------------------------------------------- loading
    @classmethod
    def load(cls, directory: str, entry: dict) -> "TorchScriptStage":
        """Rebuild a saved stage from its FX graph (default): each bucket's trace is made on the first call
        at that bucket's shapes, so loading allocates nothing the file sizes (the recorded shapes are
        validated first). When the user sets ``FXOPT_NEURON_LOAD=torchscript``, ``torch.jit.load`` the
        TorchScript files after checking their sha256 against the manifest instead — that runs TorchScript
        code from the files, so it is for artifacts the user trusts. InputError for a malformed entry or a
        file that fails its check."""
        name = safe_stem(entry["name"])
        try:
            stem, recorded, ops = safe_stem(entry["fx"]), list(entry["traces"]), dict(entry.get("ops", {}))
        except (KeyError, TypeError) as exc:
            raise InputError(f"{directory}: neuron partition '{name}' has a malformed entry ({exc}); "
                             "re-create the artifact") from None
        module = serialize.load_graph_module(directory, stem=stem)
        mode = os.environ.get(LOAD_ENV, "fx").strip().lower()
        traces = []
        for rec in recorded:
            if mode == "torchscript":
                traces.append(_load_torchscript(directory, name, rec))
            else:
                traces.append(_pending_trace(name, entry["inputs"], rec))
        return cls(module, name, entry.get("device", TARGET), entry["inputs"], entry["outputs"], traces, ops,
                   loaded_from="torchscript" if mode == "torchscript" else "fx-retrace",
                   neuron_device=_generation(entry.get("neuron_device")))


# the largest tensor a recorded trace shape may describe (elements): 2**31, 8 GiB of float32
MAX_TRACE_ELEMENTS = 2 ** 31


def _example_value(spec: dict) -> Any:
    """Zeros of a (validated, :func:`_pending_trace`) tensor spec, or the spec's baked number."""
    if "shape" not in spec:
        return spec.get("value")
    return torch.zeros([int(d) for d in spec["shape"]], dtype=getattr(torch, spec["dtype"]))


def _check_spec(name: str, spec: Any) -> None:
    """InputError (one line) unless ``spec`` is a tensor spec (sizes that are non-negative ints, at most
    :data:`MAX_TRACE_ELEMENTS` elements, a torch dtype) or a baked number."""
    where = f"manifest: neuron partition '{name}'"
    if not isinstance(spec, dict):
        raise InputError(f"{where} has a trace input that is not an object; the artifact is corrupt or hostile")
    if "shape" not in spec:
        if not (spec.get("value") is None or isinstance(spec.get("value"), (bool, int, float))):
            raise InputError(f"{where} bakes a non-number into a trace; the artifact is corrupt or hostile")
        return
    shape, dtype = spec.get("shape"), getattr(torch, str(spec.get("dtype")), None)
    if not isinstance(dtype, torch.dtype):
        raise InputError(f"{where}: unknown dtype {str(spec.get('dtype'))[:40]!r} in a trace; re-create the artifact")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise InputError(f"{where}: trace shape {str(shape)[:60]} is not a list of sizes; the artifact is "
                         "corrupt or hostile")
    numel = 1
    for d in shape:
        numel *= d
    if numel > MAX_TRACE_ELEMENTS:
        raise InputError(f"{where}: trace shape {shape} has {numel:,} elements, more than fxopt allocates for a "
                         f"trace ({MAX_TRACE_ELEMENTS:,}); the artifact is corrupt or hostile")


def _pending_trace(name: str, input_names: list, rec: Any) -> BucketTrace:
    """A loaded bucket whose trace is made on first use; its recorded shapes are validated, nothing is
    allocated."""
    try:
        specs, bucket, key = list(rec["inputs"]), dict(rec["bucket"]), str(rec["key"])
        n_outputs = int(rec["n_outputs"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"manifest: neuron partition '{name}' has a malformed trace ({type(exc).__name__}: "
                         f"{str(exc)[:80]}); re-create the artifact") from None
    if len(specs) != len(input_names):
        raise InputError(f"manifest: neuron partition '{name}' records a trace of {len(specs)} inputs for "
                         f"{len(input_names)}; the artifact is corrupt or hostile")
    for spec in specs:
        _check_spec(name, spec)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in bucket.values()):
        raise InputError(f"manifest: neuron partition '{name}' has a bucket that is not positive sizes; the "
                         "artifact is corrupt or hostile")
    return BucketTrace(key, bucket, specs, {}, None, n_outputs, None, rec.get("sha256"))


def _load_torchscript(directory: str, name: str, rec: dict) -> BucketTrace:
    path = safe_file(directory, rec["file"])
    if not rec.get("sha256") or file_sha256(path) != rec["sha256"]:
        raise InputError(f"{path}: sha256 does not match the manifest; the TorchScript file changed, refusing "
                         f"to load it (unset {LOAD_ENV} to re-trace from the FX graph)")
    module = torch.jit.load(path, map_location="cpu")
    constants = {int(k): v for k, v in (rec.get("constants") or {}).items()}
    return BucketTrace(rec["key"], dict(rec["bucket"]), list(rec["inputs"]), constants, module,
                       int(rec["n_outputs"]), rec.get("max_abs_error"), rec["sha256"])


# ============================================================================================ compiled
class NeuronCompiled(PartitionedCompiled):
    """A partitioned artifact whose runtime pads inputs to their bucket and slices outputs back."""

    def __init__(self, *args, bucket_plan: BucketPlan, **kwargs):
        """Arguments of :class:`PartitionedCompiled`, plus ``bucket_plan``."""
        super().__init__(*args, **kwargs)
        self.bucket_plan = bucket_plan

    @classmethod
    def wrap(cls, pc: PartitionedCompiled, bucket_plan: BucketPlan) -> "NeuronCompiled":
        """A NeuronCompiled running the same stages as ``pc``."""
        return cls(pc.stages, pc.placeholders, pc.output_refs, pc.constants, pc.backend, name=pc.name,
                   in_spec=pc.in_spec, out_spec=pc.out_spec, input_specs=pc.input_specs,
                   output_specs=pc.output_specs, trace=pc.trace, passes=pc.passes, extra=pc.extra,
                   bucket_plan=bucket_plan)

    def run_flat(self, flat_inputs: list) -> tuple:
        """Pad the inputs to their bucket, run every stage, slice the outputs back; returns flat outputs."""
        names = [s["name"] for s in self.input_specs]
        padded, real = self.bucket_plan.pad(list(flat_inputs), names)
        return self.bucket_plan.unpad(super().run_flat(padded), real)


# ============================================================================================ backend


def _example_sizes(program: Program, flat: list) -> dict[str, int]:
    index = {p.name: i for i, p in enumerate(program.placeholders())}
    sizes = {}
    for sym, places in program.dynamic_dims.items():
        for name, dim in places:
            if name in index and isinstance(flat[index[name]], torch.Tensor):
                sizes[sym] = int(flat[index[name]].shape[dim])
                break
    return sizes


def _shared_weights(stages: list[Stage]) -> list[str]:
    """Weights read by more than one accelerator partition (one tensor, several partitions)."""
    seen: dict[int, tuple[str, set]] = {}
    for stage in stages:
        if not isinstance(stage, TorchScriptStage):
            continue
        for node in stage.module.graph.nodes:
            if node.op == "get_attr":
                t = _fetch(stage.module, node.target)
                if isinstance(t, torch.Tensor):
                    seen.setdefault(id(t), (node.target, set()))[1].add(stage.name)
    return sorted(name for name, users in seen.values() if len(users) > 1)


def _fetch(module: torch.nn.Module, target: str) -> Any:
    obj: Any = module
    for part in target.split("."):
        obj = getattr(obj, part, None)
    return obj


@dataclass(frozen=True)
class NeuronBackend(BackendDefaults):
    """Compile accelerator partitions to static-shape TorchScript for AWS Neuron (see the module docstring).

    Options: ``device`` (the Neuron generation: ``inf1`` (default), ``inf2``, ``trn1``, ``trn2``; picks the op
    list and the torch-neuronx ``--target``), ``buckets`` (batch sizes, ``;``-separated: ``1;4;16``),
    ``seq_buckets`` (sequence sizes),
    ``seq_dim`` (``auto``, a symbol such as ``s27``, or a dim index), ``instances`` (model copies loaded on
    as many NeuronCores; > 1 sets NEURON_RT_MULTI_INSTANCE_SHARED_WEIGHTS)."""

    name = BACKEND
    target = TARGET

    buckets: str = ""
    seq_buckets: str = ""
    seq_dim: str = "auto"
    instances: int = 1
    device: str = "inf1"
    _sizes: tuple = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        key = str(self.device).strip().lower()
        if key not in NEURON_DEVICES:
            raise InputError(f"backend 'neuron': device={str(self.device)[:40]!r} is not a Neuron generation; "
                             f"valid devices: {', '.join(NEURON_DEVICES)}")
        object.__setattr__(self, "device", key)
        object.__setattr__(self, "_sizes", (parse_sizes("buckets", self.buckets),
                                            parse_sizes("seq_buckets", self.seq_buckets)))
        if self.instances < 1:
            raise InputError(f"backend 'neuron': instances={self.instances} must be >= 1")

    def options(self) -> dict:
        """The options as saved in the manifest's ``backend_options``."""
        return {"device": self.device, "buckets": list(self._sizes[0]), "seq_buckets": list(self._sizes[1]),
                "seq_dim": self.seq_dim, "instances": self.instances}

    def support(self):
        """The op-support table of this backend's Neuron generation (``support_table("neuron", device)``)."""
        return support_table(TARGET, device=self.device)

    def compile(self, program: Program) -> NeuronCompiled:
        """Compile ``program`` (left unmodified): op check, one TorchScript trace per accelerator partition and
        bucket, CPU partitions eager. Returns a runnable :class:`NeuronCompiled`. Raises BackendError for an
        unsupported op (without ``split``) or a failed trace, InputError for buckets the program cannot take."""
        if decode.uses_runtime(program):   # each piece of a decode loop, compiled as a program of its own
            return compile_decode(program, BACKEND, TARGET, self.compile)
        prog = program.copy()
        prog.ensure_compiled()
        plans = plan_stages(prog, TARGET)  # BackendError for decode loops / another target, before any work
        inputs, outputs = io_specs(prog)
        flat = prog.flat_example_inputs()
        bplan = plan_buckets(inputs, outputs, prog.dynamic_dims, _example_sizes(prog, flat), self._sizes[0],
                             self._sizes[1], self.seq_dim, prog.name)
        accel = [p for p in plans if p.device != "cpu"]
        for p in accel:  # fail fast, before tracing anything
            check_ops(p, self.device)
        wanted = {name for p in accel for name in (*p.inputs, *p.outputs)}
        envs = [(a, record_values(prog, example_at(flat, bplan, a), wanted)) for a in bplan.assignments()]
        sdk = neuron_sdk.available_sdk(self.device)

        def compile_stage(plan: StagePlan) -> Stage:
            examples = [(a, [env[n] for n in plan.inputs], tuple(env[n] for n in plan.outputs)) for a, env in envs]
            return TorchScriptStage.compile(plan, examples, sdk, neuron_device=self.device)

        extra = {"backend_options": self.options(), "neuron_device": self.device, "buckets": bplan.to_json(),
                 "runtime_settings": neuron_sdk.runtime_settings(self.instances),
                 "neuron_sdk": sdk or f"not importable here; {neuron_sdk.SDK_INSTALL}"}
        pc = compile_partitioned(prog, BACKEND, TARGET, compile_stage, extra=extra)
        pc.extra["weights_shared_between_partitions"] = _shared_weights(pc.stages)
        return NeuronCompiled.wrap(pc, bplan)

    def load(self, directory: str, manifest: dict) -> NeuronCompiled:
        """Rebuild the artifact in ``directory`` (see :meth:`TorchScriptStage.load` for how partitions load)."""
        if manifest.get("runtime") == decode.RUNTIME:
            return load_decode(directory, manifest, BACKEND, self.load)
        pc = load_partitioned(directory, manifest, BACKEND, TorchScriptStage.load)
        bplan = BucketPlan.from_json(manifest.get("buckets") or {"sizes": {}, "inputs": [], "outputs": []})
        for key in ("backend_options", "buckets", "runtime_settings", "target", "dynamic_dims"):
            if key in manifest:
                pc.extra[key] = manifest[key]
        return NeuronCompiled.wrap(pc, bplan)
