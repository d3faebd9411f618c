"""Capture: turn what the user names (a module, a ``.pt2`` file, ``file.py:attr``, ``module:attr``,
``zoo:NAME``) into a :class:`~fxopt.ir.program.Program` via ``torch.export`` (non-strict) and core-ATen
decomposition, so every pass and backend sees one op set with ``meta["val"]`` shapes.

The user's model is never modified: training flags are restored, and weights are cloned into the Program.
"""
from __future__ import annotations

import contextlib
import contextvars
import importlib
import io
import importlib.util
import inspect
import logging
import os
import sys
import traceback
import warnings
import weakref
from typing import Any, Callable

import torch
import torch.fx
import torch.utils._pytree as pytree

from fxopt.errors import InputError
from fxopt.ir import cost, loops, numerics, provenance
from fxopt.ir.program import Program, delete_attr, fetch_attr, set_attr  # noqa: F401 - set_attr re-exported
from fxopt.ir import serialize
from fxopt.ir.capture import attention_layout, blocks, core_export, library_ops, pt2_check
from fxopt.ir.capture.library_modules import static_library_modules
from fxopt.ir.capture.library_outputs import plain_outputs
from fxopt.ir.capture.module_conversions import HINT as CONVERSION_HINT, no_op_conversions
from fxopt.ir.program import concrete_int

_LOG = logging.getLogger(__name__)

_DATA_DEPENDENT_HINT = (
    "the model branches on tensor values (data-dependent control flow); rewrite the branch with "
    "torch.cond / torch.where, or, for a greedy decode loop, name its pieces with decode=fxopt.LoopSpec(step=..., "
    "init_state=..., encode=...) (docs/decode-loop.md)"
)


# ---------------------------------------------------------------------------------------------- resolving
# "prefix:NAME" model specs served by a library of models: prefix -> resolver(NAME) -> (model, example
# inputs). fxopt.api registers "zoo" (fxopt.zoo.get); capture itself knows no model library.
MODEL_SOURCES: dict[str, Callable[[str], tuple[Any, Any]]] = {}


def register_model_source(prefix: str, resolver: Callable[[str], tuple[Any, Any]]) -> None:
    """Serve specs ``"<prefix>:NAME"`` with ``resolver(NAME) -> (nn.Module, example inputs)``."""
    MODEL_SOURCES[prefix] = resolver


def resolve_model(spec: Any, example_inputs: Any = None, trust_pickle: bool = False) -> tuple[Any, Any, str]:
    """Resolve a model spec to ``(model_or_exported_program, example_inputs, display_name)``.

    ``spec`` is an nn.Module, an ExportedProgram, a path to a ``.pt2`` file, ``file.py:attr``,
    ``package.module:attr`` or ``zoo:NAME``. ``attr`` may be a module class, a zero-argument factory or an
    instance. Example inputs default to the model's ``example_inputs()`` method (or the zoo's inputs); they
    may also be a function of the resolved model (or ExportedProgram, or ``.onnx`` path) returning them.

    What reading runs: ``file.py:attr`` and ``module:attr`` import (run) that file or module, as Python
    does. A ``.pt2`` is read without running code from it: parts only a full unpickler reads are refused
    unless ``trust_pickle`` (:mod:`fxopt.ir.capture.pt2_check`), and its graph may call only the operators a saved
    fxopt graph may (:mod:`fxopt.ir.loadable`), checked before anything runs.
    """
    if isinstance(spec, torch.export.ExportedProgram):
        return spec, example_inputs, "exported_program"
    if isinstance(spec, torch.nn.Module):
        return spec, _inputs_for(spec, example_inputs, type(spec).__name__), type(spec).__name__
    if not isinstance(spec, (str, os.PathLike)):
        raise InputError(f"cannot capture a {type(spec).__name__}: pass an nn.Module, a .pt2 path, "
                         "'file.py:Attr', 'module:Attr' or 'zoo:NAME'")
    text = os.fspath(spec)
    if "\0" in text:
        raise InputError(f"{text!r}: a model spec cannot hold a NUL byte; name a file, 'file.py:Attr', "
                         "'module:Attr' or 'zoo:NAME'")
    prefix, sep, rest = text.partition(":")
    if sep and prefix in MODEL_SOURCES:
        model, inputs = MODEL_SOURCES[prefix](rest)
        return model, _inputs_for(model, example_inputs, text, inputs), text
    if text.endswith(".pt2"):
        ep = _load_pt2(text, trust_pickle)
        if _is_inputs_maker(example_inputs):
            made = example_inputs(ep, None) if getattr(example_inputs, "uses_default", False) else example_inputs(ep)
            return ep, made, os.path.basename(text)
        return ep, example_inputs, os.path.basename(text)
    if ":" in text:
        where, _, attr = text.rpartition(":")
        obj = _load_attr(where, attr, text)
        model = _instantiate(obj, text)
        return model, _inputs_for(model, example_inputs, text), attr
    if os.path.exists(text):
        raise InputError(f"{text}: not a .pt2 file; name a model as 'file.py:Attr' or pass a .pt2 "
                         "saved with torch.export.save")
    raise InputError(f"{text}: no such file or model spec; use a .pt2 path, 'file.py:Attr', "
                     "'module:Attr' or 'zoo:NAME' (see `fxopt zoo`)")


