"""Running a trained classifier over a dataset: logits (:func:`infer`) and penultimate features
(:func:`extract_features`), in order, in eval mode; scoring is :func:`synaug.evaluate.evaluate`'s."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from synaug.data.dataset import LabeledImages
from synaug.errors import SynaugError
from synaug.train.batches import BatchSource
from synaug.train.models import Normalizer


def infer(
    model: nn.Module, data: LabeledImages, normalizer: Normalizer, batch_size: int = 500, num_workers: int = 0
) -> torch.Tensor:
    """Logits ``(N, num_classes)`` (float32, on the CPU) for every image of ``data``, in order."""
    return _forward_all(model, model, data, normalizer, batch_size, num_workers)


def extract_features(
    model: nn.Module, data: LabeledImages, normalizer: Normalizer, batch_size: int = 500, num_workers: int = 0
) -> torch.Tensor:
    """Penultimate features ``(N, D)`` (float32, on the CPU) from ``model.features``, in order."""
    return _forward_all(model, model.features, data, normalizer, batch_size, num_workers)


def _uses_channels_last(model: nn.Module) -> bool:
    """True when the model's convolution weights are stored channels-last."""
    return any(
        p.ndim == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
        for p in model.parameters()
    )


def _forward_all(
    model: nn.Module, function: Callable[[torch.Tensor], torch.Tensor], data: LabeledImages,
    normalizer: Normalizer, batch_size: int, num_workers: int,
) -> torch.Tensor:
    if len(data) == 0:
        raise SynaugError("cannot run the model on an empty dataset; check the data folder and split.")
    parameter = next(model.parameters())
    memory_format = torch.channels_last if _uses_channels_last(model) else torch.contiguous_format
    was_training = model.training
    model.eval()
    outputs = []
    with torch.inference_mode():
        for batch in BatchSource(data, batch_size, parameter.device, shuffle=False, num_workers=num_workers):
            images = normalizer(batch.images).to(parameter.dtype).contiguous(memory_format=memory_format)
            outputs.append(function(images).float().cpu())
    model.train(was_training)
    return torch.cat(outputs)
