"""Per-step hooks of the sampling loop: the one place where guidance plugs in.

At every step where a hook is active, the loop in :mod:`synaug.generate.pipeline` builds a
:class:`StepState` and calls the hook with it. The protocol is fixed (no whitelist of
variable names, no signature sniffing):

* ``hook(state)`` returns ``None`` or a **correction tensor shaped like** ``state.latents``.
  The loop adds the corrections of all active hooks to the latents x_t **before the
  scheduler step**; the scheduler then steps from the corrected x_t with the model output
  already computed at the uncorrected x_t (UniPC skips its corrector at such a step, since it
  would rebuild x_t from its saved sample). This is the place feedback guidance needs
  ("add the normalised gradient, rescaled to the latents' norm times a scale, before the
  scheduler step"). A correction row that is not finite (NaN) makes that sample's latents
  non-finite, so the loop marks it failed (``ok`` False) and the runner retries it once;
  a hook uses this to reject a sample (feedback guidance does, for non-finite gradients).
* ``hook.finish(images, class_ids)`` is called once at the end of every batch with the final
  images (model pixel space, [-1, 1], at the generation size); it returns per-image scores
  ``{name: tensor (N,)}`` that end up in ``GenerationOutput.scores``. A hook that keeps
  per-batch state resets it here.
* ``hook.settings()`` describes the hook for the store's manifest.

The loop runs the UNet under ``torch.no_grad``; hooks are called with autograd enabled, so a
hook can differentiate through ``state.predict`` and ``state.decode``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers import UniPCMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from synaug.errors import SynaugError


@dataclass
class StepState:
    """What a hook sees at one step of the loop (batch of N samples).

    step : index i of this step among the ``num_steps`` steps the loop runs (img2img runs fewer).
    timestep : the scheduler's timestep t of this step.
    num_steps : number of denoising steps in this run.
    latents : x_t in the scheduler's space (latent space for VAE models, pixel space otherwise).
    model_output : the guided (classifier-free) UNet output at x_t.
    x0 : predicted clean sample x̂0 (same space as ``latents``), from the scheduler's ᾱ_t and
        prediction type (epsilon, v_prediction or sample).
    class_ids : int64 tensor (N,) of target classes, or None when the caller gave none.
    decode : maps latents or x̂0 to images in model pixel space, about [-1, 1] (VAE decode for
        latent models, identity in pixel space); differentiable.
    predict : ``predict(x_t, through_model=True) -> (model_output, x0)``. With
        ``through_model=True`` the guided UNet is re-run with autograd, so gradients flow
        through the network ("full" path); with ``False`` the model output at this step is a
        constant and only the x_t -> x̂0 map is differentiated ("x̂0-only" path).
        ``decode`` and ``predict`` are valid only during the hook call (the scheduler moves on).
    """

    step: int
    timestep: torch.Tensor
    num_steps: int
    latents: torch.Tensor
    model_output: torch.Tensor
    x0: torch.Tensor
    class_ids: torch.Tensor | None
    decode: Callable[[torch.Tensor], torch.Tensor]
    predict: Callable[..., tuple[torch.Tensor, torch.Tensor]]


class StepHook(ABC):
    """A per-step hook, active on a window of the steps and every ``every``-th step in it.

    The hook runs at step i of n when ``start <= i / n < stop`` and ``i % every == 0``.
    """

    def __init__(self, *, start: float = 0.0, stop: float = 1.0, every: int = 1):
        if not 0.0 <= start < stop <= 1.0:
            raise SynaugError(f"hook window start={start}, stop={stop} is empty or outside [0, 1]; use 0 <= start < stop <= 1.")
        if int(every) < 1:
            raise SynaugError(f"hook every={every} must be a positive number of steps; use every=1 for every step.")
        self.start = float(start)
        self.stop = float(stop)
        self.every = int(every)

    def is_active(self, step: int, num_steps: int) -> bool:
        """Whether the hook runs at ``step`` of a ``num_steps``-step run."""
        fraction = step / num_steps
        return self.start <= fraction < self.stop and step % self.every == 0

    def settings(self) -> dict:
        """JSON-safe description for the store's manifest; subclasses add their parameters."""
        return {"hook": f"{type(self).__module__}.{type(self).__qualname__}",
                "start": self.start, "stop": self.stop, "every": self.every}

    @abstractmethod
    def __call__(self, state: StepState) -> torch.Tensor | None:
        """A correction added to ``state.latents`` before the scheduler step, or None."""

    def finish(self, images: torch.Tensor, class_ids: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Per-image scores of the batch that just finished; ``images`` are final, in [-1, 1]."""
        return {}


def keep_correction(scheduler: SchedulerMixin) -> None:
    """Let a correction added to x_t before this step hold.

    UniPC's corrector rebuilds x_t from its previous sample and model outputs, so it would drop
    most of a correction added to x_t (about half survives one step); skipping the corrector at
    a corrected step makes the predictor start from the corrected x_t, as every other scheduler
    does. The next step's corrector then starts from that corrected sample.
    """
    if isinstance(scheduler, UniPCMultistepScheduler) and scheduler.step_index is not None:
        scheduler.disable_corrector = [*scheduler.disable_corrector, scheduler.step_index - 1]