def _load_pt2(path: str, trust_pickle: bool = False) -> torch.export.ExportedProgram:

    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    pt2_check.check_archive(path, trust_pickle)
    try:
        ep = torch.export.load(path)
    except Exception as exc:  # noqa: BLE001 - any failure to read is the file's fault
        raise InputError(f"{path}: not a readable torch.export .pt2 file ({_first_line(exc)}); "
                         "re-save it with torch.export.save") from exc
    for module in ep.graph_module.modules():   # before anything runs: only operators a saved graph may call
        if isinstance(module, torch.fx.GraphModule):
            for node in module.graph.nodes:
                if node.op == "call_function":
                    serialize.check_target(node.target, f"{path}: node '{node.name}'")
    return ep


def _load_attr(where: str, attr: str, spec: str) -> Any:
    if where.endswith(".py"):
        if not os.path.isfile(where):
            raise InputError(f"{where}: no such file (from model spec '{spec}')")
        name = "_fxopt_user_" + os.path.splitext(os.path.basename(where))[0]
        mod_spec = importlib.util.spec_from_file_location(name, os.path.abspath(where))
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[name] = module
        try:
            mod_spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001
            sys.modules.pop(name, None)
            raise InputError(f"{where}: importing it failed: {_first_line(exc)} "
                             f"({_user_location(exc) or where})") from exc
    else:
        try:
            module = importlib.import_module(where)
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"cannot import module '{where}' from model spec '{spec}': {_first_line(exc)}") from exc
    if not hasattr(module, attr):
        raise InputError(f"{where} has no attribute '{attr}' (model spec '{spec}')")
    return getattr(module, attr)


# Modules fxopt constructed itself from a class named in a spec: new modules start in train mode, so the
# train-mode warning is for instances the user made (or a factory returned), not for these.
_BUILT_FROM_A_CLASS: "weakref.WeakSet[torch.nn.Module]" = weakref.WeakSet()
# True while a capture runs (the pieces of a decode loop are captured inside it): only the outermost one warns.
_CAPTURING: contextvars.ContextVar[bool] = contextvars.ContextVar("fxopt_capturing", default=False)


def _instantiate(obj: Any, spec: str) -> torch.nn.Module:
    if isinstance(obj, torch.nn.Module):
        return obj
    if isinstance(obj, type) and issubclass(obj, torch.nn.Module):
        try:
            model = obj()
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"{spec}: calling it with no arguments failed: {_first_line(exc)}; "
                             "point at a zero-argument class or factory") from exc
        _BUILT_FROM_A_CLASS.add(model)
        return model
    if callable(obj):
        try:
            model = obj()
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"{spec}: calling it with no arguments failed: {_first_line(exc)}; "
                             "point at a zero-argument class or factory") from exc
        if isinstance(model, torch.nn.Module):
            return model
        raise InputError(f"{spec}: returned a {type(model).__name__}, not a torch.nn.Module")
    raise InputError(f"{spec}: is a {type(obj).__name__}, not a torch.nn.Module class, factory or instance")


def _is_inputs_maker(example_inputs: Any) -> bool:
    """Whether ``example_inputs`` is a function of the resolved model (the CLI's ``--input``) rather than
    the inputs themselves."""
    return callable(example_inputs) and not isinstance(example_inputs, (torch.Tensor, tuple, list, dict))


