"""What every backend shares: the artifact directory, its manifest, input checking, and the registry.

An artifact directory holds::

    manifest.json      format, version, backend, program name, input/output specs, pytree specs,
                       partitions (each with its files and which steps ran here / are left for the target)
    <partition files>  per backend (the reference backend: graph.json + graph.safetensors)
    trace.json         the pass trace (graphs after each pass), for `fxopt viz`

Artifacts are written to a temporary directory and swapped into place in one step
(:mod:`fxopt.backends.artifact_dir`), so a failure or a kill never leaves a half-written directory, and an
existing directory is replaced only when it is an fxopt artifact. Loading never unpickles: JSON,
safetensors, and op names resolved against torch.ops and checked by :mod:`fxopt.ir.loadable`; every field of
the manifest is type-checked before it is used.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
from typing import Any, Protocol, runtime_checkable

import torch
import torch.utils._pytree as pytree

from fxopt.backends import artifact_dir
from fxopt.errors import InputError
from fxopt.ir import serialize, targets
from fxopt.ir.fields import neutral_spec
from fxopt.ir.program import Program, check_input_value, signature_text
from fxopt.ir.shapes import dim_expr
from fxopt.ir.trace import merge_timings, split_timings
from fxopt.options import Registry, from_options, parse_specs
from fxopt.version import __version__

ARTIFACT_FORMAT = "fxopt-artifact"
ARTIFACT_VERSION = 1

@runtime_checkable
class Backend(Protocol):
    """What every backend provides; :data:`BACKENDS` maps names to classes following it (checked by
    ``tests/test_backend_contract.py``).

    - ``name``: its registry name, written into every manifest it saves;
    - ``target``: what it compiles for — the op-support table (``fxopt.ir.targets``) and the default pass
      pipeline (``fxopt.passes.registry.DEFAULT_PIPELINES``; the tools layer joins the two, since a backend
      naming passes would make backends import passes) are looked up by it; ``"reference"`` runs every op;
    - ``options()``: its option values (``name{key=value}`` in pipeline text), saved as ``backend_options``;
    - ``support()``: its target's :class:`~fxopt.ir.targets.SupportTable`, or None when it runs every op;
    - ``compile(program)``: a runnable :class:`Compiled`, the program left unmodified;
    - ``load(directory, manifest)``: the :class:`Compiled` saved in ``directory`` (``manifest`` already
      read and checked by :func:`read_manifest`).
    """

    name: str
    target: str

    def options(self) -> dict: ...  # noqa: D102 - documented above

    def support(self) -> Any: ...  # noqa: D102

    def compile(self, program: Program) -> "Compiled": ...  # noqa: D102

    def load(self, directory: str, manifest: dict) -> "Compiled": ...  # noqa: D102


class BackendDefaults:
    """``options()`` from a dataclass backend's fields and ``support()`` from its ``target``, for backends to
    inherit (:class:`Backend` lists what they must provide)."""

    target: str = "reference"

    def options(self) -> dict:
        """The option values: the dataclass fields that are options (``{}`` for a backend without any)."""
        if not dataclasses.is_dataclass(self):
            return {}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}

    def support(self) -> Any:
        """The op-support table of ``target`` (None for a target that runs every op)."""
        return targets.support_table(self.target) if self.target in targets.TARGETS else None


BACKENDS = Registry("backend", {
    "reference": "fxopt.backends.reference:ReferenceBackend",
    "reference-shared": "fxopt.backends.shared_store:SharedReferenceBackend",
    "tensorrt": "fxopt.backends.tensorrt:TensorRTBackend",
    "neuron": "fxopt.backends.neuron:NeuronBackend",
    "xla": "fxopt.backends.xla.backend:XlaBackend",
})


def register_backend(name: str, path_or_class: Any) -> None:
    """Register a backend under ``name`` as ``"module:Class"`` (imported when used) or a class."""
    BACKENDS.register(name, path_or_class)


def backend_names() -> list[str]:
    """Names of the registered backends, sorted."""
    return BACKENDS.names()


def get_backend(spec: str):
    """An instance of the backend named by ``spec``: ``"name"`` or ``"name{option=value,...}"`` (options
    are the fields of a dataclass backend, typed and checked like pass options). Unknown names, unknown
    options and bad values raise InputError."""
    items = parse_specs(spec, "backend") if "{" in spec else [(spec, {})]
    if len(items) != 1:
        raise InputError(f"backend '{spec}': give one backend, e.g. 'xla' or 'neuron{{buckets=1;8}}'")
    name, raw = items[0]
    cls = BACKENDS.get(name)
    if not raw:
        return cls()
    if not dataclasses.is_dataclass(cls):
        raise InputError(f"backend '{name}' takes no options (got {', '.join(raw)})")
    return from_options(cls, f"backend '{name}'", raw)


# ------------------------------------------------------------------------------------------ tensor specs
def tensor_spec(name: str, val: Any) -> dict:
    """``{"name", "shape": [4, "s0"], "dtype": "float32"}`` for a FakeTensor/tensor meta value."""
    if not isinstance(val, torch.Tensor):
        return {"name": name, "shape": None, "dtype": type(val).__name__ if val is not None else None}
    # a SymInt whose expression is a number is a dim that torch.export specialized: it is static
    shape = [str(dim_expr(d)) if isinstance(d, torch.SymInt) and not d.node.expr.is_number else int(d)
             for d in val.shape]
    return {"name": name, "shape": shape, "dtype": str(val.dtype).replace("torch.", "")}


def io_specs(program: Program) -> tuple[list[dict], list[dict]]:
    """Input and output tensor specs of the program's flat graph."""
    inputs = [tensor_spec(n.name, n.meta.get("val")) for n in program.placeholders()]
    for spec, node in zip(inputs, program.placeholders()):
        if "input_value" in node.meta:  # an input capture specialized to its value: checked on every call
            spec["value"] = list(node.meta["input_value"])
    out_node = program.output_node()
    outs = out_node.args[0]
    outs = outs if isinstance(outs, (tuple, list)) else (outs,)
    outputs = [tensor_spec(getattr(o, "name", f"out{i}"), getattr(o, "meta", {}).get("val"))
               for i, o in enumerate(outs)]
    return inputs, outputs


