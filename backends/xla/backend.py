"""The ``xla`` backend: accelerator partitions lowered ATen -> JAX, ``jax.jit``-compiled by XLA, saved with
``jax.export``; CPU partitions (from ``split{target=xla}``) run in PyTorch.

    compiled = fxopt.compile(program, "xla")               # or "xla{platforms=cpu;cuda,dynamic=false}"
    compiled(*inputs); compiled.save("out/"); fxopt.load("out/")(*inputs)

:class:`XlaStage` (runtime ``jax-xla``) runs one partition: the lowered function (or, after loading, the
deserialized ``jax.export`` module) compiled by XLA once per input shape/dtype signature (``compile_count``
counts them), weights converted to device arrays once, inputs in through ``to_jax`` and outputs out through
``to_torch`` (DLPack, no copies on the CPU). Artifact files per partition: see
:mod:`fxopt.backends.xla.artifact`. The lowering itself is :mod:`fxopt.backends.xla.lower`.
"""
from __future__ import annotations

# local imports: jax is optional (pip install 'fxopt[xla]'); it is imported where used, so fxopt plans and loads other backends without it
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from fxopt.backends.base import BackendDefaults
from fxopt.backends import decode
from fxopt.backends.partitioned import (PartitionedCompiled, Stage, StagePlan, compile_decode, compile_partitioned,
                                        load_decode,
                                        load_partitioned, safe_stem)
from fxopt.errors import BackendError, InputError
from fxopt.ir.program import Program
from fxopt.backends.xla import artifact
from fxopt.ir.partitions import partitions_region

__all__ = ["XlaBackend", "XlaStage", "RUNTIME", "SPLIT_HINT"]

RUNTIME = "jax-xla"
_LOG = logging.getLogger("fxopt.xla")
KNOWN_PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
SPLIT_HINT = ("; run split{target=xla,policy=support} first (e.g. fxopt run --passes "
              "'canonicalize,dce,split{target=xla,policy=support}') to keep such ops on the CPU")


def _lower():
    """The lowering module (imports jax; kept out of module import so fxopt imports without jax)."""
    from fxopt.backends.xla import lower

    return lower


