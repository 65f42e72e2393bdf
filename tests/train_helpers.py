"""Small labelled image sets for the train and evaluate tests."""

from __future__ import annotations

import numpy as np
import torch

from synaug.data import LabeledImages


def pattern_images(per_class: int | list[int], size: int = 12, seed: int = 0, synthetic_every: int = 0) -> LabeledImages:
    """An easy 3-class task: horizontal stripes, vertical stripes or a checkerboard, plus noise.

    ``per_class`` is one count for every class or a list of counts; with ``synthetic_every = k``
    every k-th image is flagged synthetic.
    """
    counts = [per_class] * 3 if isinstance(per_class, int) else list(per_class)
    rng = np.random.default_rng(seed)
    rows, cols = np.indices((size, size))
    patterns = [(rows // 2) % 2, (cols // 2) % 2, ((rows // 2) + (cols // 2)) % 2]
    labels = np.repeat(np.arange(len(counts)), counts)
    rng.shuffle(labels)
    images = np.stack([patterns[label] * 160 + rng.integers(0, 90, (size, size)) for label in labels])
    flags = np.zeros(len(labels), dtype=bool)
    if synthetic_every:
        flags[::synthetic_every] = True
    return LabeledImages(
        labels=labels,
        class_names=["horizontal", "vertical", "checker"][: len(counts)],
        images=torch.from_numpy(images.astype(np.uint8)[:, None]),
        is_synthetic=flags,
    )
