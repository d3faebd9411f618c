"""Hugging Face greedy generation as a decode loop, with no change to the model.

``fxopt.capture(model, inputs, decode=GenerationSpec(max_new_tokens=N))`` wraps a transformers causal LM
(GPT-2, Llama, ...) or encoder-decoder (T5, BART, Whisper, ...) in a module that follows the decode-loop
protocol (docs/decode-loop.md) and captures that: every ``unroll`` variant then applies unchanged.

The wrapper does what ``model.generate(do_sample=False)`` does, call for call, so the tokens are the same:

- ``encode`` is generate's first forward: the whole prompt for a causal LM (position ids from the attention
  mask, as generate makes them), or the encoder plus the first decoder call on ``decoder_start_token_id``
  for an encoder-decoder. It emits the first token (the protocol's ``first_token_memory``) and returns the
  KV cache it filled;
- ``step`` is one later forward: the last token against the cache, which grows by one position per step
  (transformers' ``DynamicCache``, rebuilt from the state tensors on every call); the attention mask and
  position ids advance as generate advances them;
- the logits processors greedy generation applies by default (``suppress_tokens``,
  ``begin_suppress_tokens``, ``forced_bos_token_id``, ``forced_eos_token_id``, ``min_length``,
  ``min_new_tokens``) are applied in generate's order; a setting that changes greedy decoding in a way this
  loop does not reproduce (beam search, repetition penalties, bad words, ...) is refused in one line.

The program returns fxopt's token convention (``[batch, max_new_tokens]``, ``eos`` after a row's first EOS);
:func:`as_generate` turns that into exactly what ``generate`` returns (the prompt or the decoder start in
front, ``pad_token_id`` after EOS, cut where every row has finished).
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import torch

from fxopt.errors import InputError

__all__ = ["GenerationSpec", "as_generate", "generation_loop", "spec_from"]

# generation_config fields whose non-default values change greedy decoding in ways this loop does not
# reproduce: {field: the value that turns it off}
_UNSUPPORTED = {"num_beams": 1, "num_beam_groups": 1, "penalty_alpha": None, "repetition_penalty": 1.0,
                "encoder_repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "encoder_no_repeat_ngram_size": 0,
                "bad_words_ids": None, "sequence_bias": None, "exponential_decay_length_penalty": None,
                "guidance_scale": None, "force_words_ids": None, "constraints": None, "stop_strings": None,
                "forced_decoder_ids": None, "num_return_sequences": 1, "assistant_model": None,
                "prompt_lookup_num_tokens": None}


@dataclasses.dataclass(frozen=True)
class GenerationSpec:
    """What to decode: greedy generation of up to ``max_new_tokens`` tokens.

    Fields left None are read from the model's ``generation_config`` (as ``generate`` reads them):
    ``eos_token_id`` (one id; decoding of a row stops there), ``pad_token_id`` (what ``generate`` writes
    after a row's EOS; default the EOS id), ``decoder_start_token_id`` (encoder-decoders),
    ``min_new_tokens``. A plain dict with these keys works wherever a GenerationSpec does.
    """

    max_new_tokens: int
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    decoder_start_token_id: int | None = None
    min_new_tokens: int | None = None


def spec_from(value: Any) -> GenerationSpec:
    """A :class:`GenerationSpec` from a spec or a dict of its fields; InputError (one line) otherwise."""
    if isinstance(value, GenerationSpec):
        spec = value
    elif isinstance(value, dict):
        names = {f.name for f in dataclasses.fields(GenerationSpec)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise InputError(f"decode: unknown field {unknown[0]!r}; a GenerationSpec has {', '.join(sorted(names))}")
        if "max_new_tokens" not in value:
            raise InputError("decode: max_new_tokens is required (decode=GenerationSpec(max_new_tokens=N))")
        spec = GenerationSpec(**value)
    else:
        raise InputError(f"decode: expected a GenerationSpec or a dict, got {type(value).__name__}")
    if not isinstance(spec.max_new_tokens, int) or spec.max_new_tokens < 2:
        raise InputError(f"decode: max_new_tokens must be an int >= 2, got {spec.max_new_tokens!r} (the first "
                         "token comes from the prompt's forward, the rest from the decode loop)")
    return spec


# ------------------------------------------------------------------------------------------ settings
def _one_id(value: Any, field: str, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise InputError(f"{name}: {field}={list(value)} has {len(value)} ids; fxopt's decode loop stops on "
                             f"one id: pass decode=GenerationSpec(..., {field}=ID)")
        value = value[0]
    return int(value)


def _settings(model: torch.nn.Module, spec: GenerationSpec, name: str) -> dict:
    """The resolved generation settings (JSON-able) of ``model`` under ``spec``."""
    config = getattr(model, "config", None)
    gen = getattr(model, "generation_config", None)
    if config is None or gen is None or not callable(getattr(model, "get_output_embeddings", None)):
        raise InputError(f"{name}: decode=GenerationSpec needs a Hugging Face generation model (a causal LM or "
                         "an encoder-decoder with a generation_config); write the decode-loop protocol for "
                         "other models (docs/decode-loop.md)")
    for field, off in _UNSUPPORTED.items():
        value = getattr(gen, field, off)
        if value is not None and value != off and not (field == "num_return_sequences" and value in (None, 1)):
            raise InputError(f"{name}: generation_config.{field}={value!r} changes greedy decoding in a way "
                             f"fxopt's decode loop does not reproduce; set model.generation_config.{field} = "
                             f"{off!r} first")
    encdec = bool(getattr(config, "is_encoder_decoder", False))
    pick = lambda field: getattr(spec, field) if getattr(spec, field) is not None else getattr(gen, field, None)  # noqa: E731
    eos = _one_id(pick("eos_token_id"), "eos_token_id", name)
    pad = _one_id(pick("pad_token_id"), "pad_token_id", name)
    start = _one_id(pick("decoder_start_token_id"), "decoder_start_token_id", name) if encdec else None
    if encdec and start is None:
        start = _one_id(getattr(gen, "bos_token_id", None), "bos_token_id", name)
        if start is None:
            raise InputError(f"{name}: no decoder_start_token_id in generation_config; pass "
                             "decode=GenerationSpec(..., decoder_start_token_id=ID)")
    suppress = getattr(gen, "suppress_tokens", None)
    begin = getattr(gen, "begin_suppress_tokens", None)
    return {
        "encoder_decoder": encdec,
        # Whisper's own generate (WhisperGenerationMixin) returns the tokens after the decoder start only
        "returns_start": not (encdec and getattr(config, "model_type", "") == "whisper"),
        "max_new_tokens": spec.max_new_tokens, "eos_token_id": eos,
        "pad_token_id": eos if pad is None else pad, "decoder_start_token_id": start,
        "min_length": int(getattr(gen, "min_length", 0) or 0),
        "min_new_tokens": int(pick("min_new_tokens") or 0),
        "forced_bos_token_id": _one_id(getattr(gen, "forced_bos_token_id", None), "forced_bos_token_id", name),
        "forced_eos_token_id": _one_id(getattr(gen, "forced_eos_token_id", None), "forced_eos_token_id", name),
        "suppress_tokens": [int(t) for t in suppress] if suppress else [],
        "begin_suppress_tokens": [int(t) for t in begin] if begin else [],
    }


# ------------------------------------------------------------------------------------------ logits processors
class _Processors:
    """Generate's default greedy logits processors for one request shape, applied at an emission index
    (0 for the token ``encode`` emits; a ``[B]`` long tensor in ``step``)."""

    def __init__(self, settings: dict, input_len: int) -> None:
        s = settings
        self.eos = s["eos_token_id"]
        # generate's cur_len before emission e is input_len + e (the decoder start counts for encoder-decoders)
        self.input_len = input_len
        self.min_len = s["min_length"] if self.eos is not None else 0
        self.min_new = s["min_new_tokens"] if self.eos is not None else 0
        self.forced_bos = s["forced_bos_token_id"]
        self.forced_eos = s["forced_eos_token_id"]
        self.max_length = input_len + s["max_new_tokens"]
        self.suppress = s["suppress_tokens"]
        self.begin = s["begin_suppress_tokens"]
        begin_index = input_len if (input_len > 1 or self.forced_bos is None) else input_len + 1
        self.begin_e = begin_index - input_len

    def needs_index(self) -> bool:
        """True when a later step's processing depends on its emission index (the step then counts)."""
        return bool(self.min_len > self.input_len + 1 or self.min_new > 1 or self.forced_eos is not None
                    or (self.begin and self.begin_e > 0))

    def __call__(self, logits: torch.Tensor, e: Any) -> torch.Tensor:
        """``logits [B, V]`` processed for emission index ``e`` (int or ``[B]`` tensor); returns new logits."""
        neg = float("-inf")
        cur = self.input_len + e
        vocab = torch.arange(logits.shape[-1], device=logits.device)

        def where(cond, value_mask, fill):
            # cond: python bool or [B] bool; value_mask: [V] bool of the tokens set to fill
            if isinstance(cond, bool):
                return logits.masked_fill(value_mask, fill) if cond else logits
            return torch.where(cond[:, None] & value_mask[None, :], torch.full_like(logits, fill), logits)

        if self.min_len > 0:                       # MinLengthLogitsProcessor: no EOS while cur_len < min_length
            logits = where(cur < self.min_len, vocab == self.eos, neg)
        if self.min_new > 0:                       # MinNewTokensLengthLogitsProcessor
            logits = where(e < self.min_new, vocab == self.eos, neg)
        if self.forced_bos is not None:            # ForcedBOSTokenLogitsProcessor: cur_len == 1 -> only that id
            logits = where(cur == 1, vocab != self.forced_bos, neg)
            logits = where(cur == 1, vocab == self.forced_bos, 0.0)
        if self.forced_eos is not None:            # ForcedEOSTokenLogitsProcessor: last position -> only EOS
            last = cur == self.max_length - 1
            logits = where(last, vocab != self.forced_eos, neg)
            logits = where(last, vocab == self.forced_eos, 0.0)
        if self.suppress:                          # SuppressTokensLogitsProcessor: never these ids
            logits = logits.masked_fill(torch.isin(vocab, torch.tensor(self.suppress)), neg)
        if self.begin:                             # SuppressTokensAtBeginLogitsProcessor
            logits = where(e == self.begin_e, torch.isin(vocab, torch.tensor(self.begin)), neg)
        return logits


# ------------------------------------------------------------------------------------------ the loops
def _cache_tensors(cache: Any) -> list[torch.Tensor]:
    """The flat ``[k0, v0, k1, v1, ...]`` of a transformers DynamicCache."""
    out = []
    for layer in cache.layers:
        out += [layer.keys, layer.values]
    return out


def _dynamic_cache(flat: list, config: Any):
    from transformers import DynamicCache   # local: transformers is optional and slow to import

    return DynamicCache([(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)], config=config)


def _accepts(model: torch.nn.Module, name: str) -> bool:
    return name in inspect.signature(model.forward).parameters


class _Generation(torch.nn.Module):
    """Shared parts of the protocol wrappers: the model, its settings and the protocol attributes."""

    def __init__(self, model: torch.nn.Module, settings: dict, input_len: int) -> None:
        super().__init__()
        self.model = model
        self.settings = settings
        eos = settings["eos_token_id"]
        self.max_len = settings["max_new_tokens"] - 1     # decode steps after the token encode emits
        self.bos_id = 0                                   # not fed: step 0 gets encode's token
        self.eos_id = -1 if eos is None else int(eos)     # no EOS: never stops early
        self.first_token_memory = 0
        self.processors = _Processors(settings, input_len)
        self.counted = self.processors.needs_index()

    def _logits(self, out: Any) -> torch.Tensor:
        return out.logits[:, -1, :].to(dtype=torch.float32)

    def _first(self, out: Any) -> torch.Tensor:
        return self.processors(self._logits(out), 0).argmax(-1)

    def _counter(self, token: torch.Tensor) -> tuple:
        return (torch.ones_like(token),) if self.counted else ()

    def _next(self, out: Any, count: tuple) -> tuple[torch.Tensor, tuple]:
        """The processed logits of a step's forward and the advanced counter (when the step counts)."""
        logits = self._logits(out)
        if self.counted:
            return self.processors(logits, count[0]), (count[0] + 1,)
        return self.processors(logits, 1), ()     # every later emission is processed as emission 1 is


class _CausalLM(_Generation):
    """A causal LM's greedy generation in the decode-loop protocol (memory: token, state..., see module doc).

    State: ``(*counter, position [B, 1], *mask [B, L], k0, v0, ...)``; the mask (when the prompt has one)
    and every KV tensor grow by one position per step."""

    def __init__(self, model, settings, input_len, has_mask: bool) -> None:
        super().__init__(model, settings, input_len)
        self.has_mask = has_mask
        self.positions = _accepts(model, "position_ids")

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """generate's first forward over the prompt; returns ``(token, *state)``."""
        from transformers import DynamicCache   # local: transformers is optional and slow to import

        if attention_mask is not None:
            position = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
        else:
            position = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0).expand(
                input_ids.shape[0], -1)
        kwargs = {"position_ids": position} if self.positions else {}
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, cache=DynamicCache(
            config=self.model.config), use_cache=True, **kwargs)
        token = self._first(out)
        mask = (torch.cat([attention_mask, attention_mask.new_ones(attention_mask.shape[0], 1)], 1),) \
            if attention_mask is not None else ()
        return (token, *self._counter(token), position[:, -1:] + 1, *mask, *_cache_tensors(out.cache))

    def init_state(self, memory: tuple) -> tuple:
        """The state before step 0: everything encode returned after the token."""
        return tuple(memory[1:])

    def step(self, token: torch.Tensor, state: tuple, memory: tuple):
        """One forward of ``token`` against the cache; returns ``(logits [B, V], state)``."""
        n = 1 if self.counted else 0
        count, position = state[:n], state[n]
        mask = state[n + 1] if self.has_mask else None
        flat = list(state[n + 1 + self.has_mask:])
        kwargs = {"position_ids": position} if self.positions else {}
        out = self.model(input_ids=token[:, None], attention_mask=mask, cache=_dynamic_cache(flat, self.model.config),
                         use_cache=True, **kwargs)
        logits, count = self._next(out, count)
        grown = (torch.cat([mask, mask.new_ones(mask.shape[0], 1)], 1),) if mask is not None else ()
        return logits, (*count, position + 1, *grown, *_cache_tensors(out.cache))


