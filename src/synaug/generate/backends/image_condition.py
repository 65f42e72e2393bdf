"""Image-embedding conditioning for the Stable Diffusion backend: IP-Adapter and Stable unCLIP.

Both routes embed each image's exemplar with a CLIP vision encoder and hand the embedding to
the UNet as extra keyword arguments; the sampling loop batches them next to the prompts'
condition (unconditional rows first under classifier-free guidance).

* **IP-Adapter**: the adapter weights are loaded into the checkpoint's UNet by diffusers' own
  ``load_ip_adapter`` (decoupled cross-attention plus an image projection), with the CLIP image
  encoder from the adapter's ``image_encoder/`` folder. The adapter is named by a local weight
  file, a local folder holding one, or ``ORG/REPO/PATH/FILE`` on the Hugging Face hub (e.g.
  ``h94/IP-Adapter/models/ip-adapter_sd15.safetensors``). The unconditional embedding is the
  zero vector (the encoder's hidden states of a blank image for "plus" adapters), as in diffusers.
* **Stable unCLIP**: a checkpoint with ``image_encoder/``, ``feature_extractor/``,
  ``image_normalizer/`` and ``image_noising_scheduler/`` next to the SD components
  (``StableUnCLIPImg2ImgPipeline``'s layout); the UNet's class embedding takes the exemplar's
  embedding, noised to ``noise_level`` by diffusers' ``noise_image_embeddings``. The noise of
  image i derives from its seed alone, so an image never depends on its batch.
"""

from __future__ import annotations

import contextlib
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor

from synaug.errors import SynaugError

if TYPE_CHECKING:
    from diffusers import StableUnCLIPImg2ImgPipeline
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

UNCLIP_COMPONENTS = ("image_encoder", "feature_extractor", "image_normalizer", "image_noising_scheduler")
WEIGHT_SUFFIXES = (".safetensors", ".bin")
IMAGE_ENCODER_FOLDER = "image_encoder"


class ImageCondition(ABC):
    """Maps a batch's exemplar images to extra UNet keyword arguments."""

    kind: str

    def __init__(self, image_encoder: CLIPVisionModelWithProjection, feature_extractor: CLIPImageProcessor):
        self.image_encoder = image_encoder
        self.feature_extractor = feature_extractor

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """JSON-safe settings that decide the images (recorded with the store)."""

    @abstractmethod
    def __call__(self, images: torch.Tensor, seeds: list[int], do_guidance: bool, dtype: torch.dtype) -> dict[str, Any]:
        """UNet keyword arguments for uint8 ``images`` (N x C x H x W), [unconditional; conditional] when guiding."""

    def pixel_values(self, images: torch.Tensor) -> torch.Tensor:
        """The CLIP encoder's input for uint8 images (grayscale repeated to RGB), on its device."""
        rgb = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
        arrays = list(rgb.permute(0, 2, 3, 1).cpu().numpy())
        pixels = self.feature_extractor(images=arrays, return_tensors="pt").pixel_values
        return pixels.to(self.image_encoder.device, self.image_encoder.dtype)

    def encode(self, pixels: torch.Tensor, hidden_states: bool = False) -> torch.Tensor:
        """Image embeddings (or penultimate hidden states), one encoder call per image: batched
        matrix products round differently by batch size, and an image must not depend on its batch."""
        outputs = [self.image_encoder(row[None], output_hidden_states=hidden_states) for row in pixels]
        return torch.cat([out.hidden_states[-2] if hidden_states else out.image_embeds for out in outputs])


