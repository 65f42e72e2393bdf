"""Generator backends: Stable Diffusion checkpoints and synaug's embedded generator.

Both subclass :class:`Generator` and sample through the one loop in
:mod:`synaug.generate.pipeline`.
"""

from synaug.generate.backends.base import GenerationOutput, Generator
from synaug.generate.backends.embedded import EmbeddedBackend, EmbeddedGeneratorSpec
from synaug.generate.backends.stable_diffusion import StableDiffusionBackend

__all__ = ["EmbeddedBackend", "EmbeddedGeneratorSpec", "GenerationOutput", "Generator", "StableDiffusionBackend"]
