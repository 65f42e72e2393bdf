"""A fast, deterministic test double of the generator interface.

Each image is noise drawn from ``torch.Generator().manual_seed(seed)`` plus a stripe
pattern that depends on the prompt, so an image depends only on its own (prompt, seed),
never on the batch. Knobs: ``bad_seeds`` (those images come back not ok, as NaN or blank
images do), ``delay`` (seconds to sleep per batch, to kill a run part-way), ``block_at``
(a seed: a batch holding it creates the file ``blocked_file`` and then waits forever, so a
test can kill the process at a chosen item).

``make_generator`` is a factory usable as ``--generator python:fake_generator:make_generator``
(the tests put this folder on PYTHONPATH); it reads the delay from $FAKE_GENERATOR_DELAY and
``block_at`` and ``blocked_file`` from $FAKE_GENERATOR_BLOCK_AT and $FAKE_GENERATOR_BLOCKED_FILE.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import numpy as np
import torch

from synaug.generate.backends.base import GenerationOutput, Generator


class FakeGenerator(Generator):
    """Seeded noise images; see the module doc."""

    generator_id = "fake"

    def __init__(self, bad_seeds: set[int] = frozenset(), delay: float = 0.0, size: int = 8, steps: int = 1, batch_size: int = 8,
                 block_at: int | None = None, blocked_file: str | None = None):
        self.bad_seeds = set(bad_seeds)
        self.block_at, self.blocked_file = block_at, blocked_file
        self.delay = delay
        self.size = size
        self.steps = steps
        self.batch_size = batch_size
        self.calls: list[list[int]] = []

    def settings(self) -> dict:
        return {"size": self.size, "steps": self.steps}

    def _generate_batch(self, prompts, seeds, *, negative_prompt, reference_images, class_ids, hooks, output_size,
                        output_channels) -> GenerationOutput:
        self.calls.append(list(seeds))
        if self.block_at in seeds:
            Path(self.blocked_file).touch()
            threading.Event().wait()  # until the test kills this process
        if self.delay:
            time.sleep(self.delay)
        height, width = output_size or (self.size, self.size)
        channels = output_channels or 3
        images = torch.stack([self._image(p, s, channels, height, width) for p, s in zip(prompts, seeds)])
        ok = np.array([s not in self.bad_seeds for s in seeds])
        images[torch.from_numpy(~ok)] = 0  # a blank image, as a NaN decode would give
        scores = {"criterion": np.array([s % 1000 / 1000 for s in seeds], dtype=np.float64)}
        return GenerationOutput(images=images, ok=ok, scores=scores)

    @staticmethod
    def _image(prompt: str, seed: int, channels: int, height: int, width: int) -> torch.Tensor:
        noise = torch.randint(0, 200, (channels, height, width), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
        stripe = int(hashlib.sha256(prompt.encode()).hexdigest(), 16) % max(width, 1)
        noise[:, :, stripe] = 255
        return noise


def make_generator(**options) -> FakeGenerator:
    """Factory for ``--generator python:fake_generator:make_generator``."""
    block_at = os.environ.get("FAKE_GENERATOR_BLOCK_AT")
    return FakeGenerator(
        delay=float(os.environ.get("FAKE_GENERATOR_DELAY", "0")), steps=options.get("steps", 1), batch_size=options.get("batch_size", 8),
        block_at=None if block_at is None else int(block_at), blocked_file=os.environ.get("FAKE_GENERATOR_BLOCKED_FILE"),
    )
