"""Feedback criteria: differentiable per-sample scores of the feedback classifier's outputs.

Every criterion is a function ``criterion(logits, features, target) -> (N,) tensor`` of the
classifier's logits ``(N, K)``, its penultimate features ``(N, D)`` and the prompted classes
``(N,)``; guidance **maximises** it (gradient ascent pushes samples to where the classifier
is uncertain or wrong). Built in:

``loss``
    Cross-entropy of the logits against the prompted class.
``entropy``
    Predictive entropy of the softmax (the target is not used).
``hardness``
    Sehwag et al. (CVPR 2022): the negative log-likelihood of the sample's features under the
    prompted class's Gaussian N(μ_y, Σ_y) fitted to the real training features
    (:class:`ClassGaussians`): ``0.5·(f-μ_y)ᵀΣ_y⁻¹(f-μ_y) + 0.5·log det Σ_y + 0.5·D·log 2π``.

A user adds a criterion (say a margin) with :func:`register_criterion`; the sampler looks
criteria up by name, so nothing else changes.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
import torch.nn.functional as F
from safetensors import SafetensorError

from synaug.data.registry import write_atomic
from synaug.errors import SynaugError

Criterion = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``criterion(logits, features, target) -> per-sample values (N,)``, to be maximised."""

GAUSSIANS_FORMAT = "synaug-class-gaussians/1"


