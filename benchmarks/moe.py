"""`moe` pass: many small experts, eager loop vs fxopt-fused (reference and XLA backends) vs torch.compile.

Grid: E in {8, 16, 32} experts, batch in {64, 256, 1024}, experts Linear(64, 128)-ReLU-Linear(128, 64), two
gatings: top-1 routing written as the ModuleList loop (``where(idx == e)``, ``x[tok]``, ``index_add``) and
dense softmax gating (every expert runs, as in ``zoo:ranking``). Everything for one configuration is timed
round-robin in one run (ratios, not seconds, are what compare across these noisy machines). For top-1 it
also times two hand-written grouped strategies over the same stacked weights, to choose the pass's
strategy by measurement: *padded* (tokens sorted by expert into an [E, C, in] buffer, C = largest expert
load, one bmm chain) and *segment* (tokens sorted by expert, one mm chain per expert on its slice).
GFLOP/s counts the useful FLOPs (routed tokens only for top-1) and compares with one plain ``mm`` of the
same FLOPs. The ``fxopt-xla`` column runs ``moe`` for the xla target (its own form choices: masked top-1 stays dense
there) and ``split{target=xla,policy=support}``, then the XLA backend (top-1 routing has data-dependent sizes — ``where``/``nonzero`` — which
stay on the CPU in PyTorch; the XLA partitions are jit-compiled per shape signature, and the first timed
calls of a new signature are excluded by the warm-up). The `grouped` column is the routed strategy the pass chose
(`moe{grouped=auto}`: padded, or grouped_mm when experts average >= `segment_rows` rows). Headline: fxopt speedup over eager and over
torch.compile at E=16, batch 256, top-1.

    python -m benchmarks.moe [--quick] [--no-compile] [--no-xla] [--repeat N] [--threads N]
"""
from __future__ import annotations

import argparse
import time
import warnings

import torch
from torch import nn

import fxopt
from benchmarks.timing import warm_round_robin

D_IN, HIDDEN, D_OUT = 64, 128, 64


class LoopTopK(nn.Module):
    """Top-k routed experts as a ModuleList loop (index / where / index_add)."""

    def __init__(self, num_experts: int, k: int = 1):
        super().__init__()
        self.k = k
        self.gate = nn.Linear(D_IN, num_experts)
        self.experts = nn.ModuleList(nn.Sequential(nn.Linear(D_IN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, D_OUT))
                                     for _ in range(num_experts))

    def forward(self, x):
        """Takes x [B, D_IN]; returns the routed, gate-weighted expert outputs [B, D_OUT]."""
        w, idx = torch.topk(torch.softmax(self.gate(x), -1), self.k)
        out = x.new_zeros(x.shape[0], D_OUT)
        for e, expert in enumerate(self.experts):
            tok, slot = torch.where(idx == e)
            out = out.index_add(0, tok, expert(x[tok]) * w[tok, slot].unsqueeze(-1))
        return out


class Dense(LoopTopK):
    """Dense softmax gating: every expert runs on every token (the zoo ranking model's MoE)."""

    def forward(self, x):
        """Takes x [B, D_IN]; returns the softmax-weighted sum of all experts [B, D_OUT]."""
        weights = torch.softmax(self.gate(x), dim=-1)
        outputs = torch.stack([expert(x) for expert in self.experts], 1)
        return (weights.unsqueeze(-1) * outputs).sum(dim=1)


class MaskedTop1(LoopTopK):
    """Top-1 as one-hot masks of the argmax over every expert's output (static shapes, as users write it
    for accelerators): ``out += (idx == e).unsqueeze(-1).to(x.dtype) * expert(x)``."""

    def forward(self, x):
        """Takes x [B, D_IN]; returns each token's own expert output [B, D_OUT] (dense compute, masked)."""
        idx = self.gate(x).argmax(-1)
        out = x.new_zeros(x.shape[0], D_OUT)
        for e, expert in enumerate(self.experts):
            out = out + (idx == e).unsqueeze(-1).to(x.dtype) * expert(x)
        return out


