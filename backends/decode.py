"""The decode runtime: drives a decode-loop program's pieces with early stop, and saves/loads them.

A program captured from a decode-loop module (:func:`fxopt.ir.capture.decoder.capture_decoder`) or rewritten by the
``unroll`` pass has a graph that calls its pieces as submodules (``decode_encode``, ``decode_init``, and
``decode_step`` or ``decode_part{k}``) and a ``plan`` in its decode-loop region. Run as a plain graph it
computes every step. :class:`DecodeCompiled` instead runs the encoder once, then

- ``loop`` plan: the generic step graph once per step, checking on the host after every step;
- ``partitioned`` plan: each partition graph in turn (state passed from one to the next as tensors, the
  encoder output reused), checking on the host only between partitions;

and stops as soon as every row has emitted EOS. The result is always tokens ``[batch, max_len]``, ``eos_id``
after a row's first EOS and for the steps not run (the output convention of :mod:`fxopt.ir.loops`), identical
to running every step. ``last_calls`` counts the graph calls of the latest run (encoder + init + steps or
partitions), ``last_steps`` the decode steps computed.

Artifact: the whole graph (with its submodules) as ``graph.json`` + ``graph.safetensors`` (as the reference
backend writes it, so the reference backend can also load it and run every step), and in the manifest
``"runtime": "decode-partitions"`` and ``"decode"``: the plan plus ``batch`` (the example's), ``bos_id``,
``eos_id``, ``n_state`` and ``dynamic_batch``. The batch of a run is read from the encoder's output, so a
program captured with ``dynamic_shapes="batch"`` (every piece and partition graph symbolic in the batch,
see :mod:`fxopt.ir.loops_batch`) decodes any batch, in this process or after :func:`load`.
"""
from __future__ import annotations

import os

import torch

from fxopt.backends.base import Compiled, capture_notes, common_kwargs, io_specs
from fxopt.backends.fast_graph import fast_forward
from fxopt.backends.reinplace import inplace_plan
from fxopt.errors import InputError
from fxopt.ir import loops, serialize
from fxopt.ir.program import Program

from fxopt.ir.decode_graphs import ENCODE, INIT, STEP, part_name, piece_names
from fxopt.backends.base import read_manifest

RUNTIME = "decode-partitions"


def uses_runtime(program: Program) -> bool:
    """True when ``program`` has a decode-loop region whose current plan needs this runtime (``loop`` or
    ``partitioned``; a ``full`` unroll is one plain graph)."""
    region = loops.decode_region(program)
    return region is not None and region.get("plan", {}).get("variant") in ("loop", "partitioned")


def plan_of(program: Program) -> dict:
    """The runtime plan of ``program``: its region's plan plus ``batch``, ``bos_id``, ``eos_id``,
    ``n_state``. Raises InputError when the program has no decode-loop region."""
    region = loops.decode_region(program)
    if region is None:
        raise InputError(f"'{program.name}' has no decode loop; compile it with the reference backend")
    plan = {**region["plan"], "batch": region["batch"], "bos_id": region["bos_id"],
            "eos_id": region["eos_id"], "n_state": len(region["state"]),
            "dynamic_batch": bool(region.get("dynamic_batch"))}
    for key in ("first_token", "generation"):     # set by capture for encoders that emit the first token
        if region.get(key) is not None:
            plan[key] = region[key]
    return plan


