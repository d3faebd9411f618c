"""The pass registry and the pipeline syntax.

Passes are registered by name → ``"module:Class"`` and imported only when used (listing them imports each
one, which is fine for ``fxopt passes``). Third-party passes register with :func:`register_pass`.

Pipeline syntax: comma-separated pass names, each optionally followed by ``{key=value,...}``::

    dce,unroll{partition=25,max_len=75},dedupe
"""
from __future__ import annotations

from typing import Any, Iterable

from fxopt.errors import InputError
from fxopt.options import NAME, Registry, parse_specs
from fxopt.passes.base import Pass, from_options

# name -> "module:Class" (lazy) or the class itself (registered at run time)
PASSES = Registry("pass", {
    "dce": "fxopt.passes.dce:DeadCodeElimination",
    "fold-constants": "fxopt.passes.fold_constants:FoldConstants",
    "canonicalize": "fxopt.passes.canonicalize:Canonicalize",
    "unroll": "fxopt.passes.unroll:Unroll",
    "split": "fxopt.passes.split:Split",
    "moe": "fxopt.passes.moe:FuseExperts",
    "dedupe": "fxopt.passes.dedupe:Dedupe",
    "decompose-embedding-bag": "fxopt.passes.decompose_embedding_bag:DecomposeEmbeddingBag",
    "stable-sort": "fxopt.passes.stable_sort:StableSort",
}, unknown="unknown pass '{name}' (known passes: {names}); see `fxopt passes`")

# The pipeline `fxopt run` uses when no --passes is given, per target.
DEFAULT_PIPELINES: dict[str, str] = {
    "reference": "canonicalize,fold-constants,dedupe,moe,dce",
    # split last: it records partitions that later passes would invalidate. xla: policy=support, because the
    # XLA backend runs its executables where JAX runs (XLA:CPU on this host: no transfer, and split's h100
    # plan would describe another machine), so every op XLA lowers goes to XLA. neuron: an Inferentia server
    # pipelines requests, so the cost policy places by throughput (the busiest of CPU, NeuronCore and link
    # per request; docs/passes/split.md "Objectives"); policy=support sent ops there even when the estimate
    # said the host alone was several times faster.
    # unroll first on accelerators (a no-op, said in one note, for programs without a decode loop): a decode
    # loop becomes fixed-shape partitions, each compiled by the backend, the host checking EOS between them.
    "xla": "unroll,canonicalize,fold-constants,dedupe,moe,dce,split{target=xla,policy=support}",
    "neuron": "unroll,canonicalize,fold-constants,dedupe,moe,dce,split{target=neuron,objective=throughput}",
    # TensorRT runs on a separate GPU: the cost policy weighs transfers, by throughput (the busiest of CPU,
    # GPU and link per request, as a pipelined server runs; docs/passes/split.md "Objectives"); embedding bags
    # become gathers + sums first (their ONNX export is a Loop TensorRT rejects); sorts are made stable, as
    # ONNX TopK sorts.
    "tensorrt": "unroll,canonicalize,stable-sort,fold-constants,dedupe,moe,decompose-embedding-bag,dce,"
                "split{target=tensorrt,objective=throughput}",
}

def register_pass(cls: type[Pass]) -> type[Pass]:
    """Register a Pass subclass under its ``name`` (usable as a class decorator); returns the class."""
    if not NAME.match(cls.name or ""):
        raise ValueError(f"pass name {cls.name!r} must be kebab-case, e.g. 'fold-constants'")
    PASSES.register(cls.name, cls)
    return cls


def unregister_pass(name: str) -> None:
    """Remove a pass registered at run time (used by tests)."""
    PASSES.unregister(name)


def pass_names() -> list[str]:
    """All registered pass names, sorted."""
    return PASSES.names()


def get_pass_class(name: str) -> type[Pass]:
    """The Pass class registered as ``name``; unknown names raise InputError listing the known ones."""
    return PASSES.get(name)


def parse_pipeline(text: str) -> list[tuple[str, dict[str, str]]]:
    """Split pipeline text into ``[(pass name, {option: raw value}), ...]``; raises InputError when malformed."""
    return parse_specs(text, "pass")


def build_pipeline(passes: str | Iterable[Any]) -> list[Pass]:
    """Pass instances from pipeline text, or a list of names / ``name{k=v}`` strings / Pass instances."""
    if isinstance(passes, str):
        specs: list[Any] = [passes]
    else:
        specs = list(passes)
    pipeline: list[Pass] = []
    for spec in specs:
        if isinstance(spec, Pass):
            pipeline.append(spec)
            continue
        if isinstance(spec, type) and issubclass(spec, Pass):
            pipeline.append(spec())
            continue
        if not isinstance(spec, str):
            raise InputError(f"cannot use {spec!r} as a pass: give a name, 'name{{k=v}}' or a Pass instance")
        for name, options in parse_pipeline(spec):
            pipeline.append(from_options(get_pass_class(name), options))
    return pipeline


def default_pipeline(target: str) -> str:
    """The default pipeline text for ``target`` (the reference pipeline for targets without their own)."""
    return DEFAULT_PIPELINES.get(target, DEFAULT_PIPELINES["reference"])
