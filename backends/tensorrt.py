"""The ``tensorrt`` backend: accelerator partitions exported to ONNX, checked against the onnx-tensorrt
operator matrix, run here with onnxruntime; TensorRT engines built where TensorRT and a GPU exist.

Per accelerator partition (``split{target=tensorrt}``; without a split the whole graph is one partition
``main``), :meth:`TensorRTBackend.compile`:

1. exports the partition's GraphModule to ``<name>.onnx`` (:mod:`fxopt.backends.onnx_export`; weights inside
   the file, or in ``<name>.onnx.data`` beside it past 2 GB); dynamic dims become ONNX dynamic axes and an
   optimization profile (min/opt/max per input) in the manifest;
2. walks every ONNX node, nested subgraphs too, against the onnx-tensorrt matrix: an unsupported op fails the
   compile with a one-line BackendError naming the ONNX op, the ATen op and the model's source line;
3. runs the ONNX model with onnxruntime (CPUExecutionProvider) on the program's example values and compares
   with the partition's FX module (max abs error recorded; a mismatch is a BackendError);
4. with ``fp16=true``: converts the model to float16 (:mod:`fxopt.backends.onnx_fp16`), writes
   ``<name>.fp16.onnx`` and an accuracy report (max abs/rel error vs the fp32 PyTorch partition);
5. where ``import tensorrt`` works and CUDA is available: builds an engine (ONNX parser + optimization
   profile), saves ``<name>.plan``. Otherwise the manifest entry holds the ready ``trtexec`` command line and
   ``steps.left_for_target`` says the engine build is left for the GPU host.

The artifact runs here end to end: CPU partitions in PyTorch, TensorRT partitions with onnxruntime (the fp32
model, also when ``fp16=true``: the fp16 file is what the engine is built from).
"""
from __future__ import annotations

# local imports: onnx, onnxscript, onnxruntime and TensorRT are optional (pip install 'fxopt[onnx]'); they are imported where used, so this module loads without them
import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fxopt.backends.onnx_export import OnnxExport, export_module, onnx_ops, unsupported_nodes
from fxopt.backends.base import BackendDefaults
from fxopt.backends import decode
from fxopt.backends.partitioned import (PartitionedCompiled, Stage, StagePlan, compile_decode, compile_partitioned,
                                        load_decode, load_partitioned, plan_stages, record_values, safe_file, safe_stem)
from fxopt.errors import BackendError, InputError
from fxopt.ir import numerics, serialize
from fxopt.ir.program import Program
from fxopt.backends import tensorrt_engine
from fxopt.backends.onnx_fp16 import to_fp16

__all__ = ["TensorRTBackend", "OnnxStage", "profile_shapes", "trtexec_command", "tensorrt_available",
           "numerics_problem",
           "RUNTIME"]

RUNTIME = "onnxruntime"
_EXTERNAL_DATA_BYTES = 2 * 1024 ** 3 - 64 * 1024 ** 2   # protobuf's 2 GB limit, with headroom


def tensorrt_available() -> str | None:
    """None when TensorRT engines can be built here (``tensorrt`` imports and CUDA is available), else why
    not (one short line)."""
    try:
        import tensorrt  # noqa: F401
    except Exception:  # noqa: BLE001 - ImportError, or a stub package failing at import
        return "the tensorrt Python package is not installed here"
    if not torch.cuda.is_available():
        return "no CUDA GPU is available here"
    return None


# ------------------------------------------------------------------------------------------ profile
def _bounds(sym: torch.SymInt) -> tuple[int, int | None]:
    try:
        rng = sym.node.shape_env.var_to_range[sym.node.expr]
        lower = int(rng.lower)
        upper = None if rng.upper.is_infinite or int(rng.upper) > 2 ** 31 else int(rng.upper)
        return max(lower, 1), upper
    except Exception:  # noqa: BLE001 - not a plain symbol: no recorded range
        return 1, None


def profile_shapes(module: torch.fx.GraphModule, example: list, max_dim: int = 0) -> dict[str, dict]:
    """The optimization profile of a partition: ``{input name: {"min", "opt", "max"}}`` (lists of ints) for
    each input with dynamic dims; ``opt`` is the example value's shape, ``min``/``max`` the dim's recorded
    range, an unbounded max becoming ``max_dim`` (or twice the example size when ``max_dim`` is 0).
    Empty for static partitions."""
    out = {}
    phs = [n for n in module.graph.nodes if n.op == "placeholder"]
    for ph, value in zip(phs, example):
        val = ph.meta.get("val")
        if not isinstance(val, torch.Tensor) or not any(isinstance(d, torch.SymInt) for d in val.shape):
            continue
        opt = [int(d) for d in value.shape]
        lo, hi = list(opt), list(opt)
        for i, d in enumerate(val.shape):
            if isinstance(d, torch.SymInt):
                lower, upper = _bounds(d)
                lo[i] = min(lower, opt[i])
                hi[i] = max(opt[i], upper if upper is not None else (max_dim or 2 * opt[i]))
        out[ph.name] = {"min": lo, "opt": opt, "max": hi}
    return out


