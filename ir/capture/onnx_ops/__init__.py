"""ONNX operator rules for the ONNX importer (:mod:`fxopt.ir.capture.onnx_import`), as data: ``RULES[op_type]`` is a
function ``rule(ctx, inputs, attrs) -> list of outputs`` that computes one ONNX node with torch functions.

Values flowing between nodes are either ``torch.Tensor`` or :class:`Known`: a rank-0/1 value known while
tracing (small integer constants, and everything computed from tensor *shapes*: ``Shape``, ``Gather`` on a
shape, ``Concat`` of dims, ...). Keeping shape arithmetic in Python (ints and SymInts) is what lets
``torch.export`` trace exporters' ``Shape → Gather → Concat → Reshape`` chains without data-dependent
errors, and lets ``Loop``/``If`` whose trip count and conditions are known be unrolled. A rule that needs a
tensor calls :func:`tensor` (a Known becomes a constant tensor); a rule that needs ints (Reshape's shape,
Slice's starts) calls :func:`ints`, which raises a one-line error naming the node when the value is only
known at run time.

Semantics follow the ONNX operator spec (opsets 11-23); where an opset changed an attribute into an input
(Reduce* axes, Split's split, Unsqueeze/Squeeze axes, Clip's bounds, Slice's starts) both forms are read.

One module per op family registers its rules into :data:`RULES` on import (``base`` holds the shared value
model: :class:`Known`, :class:`Ctx`, :func:`rule`).
"""
from fxopt.ir.capture.onnx_ops.base import (  # noqa: F401 - the package's public names
    DTYPES, KNOWN_LIMIT, RULES, Ctx, Known, NotKnown, Rule, ints, known_from_tensor, rule, scalar,
    supported_ops, tensor,
)
from fxopt.ir.capture.onnx_ops import (  # noqa: F401 - each registers its rules
    attention, control, detection, elementwise, image, linalg, nn, quantize, recurrent, reductions, shapes, signal,
    types,
)