class DecodeCompiled(Compiled):
    """A decode-loop artifact run with early stop (see the module docstring)."""

    backend = "reference"

    def __init__(self, graph_module: torch.fx.GraphModule, plan: dict,
                 inplace_ops: dict[str, list[str]] | None = None, **kwargs):
        """``graph_module``: the program's graph (holding the pieces as submodules); ``plan``: see
        :func:`plan_of`; ``inplace_ops``: per piece, its ops run in place (saved with the artifact; None
        plans them from the pieces' shapes); other keyword arguments as in :class:`Compiled`."""
        super().__init__(**kwargs)
        self.graph_module = graph_module
        self.plan = dict(plan)
        self.extra = {**self.extra, "runtime": RUNTIME, "decode": self.plan}
        self.last_calls = 0
        self.last_steps = 0
        names = piece_names(plan)
        missing = [n for n in names if not hasattr(graph_module, n)]
        if missing or plan["variant"] not in ("loop", "partitioned"):
            raise InputError(f"decode artifact '{self.name}': plan {plan['variant']!r} needs submodule "
                             f"{missing[0] if missing else '?'}; re-create it with `fxopt run`")
        # each piece runs through the fast op binding (backends/fast_graph): a step is many small ops
        self.inplace_ops: dict[str, list[str]] = {}

        def piece(name):
            module = getattr(graph_module, name)
            ops = inplace_plan(module.graph) if inplace_ops is None else inplace_ops.get(name, [])
            self.inplace_ops[name] = list(ops)
            return fast_forward(module, ops)

        self._encode = piece(ENCODE)
        self._init = piece(INIT)
        self._step = piece(STEP) if hasattr(graph_module, STEP) else None
        self._parts = [piece(part_name(k)) for k in range(len(plan["parts"] or []))]

    def run_flat(self, flat_inputs: list) -> tuple:
        """Decode with early stop; returns ``(tokens [batch, max_len],)`` (``[batch, 1 + max_len]`` when the
        encoder emits the first token)."""
        p = self.plan
        host = self._host
        memory = list(_as_tuple(self._encode(*flat_inputs)))
        state = list(_as_tuple(self._init(*memory)))
        token, finished, chunks = self._start(memory)
        head, calls, steps = len(chunks), 2, 0
        running = not bool(finished.all())
        if running and p["variant"] == "loop":
            eos = torch.full_like(token, p["eos_id"])
            for _ in range(p["max_len"]):
                out = _as_tuple(self._step(token, *state, *memory))
                token = torch.where(finished, eos, out[0].argmax(-1))
                finished = finished | (token == p["eos_id"])
                state = list(out[1:])
                chunks.append(token.unsqueeze(1))
                calls, steps = calls + 1, steps + 1
                if bool(finished.all()):
                    break
        elif running:
            for (start, stop), part in zip(p["parts"], self._parts):
                out = _as_tuple(part(token, finished, *state, *memory))
                chunks.append(host(out[0]))
                token, finished, state = out[1], host(out[2]), list(out[3:])
                calls, steps = calls + 1, steps + (stop - start)
                if bool(finished.all()):
                    break
        self.last_calls, self.last_steps = calls, steps
        done = torch.cat(chunks, 1) if chunks else host(token).new_empty((token.shape[0], 0))
        return (loops.pad(done, head + p["max_len"], p["eos_id"]),)

    # a piece's output as a torch tensor: unchanged here; PiecewiseDecode's pieces may return device arrays
    _host = staticmethod(lambda value: value)

    def _start(self, memory: list) -> tuple:
        """``loops.start`` on encode's flat outputs, converting to torch only what it reads: the first token
        when encode emits it, else nothing (a stand-in of the batch size, so memory on a device stays there)."""
        p = self.plan
        tensors = [m for m in memory if not isinstance(m, (bool, int, float, type(None)))]
        if p.get("first_token") is None:
            return loops.start([torch.empty(tuple(tensors[0].shape[:1]) if tensors else ())], p["bos_id"],
                               p["eos_id"], None)
        return loops.start([self._host(tensors[p["first_token"]])], p["bos_id"], p["eos_id"], 0)

    def write_partitions(self, directory: str) -> list[dict]:
        """Write ``graph.json`` + ``graph.safetensors``; returns one manifest entry per piece."""
        files = sorted(os.path.basename(f) for f in serialize.save_graph_module(self.graph_module, directory,
                                                                                stem="graph"))
        names = [ENCODE, INIT] + ([STEP] if self.plan["variant"] == "loop"
                                  else [part_name(k) for k in range(len(self._parts))])
        return [{
            "name": n, "device": "cpu", "runtime": "pytorch-eager", "files": files, "submodule": n,
            "inplace_ops": self.inplace_ops.get(n, []),
            "steps": {"done_here": ["graph serialized", "weights saved (safetensors)",
                                    f"driven by the {RUNTIME} runtime (early stop on the host)"],
                      "left_for_target": []},
        } for n in names]


# manifest keys a piece shares with the whole artifact (kept once, at the top)
_SHARED_KEYS = ("dynamic_dims", "source", "capture_notes", "target", "backend_options")