def _inputs_for(model: torch.nn.Module, example_inputs: Any, name: str, default: Any = None) -> tuple:
    """The example inputs: given ones, ``example_inputs(model)`` for a maker (``example_inputs(model,
    default)`` for one with ``uses_default = True``), else ``default`` (a model library's), else the model's
    ``example_inputs()`` method; InputError saying how to give them."""
    if _is_inputs_maker(example_inputs):
        if getattr(example_inputs, "uses_default", False):   # e.g. the CLI's --batch: it rebatches these
            return example_inputs(model, default)
        return example_inputs(model)
    if example_inputs is not None:
        return example_inputs
    if default is not None:
        return default
    method = getattr(model, "example_inputs", None)
    if callable(method):
        return method()
    raise InputError(f"{name}: no example inputs; give them (fxopt.capture(model, inputs), or on the command "
                     "line --input 'x=float32[8,128]' per forward argument, or --inputs file.pt), or give the "
                     "model an example_inputs() method")


# ---------------------------------------------------------------------------------------------- capture
def capture(model: Any, example_inputs: Any = None, *, example_kwargs: dict | None = None,
            dynamic_shapes: Any = None, trust_pickle: bool = False, decode: Any = None) -> Program:
    """Capture ``model`` as a flat, core-ATen :class:`Program`.

    Takes an nn.Module (or spec string, see :func:`resolve_model`), its example inputs (a tuple of
    positional args, or a single tensor), keyword inputs ``example_kwargs`` (a Hugging Face model's
    ``model(**batch)``: ``example_kwargs=batch``) and optional ``torch.export`` ``dynamic_shapes``, or ``"batch"``:
    dim 0 of every input tensor as ``Dim.AUTO`` (symbolic where the model allows it, static where it
    hard-codes the size). ``trust_pickle``: read a ``.pt2`` whose parts need a full unpickler (which can run
    code; see :func:`resolve_model`). ``decode``: a
    :class:`~fxopt.ir.capture.generation.GenerationSpec` (or a dict of its fields) to capture a Hugging
    Face model's greedy ``generate`` as a decode loop (``example_inputs``: ``(input_ids[,
    attention_mask])``), or a :class:`~fxopt.ir.capture.loop_spec.LoopSpec` (or a dict with a ``step``)
    naming the pieces of the greedy loop the model's own forward runs. Returns a Program whose nodes carry ``val``, ``provenance`` and ``cost``. Raises
    :class:`InputError` with one line when the model cannot be captured.
    """
    if isinstance(model, (str, os.PathLike)) and os.fspath(model).endswith(".onnx"):
        # local: onnx_import imports this module (ONNX in: converted, then exported as below)
        from fxopt.ir.capture.onnx_import import capture_onnx

        if _is_inputs_maker(example_inputs):
            example_inputs = example_inputs(os.fspath(model))
        return capture_onnx(os.fspath(model), example_inputs, dynamic_shapes=dynamic_shapes)
    if example_kwargs is not None and example_inputs is None:
        example_inputs = ()    # keywords only: the model's own example_inputs() is not wanted
    resolved, inputs, name = resolve_model(model, example_inputs, trust_pickle)
    if decode is not None:
        from fxopt.ir.capture import loop_spec   # local: loop_spec is only wanted with decode=

        if loop_spec.is_loop_spec(decode):
            return _capture_loop_spec(resolved, inputs, decode, name, model, dynamic_shapes)
        return _capture_generation(resolved, inputs, example_kwargs, decode, name, model, dynamic_shapes)
    kwargs = dict(example_kwargs or {})
    source = os.fspath(model) if isinstance(model, (str, os.PathLike)) else name
    original = resolved if isinstance(resolved, torch.nn.Module) else None
    outermost = not _CAPTURING.get()
    token = _CAPTURING.set(True)   # the decode-loop protocol captures its pieces through capture() again
    try:
        program = _capture_resolved(resolved, inputs, kwargs, name, source, original, dynamic_shapes)
    finally:
        _CAPTURING.reset(token)
    moded = _mode_dependent_in_training(original) if outermost and original is not None \
        and original not in _BUILT_FROM_A_CLASS else []
    if moded:
        path, kind = moded[0]
        more = f" (and {len(moded) - 1} more)" if len(moded) > 1 else ""
        note = (f"{name} is in train mode ({path or 'the model'}: {kind}{more}); fxopt captured it in eval mode "
                "(dropout off, batch norm on its running statistics) as inference runs it — call model.eval() "
                "first to silence this")
        warnings.warn(note, stacklevel=3)
        program.notes.append(note)
    return program


