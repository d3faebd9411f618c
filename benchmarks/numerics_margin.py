"""How close do two runtimes come, measured against the shared tolerance rule (fxopt.ir.numerics)?

    python -m benchmarks.numerics_margin            # this CPU's widest vector path, then AVX2 only
    python -m benchmarks.numerics_margin --one      # one pass in this process (the environment as it is)

For every model (the zoo at its small size, the test suite's encoder, and Hugging Face BERT/Llama/ViT built
from tiny configs) and every runtime fxopt compares with PyTorch (XLA via the lowering, at XLA's default
optimisation and at level 0; onnxruntime via the ONNX export; a TorchScript trace), it prints the
**margin**: the worst output's ``max|a - e| / tolerance`` under the rule, i.e. the fraction of the tolerance
that real rounding used (below 1 passes). Then it breaks one XLA lowering rule at a time the way a wrong
lowering would (GELU's tanh approximation for erf, layer norm's and batch norm's epsilon dropped, a mean
that divides by n + 1) and prints the same ratio on the models that use the op: those must stay
above 1 (caught). The default mode runs the table twice in fresh processes, once as the CPU is and once with
PyTorch (ATen and oneDNN) and XLA limited to AVX2, the vector path of CPUs without AVX-512, and prints both
side by side.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "XLA_FLAGS": "--xla_cpu_max_isa=AVX2"}


def _hf_models():
    """name -> (model, inputs) for tiny random-weight Hugging Face models (none when transformers is absent)."""
    try:
        import transformers as tf
    except ImportError:
        return {}
    import torch

    torch.manual_seed(0)
    ids = torch.randint(0, 100, (2, 12))
    bert = tf.BertModel(tf.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                      intermediate_size=64, max_position_embeddings=32)).eval()
    llama = tf.LlamaModel(tf.LlamaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=32,
                                         use_cache=False)).eval()
    vit = tf.ViTModel(tf.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=4, intermediate_size=64)).eval()
    return {"hf_bert": (bert, (ids,)), "hf_llama": (llama, (ids,)), "hf_vit": (vit, (torch.randn(2, 3, 32, 32),))}


def programs() -> dict:
    """name -> captured Program."""
    import torch

    import fxopt

    out = {}
    for name in ("resnet50", "moderation", "ranking", "ocr"):
        model, inputs = fxopt.zoo.get(name, small=True)
        out[name] = fxopt.capture(model, inputs)
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
    from conftest import TinyEncoder

    torch.manual_seed(0)
    enc = TinyEncoder().eval()
    out["encoder"] = fxopt.capture(enc, enc.example_inputs())
    for name, (model, inputs) in _hf_models().items():
        out[name] = fxopt.capture(model, inputs)
    return out


def _xla(gm, inputs, level0: bool):
    from fxopt.backends.xla import lower as xl

    return xl.run_lowered(gm, inputs, compiler_options={"xla_backend_optimization_level": 0} if level0 else None)


def _onnxruntime(gm, inputs):
    import numpy as np
    import onnxruntime as ort
    import torch

    from fxopt.backends.onnx_export import export_module

    exported = export_module(gm, "margin")
    names = [n.name for n in gm.graph.nodes if n.op == "placeholder"]
    by_name = dict(zip(names, inputs))
    session = ort.InferenceSession(exported.model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {i.name: by_name[i.name].numpy() for i in session.get_inputs()}
    return tuple(torch.from_numpy(np.ascontiguousarray(o).reshape(np.shape(o))) for o in session.run(None, feeds))


def _torchscript(gm, inputs):
    import torch

    with torch.no_grad():
        traced = torch.jit.trace(gm, tuple(inputs), check_trace=False, strict=False)
        out = traced(*inputs)
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


RUNTIMES = {
    "xla": lambda gm, x: _xla(gm, x, False),
    "xla-O0": lambda gm, x: _xla(gm, x, True),
    "onnxruntime": _onnxruntime,
    "torchscript": _torchscript,
}


def margin(expected, actual, depths) -> float:
    """The largest ``max|a - e| / tolerance`` over the floating outputs (inf when an output is not a float
    match at all: integer values, NaN pattern, dtype or shape differ)."""
    import torch

    from fxopt.ir import numerics

    worst = 0.0
    for i, (e, a) in enumerate(zip(expected, actual)):
        if not isinstance(e, torch.Tensor) or not e.dtype.is_floating_point or not e.numel():
            if numerics.value_difference(e, a) is not None:
                return float("inf")
            continue
        if numerics.value_difference(e, a, 10**12) is not None:   # a mismatch no tolerance covers
            return float("inf")
        finite = torch.isfinite(e)
        mag = float(e[finite].double().abs().max()) if bool(finite.any()) else 0.0
        err = float((a.double() - e.double())[finite].abs().max()) if bool(finite.any()) else 0.0
        worst = max(worst, err / numerics.tolerance(e.dtype, mag, depths[i]))
    return worst


def _broken_rules() -> dict:
    """name -> (op packet names it touches, function installing the broken rule and returning an undo)."""
    import jax
    import torch

    from fxopt.backends.xla import ops

    aten = torch.ops.aten

    def swap(target, make):
        def install():
            old = ops.RULES[target]
            ops.RULES[target] = make(old)
            return lambda: ops.RULES.__setitem__(target, old)
        return install

    def gelu_tanh(old):
        return lambda x, approximate="none", **_: jax.nn.gelu(x, approximate=True)

    def ln_no_eps(old):
        return lambda x, shape, w, b, eps, **kw: old(x, shape, w, b, 0.0, **kw)

    def bn_no_eps(old):
        return lambda x, w, b, m, v, mom, eps, **kw: old(x, w, b, m, v, mom, 0.0, **kw)

    def mean_off_by_one(old):   # divides by n + 1: the classic pooling off-by-one
        def broken(x, dim=None, keepdim=False, **kw):
            out = old(x, dim, keepdim, **kw)
            n = out.size and x.size // out.size
            return out * (n / (n + 1))
        return broken

    return {
        "gelu as tanh approximation": ("gelu", swap(aten.gelu, gelu_tanh)),
        "layer_norm without eps": ("native_layer_norm", swap(aten.native_layer_norm.default, ln_no_eps)),
        "batch_norm without eps": ("_native_batch_norm_legit_no_training",
                                   swap(aten._native_batch_norm_legit_no_training.default, bn_no_eps)),
        "mean over n+1": ("mean", swap(aten.mean.dim, mean_off_by_one)),
    }


def _ops(gm) -> set:
    import torch

    return {n.target._opname for m in gm.modules() if isinstance(m, torch.fx.GraphModule)
            for n in m.graph.nodes if isinstance(n.target, torch._ops.OpOverload)}


def measure() -> dict:
    """One table in this process: {"runtimes": {model: {runtime: margin}}, "broken": {rule: {model: margin}},
    "depths": {model: max depth}}."""
    import torch

    from fxopt.ir import numerics

    torch.set_num_threads(1)
    result = {"runtimes": {}, "broken": {}, "depths": {}}
    progs = programs()
    for name, prog in progs.items():
        gm, inputs = prog.graph_module, prog.flat_example_inputs()
        want = prog.run_flat(inputs)
        depths = numerics.output_depths(gm)
        result["depths"][name] = max(depths, default=0)
        row = result["runtimes"][name] = {}
        for runtime, fn in RUNTIMES.items():
            try:
                row[runtime] = margin(want, fn(gm, inputs), depths)
            except Exception as exc:  # noqa: BLE001 - a runtime that cannot run this model: shown as such
                row[runtime] = f"n/a ({type(exc).__name__})"
    for rule, (op, install) in _broken_rules().items():
        row = result["broken"][rule] = {}
        for name, prog in progs.items():
            gm = prog.graph_module
            if op not in _ops(gm) or not any(o.is_floating_point() for o in prog.run_flat(
                    prog.flat_example_inputs()) if isinstance(o, torch.Tensor)):
                continue   # the rule is not used, or only integer outputs (tokens) are compared
            inputs = prog.flat_example_inputs()
            want = prog.run_flat(inputs)
            undo = install()
            try:
                row[name] = margin(want, _xla(gm, inputs, False), numerics.output_depths(gm))
            finally:
                undo()
    return result


def _fmt(v) -> str:
    return f"{v:9.3f}" if isinstance(v, float) else f"{str(v)[:9]:>9}"


def print_tables(tables: dict) -> None:
    """Print the margins of every environment side by side (one column per environment and runtime)."""
    envs = list(tables)
    first = tables[envs[0]]
    print("margin = max|a-e| / tolerance of the worst output (passes below 1); rule: fxopt.ir.numerics")
    header = f"{'model':12} {'depth':>5} " + " ".join(f"{r[:4] + '/' + e[:4]:>9}" for e in envs
                                                      for r in RUNTIMES)
    print(header)
    for name, row in first["runtimes"].items():
        cells = [tables[e]["runtimes"].get(name, {}).get(r, "-") for e in envs for r in RUNTIMES]
        print(f"{name:12} {first['depths'][name]:5d} " + " ".join(_fmt(c) for c in cells))
    worst = max((c for e in envs for row in tables[e]["runtimes"].values() for c in row.values()
                 if isinstance(c, float)), default=0.0)
    print(f"worst margin of a correct lowering: {worst:.3f}")
    print("\nbroken XLA rule (must stay above 1: caught)")
    for rule, row in first["broken"].items():
        cells = " ".join(f"{name}:" + "/".join(_fmt(tables[e]['broken'][rule].get(name, float('nan'))).strip()
                                               for e in envs) for name in row)
        print(f"  {rule:28} {cells}")
    least = min((c for e in envs for row in tables[e]["broken"].values() for c in row.values()),
                default=float("inf"))
    print(f"smallest margin of a broken rule: {least:.3f}")


def main(argv=None) -> int:
    """Run the measurement (``--one``: here, printing JSON with ``--json``) or both environments side by side."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--one", action="store_true", help="measure once, in this process, as the environment is")
    p.add_argument("--json", action="store_true", help="with --one: print the table as JSON")
    args = p.parse_args(argv)
    if args.one:
        table = measure()
        if args.json:
            print(json.dumps(table))
        else:
            print_tables({"here": table})
        return 0
    tables = {}
    for label, extra in (("native", {}), ("avx2", AVX2_ENV)):
        env = {**os.environ, **extra}
        out = subprocess.run([sys.executable, "-m", "benchmarks.numerics_margin", "--one", "--json"], env=env,
                             capture_output=True, text=True, check=True,
                             cwd=os.path.join(os.path.dirname(__file__), ".."))
        tables[label] = json.loads(out.stdout.strip().splitlines()[-1])
    print_tables(tables)
    return 0


if __name__ == "__main__":
    sys.exit(main())
