"""The filter settings, declared once for the Python API, run configs (``filter:``) and `synaug filter`.

A :class:`FilterSpec` names a CLIP checkpoint and/or a classifier checkpoint with their rules
and an over-generation factor; :meth:`FilterSpec.steps` builds the :class:`FilterStep` list
(CLIP first, then the classifier, as ALIA does). ``classifier: reference`` is the Fashion-MNIST
reference trained on the reserved half (:mod:`synaug.filters.reference`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from synaug.errors import SynaugError
from synaug.filters.reference import REFERENCE_NAME, fashion_mnist_reference
from synaug.filters.scorers import ClassifierScorer, ClipScorer
from synaug.filters.select import FilterStep


@dataclass
class FilterSpec:
    """Which filters run on a store, and their rules.

    Parameters
    ----------
    clip : CLIP checkpoint (folder or hub id) scoring image-prompt similarity, or None.
    clip_threshold, clip_keep_best : keep similarities >= the threshold; then the best k per class (cell).
    negative_prompts : texts an image must be less similar to than to its prompt (CLIP only).
    classifier : classifier checkpoint folder scoring the intended class's probability, ``reference``, or None.
    confidence_threshold, confidence_keep_best : the classifier step's rule.
    overgenerate : make this many times the images needed and keep the best (1: off).
    device : where the scorers run.

    >>> spec = synaug.FilterSpec(classifier="reference", overgenerate=2)  # doctest: +SKIP
    >>> sampler = synaug.SyntheticOverSampler("embedded", store="synthetic/", filter=spec)  # doctest: +SKIP
    """

    clip: str | None = None
    clip_threshold: float | None = None
    clip_keep_best: int | None = None
    negative_prompts: list[str] = field(default_factory=list)
    classifier: str | None = None
    confidence_threshold: float | None = None
    confidence_keep_best: int | None = None
    overgenerate: float = 1.0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.clip is None and (self.clip_threshold is not None or self.clip_keep_best is not None or self.negative_prompts):
            raise SynaugError("clip_threshold, clip_keep_best and negative_prompts need a CLIP checkpoint; set clip.")
        if self.classifier is None and (self.confidence_threshold is not None or self.confidence_keep_best is not None):
            raise SynaugError("confidence_threshold and confidence_keep_best need a classifier; set classifier (a checkpoint or reference).")
        for name in ("clip_threshold", "confidence_threshold", "overgenerate"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
                raise SynaugError(f"filter {name} must be a finite number, got {value!r}.")
        if not 1 <= self.overgenerate <= 100:
            raise SynaugError(f"filter overgenerate {self.overgenerate!r} must lie in [1, 100] (2 makes twice the images needed).")
        if self.overgenerate > 1 and not self.active:
            raise SynaugError("over-generation keeps the best images by a score; set clip or classifier too.")
        for name in ("clip_keep_best", "confidence_keep_best"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise SynaugError(f"filter {name} must be a whole number >= 1, got {value!r}.")

    @property
    def active(self) -> bool:
        """True when at least one filter is set."""
        return self.clip is not None or self.classifier is not None

    def steps(self, cache: str | Path | None = None, data_root: str | Path | None = None, progress: bool = True) -> list[FilterStep]:
        """The filter steps: CLIP, then the classifier. ``cache`` holds the trained reference (``classifier: reference``)."""
        steps = []
        if self.clip is not None:
            scorer = ClipScorer(self.clip, self.negative_prompts, device=self.device)
            steps.append(FilterStep(scorer, self.clip_threshold, self.clip_keep_best))
        if self.classifier is not None:
            checkpoint = self.classifier
            if checkpoint == REFERENCE_NAME:
                if cache is None:
                    raise SynaugError("the reference classifier is trained once and cached; give a cache folder.")
                checkpoint = fashion_mnist_reference(cache, data_root, progress=progress)
            steps.append(FilterStep(ClassifierScorer(checkpoint, device=self.device), self.confidence_threshold, self.confidence_keep_best))
        return steps
