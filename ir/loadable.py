"""Which operators a graph read from a file may call: the allowlist behind "an artifact is data, not code".

A saved graph names its call targets; loading resolves each name (``ir/serialize.py``). Resolving a name is
not enough: ATen itself has operators that reach outside the tensors they are given — ``aten::from_file``
maps any file into a tensor (and, with ``shared=True``, writes back through it), ``aten::_print`` writes to
stdout, ``aten::copy_`` writes into its first argument, an ``out=`` overload writes into a caller's tensor
(an input, a weight). A hostile graph calling those ran normally and overwrote a user's file. So an operator
loads only when all of these hold, read off its schema:

1. its namespace is ``aten`` or it is one of fxopt's own operators (``ir/ops.py``); another library's
   operator is that library's code;
2. it is a dispatcher operator (TorchScript-only builtins such as ``aten::save``, ``aten::manual_seed`` and
   ``aten::warn`` are not);
3. no argument is written (``Tensor(a!)`` in the schema: in-place and ``out=`` overloads);
4. it returns something, unless it is one of the :data:`ASSERTIONS` (checks that raise or do nothing);
5. it is not in :data:`REFUSED`, the operators that are functional by their schema yet touch the world.

The in-place variants the reference runtime runs (``add`` -> ``add_`` on dead scratch buffers) are never
read from the file as targets: the file may only list which of its functional ops the runtime may write in
place, and every listed op is re-checked against the rules that keep inputs and weights unwritten
(``backends/reinplace.py``). docs/reliability.md, "Threat model", has the whole picture.
"""
from __future__ import annotations

import functools

import torch

# Operators that return nothing and only check (raise on failure, else do nothing).
ASSERTIONS = frozenset({
    "aten::_assert_async", "aten::_assert_scalar", "aten::_assert_tensor_metadata", "aten::sym_constrain_range",
    "aten::sym_constrain_range_for_size", "aten::_linalg_check_errors",
})

# Functional by their schema (nothing written, something returned), yet they reach outside their tensors. One
# line each: the operator and why it is refused.
REFUSED: dict[str, str] = {
    "aten::from_file": "maps or reads the file named in the graph (shared=True writes back through it)",
    "aten::_copy_from": "writes into its 'dst' argument although its schema does not say so",
    "aten::_copy_from_and_resize": "writes into and resizes its 'dst' argument although its schema does not say so",
    "aten::set": "re-points a tensor at another storage",
    "aten::_print": "writes to the process's standard output",
    "aten::_propagate_xla_data": "exists for its side effect on XLA tensors",
    "aten::_cufft_set_plan_cache_max_size": "changes process-wide cuFFT state",
    "aten::_cufft_clear_plan_cache": "changes process-wide cuFFT state",
    "aten::_backward": "runs autograd (and the Python hooks registered on tensors)",
    "aten::pin_memory": "allocates page-locked host memory, a scarce process-wide resource",
    "aten::_pin_memory": "allocates page-locked host memory, a scarce process-wide resource",
}

# fxopt's own operators (ir/ops.py registers them on import of fxopt.ir).
FXOPT_OPS = frozenset({"fxopt::grouped_mm"})


def _is_dispatcher_op(schema: torch._C.FunctionSchema) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(schema.name, schema.overload_name)
    except RuntimeError:
        return False
    return True


@functools.lru_cache(maxsize=None)
def refusal(op: torch._ops.OpOverload) -> str | None:
    """Why a loaded graph may not call operator overload ``op`` (one clause, naming the rule), or None when
    it may (see the module docstring for the rules). Cached per operator: loading and saving ask once per
    node."""
    schema = op._schema
    qualified = schema.name
    namespace = qualified.split("::")[0]
    if namespace != "aten" and qualified not in FXOPT_OPS:
        return (f"is an operator of the '{namespace}' library, and loaded graphs call only ATen and fxopt's own "
                f"operators (another library's operator runs that library's code)")
    if qualified in REFUSED:
        return f"is refused: it {REFUSED[qualified]}"
    if not _is_dispatcher_op(schema):
        return "is a TorchScript builtin, not a dispatcher operator"
    written = [a.name for a in schema.arguments if a.alias_info is not None and a.alias_info.is_write]
    if written:
        return f"writes its argument '{written[0]}' (an in-place or out= overload)"
    if not schema.returns and qualified not in ASSERTIONS:
        return "returns nothing: it is called only for a side effect"
    return None


def packet_refusal(packet: torch._ops.OpOverloadPacket) -> str | None:
    """Why a loaded graph may not call operator packet ``packet`` (which picks an overload from the run-time
    arguments, an ``out=`` one included), or None when every dispatcher overload of it may be called."""
    for name in packet.overloads():
        op = getattr(packet, name)
        if not _is_dispatcher_op(op._schema):
            continue
        why = refusal(op)
        if why is not None:
            return f"can dispatch to '{op._schema.name}.{name}', which {why}"
    return None