class IPAdapterCondition(ImageCondition):
    """An IP-Adapter loaded into the UNet; its image embedding goes in ``added_cond_kwargs``."""

    kind = "ip-adapter"

    def __init__(self, image_encoder, feature_extractor, *, name: str, scale: float, hidden_states: bool):
        super().__init__(image_encoder, feature_extractor)
        self.name = name
        self.scale = float(scale)
        self.hidden_states = hidden_states

    def settings(self) -> dict[str, Any]:
        return {"kind": self.kind, "adapter": self.name, "scale": self.scale}

    def __call__(self, images, seeds, do_guidance, dtype):
        pixels = self.pixel_values(images)
        embeds = self.encode(pixels, self.hidden_states)
        unconditional = self.encode(torch.zeros_like(pixels[:1]), True).expand_as(embeds) if self.hidden_states else torch.zeros_like(embeds)
        embeds = (torch.cat([unconditional, embeds]) if do_guidance else embeds).unsqueeze(1)  # one image per sample
        return {"added_cond_kwargs": {"image_embeds": [embeds.to(dtype)]}}


class UnclipCondition(ImageCondition):
    """A Stable unCLIP checkpoint's image embedding, noised to ``noise_level``, as the UNet's class labels."""

    kind = "unclip"

    def __init__(self, pipeline: StableUnCLIPImg2ImgPipeline, *, noise_level: int):
        super().__init__(pipeline.image_encoder, pipeline.feature_extractor)
        self.noiser = pipeline
        self.noise_level = check_noise_level(noise_level, pipeline.image_noising_scheduler.config)

    def settings(self) -> dict[str, Any]:
        return {"kind": self.kind, "noise_level": self.noise_level}

    def __call__(self, images, seeds, do_guidance, dtype):
        embeds = self.encode(self.pixel_values(images)).float()
        generators = [torch.Generator().manual_seed(_embedding_seed(seed)) for seed in seeds]
        noise = randn_tensor(embeds.shape, generator=generators, device=embeds.device, dtype=embeds.dtype)
        embeds = self.noiser.noise_image_embeddings(embeds, self.noise_level, noise=noise)
        if do_guidance:
            embeds = torch.cat([torch.zeros_like(embeds), embeds])
        return {"class_labels": embeds.to(dtype)}


def check_noise_level(noise_level: int, noising_config: dict) -> int:
    """``noise_level`` when it is a timestep of the image noising scheduler (``noising_config``), else a one-line error."""
    steps = int(noising_config.get("num_train_timesteps", 1000))
    if not 0 <= int(noise_level) < steps:
        raise SynaugError(f"noise_level {noise_level} must lie in [0, {steps}); 0 keeps the exemplar's embedding as it is.")
    return int(noise_level)


def is_unclip_checkpoint(folder: Path) -> bool:
    """Whether ``folder`` holds Stable unCLIP's image components (its image normalizer)."""
    return (folder / "image_normalizer").is_dir()


def load_unclip(folder: Path, components: dict[str, Any], load, *, noise_level: int) -> UnclipCondition:
    """The unCLIP condition of checkpoint ``folder``; ``components`` are its loaded SD components,
    ``load(loader, folder, name)`` loads one more with a one-line error naming it."""
    missing = [name for name in UNCLIP_COMPONENTS if not (folder / name).is_dir()]
    if missing:
        raise SynaugError(f"unCLIP checkpoint {folder} is missing its '{missing[0]}' component ({missing[0]}/); re-export it with save_pretrained.")
    with _quiet_loading():
        from diffusers import DDPMScheduler, StableUnCLIPImg2ImgPipeline
        from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        pipeline = StableUnCLIPImg2ImgPipeline(
            feature_extractor=load(CLIPImageProcessor.from_pretrained, folder, "feature_extractor"),
            image_encoder=load(CLIPVisionModelWithProjection.from_pretrained, folder, "image_encoder"),
            image_normalizer=load(StableUnCLIPImageNormalizer.from_pretrained, folder, "image_normalizer"),
            image_noising_scheduler=load(DDPMScheduler.from_pretrained, folder, "image_noising_scheduler"),
            **components,
        )
    expected = 2 * int(pipeline.image_encoder.config.projection_dim)
    got = getattr(components["unet"].config, "projection_class_embeddings_input_dim", None)
    if components["unet"].config.class_embed_type != "projection" or got != expected:
        raise SynaugError(
            f"unCLIP checkpoint {folder}: its UNet takes class embeddings of size {got}, not the image encoder's "
            f"{expected} (embedding + noise level); use the UNet and image encoder of one unCLIP checkpoint."
        )
    return UnclipCondition(pipeline, noise_level=noise_level)