class MixtralStyle(nn.Module):
    """transformers' own MixtralSparseMoeBlock (stacked [E, 2h, d] / [E, d, h] expert weights, top-2, the
    library's grouped-matmul op), hidden D_IN, expert width HIDDEN; x [B, D_IN] runs as one sequence."""

    def __init__(self, num_experts: int):
        super().__init__()
        from transformers import MixtralConfig
        from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

        config = MixtralConfig(hidden_size=D_IN, intermediate_size=HIDDEN, num_local_experts=num_experts,
                               num_experts_per_tok=2)
        config._experts_implementation = "grouped_mm"    # what from_config picks for the whole model
        self.block = MixtralSparseMoeBlock(config)
        for p in self.block.parameters():                # the expert tensors are allocated empty
            nn.init.normal_(p, std=0.05)

    def forward(self, x):
        """Takes x [B, D_IN]; returns the block's output [B, D_IN]."""
        return self.block(x.unsqueeze(0)).squeeze(0)


MODELS = {"top1": LoopTopK, "dense": Dense, "masked": MaskedTop1, "stacked": MixtralStyle}


def _stacked(model):
    w1 = torch.stack([e[0].weight.t() for e in model.experts]).contiguous()
    b1 = torch.stack([e[0].bias for e in model.experts]).unsqueeze(1)
    w2 = torch.stack([e[2].weight.t() for e in model.experts]).contiguous()
    b2 = torch.stack([e[2].bias for e in model.experts]).unsqueeze(1)
    return w1, b1, w2, b2


def hand_padded(model, x):
    """Top-k by hand, padded strategy: sort pairs by expert, scatter into [E, C, in], one bmm chain."""
    w1, b1, w2, b2 = model._stacked
    e_count = w1.shape[0]
    w, idx = torch.topk(torch.softmax(model.gate(x), -1), model.k)
    flat = idx.reshape(-1)
    skey, order = torch.sort(flat, stable=True)
    counts = torch.bincount(flat, minlength=e_count)
    pos = torch.arange(flat.numel()) - (torch.cumsum(counts, 0) - counts)[skey]
    cap = int(counts.max())
    dest = skey * cap + pos
    tok = order // model.k
    buf = x.new_zeros(e_count * cap, D_IN).index_put((dest,), x[tok]).view(e_count, cap, D_IN)
    y = torch.bmm(torch.relu(torch.bmm(buf, w1) + b1), w2) + b2
    ys = y.view(-1, D_OUT)[dest] * w.reshape(-1)[order].unsqueeze(-1)
    return x.new_zeros(x.shape[0], D_OUT).index_put((tok,), ys, accumulate=True)


def hand_segment(model, x):
    """Top-k by hand, segment strategy: sort pairs by expert, one mm chain per expert on its slice."""
    w1, b1, w2, b2 = model._stacked
    w, idx = torch.topk(torch.softmax(model.gate(x), -1), model.k)
    flat = idx.reshape(-1)
    _, order = torch.sort(flat, stable=True)
    counts = torch.bincount(flat, minlength=w1.shape[0]).tolist()
    tok = order // model.k
    xs = x[tok]
    parts, start = [], 0
    for e, c in enumerate(counts):
        if c:
            h = torch.relu(torch.addmm(b1[e, 0], xs[start:start + c], w1[e]))
            parts.append(torch.addmm(b2[e, 0], h, w2[e]))
        start += c
    ys = torch.cat(parts) * w.reshape(-1)[order].unsqueeze(-1)
    return x.new_zeros(x.shape[0], D_OUT).index_put((tok,), ys, accumulate=True)


def _xla_compiled(program, x, model):
    """The captured program through the xla target's moe and split and the XLA backend (what ``--backend
    xla`` runs), or None with a note when it cannot run."""
    try:
        from fxopt.passes.manager import optimize

        split = optimize(program, "moe,split{target=xla,policy=support}", target="xla", verify=False)
        compiled = fxopt.compile(split, "xla")
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-5)
        return compiled
    except Exception as exc:  # noqa: BLE001 - a benchmark column, not a test: report and go on
        print(f"  (fxopt-xla unavailable: {type(exc).__name__}: {str(exc).splitlines()[0][:120]})")
        return None