def _capture_generation(model: Any, inputs: Any, kwargs: dict | None, decode: Any, name: str, spec: Any,
                        dynamic_shapes: Any) -> Program:
    """Capture ``model``'s greedy generation under ``decode`` as a decode-loop Program (see
    :mod:`fxopt.ir.capture.generation`); its region records the resolved settings as ``generation``."""
    from fxopt.ir.capture import generation   # local: generation is only wanted with decode=

    if not isinstance(model, torch.nn.Module):
        raise InputError(f"{name}: decode= needs an nn.Module (a Hugging Face generation model)")
    if kwargs:
        inputs = tuple(_as_tuple(inputs or ())) + tuple(kwargs[k] for k in ("input_ids", "input_features",
                                                                            "attention_mask") if k in kwargs)
    _check_decode_shapes(dynamic_shapes, name)
    inputs = _as_tuple(inputs)
    loop = generation.generation_loop(model, inputs, decode, name)
    program = _capture_loop_module(loop, inputs, name, spec, dynamic_shapes)
    loops.decode_region(program)["generation"] = dict(loop.settings)
    return program


def _capture_loop_spec(model: Any, inputs: Any, decode: Any, name: str, spec: Any, dynamic_shapes: Any) -> Program:
    """Capture a model whose forward runs its own greedy loop, from the pieces ``decode`` (a LoopSpec) names
    (see :mod:`fxopt.ir.capture.loop_spec`); the captured loop must emit the tokens the model's forward
    emits on the example inputs (InputError otherwise)."""
    from fxopt.ir.capture import loop_spec   # local: loop_spec is only wanted with decode=

    _check_decode_shapes(dynamic_shapes, name)
    inputs = _as_tuple(inputs)
    loop = loop_spec.loop_module(model, decode, name)
    program = _capture_loop_module(loop, inputs, name, spec, dynamic_shapes)
    tokens = program.run_flat(program.flat_example_inputs())[0]
    note = loop_spec.check_against_forward(model, loop, tokens, inputs, name)
    if note:
        program.notes.append(note)
    return program


def _check_decode_shapes(dynamic_shapes: Any, name: str) -> None:
    if dynamic_shapes not in (None, "batch"):
        raise InputError(f"{name}: decode= takes dynamic_shapes None or 'batch', got {dynamic_shapes!r}")


def _capture_loop_module(loop: torch.nn.Module, inputs: tuple, name: str, spec: Any, dynamic_shapes: Any) -> Program:
    """The decode-loop Program of ``loop``, a protocol module fxopt wrapped around the user's model."""
    from fxopt.ir.capture import decoder   # local: decoder imports this module

    source = os.fspath(spec) if isinstance(spec, (str, os.PathLike)) else name
    program = decoder.capture_decoder(loop, inputs, name=name, source=source,
                                      dynamic_batch=dynamic_shapes == "batch")
    provenance.mark_unowned(program.graph, "capture")
    return program


# Modules whose forward differs between train and eval mode.
_MODE_DEPENDENT = (torch.nn.modules.dropout._DropoutNd, torch.nn.modules.batchnorm._BatchNorm,
                   torch.nn.modules.instancenorm._InstanceNorm, torch.nn.RNNBase)


def _mode_dependent_in_training(model: torch.nn.Module) -> list[tuple[str, str]]:
    """``(module path, class name)`` of the modules in train mode whose forward depends on the mode (dropout,
    batch and instance norm, RNNs with dropout): the ones eval-mode capture changes."""
    return [(path, type(m).__name__) for path, m in model.named_modules()
            if m.training and isinstance(m, _MODE_DEPENDENT)
            and not (isinstance(m, torch.nn.RNNBase) and not m.dropout)
            and not (isinstance(m, torch.nn.modules.instancenorm._InstanceNorm) and not m.track_running_stats)]