def trtexec_command(onnx_file: str, plan_file: str, profile: dict[str, dict], fp16: bool) -> str:
    """The ``trtexec`` command line that builds ``plan_file`` from ``onnx_file`` with ``profile`` (see
    :func:`profile_shapes`) and, with ``fp16``, float16 kernels enabled."""
    parts = ["trtexec", f"--onnx={onnx_file}", f"--saveEngine={plan_file}"]
    if profile:
        for key, flag in (("min", "--minShapes"), ("opt", "--optShapes"), ("max", "--maxShapes")):
            parts.append(flag + "=" + ",".join(f"{name}:{'x'.join(str(d) for d in p[key])}"
                                               for name, p in profile.items()))
    if fp16:
        parts.append("--fp16")
    return " ".join(parts)


# ------------------------------------------------------------------------------------------ numerics
def _to_numpy(x: Any, label: str) -> np.ndarray:
    if not isinstance(x, torch.Tensor):
        raise BackendError(f"{label}: onnxruntime partitions take tensors, got {type(x).__name__}")
    if x.dtype == torch.bfloat16:
        raise BackendError(f"{label}: bfloat16 tensors cannot cross into onnxruntime via numpy; "
                           "keep this partition on the CPU with split{target=tensorrt}")
    return x.detach().cpu().contiguous().numpy()


def _errors(expected: tuple, actual: tuple) -> tuple[float, float]:
    """(max abs error, max relative error) over the floating-point outputs."""
    worst_abs, worst_rel = 0.0, 0.0
    for e, a in zip(expected, actual):
        if not (isinstance(e, torch.Tensor) and e.dtype.is_floating_point) or e.numel() == 0:
            continue
        diff = (a.double() - e.double()).abs()
        worst_abs = max(worst_abs, float(diff.max()))
        scale = e.double().abs().max().clamp_min(1e-12)
        worst_rel = max(worst_rel, float(diff.max() / scale))
    return worst_abs, worst_rel


def numerics_problem(expected: tuple, actual: tuple, depths: list[int] | int | None = None) -> str | None:
    """None when ``actual`` (onnxruntime's outputs) reproduces ``expected`` (PyTorch's) under the shared rule
    (:mod:`fxopt.ir.numerics`: integers and bools exactly, floats within a tolerance scaled to each output's
    magnitude and rounding ``depths``), else a one-line description."""
    return numerics.first_difference(expected, actual, depths, actual_is="onnxruntime gives")


