"""The session capture cache in conftest.py (``captured``): every caller gets an independent copy, and a test
that modifies the shared capture is caught."""
from __future__ import annotations

import pytest
import torch

import fxopt

import conftest
from conftest import captured


def test_cached_block_matches_a_fresh_capture_and_the_model():
    model, inputs, program = captured("block")
    fresh = fxopt.capture(model, inputs)
    assert [str(n.target) for n in program.graph.nodes] == [str(n.target) for n in fresh.graph.nodes]
    torch.testing.assert_close(program(*inputs), model(*inputs))


def test_each_call_gets_its_own_program_model_and_inputs():
    first_model, first_inputs, first = captured("ranking")
    second_model, second_inputs, second = captured("ranking")
    assert first is not second and first.graph_module is not second.graph_module
    assert first.graph is not second.graph
    assert first_model is not second_model
    assert all(a is not b and torch.equal(a, b) for a, b in zip(first_inputs, second_inputs))


def test_rewriting_a_copy_leaves_the_next_copy_alone():
    _, inputs, program = captured("encoder")
    nodes = program.num_nodes()
    fxopt.optimize(program, "canonicalize,fold-constants,dce", inplace=True, verify=False)
    ids = program.placeholders()[0]
    with program.graph.inserting_after(ids):
        program.graph.call_function(torch.ops.aten.neg.default, (ids,))
    for n in program.graph.nodes:
        n.meta["placement"] = "cpu"
    assert program.num_nodes() != nodes
    model, inputs, again = captured("encoder")          # also re-checks the shared capture
    assert again.num_nodes() == nodes
    assert all("placement" not in n.meta for n in again.graph.nodes)
    torch.testing.assert_close(again(*inputs), model(*inputs))


def test_in_place_change_to_shared_weights_is_caught():
    captured("block")
    key = next(k for k in conftest._CAPTURES if k[0] == "block")
    entry = conftest._CAPTURES[key]
    weight = next(t for t in entry[2].parameters().values() if t.is_floating_point())
    saved = weight.detach().clone()
    try:
        with torch.no_grad():
            weight.add_(1.0)
        with pytest.raises(AssertionError, match="in place"):
            captured("block")
    finally:
        with torch.no_grad():
            weight.copy_(saved)
    captured("block")                                  # restored: the check passes again


def test_graph_change_to_the_shared_capture_is_caught():
    captured("block")
    key = next(k for k in conftest._CAPTURES if k[0] == "block")
    graph = conftest._CAPTURES[key][2].graph
    node = next(n for n in graph.nodes if n.op == "call_function")
    node.meta["placement"] = "xla"
    try:
        with pytest.raises(AssertionError, match="modified the shared capture"):
            captured("block")
    finally:
        del node.meta["placement"]
    captured("block")
