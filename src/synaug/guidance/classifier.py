"""The feedback classifier: a trained project model, its input format and its class Gaussians.

By default feedback guidance uses the CE model trained on the real long-tailed data of the
same run (one training, reused for every guided sample); any checkpoint written by
`synaug train` works too. :func:`load_feedback_classifier` accepts either. For the hardness
criterion, :func:`class_gaussians_for` fits one Gaussian per class to the classifier's
penultimate features on the real training images and caches them next to the checkpoint
(``class_gaussians.safetensors``), keyed by the classifier's digest and the data's fingerprint.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from synaug.data.dataset import LabeledImages
from synaug.errors import SynaugError
from synaug.guidance.criteria import ClassGaussians
from synaug.train.checkpoint import load_checkpoint
from synaug.train.inference import extract_features
from synaug.train.models import Normalizer
from synaug.train.trainer import TrainResult

GAUSSIANS_FILE = "class_gaussians.safetensors"
DEFAULT_RIDGE = 1e-3


@dataclass
class FeedbackClassifier:
    """A classifier ready for feedback guidance.

    model : a project model (``features(x)``, ``classifier``), in eval mode.
    normalizer : maps [0, 1] (or, via ``from_signed``, [-1, 1]) images to the model's input.
    class_names : the model's classes, in logit order.
    input_size : (H, W) the model was trained on; guided images are resized to it.
    input_channels : channels the model takes (1 or 3).
    digest : identity of the weights (first 12 hex digits of a SHA-256), recorded in the store.
    folder : the checkpoint folder it came from, or None (then nothing is cached).
    """

    model: nn.Module
    normalizer: Normalizer
    class_names: list[str]
    input_size: tuple[int, int]
    input_channels: int
    digest: str
    folder: Path | None = None


def load_feedback_classifier(source: FeedbackClassifier | TrainResult | str | Path, device: str | torch.device = "cpu") -> FeedbackClassifier:
    """The feedback classifier from a checkpoint folder, a :class:`TrainResult`, or as given."""
    if isinstance(source, FeedbackClassifier):
        return source
    if isinstance(source, TrainResult):
        channels, height, width = source.image_shape
        model = source.model.to(device).eval()
        return FeedbackClassifier(model, source.normalizer, list(source.class_names), (int(height), int(width)),
                                  int(channels), model_digest(model))
    folder = Path(source)
    model, normalizer, meta = load_checkpoint(folder, device)
    height, width = meta.get("image_size") or (None, None)
    if height is None:
        raise SynaugError(f"checkpoint {folder} does not record its image size; re-run `synaug train --out {folder.parent}`.")
    return FeedbackClassifier(model, normalizer, [str(n) for n in meta["class_names"]], (int(height), int(width)),
                              int(meta["in_channels"]), model_digest(model), folder)


def model_digest(model: nn.Module) -> str:
    """First 12 hex digits of the SHA-256 over the model's state (names and values, sorted by name)."""
    hasher = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        hasher.update(name.encode())
        hasher.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return hasher.hexdigest()[:12]


def data_fingerprint(data: LabeledImages) -> str:
    """First 16 hex digits of the SHA-256 over the labels and the pixels (or file paths)."""
    hasher = hashlib.sha256()
    hasher.update(np.asarray(data.labels, dtype=np.int64).tobytes())
    if data.in_memory:
        hasher.update(data.images.contiguous().numpy().tobytes())
    else:
        hasher.update("\n".join(str(f) for f in data.files).encode())
    return hasher.hexdigest()[:16]


def fit_class_gaussians(model: nn.Module, data: LabeledImages, normalizer: Normalizer, ridge: float = DEFAULT_RIDGE,
                        batch_size: int = 500) -> ClassGaussians:
    """Per-class Gaussians of ``model.features`` on the *real* images of ``data`` (see :meth:`ClassGaussians.fit`)."""
    real = real_part(data)
    if len(real) == 0:
        raise SynaugError("the data for the class Gaussians holds no real image; give the real training data.")
    features = extract_features(model, real, normalizer, batch_size=batch_size)
    metadata = {"data": data_fingerprint(real), "images": len(real), "class_names": list(real.class_names)}
    return ClassGaussians.fit(features, real.labels, real.num_classes, ridge=ridge, metadata=metadata)


def class_gaussians_for(classifier: FeedbackClassifier, data: LabeledImages | None = None, *,
                        ridge: float = DEFAULT_RIDGE, cache: bool = True) -> ClassGaussians:
    """The classifier's class Gaussians: from the cache next to its checkpoint, or fitted on ``data``.

    A cached file is used when it was fitted by the same weights, with the same ridge, and
    (when ``data`` is given) on the same images; otherwise the Gaussians are fitted on
    ``data`` and, with ``cache``, written next to the checkpoint.
    """
    path = None if classifier.folder is None else classifier.folder / GAUSSIANS_FILE
    fingerprint = None
    if data is not None:
        _check_classes(data.class_names, classifier.class_names, "the data for the class Gaussians")
        data = real_part(data)
        fingerprint = data_fingerprint(data)
    if cache and path is not None and path.is_file():
        cached = ClassGaussians.load(path)
        meta = cached.metadata
        if meta.get("classifier") == classifier.digest and meta.get("ridge") == ridge and fingerprint in (None, meta.get("data")):
            return cached
    if data is None:
        raise SynaugError(
            "the hardness criterion needs the real training data to fit its class Gaussians; "
            "give it with --feedback-data or --real-data (an index file or the plan's dataset options)."
        )
    gaussians = fit_class_gaussians(classifier.model, data, classifier.normalizer, ridge=ridge)
    gaussians.metadata["classifier"] = classifier.digest
    if cache and path is not None:
        gaussians.save(path)
    return gaussians


def real_part(data: LabeledImages) -> LabeledImages:
    """The real (not synthetic) images of ``data``."""
    synthetic = np.asarray(data.is_synthetic, dtype=bool)
    return data.subset(np.flatnonzero(~synthetic)) if synthetic.any() else data


def check_plan_classes(plan_class_names: list[str], classifier: FeedbackClassifier) -> None:
    """Raise unless the plan's classes are the classifier's, in the same order (class ids are shared)."""
    _check_classes(plan_class_names, classifier.class_names, "the plan")


def _check_classes(names: list[str], classifier_names: list[str], what: str) -> None:
    names, classifier_names = [str(n) for n in names], [str(n) for n in classifier_names]
    if names == classifier_names:
        return
    if len(names) != len(classifier_names):
        detail = f"{len(names)} classes, the feedback classifier {len(classifier_names)}"
    else:
        at = next(i for i, (a, b) in enumerate(zip(names, classifier_names)) if a != b)
        detail = f"class {at} '{names[at]}', the feedback classifier '{classifier_names[at]}'"
    raise SynaugError(f"{what} has {detail}; use a feedback classifier trained on the same dataset (same classes, same order).")