def _capture_resolved(resolved: Any, inputs: Any, kwargs: dict, name: str, source: str, original: Any,
                      dynamic_shapes: Any) -> Program:
    """Capture a resolved model or ExportedProgram (see :func:`capture`)."""
    if original is not None and dynamic_shapes in (None, "batch") and not kwargs:
        # decode-loop protocol modules: encode/init_state/step captured apart
        from fxopt.ir.capture import decoder   # local: decoder imports this module (its pieces go through capture)

        if loops.is_decode_loop(original):  # "batch": every piece exported with one symbolic batch dim
            program = decoder.capture_decoder(original, _as_tuple(inputs), name=name, source=source,
                                              dynamic_batch=dynamic_shapes == "batch")
            provenance.mark_unowned(program.graph, "capture")
            return program
    notes: list[str] = []
    if isinstance(resolved, torch.export.ExportedProgram):
        ep = _decompose(resolved, source)
        if inputs is None:
            inputs = _inputs_from_signature(ep)
    else:
        inputs = _as_tuple(inputs)
        if dynamic_shapes == "batch":
            dynamic_shapes = batch_dynamic_shapes(inputs)
            if kwargs:
                dynamic_shapes = {**dict(zip(_positional_names(resolved, len(inputs)), dynamic_shapes)),
                                  **dict(zip(kwargs, batch_dynamic_shapes(tuple(kwargs.values()))))}
        if dynamic_shapes is None and blocks.enabled():
            program = _capture_blockwise(resolved, inputs, kwargs, name, source, original)
            if program is not None:
                return program
        with plain_outputs(resolved, notes), static_library_modules(resolved, notes):
            ep = _export(resolved, inputs, kwargs, dynamic_shapes, source)
    program = program_from_exported(ep, inputs, name=name, source=source, original=original,
                                    example_kwargs=kwargs)
    program.notes.extend(notes)
    return program


def _capture_blockwise(model: torch.nn.Module, inputs: tuple, kwargs: dict, name: str, source: str,
                       original: Any) -> Program | None:
    """The Program of :mod:`~fxopt.ir.capture.blocks`' block-wise capture of ``model``, checked against the
    model's eager outputs; None (with the reason at debug level) where it does not apply, fails or
    differs, and the caller exports the whole model."""
    def run_eager() -> list:
        with eval_mode(model), torch.no_grad(), no_op_conversions():
            return [t for t in pytree.tree_leaves(model(*inputs, **kwargs)) if isinstance(t, torch.Tensor)]

    own_notes: list[str] = []
    with plain_outputs(model, own_notes), static_library_modules(model, own_notes):
        result = blocks.capture_blockwise(model, inputs, kwargs, source, _export, flat_module, run_eager)
    if isinstance(result, str):
        _LOG.debug("%s: whole-model export (%s)", source, result)
        return None
    program = program_from_module(result.graph_module, inputs, name=name, source=source, original=original,
                                  example_kwargs=kwargs)
    try:
        actual = [t for t in program.run_flat(program.flat_example_inputs()) if isinstance(t, torch.Tensor)]
        problem = numerics.first_difference(result.expected, actual, numerics.depths_of(program))
    except Exception as exc:  # noqa: BLE001 - a stitched graph that cannot run is not used
        problem = f"it raised {type(exc).__name__}"
    if problem:
        _LOG.debug("%s: whole-model export (the block-wise graph differs from the model: %s)", source, problem)
        return None
    _LOG.debug("%s: %s", source, result.summary)
    program.capture_summary = result.summary
    program.notes.extend(own_notes)
    return program


def _positional_names(model: torch.nn.Module, n: int) -> list[str]:
    """The names of ``model.forward``'s first ``n`` parameters (dynamic_shapes by name when there are
    keyword inputs too)."""
    params = list(inspect.signature(model.forward).parameters)
    return params[:n]


def batch_dynamic_shapes(inputs: tuple) -> tuple:
    """``torch.export`` dynamic_shapes for ``inputs`` (a tuple of positional args, nested containers
    allowed) marking dim 0 of every tensor with at least one dim as ``Dim.AUTO``; other leaves get None."""

    auto = torch.export.Dim.AUTO
    return tuple(pytree.tree_map(lambda t: {0: auto} if isinstance(t, torch.Tensor) and t.dim() > 0 else None,
                                 inputs))


