"""Device profiles and a roofline time model over :class:`fxopt.ir.cost.OpCost`.

A :class:`DeviceProfile` holds a device's peak compute rate, memory bandwidth and host link. The built-in
profiles (:data:`PROFILES`) use public datasheet figures; each figure's source and precision is noted where
it is defined. ``peak_flops`` is the rate at the precision a deployment on that device runs at
(``precision`` says which: fp32 for the CPU, dense fp16/bf16 tensor-core/systolic rate for accelerators);
``peak_flops_fp32`` is the fp32 rate for comparison.

:func:`estimate_time` is a roofline: ``max(flops / peak_flops, bytes / mem_bandwidth)``.
:func:`transfer_time` is ``link_latency + nbytes / link_bandwidth`` for moving data host <-> device.
These are first-order estimates for placement decisions, not predictions of measured latency.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Mapping

import sympy

from ..errors import InputError
from .cost import OpCost
import torch

__all__ = [
    "DeviceProfile",
    "PROFILES",
    "CPU",
    "INF1",
    "INF2",
    "TRN1",
    "TRN2",
    "T4",
    "H100",
    "get_profile",
    "estimate_time",
    "transfer_time",
    "measure_cpu_profile",
]

_KINDS = ("cpu", "accelerator")


@dataclass(frozen=True)
class DeviceProfile:
    """Peak rates of one device.

    ``peak_flops``: FLOP/s at ``precision``; ``mem_bandwidth``: device memory bandwidth in B/s;
    ``link_bandwidth``: host <-> device bandwidth in B/s (one direction); ``link_latency``: fixed cost of one
    transfer in seconds; ``kind``: ``"cpu"`` or ``"accelerator"``; ``peak_flops_fp32``: fp32 FLOP/s (defaults
    to ``peak_flops``); ``description``: one line on what the figures describe; ``memory_bytes``: the device
    memory this profile's unit has (its share of the chip's, as for the bandwidth), or None when not modelled
    (the host).
    """

    name: str
    peak_flops: float
    mem_bandwidth: float
    link_bandwidth: float
    link_latency: float
    kind: str
    precision: str = "fp32"
    peak_flops_fp32: float | None = None
    description: str = ""
    memory_bytes: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"DeviceProfile.kind must be one of {_KINDS}, got {self.kind!r}")
        for name in ("peak_flops", "mem_bandwidth", "link_bandwidth"):
            if not getattr(self, name) > 0:
                raise ValueError(f"DeviceProfile.{name} must be positive, got {getattr(self, name)!r}")
        if self.link_latency < 0:
            raise ValueError(f"DeviceProfile.link_latency must be >= 0, got {self.link_latency!r}")
        if self.memory_bytes is not None and not self.memory_bytes > 0:
            raise ValueError(f"DeviceProfile.memory_bytes must be positive or None, got {self.memory_bytes!r}")
        if self.peak_flops_fp32 is None:
            object.__setattr__(self, "peak_flops_fp32", self.peak_flops)

    @property
    def ridge_point(self) -> float:
        """Arithmetic intensity (FLOP/byte) above which an op is compute-bound on this device."""
        return self.peak_flops / self.mem_bandwidth

    def to_json(self) -> dict:
        """All fields as a JSON-ready dict."""
        return {
            "name": self.name,
            "peak_flops": self.peak_flops,
            "mem_bandwidth": self.mem_bandwidth,
            "link_bandwidth": self.link_bandwidth,
            "link_latency": self.link_latency,
            "kind": self.kind,
            "precision": self.precision,
            "peak_flops_fp32": self.peak_flops_fp32,
            "description": self.description,
            "memory_bytes": self.memory_bytes,
        }


_GiB = 1024**3

# --- cpu: a generic two-core x86 server slice ----------------------------------------------------
# Assumption (not a specific SKU): 2 physical cores of a current Xeon/EPYC server part with AVX2 + FMA,
# 2 FMA pipes x 8 fp32 lanes x 2 FLOP per FMA = 32 FLOP/cycle/core, at a 2.5 GHz all-core vector clock:
# 2 cores x 32 x 2.5e9 = 160 GFLOP/s fp32. (AVX-512 parts double the per-cycle width but usually run
# vector code at a lower clock; 160 GFLOP/s is a deliberately common-denominator figure.)
# Memory: two cores cannot saturate a socket's DRAM (a 6-8 channel DDR4/DDR5 socket peaks at
# ~140-300 GB/s); ~10 GB/s of sustained STREAM-style bandwidth per core is typical, so 20 GB/s.
# Link: "transfers" to the CPU are host memcpys; modelled at the same 20 GB/s with no fixed latency.
CPU = DeviceProfile(
    name="cpu",
    peak_flops=160e9,
    mem_bandwidth=20e9,
    link_bandwidth=20e9,
    link_latency=0.0,
    kind="cpu",
    precision="fp32",
    peak_flops_fp32=160e9,
    description="generic 2-core x86 server slice (AVX2 FMA @ 2.5 GHz, ~10 GB/s DRAM per core); an assumption",
)

# --- inf1: one NeuronCore-v1 of an AWS Inferentia (first generation) chip ------------------------
# AWS Neuron docs, "Inferentia Architecture": each Inferentia chip has 4 NeuronCore-v1 delivering
# 64 FP16/BF16 TFLOPS (128 INT8 TOPS) and 8 GiB of device DRAM with 50 GiB/s of bandwidth.
# One NeuronCore = a quarter of both: 16 TFLOPS fp16/bf16 and 12.5 GiB/s (the four cores share the DRAM;
# quartering both keeps the chip's ridge point). There is no separate fp32 matmul rate: the Neuron compiler
# casts fp32 matmuls to bf16 by default, so peak_flops_fp32 repeats the bf16 figure.
# Host link: AWS publishes no per-chip PCIe figure; assumed a PCIe Gen3 x16-class link (15.75 GB/s per
# direction) and 20 us per transfer (runtime call + DMA setup). Both are assumptions.
INF1 = DeviceProfile(
    name="inf1",
    peak_flops=16e12,
    mem_bandwidth=50 * _GiB / 4,
    link_bandwidth=15.75e9,
    link_latency=20e-6,
    kind="accelerator",
    precision="fp16/bf16 dense",
    peak_flops_fp32=16e12,
    description="one AWS Inferentia NeuronCore-v1 (1/4 chip: 16 TFLOPS bf16, 12.5 GiB/s, 2 GiB DRAM)",
    memory_bytes=8 * _GiB / 4,
)

# Inf2, Trn1 and Trn2 sources: AWS Neuron docs, "Neuron hardware" pages (aws-neuron/aws-neuron-sdk
# about-neuron/arch/neuron-hardware/{inferentia2,trainium,trainium2,neuron-core-v2,neuron-core-v3}.rst,
# https://awsdocs-neuron.readthedocs-hosted.com/en/latest/about-neuron/arch/neuron-hardware/), read 2026-12-02.
# As for inf1, one profile is one NeuronCore: the chip's figures divided by its core count (the cores share the
# HBM; dividing both keeps the chip's ridge point). peak_flops is the dense bf16 rate (neuronx-cc's default
# --auto-cast casts fp32 matmuls to bf16); peak_flops_fp32 is the documented fp32 rate. AWS publishes no host
# (PCIe) figure on these pages: each link figure below is an assumption.

# --- inf2: one NeuronCore-v2 of an AWS Inferentia2 chip -------------------------------------------
# "Inferentia2 Architecture": two NeuronCore-v2 per chip, delivering 190 FP16/BF16/cFP8/TF32 TFLOPS and
# 47.5 FP32 TFLOPS; 32 GiB of HBM with 820 GiB/s of bandwidth. One core = half: 95 TFLOPS bf16 (the
# NeuronCore-v2 page: "over 90 TFLOPS of FP16/BF16" per TensorEngine), 23.75 TFLOPS fp32, 410 GiB/s.
# Host link: assumed a PCIe Gen4 x16-class link (31.5 GB/s per direction) and 20 us per transfer (as inf1);
# both assumptions.
INF2 = DeviceProfile(
    name="inf2",
    peak_flops=190e12 / 2,
    mem_bandwidth=820 * _GiB / 2,
    link_bandwidth=31.5e9,
    link_latency=20e-6,
    kind="accelerator",
    precision="bf16/fp16 dense",
    peak_flops_fp32=47.5e12 / 2,
    description="one AWS Inferentia2 NeuronCore-v2 (1/2 chip: 95 TFLOPS bf16, 23.75 TFLOPS fp32, 410 GiB/s, "
                "16 GiB HBM)",
    memory_bytes=32 * _GiB / 2,
)

# --- trn1: one NeuronCore-v2 of an AWS Trainium (first generation) chip ----------------------------
# "Trainium Architecture": two NeuronCore-v2 per chip, delivering 190 FP16/BF16/cFP8/TF32 TFLOPS and
# 47.5 FP32 TFLOPS; 32 GiB of device memory with 820 GiB/s of bandwidth (the same core and memory figures as
# Inferentia2). One core = half: 95 TFLOPS bf16, 23.75 TFLOPS fp32, 410 GiB/s.
# Host link: assumed PCIe Gen4 x16-class (31.5 GB/s per direction), 20 us per transfer; assumptions.
TRN1 = DeviceProfile(
    name="trn1",
    peak_flops=190e12 / 2,
    mem_bandwidth=820 * _GiB / 2,
    link_bandwidth=31.5e9,
    link_latency=20e-6,
    kind="accelerator",
    precision="bf16/fp16 dense",
    peak_flops_fp32=47.5e12 / 2,
    description="one AWS Trainium NeuronCore-v2 (1/2 chip: 95 TFLOPS bf16, 23.75 TFLOPS fp32, 410 GiB/s, "
                "16 GiB HBM)",
    memory_bytes=32 * _GiB / 2,
)

# --- trn2: one NeuronCore-v3 of an AWS Trainium2 chip ---------------------------------------------
# "Trainium2 Architecture": eight NeuronCore-v3 per chip that collectively deliver 667 BF16/FP16/TF32 TFLOPS
# (dense; 1,299 FP8, 2,563 sparse) and 181 FP32 TFLOPS; 96 GiB of device memory with 2.9 TB/s of bandwidth.
# One core = an eighth: 83.4 TFLOPS bf16, 22.6 TFLOPS fp32, 362.5 GB/s. (The NeuronCore-v3 page gives
# 79 BF16 TFLOPS for one core's TensorEngine alone; the chip total is used, as for the other generations.)
# This is one physical core (LNC=1); Trn2's default logical core (LNC=2) is two of them.
# Host link: assumed PCIe Gen5 x16-class (63 GB/s per direction), 20 us per transfer; assumptions.
TRN2 = DeviceProfile(
    name="trn2",
    peak_flops=667e12 / 8,
    mem_bandwidth=2.9e12 / 8,
    link_bandwidth=63e9,
    link_latency=20e-6,
    kind="accelerator",
    precision="bf16/fp16 dense",
    peak_flops_fp32=181e12 / 8,
    description="one AWS Trainium2 NeuronCore-v3 (1/8 chip: 83.4 TFLOPS bf16, 22.6 TFLOPS fp32, 362.5 GB/s, "
                "12 GiB HBM)",
    memory_bytes=96 * _GiB / 8,
)

# --- t4: NVIDIA T4 (Turing, 70 W PCIe card) -------------------------------------------------------
# NVIDIA T4 datasheet: 8.1 TFLOPS single precision, 65 TFLOPS mixed precision (FP16/FP32, tensor cores,
# dense), 130 INT8 TOPS; 16 GB GDDR6 at 320 GB/s; PCIe Gen3 x16 (32 GB/s bidirectional => ~15.75 GB/s
# per direction). Link latency: ~10 us per cudaMemcpy (driver + DMA setup), an assumption.
T4 = DeviceProfile(
    name="t4",
    peak_flops=65e12,
    mem_bandwidth=320e9,
    link_bandwidth=15.75e9,
    link_latency=10e-6,
    kind="accelerator",
    precision="fp16 dense (tensor cores)",
    peak_flops_fp32=8.1e12,
    description="NVIDIA T4 (65 TFLOPS fp16 tensor, 8.1 TFLOPS fp32, 320 GB/s, 16 GB GDDR6, PCIe Gen3 x16)",
    memory_bytes=16e9,
)

# --- h100: NVIDIA H100 SXM5 80 GB -----------------------------------------------------------------
# NVIDIA H100 datasheet (SXM5 column): BF16/FP16 tensor core 1,979 TFLOPS *with sparsity*, i.e.
# 989.4 TFLOPS dense; FP32 67 TFLOPS; 80 GB HBM3 at 3.35 TB/s. Host link PCIe Gen5 x16: 128 GB/s bidirectional
# => 64 GB/s per direction. Link latency ~10 us per transfer, an assumption.
H100 = DeviceProfile(
    name="h100",
    peak_flops=989.4e12,
    mem_bandwidth=3.35e12,
    link_bandwidth=64e9,
    link_latency=10e-6,
    kind="accelerator",
    precision="bf16/fp16 dense (tensor cores)",
    peak_flops_fp32=67e12,
    description="NVIDIA H100 SXM5 (989 TFLOPS bf16 dense, 67 TFLOPS fp32, 3.35 TB/s, 80 GB HBM3, PCIe Gen5 x16)",
    memory_bytes=80e9,
)

#: Built-in profiles by name.
PROFILES: dict[str, DeviceProfile] = {p.name: p for p in (CPU, INF1, INF2, TRN1, TRN2, T4, H100)}


def get_profile(name: str | DeviceProfile) -> DeviceProfile:
    """The built-in profile called ``name`` (case-insensitive); a DeviceProfile is returned unchanged.

    Raises :class:`fxopt.errors.InputError` with a one-line message listing the valid names.
    """
    if isinstance(name, DeviceProfile):
        return name
    key = str(name).strip().lower()
    profile = PROFILES.get(key)
    if profile is None:
        raise InputError(f"unknown device profile {str(name)!r}; valid profiles: {', '.join(sorted(PROFILES))}")
    return profile


def _concrete(cost: OpCost, subs: Mapping[Any, int] | None) -> OpCost:
    if cost.is_symbolic:
        return cost.evaluate(subs)
    return cost


def estimate_time(cost: OpCost, profile: DeviceProfile | str, subs: Mapping[Any, int] | None = None) -> float:
    """Roofline time in seconds: ``max(flops / peak_flops, (bytes_read + bytes_written) / mem_bandwidth)``.

    ``profile`` is a DeviceProfile or a built-in name. A symbolic cost is first evaluated with ``subs``
    (default: the example sizes it recorded; see :meth:`OpCost.evaluate`).
    """
    p = get_profile(profile)
    c = _concrete(cost, subs)
    compute = float(c.flops) / p.peak_flops
    memory = float(c.total_bytes) / p.mem_bandwidth
    return max(compute, memory)


def transfer_time(nbytes: int | float | Any, profile: DeviceProfile | str) -> float:
    """Seconds to move ``nbytes`` over the profile's host link: ``link_latency + nbytes / link_bandwidth``.

    ``nbytes`` is a number (or a sympy expression without symbols); negative sizes raise ValueError.
    """
    p = get_profile(profile)
    if isinstance(nbytes, sympy.Basic):
        if nbytes.free_symbols:
            raise ValueError(f"transfer_time needs a concrete byte count, got {nbytes}; evaluate it first")
        nbytes = float(nbytes)
    n = float(nbytes)
    if n < 0 or math.isnan(n):
        raise ValueError(f"transfer_time: nbytes must be >= 0, got {nbytes!r}")
    return p.link_latency + n / p.link_bandwidth


def measure_cpu_profile(name: str = "cpu-measured", budget_s: float = 0.4) -> DeviceProfile:
    """Measure this machine: fp32 matmul FLOP/s and memcpy bandwidth with torch, in about ``budget_s`` s
    (plus ~0.1-0.2 s of one-off allocation and warm-up).

    Returns a ``kind="cpu"`` DeviceProfile whose ``peak_flops`` is the best observed 512x512 matmul rate
    (at torch's current thread count) and whose ``mem_bandwidth`` is (bytes read + bytes written) per second
    of a 32 MiB tensor copy (the same accounting the cost model uses for copies); ``link_bandwidth`` is
    the copy rate in bytes copied per second, ``link_latency`` 0.
    """

    half = max(budget_s, 0.05) / 2

    n = 512
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    c = torch.empty(n, n)
    torch.mm(a, b, out=c)  # warm-up (thread pool, packing buffers)
    best_flops = 0.0
    deadline = time.perf_counter() + half
    while True:
        t0 = time.perf_counter()
        torch.mm(a, b, out=c)
        dt = time.perf_counter() - t0
        if dt > 0:
            best_flops = max(best_flops, 2.0 * n * n * n / dt)
        if time.perf_counter() >= deadline:
            break

    nelem = (32 * 1024 * 1024) // 4
    src = torch.ones(nelem)
    dst = torch.empty(nelem)
    dst.copy_(src)  # warm-up: fault the pages in
    best_copy = 0.0  # bytes copied per second
    deadline = time.perf_counter() + half
    while True:
        t0 = time.perf_counter()
        dst.copy_(src)
        dt = time.perf_counter() - t0
        if dt > 0:
            best_copy = max(best_copy, nelem * 4 / dt)
        if time.perf_counter() >= deadline:
            break

    return DeviceProfile(
        name=name,
        peak_flops=best_flops,
        mem_bandwidth=2.0 * best_copy,
        link_bandwidth=best_copy,
        link_latency=0.0,
        kind="cpu",
        precision="fp32",
        peak_flops_fp32=best_flops,
        description=f"measured on this machine with {torch.get_num_threads()} torch threads",
    )