class PiecewiseDecode(DecodeCompiled):
    """The decode runtime over pieces another backend compiled (an accelerator's artifacts, one per
    piece): the host runs the same loop as :class:`DecodeCompiled` and checks EOS between calls.

    ``pieces``: ``{piece name: Compiled}`` for every name of :func:`piece_names`; each is called with the
    piece's flat inputs and returns its flat outputs. Saving writes every piece's partitions into the one
    directory (their entries tagged ``"piece"``), and the manifest's ``pieces`` keeps each piece's own
    manifest keys (``stitch``, input and output specs, a backend's own keys such as Neuron's ``buckets``)
    so the owning backend's loader can rebuild it."""

    def __init__(self, pieces: dict[str, Compiled], plan: dict, backend: str, **kwargs):
        """``pieces`` and ``plan`` as above; ``backend``: the name the artifact is loaded with."""
        Compiled.__init__(self, **kwargs)
        self.backend = backend
        self.plan = dict(plan)
        names = piece_names(self.plan)
        missing = [n for n in names if n not in pieces]
        if missing or self.plan["variant"] not in ("loop", "partitioned"):
            raise InputError(f"decode artifact '{self.name}': plan {self.plan['variant']!r} needs piece "
                             f"{missing[0] if missing else '?'}; re-create it with `fxopt run`")
        self.pieces = {n: pieces[n] for n in names}
        self.extra = {**self.extra, "runtime": RUNTIME, "decode": self.plan,
                      "pieces": {n: {**{k: v for k, v in c.extra.items() if k not in _SHARED_KEYS},
                                     "inputs": c.input_specs, "outputs": c.output_specs}
                                 for n, c in self.pieces.items()}}
        self.last_calls = 0
        self.last_steps = 0

        # a piece's outputs go to the next piece in its runtime's own arrays (XLA: jax.Arrays on the device),
        # so the KV cache never makes a round trip through torch; only tokens and flags come to the host
        native = next((c for c in self.pieces.values() if c.native), None)
        self._host = native.to_host if native is not None else (lambda value: value)

        use_native = self.plan["variant"] == "partitioned"   # the step loop's host code works on tensors

        def runner(compiled: Compiled):
            if compiled.native and use_native:
                return lambda *args: compiled.run_flat_native(list(args))
            return lambda *args: compiled.run_flat([self._host(a) for a in args])

        self._encode = runner(self.pieces[ENCODE])
        self._init = runner(self.pieces[INIT])
        self._step = runner(self.pieces[STEP]) if STEP in self.pieces else None
        self._parts = [runner(self.pieces[n]) for n in names[2:]] if self.plan["variant"] == "partitioned" else []

    def write_partitions(self, directory: str) -> list[dict]:
        """Every piece's partition entries (files written into ``directory``), each tagged with its piece."""
        entries = []
        for name, piece in self.pieces.items():
            entries += [{**entry, "piece": name} for entry in piece.write_partitions(directory)]
        return entries


def _as_tuple(out) -> tuple:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def compile(program: Program) -> DecodeCompiled:  # noqa: A001 - mirrors fxopt.compile
    """Compile a decode-loop ``program`` (left unmodified) to a :class:`DecodeCompiled` sharing its weights."""
    prog = program.copy()
    prog.ensure_compiled()
    inputs, outputs = io_specs(prog)
    return DecodeCompiled(
        prog.graph_module, plan_of(prog), name=prog.name, in_spec=prog.in_spec, out_spec=prog.out_spec,
        input_specs=inputs, output_specs=outputs, trace=prog.trace_json(),
        passes=[r.spec for r in prog.reports if r.status == "ran"],
        extra={"dynamic_dims": prog.dynamic_dims, "source": prog.source, **capture_notes(prog)},
    )


def load(directory: str, manifest: dict | None = None) -> DecodeCompiled:
    """Load a decode artifact written by :meth:`DecodeCompiled.save` from ``directory``."""

    directory = os.fspath(directory)
    manifest = manifest if manifest is not None else read_manifest(directory)
    if manifest.get("runtime") != RUNTIME or not isinstance(manifest.get("decode"), dict):
        raise InputError(f"{directory}: not a decode artifact (manifest runtime is "
                         f"{manifest.get('runtime')!r}); load it with fxopt.load")
    gm = serialize.load_graph_module(directory, stem="graph")
    kwargs = common_kwargs(manifest)
    kwargs["extra"] = {k: manifest[k] for k in ("dynamic_dims", "source") if k in manifest}
    inplace = {p["name"]: p.get("inplace_ops", []) for p in manifest["partitions"] if "name" in p}
    return DecodeCompiled(gm, manifest["decode"], inplace_ops=inplace, **kwargs)
