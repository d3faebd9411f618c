"""`unroll` on torch.export loops (scan / while_loop higher-order ops): the loop as captured vs unrolled.

Two models written with the HOPs (defined here):
- a GRU cell + head scanned over a sequence (``scan``, T steps): the captured loop on the reference backend
  vs ``unroll{mode=full}`` on the reference backend and on xla (one XLA executable, skipped without jax);
- a greedy decoder stopping at EOS (``while_loop``, data-dependent stop; rows stop at seeded random lengths):
  the captured loop vs ``unroll{partition=K}`` (K predicated steps per host check) for a few K.

Per variant: build time (optimize + compile + first call), graph nodes, ms per call (median of interleaved
runs, one intra-op thread), host condition checks per call (while_loop iterations), and whether the outputs
equal the captured loop's (exact for the decoder, allclose 1e-5 for the GRU).
"""
from __future__ import annotations

import math
import time

import torch
from torch._higher_order_ops import scan, while_loop

import fxopt
from benchmarks.timing import interleaved_medians, one_thread, parse_repeat_args


class GRUScan(torch.nn.Module):
    """GRUCell(d_in, h) + Linear(h, 16) scanned over xs [T, B, d_in]; returns (h_T, ys [T, B, 16])."""

    def __init__(self, d_in: int = 32, h: int = 64):
        super().__init__()
        self.cell, self.out = torch.nn.GRUCell(d_in, h), torch.nn.Linear(h, 16)

    def forward(self, xs, h0):
        def combine(h, x):
            h2 = self.cell(x, h)
            return h2, self.out(h2)

        return scan(combine, h0, xs)


class Decoder(torch.nn.Module):
    """Greedy decoder (embedding, tanh cell, vocab head) stopping when every row has emitted EOS or after
    ``max_len`` steps; row r emits EOS at step ``length[r]``. Returns (tokens [B, max_len], steps run)."""

    def __init__(self, vocab: int = 64, d: int = 64, max_len: int = 32):
        super().__init__()
        self.emb, self.cell, self.head = torch.nn.Embedding(vocab, d), torch.nn.Linear(2 * d, d), torch.nn.Linear(d, vocab)
        with torch.no_grad():
            self.head.bias[0] = -30.0
        self.max_len = max_len
        self.register_buffer("eos_hot", torch.nn.functional.one_hot(torch.tensor(0), vocab).float())

    def forward(self, h0, length):
        pos = torch.arange(self.max_len)

        def cond(i, tok, h, done, out):
            return (i < self.max_len) & ~done.all()

        def body(i, tok, h, done, out):
            h = torch.tanh(self.cell(torch.cat([self.emb(tok), h], -1)))
            nxt = (self.head(h) + (i + 1 >= length).float().unsqueeze(1) * 60.0 * self.eos_hot).argmax(-1)
            nxt = torch.where(done, torch.zeros_like(nxt), nxt)
            out = torch.where(pos.unsqueeze(0) == i, nxt.unsqueeze(1), out)
            return i + 1, nxt, h, done | (nxt == 0), out

        b = h0.shape[0]
        init = (torch.zeros((), dtype=torch.long), torch.ones(b, dtype=torch.long), h0,
                torch.zeros(b, dtype=torch.bool), torch.zeros(b, self.max_len, dtype=torch.long))
        i, _, _, _, out = while_loop(cond, body, init)
        return out, i


def _has_jax() -> bool:
    try:
        import jax  # noqa: F401
    except ImportError:
        return False
    return True


def _build(program, spec: str, backend: str, inputs: tuple):
    start = time.perf_counter()
    prog = fxopt.optimize(program, spec, verify=False) if spec else program
    compiled = fxopt.compile(prog, backend)
    compiled(*inputs)
    return prog, compiled, time.perf_counter() - start


def _same(a, b, exact: bool) -> bool:
    la, lb = torch.utils._pytree.tree_leaves(a), torch.utils._pytree.tree_leaves(b)
    if exact:
        return all(torch.equal(x, y) for x, y in zip(la, lb))
    return all(torch.allclose(x, y, atol=1e-5, rtol=1e-5) for x, y in zip(la, lb))


def _bench(program, variants: list[tuple], inputs: tuple, repeat: int, exact: bool, checks) -> list[dict]:
    built = [(label, *_build(program, spec, backend, inputs)) for label, spec, backend in variants]
    with torch.no_grad():
        want = built[0][2](*inputs)
    times = interleaved_medians([lambda c=c: c(*inputs) for _, _, c, _ in built], repeat)
    rows = []
    for (label, prog, compiled, build_s), t in zip(built, times):
        with torch.no_grad():
            same = _same(compiled(*inputs), want, exact)
        rows.append({"variant": label, "build_s": build_s, "nodes": prog.num_nodes(), "ms": t * 1e3,
                     "checks": checks(label), "same": same, "speedup": times[0] / t})
    return rows


def run_scan(steps: int, repeat: int) -> dict:
    """GRU scan over ``steps`` elements: captured loop vs full unroll (reference, xla)."""
    torch.manual_seed(0)
    model = GRUScan().eval()
    inputs = (torch.randn(steps, 8, 32), torch.randn(8, 64))
    program = fxopt.capture(model, inputs)
    variants = [("scan loop (reference)", "", "reference"), ("full unroll (reference)", "unroll{mode=full}", "reference")]
    if _has_jax():
        variants.append(("full unroll (xla)", "unroll{mode=full}", "xla"))
    rows = _bench(program, variants, inputs, repeat, False, lambda label: "-")
    return {"model": f"GRU scan, T={steps}, batch 8, hidden 64", "rows": rows}


def run_while(max_len: int, parts: list[int], repeat: int) -> dict:
    """Greedy decoder while_loop: captured loop vs partitions of K (reference backend)."""
    torch.manual_seed(0)
    model = Decoder(max_len=max_len).eval()
    g = torch.Generator().manual_seed(1)
    inputs = (torch.randn(8, 64, generator=g), torch.randint(max_len // 4, max_len * 3 // 4, (8,), generator=g))
    program = fxopt.capture(model, inputs)
    with torch.no_grad():
        steps = int(model(*inputs)[1])
    variants = [("while_loop (reference)", "", "reference")]
    variants += [(f"partitions of {k} (reference)", f"unroll{{partition={k}}}", "reference") for k in parts]

    def checks(label: str) -> str:
        k = int(label.split()[2]) if label.startswith("partitions") else 1
        return f"{math.ceil(steps / k) + 1}"

    rows = _bench(program, variants, inputs, repeat, True, checks)
    return {"model": f"greedy decoder while_loop, max_len {max_len}, batch 8, stops after {steps} steps", "rows": rows}


def main(argv=None) -> list[dict]:
    """Print a table per model; returns the results."""
    args = parse_repeat_args(argv, __doc__, "short loops, few repetitions", (5, 20))
    repeat = args.repeat
    with one_thread():
        results = [run_scan(16 if args.quick else 64, repeat),
                   run_while(16 if args.quick else 48, [4, 8] if args.quick else [4, 8, 16], repeat)]
    for res in results:
        print(f"{res['model']} (median of {repeat}, one thread):")
        print(f"  {'variant':<30}{'build s':>9}{'nodes':>7}{'ms/call':>9}{'host checks':>13}{'vs loop':>9}  same")
        for r in res["rows"]:
            print(f"  {r['variant']:<30}{r['build_s']:>9.2f}{r['nodes']:>7}{r['ms']:>9.3f}{r['checks']:>13}"
                  f"{r['speedup']:>8.2f}x  {r['same']}")
    return results


if __name__ == "__main__":
    main()