def _spec_text(spec: dict) -> str:
    dims = ", ".join(str(d) for d in spec["shape"]) if spec["shape"] is not None else "?"
    return f"{spec['dtype']}[{dims}]"


def check_inputs(flat_inputs: list, specs: list[dict]) -> None:
    """Raise InputError (one line) if ``flat_inputs`` do not match ``specs``: count, dtype, rank, static
    dims, and symbolic dims that must agree with each other (the same symbol, the same size)."""
    if len(flat_inputs) != len(specs):
        raise InputError(f"expected {len(specs)} input tensors, got {len(flat_inputs)}")
    bound: dict[str, tuple[int, str]] = {}
    for i, (x, spec) in enumerate(zip(flat_inputs, specs)):
        if spec["shape"] is None:
            continue
        label = f"input {i} ('{spec['name']}')"
        if not isinstance(x, torch.Tensor):
            raise InputError(f"{label}: expected a tensor {_spec_text(spec)}, got {type(x).__name__}")
        got = f"{str(x.dtype).replace('torch.', '')}[{', '.join(str(d) for d in x.shape)}]"
        if str(x.dtype).replace("torch.", "") != spec["dtype"] or x.dim() != len(spec["shape"]):
            raise InputError(f"{label}: expected {_spec_text(spec)}, got {got}")
        for d, (want, have) in enumerate(zip(spec["shape"], x.shape)):
            if isinstance(want, int):
                if want != have:
                    raise InputError(f"{label}: expected {_spec_text(spec)}, got {got} (dim {d})")
            elif want in bound and bound[want][0] != have:
                first = bound[want][1]
                raise InputError(f"{label}: dim {d} is {have} but {first} set {want}={bound[want][0]}; "
                                 f"inputs sharing {want} must agree")
            else:
                bound.setdefault(want, (int(have), label))
        if "value" in spec:
            check_input_value(x, spec["value"], label)


