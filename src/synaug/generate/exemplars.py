"""Exemplars: the real training image each synthetic image starts from or is conditioned on.

An exemplar route gives the generator one real image per synthetic image: img2img / SDEdit
noises it to ``strength`` of the schedule and denoises from there; image-embedding routes
(an IP-Adapter, a Stable unCLIP checkpoint) condition the UNet on its embedding.

The choice is a seeded rule, the same in every process, shard and re-run: the real images of
each class (of each class x group cell, for cell plans) are shuffled by a generator seeded
with (plan seed, class, group), and item ``i`` of the cell takes the ``(i mod n)``-th of them.
So each of a cell's ``n`` real images serves ``⌊k/n⌋`` or ``⌈k/n⌉`` of its ``k`` synthetic
images, and a smaller plan of the same seed (a budget plan) takes a prefix of a larger one's
exemplars. Images flagged ``is_synthetic`` are never exemplars.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from synaug.data.dataset import LabeledImages
from synaug.errors import SynaugError
from synaug.plan.planner import PlanItem, SynthesisPlan

DEFAULT_STRENGTH = 0.5
"""Fraction of the sampling steps re-run from the noised exemplar (img2img / SDEdit)."""
EXEMPLAR_SOURCES = ("real",)
"""Where exemplars come from: ``real``, the real training images of the image's class (or cell)."""
PICK_RULE = "seeded-shuffle-per-cell"


def check_strength(strength: float, name: str = "strength") -> float:
    """``strength`` as a float, or a one-line error when it lies outside (0, 1]."""
    try:
        value = float(strength)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 < value <= 1.0:
        raise SynaugError(
            f"{name} {strength} must lie in (0, 1]: the fraction of the sampling steps re-run from the noised "
            f"exemplar (0.3 stays close to it, 1.0 starts from noise); e.g. {DEFAULT_STRENGTH}."
        )
    return value


def check_exemplar_source(source: str | None, name: str = "exemplars") -> str | None:
    """``source`` when it is None or one of :data:`EXEMPLAR_SOURCES`, else a one-line error."""
    if source is not None and source not in EXEMPLAR_SOURCES:
        raise SynaugError(f"{name} {source!r} is not known; use {' or '.join(EXEMPLAR_SOURCES)} (or leave it out for text only).")
    return source


@dataclass
class ExemplarSpec:
    """How exemplars enter generation, declared once for the Python API, ``synaug generate`` and run configs.

    Parameters
    ----------
    source : ``real`` (each image gets a real training image of its class or cell) or None (text only).
    strength : fraction of the sampling steps re-run from the noised exemplar, in (0, 1]; None: 0.5,
        or 1.0 (from noise, the exemplar entering through its embedding only) for image-embedding generators
        (IP-Adapter, unCLIP, the exemplar-conditioned embedded generator ``embedded:fashion-mnist-exemplar``).
    ip_adapter : an IP-Adapter for a Stable Diffusion checkpoint: its weight file (``image_encoder/``
        next to it), a folder holding one, or ORG/REPO/PATH/FILE on the Hugging Face hub.
    ip_adapter_scale : weight of the adapter's attention (1 as trained, 0 ignores the exemplar).
    noise_level : noise a Stable unCLIP checkpoint adds to the exemplar's embedding (0: none).

    >>> sampler = synaug.SyntheticOverSampler("embedded", store="s/", exemplars=synaug.ExemplarSpec("real", strength=0.5))  # doctest: +SKIP
    """

    source: str | None = None
    strength: float | None = None
    ip_adapter: str | None = None
    ip_adapter_scale: float = 1.0
    noise_level: int = 0

    def __post_init__(self) -> None:
        check_exemplar_source(self.source, "exemplar source")
        if self.strength is not None:
            check_strength(self.strength)
        shaping = [name for name, default in SHAPING_DEFAULTS.items() if getattr(self, name) != default]
        if self.source is None and shaping:
            raise SynaugError(
                f"{shaping[0]} shapes how exemplars enter the images, and none are given; "
                "add them (--reference real, or exemplars.source: real in a run config), or drop it."
            )
        if not (isinstance(self.ip_adapter_scale, (int, float)) and math.isfinite(self.ip_adapter_scale) and self.ip_adapter_scale >= 0):
            raise SynaugError(f"ip_adapter_scale {self.ip_adapter_scale!r} must be a finite number >= 0; 1 weighs the adapter as trained.")
        if isinstance(self.noise_level, bool) or not isinstance(self.noise_level, int) or self.noise_level < 0:
            raise SynaugError(f"noise_level {self.noise_level!r} must be a whole number >= 0 (unCLIP's timesteps; 0 adds no noise).")

    def generator_settings(self) -> dict[str, Any]:
        """The settings :func:`~synaug.generate.loading.load_generator` takes for these exemplars (those set only)."""
        return {name: getattr(self, name) for name, default in SHAPING_DEFAULTS.items() if getattr(self, name) != default}


