"""Batched augmentation: crop and flip, Mixup / CutMix soft targets, domain Mixup pairing, bad settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from synaug.errors import SynaugError
from synaug.train.augment import BatchAugment, mixing_partners, random_crop, random_flip


def _windows(image: torch.Tensor, padding: int) -> list[torch.Tensor]:
    """Every crop of ``image`` after zero padding, computed one at a time."""
    padded = F.pad(image, (padding,) * 4)
    height, width = image.shape[-2:]
    return [padded[:, y : y + height, x : x + width] for y in range(2 * padding + 1) for x in range(2 * padding + 1)]


def test_random_crop_returns_a_padded_window_of_each_image():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(1, 256, (16, 3, 7, 9), dtype=torch.uint8, generator=generator)
    cropped = random_crop(images, 2, generator)
    assert cropped.shape == images.shape and cropped.dtype == torch.uint8
    for image, crop in zip(images, cropped):
        assert any(torch.equal(crop, window) for window in _windows(image, 2))
    assert not torch.equal(cropped, images)  # 16 images all at the centre offset: (1/25)**16
    assert torch.equal(random_crop(images, 0, generator), images)


def test_random_flip_mirrors_about_half_of_the_batch():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(200, 1, 4, 5, generator=generator)
    flipped = random_flip(images, generator)
    mirrored = np.array([torch.equal(a, b.flip(2)) for a, b in zip(flipped, images)])
    kept = np.array([torch.equal(a, b) for a, b in zip(flipped, images)])
    assert (mirrored | kept).all()
    assert 70 < mirrored.sum() < 130


def _labelled_batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Image i is constant i and has label i, so targets reveal each sample's partner."""
    images = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 4, 4).clone()
    return images, torch.arange(n)


def _partner_and_lambda(targets: torch.Tensor, i: int) -> tuple[int, float]:
    row = targets[i]
    others = [c for c in torch.nonzero(row).flatten().tolist() if c != i]
    return (others[0] if others else i), float(row[i])


def test_mixup_targets_sum_to_one_and_match_the_image_mixing():
    augment = BatchAugment(num_classes=8, mixup_alpha=1.0, seed=3)
    images, labels = _labelled_batch(8)
    lambdas = set()
    for _ in range(5):
        mixed, targets = augment.mix(images, labels)
        torch.testing.assert_close(targets.sum(1), torch.ones(8))
        for i in range(8):
            partner, lam = _partner_and_lambda(targets, i)
            torch.testing.assert_close(mixed[i], torch.full((1, 4, 4), lam * i + (1 - lam) * partner))
            lambdas.add(round(lam, 6) if partner != i else None)
    assert len(lambdas - {None}) >= 4  # one Beta draw per batch, different across batches


def test_cutmix_lambda_is_the_share_of_pixels_kept():
    augment = BatchAugment(num_classes=6, cutmix_alpha=1.0, seed=0)
    images, labels = _labelled_batch(6)
    for _ in range(5):
        mixed, targets = augment.mix(images, labels)
        torch.testing.assert_close(targets.sum(1), torch.ones(6))
        for i in range(6):
            partner, lam = _partner_and_lambda(targets, i)
            kept = float((mixed[i] == i).float().mean()) if partner != i else 1.0
            assert lam == pytest.approx(kept)


def test_no_mixing_gives_one_hot_targets():
    augment = BatchAugment(num_classes=5, mixup_alpha=1.0, mix_prob=0.0)
    images, labels = _labelled_batch(5)
    mixed, targets = augment.mix(images, labels)
    assert torch.equal(mixed, images) and torch.equal(targets, F.one_hot(labels, 5).float())


def test_domain_mixup_pairs_real_with_synthetic():
    generator = torch.Generator().manual_seed(0)
    is_synthetic = torch.tensor([False] * 9 + [True] * 3)
    partners = mixing_partners(is_synthetic, generator, domain=True)
    assert bool((is_synthetic[partners] != is_synthetic).all())

    augment = BatchAugment(num_classes=12, mixup_alpha=1.0, domain_mixup=True, seed=1)
    images, labels = _labelled_batch(12)
    _, targets = augment.mix(images, labels, is_synthetic)
    for i in range(12):
        partner, lam = _partner_and_lambda(targets, i)
        assert is_synthetic[partner] != is_synthetic[i] or lam == pytest.approx(1.0)


def test_domain_mixup_falls_back_to_a_permutation_with_one_domain():
    generator = torch.Generator().manual_seed(0)
    partners = mixing_partners(torch.zeros(10, dtype=torch.bool), generator, domain=True)
    assert sorted(partners.tolist()) == list(range(10))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"mixup_alpha": -0.5}, "mixup_alpha must be a number >= 0"),
        ({"cutmix_alpha": float("nan")}, "cutmix_alpha must be a number >= 0"),
        ({"mixup_alpha": 1.0, "mix_prob": 1.5}, r"mix_prob must be a ratio in \[0, 1\]"),
        ({"domain_mixup": True}, "domain_mixup needs mixup_alpha > 0 or cutmix_alpha > 0"),
        ({"crop_padding": -1}, "crop_padding must be 0 or more"),
    ],
)
def test_out_of_range_settings_are_one_line_errors(settings, message):
    with pytest.raises(SynaugError, match=message) as error:
        BatchAugment(num_classes=3, **settings)
    assert "\n" not in str(error.value)


def test_augmentation_is_reproducible_from_the_seed():
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (8, 1, 6, 6), dtype=np.uint8))
    labels = torch.arange(8) % 3
    outputs = []
    for _ in range(2):
        augment = BatchAugment(3, crop_padding=2, flip=True, mixup_alpha=0.4, cutmix_alpha=1.0, seed=7)
        x, y = augment.mix(augment.geometric(images).float(), labels)
        outputs.append((x, y))
    assert torch.equal(outputs[0][0], outputs[1][0]) and torch.equal(outputs[0][1], outputs[1][1])