class XlaStage(Stage):
    """One accelerator partition run by JAX/XLA.

    ``fn(params, *inputs) -> tuple`` is a pure JAX function: the lowered graph, or a deserialized
    ``Exported.call``. ``params``: ``{name: numpy array}`` (converted to device arrays here, once).
    ``exported``: the ``jax.export`` result when already made (loading), else made on first :meth:`write`.
    ``module``: the partition's GraphModule (compiling; None after loading)."""

    runtime = RUNTIME

    def __init__(self, name: str, device: str, inputs: list[str], outputs: list[str], *, fn: Callable,
                 params: dict, platforms: tuple[str, ...], dynamic: bool, module: torch.fx.GraphModule | None = None,
                 exported: Any = None, export_info: dict | None = None, op_count: int | None = None):
        """See the class docstring; ``export_info``: the manifest keys of a loaded partition."""
        import jax

        super().__init__(name, device, inputs, outputs)
        self.fn = fn
        self.params_np = dict(params)
        self.params = {k: jax.device_put(v) for k, v in params.items()}
        self.platforms = tuple(platforms)
        self.dynamic = dynamic
        self.module = module
        self.exported = exported
        self.export_info = dict(export_info or {})
        self.op_count = op_count
        self.compile_count = 0
        self.compile_events: list[dict] = []   # one per XLA compile: seconds, cache hit/miss/off, signature
        self._untried: set[tuple] = set()      # signatures whose executable came from fxopt's cache, not yet run
        self._exe_keys: dict[tuple, str] = {}  # their cache keys
        self._jitted = jax.jit(fn)
        self._executables: dict[tuple, Any] = {}
        # XLA runs where its inputs are: CPU tensors on a GPU host run on the host's CPU, CUDA tensors on the
        # GPU; each place compiles its own executable and holds its own copy of the weights
        self._placed_params: dict[str, dict] = {}

    # ------------------------------------------------------------------ building
    @classmethod
    def from_plan(cls, plan: StagePlan, platforms: tuple[str, ...], dynamic: bool, whole_graph: bool) -> "XlaStage":
        """Lower ``plan.module`` (raises the lowering's one-line InputError for an op without a lowering,
        with a hint to run ``split`` when the partition is the whole graph); returns the stage."""
        lower = _lower()
        try:
            lowered = lower.lower_graph(plan.module)
        except InputError as exc:
            text = str(exc)
            hint = SPLIT_HINT if whole_graph else (
                f"; split placed it on xla in partition '{plan.name}', so a rule's argument check refused "
                "what the op table (ir/targets/data/xla_ops.json) allows: keep it on the CPU with "
                "split{target=xla,policy=support} or report this")
            raise InputError(text if "split{" in text else text + hint) from None
        ops = sum(1 for n in plan.module.graph.nodes if n.op == "call_function")
        return cls(plan.name, plan.device, plan.inputs, plan.outputs, fn=lowered.fn,
                   params=lowered.params_from(plan.module), platforms=platforms, dynamic=dynamic,
                   module=plan.module, op_count=ops)

    @classmethod
    def load(cls, directory: str, entry: dict) -> "XlaStage":
        """Rebuild a saved partition from its manifest ``entry`` (``jax.export.deserialize`` + weights; no
        model code, no FX graph)."""

        _lower()  # the lowering's dtype policy (jax_enable_x64) must hold when the module is called
        if entry.get("runtime") != RUNTIME:
            raise InputError(f"{directory}: partition '{entry.get('name')}' has runtime "
                             f"{entry.get('runtime')!r}, not '{RUNTIME}'")
        safe_stem(entry["name"])
        exported, params = artifact.read_partition(directory, list(entry.get("files", [])))
        info = {k: entry[k] for k in ("platforms", "dynamic_dims", "static_shapes", "export_notes",
                                      "ops", "baked_inputs") if k in entry}
        return cls(entry["name"], entry.get("device", "xla"), entry["inputs"], entry["outputs"],
                   fn=exported.call, params=params, platforms=tuple(exported.platforms),
                   dynamic=bool(entry.get("dynamic_dims")), exported=exported, export_info=info,
                   op_count=entry.get("ops"))

    # ------------------------------------------------------------------ running
    native = True   # run_native hands jax.Arrays on, so a chain of XLA partitions keeps its values on device

    def run(self, args: list) -> tuple:
        """Run on torch tensors (in ``inputs`` order): to_jax, the executable compiled for this shape/dtype
        signature (compiled on first use), to_torch. Returns the output tensors."""
        lower = _lower()
        return tuple(lower.to_torch(o) for o in self.run_native(args))

    def to_host(self, value: Any) -> Any:
        """A jax.Array as a torch tensor (anything else unchanged)."""
        return _lower().to_torch(value)

    def run_native(self, args: list) -> tuple:
        """As :meth:`run`, on torch tensors or jax.Arrays (an earlier XLA partition's outputs, passed on
        without a round trip through torch); returns jax.Arrays (numbers as is)."""
        lower = _lower()
        arrays, scalars = [], {}
        place = ""
        for i, (name, a) in enumerate(zip(self.inputs, args)):
            if isinstance(a, torch.Tensor):
                arrays.append(lower.to_jax(a))
                place = place or str(a.device)
            elif isinstance(a, (bool, int, float)):  # a SymInt crossing partitions: static for XLA
                scalars[i] = a
            elif lower.is_jax_array(a):
                arrays.append(a)
                place = place or lower.torch_place(a)
            else:
                raise BackendError(f"partition '{self.name}' input '{name}' is {type(a).__name__}; the XLA "
                                   "backend takes tensors and numbers only")
        if self.module is None:
            self._check_loaded(arrays, scalars)
        key = (tuple((tuple(x.shape), str(x.dtype)) for x in arrays), tuple(sorted(scalars.items())), place)
        exe = self._executables.get(key)
        if exe is None:
            exe = self._compile(key, arrays, scalars)
        if key in self._untried:   # read from fxopt's cache and not run yet: a bad entry recompiles once
            return self._first_run_of_cached(key, exe, arrays, scalars)
        return self._call(exe, arrays, self._placed_params.get(place, self.params))

    def _params_at(self, place: str, arrays: list) -> dict:
        """The weights on the device of ``arrays`` (the torch device string ``place``): ``self.params`` when
        that is JAX's default device, else a copy put there once and kept."""
        import jax

        if place in self._placed_params:
            return self._placed_params[place]
        device = next(iter(arrays[0].devices())) if arrays and hasattr(arrays[0], "devices") else None
        if device is not None and device.platform == "cpu" and jax.default_backend() != "cpu":
            _LOG.warning("fxopt: xla partition '%s' was given CPU tensors on a host whose JAX device is %s: it "
                         "runs on the CPU; move the inputs there (e.g. .to('cuda')) to run it on the %s",
                         self.name, jax.default_backend(), jax.default_backend())
        if device is None or device == jax.devices()[0]:
            params = self.params
        else:
            params = {k: jax.device_put(v, device) for k, v in self.params_np.items()}
        self._placed_params[place] = params
        return params

    def _call(self, exe: Any, arrays: list, params: dict) -> tuple:
        """Run ``exe`` on the weights ``params`` and ``arrays``; returns its outputs (jax.Arrays, numbers as
        is)."""
        return tuple(exe(params, *arrays))

    def _first_run_of_cached(self, key: tuple, exe: Any, arrays: list, scalars: dict) -> tuple:
        """Run an executable read from the cache for the first time; when it fails (an entry XLA:CPU cannot
        run, e.g. a function it links in is missing), drop the entry, compile, and run that instead."""
        from fxopt.backends.xla import cache

        self._untried.discard(key)
        params = self._params_at(key[2], arrays)
        try:
            return self._call(exe, arrays, params)
        except Exception as exc:  # noqa: BLE001 - any failure of a cached executable: compile instead
            _LOG.warning("fxopt: xla partition '%s': the cached executable failed (%s); compiling it again",
                         self.name, str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
            cache.drop_executable(self._exe_keys.pop(key))
            del self._executables[key]
            self.compile_count -= 1
            return self._call(self._compile(key, arrays, scalars, use_cache=False), arrays, params)

    def _check_loaded(self, arrays: list, scalars: dict) -> None:

        baked = {int(k): v for k, v in self.export_info.get("baked_inputs", {}).items()}
        if scalars != baked:
            raise InputError(f"partition '{self.name}' was exported with the number inputs "
                             f"{ {self.inputs[k]: v for k, v in baked.items()} } baked in but got "
                             f"{ {self.inputs[k]: v for k, v in scalars.items()} }; re-export with inputs of "
                             "these shapes")
        names = [n for i, n in enumerate(self.inputs) if i not in scalars]
        artifact.check_static_shapes(self.name, names, self.exported, arrays,
                                     fell_back=bool(self.export_info.get("export_notes")))

    def _bound(self, scalars: dict) -> Callable:
        """``fn`` with the number inputs ``scalars`` ({position: value}) fixed: ``f(params, *arrays)``."""
        if not scalars or self.module is None:  # loaded modules were exported with the numbers baked in
            return self.fn
        fn, total = self.fn, len(self.inputs)

        def bound(params, *arrays):
            it = iter(arrays)
            return fn(params, *[scalars[i] if i in scalars else next(it) for i in range(total)])
        return bound

    def _compile(self, key: tuple, arrays: list, scalars: dict, use_cache: bool = True) -> Any:
        import jax

        from fxopt.backends.xla import cache

        exe_key = None
        params = self._params_at(key[2], arrays)
        on_default = params is self.params   # fxopt's executable cache loads onto JAX's default device only
        if self.module is None and self.exported is not None and on_default:   # a loaded module: may be cached
            exe_key = cache.executable_key(self.exported.mlir_module_serialized, arrays)
            t0 = time.perf_counter()
            in_tree = jax.tree_util.tree_structure(((self.params, *arrays), {}))
            out_tree = jax.tree_util.tree_structure(tuple(range(len(self.outputs))))
            exe = cache.load_executable(exe_key, in_tree, out_tree) if use_cache else None
            if exe is not None:
                self._untried.add(key)
                self._exe_keys[key] = exe_key
                return self._keep(key, exe, {"seconds": time.perf_counter() - t0, "cache": "hit",
                                             "dir": cache.enable()})
        try:
            jitted = self._jitted if not scalars or self.module is None else jax.jit(self._bound(scalars))
            exe, event = cache.compile_counted(lambda: jitted.lower(params, *arrays).compile())
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - XLA/JAX failures are the backend's
            raise BackendError(f"partition '{self.name}': XLA compile failed for input shapes "
                               f"{[list(s) for s, _ in key[0]]}: {type(exc).__name__}: "
                               f"{str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}") from exc
        if exe_key is not None and event["cache"] == "miss":
            # only an executable XLA compiled here: one JAX read back from its own cache lacks the function
            # library XLA:CPU links in, and re-serialized it fails at run time ("Function wrapped_iota not found")
            cache.store_executable(exe_key, exe)
        return self._keep(key, exe, event)

    def _keep(self, key: tuple, exe: Any, event: dict) -> Any:
        """Remember ``exe`` for the signature ``key`` and its compile ``event``; returns ``exe``."""
        from fxopt.backends.xla import cache

        self._executables[key] = exe
        self.compile_count += 1   # one per input signature made runnable, compiled here or read from the cache
        event["signature"] = [list(shape) for shape, _ in key[0]]
        event["place"] = key[2]
        self.compile_events.append(event)
        _LOG.info("fxopt: %s", cache.describe(event, self.name))
        return exe

    def compile_notes(self) -> list[str]:
        """One line per XLA compile so far: compiled (and stored in the persistent cache) or reused from it."""
        from fxopt.backends.xla import cache

        return [cache.describe(event, self.name) for event in self.compile_events]

    @property
    def signatures(self) -> list[tuple]:
        """The input shape/dtype signatures compiled so far (``[((shape, dtype), ...), ...]``)."""
        return list(self._executables)

    # ------------------------------------------------------------------ saving
    def _export(self) -> dict:
        """Make ``self.exported`` when missing; returns the manifest keys describing it."""

        if self.exported is None:
            if self.module is None:  # pragma: no cover - a stage has one or the other
                raise BackendError(f"partition '{self.name}' has neither a graph nor an exported module")
            example = [tuple(s) for s, _ in self.signatures[0][0]] if self.signatures else None
            scalars = dict(self.signatures[0][1]) if self.signatures else {}
            has_numbers = any(not isinstance(n.meta.get("val"), torch.Tensor)
                              for n in self.module.graph.nodes if n.op == "placeholder")
            if has_numbers and not scalars:
                raise BackendError(f"partition '{self.name}' takes number inputs (SymInts from another "
                                   "partition): run it once before saving so their values are known")
            notes = (["number inputs (SymInts from another partition) are baked in, so the export is "
                      "static"] if scalars and self.dynamic else [])
            res = artifact.export_partition(self._bound(scalars), self.params_np, self.module,
                                            _lower().to_jax, self.platforms, self.dynamic and not scalars,
                                            example_shapes=example)
            self.exported = res.exported
            static = not res.dynamic
            self.export_info = {"platforms": list(res.platforms), "dynamic_dims": res.dynamic,
                                "static_shapes": static, "export_notes": notes + res.notes,
                                "baked_inputs": {str(k): v for k, v in scalars.items()}}
            if self.op_count is not None:
                self.export_info["ops"] = self.op_count
        return self.export_info

    def write(self, directory: str) -> dict:
        """Write ``<name>.jaxexport``, ``<name>.stablehlo.mlir`` and ``<name>.safetensors``; returns the
        manifest entry's keys: files, steps (what ran here, what the target host must do), platforms,
        dynamic_dims, static_shapes, export_notes, input_avals, ops."""
        import jax

        info = self._export()
        files = artifact.write_partition(directory, safe_stem(self.name), self.exported, self.params_np)
        here = jax.default_backend()
        plats = list(info["platforms"])
        ran = sorted({(key[2].split(":")[0] or here) for key in self.signatures})   # torch device types
        done = []
        if self.module is not None:
            done.append(f"lowered ATen→JAX ({self.op_count} ops)")
        if self.signatures:
            done.append(f"XLA-compiled for {', '.join(ran)} ({len(self.signatures)} shape signature"
                        f"{'s' if len(self.signatures) != 1 else ''}) and run")
        done.append(f"jax.export serialized (platforms {', '.join(plats)})")
        done.append("StableHLO text written")
        done.append(f"weights saved (safetensors, {len(self.params_np)} tensors)")
        left = []
        if not self.signatures:
            left.append(f"XLA compile for {here} on first call")
        others = [p for p in plats if p != here and p not in ran]
        if others:
            left.append(f"XLA compile for {'/'.join(others)} on first call (exported here, not compiled or "
                        "run here)")
        avals = [f"{a.dtype}[{', '.join(str(d) for d in a.shape)}]"
                 for a in self.exported.in_avals[len(jax.tree_util.tree_leaves(self.params_np)):]]
        return {"files": files, "steps": {"done_here": done, "left_for_target": left}, **info,
                "input_avals": avals, "jax_version": jax.__version__}


@dataclass(frozen=True)
class XlaBackend(BackendDefaults):
    """Compile a Program for XLA through JAX. Options (``--backend 'xla{platforms=cpu;cuda,dynamic=false}'``):
    ``platforms``: the ``jax.export`` platforms, ``;``-separated (default ``cpu;cuda;tpu``);
    ``dynamic``: export SymInt dims as symbolic dims (default true; falls back to static when the lowering
    cannot)."""

    name = "xla"
    target = "xla"
    platforms: str = "cpu;cuda;tpu"
    dynamic: bool = True

    def __post_init__(self):
        bad = [p for p in self.platform_tuple() if p not in KNOWN_PLATFORMS]
        if bad or not self.platform_tuple():
            raise InputError(f"backend 'xla': platforms must be ';'-separated names from "
                             f"{', '.join(KNOWN_PLATFORMS)} (got {self.platforms!r})")

    def platform_tuple(self) -> tuple[str, ...]:
        """The ``platforms`` option as a tuple, e.g. ``("cpu", "cuda", "tpu")``."""
        return tuple(p.strip() for p in self.platforms.split(";") if p.strip())

    def options(self) -> dict:
        """The options as recorded in the manifest's ``backend_options``."""
        return {"platforms": self.platforms, "dynamic": self.dynamic}

    def compile(self, program: Program) -> PartitionedCompiled:
        """Compile ``program`` (left unmodified): its ``split{target=xla}`` partitions, or the whole graph as
        one XLA partition. Returns a runnable, savable :class:`PartitionedCompiled`. Raises InputError
        (one line, naming the op, node and source line) for an op without a lowering outside a split. A
        decode loop's pieces are compiled one by one (:func:`~fxopt.backends.partitioned.compile_decode`)."""
        if decode.uses_runtime(program):
            return compile_decode(program, self.name, "xla", self.compile)
        whole = partitions_region(program, required=False) is None
        plats, dyn = self.platform_tuple(), self.dynamic
        return compile_partitioned(program, self.name, "xla",
                                   lambda plan: XlaStage.from_plan(plan, plats, dyn, whole),
                                   extra={"backend_options": self.options()})

    def load(self, directory: str, manifest: dict) -> PartitionedCompiled:
        """Load a saved xla artifact: ``jax-xla`` partitions from their ``jax.export`` files, CPU
        partitions as PyTorch graphs. Returns a :class:`PartitionedCompiled`."""
        if manifest.get("runtime") == decode.RUNTIME:
            return load_decode(directory, manifest, self.name, self.load)
        return load_partitioned(directory, manifest, self.name, XlaStage.load)


def xla_stages(compiled: PartitionedCompiled) -> list[XlaStage]:
    """The :class:`XlaStage` s of a compiled or loaded xla artifact, in execution order."""
    return [s for s in compiled.stages if isinstance(s, XlaStage)]