class _EncoderDecoder(_Generation):
    """An encoder-decoder's greedy generation in the decode-loop protocol.

    Memory: ``(token, encoder states, *encoder mask, *initial state)``; state: ``(*counter, self k0, v0, ...,
    cross k0, v0, ...)``: the self-attention cache grows by one position per step, the cross-attention cache
    (filled by encode's decoder call) keeps its shape."""

    def __init__(self, model, settings, has_mask: bool) -> None:
        super().__init__(model, settings, 1)
        self.has_mask = has_mask
        self.input_name = getattr(model, "main_input_name", "input_ids")

    def _call(self, token_column, encoder_states, mask, self_flat, cross_flat):
        from transformers import DynamicCache, EncoderDecoderCache   # local: transformers is optional and slow to import
        from transformers.modeling_outputs import BaseModelOutput   # local: transformers is optional and slow to import

        config = self.model.config
        cache = EncoderDecoderCache(_dynamic_cache(self_flat, config) if self_flat else DynamicCache(config=config),
                                    _dynamic_cache(cross_flat, config) if cross_flat else DynamicCache(config=config))
        out = self.model(encoder_outputs=BaseModelOutput(last_hidden_state=encoder_states), attention_mask=mask,
                         decoder_input_ids=token_column, cache=cache, use_cache=True)
        return out, _cache_tensors(out.cache.self_attention_cache), _cache_tensors(out.cache.cross_attention_cache)

    def encode(self, inputs: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """The encoder and the first decoder call on the decoder start token; returns memory."""
        kwargs = {self.input_name: inputs}
        if attention_mask is not None:
            kwargs["attention_mask"] = attention_mask
        states = self.model.get_encoder()(**kwargs, return_dict=True).last_hidden_state
        start = torch.full((inputs.shape[0], 1), self.settings["decoder_start_token_id"], dtype=torch.long,
                           device=inputs.device)
        out, self_flat, cross_flat = self._call(start, states, attention_mask, [], [])
        token = self._first(out)
        mask = (attention_mask,) if attention_mask is not None else ()
        return (token, states, *mask, *self._counter(token), *self_flat, *cross_flat)

    def init_state(self, memory: tuple) -> tuple:
        """The state before step 0: the counter and the caches encode filled."""
        return tuple(memory[2 + self.has_mask:])

    def step(self, token: torch.Tensor, state: tuple, memory: tuple):
        """One decoder call of ``token`` against the caches; returns ``(logits [B, V], state)``."""
        states, mask = memory[1], (memory[2] if self.has_mask else None)
        n = 1 if self.counted else 0
        count, flat = state[:n], list(state[n:])
        half = len(flat) // 2
        out, self_flat, cross_flat = self._call(token[:, None], states, mask, flat[:half], flat[half:])
        logits, count = self._next(out, count)
        return logits, (*count, *self_flat, *cross_flat)


def generation_loop(model: torch.nn.Module, inputs: tuple, spec: Any, name: str = "model") -> torch.nn.Module:
    """A decode-loop protocol module running ``model``'s greedy generation under ``spec`` (a
    :class:`GenerationSpec` or dict) for inputs like ``inputs`` (``(input_ids[, attention_mask])``; an
    encoder-decoder's main input in place of ``input_ids``). The module holds ``model`` (not a copy) and
    ``settings`` (the resolved, JSON-able generation settings). Raises InputError (one line) for a model
    that is not a transformers generation model, or settings the loop cannot reproduce."""
    spec = spec_from(spec)
    if not 1 <= len(inputs) <= 2 or not all(isinstance(x, torch.Tensor) for x in inputs):
        raise InputError(f"{name}: decode=GenerationSpec takes inputs (input_ids,) or (input_ids, attention_mask) "
                         f"as tensors; got {len(inputs)} inputs")
    settings = _settings(model, spec, name)
    has_mask = len(inputs) == 2
    if settings["encoder_decoder"]:
        return _EncoderDecoder(model, settings, has_mask)
    if inputs[0].dim() != 2 or inputs[0].dtype != torch.long:
        raise InputError(f"{name}: a causal LM's input_ids must be a LongTensor [batch, length], got "
                         f"{str(inputs[0].dtype).replace('torch.', '')}{list(inputs[0].shape)}")
    return _CausalLM(model, settings, int(inputs[0].shape[1]), has_mask)


# ------------------------------------------------------------------------------------------ output
def as_generate(tokens: torch.Tensor, settings: dict, input_ids: torch.Tensor | None = None) -> torch.Tensor:
    """What ``model.generate(do_sample=False)`` returns, from fxopt's tokens ``[B, max_new_tokens]``.

    Takes the program's output, the resolved ``settings`` (``program.regions[0]["generation"]``, or a
    loaded artifact's ``plan["generation"]``) and, for a causal LM, the prompt ``input_ids``; returns the
    prompt (or the decoder start token; Whisper's generate leaves it out) followed by the new tokens,
    ``pad_token_id`` after each row's EOS, cut after the first step at which every row has finished."""
    eos, pad = settings["eos_token_id"], settings["pad_token_id"]
    new = tokens
    if eos is not None:
        is_eos = tokens == eos
        after = (is_eos.long().cumsum(1) - is_eos.long()) > 0     # strictly after the row's first EOS
        new = tokens.masked_fill(after, pad if pad is not None else eos)
        done = (is_eos.long().cumsum(1) > 0).all(0).nonzero()
        if done.numel():
            new = new[:, : int(done[0]) + 1]
    if settings["encoder_decoder"]:
        if not settings.get("returns_start", True):
            return _whisper_rows(new, eos, pad)
        head = torch.full((tokens.shape[0], 1), settings["decoder_start_token_id"], dtype=torch.long)
    else:
        if input_ids is None:
            raise InputError("as_generate: a causal LM's output starts with its prompt; pass input_ids")
        head = input_ids
    return torch.cat([head, new], 1)


def _whisper_rows(tokens: torch.Tensor, eos: int | None, pad: int | None) -> torch.Tensor:
    """What Whisper's generate makes of its new tokens ``[B, n]``: per row, as many trailing tokens cut as the
    row holds pad tokens (one fewer when pad is EOS) when it ends in pad, then a final EOS cut; the rows
    right-padded with pad to the longest (WhisperGenerationMixin's short-form post-processing)."""
    rows = []
    for row in tokens:
        if pad is not None and row.numel() and int(row[-1]) == pad:
            cut = int((row == pad).sum()) - (1 if pad == eos else 0)
            row = row[: row.numel() - cut] if cut else row
        if eos is not None and row.numel() and int(row[-1]) == eos:
            row = row[:-1]
        rows.append(row)
    width = max((r.numel() for r in rows), default=0)
    fill = pad if pad is not None else 0
    return torch.stack([torch.cat([r, r.new_full((width - r.numel(),), fill)]) for r in rows]) if rows else tokens