def load_ip_adapter(spec: str, components: dict[str, Any], *, scale: float, local_files_only: bool) -> IPAdapterCondition:
    """Load the IP-Adapter ``spec`` into ``components["unet"]`` with diffusers' ``load_ip_adapter``."""
    source, subfolder, weight_name, name = _adapter_location(spec)
    with _quiet_loading():
        from diffusers import StableDiffusionPipeline
        from diffusers.models.embeddings import ImageProjection

        pipeline = StableDiffusionPipeline(
            **components, safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False
        )
    try:
        with _quiet_loading():
            pipeline.load_ip_adapter(source, subfolder=subfolder, weight_name=weight_name, local_files_only=local_files_only)
    except (OSError, ValueError) as exc:
        raise SynaugError(
            f"could not load IP-Adapter {spec} ({_first_line(exc)}); give its weight file (with {IMAGE_ENCODER_FOLDER}/ next to it), "
            "a folder holding one, or ORG/REPO/PATH/FILE on the hub, downloaded where there is network."
        ) from None
    except (RuntimeError, KeyError) as exc:
        raise _mismatch(spec, f"{type(exc).__name__}: {_first_line(exc)}") from None
    pipeline.set_ip_adapter_scale(float(scale))
    projection = pipeline.unet.encoder_hid_proj.image_projection_layers[0]
    plain = isinstance(projection, ImageProjection)
    encoder = pipeline.image_encoder.config
    wanted, given = (projection.image_embeds.in_features, encoder.projection_dim) if plain else (None, None)
    if wanted != given:
        raise _mismatch(spec, f"its projection takes {wanted}-d image embeddings, its image encoder gives {given}-d")
    return IPAdapterCondition(pipeline.image_encoder, pipeline.feature_extractor, name=name, scale=scale, hidden_states=not plain)


def _adapter_location(spec: str) -> tuple[str, str, str, str]:
    """(folder or hub repo, subfolder, weight file name, display name) of an adapter spec."""
    path = Path(spec).expanduser()
    if path.is_file():
        return str(path.parent), "", path.name, path.name
    if path.is_dir():
        weights = sorted(p.name for p in path.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
        if len(weights) != 1:
            found = ", ".join(weights) or "none"
            raise SynaugError(f"IP-Adapter folder {path} must hold one weight file (.safetensors or .bin), found {found}; pass the file itself.")
        return str(path), "", weights[0], f"{path.resolve().name}/{weights[0]}"
    parts = spec.split("/")
    if len(parts) < 3 or not parts[-1].endswith(WEIGHT_SUFFIXES) or os.path.isabs(spec):
        raise SynaugError(
            f"IP-Adapter {spec} is not a local file or folder, nor ORG/REPO/PATH/FILE on the hub; "
            "e.g. h94/IP-Adapter/models/ip-adapter_sd15.safetensors, or a local copy of it."
        )
    return "/".join(parts[:2]), "/".join(parts[2:-1]), parts[-1], spec


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """Silence the libraries' loading notes (image processors falling back to PIL without
    torchvision, low-memory loading without accelerate, dtype casts of the adapted UNet)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    levels = [(library, library.get_verbosity()) for library in (diffusers_logging, transformers_logging)]
    for library, _ in levels:
        library.set_verbosity_error()
    try:
        yield
    finally:
        for library, level in levels:
            library.set_verbosity(level)


def _mismatch(spec: str, detail: str) -> SynaugError:
    return SynaugError(
        f"IP-Adapter {spec} does not fit this checkpoint ({detail}); use the adapter made for the checkpoint's base model "
        "(e.g. an SD 1.5 adapter for an SD 1.5 checkpoint) with its own image encoder."
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _embedding_seed(seed: int) -> int:
    """A seed for image ``seed``'s embedding noise, independent of its latent noise."""
    return int(np.random.SeedSequence([int(seed), 1]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
