"""The exemplar-conditioned embedded generator: a real image of the class as a second condition.

The exemplar enters through a **frozen image encoder** and a small learned projection:

* the encoder is fixed and has no weights: the exemplar in [-1, 1], average-pooled to a
  ``grid`` x ``grid`` layout (7 x 7 for 28 px: its silhouette and brightness layout, not its
  detail), flattened to ``channels * grid * grid`` numbers (:func:`encode_exemplars`);
* :class:`ExemplarProjection`, a bias-free two-layer MLP whose last layer starts at zero, maps
  that to the caption embedding's 384 dimensions, and :class:`ExemplarConditionedUNet` adds it
  to the caption embedding before the UNet's projection class embedding.

Because the projection is bias-free, the all-zeros embedding ("no exemplar", also the
unconditional row of classifier-free guidance) adds exactly nothing, and because its last
layer starts at zero, a model warm-started from a text-only generator is at first exactly that
generator. Training (``synaug generator train --exemplar-grid 7``) pairs each target image
with one of its ``neighbours`` nearest other images of the same class (:func:`exemplar_pairs`),
so the model learns to vary an exemplar rather than copy it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config

from synaug.errors import SynaugError
from synaug.generate.pipeline import convert_channels
from synaug.generators.text import EMBEDDING_DIM

PROJECTION_FOLDER = "exemplar_projection"
ENCODER_KIND = "pooled-pixels"


def encode_exemplars(images: torch.Tensor, grid: int) -> torch.Tensor:
    """The frozen encoder: uint8 (or [-1, 1] float) ``N x C x H x W`` -> float32 ``N x (C * grid * grid)``."""
    pixels = images.float() / 127.5 - 1.0 if images.dtype == torch.uint8 else images.float()
    return F.adaptive_avg_pool2d(pixels, grid).flatten(1)


class ExemplarProjection(ModelMixin, ConfigMixin):
    """Exemplar embedding -> caption space: bias-free Linear, SiLU, Linear (the last one zero at start)."""

    @register_to_config
    def __init__(self, input_dim: int, hidden_dim: int = 256, output_dim: int = EMBEDDING_DIM):
        super().__init__()
        self.linear_1 = torch.nn.Linear(input_dim, hidden_dim, bias=False)
        self.linear_2 = torch.nn.Linear(hidden_dim, output_dim, bias=False)
        torch.nn.init.zeros_(self.linear_2.weight)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(embeddings)))


class ExemplarConditionedUNet(torch.nn.Module):
    """A text-conditioned ``UNet2DConditionModel`` plus the exemplar pathway, with the UNet's call signature.

    ``exemplar_embeds`` (N x D, from :func:`encode_exemplars`; zero rows mean no exemplar) is
    projected and added to ``class_labels`` (the caption embedding); None is text only.
    """

    def __init__(self, unet: torch.nn.Module, projection: ExemplarProjection):
        super().__init__()
        self.unet = unet
        self.projection = projection

    @property
    def config(self) -> Any:
        return self.unet.config

    def forward(self, sample, timestep, encoder_hidden_states=None, class_labels=None, exemplar_embeds=None, **kwargs):
        if exemplar_embeds is not None:
            class_labels = class_labels + self.projection(exemplar_embeds.to(class_labels.dtype)).to(class_labels.dtype)
        return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states, class_labels=class_labels, **kwargs)


@dataclass(frozen=True)
class ExemplarSettings:
    """What ``synaug_generator.json`` records under ``exemplar`` (the frozen encoder's settings)."""

    grid: int
    channels: int
    encoder: str = ENCODER_KIND

    @property
    def dim(self) -> int:
        return self.channels * self.grid * self.grid

    @classmethod
    def read(cls, data: dict | None, channels: int, where: str) -> ExemplarSettings | None:
        """The settings in a spec's ``exemplar`` entry (None when the generator is text-only)."""
        if data is None:
            return None
        if data.get("encoder", ENCODER_KIND) != ENCODER_KIND or not isinstance(data.get("grid"), int) or data["grid"] < 1:
            raise SynaugError(f"{where}: 'exemplar' must give encoder '{ENCODER_KIND}' and a whole grid >= 1; re-create it with `synaug generator train`.")
        return cls(grid=int(data["grid"]), channels=channels)

    def to_dict(self) -> dict:
        return {"encoder": self.encoder, "grid": self.grid}


class ExemplarCondition:
    """Maps a batch's uint8 exemplars to the UNet's ``exemplar_embeds`` ([zeros; embeddings] under guidance)."""

    kind = "exemplar-conditioned"

    def __init__(self, settings: ExemplarSettings, size: tuple[int, int]):
        self.exemplar = settings
        self.size = tuple(size)

    def settings(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.exemplar.to_dict()}

    def __call__(self, images: torch.Tensor, do_guidance: bool, device: torch.device) -> dict[str, torch.Tensor]:
        pixels = convert_channels(images.float() / 127.5 - 1.0, self.exemplar.channels)
        if tuple(pixels.shape[-2:]) != self.size:
            pixels = F.interpolate(pixels, size=self.size, mode="bilinear", antialias=True, align_corners=False)
        embeds = encode_exemplars(pixels, self.exemplar.grid)
        if do_guidance:
            embeds = torch.cat([torch.zeros_like(embeds), embeds])
        return {"exemplar_embeds": embeds.to(device)}


def load_exemplar_unet(folder: Path, unet: torch.nn.Module, settings: ExemplarSettings) -> ExemplarConditionedUNet:
    """``unet`` joined with the projection saved in ``folder/exemplar_projection``."""
    try:
        dtype = next(unet.parameters()).dtype
        projection = ExemplarProjection.from_pretrained(folder / PROJECTION_FOLDER, torch_dtype=dtype, low_cpu_mem_usage=False)
    except (OSError, ValueError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SynaugError(f"could not load the exemplar projection in {folder} ({detail}); re-save it with `synaug generator train`.") from None
    if projection.config.input_dim != settings.dim:
        raise SynaugError(
            f"{folder}: its exemplar projection takes {projection.config.input_dim} numbers but the spec's encoder gives "
            f"{settings.dim} (grid {settings.grid}); re-save it with `synaug generator train`."
        )
    return ExemplarConditionedUNet(unet, projection)


# ---- training ----------------------------------------------------------------------------
@dataclass
class ExemplarPairs:
    """Training pairs: every image's frozen embedding (plain and flipped) and its nearest same-class neighbours."""

    embeddings: torch.Tensor
    flipped: torch.Tensor
    neighbours: torch.Tensor

    def batch(self, idx: torch.Tensor, flip: torch.Tensor | None, dropout: float, generator: torch.Generator) -> torch.Tensor:
        """Exemplar embeddings for targets ``idx``: a random one of each target's neighbours, flipped with
        its target, zeroed (no exemplar) with probability ``dropout``."""
        device = idx.device
        pick = torch.randint(0, self.neighbours.shape[1], (len(idx),), device=device, generator=generator)
        partner = self.neighbours[idx, pick]
        embeds = self.embeddings[partner]
        if flip is not None:
            embeds = torch.where(flip[:, None], self.flipped[partner], embeds)
        keep = torch.rand(len(idx), device=device, generator=generator) >= dropout
        return embeds * keep[:, None]


def exemplar_pairs(images: torch.Tensor, labels: torch.Tensor, grid: int, neighbours: int, chunk: int = 1024) -> ExemplarPairs:
    """Each image's ``neighbours`` nearest other images of its class in the frozen encoder's space."""
    embeddings = encode_exemplars(images, grid)
    flipped = encode_exemplars(images.flip(-1), grid)
    table = torch.empty(len(images), neighbours, dtype=torch.long, device=images.device)
    for label in labels.unique():
        members = torch.nonzero(labels == label).flatten()
        if len(members) <= neighbours:
            raise SynaugError(
                f"class {int(label)} has {len(members)} training images, too few for {neighbours} exemplar neighbours each; "
                "lower --exemplar-neighbours or add images."
            )
        points = embeddings[members]
        for start in range(0, len(members), chunk):
            distances = torch.cdist(points[start : start + chunk], points)
            rows = torch.arange(start, min(start + chunk, len(members)), device=images.device)
            distances[rows - start, rows] = float("inf")  # never the target itself
            table[members[rows]] = members[distances.topk(neighbours, largest=False).indices]
    return ExemplarPairs(embeddings, flipped, table)
