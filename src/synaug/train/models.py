"""Image classifiers written in the project: ResNet-32, a small ResNet for 28 px, ResNet-50
(and, through :mod:`synaug.train.backbones`, pretrained ``transformers`` backbones).

Every model follows one contract, which cRT, DFR and the hardness criterion rely on:

- ``features(x)`` returns the penultimate features, shape ``(B, D)`` (after global pooling);
- ``classifier`` is the final ``nn.Linear(D, num_classes)``;
- ``forward(x) == classifier(features(x))`` returns logits.

Inputs are float images already normalised by :class:`Normalizer`: uint8 pixels are scaled
to [0, 1], then each channel becomes ``(x - mean) / std``. The mean and std are either
measured on the training set (:meth:`Normalizer.from_images`) or fixed at 0.5 / 0.5; they
are stored in the checkpoint so any later user feeds the model exactly what it was trained on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from synaug.errors import SynaugError
from synaug.train.backbones import build_backbone_classifier, is_backbone_name


# ---- input normalisation ---------------------------------------------------------------
@dataclass(frozen=True)
class Normalizer:
    """Maps images to model inputs: uint8 -> [0, 1] -> ``(x - mean) / std`` per channel.

    ``__call__`` accepts a uint8 tensor (0..255) or a float tensor already in [0, 1].
    A diffusion sampler whose images live in [-1, 1] (such as x̂0) uses :meth:`from_signed`.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def fixed(cls, channels: int) -> "Normalizer":
        """Mean 0.5 and std 0.5 for every channel, i.e. inputs in [-1, 1]."""
        return cls(mean=(0.5,) * channels, std=(0.5,) * channels)

    @classmethod
    def from_images(cls, images: torch.Tensor) -> "Normalizer":
        """Per-channel mean and std of a uint8 ``N x C x H x W`` tensor, measured in [0, 1]."""
        pixels = images.transpose(0, 1).reshape(images.shape[1], -1).double() / 255.0
        std = pixels.std(dim=1).clamp_min(1e-3)
        return cls(mean=tuple(pixels.mean(dim=1).tolist()), std=tuple(std.tolist()))

    @classmethod
    def from_dict(cls, values: dict) -> "Normalizer":
        """The normaliser stored by :meth:`to_dict` (as in a checkpoint's config.json)."""
        return cls(mean=tuple(float(v) for v in values["mean"]), std=tuple(float(v) for v in values["std"]))

    def to_dict(self) -> dict:
        return {key: list(value) for key, value in asdict(self).items()}

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Model input for uint8 images or float images in [0, 1]; returns float32."""
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        return (x - self._stat(self.mean, x)) / self._stat(self.std, x)

    def from_signed(self, images: torch.Tensor) -> torch.Tensor:
        """Model input for float images in [-1, 1] (diffusion convention); differentiable."""
        return self((images + 1.0) / 2.0)

    @staticmethod
    def _stat(values: tuple[float, ...], like: torch.Tensor) -> torch.Tensor:
        return torch.tensor(values, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)


# ---- building blocks -------------------------------------------------------------------
def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class _PadShortcut(nn.Module):
    """Parameter-free shortcut of the CIFAR ResNets: subsample by 2 and zero-pad channels."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.extra = out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::2, ::2]
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity (or downsampling) shortcut.

    ``shortcut="pad"`` is the parameter-free option of the CIFAR ResNets (He et al., option A,
    as in the LDAM ResNet-32); ``"conv"`` uses a strided 1x1 convolution.
    """

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1, shortcut: str = "conv"):
        super().__init__()
        self.conv1 = _conv3x3(in_channels, channels, stride)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = _conv3x3(channels, channels)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != channels:
            if shortcut == "pad":
                self.shortcut = _PadShortcut(in_channels, channels)
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), nn.BatchNorm2d(channels)
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand by 4, with a projection shortcut when needed."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1, shortcut: str = "conv"):
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = _conv3x3(channels, channels, stride)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


# ---- the classifier ----------------------------------------------------------------------
class ResNetClassifier(nn.Module):
    """Stem, stages of residual blocks, global average pooling, linear classifier.

    Parameters
    ----------
    block : BasicBlock or Bottleneck.
    stage_blocks : number of blocks in each stage.
    stage_channels : width of each stage (before the block's expansion).
    num_classes, in_channels : output classes and input image channels.
    stem : ``"cifar"`` (one 3x3 conv, no downsampling) or ``"imagenet"`` (7x7 stride 2 + max pool).
    shortcut : ``"pad"`` or ``"conv"``, see :class:`BasicBlock`.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        stage_blocks: list[int],
        stage_channels: list[int],
        num_classes: int,
        in_channels: int,
        stem: str = "cifar",
        shortcut: str = "conv",
    ):
        super().__init__()
        width = stage_channels[0] if stem == "cifar" else 64
        if stem == "cifar":
            self.stem = nn.Sequential(_conv3x3(in_channels, width), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, stride=2, padding=1),
            )
        stages = []
        for index, (blocks, channels) in enumerate(zip(stage_blocks, stage_channels)):
            layers = []
            for position in range(blocks):
                stride = 2 if index > 0 and position == 0 else 1
                layers.append(block(width, channels, stride, shortcut))
                width = channels * block.expansion
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.feature_dim = width
        self.classifier = nn.Linear(width, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``(B, feature_dim)``: globally pooled output of the last stage."""
        return torch.flatten(F.adaptive_avg_pool2d(self.stages(self.stem(x)), 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def resnet32(num_classes: int, in_channels: int = 3) -> ResNetClassifier:
    """CIFAR ResNet-32 (3 stages x 5 basic blocks, 16/32/64 channels, 0.46 M parameters)."""
    return ResNetClassifier(BasicBlock, [5, 5, 5], [16, 32, 64], num_classes, in_channels, "cifar", "pad")


def small_resnet(num_classes: int, in_channels: int = 1) -> ResNetClassifier:
    """A small ResNet for 28 px images: 3x3 stem, one basic block per stage, 16/32/64 channels."""
    return ResNetClassifier(BasicBlock, [1, 1, 1], [16, 32, 64], num_classes, in_channels, "cifar", "conv")


def resnet50(num_classes: int, in_channels: int = 3) -> ResNetClassifier:
    """ResNet-50-style bottleneck network (3/4/6/3 blocks, 64..512 x 4) for 64 px and larger."""
    return ResNetClassifier(Bottleneck, [3, 4, 6, 3], [64, 128, 256, 512], num_classes, in_channels, "imagenet")


MODELS: dict[str, Callable[[int, int], ResNetClassifier]] = {
    "resnet32": resnet32,
    "small_resnet": small_resnet,
    "resnet50": resnet50,
}


def build_model(
    name: str,
    num_classes: int,
    in_channels: int,
    *,
    image_size: tuple[int, int] | None = None,
    resolution: int | None = None,
    backbone_config: dict | None = None,
) -> nn.Module:
    """The model called ``name`` with fresh weights (a fresh head on pretrained weights for a backbone).

    ``name`` is one of :data:`MODELS` or ``hf:<hub id or folder>``, a ``transformers`` backbone
    (see :mod:`synaug.train.backbones`); ``image_size``, ``resolution`` and ``backbone_config``
    apply to backbones only (the data's size, the size inputs are resized to, and a checkpoint's
    stored architecture).
    """
    if num_classes < 2:
        raise SynaugError(f"a classifier needs at least 2 classes, got {num_classes}; check the dataset's class list.")
    if is_backbone_name(name):
        return build_backbone_classifier(name, num_classes, in_channels, image_size, resolution, backbone_config)
    check_model_name(name)
    if resolution is not None:
        raise SynaugError(f"resolution applies to hf: backbones only; drop it for model '{name}'.")
    return MODELS[name](num_classes, in_channels)


def check_model_name(name: str) -> None:
    """A one-line error unless ``name`` is one of :data:`MODELS` or an ``hf:`` backbone."""
    if not is_backbone_name(name) and name not in MODELS:
        raise SynaugError(f"unknown model '{name}'; choose one of {', '.join(MODELS)}, or hf:<hub id or folder> for a transformers backbone.")
