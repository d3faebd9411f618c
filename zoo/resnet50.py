"""ResNet-50 image classifier (bottleneck blocks [3, 4, 6, 3]), written out in plain torch.

Default: base width 64, 1000 classes, input [2, 3, 224, 224] (~25.6 M parameters).
Small: the same 50-layer structure with base width 8, 10 classes and a [2, 3, 32, 32] input.
BatchNorm statistics are calibrated on one random batch so eval-mode activations stay well scaled.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fxopt.zoo._common import calibrate_batchnorm, generator, randomize_batchnorm, seeded


@dataclass(frozen=True)
class ResNetConfig:
    """Hyper-parameters of :class:`ResNet50` (base width, classes, example batch and image size)."""

    width: int = 64
    num_classes: int = 1000
    batch: int = 2
    image_size: int = 224


DEFAULT = ResNetConfig()
SMALL = ResNetConfig(width=8, num_classes=10, batch=2, image_size=32)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (carries the stride) -> 1x1 expand (x4), each with BN; residual add then ReLU.

    Takes [B, in_ch, H, W]; returns [B, 4*width, H/stride, W/stride].
    """

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Takes [B, C, H, W]; returns the block output (see class docstring)."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50(nn.Module):
    """ResNet-50: 7x7/2 stem + maxpool, four bottleneck stages [3, 4, 6, 3], global average pool, fc.

    ``forward(images)`` takes float [B, 3, S, S] and returns class logits [B, num_classes].
    """

    def __init__(self, config: ResNetConfig = DEFAULT, input_seed: int = 0) -> None:
        super().__init__()
        self.config = config
        self.input_seed = input_seed
        w = config.width
        self.conv1 = nn.Conv2d(3, w, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_ch = w
        stages = []
        for i, (blocks, stride) in enumerate(zip([3, 4, 6, 3], [1, 2, 2, 2])):
            width = w * 2 ** i
            layers = [Bottleneck(in_ch, width, stride)]
            in_ch = width * Bottleneck.expansion
            layers += [Bottleneck(in_ch, width) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, config.num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Takes images [B, 3, S, S]; returns logits [B, num_classes]."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def example_inputs(self) -> tuple[torch.Tensor]:
        """Returns ``(images,)``: a normalised random image batch [batch, 3, image_size, image_size]."""
        c = self.config
        return (torch.randn(c.batch, 3, c.image_size, c.image_size, generator=generator(self.input_seed)),)


def build(small: bool = False, seed: int = 0) -> ResNet50:
    """Returns a ResNet50 in eval mode with weights drawn from ``seed`` (small config if ``small``)."""
    config = SMALL if small else DEFAULT
    with seeded(seed):
        model = ResNet50(config, input_seed=seed)
        randomize_batchnorm(model)
        # Calibrate on a reduced-resolution batch: BN statistics need some images, not full size.
        size = min(config.image_size, 96)
        calib = torch.randn(16 if small else 4, 3, size, size)
        calibrate_batchnorm(model, lambda: model(calib))
    return model.eval()


def resnet50() -> ResNet50:
    """Zero-argument factory for ``file.py:attr`` specs: the default-size ResNet50 (seed 0)."""
    return build()
