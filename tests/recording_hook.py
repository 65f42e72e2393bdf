"""A test hook that records the decoded x̂0 at its active steps (tests of the hook protocol)."""

from __future__ import annotations

import math

import torch

from synaug.generate.hooks import StepHook, StepState


class RecordX0Hook(StepHook):
    """Records the decoded x̂0 at its active steps and flags diverging predictions.

    ``frames[step]`` holds the decoded x̂0 of every sample seen so far at that step (float,
    CPU, model pixel space), ready for a "denoising trajectory" grid. Per image it reports
    ``x0_abs_max``: the largest |x̂0| pixel value over the recorded steps. A healthy sampler
    keeps it near 1; values in the hundreds are the signature of a scheduler that diverges.
    """

    def __init__(self, *, start: float = 0.0, stop: float = 1.0, every: int = 1):
        super().__init__(start=start, stop=stop, every=every)
        self.frames: dict[int, list[torch.Tensor]] = {}
        self._batch_abs_max: torch.Tensor | None = None

    def __call__(self, state: StepState) -> None:
        with torch.no_grad():
            images = state.decode(state.x0).float()
        self.frames.setdefault(state.step, []).append(images.cpu())
        abs_max = images.abs().flatten(1).amax(1).nan_to_num(math.inf)
        self._batch_abs_max = abs_max if self._batch_abs_max is None else torch.maximum(self._batch_abs_max, abs_max)
        return None

    def trajectory(self) -> dict[int, torch.Tensor]:
        """The recorded x̂0 images per step, all batches concatenated."""
        return {step: torch.cat(parts) for step, parts in sorted(self.frames.items())}

    def finish(self, images: torch.Tensor, class_ids: torch.Tensor | None) -> dict[str, torch.Tensor]:
        abs_max = self._batch_abs_max
        self._batch_abs_max = None
        if abs_max is None:
            abs_max = torch.full((len(images),), math.nan)
        return {"x0_abs_max": abs_max.cpu()}
