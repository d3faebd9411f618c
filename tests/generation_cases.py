"""Tiny Hugging Face generation models (random weights, built here, no downloads) and the checks the
GenerationSpec tests share: fxopt's tokens, turned into ``generate``'s form, must equal
``model.generate(do_sample=False, max_new_tokens=N)`` exactly.

Each builder seeds torch itself. Prompts are batch 1 without a mask, or batch 4 with padding (left-padded
for causal LMs, as batched generation with them needs; right-padded for encoder-decoders). ``early_eos``
picks an EOS id that row 0 emits within its first three new tokens, so decoding stops early in some rows
and not in others (random weights rarely emit the config's own EOS)."""
from __future__ import annotations

import torch

import fxopt
from fxopt.ir import loops

VOCAB, NEW = 100, 8


def _seeded(fn):
    def build():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return fn().eval()
    build.__name__ = fn.__name__
    return build


@_seeded
def gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_inner=64, n_positions=64,
                                      bos_token_id=0, eos_token_id=0))


@_seeded
def llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                        num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
                                        bos_token_id=1, eos_token_id=2))


@_seeded
def t5():
    from transformers import T5Config, T5ForConditionalGeneration

    return T5ForConditionalGeneration(T5Config(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                               num_heads=4, relative_attention_num_buckets=8,
                                               relative_attention_max_distance=16, dropout_rate=0.0,
                                               decoder_start_token_id=0))


@_seeded
def bart():
    """BART keeps its config's forced_eos_token_id=2: the last position is forced to token 2."""
    from transformers import BartConfig, BartForConditionalGeneration

    return BartForConditionalGeneration(BartConfig(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2,
                                                   encoder_attention_heads=4, decoder_attention_heads=4,
                                                   encoder_ffn_dim=64, decoder_ffn_dim=64,
                                                   max_position_embeddings=64, dropout=0.0))


@_seeded
def whisper():
    """Whisper with suppress_tokens and begin_suppress_tokens (applied at every / the first position)."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    return WhisperForConditionalGeneration(WhisperConfig(
        vocab_size=VOCAB, num_mel_bins=16, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_source_positions=16,
        max_target_positions=32, dropout=0.0, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        decoder_start_token_id=3, begin_suppress_tokens=[5, 6], suppress_tokens=[7]))


BUILDERS = {f.__name__: f for f in (gpt2, llama, t5, bart, whisper)}


def prompt(name: str, batch: int) -> tuple:
    """The inputs: ``(input_ids,)`` at batch 1, ``(input_ids, attention_mask)`` with padding at batch 4
    (Whisper: ``(input_features,)``)."""
    g = torch.Generator().manual_seed(1)
    if name == "whisper":
        return (torch.randn(batch, 16, 32, generator=g),)
    ids = torch.randint(3, VOCAB, (batch, 6), generator=g)
    if batch == 1:
        return (ids,)
    mask = torch.ones(batch, 6, dtype=torch.long)
    if name in ("gpt2", "llama"):
        mask[1, :2] = 0          # left padding: batched generation with a causal LM
        mask[3, :1] = 0
    else:
        mask[1, -2:] = 0
    return ids, mask


def generate(model, inputs: tuple, **settings) -> torch.Tensor:
    """``model.generate(do_sample=False, max_new_tokens=NEW)`` on ``inputs``."""
    kwargs = {"attention_mask": inputs[1]} if len(inputs) > 1 else {}
    with torch.no_grad():
        return model.generate(inputs[0], do_sample=False, max_new_tokens=NEW, **kwargs, **settings)


def early_eos(name: str, model, inputs: tuple) -> dict:
    """Settings under which row 0 stops within three new tokens: ``{"eos_token_id", "pad_token_id"}``."""
    out = generate(model, inputs, eos_token_id=VOCAB - 1, pad_token_id=VOCAB - 2)   # (BART's own EOS comes first)
    start = 0 if name == "whisper" else (inputs[0].shape[1] if name in ("gpt2", "llama") else 1)
    eos = int(out[0, start + 2])
    return {"eos_token_id": eos, "pad_token_id": (eos + 1) % VOCAB}


def capture(model, inputs: tuple, settings: dict, **kwargs):
    """``fxopt.capture(model, inputs, decode=GenerationSpec(max_new_tokens=NEW, **settings))``."""
    return fxopt.capture(model, inputs, decode=fxopt.GenerationSpec(max_new_tokens=NEW, **settings), **kwargs)


def as_generate(program_or_settings, tokens, inputs: tuple) -> torch.Tensor:
    """fxopt's ``tokens`` in ``generate``'s form (the settings from a program or given)."""
    settings = program_or_settings
    if not isinstance(settings, dict):
        settings = loops.decode_region(program_or_settings)["generation"]
    tokens = tokens[0] if isinstance(tokens, (tuple, list)) else tokens
    return fxopt.as_generate(tokens, settings, inputs[0])
