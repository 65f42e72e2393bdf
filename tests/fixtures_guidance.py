"""Test helpers for feedback guidance: a toy classifier, tiny checkpoints, a slow real backend.

* :class:`BrightnessClassifier` follows the project's model contract (``features``,
  ``classifier``) with one feature, the mean pixel value, and two classes split at zero
  brightness: "dark" (class 0) below, "bright" (class 1) above.
* :func:`tiny_checkpoint` writes a real classifier checkpoint (`synaug train`'s format) of a
  small ResNet with seeded random weights via ``save_checkpoint``.
* :func:`make_slow_embedded` is a ``python:`` generator factory: the embedded backend of the
  folder in $SYNAUG_TEST_GENERATOR that sleeps $FAKE_GENERATOR_DELAY seconds per batch, so a
  guided run in another process can be killed part-way.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from synaug.generate.backends.embedded import EmbeddedBackend
from synaug.train.checkpoint import save_checkpoint
from synaug.train.models import Normalizer, small_resnet
from synaug.train.trainer import TrainConfig, TrainResult


class BrightnessClassifier(nn.Module):
    """Logits ``(-w·b, w·b)`` of the mean brightness b: the decision boundary is b = 0."""

    def __init__(self, weight: float = 4.0):
        super().__init__()
        self.classifier = nn.Linear(1, 2)
        with torch.no_grad():
            self.classifier.weight.copy_(torch.tensor([[-weight], [weight]]))
            self.classifier.bias.zero_()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3)).unsqueeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def train_result(class_names: list[str], channels: int = 1, size: int = 28, seed: int = 0,
                 train_counts: list[int] | None = None) -> TrainResult:
    """A TrainResult holding a seeded random small ResNet (eval mode)."""
    torch.manual_seed(seed)
    model = small_resnet(len(class_names), channels).eval()
    counts = np.asarray(train_counts if train_counts is not None else [10] * len(class_names))
    return TrainResult(
        model=model, history=[], normalizer=Normalizer.fixed(channels), config=TrainConfig(), class_names=list(class_names),
        train_counts=counts, synthetic_counts=np.zeros_like(counts), sample_counts={"real": int(counts.sum()), "synthetic": 0},
        image_shape=(channels, size, size), seconds=0.0,
    )


def tiny_checkpoint(folder: Path, class_names: list[str], channels: int = 1, size: int = 28, seed: int = 0) -> Path:
    """A classifier checkpoint folder (model.safetensors + config.json) of a random small ResNet."""
    return save_checkpoint(train_result(class_names, channels, size, seed), folder)


class SlowEmbedded(EmbeddedBackend):
    """The embedded backend, sleeping ``delay`` seconds before each batch; a batch holding the seed
    $FAKE_GENERATOR_BLOCK_AT creates the file $FAKE_GENERATOR_BLOCKED_FILE and waits until killed."""

    delay = 0.0

    def _generate_batch(self, prompts, seeds, **kwargs):
        time.sleep(self.delay)
        if os.environ.get("FAKE_GENERATOR_BLOCK_AT") in {str(seed) for seed in seeds}:
            Path(os.environ["FAKE_GENERATOR_BLOCKED_FILE"]).touch()
            threading.Event().wait()
        return super()._generate_batch(prompts, seeds, **kwargs)


def make_slow_embedded(**options) -> SlowEmbedded:
    """Factory for ``--generator python:fixtures_guidance:make_slow_embedded``."""
    backend = SlowEmbedded.from_pretrained(os.environ["SYNAUG_TEST_GENERATOR"], **options)
    backend.delay = float(os.environ.get("FAKE_GENERATOR_DELAY", "0"))
    return backend
