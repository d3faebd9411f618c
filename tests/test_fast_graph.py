"""backends/fast_graph: the reference runtime's GraphModule code with ATen ops bound to their C++ handles."""
from __future__ import annotations

import torch

import fxopt
from fxopt.backends.fast_graph import fast_forward
from tests.conftest import TinyEncoder


def _captured(model, *inputs):
    torch.manual_seed(0)
    return model.eval(), fxopt.capture(model.eval(), inputs)


def test_fast_forward_matches_the_graph_module_bit_for_bit():
    model = TinyEncoder()
    model, program = _captured(model, *model.example_inputs())
    gm = program.graph_module
    run = fast_forward(gm)
    assert run is not gm
    ids = torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(run(ids), gm(ids)))


def test_fast_forward_calls_no_op_overload_wrappers(monkeypatch):
    _, program = _captured(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()), torch.randn(2, 4))
    run = fast_forward(program.graph_module)
    calls = []
    monkeypatch.setattr(torch._ops.OpOverload, "__call__", lambda self, *a, **k: calls.append(self) or self._op(*a, **k))
    program.graph_module(torch.randn(2, 4))
    assert calls                                  # the GraphModule goes through the wrappers
    calls.clear()
    run(torch.randn(2, 4))
    assert calls == []                            # the fast path does not


def test_fast_forward_runs_routed_graphs_with_data_dependent_sizes():
    from tests.test_moe import LoopMoE

    model, program = _captured(LoopMoE(k=2, drop=0.3), torch.randn(7, 8))
    fused = fxopt.optimize(program, "moe", verify=False)
    compiled = fxopt.compile(fused, "reference")
    for seed in range(3):
        x = torch.randn(7, 8, generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(compiled(x), model(x))


def test_fast_forward_falls_back_to_the_module_when_code_cannot_be_rebuilt(monkeypatch):
    _, program = _captured(torch.nn.Linear(4, 3), torch.randn(2, 4))
    gm = program.graph_module
    monkeypatch.setattr(type(gm.graph), "python_code", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no")))
    assert fast_forward(gm) is gm


def test_fast_forward_dispatches_the_same_overloads_as_the_graph_module():
    from tests.test_public_ops import _Recorder

    model = TinyEncoder()
    model, program = _captured(model, *model.example_inputs())
    gm = program.graph_module
    run = fast_forward(gm, inplace_ops=[])            # public bindings and handles, nothing reinplaced
    ids = torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(3))
    seen = []
    for fn in (gm, run):
        recorder = _Recorder()
        with torch.no_grad(), recorder:
            fn(ids)
        seen.append(recorder.ops)
    assert seen[0] and seen[0] == seen[1]
