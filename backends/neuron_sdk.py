"""What the neuron backend tells (or, where the SDK imports, does with) the AWS Neuron toolchain.

- :func:`compile_snippets`: for one traced partition file, the exact Python to run on an SDK host:
  ``torch_neuron.trace`` (Inf1, NeuronCore-v1, neuron-cc; torch <= 1.13) and ``torch_neuronx.trace``
  (Inf2/Trn1 NeuronCore-v2, Trn2 NeuronCore-v3, neuronx-cc; torch up to 2.9, ``--target`` set from the
  backend's ``device``), each loading the partition's TorchScript file and saving the compiled module beside it.
- :func:`runtime_settings`: the Neuron runtime environment (``NEURON_RT_NUM_CORES``,
  ``NEURON_RT_VISIBLE_CORES``, and ``NEURON_RT_MULTI_INSTANCE_SHARED_WEIGHTS=TRUE`` when several instances of
  the same compiled model are loaded: the runtime then keeps one copy of the weights; runtime 2.11+).
- :func:`available_sdk` / :func:`compile_with_sdk`: compile for real when ``torch_neuronx`` or
  ``torch_neuron`` imports. Neither installs with torch 2.13 (the PyPI packages of those names are 2022
  placeholders), so that path has never run in fxopt's tests: it is small on purpose and marked untested.

Compiler arguments keep fp32 numerics (``--fast-math none`` for neuron-cc, ``--auto-cast none`` for
neuronx-cc) so the target's outputs can be compared with the CPU check done here; drop them for the faster
bf16 defaults once accuracy is checked on the target.
"""
from __future__ import annotations

import importlib.util

__all__ = ["INF1_ARGS", "NEURONX_ARGS", "neuronx_args", "compile_snippets", "runtime_settings", "available_sdk",
           "compile_with_sdk", "SDK_INSTALL"]

INF1_ARGS = ["--fast-math", "none"]
NEURONX_ARGS = ["--target", "inf2", "--auto-cast", "none"]
_CORES = {"inf1": "NeuronCore-v1", "inf2": "NeuronCore-v2", "trn1": "NeuronCore-v2", "trn2": "NeuronCore-v3"}


def neuronx_args(device: str | None = None) -> list[str]:
    """neuronx-cc arguments for ``device`` (``inf2``, ``trn1``, ``trn2``; ``inf1`` or None -> ``inf2``, the
    torch-neuronx script's default): ``--target <device> --auto-cast none``."""
    target = device if device in ("inf2", "trn1", "trn2") else "inf2"
    return ["--target", target, "--auto-cast", "none"]
SDK_INSTALL = ("install the AWS Neuron SDK from AWS's own package index "
               "(pip install --extra-index-url https://pip.repos.neuron.amazonaws.com torch-neuronx neuronx-cc), "
               "not the PyPI placeholders")


def _example_expr(inputs: list[dict]) -> str:
    parts = [f"torch.zeros({list(spec['shape'])!r}, dtype=torch.{spec['dtype']})" for spec in inputs]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


def compile_snippets(ts_file: str, inputs: list[dict], device: str | None = None) -> dict[str, dict]:
    """The compile commands for one traced partition file ``ts_file`` whose inputs are ``inputs``
    (``[{"name", "shape": [ints], "dtype"}]``). Returns ``{"inf1": {...}, "inf2_trn1": {...}}``, each with
    ``python`` (a complete script: run it in the artifact directory on an SDK host), ``output`` (the file it
    writes), ``toolchain`` and ``note``. ``device`` (``inf2``/``trn1``/``trn2``) sets the torch-neuronx
    script's ``--target`` (default ``inf2``); both scripts are always written."""
    nx_args = neuronx_args(device)
    nx_device = nx_args[1]
    stem = ts_file[: -len(".torchscript.pt")] if ts_file.endswith(".torchscript.pt") else ts_file
    example = _example_expr(inputs)
    inf1_out, nx_out = f"{stem}.neuron.pt", f"{stem}.neuronx.pt"
    inf1 = (
        "import torch\n"
        "import torch_neuron  # AWS Neuron SDK for Inf1 (torch <= 1.13)\n"
        f"model = torch.jit.load({ts_file!r})\n"
        f"example_inputs = {example}\n"
        f"neuron_model = torch_neuron.trace(model, example_inputs, compiler_args={INF1_ARGS!r})\n"
        f"torch.jit.save(neuron_model, {inf1_out!r})\n"
    )
    neuronx = (
        "import torch\n"
        "import torch_neuronx  # AWS Neuron SDK for Inf2/Trn1/Trn2 (torch <= 2.9)\n"
        f"model = torch.jit.load({ts_file!r})\n"
        f"example_inputs = {example}\n"
        f"neuron_model = torch_neuronx.trace(model, example_inputs, compiler_args={nx_args!r})\n"
        f"torch.jit.save(neuron_model, {nx_out!r})\n"
    )
    return {
        "inf1": {"python": inf1, "output": inf1_out, "toolchain": "torch-neuron + neuron-cc (NeuronCore-v1)",
                 "note": "torch 1.13 may lack core-ATen ops of newer torch (e.g. "
                         "_native_batch_norm_legit_no_training); if torch.jit.load fails there, re-trace the "
                         "original model with torch 1.13 at these shapes"},
        "inf2_trn1": {"python": neuronx, "output": nx_out,
                      "toolchain": f"torch-neuronx + neuronx-cc ({nx_device}, {_CORES[nx_device]})",
                      "note": f"compiles for --target {nx_device} (inf2, trn1 or trn2; set by the backend's "
                              "device option); TorchScript written by torch 2.13 must load in the "
                              "SDK's torch (<= 2.9): untested here"},
    }


def runtime_settings(instances: int) -> dict[str, str]:
    """Neuron runtime environment variables for ``instances`` copies of the compiled model, one NeuronCore
    each: ``NEURON_RT_NUM_CORES``, ``NEURON_RT_VISIBLE_CORES`` and, for more than one instance,
    ``NEURON_RT_MULTI_INSTANCE_SHARED_WEIGHTS=TRUE`` (the instances share one copy of the weights)."""
    settings = {"NEURON_RT_NUM_CORES": str(instances),
                "NEURON_RT_VISIBLE_CORES": "0" if instances == 1 else f"0-{instances - 1}"}
    if instances > 1:
        settings["NEURON_RT_MULTI_INSTANCE_SHARED_WEIGHTS"] = "TRUE"
    return settings


def available_sdk(device: str | None = None) -> str | None:
    """``"torch_neuronx"`` or ``"torch_neuron"`` when that SDK package imports here, else None. With
    ``device``, only the generation's own SDK counts: torch_neuron for ``inf1``, torch_neuronx for the others."""
    names = ("torch_neuronx", "torch_neuron")
    if device is not None:
        names = ("torch_neuron",) if device == "inf1" else ("torch_neuronx",)
    for name in names:
        if importlib.util.find_spec(name) is not None:
            return name
    return None


def compile_with_sdk(sdk: str, module, example_inputs: tuple,
                     device: str | None = None):  # pragma: no cover - needs the Neuron SDK
    """Compile ``module`` (a traced ScriptModule) with ``sdk`` (see :func:`available_sdk`) at
    ``example_inputs`` (torch-neuronx: for ``--target device``); returns the Neuron ScriptModule. UNTESTED: the
    SDK does not install with torch 2.13."""
    lib = importlib.import_module(sdk)
    args = neuronx_args(device) if sdk == "torch_neuronx" else INF1_ARGS
    return lib.trace(module, example_inputs, compiler_args=list(args))
