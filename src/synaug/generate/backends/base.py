"""The generator interface every backend implements, and what it returns.

:class:`Generator.generate` checks its inputs, splits them into batches of
``batch_size`` and calls the backend's ``_generate_batch``; results are concatenated.
One image is made per (prompt, seed); image i depends only on ``prompts[i]``, ``seeds[i]``
(and its reference image), never on which other images share its batch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from synaug.errors import SynaugError
from synaug.generate.hooks import StepHook
from synaug.generate.pipeline import GenerationOutput, SamplingPipeline, check_guidance_steps

__all__ = ["GenerationOutput", "Generator", "LoopGenerator", "check_generate_inputs", "positive_int", "resolve_dtype"]

MAX_SEED = 2**63 - 1
DTYPES = ("auto", "fp32", "fp16", "bf16")


class Generator(ABC):
    """A text-to-image generator: prompts and seeds in, uint8 images out.

    Subclasses set ``generator_id`` and ``batch_size`` and implement :meth:`settings` and
    :meth:`_generate_batch`.
    """

    generator_id: str
    batch_size: int = 8

    @abstractmethod
    def settings(self) -> dict:
        """JSON-safe sampler settings that decide the images (for the manifest and store identity)."""

    def generate(
        self,
        prompts: list[str],
        seeds: list[int],
        *,
        negative_prompt: str | None = None,
        reference_images: torch.Tensor | None = None,
        class_ids: Sequence[int] | None = None,
        hooks: Sequence[StepHook] = (),
        output_size: tuple[int, int] | None = None,
        output_channels: int | None = None,
    ) -> GenerationOutput:
        """One image per (prompt, seed); see the module docstring for the guarantees.

        reference_images : uint8 ``N x C x H x W`` real images for img2img / SDEdit, or None.
        class_ids : target class of each image, passed through to hooks.
        hooks : per-step hooks (:mod:`synaug.generate.hooks`).
        output_size : (H, W) to resize to; None keeps the generator's size.
        output_channels : 1 (grayscale) or 3 (RGB); None keeps the generator's channels.
        """
        prompts, seeds, class_tensor = check_generate_inputs(
            prompts, seeds, reference_images, class_ids, output_size, output_channels
        )
        parts = []
        for begin in range(0, len(prompts), self.batch_size):
            batch = slice(begin, begin + self.batch_size)
            parts.append(
                self._generate_batch(
                    prompts[batch],
                    seeds[batch],
                    negative_prompt=negative_prompt,
                    reference_images=None if reference_images is None else reference_images[batch],
                    class_ids=None if class_tensor is None else class_tensor[batch],
                    hooks=hooks,
                    output_size=output_size,
                    output_channels=output_channels,
                )
            )
        if not parts:
            channels = output_channels or 3
            height, width = output_size or (0, 0)
            return GenerationOutput(torch.zeros(0, channels, height, width, dtype=torch.uint8), np.zeros(0, dtype=bool))
        return GenerationOutput.concat(parts)

    @abstractmethod
    def _generate_batch(
        self,
        prompts: list[str],
        seeds: list[int],
        *,
        negative_prompt: str | None,
        reference_images: torch.Tensor | None,
        class_ids: torch.Tensor | None,
        hooks: Sequence[StepHook],
        output_size: tuple[int, int] | None,
        output_channels: int | None,
    ) -> GenerationOutput:
        """Generate one batch (inputs already checked)."""


class LoopGenerator(Generator):
    """A backend whose batches run through synaug's one sampling loop with its own sampler settings.

    Subclasses set ``backend_name``, ``pipeline`` (a :class:`~synaug.generate.pipeline.SamplingPipeline`),
    ``scheduler_name``, ``steps``, ``guidance_scale``, ``height``, ``width`` and ``strength``;
    ``guidance_steps`` (None: every step) limits classifier-free guidance to the first steps.
    """

    backend_name: str
    pipeline: SamplingPipeline
    scheduler_name: str
    steps: int
    guidance_scale: float
    guidance_steps: int | None = None
    height: int
    width: int
    strength: float

    def settings(self) -> dict:
        """Sampler settings that decide the images (batch size and device do not)."""
        return {
            "backend": self.backend_name,
            "scheduler": self.scheduler_name,
            "scheduler_class": type(self.pipeline.scheduler).__name__,
            "steps": self.steps,
            "guidance_scale": self.guidance_scale,
            **({} if self.guidance_steps is None else {"guidance_steps": self.guidance_steps}),
            "dtype": self.pipeline.precision.name,
            "height": self.height,
            "width": self.width,
            "strength": self.strength,
        }

    def _generate_batch(
        self,
        prompts: list[str],
        seeds: list[int],
        *,
        negative_prompt: str | None,
        reference_images: torch.Tensor | None,
        class_ids: torch.Tensor | None,
        hooks: Sequence[StepHook],
        output_size: tuple[int, int] | None,
        output_channels: int | None,
    ) -> GenerationOutput:
        return self.pipeline(
            prompts,
            seeds,
            num_steps=self.steps,
            guidance_scale=self.guidance_scale,
            guidance_steps=self.guidance_steps,
            height=self.height,
            width=self.width,
            negative_prompt=negative_prompt,
            strength=self.strength,
            class_ids=class_ids,
            hooks=hooks,
            output_size=output_size,
            output_channels=output_channels,
            **self.exemplar_inputs(reference_images, seeds),
        )

    def steps_run(self, with_exemplars: bool) -> int:
        """Sampling steps each image runs: all of them, or the last ``strength`` fraction when
        img2img starts from an exemplar (the steps the loop's hooks see)."""
        return min(int(self.steps * self.strength), self.steps) if with_exemplars else self.steps

    def exemplar_inputs(self, reference_images: torch.Tensor | None, seeds: list[int]) -> dict[str, Any]:
        """How a batch's exemplars enter the sampling loop: here img2img / SDEdit from their pixels."""
        return {"reference_images": reference_images}


def guided_steps(guidance_steps: int | None, steps: int, guidance_scale: float) -> int | None:
    """``guidance_steps`` validated, and None where it limits nothing (it covers every step, or guidance is off),
    so that a setting which guides every step records and draws exactly what no setting does."""
    check_guidance_steps(guidance_steps)
    if guidance_steps is None or guidance_steps >= steps or float(guidance_scale) == 1.0:
        return None
    return int(guidance_steps)


def check_generate_inputs(
    prompts: Sequence[str],
    seeds: Sequence[int],
    reference_images: torch.Tensor | None,
    class_ids: Sequence[int] | None,
    output_size: tuple[int, int] | None,
    output_channels: int | None,
) -> tuple[list[str], list[int], torch.Tensor | None]:
    """Validated prompts, seeds and class ids (as an int64 tensor or None)."""
    prompts = list(prompts)
    seeds = [int(seed) for seed in seeds]
    if not all(isinstance(prompt, str) for prompt in prompts):
        raise SynaugError("every prompt must be a string; build prompts from the plan's templates.")
    if len(seeds) != len(prompts):
        raise SynaugError(f"{len(prompts)} prompts but {len(seeds)} seeds; give one seed per prompt.")
    if any(not 0 <= seed <= MAX_SEED for seed in seeds):
        raise SynaugError(f"seeds must lie in [0, 2**63 - 1]; derive them with a hash reduced modulo {MAX_SEED + 1}.")
    if reference_images is not None:
        if reference_images.dtype != torch.uint8 or reference_images.ndim != 4 or reference_images.shape[1] not in (1, 3):
            raise SynaugError("reference images must be a uint8 tensor N x C x H x W with 1 or 3 channels.")
        if len(reference_images) != len(prompts):
            raise SynaugError(f"{len(prompts)} prompts but {len(reference_images)} reference images; give one per prompt.")
    class_tensor = None
    if class_ids is not None:
        class_tensor = torch.as_tensor(list(class_ids), dtype=torch.int64)
        if len(class_tensor) != len(prompts):
            raise SynaugError(f"{len(prompts)} prompts but {len(class_tensor)} class ids; give one per prompt.")
    if output_size is not None and (len(output_size) != 2 or min(int(s) for s in output_size) < 1):
        raise SynaugError(f"output_size {output_size} must be (height, width) in pixels, both at least 1.")
    if output_channels not in (None, 1, 3):
        raise SynaugError(f"output_channels {output_channels} must be 1 (grayscale) or 3 (RGB).")
    return prompts, seeds, class_tensor


def positive_int(value: int, name: str) -> int:
    """``value`` as an int, or a SynaugError when it is below 1."""
    if int(value) < 1:
        raise SynaugError(f"{name}={value} must be at least 1.")
    return int(value)


def resolve_dtype(dtype: str, device: torch.device) -> str:
    """``dtype`` with "auto" resolved as run configs mean it: bf16 where ``device`` runs it natively
    (fp16 on a GPU without bf16), else fp32."""
    if dtype not in DTYPES:
        raise SynaugError(f"unknown dtype '{dtype}'; choose auto, fp32, fp16 (CUDA) or bf16.")
    if dtype != "auto":
        return dtype
    from synaug.train.trainer import autocast_dtype

    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(autocast_dtype("auto", device), "fp32")
