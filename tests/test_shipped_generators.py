"""The generators shipped inside the package load by name and follow their prompts."""

from __future__ import annotations

import torch

from synaug.data.spurious import CONTEXT_COLORS
from synaug.generate.backends import EmbeddedBackend


def test_fashion_mnist_generator_is_the_default_and_grey():
    backend = EmbeddedBackend.default(device="cpu")
    assert backend.generator_id.startswith("embedded:fashion-mnist@")
    out = backend.generate(["a photo of a Trouser"] * 2, [0, 1])
    assert out.images.shape == (2, 1, 28, 28) and out.images.dtype == torch.uint8


def test_colored_generator_paints_the_prompted_background():
    backend = EmbeddedBackend.shipped("colored-fashion-mnist", device="cpu", batch_size=8)
    assert backend.settings()["guidance_scale"] == 3.0  # its model card's recommendation
    prompts = [f"a photo of a {item} on a {context} background" for item in ("Bag", "Coat") for context in CONTEXT_COLORS]
    images = backend.generate(prompts, list(range(len(prompts)))).images.float()
    assert images.shape == (4, 3, 28, 28)
    corners = torch.cat([images[:, :, :3, :3], images[:, :, -3:, -3:]], dim=2).mean(dim=(2, 3))  # N x RGB
    red, blue = corners[:, 0], corners[:, 2]
    prompted_red = torch.tensor([True, False, True, False])
    assert (red[prompted_red] > blue[prompted_red] + 60).all(), corners
    assert (blue[~prompted_red] > red[~prompted_red] + 60).all(), corners