# ------------------------------------------------------------------------------------------ the stage
class OnnxStage(Stage):
    """A TensorRT partition: its ONNX model, run here by onnxruntime on the CPU (or by a TensorRT engine
    when one was built in this process). ``info`` holds the manifest keys computed at compile time."""

    runtime = RUNTIME

    def __init__(self, name: str, device: str, inputs: list[str], outputs: list[str], model_bytes: bytes | None,
                 model_path: str | None, onnx_inputs: list[str], info: dict, fp16_model: Any = None,
                 engine: Any = None):
        """``model_bytes`` (serialized ModelProto) or ``model_path`` (a saved ``.onnx``) give the fp32 model;
        ``onnx_inputs``: the ONNX input name of each partition input (None for inputs the model dropped);
        ``fp16_model``: the fp16 ModelProto (written as ``<name>.fp16.onnx``); ``engine``: serialized plan."""
        super().__init__(name, device, inputs, outputs)
        self.model_bytes = model_bytes
        self.model_path = model_path
        self.onnx_inputs = list(onnx_inputs)
        self.info = dict(info)
        self.fp16_model = fp16_model
        self.engine = engine
        self._session = None

    # running
    def session(self):
        """The onnxruntime InferenceSession (CPUExecutionProvider), created on first use."""
        if self._session is None:
            self._session = _ort_session(self.model_bytes if self.model_bytes is not None else self.model_path,
                                         self.name)
        return self._session

    def run(self, args: list) -> tuple:
        """Run the ONNX model on ``args`` (torch tensors in ``inputs`` order); returns torch tensors."""
        feeds = {onnx_name: _to_numpy(x, f"partition '{self.name}' input '{name}'")
                 for onnx_name, name, x in zip(self.onnx_inputs, self.inputs, args) if onnx_name}
        try:
            outs = self.session().run(None, feeds)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise BackendError(f"partition '{self.name}': onnxruntime failed: "
                               f"{(str(exc).strip().splitlines() or ['?'])[0][:300]}") from exc
        # np.ascontiguousarray makes a 0-d output 1-d; the reshape keeps a scalar a scalar
        return tuple(torch.from_numpy(np.ascontiguousarray(o).reshape(np.shape(o))) for o in outs)

    # saving
    def write(self, directory: str) -> dict:
        """Write ``<name>.onnx`` (+ ``.onnx.data`` past 2 GB), ``<name>.fp16.onnx`` and ``<name>.plan`` when
        there are; returns the manifest entry's keys (files, steps, onnx, profile, checks, trtexec...)."""
        import onnx

        files = []
        onnx_name = f"{self.name}.onnx"
        if self.model_bytes is not None:
            model = onnx.load_from_string(self.model_bytes)
            _save_onnx(model, os.path.join(directory, onnx_name), len(self.model_bytes))
        else:
            model = onnx.load(self.model_path)
            _save_onnx(model, os.path.join(directory, onnx_name), os.path.getsize(self.model_path))
        files.append(onnx_name)
        if os.path.exists(os.path.join(directory, onnx_name + ".data")):
            files.append(onnx_name + ".data")
        if self.fp16_model is not None:
            files.append(f"{self.name}.fp16.onnx")
            _save_onnx(self.fp16_model, os.path.join(directory, files[-1]), self.fp16_model.ByteSize())
        if self.engine is not None:
            files.append(f"{self.name}.plan")
            with open(os.path.join(directory, files[-1]), "wb") as f:
                f.write(bytes(self.engine))
        return {**self.info, "files": sorted(files), "onnx_inputs": self.onnx_inputs}

    @classmethod
    def load(cls, directory: str, entry: dict) -> "OnnxStage":
        """Rebuild a saved stage from its manifest entry (runs the saved ``.onnx`` with onnxruntime)."""
        name = safe_stem(entry["name"])
        path = safe_file(directory, f"{name}.onnx")
        _check_external_data(directory, path)
        onnx_inputs = entry.get("onnx_inputs")
        if not isinstance(onnx_inputs, list) or len(onnx_inputs) != len(entry["inputs"]):
            raise InputError(f"{directory}: partition '{name}' has no valid 'onnx_inputs'; re-create the artifact")
        info = {k: v for k, v in entry.items() if k not in ("name", "device", "runtime", "inputs", "outputs",
                                                            "files", "onnx_inputs")}
        return cls(name, entry.get("device", "tensorrt"), entry["inputs"], entry["outputs"], None, path,
                   onnx_inputs, info)


def _check_external_data(directory: str, path: str) -> None:
    """InputError (one line) when the ONNX model at ``path`` keeps a tensor's data in a file that is not a
    plain file inside ``directory`` (onnxruntime would read whatever file the model names)."""
    import onnx
    from onnx.external_data_helper import _get_all_tensors

    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises its own errors for corrupt files
        raise InputError(f"{path}: not a readable ONNX model ({type(exc).__name__}); re-create the artifact") from None
    for tensor in _get_all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        serialize.plain_file(directory, location, "ONNX external data file")


def _save_onnx(model, path: str, size: int) -> None:
    import onnx

    if size > _EXTERNAL_DATA_BYTES:
        onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=os.path.basename(path) + ".data")
    else:
        onnx.save_model(model, path)


def _ort_session(model: bytes | str, name: str):
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendError(f"partition '{name}': running ONNX here needs onnxruntime "
                           f"(pip install 'fxopt[onnx]'): {exc}") from None
    options = ort.SessionOptions()
    options.log_severity_level = 4
    # no busy-waiting pool threads between runs: they would steal the CPU from the PyTorch partitions
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.intra_op_num_threads = torch.get_num_threads()  # as many threads as the PyTorch partitions use
    try:
        return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001
        raise BackendError(f"partition '{name}': onnxruntime cannot load the ONNX model: "
                           f"{(str(exc).strip().splitlines() or ['?'])[0][:300]}") from exc


