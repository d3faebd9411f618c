"""Build and run a TensorRT engine from an ONNX model (used only where ``tensorrt`` imports and CUDA exists).

UNTESTED in fxopt's CI: TensorRT is not installable from PyPI here. Written against the TensorRT 10 Python API
(``create_network(0)`` is explicit-batch, ``set_input_shape``/``set_tensor_address``/``execute_async_v3``);
TensorRT 8.x needs the EXPLICIT_BATCH network flag, which :func:`build` passes when the enum has it.
"""
from __future__ import annotations

# local imports: onnx, onnxscript, onnxruntime and TensorRT are optional (pip install 'fxopt[onnx]'); they are imported where used, so this module loads without them
from typing import Any

import torch

from fxopt.errors import BackendError

__all__ = ["build", "run", "version"]


def version() -> str:
    """``"tensorrt X.Y.Z"`` of the installed TensorRT."""
    import tensorrt as trt

    return f"tensorrt {trt.__version__}"


def build(onnx_bytes: bytes, profile: dict[str, dict], fp16: bool, label: str) -> bytes:
    """Parse ``onnx_bytes`` with TensorRT's ONNX parser, add the optimization ``profile`` (``{input: {"min",
    "opt", "max"}}``) and build; returns the serialized engine (the ``.plan`` bytes). BackendError on failure."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"{label}: TensorRT's ONNX parser rejected the model: {errors[:300]}")
    config = builder.create_builder_config()
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if profile:
        opt = builder.create_optimization_profile()
        for name, p in profile.items():
            opt.set_shape(name, p["min"], p["opt"], p["max"])
        config.add_optimization_profile(opt)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BackendError(f"{label}: TensorRT failed to build the engine (see the TensorRT log above)")
    return bytes(plan)


_DTYPES = {"FLOAT": torch.float32, "HALF": torch.float16, "INT32": torch.int32, "INT64": torch.int64,
           "BOOL": torch.bool, "INT8": torch.int8, "UINT8": torch.uint8, "BF16": torch.bfloat16}


def run(plan: bytes, inputs: list[str], onnx_inputs: list[str | None], args: list) -> tuple:
    """Run the serialized engine ``plan`` on ``args`` (torch tensors, in ``inputs`` order; ``onnx_inputs``
    their engine tensor names, None when unused); returns the outputs as CPU tensors in engine order."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
    context = engine.create_execution_context()
    keep: list[Any] = []
    for name, x in zip(onnx_inputs, args):
        if name is None:
            continue
        xd = x.detach().contiguous().cuda()
        keep.append(xd)
        context.set_input_shape(name, tuple(xd.shape))
        context.set_tensor_address(name, xd.data_ptr())
    outputs = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name) != trt.TensorIOMode.OUTPUT:
            continue
        shape = tuple(context.get_tensor_shape(name))
        dtype = _DTYPES[engine.get_tensor_dtype(name).name]
        out = torch.empty(shape, dtype=dtype, device="cuda")
        context.set_tensor_address(name, out.data_ptr())
        outputs.append(out)
    stream = torch.cuda.Stream()
    if not context.execute_async_v3(stream.cuda_stream):
        raise BackendError("TensorRT engine execution failed")
    stream.synchronize()
    return tuple(o.cpu() for o in outputs)
