"""Every registered backend follows the Backend protocol (backends/base.py), and its op-support table is its
target's."""
from __future__ import annotations

import pytest

from fxopt.backends import base
from fxopt.ir import targets
from fxopt.passes.registry import DEFAULT_PIPELINES, build_pipeline


@pytest.mark.parametrize("name", base.backend_names())
def test_registered_backend_follows_the_protocol(name):
    backend = base.get_backend(name)
    assert isinstance(backend, base.Backend)
    assert backend.name == name
    assert isinstance(backend.options(), dict)


@pytest.mark.parametrize("name", base.backend_names())
def test_backend_support_table_is_its_targets(name):
    backend = base.get_backend(name)
    table = backend.support()
    if backend.target in targets.TARGETS:
        assert table is not None and table.target == backend.target
    else:
        assert backend.target == "reference" and table is None


@pytest.mark.parametrize("name", base.backend_names())
def test_every_backend_target_has_a_default_pipeline_that_parses(name):
    target = base.get_backend(name).target
    assert build_pipeline(DEFAULT_PIPELINES.get(target, DEFAULT_PIPELINES["reference"]))


def test_backend_options_round_trip_through_pipeline_text():
    backend = base.get_backend("xla{platforms=cpu,dynamic=false}")
    assert backend.options() == {"platforms": "cpu", "dynamic": False}
    assert base.get_backend("tensorrt").options() == {"fp16": False, "max_dim": 0, "optimize": False,
                                                      "engine": True}