# ------------------------------------------------------------------------------------------ backend
@dataclass(frozen=True)
class TensorRTBackend(BackendDefaults):
    """TensorRT through ONNX. Options: ``fp16`` (also write an fp16 model + accuracy report, and build the
    engine with --fp16), ``max_dim`` (profile max for unbounded dynamic dims; 0 = twice the example size),
    ``optimize`` (run onnxscript's optimizer on the exported graph: constant folding, BatchNorm into Conv;
    off by default because TensorRT and onnxruntime do the same when they load the model, and it costs
    seconds per partition), ``engine`` (build a TensorRT engine
    when TensorRT and a GPU exist here; false = always leave it to trtexec on the target)."""

    name = "tensorrt"
    target = "tensorrt"
    fp16: bool = False
    max_dim: int = 0
    optimize: bool = False
    engine: bool = True

    def __post_init__(self):
        if self.max_dim < 0:
            raise InputError("backend 'tensorrt': max_dim must be >= 0 (0 = twice the example size)")

    def options(self) -> dict:
        """The options as a dict (saved in the manifest)."""
        return {"fp16": self.fp16, "max_dim": self.max_dim, "optimize": self.optimize, "engine": self.engine}

    def compile(self, program: Program) -> PartitionedCompiled:
        """Compile ``program`` (left unmodified): every tensorrt partition exported, checked and run as
        described in the module docstring; returns the runnable artifact. Raises BackendError when a
        partition cannot be exported, has an op TensorRT rejects, or does not reproduce PyTorch."""
        if decode.uses_runtime(program):   # each piece of a decode loop, compiled as a program of its own
            return compile_decode(program, self.name, "tensorrt", self.compile)
        values = _example_values(program)
        return compile_partitioned(program, self.name, "tensorrt", lambda plan: self.compile_stage(plan, values),
                                   extra={"backend_options": self.options()})

    def load(self, directory: str, manifest: dict) -> PartitionedCompiled:
        """Load a saved tensorrt artifact (TensorRT partitions run with onnxruntime)."""
        if manifest.get("runtime") == decode.RUNTIME:
            return load_decode(directory, manifest, self.name, self.load)
        return load_partitioned(directory, manifest, self.name, OnnxStage.load)

    # one partition
    def compile_stage(self, plan: StagePlan, values: dict[str, Any]) -> OnnxStage:
        """Export, check, run and (where possible) build one accelerator partition; ``values``: example
        values by node name (:func:`_example_values`). Returns its :class:`OnnxStage`."""
        label = f"partition '{plan.name}'"
        example = [values[n] for n in plan.inputs]
        exported = export_module(plan.module, label, optimize=self.optimize)
        bad = unsupported_nodes(exported.model, exported.origins)
        if bad:
            more = f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""
            raise BackendError(f"{label}: {bad[0].line()}{more}; keep it on the CPU with split{{target=tensorrt}}"
                               f" or rewrite it first (e.g. decompose-embedding-bag)")
        if all(n in values for n in plan.outputs):
            reference = tuple(values[n] for n in plan.outputs)
        else:
            with torch.no_grad():
                reference = tuple(plan.module(*example))
        model_bytes = exported.model.SerializeToString()
        onnx_inputs = [n if n in exported.input_names else None for n in plan.inputs]
        stage = OnnxStage(plan.name, plan.device, plan.inputs, plan.outputs, model_bytes, None, onnx_inputs, {})
        got = stage.run(example)
        problem = numerics_problem(reference, got, numerics.output_depths(plan.module))
        if problem:
            raise BackendError(f"{label}: onnxruntime does not reproduce PyTorch on the example inputs ({problem}); "
                               "keep the partition on the CPU with split{target=tensorrt}")
        max_abs, _ = _errors(reference, got)
        profile = profile_shapes(plan.module, example, self.max_dim)
        info = {"onnx": {"file": f"{plan.name}.onnx", "opset": exported.opset, "ops": onnx_ops(exported.model),
                         "dynamic_axes": {k: {str(a): s for a, s in v.items()} for k, v in exported.dynamic.items()}},
                "profile": profile,
                "checks": {"onnx_tensorrt_support": "passed", "onnxruntime_max_abs_error": max_abs}}
        done = [f"exported to ONNX opset {exported.opset}", "onnx-tensorrt support check passed",
                f"numerics checked with onnxruntime (max error {max_abs:.3g})"]
        fp16_model = None
        if self.fp16:
            fp16_model, report = _fp16_report(exported, plan, example, reference)
            info["fp16"] = report
            done.append(f"fp16 model written, accuracy measured with onnxruntime (max abs error "
                        f"{report['max_abs_error']:.3g}, max rel error {report['max_rel_error']:.3g})")
        engine_onnx = f"{plan.name}.fp16.onnx" if self.fp16 else f"{plan.name}.onnx"
        command = trtexec_command(engine_onnx, f"{plan.name}.plan", profile, self.fp16)
        info["trtexec"] = command
        why_not = tensorrt_available() if self.engine else "engine builds disabled (engine=false)"
        engine = None
        if why_not is None:

            engine_model = fp16_model if fp16_model is not None else exported.model
            engine = tensorrt_engine.build(engine_model.SerializeToString(), profile, self.fp16, label)
            engine_out = tensorrt_engine.run(engine, plan.inputs, onnx_inputs, example)
            engine_abs, engine_rel = _errors(reference, engine_out)
            info["engine"] = {"file": f"{plan.name}.plan", "built_with": tensorrt_engine.version(),
                              "max_abs_error": engine_abs, "max_rel_error": engine_rel}
            done.append(f"TensorRT engine built and run here (max error {engine_abs:.3g})")
            left = []
        else:
            info["engine"] = {"file": None, "not_built_because": why_not}
            left = [f"TensorRT engine build ({command})"]
        info["steps"] = {"done_here": done, "left_for_target": left}
        stage.info = info
        stage.fp16_model = fp16_model
        stage.engine = engine
        return stage


