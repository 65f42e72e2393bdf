"""The generators shipped inside the package load by name and follow their prompts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from real_data import REAL_FASHION_MNIST, needs_real_fashion_mnist

from synaug.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
from synaug.data.spurious import CONTEXT_COLORS
from synaug.generate.backends import EmbeddedBackend


PER_CLASS = 5
CHANCE = 0.1  # ten classes


@pytest.fixture(scope="module")
def fashion_samples() -> tuple[torch.Tensor, np.ndarray]:
    """PER_CLASS images of every class from the default generator (flattened, in [0, 1]) and their prompted classes."""
    backend = EmbeddedBackend.default(device="cpu", batch_size=10 * PER_CLASS)
    assert backend.generator_id.startswith("embedded:fashion-mnist@")
    prompts = [f"a photo of a {name}" for name in FASHION_MNIST_CLASSES for _ in range(PER_CLASS)]
    out = backend.generate(prompts, list(range(len(prompts))))
    assert out.images.shape == (len(prompts), 1, 28, 28) and out.images.dtype == torch.uint8 and out.ok.all()
    return out.images.float().flatten(1) / 255, np.repeat(np.arange(10), PER_CLASS)


def nearest_mean_accuracy(images: torch.Tensor, labels: np.ndarray, means: torch.Tensor) -> float:
    return float((torch.cdist(images, means).argmin(1).numpy() == labels).mean())


def test_the_default_generator_draws_the_prompted_class_consistently(fashion_samples):
    """Each image lies nearest the mean of the other images prompted with its class (leave one out);
    a generator that ignored its prompts would score about chance (10 %)."""
    images, labels = fashion_samples
    hits = 0
    for i in range(len(images)):
        others = np.arange(len(images)) != i
        means = torch.stack([images[others & (labels == c)].mean(0) for c in range(10)])
        hits += nearest_mean_accuracy(images[i : i + 1], labels[i : i + 1], means)
    assert hits / len(images) > 4 * CHANCE  # 0.7 here


@needs_real_fashion_mnist
def test_the_default_generator_draws_what_real_images_of_the_class_look_like(fashion_samples):
    """The nearest real class mean (of the Fashion-MNIST test images) is the prompted class well above chance."""
    images, labels = fashion_samples
    real = load_fashion_mnist("test", REAL_FASHION_MNIST)
    pixels = real.images.float().flatten(1) / 255
    means = torch.stack([pixels[torch.from_numpy(real.labels == c)].mean(0) for c in range(10)])
    assert nearest_mean_accuracy(images, labels, means) > 4 * CHANCE  # 0.75 here; real test images score 0.68


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


def test_the_shipped_exemplar_generator_varies_its_exemplar_and_still_draws_from_text():
    """Samples lie nearer their own exemplar than the other exemplars of the class, yet are no copies;
    without exemplars it draws the prompted class like the text-only generator."""
    exemplars = EmbeddedBackend.default(device="cpu", batch_size=8).generate(["a photo of a Coat"] * 8, list(range(100, 108))).images
    backend = EmbeddedBackend.shipped("fashion-mnist-exemplar", device="cpu", batch_size=8)
    assert backend.generator_id.startswith("embedded:fashion-mnist-exemplar@") and backend.strength == 1.0
    samples = backend.generate(["a photo of a Coat"] * 8, list(range(8)), reference_images=exemplars).images
    distances = torch.cdist(samples.float().flatten(1) / 255, exemplars.float().flatten(1) / 255)
    own, others = distances.diag(), (distances.sum(1) - distances.diag()) / 7
    assert (own < others).float().mean() >= 0.75 and own.min() > 1.0, distances
    trousers = backend.generate(["a photo of a Trouser"] * 4, list(range(4))).images
    assert (trousers > 50).float().mean() < 0.8 * (samples > 50).float().mean()  # trousers cover less of the frame than coats
