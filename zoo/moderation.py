"""Multi-modal content-moderation model: a ViT image tower, three text towers and a multi-task head.

Inputs are ``(image, title_ids, description_ids, ocr_ids)``: a float image [B, 3, S, S] and three
right-padded LongTensor token-id tensors [B, T_*] (pad id 0). The output is a tuple of task logits
``(nsfw [B, 3], violence [B, 2], spam [B, 2], hate [B, 2])``.

The title and description towers are *the same pretrained text encoder loaded twice*: two module
instances whose parameters are distinct ``Parameter`` objects holding equal values (the description
tower's state_dict is copied from the title tower). The OCR-text tower has its own weights.

Default: image 224x224 (16x16 patches, 6 layers, d 256), text towers with 20 000-token vocab, 4 layers,
d 256 (~30 M parameters, ~120 MB). Small: 32x32 image, 8x8 patches, d 16, one layer per tower.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fxopt.zoo._common import generator, seeded, token_ids
from fxopt.zoo._layers import TransformerEncoderLayer, padding_mask

#: Task name -> number of classes, in output order.
TASKS = {"nsfw": 3, "violence": 2, "spam": 2, "hate": 2}


@dataclass(frozen=True)
class ModerationConfig:
    """Hyper-parameters of :class:`ModerationModel` (tower widths/depths, vocab, sequence lengths, batch)."""

    batch: int = 2
    image_size: int = 224
    patch: int = 16
    image_dim: int = 256
    image_layers: int = 6
    vocab: int = 20_000
    text_dim: int = 256
    text_layers: int = 4
    heads: int = 4
    embed_dim: int = 256
    title_len: int = 32
    description_len: int = 128
    ocr_len: int = 64
    head_hidden: tuple[int, ...] = (512, 256)


DEFAULT = ModerationConfig()
SMALL = ModerationConfig(batch=2, image_size=32, patch=8, image_dim=16, image_layers=1, vocab=64,
                         text_dim=16, text_layers=1, heads=2, embed_dim=16, title_len=6,
                         description_len=10, ocr_len=8, head_hidden=(32,))


class ImageTower(nn.Module):
    """ViT-style image encoder: conv patch embedding, [CLS] token, learned positions, transformer layers.

    Takes images [B, 3, S, S]; returns the projected [CLS] embedding [B, embed_dim].
    """

    def __init__(self, c: ModerationConfig) -> None:
        super().__init__()
        num_patches = (c.image_size // c.patch) ** 2
        self.patch_embed = nn.Conv2d(3, c.image_dim, c.patch, stride=c.patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, c.image_dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, num_patches + 1, c.image_dim) * 0.02)
        self.layers = nn.ModuleList(TransformerEncoderLayer(c.image_dim, c.heads, 4 * c.image_dim)
                                    for _ in range(c.image_layers))
        self.norm = nn.LayerNorm(c.image_dim)
        self.proj = nn.Linear(c.image_dim, c.embed_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Takes images [B, 3, S, S]; returns [B, embed_dim]."""
        x = self.patch_embed(images).flatten(2).transpose(1, 2)           # [B, N, D]
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        for layer in self.layers:
            x = layer(x)
        return self.proj(self.norm(x[:, 0]))


class TextTower(nn.Module):
    """BERT-style text encoder: token + learned position embeddings, padded self-attention layers,
    masked mean pooling, projection.

    Takes token ids [B, T] (0 = padding, T <= max_len); returns [B, embed_dim].
    """

    def __init__(self, c: ModerationConfig, max_len: int) -> None:
        super().__init__()
        self.token_embed = nn.Embedding(c.vocab, c.text_dim)
        self.pos_embed = nn.Embedding(max_len, c.text_dim)
        self.embed_norm = nn.LayerNorm(c.text_dim)
        self.layers = nn.ModuleList(TransformerEncoderLayer(c.text_dim, c.heads, 4 * c.text_dim)
                                    for _ in range(c.text_layers))
        self.norm = nn.LayerNorm(c.text_dim)
        self.proj = nn.Linear(c.text_dim, c.embed_dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Takes ids [B, T]; returns the mean of non-padding token states, projected: [B, embed_dim]."""
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.embed_norm(self.token_embed(ids) + self.pos_embed(positions))
        mask = padding_mask(ids)
        for layer in self.layers:
            x = layer(x, mask)
        keep = (ids != 0).unsqueeze(-1).to(x.dtype)                        # [B, T, 1]
        pooled = (self.norm(x) * keep).sum(dim=1) / keep.sum(dim=1).clamp_min(1.0)
        return self.proj(pooled)


class ModerationModel(nn.Module):
    """Multi-modal moderation classifier (see module docstring).

    ``forward(image, title_ids, description_ids, ocr_ids)`` returns a tuple of logits, one tensor
    [B, classes] per task in :data:`TASKS` order.
    """

    def __init__(self, config: ModerationConfig = DEFAULT, input_seed: int = 0) -> None:
        super().__init__()
        c = self.config = config
        self.input_seed = input_seed
        self.image_tower = ImageTower(c)
        text_len = max(c.title_len, c.description_len)
        self.title_tower = TextTower(c, text_len)
        self.description_tower = TextTower(c, text_len)
        self.ocr_tower = TextTower(c, c.ocr_len)
        dims = [4 * c.embed_dim, *c.head_hidden]
        trunk: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            trunk += [nn.Linear(a, b), nn.LayerNorm(b), nn.GELU()]
        self.trunk = nn.Sequential(*trunk)
        self.task_heads = nn.ModuleDict({name: nn.Linear(dims[-1], n) for name, n in TASKS.items()})

    def forward(self, image: torch.Tensor, title_ids: torch.Tensor, description_ids: torch.Tensor,
                ocr_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Takes the image and three id tensors; returns ``(nsfw, violence, spam, hate)`` logits."""
        fused = torch.cat([self.image_tower(image), self.title_tower(title_ids),
                           self.description_tower(description_ids), self.ocr_tower(ocr_ids)], dim=1)
        h = self.trunk(fused)
        return tuple(head(h) for head in self.task_heads.values())

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        """Returns ``(image [B,3,S,S], title_ids [B,Tt], description_ids [B,Td], ocr_ids [B,To])``."""
        c = self.config
        gen = generator(self.input_seed)
        image = torch.randn(c.batch, 3, c.image_size, c.image_size, generator=gen)
        return (image,
                token_ids(gen, c.batch, c.title_len, c.vocab),
                token_ids(gen, c.batch, c.description_len, c.vocab),
                token_ids(gen, c.batch, c.ocr_len, c.vocab))


def build(small: bool = False, seed: int = 0) -> ModerationModel:
    """Returns a ModerationModel in eval mode with weights drawn from ``seed`` (small config if ``small``).

    The description tower is loaded from the title tower's state_dict, so the two hold equal values in
    distinct Parameter objects.
    """
    with seeded(seed):
        model = ModerationModel(SMALL if small else DEFAULT, input_seed=seed)
        model.description_tower.load_state_dict(model.title_tower.state_dict())
    return model.eval()


def moderation() -> ModerationModel:
    """Zero-argument factory for ``file.py:attr`` specs: the default-size moderation model (seed 0)."""
    return build()