SHAPING_DEFAULTS = {"strength": None, "ip_adapter": None, "ip_adapter_scale": 1.0, "noise_level": 0}
"""The :class:`ExemplarSpec` fields that are generator settings, with their defaults (unset)."""


class ExemplarPicker:
    """Each plan item's exemplar among the real images ``data`` (see the module docstring for the rule).

    Raises a one-line error, before any image is made, when a class (or cell) the plan fills has
    no real image to serve as exemplar.
    """

    def __init__(self, plan: SynthesisPlan, data: LabeledImages):
        plan.check_dataset(data.class_names, data.group_names)
        self.data = data
        real = ~np.asarray(data.is_synthetic, dtype=bool)
        use_groups = plan.group_names is not None and data.groups is not None
        self.pools: dict[tuple[int, int], np.ndarray] = {}
        for class_id, name in enumerate(plan.class_names):
            for group_id in range(len(plan.group_names)) if plan.group_names is not None else [None]:
                mask = real & (data.labels == data.class_names.index(name))
                if use_groups:
                    mask &= data.groups == data.group_names.index(plan.group_names[group_id])
                key = (class_id, -1 if group_id is None else group_id)
                wanted = plan.synthetic_counts[class_id] if group_id is None else plan.synthetic_counts[class_id, group_id]
                pool = np.flatnonzero(mask)
                if len(pool) == 0 and wanted > 0:
                    where = f"class '{name}'" + ("" if group_id is None else f", group '{plan.group_names[group_id]}'")
                    raise SynaugError(
                        f"no real image of {where} to serve as exemplar (the plan makes {wanted} of it, and its training "
                        "images are all synthetic or absent); give real images of every planned class (and group), or generate from text only."
                    )
                rng = np.random.default_rng([int(plan.seed), class_id, key[1] + 1])
                self.pools[key] = rng.permutation(pool)
        self.fingerprint = {"count": int(real.sum()), "sha256": _digest(data), "rule": PICK_RULE}

    def position(self, item: PlanItem) -> int:
        """The exemplar's position in the real data."""
        pool = self.pools[(item.class_id, item.key[1])]
        return int(pool[item.index % len(pool)])

    def describe(self, item: PlanItem) -> str:
        """What the manifest records as ``item``'s exemplar: its file for file-backed data, else its position."""
        position = self.position(item)
        return str(self.data.files[position]) if self.data.files is not None else str(position)

    def images(self, items: Sequence[PlanItem]) -> torch.Tensor:
        """The items' exemplars, uint8 N x C x H x W."""
        chosen = [self.data.load(self.position(item)) for item in items]
        if len({tuple(image.shape) for image in chosen}) > 1:
            raise SynaugError("exemplar images differ in size; load the real images with a fixed size (e.g. --size) to use them as exemplars.")
        return torch.stack(chosen)


def _digest(data: LabeledImages) -> str:
    """A short digest of the real images and labels (the store records it with the rule)."""
    digest = hashlib.sha256()
    digest.update(np.asarray(data.labels).tobytes())
    digest.update(np.asarray(data.is_synthetic).tobytes())
    if data.in_memory:
        digest.update(data.images.numpy().tobytes())
    else:
        digest.update("\n".join(str(f) for f in data.files).encode())
    return digest.hexdigest()[:16]