def run_config(num_experts: int, batch: int, mode: str, repeat: int, use_compile: bool, budget_s: float,
               use_xla: bool = True) -> dict:
    """Build, fuse and time one configuration; returns its row."""
    torch.manual_seed(0)
    model = MODELS[mode](num_experts).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if mode == "top1":
        model._stacked = _stacked(model)
    x = torch.randn(batch, D_IN)
    program = fxopt.capture(model, (x,))
    fused = fxopt.optimize(program, "moe", verify=True)
    result = fused.reports[-1]
    compiled = fxopt.compile(fused, "reference")
    torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-5)
    fns = {"eager": lambda: model(x), "fxopt": lambda: compiled(x)}
    xla = _xla_compiled(program, x, model) if use_xla else None
    if xla is not None:
        fns["fxopt-xla"] = lambda: xla(x)
    compile_s = None
    if use_compile:
        t0 = time.perf_counter()
        tc = torch.compile(model)
        with torch.no_grad():
            tc(x)
        compile_s = time.perf_counter() - t0
        fns["torch.compile"] = lambda: tc(x)
    if mode == "top1":
        torch.testing.assert_close(hand_padded(model, x), model(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(hand_segment(model, x), model(x), rtol=1e-4, atol=1e-5)
        fns["padded"] = lambda: hand_padded(model, x)
        fns["segment"] = lambda: hand_segment(model, x)
    tokens = {"top1": batch, "masked": batch, "stacked": 2 * batch}.get(mode, batch * num_experts)
    width = 3 if mode == "stacked" else 2           # gated MLP: gate, up and down projections
    flops = 2 * tokens * (D_IN * HIDDEN * (width - 1) + HIDDEN * D_OUT)
    rows_m = max(1, flops // (2 * 128 * 128))
    a, b = torch.randn(rows_m, 128), torch.randn(128, 128)
    fns["plain mm"] = lambda: torch.mm(a, b)
    times = warm_round_robin(fns, repeat, budget_s)
    details = result.details
    strategy = next((s for s in ("grouped_mm", "segment", "padded", "masked", "stacked", "dense")
                     if details.get(f"{s}_groups")), "-")
    row = {"E": num_experts, "batch": batch, "mode": mode, "experts_fused": details["experts_fused"],
           "strategy": strategy,
           "matmuls": f"{result.details['matmul_nodes_before']}->{result.details['matmul_nodes_after']}",
           "compile_s": compile_s, "flops": flops}
    row.update({f"{k}_us": v * 1e6 for k, v in times.items()})
    row["speedup_vs_eager"] = times["eager"] / times["fxopt"]
    if "fxopt-xla" in times:
        row["xla_vs_eager"] = times["eager"] / times["fxopt-xla"]
        if "torch.compile" in times:
            row["xla_vs_compile"] = times["torch.compile"] / times["fxopt-xla"]
    if "torch.compile" in times:
        row["speedup_vs_compile"] = times["torch.compile"] / times["fxopt"]
        row["compile_vs_eager"] = times["eager"] / times["torch.compile"]
    row["gflops_fxopt"] = flops / times["fxopt"] / 1e9
    row["gflops_plain"] = 2 * rows_m * 128 * 128 / times["plain mm"] / 1e9
    if mode == "top1":
        row["padded_vs_segment"] = times["segment"] / times["padded"]
    return row


def _fmt(v, spec=".0f"):
    return "-" if v is None else format(v, spec)


def main(argv=None) -> list[dict]:
    """Run the grid (``--quick``: E=16/B=256 both gatings and E=8/B=1024 top-1); print a table; return rows."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a 3-configuration subset")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (it compiles per config)")
    parser.add_argument("--no-xla", action="store_true", help="skip the fxopt-xla column (needs jax)")
    parser.add_argument("--repeat", type=int, default=30, help="timed rounds per configuration")
    parser.add_argument("--modes", default="top1,dense,masked,stacked",
                        help="comma-separated forms: top1 (ModuleList loop), dense (softmax gating), masked "
                             "(one-hot argmax masks), stacked (transformers' MixtralSparseMoeBlock)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared 2-core machine oversubscribed OpenMP "
                             "threads swamp the timings; 0 keeps torch's default)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    modes = [m for m in args.modes.split(",") if m]
    if "stacked" in modes:
        try:
            import transformers  # noqa: F401
        except ImportError:
            print("(stacked: transformers is not installed; skipped)")
            modes.remove("stacked")
    if args.quick:
        grid = [(e, b, m) for e, b, m in [(16, 256, "top1"), (16, 256, "dense"), (8, 1024, "top1"),
                                          (16, 256, "masked"), (16, 256, "stacked")] if m in modes]
    else:
        grid = [(e, b, m) for m in modes for e in (8, 16, 32) for b in (64, 256, 1024)]
    budget = 1.0 if args.quick else 2.5
    rows = [run_config(e, b, m, args.repeat, not args.no_compile, budget, not args.no_xla) for e, b, m in grid]
    head = (f"{'mode':5} {'E':>3} {'B':>5} {'matmuls':>8} {'grouped':>10} {'eager us':>9} {'fxopt us':>9} {'tc us':>8} "
            f"{'x eager':>8} {'x tc':>6} {'tc/eager':>8} {'xla us':>7} {'xla x eager':>11} {'xla x tc':>8} {'GF/s':>6} "
            f"{'mm GF/s':>7} {'padded us':>9} {'segment us':>10}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['mode']:5} {r['E']:>3} {r['batch']:>5} {r['matmuls']:>8} {r['strategy']:>10} {r['eager_us']:>9.0f} "
              f"{r['fxopt_us']:>9.0f} {_fmt(r.get('torch.compile_us')):>8} {r['speedup_vs_eager']:>8.2f} "
              f"{_fmt(r.get('speedup_vs_compile'), '.2f'):>6} {_fmt(r.get('compile_vs_eager'), '.2f'):>8} "
              f"{_fmt(r.get('fxopt-xla_us')):>7} {_fmt(r.get('xla_vs_eager'), '.2f'):>11} "
              f"{_fmt(r.get('xla_vs_compile'), '.2f'):>8} {r['gflops_fxopt']:>6.1f} {r['gflops_plain']:>7.1f} {_fmt(r.get('padded_us')):>9} "
              f"{_fmt(r.get('segment_us')):>10}")
    key = next((r for r in rows if (r["E"], r["batch"], r["mode"]) == (16, 256, "top1")), rows[0])
    tc = f", {key['speedup_vs_compile']:.2f}x torch.compile" if "speedup_vs_compile" in key else ""
    xla = (f"; fxopt-xla {key['xla_vs_eager']:.2f}x eager" if "xla_vs_eager" in key else "")
    xla += (f", {key['xla_vs_compile']:.2f}x torch.compile" if "xla_vs_compile" in key else "")
    for mode, backend in (("masked", "fxopt"), ("stacked", "fxopt-xla")):
        pick = next((r for r in rows if (r["E"], r["batch"], r["mode"]) == (16, 256, mode)), None)
        ratio = "speedup_vs_eager" if backend == "fxopt" else "xla_vs_eager"
        if pick is not None and ratio in pick:
            print(f"{mode} E=16 B=256: {backend} {pick[ratio]:.2f}x eager")
    print(f"\nheadline: E={key['E']} B={key['batch']} {key['mode']}: fxopt {key['speedup_vs_eager']:.2f}x eager{tc}{xla}; "
          f"slowest config vs eager {min(r['speedup_vs_eager'] for r in rows):.2f}x; padded/segment (top1) "
          + ", ".join(f"E{r['E']}B{r['batch']} {r['padded_vs_segment']:.2f}x" for r in rows if 'padded_vs_segment' in r))
    return rows


if __name__ == "__main__":
    main()
