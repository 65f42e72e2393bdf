"""Fashion-MNIST items rendered on a coloured background: a context a generator can be prompted for.

Each grey item keeps its shape and shading; the dark background takes the context colour:
``rgb = g + (1 - g) * colour`` with ``g`` the grey level in [0, 1]. The reserved half of
Fashion-MNIST train, rendered with uniformly random contexts, trains the context-aware
embedded generator; the spurious-correlation benchmark draws from the other half.
"""

from __future__ import annotations

import numpy as np
import torch

from synaug.data.dataset import LabeledImages
from synaug.errors import SynaugError

CONTEXT_COLORS: dict[str, tuple[int, int, int]] = {
    "red": (210, 40, 40),
    "blue": (40, 70, 210),
}


def render_on_background(gray: torch.Tensor, contexts: np.ndarray, palette: dict[str, tuple[int, int, int]] = CONTEXT_COLORS) -> torch.Tensor:
    """Composite uint8 ``N x 1 x H x W`` grey items onto the context colours (uint8 ``N x 3 x H x W``)."""
    if gray.ndim != 4 or gray.shape[1] != 1 or gray.dtype != torch.uint8:
        raise SynaugError("render_on_background needs grey uint8 images N x 1 x H x W.")
    colours = torch.tensor(list(palette.values()), dtype=torch.float32)
    contexts = torch.as_tensor(np.asarray(contexts), dtype=torch.long)
    if len(contexts) != len(gray) or (len(contexts) and (contexts.min() < 0 or contexts.max() >= len(colours))):
        raise SynaugError(f"need one context in 0..{len(colours) - 1} per image.")
    g = gray.float() / 255.0
    background = colours[contexts][:, :, None, None]
    rgb = g * 255.0 + (1.0 - g) * background
    return rgb.round().clamp(0, 255).to(torch.uint8)


def with_contexts(data: LabeledImages, contexts: np.ndarray, palette: dict[str, tuple[int, int, int]] = CONTEXT_COLORS) -> LabeledImages:
    """``data`` rendered on the given per-image contexts, with the contexts as groups."""
    if not data.in_memory:
        data = data.materialize()
    return LabeledImages(
        labels=data.labels,
        class_names=list(data.class_names),
        images=render_on_background(data.images, contexts, palette),
        groups=np.asarray(contexts),
        group_names=list(palette),
        is_synthetic=data.is_synthetic,
    )


def uniform_contexts(n: int, num_contexts: int = len(CONTEXT_COLORS), seed: int = 0) -> np.ndarray:
    """Independent uniformly random contexts (the generator's training data has no correlation)."""
    return np.random.RandomState(seed).randint(0, num_contexts, size=n)
