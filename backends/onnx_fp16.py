"""Convert an fp32 ONNX model to fp16 compute with fp32 inputs and outputs (our own small converter;
onnxconverter-common is not a dependency).

What changes, in the main graph and every nested subgraph: float32 initializers and ``Constant`` tensors
become float16 (clipped to +-65504), ``Cast(to=FLOAT)`` becomes ``Cast(to=FLOAT16)``, ``ConstantOfShape``
float values and ``dtype=FLOAT`` attributes become float16, subgraph float32 inputs/outputs are retyped. The
main graph keeps float32 inputs and outputs: a ``Cast`` to float16 follows each float32 input and a ``Cast``
back to float32 precedes each float32 output, so callers see the same signature. Inputs that ONNX requires
in float32 (``Resize`` scales) stay float32. Intermediate ``value_info`` is dropped (types changed) and the
result is checked with ``onnx.checker``.
"""
from __future__ import annotations

# local imports: onnx, onnxscript, onnxruntime and TensorRT are optional (pip install 'fxopt[onnx]'); they are imported where used, so this module loads without them
import numpy as np

__all__ = ["to_fp16"]

_FLOAT, _FLOAT16 = 1, 10
_KEEP_FLOAT_INPUTS = {("Resize", 2), ("Upsample", 1)}


def to_fp16(model, keep_fp32_ops: frozenset[str] | set[str] = frozenset()):
    """Return a float16 copy of ``model`` (``onnx.ModelProto``, float32); ``model`` is not modified. Nodes
    of the main graph whose op type is in ``keep_fp32_ops`` compute in float32 (their float16 inputs are
    cast up, their outputs cast back down), for ops a runtime has no float16 kernel for."""
    import onnx
    from onnx import helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    keep = _keep_float(graph)
    _convert_graph(graph, keep, top=True)
    renamed = {}
    casts_in = []
    for inp in graph.input:
        if inp.type.tensor_type.elem_type == _FLOAT and inp.name not in keep:
            new = inp.name + "__fp16"
            renamed[inp.name] = new
            casts_in.append(helper.make_node("Cast", [inp.name], [new], to=_FLOAT16, name=f"{inp.name}__to_fp16"))
    _rename_uses(graph, renamed)
    casts_out = []
    for o in graph.output:
        if o.type.tensor_type.elem_type == _FLOAT:
            src = o.name + "__fp16"
            for node in graph.node:
                node.output[:] = [src if x == o.name else x for x in node.output]
            _rename_uses(graph, {o.name: src})
            if o.name in renamed:  # an input returned as is: read the cast copy
                src = renamed[o.name]
            casts_out.append(helper.make_node("Cast", [src], [o.name], to=_FLOAT, name=f"{o.name}__to_fp32"))
    nodes = casts_in + list(graph.node) + casts_out
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    if keep_fp32_ops:
        _wrap_in_fp32(out, set(keep_fp32_ops))
    onnx.checker.check_model(out)
    return out


def _wrap_in_fp32(model, ops: set[str]) -> None:
    import onnx
    from onnx import helper

    inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False)
    types = {vi.name: vi.type.tensor_type.elem_type
             for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    types.update({t.name: t.data_type for t in inferred.graph.initializer})
    nodes = []
    for k, node in enumerate(model.graph.node):
        if node.op_type not in ops:
            nodes.append(node)
            continue
        for i, name in enumerate(node.input):
            if name and types.get(name) == _FLOAT16:
                up = f"{name}__fp32_{k}_{i}"
                nodes.append(helper.make_node("Cast", [name], [up], to=_FLOAT, name=f"{up}__cast"))
                node.input[i] = up
        nodes.append(node)
        for i, name in enumerate(node.output):
            if name and types.get(name) == _FLOAT16:
                wide = f"{name}__fp32"
                node.output[i] = wide
                nodes.append(helper.make_node("Cast", [wide], [name], to=_FLOAT16, name=f"{wide}__cast"))
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def _keep_float(graph) -> set[str]:
    keep = set()
    for node in graph.node:
        for i, name in enumerate(node.input):
            if (node.op_type, i) in _KEEP_FLOAT_INPUTS and name:
                keep.add(name)
    return keep


def _tensor_to_fp16(tensor) -> None:
    from onnx import numpy_helper

    if tensor.data_type != _FLOAT:
        return
    arr = numpy_helper.to_array(tensor).astype(np.float32)
    half = np.clip(arr, -65504.0, 65504.0).astype(np.float16)
    tensor.CopyFrom(numpy_helper.from_array(half, tensor.name))


def _convert_graph(graph, keep: set[str], top: bool) -> None:
    for init in graph.initializer:
        if init.name not in keep:
            _tensor_to_fp16(init)
    if not top:
        for vi in list(graph.input) + list(graph.output):
            if vi.type.tensor_type.elem_type == _FLOAT:
                vi.type.tensor_type.elem_type = _FLOAT16
        del graph.value_info[:]
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t") and not any(o in keep for o in node.output):
                _tensor_to_fp16(attr.t)
            if attr.name in ("to", "dtype") and attr.i == _FLOAT and node.op_type != "Resize":
                attr.i = _FLOAT16
            if attr.HasField("g"):
                _convert_graph(attr.g, keep, top=False)
            for sub in attr.graphs:
                _convert_graph(sub, keep, top=False)


def _rename_uses(graph, renamed: dict[str, str]) -> None:
    if not renamed:
        return
    for node in graph.node:
        node.input[:] = [renamed.get(x, x) for x in node.input]
        for attr in node.attribute:
            if attr.HasField("g"):
                _rename_uses(attr.g, renamed)
            for sub in attr.graphs:
                _rename_uses(sub, renamed)