# ------------------------------------------------------------------------------------------ compiled
_UNSET = object()


class Compiled:
    """A runnable artifact: call it like the original model; ``save(dir)`` writes it; ``fxopt.load`` reads it.

    Subclasses implement ``run_flat(flat_inputs) -> tuple`` and ``write_partitions(dir) -> list[dict]``.
    """

    backend = "base"

    def __init__(self, *, name: str, in_spec, out_spec, input_specs: list[dict], output_specs: list[dict],
                 trace: dict | None = None, passes: list[str] | None = None, extra: dict | None = None):
        """Common artifact metadata; see :func:`manifest` for what is saved."""
        self.name = name
        self.in_spec = in_spec
        self.out_spec = out_spec
        self.input_specs = input_specs
        self.output_specs = output_specs
        self.trace = trace
        self.passes = passes or []
        self.extra = extra or {}

    #: whether :meth:`run_flat_native` may return (and take) a runtime's own arrays instead of tensors
    native = False

    def run_flat(self, flat_inputs: list) -> tuple:  # pragma: no cover - abstract
        """Run on flat inputs; returns flat outputs."""
        raise NotImplementedError

    def run_flat_native(self, flat_inputs: list) -> tuple:
        """As :meth:`run_flat`, but outputs may stay in the runtime's own arrays (e.g. jax.Arrays on the
        device) and inputs may be such arrays: for a host loop handing one call's outputs to the next (the
        pieces of a decode loop). :meth:`to_host` turns one into a torch tensor. Default: :meth:`run_flat`."""
        return self.run_flat(flat_inputs)

    def to_host(self, value: Any) -> Any:
        """A value :meth:`run_flat_native` returned, as a torch tensor (default: unchanged)."""
        return value

    def write_partitions(self, directory: str) -> list[dict]:  # pragma: no cover - abstract
        """Write partition files into ``directory``; returns the manifest's partition entries."""
        raise NotImplementedError

    def __call__(self, *args, **kwargs):
        """Run like the original model: same argument structure, same result structure."""
        if not kwargs and len(args) == self._tensor_arity() and all(isinstance(a, torch.Tensor) for a in args):
            flat = list(args)   # what flattening gives, without its ~15 us: every argument is one leaf
        else:
            flat, spec = pytree.tree_flatten((tuple(args), dict(kwargs)))
            if self.in_spec is not None and spec != self.in_spec \
                    and neutral_spec(spec) != neutral_spec(self.in_spec):
                raise InputError(f"inputs to '{self.name}' do not match its signature: expected "
                                 f"{signature_text(self.in_spec)}, got {signature_text(spec)}")
        check_inputs(flat, self.input_specs)
        with torch.no_grad():
            outs = self.run_flat(flat)
        return pytree.tree_unflatten(list(outs), self.out_spec) if self.out_spec is not None else outs

    def _tensor_arity(self) -> int:
        """How many positional arguments ``in_spec`` takes when it is ``((leaf, ...), {})`` (the input count
        when there is no spec), else -1; cached per spec object."""
        spec = self.in_spec
        if getattr(self, "_arity_spec", _UNSET) is not spec:
            if spec is None:
                arity = len(self.input_specs)
            else:
                n = spec.num_leaves
                arity = n if pytree.tree_flatten(((0,) * n, {}))[1] == spec else -1
            self._arity_spec, self._arity = spec, arity
        return self._arity

    def manifest(self, partitions: list[dict]) -> dict:
        """The manifest dict written to ``manifest.json``."""
        return {
            "format": ARTIFACT_FORMAT,
            "version": ARTIFACT_VERSION,
            "fxopt_version": __version__,
            "backend": self.backend,
            "program": self.name,
            "passes": self.passes,
            "inputs": self.input_specs,
            "outputs": self.output_specs,
            # the model's own structure (its classes), and the same in tuples/lists/dicts/Fields, which any
            # process can rebuild (fxopt/ir/fields.py); load takes the first one this process can rebuild
            "in_spec": _dump_spec(self.in_spec),
            "out_spec": _dump_spec(self.out_spec),
            "in_structure": _dump_spec(self.in_spec, neutral=True),
            "out_structure": _dump_spec(self.out_spec, neutral=True),
            "partitions": partitions,
            **self.extra,
        }

    def save(self, directory: str) -> str:
        """Write the artifact to ``directory`` atomically (temp dir + rename); returns the path.

        An existing directory is replaced only if it is empty or an fxopt artifact."""
        with atomic_directory(directory) as tmp:
            partitions = self.write_partitions(tmp)
            write_json(os.path.join(tmp, "manifest.json"), self.manifest(partitions))
            if self.trace is not None:
                write_trace(tmp, self.trace)
        return os.path.abspath(directory)


