"""The zoo models a backend benchmark runs, with the pipeline each needs (shared by neuron and tensorrt)."""
from __future__ import annotations

import fxopt
from fxopt.zoo.ocr import OCREncoder


def zoo_model(name: str, quick: bool, pipeline: str) -> tuple:
    """``(label, model, inputs, pipeline)`` for zoo model ``name``: small with ``quick``. ocr is its encoder
    with ``quick``, else the small model fully unrolled (``unroll{mode=full}`` prepended to ``pipeline``)."""
    if name != "ocr":
        model, inputs = fxopt.zoo.get(name, small=quick)
        return name, model, inputs, pipeline
    ocr, inputs = fxopt.zoo.get("ocr", small=True)
    if quick:
        return "ocr (encoder)", OCREncoder(ocr).eval(), inputs, pipeline
    return "ocr (small, unroll full)", ocr, inputs, "unroll{mode=full}," + pipeline
