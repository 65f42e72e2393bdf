"""Classifier re-training (cRT): a new last layer, trained with class-balanced sampling.

Following classifier-balancing (Kang et al., 2020): the backbone is frozen, ``model.classifier``
is re-initialised and trained for a few epochs on class-balanced batches with a cosine
learning rate. SYNAuG's "post-calibration" is this step on the *real* training images.

Because the backbone is frozen, its features are computed once (eval mode, no augmentation)
and the linear layer trains on them directly, which makes cRT take seconds. This is one
departure from classifier-balancing, which re-runs the augmented backbone every step.

Under ``torchrun`` each process extracts the features of its part of the data and all of them
gather the whole feature matrix; every process then trains the same layer on the same
class-balanced draws (it costs seconds), so the result equals a single process's and no
sampler needs splitting between processes.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from synaug.data.dataset import LabeledImages
from synaug.errors import SynaugError
from synaug.train.distributed import current_context, gather_rows, rank_subset
from synaug.train.models import Normalizer
from synaug.train.inference import extract_features

SOURCES = ("real", "real+synthetic")


class ClassBalancedSampler:
    """Indices drawn with replacement so that every class is equally likely in each draw.

    A draw picks a class uniformly among the classes present, then an image of that class
    uniformly: each image of class ``c`` has weight ``1 / (C_present * n_c)``.

    Parameters
    ----------
    labels : class index of every image.
    num_samples : indices per epoch (``len(labels)`` by default, as in classifier-balancing).
    seed : seeds the draws; each call of :meth:`epoch` continues the same stream.
    """

    def __init__(self, labels: np.ndarray, num_samples: int | None = None, seed: int = 0):
        labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        if len(labels) == 0:
            raise SynaugError("class-balanced sampling needs at least one image; check the training data.")
        counts = torch.bincount(labels).double()
        self.weights = 1.0 / counts[labels]
        self.num_samples = len(labels) if num_samples is None else int(num_samples)
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self.num_samples

    def epoch(self) -> torch.Tensor:
        """``num_samples`` indices for one epoch."""
        return torch.multinomial(self.weights, self.num_samples, replacement=True, generator=self.generator)


@dataclass
class CrtSettings:
    """cRT's settings and their defaults, declared once for the API, the run config and the CLI."""

    source: str = "real"
    epochs: int = 10
    lr: float = 0.1
    batch_size: int = 128
    weight_decay: float = 5e-4


def retrain_classifier(
    model: nn.Module,
    data: LabeledImages,
    normalizer: Normalizer,
    epochs: int = CrtSettings.epochs,
    batch_size: int = CrtSettings.batch_size,
    lr: float = CrtSettings.lr,
    weight_decay: float = CrtSettings.weight_decay,
    seed: int = 0,
    source: str = CrtSettings.source,
) -> nn.Module:
    """A copy of ``model`` whose ``classifier`` was re-initialised and re-trained class-balanced.

    Parameters
    ----------
    model : a trained classifier with ``features`` and ``classifier`` (left untouched).
    data : the training set; ``source="real"`` keeps only its real images,
        ``"real+synthetic"`` uses all of them (classes balanced over both).
    normalizer : the normalisation the model was trained with.
    epochs, batch_size, lr, weight_decay : SGD (momentum 0.9) with a cosine decay to 0.
    seed : seeds the new layer's initialisation and the sampling.
    """
    if source not in SOURCES:
        raise SynaugError(f"unknown cRT source '{source}'; choose one of {', '.join(SOURCES)}.")
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise SynaugError(f"cRT needs epochs >= 1, batch_size >= 1 and lr > 0 (got {epochs}, {batch_size}, {lr}).")
    if source == "real":
        data = data.subset(np.flatnonzero(~data.is_synthetic))
    if len(data) == 0:
        raise SynaugError("cRT found no real training images; pass the real training set or use source 'real+synthetic'.")

    # 1. Frozen features, computed once
    retrained = copy.deepcopy(model).eval()
    for parameter in retrained.parameters():
        parameter.requires_grad_(False)
    device = next(retrained.parameters()).device
    context = current_context(device)  # under torchrun: each process extracts its part
    features = gather_rows(extract_features(retrained, rank_subset(data, context), normalizer).to(device), len(data), context)
    labels = torch.from_numpy(data.labels).to(device)

    # 2. A fresh classifier, the only trainable part
    torch.manual_seed(seed)
    classifier: nn.Linear = retrained.classifier
    classifier.reset_parameters()
    classifier.requires_grad_(True)
    optimizer = torch.optim.SGD(classifier.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)

    # 3. Class-balanced batches, cosine learning rate
    sampler = ClassBalancedSampler(data.labels, seed=seed)
    steps_per_epoch = max(1, math.ceil(len(sampler) / batch_size))
    total = epochs * steps_per_epoch
    for epoch in range(epochs):
        order = sampler.epoch().to(device)
        for step in range(steps_per_epoch):
            done = epoch * steps_per_epoch + step
            for group in optimizer.param_groups:
                group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * done / total))
            index = order[step * batch_size : (step + 1) * batch_size]
            loss = F.cross_entropy(classifier(features[index]), labels[index])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    for parameter in retrained.parameters():
        parameter.requires_grad_(True)
    return retrained