def artifact_problem(directory: str, marker: str = "manifest.json", fmt: str = ARTIFACT_FORMAT) -> str | None:
    """None when ``directory`` holds ``marker`` parsing as an fxopt output of format ``fmt`` (its format key and
    an integer version), else why not (one clause). Reads only that file."""
    path = os.path.join(directory, marker)
    if not os.path.isfile(path) or os.path.islink(path):
        return f"it has no {marker}"
    try:
        with open(path, encoding="utf-8") as f:
            doc = serialize.parse_json(f.read(1 << 24), marker)
    except (OSError, UnicodeDecodeError, ValueError):
        return f"its {marker} is not JSON"
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        return f"its {marker} is not an fxopt one"
    if not isinstance(doc.get("version"), int) or isinstance(doc.get("version"), bool):
        return f"its {marker} has no integer version"
    return None


@contextlib.contextmanager
def atomic_directory(directory: str, marker: str = "manifest.json", what: str = "an fxopt artifact",
                     fmt: str = ARTIFACT_FORMAT):
    """Yield a temporary directory beside ``directory``; when the block succeeds it replaces ``directory``
    in one step, when it fails it is removed (:func:`fxopt.backends.artifact_dir.atomic_directory`).
    ``directory`` must be absent, empty, or hold ``marker`` parsing as format ``fmt``."""
    with artifact_dir.atomic_directory(directory, lambda d: artifact_problem(d, marker, fmt), what) as tmp:
        yield tmp


def check_replaceable(directory: str, marker: str = "manifest.json", what: str = "an fxopt artifact",
                      fmt: str = ARTIFACT_FORMAT) -> None:
    """Raise InputError (one line) unless ``directory`` can take an output (not a link or a file; absent,
    empty, or ``what`` by its ``marker``; a writable parent). Creates nothing."""
    artifact_dir.check_output_location(directory, lambda d: artifact_problem(d, marker, fmt), what)


def write_trace(directory: str, trace: dict) -> None:
    """Write ``trace.json`` (deterministic: the same model and pipeline give the same bytes) and, beside it,
    ``timings.json`` with the passes' wall-clock seconds, which differ from run to run."""

    stripped, timings = split_timings(trace)
    write_json(os.path.join(directory, "trace.json"), stripped)
    if timings["reports"]:
        write_json(os.path.join(directory, "timings.json"), timings)


def read_trace(directory: str) -> dict | None:
    """``directory/trace.json`` with ``timings.json`` merged back in; None when there is no readable trace."""

    def read(name: str) -> Any:
        if not os.path.lexists(os.path.join(directory, name)):
            return None
        path = serialize.plain_file(directory, name, "trace file")   # a link is refused, not followed
        try:
            with open(path, encoding="utf-8") as f:
                return serialize.parse_json(f.read(), name)
        except (OSError, UnicodeDecodeError, ValueError):
            return None

    trace, timings = read("trace.json"), read("timings.json")
    try:
        return merge_timings(trace, timings if isinstance(timings, dict) else None) if isinstance(trace, dict) \
            else None
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        return None


