"""Greedy generation of a Hugging Face causal LM, compiled for XLA in unroll partitions, with ``generate``'s tokens.

    python examples/generate_on_xla.py [--backend xla] [--new 16] [--out out/gpt2-generate]

A tiny GPT-2 is built from a config in code (random weights, no download). ``decode=GenerationSpec`` captures
``model.generate(do_sample=False)`` as a decode loop with no change to the model; the target's default
pipeline unrolls it into partitions of steps, each compiled by the backend, the host checking EOS between
them. The script checks the tokens against ``generate`` on new prompts, saves the artifact, loads it back
and checks again, as a serving process would.
"""
from __future__ import annotations

import argparse
import sys

import torch

import fxopt


def tiny_gpt2():
    """A 2-layer GPT-2 with a 256-token vocabulary, seeded."""
    from transformers import GPT2Config, GPT2LMHeadModel   # local: transformers is optional; fxopt imports without it

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=256, n_embd=32, n_layer=2, n_head=4, n_inner=64, n_positions=64,
                        bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return GPT2LMHeadModel(config).eval()


def main(argv=None) -> int:
    """Capture, compile, check, save, reload; prints one line per stage. Returns 0 when every check holds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="xla")
    parser.add_argument("--new", type=int, default=16, help="max_new_tokens")
    parser.add_argument("--out", default="out/gpt2-generate")
    args = parser.parse_args(argv)

    model = tiny_gpt2()
    prompt = torch.randint(3, 256, (2, 6), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(prompt)      # (input_ids, attention_mask), as a tokenizer gives them
    spec = fxopt.GenerationSpec(max_new_tokens=args.new)
    program = fxopt.capture(model, (prompt, mask), decode=spec)
    settings = program.regions[0]["generation"]
    compiled = fxopt.compile(fxopt.optimize(program, target=args.backend), args.backend)
    print(f"compiled {program.name} for {args.backend}: {len(compiled.extra.get('pieces', {}))} pieces")

    ok = True
    for seed in (2, 3):
        ids = torch.randint(3, 256, (2, 6), generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            expected = model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=args.new)
        ok &= torch.equal(fxopt.as_generate(compiled(ids, mask), settings, ids), expected)
    print(f"tokens equal generate's on new prompts: {ok}")

    path = compiled.save(args.out)
    loaded = fxopt.load(path)
    with torch.no_grad():
        expected = model.generate(prompt, attention_mask=mask, do_sample=False, max_new_tokens=args.new)
    same = torch.equal(fxopt.as_generate(loaded(prompt, mask), loaded.plan["generation"], prompt), expected)
    print(f"reloaded {path}: tokens equal generate's: {same}")
    return 0 if ok and same else 1


if __name__ == "__main__":
    sys.exit(main())
