"""Feedback guidance: the feedback classifier steers the sampler through the per-step hook.

At every guided step :class:`FeedbackGuidance` predicts x̂0 from x_t, decodes it to pixels
(the VAE for latent models), resizes and normalises it for the classifier, computes the
criterion and returns its gradient with respect to x_t, rescaled per sample to the latents'
L2 norm times ``scale`` (``g / |g| · |x_t| · scale``, the official code's rule). The loop adds
it to x_t before the scheduler step: gradient *ascent* on the criterion.

Two gradient paths:

``x0``
    The UNet's output at this step is held constant; only x_t -> x̂0 -> pixels -> classifier
    is differentiated (one classifier forward and backward per guided step; on a 2-core CPU
    1.09x a plain step).
``full``
    The guided UNet is re-run with autograd and the gradient flows through it too (about
    4x a plain step on CPU).

A sample whose gradient or criterion is not finite gets a NaN correction row, which the
loop records as a failed (not ok) sample: the runner retries it once with its attempt-1
seed, then records it as failed. At the end of every batch the criterion of each final
image, computed by the same classifier, is reported as the score ``criterion`` (the store's
manifest column), and the classifier's probability of the prompted class as
``feedback_target_prob``.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from synaug.data.dataset import LabeledImages
from synaug.errors import SynaugError
from synaug.generate.hooks import StepHook, StepState
from synaug.generate.pipeline import convert_channels
from synaug.guidance.classifier import (
    DEFAULT_RIDGE,
    FeedbackClassifier,
    check_plan_classes,
    class_gaussians_for,
    load_feedback_classifier,
    model_digest,
)
from synaug.guidance.criteria import NEEDS_CLASS_GAUSSIANS, NEEDS_NO_TARGET, ClassGaussians, Criterion, resolve_criterion
from synaug.train.models import Normalizer
from synaug.train.trainer import TrainResult

GRADIENT_PATHS = ("x0", "full")
DEFAULT_SCALE = 0.03
DEFAULT_EVERY = 5
DEFAULT_START, DEFAULT_STOP = 0.0, 1.0  # the guided window of the sampling steps: all of them
DEFAULT_PATH = "x0"


class FeedbackGuidance(StepHook):
    """Classifier-feedback guidance as a :class:`~synaug.generate.hooks.StepHook`.

    Parameters
    ----------
    classifier : a project model (``features(x)``, ``classifier``); put in eval mode and moved
        to the sampler's device on first use.
    normalizer : the classifier's :class:`Normalizer` (images reach it through ``from_signed``).
    criterion : a registered criterion name (:data:`synaug.guidance.criteria.CRITERIA`) or a
        function ``(logits, features, target) -> (N,)``; maximised.
    scale : the correction's L2 norm as a fraction of the latents' norm, per sample (0.03).
    every, start, stop : guide every ``every``-th step within the fraction window [start, stop).
    gradient_path : ``"x0"`` (UNet output held constant) or ``"full"`` (through the UNet).
    class_gaussians : fitted :class:`ClassGaussians`, needed by ``hardness``.
    input_size : (H, W) the classifier takes; None keeps the generated size.
    input_channels : channels the classifier takes; None reads them from its first convolution.
    autocast_dtype : run the classifier under autocast in this dtype (e.g. ``torch.float16`` on a GPU).
    """

    def __init__(
        self,
        classifier: nn.Module,
        normalizer: Normalizer,
        *,
        criterion: str | Criterion = "entropy",
        scale: float = DEFAULT_SCALE,
        every: int = DEFAULT_EVERY,
        start: float = DEFAULT_START,
        stop: float = DEFAULT_STOP,
        gradient_path: str = DEFAULT_PATH,
        class_gaussians: ClassGaussians | None = None,
        input_size: tuple[int, int] | None = None,
        input_channels: int | None = None,
        autocast_dtype: torch.dtype | None = None,
    ):
        super().__init__(start=start, stop=stop, every=every)
        if gradient_path not in GRADIENT_PATHS:
            raise SynaugError(f"unknown gradient path '{gradient_path}'; choose x0 (fast, UNet output held constant) or full (through the UNet).")
        if not 0 <= float(scale) < math.inf:
            raise SynaugError(f"feedback scale {scale} must be a finite non-negative number; the paper uses 0.03.")
        if isinstance(criterion, str):
            self.criterion_name = criterion
            self.criterion = resolve_criterion(criterion, class_gaussians)
            self.needs_target = criterion not in NEEDS_NO_TARGET
        elif callable(criterion):
            self.criterion_name = f"{criterion.__module__}.{getattr(criterion, '__qualname__', type(criterion).__name__)}"
            self.criterion = criterion
            self.needs_target = True
        else:
            raise SynaugError("criterion must be a criterion name or a function (logits, features, target) -> per-sample values.")
        self.model = classifier.eval()
        self.normalizer = normalizer
        self.scale = float(scale)
        self.gradient_path = gradient_path
        self.class_gaussians = class_gaussians
        self.input_size = None if input_size is None else (int(input_size[0]), int(input_size[1]))
        self.input_channels = int(input_channels) if input_channels is not None else _input_channels(classifier)
        self.autocast_dtype = autocast_dtype
        self.classifier_digest = model_digest(classifier)

    # ---- the hook protocol ---------------------------------------------------------------
    def __call__(self, state: StepState) -> torch.Tensor:
        """The rescaled criterion gradient w.r.t. x_t (NaN rows for samples whose gradient is not finite)."""
        target = self._target(state.class_ids, len(state.latents))
        x_t = state.latents.detach().requires_grad_(True)
        _, x0 = state.predict(x_t, through_model=self.gradient_path == "full")
        values = self.evaluate(state.decode(x0), target)[0]
        (gradient,) = torch.autograd.grad(values.sum(), x_t)
        return self.rescale(gradient, x_t.detach(), torch.isfinite(values))

    def finish(self, images: torch.Tensor, class_ids: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The criterion of every final image, and the classifier's probability of its prompted class."""
        target = self._target(class_ids, len(images))
        with torch.no_grad():
            values, logits = self.evaluate(images.float(), target)
            probabilities = torch.softmax(logits.float(), dim=1)
            if target is None:
                target_prob = torch.full((len(images),), float("nan"), device=logits.device)
            else:
                target_prob = probabilities.gather(1, target.view(-1, 1)).squeeze(1)
        return {"criterion": values.float().cpu(), "feedback_target_prob": target_prob.float().cpu()}

    def settings(self) -> dict:
        """What decides the guided images: criterion, scale, schedule, gradient path, classifier."""
        return {
            **super().settings(),
            "criterion": self.criterion_name,
            "scale": self.scale,
            "gradient_path": self.gradient_path,
            "classifier": self.classifier_digest,
            "input_size": None if self.input_size is None else list(self.input_size),
            "input_channels": self.input_channels,
            "class_gaussians": None if self.class_gaussians is None else self.class_gaussians.digest(),
        }

    # ---- the pieces ----------------------------------------------------------------------
    def classifier_input(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> the classifier's channels, size and normalisation (differentiable)."""
        images = convert_channels(images.float(), self.input_channels)
        if self.input_size is not None and tuple(images.shape[-2:]) != self.input_size:
            images = F.interpolate(images, size=self.input_size, mode="bilinear", antialias=True, align_corners=False)
        return self.normalizer.from_signed(images)

    def evaluate(self, images: torch.Tensor, target: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(criterion values (N,), logits) of images in [-1, 1]."""
        inputs = self.classifier_input(images)
        self._follow(inputs.device)
        with torch.autocast(inputs.device.type, dtype=self.autocast_dtype or torch.float32, enabled=self.autocast_dtype is not None):
            features = self.model.features(inputs)
            logits = self.model.classifier(features)
        return self.criterion(logits.float(), features.float(), target), logits

    def rescale(self, gradient: torch.Tensor, latents: torch.Tensor, finite_values: torch.Tensor) -> torch.Tensor:
        """Per sample ``scale · g / |g| · |x_t|``; zero where |g| = 0, NaN where g or the criterion is not finite."""
        flat = gradient.flatten(1)
        finite = torch.isfinite(flat).all(dim=1) & finite_values.to(flat.device)
        flat = torch.where(finite.view(-1, 1), flat, torch.zeros_like(flat))
        gradient_norm = flat.norm(dim=1)
        factor = self.scale * latents.flatten(1).norm(dim=1) / gradient_norm.clamp_min(torch.finfo(flat.dtype).tiny)
        correction = flat * torch.where(gradient_norm > 0, factor, torch.zeros_like(factor)).view(-1, 1)
        correction = torch.where(finite.view(-1, 1), correction, torch.full_like(correction, float("nan")))
        return correction.view_as(gradient)

    def _target(self, class_ids: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        if class_ids is None:
            if self.needs_target:
                raise SynaugError(f"criterion '{self.criterion_name}' needs the prompted class of every image; pass class_ids to generate.")
            return None
        if len(class_ids) != batch:
            raise SynaugError(f"got {len(class_ids)} class ids for {batch} images; give one per image.")
        return class_ids

    def _follow(self, device: torch.device) -> None:
        """Move the classifier to ``device`` once (the sampler's device)."""
        parameter = next(self.model.parameters(), None)
        if parameter is not None and parameter.device != device:
            self.model.to(device)


def feedback_hook(
    criterion: str | Criterion,
    classifier: FeedbackClassifier | TrainResult | str | Path,
    train_data: LabeledImages | None = None,
    *,
    scale: float = DEFAULT_SCALE,
    every: int = DEFAULT_EVERY,
    start: float = DEFAULT_START,
    stop: float = DEFAULT_STOP,
    gradient_path: str = DEFAULT_PATH,
    class_names: list[str] | None = None,
    device: str | torch.device = "cpu",
    ridge: float = DEFAULT_RIDGE,
    autocast_dtype: torch.dtype | None = None,
) -> FeedbackGuidance:
    """A ready :class:`FeedbackGuidance` from a checkpoint folder or a :class:`TrainResult`.

    ``train_data`` (the real training data) is needed only by criteria that use class
    Gaussians (hardness); they are fitted once and cached next to a checkpoint.
    ``class_names`` (the plan's classes) are checked against the classifier's.
    """
    loaded = load_feedback_classifier(classifier, device)
    if class_names is not None:
        check_plan_classes(list(class_names), loaded)
    gaussians = None
    if isinstance(criterion, str) and criterion in NEEDS_CLASS_GAUSSIANS:
        gaussians = class_gaussians_for(loaded, train_data, ridge=ridge)
    return FeedbackGuidance(
        loaded.model, loaded.normalizer, criterion=criterion, scale=scale, every=every, start=start, stop=stop,
        gradient_path=gradient_path, class_gaussians=gaussians, input_size=loaded.input_size,
        input_channels=loaded.input_channels, autocast_dtype=autocast_dtype,
    )


def _input_channels(model: nn.Module) -> int:
    """Input channels of the model's first convolution."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise SynaugError("cannot tell how many input channels the feedback classifier takes; pass input_channels.")
    return int(first.in_channels)