def write_json(path: str, data: Any) -> None:
    """Write ``data`` as stable JSON (sorted keys, indented, no NaN) to ``path``."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True, allow_nan=False, default=str)
        f.write("\n")


def _dump_spec(spec, neutral: bool = False) -> str | None:
    """``spec`` as pytree's JSON; with ``neutral``, its :func:`~fxopt.ir.fields.neutral_spec` form. None
    for no spec, and for an original spec whose classes pytree cannot serialize (the neutral form stands in)."""
    if spec is None:
        return None
    try:
        return pytree.treespec_dumps(neutral_spec(spec) if neutral else spec)
    except Exception as exc:  # noqa: BLE001
        if not neutral:
            return None
        raise InputError(f"cannot save the model's input/output structure ({exc}); "
                         "use tuples, lists and dicts of tensors") from exc


def _load_spec(original: str | None, structure: str | None = None):
    """The saved spec: the original one when every class it names is registered with pytree in this
    process, else the neutral structure (tuples, lists, dicts, Fields); None when neither was saved. Loading
    never imports a module the manifest names."""
    if original is not None:
        try:
            return pytree.treespec_loads(original)
        except NotImplementedError:   # a class this process has not registered (its library not imported)
            if structure is None:
                raise
    return pytree.treespec_loads(structure) if structure is not None else None


def steps_summary(manifest: dict) -> tuple[list[str], list[str]]:
    """``(done here, left for the target host)``: the partitions' steps from an artifact manifest. With several
    partitions, each step is said once with the partitions that took it (``weights saved (all 5
    partitions)``, ``lowered ATen→JAX (2 of 5 partitions)``; a step taken by one partition names it), and the
    details in parentheses that differ per partition are left to the manifest."""
    partitions = manifest.get("partitions") or []
    if len(partitions) <= 1:
        steps = (partitions[0].get("steps") or {}) if partitions else {}
        return list(steps.get("done_here", [])), list(steps.get("left_for_target", []))
    return _grouped_steps(partitions, "done_here"), _grouped_steps(partitions, "left_for_target")


def _without_details(text: str) -> str:
    """``text`` without its parenthesised details: every ``" (...)"`` group (nesting allowed) is cut, while
    a parenthesis inside a word (``file(s)``) is kept."""
    out, depth = [], 0
    for i, ch in enumerate(text):
        if depth:
            depth += {"(": 1, ")": -1}.get(ch, 0)
        elif ch == "(" and i > 0 and text[i - 1] == " ":
            depth = 1
        else:
            out.append(ch)
    return re.sub(r"\s+", " ", "".join(out)).strip()


def _grouped_steps(partitions: list[dict], key: str) -> list[str]:
    groups: dict[str, list] = {}
    for part in partitions:
        for text in (part.get("steps") or {}).get(key, []):
            short = _without_details(text) or text
            entry = groups.setdefault(short, [text, []])
            if part.get("name", "?") not in entry[1]:
                entry[1].append(part.get("name", "?"))
    out = []
    for short, (text, names) in groups.items():
        if len(names) == 1:
            out.append(f"{text} ({names[0]})")
        else:
            share = (("both" if len(names) == 2 else f"all {len(names)}") if len(names) == len(partitions)
                     else f"{len(names)} of {len(partitions)}")
            out.append(f"{short} ({share} partitions)")
    return out


# ------------------------------------------------------------------------------------------ loading
def read_manifest(directory: str) -> dict:
    """Read and validate ``directory/manifest.json``; raises InputError (one line) when it is missing,
    corrupt, a symbolic link, nested too deeply, of another format or version, or when a field has the wrong
    type (see :func:`check_manifest`)."""
    directory = os.fspath(directory)
    path = os.path.join(directory, "manifest.json")
    if not os.path.isdir(directory):
        raise InputError(f"{directory}: no such artifact directory")
    if not os.path.lexists(path):
        raise InputError(f"{directory}: not an fxopt artifact (no manifest.json); produce one with `fxopt run -o`")
    serialize.plain_file(directory, "manifest.json", "manifest")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = serialize.parse_json(f.read(), "manifest.json")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{path}: corrupt manifest ({_first_line(exc)}); re-create the artifact with "
                         "`fxopt run`") from None
    check_manifest(path, manifest)
    return manifest


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "an integer", float: "a number"}.get(type(value), f"a {type(value).__name__}")


def _field(path: str, owner: dict, key: str, kinds: tuple, label: str, required: bool = True) -> Any:
    """``owner[key]`` when it is an instance of ``kinds`` (bool never counts as int); InputError otherwise."""
    if key not in owner:
        if required:
            raise InputError(f"{path}: manifest has no '{label}'; re-create the artifact with `fxopt run`")
        return None
    value = owner[key]
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        want = " or ".join(_type_name(k()) if k is not type(None) else "null" for k in kinds)
        raise InputError(f"{path}: manifest field '{label}' is {_type_name(value)}, not {want}; the artifact is "
                         "corrupt or hostile")
    return value


def _check_specs(path: str, manifest: dict, key: str) -> None:
    for i, spec in enumerate(_field(path, manifest, key, (list,), key)):
        label = f"{key}[{i}]"
        if not isinstance(spec, dict):
            raise InputError(f"{path}: manifest field '{label}' is {_type_name(spec)}, not an object; the "
                             "artifact is corrupt or hostile")
        _field(path, spec, "name", (str,), f"{label}.name")
        shape = _field(path, spec, "shape", (list, type(None)), f"{label}.shape")
        _field(path, spec, "dtype", (str, type(None)), f"{label}.dtype")
        for d in shape or []:
            if isinstance(d, bool) or not (isinstance(d, int) and 0 <= d < 2 ** 62 or isinstance(d, str)):
                raise InputError(f"{path}: manifest field '{label}.shape' holds {d!r}, not a size or a symbol; "
                                 "the artifact is corrupt or hostile")
        value = _field(path, spec, "value", (list,), f"{label}.value", required=False)
        if value is not None and (len(value) > 4096 or not all(isinstance(v, (int, float)) for v in value)):
            raise InputError(f"{path}: manifest field '{label}.value' is not a short list of numbers; the "
                             "artifact is corrupt or hostile")


def check_manifest(path: str, manifest: Any) -> None:
    """Validate a parsed manifest (``path`` names it in errors): format, version (an int this fxopt reads),
    backend (a registered name), the types of program, passes, inputs, outputs, pytree specs and
    partitions, and that every partition file is a relative path inside the artifact. InputError (one
    line) for the first problem."""
    if not isinstance(manifest, dict) or manifest.get("format") != ARTIFACT_FORMAT:
        raise InputError(f"{path}: not an fxopt artifact manifest")
    version = manifest.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise InputError(f"{path}: manifest version is {_type_name(version)}, not an integer; the artifact is "
                         "corrupt or hostile")
    if version != ARTIFACT_VERSION:
        newer = "newer than this fxopt reads; upgrade fxopt" if version > ARTIFACT_VERSION else \
            "not a version fxopt ever wrote; the artifact is corrupt or hostile"
        raise InputError(f"{path}: artifact format version {version} is {newer} (this fxopt reads "
                         f"{ARTIFACT_VERSION})")
    backend = _field(path, manifest, "backend", (str,), "backend")
    if backend not in BACKENDS:
        raise InputError(f"{path}: manifest names unknown backend {backend[:60]!r} (available: "
                         f"{', '.join(backend_names())})")
    _field(path, manifest, "program", (str,), "program", required=False)
    for p in _field(path, manifest, "passes", (list,), "passes", required=False) or []:
        if not isinstance(p, str):
            raise InputError(f"{path}: manifest field 'passes' holds {_type_name(p)}, not pass names; the "
                             "artifact is corrupt or hostile")
    _check_specs(path, manifest, "inputs")
    _check_specs(path, manifest, "outputs")
    for key in ("in_spec", "out_spec", "in_structure", "out_structure"):
        _field(path, manifest, key, (str, type(None)), key, required=False)
    parts = _field(path, manifest, "partitions", (list,), "partitions")
    for i, part in enumerate(parts):
        if not isinstance(part, dict):
            raise InputError(f"{path}: manifest field 'partitions[{i}]' is {_type_name(part)}, not an object; "
                             "the artifact is corrupt or hostile")
        for key in ("name", "device", "runtime"):
            _field(path, part, key, (str,), f"partitions[{i}].{key}", required=False)
        for key in ("inputs", "outputs", "files", "inplace_ops"):
            values = _field(path, part, key, (list,), f"partitions[{i}].{key}", required=False) or []
            if not all(isinstance(v, str) for v in values):
                raise InputError(f"{path}: manifest field 'partitions[{i}].{key}' holds non-strings; the "
                                 "artifact is corrupt or hostile")
    _check_manifest_files(path, manifest)


def _check_manifest_files(path: str, manifest: dict) -> None:
    """Every partition's ``files`` entry must be a relative path inside the artifact directory (no
    absolute paths, no ``..``), except a shared-store member's declared link to its store; else InputError."""
    parts = manifest["partitions"]
    if not isinstance(parts, list) or not all(isinstance(p, dict) for p in parts):
        raise InputError(f"{path}: manifest 'partitions' is not a list of objects; the file is corrupt")
    for part in parts:
        files = part.get("files", [])
        if not isinstance(files, list):
            raise InputError(f"{path}: partition 'files' is not a list; the file is corrupt")
        store_link = part.get("shared_store") if manifest.get("backend") == "reference-shared" else None
        for name in files:
            if isinstance(name, str) and name and name == store_link == "../weights.safetensors":
                continue
            if isinstance(name, str) and "\0" in name:
                raise InputError(f"{path}: manifest names file {name!r}, which holds a NUL byte; refusing to load a "
                                 "corrupt or hostile artifact")
            norm = os.path.normpath(name) if isinstance(name, str) and name else ""
            if (not norm or os.path.isabs(name) or os.path.isabs(norm) or norm == ".." or norm.startswith(".." + os.sep)
                    or "\\" in name or ":" in name):
                raise InputError(f"{path}: manifest names file {name!r} outside the artifact directory; "
                                 "refusing to load a corrupt or hostile artifact")


