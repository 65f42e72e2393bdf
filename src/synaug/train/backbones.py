"""Pretrained image backbones from ``transformers`` with a fresh linear head.

A model name ``hf:<hub id or local folder>`` (for example ``hf:microsoft/resnet-50``) builds
:class:`BackboneClassifier`: the backbone's pretrained weights (ResNet, ConvNeXt, ViT, DINOv2,
the vision tower of a CLIP checkpoint, or any ``transformers`` model that takes
``pixel_values``) and a new ``nn.Linear`` head. It follows the project's model contract
(``features(x)``, ``classifier``, ``forward(x) == classifier(features(x))``), so cRT, DFR,
Group-DRO and the hardness criterion use it like the built-in ResNets.

Images are resized inside the model to ``resolution`` (bilinear), so the data, the
augmentation and every caller keep the dataset's own size; the resize is differentiable.
A checkpoint stores the backbone's config (see :meth:`BackboneClassifier.checkpoint_meta`),
so loading it rebuilds the architecture without fetching the pretrained weights again.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from synaug.errors import SynaugError

HF_PREFIX = "hf:"
_NO_POOLER = ("vit",)  # their pooler is an extra dense layer most checkpoints do not train: use the CLS token


def is_backbone_name(name: str) -> bool:
    """True for a model name that names a ``transformers`` backbone (``hf:<id or folder>``)."""
    return isinstance(name, str) and name.startswith(HF_PREFIX) and len(name) > len(HF_PREFIX)


class BackboneClassifier(nn.Module):
    """A ``transformers`` vision backbone, pooled to one vector per image, and a linear head.

    Parameters
    ----------
    backbone : a ``transformers`` model whose forward takes ``pixel_values``.
    num_classes : outputs of the fresh head.
    feature_dim : size of the pooled features.
    resolution : side the inputs are resized to before the backbone, or None to keep them.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, feature_dim: int, resolution: int | None = None):
        super().__init__()
        self.backbone = backbone
        self.resolution = resolution
        self.feature_dim = feature_dim
        self.classifier = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features ``(B, feature_dim)`` of normalised images ``x``."""
        return pooled_features(self.backbone, _resize(x, self.resolution))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def checkpoint_meta(self) -> dict[str, Any]:
        """What a checkpoint needs to rebuild this model without the pretrained weights."""
        return {"backbone": {"config": self.backbone.config.to_dict(), "resolution": self.resolution}}


def pooled_features(backbone: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """One vector per image: the backbone's pooler output, else its CLS token or mean feature map."""
    output = backbone(pixel_values=pixels)
    pooled = getattr(output, "pooler_output", None)
    if pooled is None:
        hidden = output.last_hidden_state
        pooled = hidden[:, 0] if hidden.ndim == 3 else hidden.mean(dim=(2, 3))
    return torch.flatten(pooled, 1)


def build_backbone_classifier(
    name: str,
    num_classes: int,
    in_channels: int,
    image_size: tuple[int, int] | None = None,
    resolution: int | None = None,
    config: dict[str, Any] | None = None,
) -> BackboneClassifier:
    """The backbone ``name`` (``hf:<hub id or folder>``) with a fresh head for ``num_classes``.

    With ``config`` (a backbone config stored in a checkpoint) only the architecture is
    built, with fresh weights, for the checkpoint's state to fill. Images of ``in_channels``
    channels and ``image_size`` (resized to ``resolution`` when given) must fit the backbone:
    a one-line error names the setting to change otherwise.
    """
    if resolution is not None and (not isinstance(resolution, int) or resolution < 1):
        raise SynaugError(f"resolution must be a positive whole number of pixels, got {resolution!r}.")
    source = name[len(HF_PREFIX):]
    backbone = _architecture(config) if config is not None else _pretrained(source)
    expected = getattr(backbone.config, "num_channels", None)
    if expected is not None and expected != in_channels:
        raise SynaugError(
            f"backbone '{source}' takes {expected}-channel images but the data has {in_channels}; "
            f"set the data's channels to {expected} (data.channels / --channels)."
        )
    side = resolution or (image_size[0] if image_size else None)
    feature_dim = _probe(backbone, source, in_channels, (side, side) if resolution else image_size)
    return BackboneClassifier(backbone, num_classes, feature_dim, resolution)


def parameter_groups(model: nn.Module, lr: float, backbone_lr: float | None) -> list[dict[str, Any]]:
    """SGD parameter groups: ``model.classifier`` at ``lr``, the rest at ``backbone_lr`` (default ``lr``).

    Each group keeps its peak rate as ``base_lr`` for the schedule to scale.
    """
    head = list(model.classifier.parameters())
    head_ids = {id(p) for p in head}
    body = [p for p in model.parameters() if id(p) not in head_ids]
    groups = [{"params": head, "lr": lr, "base_lr": lr}]
    if body:
        body_lr = lr if backbone_lr is None else backbone_lr
        groups.append({"params": body, "lr": body_lr, "base_lr": body_lr})
    return groups


# ---- loading -------------------------------------------------------------------------------
def _pretrained(source: str) -> nn.Module:
    """The pretrained backbone at a local folder or hub id (a CLIP checkpoint gives its vision tower)."""
    import transformers

    folder = Path(source).expanduser()
    if folder.exists() and not (folder / "config.json").is_file():
        raise SynaugError(f"backbone folder {source} holds no config.json; give a folder written by save_pretrained, or a hub id.")
    location = str(folder) if folder.exists() else source
    try:
        with quiet_transformers():
            config = transformers.AutoConfig.from_pretrained(location)
            if config.model_type == "clip":
                return transformers.CLIPVisionModel.from_pretrained(location)
            extra = {"add_pooling_layer": False} if config.model_type in _NO_POOLER else {}
            return transformers.AutoModel.from_pretrained(location, **extra)
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SynaugError(
            f"cannot load backbone '{source}' ({first}); give a transformers model folder or a reachable hub id."
        ) from None


def _architecture(config: dict[str, Any]) -> nn.Module:
    """A backbone with fresh weights from a config stored in a checkpoint."""
    import transformers

    values = dict(config)
    model_type = values.pop("model_type", None)
    try:
        with quiet_transformers():
            built = transformers.AutoConfig.for_model(model_type, **values)
            extra = {"add_pooling_layer": False} if model_type in _NO_POOLER else {}
            return transformers.AutoModel.from_config(built, **extra)
    except (ValueError, KeyError, TypeError) as exc:
        raise SynaugError(f"the checkpoint's backbone config is unusable ({exc}); re-train the checkpoint.") from None


def _probe(backbone: nn.Module, source: str, channels: int, size: tuple[int, int] | None) -> int:
    """Feature size, from one blank image through the backbone; an image it cannot take is an error."""
    height, width = size or (224, 224)
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            features = pooled_features(backbone, torch.zeros(1, channels, height, width))
    except (ValueError, RuntimeError, TypeError) as exc:
        native = getattr(backbone.config, "image_size", None)
        fix = f"set train.resolution to {native} (the backbone's image size)" if isinstance(native, int) else "set train.resolution (e.g. 224)"
        first = str(exc).strip().splitlines()[0]
        raise SynaugError(f"backbone '{source}' cannot take {channels}x{height}x{width} images ({first}); {fix}.") from None
    finally:
        backbone.train(was_training)
    return int(features.shape[1])


def _resize(x: torch.Tensor, resolution: int | None) -> torch.Tensor:
    if resolution is None or tuple(x.shape[-2:]) == (resolution, resolution):
        return x
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence ``transformers``' load reports and progress bars for the duration (restored after)."""
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    bars = logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()