def _as_tuple(inputs: Any) -> tuple:
    if isinstance(inputs, tuple):
        return inputs
    if isinstance(inputs, list):
        return tuple(inputs)
    return (inputs,)


@contextlib.contextmanager
def _quiet_torch_logs():
    # torch.export logs warnings (and graph dumps) for failures we turn into one-line errors, and warns
    # about its own deprecations (pytree LeafSpec) that users can do nothing about.
    loggers = [logging.getLogger(n) for n in ("torch", "torch._dynamo", "torch.fx", "torch._export",
                                              "torch.export", "torch.fx.experimental.symbolic_shapes",
                                              "torch._subclasses.fake_tensor")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    """Put every submodule in eval mode for export and restore each one's own flag afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _export(model: torch.nn.Module, inputs: tuple, kwargs: dict, dynamic_shapes: Any, source: str):
    try:
        # On failure torch.export prints the partial graph to stderr; the one-line error replaces it.
        with _quiet_torch_logs(), eval_mode(model), torch.no_grad(), no_op_conversions(), \
                contextlib.redirect_stderr(io.StringIO()):
            ep = core_export.export_to_core(model, inputs, kwargs, dynamic_shapes)
            if ep is not None:   # one trace straight to core ATen (core_export.py)
                return ep
            ep = torch.export.export(model, inputs, kwargs or None, dynamic_shapes=dynamic_shapes, strict=False)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - every export failure becomes one clear line
        raise _export_error(exc, source) from exc
    return _decompose(ep, source)


def _decompose(ep: torch.export.ExportedProgram, source: str) -> torch.export.ExportedProgram:
    try:
        with _quiet_torch_logs():
            return ep.run_decompositions()
    except Exception as exc:  # noqa: BLE001
        failure = exc
    hint = ""
    if attention_layout.has_sdpa(ep):
        # the default sdpa decomposition changes the memory layout a later view relies on (GPT-2)
        try:
            with _quiet_torch_logs():
                return ep.run_decompositions(attention_layout.sdpa_in_recorded_layout(ep))
        except Exception:  # noqa: BLE001 - the first failure is the one to report
            hint = ("; the model calls scaled_dot_product_attention: a Hugging Face model may capture with "
                    "attn_implementation=\"eager\" (in its config or from_pretrained)")
    raise InputError(f"{source}: decomposing to core ATen failed: {_first_line(failure)}{hint}") from failure


def _export_error(exc: BaseException, source: str) -> InputError:
    where = _user_location(exc)
    at = f" at {where}" if where else ""
    text = f"{type(exc).__name__}: {str(exc)}"
    if "data-dependent" in text or "GuardOnDataDependent" in text:
        return InputError(f"{source}: cannot capture{at}: {_DATA_DEPENDENT_HINT}")
    if "Constraints violated" in text or "ConstraintViolation" in type(exc).__name__:
        return InputError(f"{source}: a dynamic dim was specialized{at}: {_first_line(exc)}; "
                          "check dynamic_shapes")
    hint = f"; {CONVERSION_HINT}" if "Couldn't swap" in text else ""
    return InputError(f"{source}: the model raised while tracing{at}: {type(exc).__name__}: {_first_line(exc)}"
                      f"{hint}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _user_location(exc: BaseException) -> str | None:
    """``file:line`` of the innermost traceback frame in the user's code (not torch, not fxopt's core)."""
    frames = traceback.extract_tb(exc.__traceback__)
    for frame in reversed(frames):
        file = frame.filename
        if file.startswith(os.path.dirname(torch.__file__)) or "<" in file:
            continue
        if provenance._is_fxopt_runtime(file):
            continue
        return f"{file}:{frame.lineno}"
    return None


def _inputs_from_signature(ep: torch.export.ExportedProgram) -> tuple:
    """Example inputs for a loaded .pt2 with none given: zeros/random tensors of the recorded shapes."""

    gen = torch.Generator().manual_seed(0)
    flat = []
    for spec in ep.graph_signature.input_specs:
        if spec.kind != torch.export.graph_signature.InputKind.USER_INPUT:
            continue
        node = next(n for n in ep.graph.nodes if n.name == spec.arg.name)
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor):
            flat.append(val)
            continue
        shape = [concrete_int(d) for d in val.shape]
        if val.dtype.is_floating_point:
            flat.append(torch.randn(shape, generator=gen).to(val.dtype))
        else:
            flat.append(torch.zeros(shape, dtype=val.dtype))
    args, kwargs = pytree.tree_unflatten(flat, ep.call_spec.in_spec)
    if kwargs:
        raise InputError("the .pt2 takes keyword inputs; pass example inputs explicitly")
    return tuple(args)


# ---------------------------------------------------------------------------------------------- flattening
def program_from_exported(ep: torch.export.ExportedProgram, example_inputs: tuple, *, name: str = "model",
                          source: str = "", original: Any = None, example_kwargs: dict | None = None) -> Program:
    """Build a flat Program from a (decomposed) ExportedProgram: plain codegen, no guard call, cloned
    weights, provenance and cost on every node, symbolic dims recorded."""
    return program_from_module(flat_module(ep), example_inputs, name=name, source=source, original=original,
                               example_kwargs=example_kwargs)


def flat_module(ep: torch.export.ExportedProgram) -> torch.fx.GraphModule:
    """``ep.module()`` with plain codegen (flat placeholders in the order of ``ep``'s input leaves), no
    guard call and no input-checking hooks; its weights are still ``ep``'s own tensors."""
    with _quiet_torch_logs():
        gm = ep.module()
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op == "call_module" and node.target == "_guards_fn":
            graph.erase_node(node)
    if hasattr(gm, "_guards_fn"):
        delattr(gm, "_guards_fn")
    graph._codegen = torch.fx.graph.CodeGen()
    # ep.module() installs hooks that check inputs against the pytree spec; Program does that itself.
    gm._forward_pre_hooks.clear()
    gm._forward_hooks.clear()
    return gm


def program_from_module(gm: torch.fx.GraphModule, example_inputs: tuple, *, name: str = "model",
                        source: str = "", original: Any = None, example_kwargs: dict | None = None) -> Program:
    """Build a flat Program from a :func:`flat_module` GraphModule (export's ``_in_spec``/``_out_spec`` on
    it): cloned weights, provenance and cost on every node, library ops replaced, symbolic dims recorded."""
    in_spec, out_spec = gm._in_spec, gm._out_spec
    graph = gm.graph
    _clone_weights(gm)
    for node in graph.nodes:
        node.meta["provenance"] = provenance.from_export(node)
    library_notes = library_ops.replace_library_ops(gm, source or name)
    graph.eliminate_dead_code()
    _remove_unused_attrs(gm)
    gm.recompile()
    program = Program(graph_module=gm, example_inputs=tuple(example_inputs), in_spec=in_spec,
                      out_spec=out_spec, name=name, source=source, original=original,
                      example_kwargs=dict(example_kwargs or {}))
    program.notes.extend(library_notes)
    program.dynamic_dims = _dynamic_dims(program)
    annotate(program)
    return program


def _clone_weights(gm: torch.fx.GraphModule) -> None:
    """Replace every get_attr'd tensor with a detached clone (tied weights stay tied), so passes and the
    user's model never share storage."""
    clones: dict[int, torch.Tensor] = {}
    for node in gm.graph.nodes:
        if node.op != "get_attr":
            continue
        value = fetch_attr(gm, node.target)
        if not isinstance(value, torch.Tensor):
            continue
        key = id(value)
        if key not in clones:
            clones[key] = value.detach().clone()
        set_attr(gm, node.target, clones[key])


def _remove_unused_attrs(gm: torch.fx.GraphModule) -> None:
    used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    for name, _ in list(gm.named_parameters()) + list(gm.named_buffers()):
        if name not in used:
            delete_attr(gm, name)


def _dynamic_dims(program: Program) -> dict[str, list]:
    """``{symbol: [[input_name, dim], ...]}`` for every symbolic dim of the inputs."""
    dims: dict[str, list] = {}
    for node in program.placeholders():
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor):
            continue
        for i, d in enumerate(val.shape):
            if isinstance(d, torch.SymInt) and not d.node.expr.is_number:  # export may specialize a dim
                dims.setdefault(str(d.node.expr), []).append([node.name, i])
    return dims


def annotate(program: Program) -> None:
    """(Re)compute ``meta["cost"]`` for every node of the program."""
    cost.annotate_costs(program.graph_module)
