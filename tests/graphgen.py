"""The random-model generator for property tests now lives in the package, so ``python -m fxopt.tools.fuzz``
can use it outside the test tree: see :mod:`fxopt.tools.graphgen` (its docstring lists the ops it draws).
This module re-exports it for ``tests/test_properties.py`` and older imports."""
from fxopt.tools.graphgen import *  # noqa: F401,F403 - the public names
from fxopt.tools.graphgen import (MAX_NUMEL, MAX_STEPS, OP_CHOICES, OPS, VOCAB, ModelSpec,  # noqa: F401
                                  capture_spec, model_specs)