def load(directory: str) -> Compiled:
    """Load an artifact directory written by :meth:`Compiled.save`; returns a callable Compiled."""
    directory = os.fspath(directory)
    manifest = read_manifest(directory)
    backend = get_backend(manifest["backend"])
    compiled = backend.load(directory, manifest)
    if compiled.trace is None:
        compiled.trace = read_trace(directory)
    return compiled


def common_kwargs(manifest: dict) -> dict:
    """Constructor keyword arguments of :class:`Compiled` recovered from a manifest."""
    try:
        in_spec = _load_spec(manifest.get("in_spec"), manifest.get("in_structure"))
        out_spec = _load_spec(manifest.get("out_spec"), manifest.get("out_structure"))
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"manifest: unreadable input/output structure ({_first_line(exc)}); the artifact is "
                         "corrupt or hostile") from None
    return dict(name=manifest.get("program", "model"), in_spec=in_spec, out_spec=out_spec,
                input_specs=manifest["inputs"], output_specs=manifest["outputs"],
                passes=manifest.get("passes", []))


def capture_notes(program: Program) -> dict:
    """``{"capture_notes": [...]}`` for a manifest when capture had something to tell (else ``{}``)."""
    return {"capture_notes": list(program.notes)} if getattr(program, "notes", None) else {}


def compile_program(program: Program, backend: str = "reference") -> Compiled:
    """Compile ``program`` with the named backend; returns a runnable :class:`Compiled`."""
    return get_backend(backend).compile(program)
