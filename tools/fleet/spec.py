"""The fleet file: which models to compile, how, and which are deployed together.

``fleet.toml``::

    [defaults]                 # optional: every [[model]] starts from these
    backend = "reference"
    cpus = 1                   # CPU request of each job (a Ray task, a Kubernetes container)
    memory_gb = 2

    [[model]]
    name = "ranking"           # the artifact's directory under --out; letters, digits, '_', '-', '.'
    model = "zoo:ranking"      # any model spec `fxopt run` takes
    small = true               # optional: the zoo model's small variant
    backend = "xla"            # optional: reference (default), xla, tensorrt, neuron, with {options}
    passes = "canonicalize,dce"  # optional: default the backend target's pipeline
    input = ["x=float32[8,128]"] # optional: as `fxopt run --input`
    batch = 64                 # optional: as `fxopt run --batch`
    group = "moderation"       # optional: models of one group share one weight store (reference backend)

This module only reads and checks the file (no torch): every problem is one line naming the file, the model
and the key, raised as :class:`fxopt.errors.InputError`.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as the tomli package
    import tomli as tomllib

from fxopt.errors import InputError

__all__ = ["ModelJob", "FleetSpec", "read_fleet", "parse_fleet"]

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")
_KEYS = {"name": str, "model": str, "small": bool, "backend": str, "passes": str, "input": list,
         "batch": int, "group": str, "cpus": (int, float), "memory_gb": (int, float)}
_DEFAULT_KEYS = set(_KEYS) - {"name", "model", "group"}


@dataclasses.dataclass(frozen=True)
class ModelJob:
    """One model of the fleet, with everything a worker needs to compile it (plain data: it crosses process
    and machine boundaries)."""

    name: str
    model: str
    backend: str = "reference"
    passes: str | None = None
    small: bool = False
    input: tuple[str, ...] = ()
    batch: int | None = None
    group: str | None = None
    cpus: float = 1.0
    memory_gb: float = 2.0

    @property
    def target(self) -> str:
        """The backend's target name (``xla`` for ``xla{...}``)."""
        return self.backend.partition("{")[0].strip()


@dataclasses.dataclass(frozen=True)
class FleetSpec:
    """The models of a fleet file, in file order, and where the file is (relative model paths resolve
    against its directory)."""

    models: tuple[ModelJob, ...]
    path: str = "<fleet>"

    def groups(self) -> dict[str, list[ModelJob]]:
        """``{group name: its models}`` for the models that name a group."""
        out: dict[str, list[ModelJob]] = {}
        for job in self.models:
            if job.group:
                out.setdefault(job.group, []).append(job)
        return out


def read_fleet(path: str) -> FleetSpec:
    """Read and check the fleet file at ``path`` (TOML, see the module docstring). Raises InputError."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise InputError(f"{path}: no such fleet file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read the fleet file ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML ({exc}); see docs/fleet.md for the format") from None
    return parse_fleet(data, path)


def _check(where: str, key: str, value: Any) -> Any:
    kind = _KEYS.get(key)
    if kind is None:
        raise InputError(f"{where}: unknown key {key!r}; known keys: {', '.join(sorted(_KEYS))}")
    if isinstance(value, bool) and kind is not bool:
        raise InputError(f"{where}: {key} must be {_kind_text(kind)}, got {value!r}")
    if not isinstance(value, kind):
        raise InputError(f"{where}: {key} must be {_kind_text(kind)}, got {value!r}")
    if key == "input":
        if not all(isinstance(v, str) for v in value):
            raise InputError(f"{where}: input must be a list of strings such as 'x=float32[8,128]'")
        from fxopt.tools.model_inputs import parse_input_specs  # local: tools above this module's layer peers

        try:
            parse_input_specs(value)
        except InputError as exc:
            raise InputError(f"{where}: input: {exc}") from None
        return tuple(value)
    if key in ("batch", "cpus", "memory_gb") and not value > 0:
        raise InputError(f"{where}: {key} must be > 0, got {value!r}")
    if key in ("name", "group") and not _NAME.match(value):
        raise InputError(f"{where}: {key} {value!r} is not a plain directory name (letters, digits, '_', '-', '.')")
    return value


def _kind_text(kind: Any) -> str:
    names = {str: "a string", bool: "true or false", int: "an integer", list: "a list", (int, float): "a number"}
    return names.get(kind, str(kind))


def parse_fleet(data: dict, path: str = "<fleet>") -> FleetSpec:
    """Check a fleet document already parsed from TOML (or built in code, as :func:`fxopt.fleet` takes it)
    and return its :class:`FleetSpec`. Raises InputError (one line naming ``path``, the model and the key)."""
    if not isinstance(data, dict):
        raise InputError(f"{path}: a fleet is a table with [[model]] entries")
    unknown = set(data) - {"defaults", "model"}
    if unknown:
        raise InputError(f"{path}: unknown table {sorted(unknown)[0]!r}; a fleet file has [defaults] and [[model]]")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise InputError(f"{path}: [defaults] must be a table")
    base = {}
    for key, value in defaults.items():
        if key not in _DEFAULT_KEYS:
            raise InputError(f"{path} [defaults]: {key!r} cannot be a default; give it per [[model]]")
        base[key] = _check(f"{path} [defaults]", key, value)
    entries = data.get("model", [])
    if not isinstance(entries, list) or not entries:
        raise InputError(f"{path}: no [[model]] entries; list the models to compile (docs/fleet.md)")
    jobs: list[ModelJob] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        where = f"{path} model {i + 1}"
        if not isinstance(entry, dict):
            raise InputError(f"{where}: each [[model]] must be a table")
        fields = dict(base)
        for key, value in entry.items():
            fields[key] = _check(where, key, value)
        for required in ("name", "model"):
            if required not in fields:
                raise InputError(f"{where}: missing {required!r}")
        where = f"{path} model {fields['name']!r}"
        if fields["name"] in seen:
            raise InputError(f"{where}: the name is used twice; each model needs its own directory name")
        seen.add(fields["name"])
        model = fields["model"]
        # a relative file spec resolves against the fleet file's directory, as a user reads it
        head, sep, attr = model.rpartition(":")
        if sep and (head.endswith(".py") or head.endswith(".pt2") or head.endswith(".onnx")) \
                and not os.path.isabs(head) and path != "<fleet>":
            fields["model"] = f"{os.path.join(os.path.dirname(os.path.abspath(path)), head)}:{attr}"
        elif model.endswith((".pt2", ".onnx")) and not os.path.isabs(model) and path != "<fleet>":
            fields["model"] = os.path.join(os.path.dirname(os.path.abspath(path)), model)
        if fields.get("small") and not fields["model"].startswith("zoo:"):
            raise InputError(f"{where}: small = true applies to zoo:NAME models only")
        jobs.append(ModelJob(**fields))
    names = {j.name for j in jobs}
    for group, members in FleetSpec(tuple(jobs)).groups().items():
        where = f"{path} group {group!r}"
        if group in names:
            raise InputError(f"{where}: a group and a model share the name; the group's store is a directory "
                             f"beside the models'")
        backends = {m.backend for m in members}
        if backends != {"reference"}:
            raise InputError(f"{where}: a shared weight store holds reference artifacts; its models use "
                             f"{', '.join(sorted(backends))} (give them backend = \"reference\", or no group)")
        if len({m.passes for m in members}) > 1:
            raise InputError(f"{where}: the models of a group are optimized together; give them the same passes")
    return FleetSpec(tuple(jobs), path)
