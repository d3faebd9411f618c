"""The tensorrt backend on the zoo models: what the ONNX route costs to emit, how onnxruntime compares with
PyTorch eager on this CPU, and what fp16 does to accuracy.

Per model (small variants with ``--quick``; OCR fully unrolled, or its encoder with ``--quick``): seconds to
compile with ``tensorrt{fp16=true}`` (ONNX export, onnx-tensorrt walk, onnxruntime check, fp16 conversion and
its check), the fp32 onnxruntime max abs error vs PyTorch, the fp16 model's max abs / relative error vs fp32
PyTorch (measured with onnxruntime on the CPU: an estimate of TensorRT fp16, not a TensorRT figure), and the
latency of the eager model vs the artifact (onnxruntime partitions), timed interleaved in one run. No GPU and
no TensorRT here: engine builds are left to ``trtexec`` on the target; nothing here is TensorRT speed.

    python -m benchmarks.tensorrt [--quick] [--models ranking,resnet50] [--repeat 20] [--threads 1]

Both runtimes use ``--threads`` intra-op threads (onnxruntime sessions take ``torch.get_num_threads()``).
"""
from __future__ import annotations

import argparse
import time

import torch

import fxopt
from benchmarks.timing import interleaved_medians
from benchmarks.zoo_models import zoo_model

PASSES = "canonicalize,stable-sort,fold-constants,dedupe,moe,decompose-embedding-bag,dce,split{target=tensorrt,policy=support}"


def measure(name: str, quick: bool, repeat: int) -> dict:
    """Compile one zoo model with ``tensorrt{fp16=true}`` and time it; returns the row as a dict."""
    label, model, inputs, passes = zoo_model(name, quick, PASSES)
    program = fxopt.optimize(fxopt.capture(model, inputs), passes, verify=False)
    start = time.perf_counter()
    compiled = fxopt.compile(program, "tensorrt{fp16=true}")
    compile_s = time.perf_counter() - start
    trt = [s for s in compiled.stages if s.device == "tensorrt"]
    fp32_err = max((s.info["checks"]["onnxruntime_max_abs_error"] for s in trt), default=0.0)
    fp16_abs = max((s.info["fp16"]["max_abs_error"] for s in trt), default=0.0)
    fp16_rel = max((s.info["fp16"]["max_rel_error"] for s in trt), default=0.0)
    eager_s, ort_s = interleaved_medians([lambda: model(*inputs), lambda: compiled(*inputs)], repeat)
    return {"model": label, "partitions": f"{len(trt)} trt / {len(compiled.stages) - len(trt)} cpu",
            "compile_s": compile_s, "fp32_max_abs": fp32_err, "fp16_max_abs": fp16_abs, "fp16_max_rel": fp16_rel,
            "eager_ms": eager_s * 1e3, "onnxruntime_ms": ort_s * 1e3, "eager_over_ort": eager_s / ort_s}


def main(argv=None) -> list[dict]:
    """Run the benchmark (``--quick``: small models, OCR encoder, fewer repeats); prints a table and returns
    the rows."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tensorrt", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small models, OCR encoder only, 5 repeats")
    parser.add_argument("--models", default="ranking,resnet50,moderation,ocr")
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and onnxruntime intra-op threads (1: stable figures on a shared machine)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeat = args.repeat or (5 if args.quick else 20)
    rows = [measure(name, args.quick, repeat) for name in args.models.split(",") if name]
    header = ("model", "partitions", "compile s", "fp32 err", "fp16 abs err", "fp16 rel err", "eager ms",
              "ort ms", "eager/ort")
    print(" | ".join(header))
    for r in rows:
        print(" | ".join([r["model"], r["partitions"], f"{r['compile_s']:.1f}", f"{r['fp32_max_abs']:.2g}",
                          f"{r['fp16_max_abs']:.2g}", f"{r['fp16_max_rel']:.2g}", f"{r['eager_ms']:.2f}",
                          f"{r['onnxruntime_ms']:.2f}", f"{r['eager_over_ort']:.2f}x"]))
    return rows


if __name__ == "__main__":
    main()
