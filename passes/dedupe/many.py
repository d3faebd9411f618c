"""`optimize_many`: optimize several programs that will be deployed together and share their equal weights.

Each program runs the pipeline on its own (so ``dedupe`` merges what is duplicated inside it); then, unless
the pipeline's ``dedupe`` says ``across_models=false``, equal tensors of different programs are rebound to one
tensor object (:func:`fxopt.passes.dedupe.weights.share_weights`). Held in one process, or saved with
:func:`fxopt.backends.shared_store.save_many`, each distinct tensor then exists once.
"""
from __future__ import annotations

from typing import Any, Iterable

from fxopt.errors import InputError, VerificationError
from fxopt.ir.program import Program
from fxopt.passes import verify as verify_mod
from fxopt.passes.dedupe.weights import share_weights, unique_weight_bytes
from fxopt.passes.registry import build_pipeline
from fxopt.passes.manager import optimize


class OptimizedPrograms(list):
    """A ``list[Program]`` with ``details``: ``programs``, ``weight_bytes_before`` (each program's unique
    weight bytes, summed, as the inputs held them), ``weight_bytes_after`` (bytes of the tensors all the
    results hold together), ``weight_bytes_saved``, ``tensors_shared`` (distinct tensors replaced by an equal
    one of another program) and ``across_models`` (whether sharing ran)."""

    details: dict


def _across_models(passes: str | Iterable[Any]) -> bool:

    flags = [getattr(p, "across_models", True) for p in build_pipeline(passes) if p.name == "dedupe"]
    return all(flags)


def optimize_many(programs: Iterable[Program], passes: str | Iterable[Any] = "dedupe", *,
                  target: str = "reference", verify: bool = True) -> OptimizedPrograms:
    """Optimize each of ``programs`` with ``passes`` (pipeline text or list, as for ``fxopt.optimize``) and
    share equal weights across the results.

    Returns an :class:`OptimizedPrograms` (a list of new Programs, inputs untouched) whose ``details`` give
    the weight bytes before and after. With ``verify``, every pass is checked as in ``optimize`` and each
    program is re-run after sharing (sharing only rebinds bitwise-equal tensors, so outputs must be
    identical). Raises :class:`InputError` when ``programs`` is empty or holds something else than Programs.
    """

    programs = list(programs)
    if not programs:
        raise InputError("optimize_many: no programs given; pass a list of captured programs")
    for i, p in enumerate(programs):
        if not isinstance(p, Program):
            raise InputError(f"optimize_many: item {i} is a {type(p).__name__}, not a Program; "
                             "capture it with fxopt.capture first")
    before = sum(p.parameter_bytes(unique=True) for p in programs)
    results = [optimize(p, passes, target=target, verify=verify) for p in programs]
    across = _across_models(passes)
    shared = 0
    if across:
        expected = [r.run_flat(r.flat_example_inputs()) for r in results] if verify else None
        shared = share_weights(results)
        if verify:
            for r, exp in zip(results, expected):
                problem = verify_mod.first_difference(exp, r.run_flat(r.flat_example_inputs()),
                                                      verify_mod.output_depths(r.graph_module))
                if problem:
                    raise VerificationError(f"optimize_many: sharing weights changed '{r.name}': {problem}")
    after = unique_weight_bytes(results)
    out = OptimizedPrograms(results)
    out.details = {
        "programs": len(results),
        "across_models": across,
        "tensors_shared": shared,
        "weight_bytes_before": before,
        "weight_bytes_after": after,
        "weight_bytes_saved": before - after,
    }
    return out
