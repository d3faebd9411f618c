"""Text-line OCR: conformer encoder over a grayscale line image + autoregressive transformer decoder.

Decode-loop protocol (what a decode-loop compiler drives step by step)::

    memory = model.encode(images)            # tuple: cross-attention (k, v) per decoder layer
    state = model.init_state(memory)         # tuple: self-attention (k, v) caches per decoder layer
    token = full([B], model.bos_id)
    for t in range(model.max_len):
        logits, state = model.step(token, state, memory)   # logits [B, vocab]
        token = logits.argmax(-1)                # forward() also applies the finished mask

* ``memory`` is ``(cross_k_0, cross_v_0, cross_k_1, cross_v_1, ...)``, each [B, H, T_enc, Dh]: the
  encoder output already projected to every decoder layer's cross-attention keys and values, so
  :meth:`OCRModel.step` never re-projects the encoder output.
* ``state`` is ``(self_k_0, self_v_0, self_k_1, self_v_1, ...)``, each [B, H, t, Dh]. The caches grow
  by concatenation: :meth:`OCRModel.init_state` returns *empty* caches (t = 0, shape [B, H, 0, Dh]; this
  exports fine), and before step t (0-based) they hold t positions. The decoder's position index is
  the cache length, so no step counter is carried. ``step`` alone also exports with a dynamic cache
  length (export it at t >= 2 with ``Dim(min=0, max=max_len - 1)`` on dim 2 of every cache).
* :meth:`OCRModel.forward` is greedy decoding over exactly ``max_len`` steps with no data-dependent
  break: a ``finished`` mask makes every row emit ``eos_id`` after its first EOS. It returns the
  emitted tokens [B, max_len] (BOS excluded), so ``torch.export`` traces the whole loop out.
* Token ids: 0 = pad, 1 = BOS (``bos_id``), 2 = EOS (``eos_id``); the rest are characters.

Default: input [2, 1, 32, 320], d_model 256, 6 conformer blocks, 3 decoder layers, vocab 5000,
max_len 75 (~15 M parameters, ~60 MB). Small: input [2, 1, 16, 32], d_model 16, 2 blocks, 2 layers, vocab 12,
max_len 5.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from fxopt.zoo._common import generator, randomize_batchnorm, seeded
from fxopt.zoo._layers import FeedForward, MultiHeadAttention, attend, sinusoidal_table


@dataclass(frozen=True)
class OCRConfig:
    """Hyper-parameters of :class:`OCRModel` (image size, widths, depths, vocab, decode length, batch)."""

    batch: int = 2
    height: int = 32
    width: int = 320
    stem_channels: int = 64
    d_model: int = 256
    heads: int = 4
    ff_mult: int = 4
    encoder_blocks: int = 6
    conv_kernel: int = 15
    decoder_layers: int = 3
    vocab: int = 5000
    max_len: int = 75
    max_frames: int = 512


DEFAULT = OCRConfig()
SMALL = OCRConfig(batch=2, height=16, width=32, stem_channels=4, d_model=16, heads=2, ff_mult=2,
                  encoder_blocks=2, conv_kernel=5, decoder_layers=2, vocab=12, max_len=5, max_frames=64)

PAD_ID, BOS_ID, EOS_ID = 0, 1, 2


class ConvSubsampling(nn.Module):
    """Two stride-2 3x3 convs (ReLU) then a linear map of each column to d_model.

    Takes images [B, 1, H, W]; returns frames [B, W/4, d_model] (one frame per 4 pixel columns).
    """

    def __init__(self, c: OCRConfig) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, c.stem_channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(c.stem_channels, c.stem_channels, 3, stride=2, padding=1), nn.ReLU())
        self.out = nn.Linear(c.stem_channels * math.ceil(c.height / 4), c.d_model)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Takes [B, 1, H, W]; returns [B, W/4, d_model]."""
        x = self.conv(images)                                   # [B, C, H/4, W/4]
        b, ch, h, w = x.shape
        return self.out(x.permute(0, 3, 1, 2).reshape(b, w, ch * h))


