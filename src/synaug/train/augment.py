"""Batched augmentation on tensors, on the training device: crop, flip, Mixup, CutMix.

Every operation works on a whole batch at once (no per-image Python loop) and draws its
randomness from a seeded ``torch.Generator`` (and a numpy generator for the Beta-distributed
mixing weight), so a run is reproducible.

Mixup and CutMix return *soft* targets, rows of class probabilities that sum to one; the
trainer's loss is cross-entropy against them. "Domain Mixup" (SYNAuG) mixes every real
image with a synthetic partner and every synthetic image with a real one, to soften the
gap between the two domains.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from synaug.errors import SynaugError


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Crop each image at a random offset after zero-padding by ``padding`` pixels per side.

    Two gathers for the whole batch: each image's rows, then its columns, of the padded batch.
    """
    if padding <= 0:
        return images
    batch, channels, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    device = images.device
    dy = torch.randint(0, 2 * padding + 1, (batch,), generator=generator, device=device)
    dx = torch.randint(0, 2 * padding + 1, (batch,), generator=generator, device=device)
    rows = (dy[:, None] + torch.arange(height, device=device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(width, device=device))[:, None, None, :]
    rows_kept = padded.gather(2, rows.expand(batch, channels, height, padded.shape[3]))
    return rows_kept.gather(3, cols.expand(batch, channels, height, width))


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(images.shape[0], generator=generator, device=images.device) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def mixing_partners(is_synthetic: torch.Tensor | None, generator: torch.Generator, domain: bool) -> torch.Tensor:
    """Index of each sample's mixing partner within the batch.

    Without ``domain`` the partners are a random permutation. With ``domain``, a real sample
    gets a random synthetic partner and a synthetic sample a random real one; a batch that
    holds only one domain falls back to a random permutation.
    """
    batch = is_synthetic.shape[0]
    device = is_synthetic.device
    permutation = torch.randperm(batch, generator=generator, device=device)
    if not domain:
        return permutation
    # Without a host sync: sort real before synthetic, then index a random position in the other block.
    by_domain = torch.argsort(is_synthetic.to(torch.uint8), stable=True)
    real_count = (~is_synthetic).sum()
    position = torch.rand(batch, generator=generator, device=device)
    target = torch.where(
        is_synthetic, (position * real_count).long(), real_count + (position * (batch - real_count)).long()
    )
    partners = by_domain[target.clamp(max=batch - 1)]
    both_domains = (real_count > 0) & (real_count < batch)
    return torch.where(both_domains, partners, permutation)


class BatchAugment:
    """Crop + flip, then (optionally) Mixup or CutMix, applied to a batch on its device.

    Parameters
    ----------
    num_classes : size of the soft targets.
    crop_padding : pixels of zero padding for the random crop (0 disables it).
    flip : mirror left-right with probability 1/2.
    mixup_alpha, cutmix_alpha : Beta(alpha, alpha) concentration; 0 disables that mix. When
        both are on, each mixed batch uses one of the two, chosen with probability 1/2.
    mix_prob : probability that a batch is mixed at all, in [0, 1].
    domain_mixup : pair real with synthetic samples when mixing (see :func:`mixing_partners`).
    seed, device : randomness source.
    """

    def __init__(
        self,
        num_classes: int,
        crop_padding: int = 0,
        flip: bool = False,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        mix_prob: float = 1.0,
        domain_mixup: bool = False,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ):
        check_mixing(mixup_alpha, cutmix_alpha, mix_prob, domain_mixup)
        if crop_padding < 0:
            raise SynaugError(f"crop_padding must be 0 or more pixels, got {crop_padding}; use 0 to turn cropping off.")
        self.num_classes = num_classes
        self.crop_padding = int(crop_padding)
        self.flip = bool(flip)
        self.mixup_alpha = float(mixup_alpha)
        self.cutmix_alpha = float(cutmix_alpha)
        self.mix_prob = float(mix_prob)
        self.domain_mixup = bool(domain_mixup)
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.host_rng = np.random.default_rng(seed)

    @property
    def mixes(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def geometric(self, images: torch.Tensor) -> torch.Tensor:
        """Random crop and flip (works on uint8 or float batches)."""
        images = random_crop(images, self.crop_padding, self.generator)
        return random_flip(images, self.generator) if self.flip else images

    def mix(
        self, images: torch.Tensor, labels: torch.Tensor, is_synthetic: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixed float ``images`` and soft targets ``(B, num_classes)`` (one-hot when not mixed)."""
        targets = torch.zeros(len(labels), self.num_classes, device=labels.device).scatter_(1, labels[:, None], 1.0)
        if not self.mixes or self.host_rng.random() >= self.mix_prob:
            return images, targets
        if is_synthetic is None:
            is_synthetic = torch.zeros(len(labels), dtype=torch.bool, device=labels.device)
        partners = mixing_partners(is_synthetic, self.generator, self.domain_mixup)
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha == 0 or self.host_rng.random() < 0.5)
        if use_cutmix:
            images, lam = cutmix(images, partners, self.host_rng.beta(self.cutmix_alpha, self.cutmix_alpha), self.host_rng)
        else:
            lam = float(self.host_rng.beta(self.mixup_alpha, self.mixup_alpha))
            images = lam * images + (1.0 - lam) * images[partners]
        return images, lam * targets + (1.0 - lam) * targets[partners]


def cutmix(
    images: torch.Tensor, partners: torch.Tensor, lam: float, rng: np.random.Generator
) -> tuple[torch.Tensor, float]:
    """Paste one box (area about ``1 - lam``) from each partner image; returns the exact kept-area lambda."""
    height, width = images.shape[-2:]
    cut = math.sqrt(1.0 - lam)
    box_h, box_w = int(round(height * cut)), int(round(width * cut))
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    top, bottom = max(cy - box_h // 2, 0), min(cy + box_h - box_h // 2, height)
    left, right = max(cx - box_w // 2, 0), min(cx + box_w - box_w // 2, width)
    mixed = images.clone()
    mixed[:, :, top:bottom, left:right] = images[partners, :, top:bottom, left:right]
    return mixed, 1.0 - (bottom - top) * (right - left) / (height * width)


def check_mixing(mixup_alpha: float, cutmix_alpha: float, mix_prob: float, domain_mixup: bool) -> None:
    """One-line errors for out-of-range mixing settings."""
    for name, alpha in (("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)):
        if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha >= 0):
            raise SynaugError(f"{name} must be a number >= 0 (0 turns it off, 1 is usual), got {alpha!r}.")
    if not (isinstance(mix_prob, (int, float)) and 0.0 <= mix_prob <= 1.0):
        raise SynaugError(f"mix_prob must be a ratio in [0, 1], got {mix_prob!r}; use 1 to mix every batch.")
    if domain_mixup and mixup_alpha == 0 and cutmix_alpha == 0:
        raise SynaugError("domain_mixup needs mixup_alpha > 0 or cutmix_alpha > 0; set one (e.g. mixup_alpha: 1.0).")