# ---- the class Gaussians of the hardness score -------------------------------------------
class ClassGaussians:
    """One Gaussian N(μ_c, Σ_c) per class over a classifier's penultimate features.

    Parameters
    ----------
    means : (C, D) class means.
    covariances : (C, D, D) symmetric positive-definite class covariances.
    counts : (C,) samples each class was fitted on (0 when built by hand).
    metadata : JSON-safe facts about the fit (data fingerprint, classifier digest, ridge ...).

    The Cholesky factor of every Σ_c is taken once, so scoring is a triangular whitening per
    class present in the batch, never a per-sample D x D matrix.
    """

    def __init__(self, means: torch.Tensor, covariances: torch.Tensor, counts: torch.Tensor | None = None,
                 metadata: dict | None = None):
        means = torch.as_tensor(means, dtype=torch.float64)
        covariances = torch.as_tensor(covariances, dtype=torch.float64)
        if means.ndim != 2 or covariances.shape != (*means.shape, means.shape[1]):
            raise SynaugError(
                f"class Gaussians need means (C, D) and covariances (C, D, D), got {tuple(means.shape)} and "
                f"{tuple(covariances.shape)}; refit them with fit_class_gaussians."
            )
        cholesky, info = torch.linalg.cholesky_ex(covariances)
        if bool((info != 0).any()):
            bad = int(torch.nonzero(info)[0, 0])
            raise SynaugError(f"the covariance of class {bad} is not positive definite; refit with a larger ridge.")
        self.means = means
        self.covariances = covariances
        self.counts = torch.zeros(len(means), dtype=torch.int64) if counts is None else torch.as_tensor(counts, dtype=torch.int64)
        self.metadata = dict(metadata or {})
        eye = torch.eye(means.shape[1], dtype=torch.float64).expand_as(covariances)
        self._whiten = torch.linalg.solve_triangular(cholesky, eye, upper=False)  # L⁻¹, so |L⁻¹(f-μ)|² = Mahalanobis²
        self._half_logdet = torch.log(torch.diagonal(cholesky, dim1=1, dim2=2)).sum(dim=1)
        self._on: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    @property
    def num_classes(self) -> int:
        return int(self.means.shape[0])

    @property
    def feature_dim(self) -> int:
        return int(self.means.shape[1])

    @classmethod
    def fit(cls, features: torch.Tensor | np.ndarray, labels: np.ndarray | torch.Tensor, num_classes: int,
            ridge: float = 1e-3, metadata: dict | None = None) -> ClassGaussians:
        """Gaussians fitted per class with Ledoit-Wolf shrinkage plus a small ridge.

        With few samples per class (5 for the rarest Fashion-MNIST-LT class, against 64 feature
        dimensions) the sample covariance is singular. Each class covariance is therefore the
        Ledoit-Wolf estimate (scikit-learn: the sample covariance shrunk toward a scaled identity
        with the data-driven coefficient) plus ``ridge`` times the mean within-class feature
        variance on the diagonal, which keeps it invertible and well conditioned. Every class
        needs at least 2 samples.
        """
        from sklearn.covariance import LedoitWolf

        features = np.asarray(torch.as_tensor(features, dtype=torch.float64))
        labels = np.asarray(torch.as_tensor(labels)).astype(np.int64)
        if features.ndim != 2 or len(features) != len(labels):
            raise SynaugError(f"need features (N, D) and N labels to fit class Gaussians, got {features.shape} and {labels.shape}.")
        if ridge < 0:
            raise SynaugError(f"ridge {ridge} must be non-negative; 1e-3 is a good default.")
        counts = np.bincount(labels, minlength=num_classes)
        if len(counts) > num_classes:
            raise SynaugError(f"labels reach {len(counts) - 1} but the classifier has {num_classes} classes; use data of the classifier's classes.")
        if counts.min() < 2:
            rare = int(np.argmin(counts))
            raise SynaugError(f"class {rare} has {int(counts[rare])} real image(s); the hardness score needs at least 2 per class to fit its Gaussian.")
        dim = features.shape[1]
        means = np.stack([features[labels == c].mean(axis=0) for c in range(num_classes)])
        centred = features - means[labels]
        scale = float((centred**2).mean()) or 1.0  # mean within-class variance per dimension
        covariances, shrinkages = [], []
        for c in range(num_classes):
            estimate = LedoitWolf().fit(features[labels == c])
            covariances.append(estimate.covariance_ + ridge * scale * np.eye(dim))
            shrinkages.append(float(estimate.shrinkage_))
        meta = {"ridge": ridge, "ridge_variance": scale, "shrinkage": shrinkages, "estimator": "ledoit-wolf", **(metadata or {})}
        return cls(torch.from_numpy(means), torch.from_numpy(np.stack(covariances)), torch.from_numpy(counts), meta)

    def negative_log_likelihood(self, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """-log N(f; μ_y, Σ_y) per sample (differentiable in ``features``), shape (N,)."""
        if features.ndim != 2 or features.shape[1] != self.feature_dim:
            raise SynaugError(
                f"features have shape {tuple(features.shape)} but the class Gaussians are {self.feature_dim}-d; "
                "fit them on the same classifier."
            )
        means, whiten, half_logdet = self._tensors(features.device, features.dtype)
        target = target.to(features.device)
        squared = torch.zeros(len(features), device=features.device, dtype=features.dtype)
        for c in torch.unique(target).tolist():
            rows = torch.nonzero(target == c).flatten()
            whitened = (features[rows] - means[c]) @ whiten[c].T
            squared = squared.index_put((rows,), (whitened**2).sum(dim=1))
        return 0.5 * squared + half_logdet[target] + 0.5 * self.feature_dim * math.log(2 * math.pi)

    def _tensors(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Means, whitening matrices and half log-determinants on ``device`` in ``dtype`` (cached)."""
        key = (str(device), dtype)
        if key not in self._on:
            self._on[key] = tuple(t.to(device=device, dtype=dtype) for t in (self.means, self._whiten, self._half_logdet))
        return self._on[key]

    def digest(self) -> str:
        """First 12 hex digits of the SHA-256 of the means and covariances."""
        hasher = hashlib.sha256()
        for tensor in (self.means, self.covariances):
            hasher.update(tensor.contiguous().numpy().tobytes())
        return hasher.hexdigest()[:12]

    def save(self, path: str | Path) -> Path:
        """Write means, covariances, counts and metadata as one safetensors file, atomically."""
        path = Path(path)
        tensors = {"means": self.means.contiguous(), "covariances": self.covariances.contiguous(), "counts": self.counts.contiguous()}
        header = {"format": GAUSSIANS_FORMAT, "metadata": json.dumps(self.metadata, sort_keys=True)}
        try:
            write_atomic(path, safetensors.torch.save(tensors, metadata=header))
        except OSError as exc:
            raise SynaugError(f"cannot write {path} ({exc.strerror or exc}); make the checkpoint folder writable.") from None
        return path

    @classmethod
    def load(cls, path: str | Path) -> ClassGaussians:
        """The Gaussians :meth:`save` wrote to ``path``."""
        path = Path(path)
        try:
            with safetensors.safe_open(path, framework="pt") as handle:
                header = handle.metadata() or {}
                tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        except FileNotFoundError:
            raise SynaugError(f"class Gaussians file {path} does not exist; fit it with fit_class_gaussians.") from None
        except (SafetensorError, OSError) as exc:
            raise SynaugError(f"{path} is not a readable class Gaussians file ({exc}); delete it so it is fitted again.") from None
        if header.get("format") != GAUSSIANS_FORMAT or not {"means", "covariances", "counts"} <= set(tensors):
            raise SynaugError(f"{path} is not a synaug class Gaussians file ({GAUSSIANS_FORMAT}); delete it so it is fitted again.")
        return cls(tensors["means"], tensors["covariances"], tensors["counts"], json.loads(header.get("metadata", "{}")))


# ---- the criteria ------------------------------------------------------------------------
def loss(logits: torch.Tensor, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``logits`` against the prompted class ``target``, per sample."""
    return F.cross_entropy(logits.float(), target, reduction="none")


def entropy(logits: torch.Tensor, features: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Predictive entropy ``-Σ p log p`` of the softmax, per sample (in nats; 0·log 0 = 0)."""
    log_p = F.log_softmax(logits.float(), dim=1)
    return -(log_p.exp() * log_p.clamp_min(torch.finfo(log_p.dtype).min)).sum(dim=1)


def hardness(logits: torch.Tensor, features: torch.Tensor, target: torch.Tensor, *,
             class_gaussians: ClassGaussians) -> torch.Tensor:
    """Negative log-likelihood of ``features`` under the prompted class's Gaussian, per sample."""
    return class_gaussians.negative_log_likelihood(features.float(), target)


CRITERIA: dict[str, Criterion] = {"loss": loss, "entropy": entropy, "hardness": hardness}
"""Criteria by name; extend with :func:`register_criterion`."""

NEEDS_CLASS_GAUSSIANS: set[str] = {"hardness"}
"""Criteria called with the keyword ``class_gaussians=`` (a :class:`ClassGaussians`)."""

NEEDS_NO_TARGET: set[str] = {"entropy"}
"""Criteria that do not use the prompted class (they run without class ids)."""


def register_criterion(name: str, function: Callable[..., torch.Tensor], *, needs_class_gaussians: bool = False,
                       needs_target: bool = True, replace: bool = False) -> None:
    """Make ``function(logits, features, target)`` available as criterion ``name``.

    With ``needs_class_gaussians`` it is also called with ``class_gaussians=`` (the fitted
    :class:`ClassGaussians`). ``replace`` allows redefining an existing name.
    """
    if not isinstance(name, str) or not name or any(ch.isspace() for ch in name):
        raise SynaugError(f"criterion name {name!r} must be a non-empty word; e.g. 'margin'.")
    if not callable(function):
        raise SynaugError(f"criterion '{name}' must be a function (logits, features, target) -> per-sample values.")
    if name in CRITERIA and not replace:
        raise SynaugError(f"criterion '{name}' exists already; pick another name or pass replace=True.")
    CRITERIA[name] = function
    NEEDS_CLASS_GAUSSIANS.discard(name)
    NEEDS_NO_TARGET.discard(name)
    if needs_class_gaussians:
        NEEDS_CLASS_GAUSSIANS.add(name)
    if not needs_target:
        NEEDS_NO_TARGET.add(name)


def resolve_criterion(name: str, class_gaussians: ClassGaussians | None = None) -> Criterion:
    """The three-argument criterion called ``name`` (with its class Gaussians bound when it needs them)."""
    if name not in CRITERIA:
        raise SynaugError(f"unknown feedback criterion '{name}'; choose one of {', '.join(sorted(CRITERIA))} or register it with register_criterion.")
    function = CRITERIA[name]
    if name not in NEEDS_CLASS_GAUSSIANS:
        return function
    if class_gaussians is None:
        raise SynaugError(
            f"criterion '{name}' needs class Gaussians fitted on the real training features; "
            "give the real data (--feedback-data) or fit them with fit_class_gaussians."
        )
    return partial(function, class_gaussians=class_gaussians)