class ConvolutionModule(nn.Module):
    """Conformer convolution module: LN, pointwise conv (2x) + GLU, depthwise conv1d, BatchNorm, SiLU,
    pointwise conv. Takes [B, T, D]; returns the residual branch [B, T, D].
    """

    def __init__(self, d_model: int, kernel: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.pointwise1 = nn.Conv1d(d_model, 2 * d_model, 1)
        self.glu = nn.GLU(dim=1)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel, padding=kernel // 2, groups=d_model)
        self.bn = nn.BatchNorm1d(d_model)
        self.act = nn.SiLU()
        self.pointwise2 = nn.Conv1d(d_model, d_model, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Takes [B, T, D]; returns [B, T, D]."""
        x = self.glu(self.pointwise1(self.norm(x).transpose(1, 2)))
        x = self.act(self.bn(self.depthwise(x)))
        return self.pointwise2(x).transpose(1, 2)


class ConformerBlock(nn.Module):
    """Conformer block: x + FFN/2, + MHSA, + conv module, + FFN/2, then LayerNorm. [B, T, D] -> [B, T, D]."""

    def __init__(self, c: OCRConfig) -> None:
        super().__init__()
        d = c.d_model
        self.ff1_norm = nn.LayerNorm(d)
        self.ff1 = FeedForward(d, c.ff_mult * d, nn.SiLU)
        self.attn_norm = nn.LayerNorm(d)
        self.attn = MultiHeadAttention(d, c.heads)
        self.conv = ConvolutionModule(d, c.conv_kernel)
        self.ff2_norm = nn.LayerNorm(d)
        self.ff2 = FeedForward(d, c.ff_mult * d, nn.SiLU)
        self.out_norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Takes [B, T, D]; returns [B, T, D]."""
        x = x + 0.5 * self.ff1(self.ff1_norm(x))
        x = x + self.attn(self.attn_norm(x))
        x = x + self.conv(x)
        x = x + 0.5 * self.ff2(self.ff2_norm(x))
        return self.out_norm(x)


class DecoderLayer(nn.Module):
    """Pre-LN transformer decoder layer for one decode step with a growing self-attention cache.

    ``forward(x, k_cache, v_cache, cross_k, cross_v)`` takes the current token state x [B, 1, D],
    caches [B, H, t, Dh] and cross keys/values [B, H, T_enc, Dh]; returns ``(x, k_cache, v_cache)``
    with the caches grown to t + 1 positions.
    """

    def __init__(self, c: OCRConfig) -> None:
        super().__init__()
        d = c.d_model
        self.self_norm = nn.LayerNorm(d)
        self.self_attn = MultiHeadAttention(d, c.heads)
        self.cross_norm = nn.LayerNorm(d)
        self.cross_attn = MultiHeadAttention(d, c.heads)
        self.ff_norm = nn.LayerNorm(d)
        self.ff = FeedForward(d, c.ff_mult * d, nn.GELU)

    def cross_kv(self, enc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Takes encoder output [B, T, D]; returns this layer's cross-attention (k, v), each [B, H, T, Dh]."""
        attn = self.cross_attn
        return attn.split(attn.k_proj(enc)), attn.split(attn.v_proj(enc))

    def forward(self, x: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                cross_k: torch.Tensor, cross_v: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step (see class docstring); returns ``(x [B,1,D], k_cache, v_cache)``."""
        sa = self.self_attn
        h = self.self_norm(x)
        k_cache = torch.cat([k_cache, sa.split(sa.k_proj(h))], dim=2)
        v_cache = torch.cat([v_cache, sa.split(sa.v_proj(h))], dim=2)
        x = x + sa.out_proj(sa.merge(attend(sa.split(sa.q_proj(h)), k_cache, v_cache)))
        ca = self.cross_attn
        q = ca.split(ca.q_proj(self.cross_norm(x)))
        x = x + ca.out_proj(ca.merge(attend(q, cross_k, cross_v)))
        x = x + self.ff(self.ff_norm(x))
        return x, k_cache, v_cache


class OCRModel(nn.Module):
    """Conformer-encoder / transformer-decoder OCR model following the decode-loop protocol.

    ``forward(images)`` takes grayscale text-line images [B, 1, H, W] and returns greedy-decoded token
    ids [B, max_len] (LongTensor, ``eos_id`` after the first EOS). See the module docstring for
    :meth:`encode`, :meth:`init_state` and :meth:`step`.
    """

    def __init__(self, config: OCRConfig = DEFAULT, input_seed: int = 0) -> None:
        super().__init__()
        c = self.config = config
        self.input_seed = input_seed
        self.max_len, self.bos_id, self.eos_id = c.max_len, BOS_ID, EOS_ID
        self.stem = ConvSubsampling(c)
        self.blocks = nn.ModuleList(ConformerBlock(c) for _ in range(c.encoder_blocks))
        self.token_embed = nn.Embedding(c.vocab, c.d_model)
        self.decoder = nn.ModuleList(DecoderLayer(c) for _ in range(c.decoder_layers))
        self.final_norm = nn.LayerNorm(c.d_model)
        self.lm_head = nn.Linear(c.d_model, c.vocab)
        self.register_buffer("enc_positions", sinusoidal_table(c.max_frames, c.d_model), persistent=False)
        self.register_buffer("dec_positions", sinusoidal_table(c.max_len, c.d_model), persistent=False)

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Takes images [B, 1, H, W]; returns memory: per decoder layer (cross_k, cross_v) [B, H, T, Dh]."""
        x = self.stem(images) * math.sqrt(self.config.d_model)   # ESPnet-style x-scale before positions
        x = x + self.enc_positions[: x.shape[1]]
        for block in self.blocks:
            x = block(x)
        return tuple(t for layer in self.decoder for t in layer.cross_kv(x))

    def init_state(self, memory: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """Takes memory; returns empty self-attention caches (k, v) per decoder layer, each [B, H, 0, Dh]."""
        b, h, _, dh = memory[0].shape
        return tuple(memory[0].new_zeros(b, h, 0, dh) for _ in range(2 * len(self.decoder)))

    def step(self, token: torch.Tensor, state: tuple[torch.Tensor, ...],
             memory: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Takes the previous token [B] (long), caches of t positions and memory; returns
        ``(logits [B, vocab], caches of t + 1 positions)``.
        """
        t = state[0].shape[2]
        x = (self.token_embed(token) * math.sqrt(self.config.d_model) + self.dec_positions[t]).unsqueeze(1)
        new_state = []
        for i, layer in enumerate(self.decoder):
            x, k, v = layer(x, state[2 * i], state[2 * i + 1], memory[2 * i], memory[2 * i + 1])
            new_state += [k, v]
        return self.lm_head(self.final_norm(x[:, 0])), tuple(new_state)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Takes images [B, 1, H, W]; returns greedy token ids [B, max_len] (eos_id after the first EOS)."""
        memory = self.encode(images)
        state = self.init_state(memory)
        token = torch.full((images.shape[0],), self.bos_id, dtype=torch.long, device=images.device)
        finished = torch.zeros(images.shape[0], dtype=torch.bool, device=images.device)
        eos = torch.full_like(token, self.eos_id)
        outputs = []
        for _ in range(self.max_len):
            logits, state = self.step(token, state, memory)
            token = torch.where(finished, eos, logits.argmax(dim=-1))
            finished = finished | (token == self.eos_id)
            outputs.append(token)
        return torch.stack(outputs, dim=1)

    def example_inputs(self) -> tuple[torch.Tensor]:
        """Returns ``(images,)``: synthetic text lines [batch, 1, height, width] in [0, 1].

        Light noisy background with dark random "glyph" strokes in character cells of width height/2;
        each row has its own text length (row 0 is full), so rows decode differently.
        """
        c = self.config
        gen = generator(self.input_seed)
        cell = max(c.height // 2, 1)
        slots = c.width // cell
        lengths = torch.randint(1, slots + 1, (c.batch, 1, 1, 1), generator=gen)
        lengths[0] = slots
        cols = torch.arange(c.width).view(1, 1, 1, -1)
        rows = torch.arange(c.height).view(1, 1, -1, 1)
        in_text = (cols < lengths * cell) & (rows >= c.height // 4) & (rows < c.height - c.height // 4)
        ink = (torch.rand(c.batch, 1, c.height, c.width, generator=gen) < 0.35) & in_text
        noise = 0.05 * torch.randn(c.batch, 1, c.height, c.width, generator=gen)
        return ((0.9 - 0.8 * ink.float() + noise).clamp(0.0, 1.0),)


class OCREncoder(nn.Module):
    """The OCR model's encoder alone (conv subsampling + conformer blocks): ``forward(images)`` is
    ``model.encode(images)``. A static graph without the decode loop, for backends and tests that want the
    encoder on its own (the whole model needs ``unroll{mode=full}`` outside the reference backend)."""

    def __init__(self, model: OCRModel):
        """``model``: the OCRModel whose encoder (and weights) this module shares."""
        super().__init__()
        self.ocr = model

    def forward(self, images: torch.Tensor):
        """The encoder memory for ``images``, exactly what the decode loop attends over."""
        return self.ocr.encode(images)


def build(small: bool = False, seed: int = 0) -> OCRModel:
    """Returns an OCRModel in eval mode with weights drawn from ``seed`` (small config if ``small``)."""
    with seeded(seed):
        model = OCRModel(SMALL if small else DEFAULT, input_seed=seed)
        # Transformer-style embedding init (std d^-1/2, scaled back up by sqrt(d) in step) so the
        # encoder's cross-attention signal is not swamped by the token embedding.
        nn.init.normal_(model.token_embed.weight, std=model.config.d_model ** -0.5)
        randomize_batchnorm(model)
    return model.eval()


def ocr() -> OCRModel:
    """Zero-argument factory for ``file.py:attr`` specs: the default-size OCR model (seed 0)."""
    return build()