def _fp16_report(exported: OnnxExport, plan: StagePlan, example: list, reference: tuple) -> tuple[Any, dict]:

    label = f"partition '{plan.name}'"
    onnx_inputs = [n if n in exported.input_names else None for n in plan.inputs]
    kept: set[str] = set()
    for _ in range(8):
        try:
            fp16_model = to_fp16(exported.model, kept)
        except Exception as exc:  # noqa: BLE001 - onnx checker / conversion errors
            raise BackendError(f"{label}: fp16 conversion failed: {(str(exc).splitlines() or ['?'])[0][:200]}; "
                               "compile without fp16") from exc
        half = OnnxStage(plan.name, plan.device, plan.inputs, plan.outputs, fp16_model.SerializeToString(), None,
                         onnx_inputs, {})
        try:
            got = half.run(example)
            break
        except BackendError as exc:  # onnxruntime has no fp16 kernel for an op: keep that op in fp32
            match = re.search(r"running (\w+) node", str(exc))
            if not match or match.group(1) in kept:
                raise
            kept.add(match.group(1))
    else:
        raise BackendError(f"{label}: onnxruntime cannot run the fp16 model; compile without fp16")
    bad = unsupported_nodes(fp16_model, exported.origins)
    if bad:
        raise BackendError(f"{label}: the fp16 model has an op TensorRT rejects: {bad[0].line()}; compile without fp16")
    max_abs, max_rel = _errors(reference, got)
    return fp16_model, {
        "file": f"{plan.name}.fp16.onnx", "max_abs_error": max_abs, "max_rel_error": max_rel,
        "ops_kept_fp32": sorted(kept),
        "reference": "fp32 PyTorch (the partition's FX module) on the program's example inputs",
        "measured_with": "onnxruntime CPUExecutionProvider (ops without fp16 CPU kernels run in fp32 after a "
                         "cast, so TensorRT's fp16 kernels may differ)",
        "relative_to": "max |error| / max |reference| per output"}


def _example_values(program: Program) -> dict[str, Any]:
    """The values every tensorrt partition reads and writes (by node name), from one run of ``program`` on
    its example inputs (no run at all when the partitions read only graph inputs and the outputs are not
    needed). Empty for programs :func:`plan_stages` refuses (the compile reports why)."""
    reads, writes = set(), set()
    try:
        for plan in plan_stages(program, "tensorrt"):
            if plan.device != "cpu":
                reads.update(plan.inputs)
                writes.update(plan.outputs)
    except BackendError:
        return {}
    prog = program.copy()
    prog.ensure_compiled()
    flat = prog.flat_example_inputs()
    values: dict[str, Any] = {ph.name: x for ph, x in zip(prog.placeholders(), flat)}
    needed = reads | writes
    outs = prog.output_node().args[0]
    outs = list(outs) if isinstance(outs, (tuple, list)) else [outs]
    out_names = [o.name if isinstance(o, torch.fx.Node) else None for o in outs]
    if needed <= set(values) | set(out_names):  # one stage over the whole graph: the compiled run is enough
        with torch.no_grad():
            values.update((n, v) for n, v in zip(out_names, prog.run_flat(flat)) if n is not None)
        return values

    values.update(record_values(prog, flat, needed))
    return values
