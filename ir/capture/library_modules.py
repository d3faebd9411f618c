"""Library modules whose ``forward`` torch.export cannot capture, given an equal static ``forward`` while
capturing.

Some Hugging Face expert layers loop over the experts that received a token:
``for e in (mask.sum(...) > 0).nonzero(): ...``. The loop's length depends on the data, and export refuses it.
Each rule in :data:`RULES` names a library class (module and qualified name) and a replacement ``forward``.
The replacement loops over every expert in id order. An expert that received no token adds nothing
(``index_add`` of no rows), so the result is the same. Each replacement writes its routing as
``torch.where(ids == e)``, the form the `moe` pass routes. :func:`static_library_modules` installs the
replacements on the model's matching submodules for the capture and restores them afterwards, and adds one
line to the capture notes.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch


def _switch_experts_forward(self, hidden_states: torch.Tensor, selected_experts: torch.Tensor,
                            routing_weights: torch.Tensor) -> torch.Tensor:
    # SwitchTransformersExperts: selected_experts [N, 1, E] is the router's one-hot top-1 choice with
    # tokens over capacity zeroed. ids = the chosen expert, or -1 for a dropped token. Then
    # where(ids == e) gives the (token, slot) pairs that where(selected_experts.permute(2, 1, 0)[e]) gives,
    # in the same order (one slot). Every expert in id order == the library's loop over the experts hit.
    ids = torch.where(selected_experts.sum(-1) > 0, selected_experts.argmax(-1), -1)   # [N, 1]
    out = torch.zeros_like(hidden_states)
    for e in range(self.num_experts):
        tok, slot = torch.where(ids == e)
        y = self[f"expert_{e}"](hidden_states[tok]) * routing_weights[tok, slot, None]
        out = out.index_add(0, tok, y.to(hidden_states.dtype))
    return out


def _applies_to_switch(module: torch.nn.Module) -> bool:
    n = getattr(module, "num_experts", None)
    return isinstance(n, int) and all(f"expert_{e}" in module for e in range(n))


#: (library module path, class qualified name) -> (does it apply to this instance, replacement forward)
RULES: dict[tuple[str, str], tuple[Callable[[torch.nn.Module], bool], Callable]] = {
    ("transformers.models.switch_transformers.modeling_switch_transformers", "SwitchTransformersExperts"):
        (_applies_to_switch, _switch_experts_forward),
}


@contextlib.contextmanager
def static_library_modules(model: torch.nn.Module, notes: list[str]) -> Iterator[None]:
    """While active, every submodule of ``model`` that matches a rule runs the rule's static ``forward``.
    Appends one line per replaced class to ``notes``. On exit each module's own ``forward`` is restored,
    so the user's model is left as it was."""
    replaced: list[tuple[torch.nn.Module, bool, object]] = []
    counts: dict[str, int] = {}
    for module in model.modules():
        cls = type(module)
        rule = RULES.get((cls.__module__, cls.__qualname__))
        if rule is None or not rule[0](module):
            continue
        had_own = "forward" in module.__dict__
        replaced.append((module, had_own, module.__dict__.get("forward")))
        module.forward = rule[1].__get__(module, cls)
        counts[cls.__qualname__] = counts.get(cls.__qualname__, 0) + 1
    for name, n in counts.items():
        notes.append(f"{n} {name} module(s) captured with a static loop over every expert (the library loops "
                     "over the experts that received a token, a data-dependent length; the sums are the same)")
    try:
        yield
    finally:
        for module, had_own, own in replaced:
            if had_own:
                module.forward = own
            else:
                del module.forward
