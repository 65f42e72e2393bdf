"""Stable Diffusion backend: any SD-family checkpoint in diffusers format, sampled by our loop.

The components (CLIP tokenizer and text encoder, UNet, VAE, scheduler config) are loaded with
their own ``from_pretrained`` from a local folder, or from the Hugging Face hub cache for a hub
id; generation always goes through :class:`~synaug.generate.pipeline.SamplingPipeline`, so
per-step hooks work exactly as with the embedded generator.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from synaug.errors import SynaugError
from synaug.generate.backends.base import LoopGenerator, positive_int, resolve_dtype
from synaug.generate.pipeline import (
    SamplingPipeline,
    frozen_module,
    make_scheduler,
    resolve_device,
    resolve_precision,
)

COMPONENTS = ("tokenizer", "text_encoder", "unet", "vae", "scheduler")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class StableDiffusionBackend(LoopGenerator):
    """Text-to-image and img2img (SDEdit) with a Stable Diffusion checkpoint.

    Build it with :meth:`from_pretrained`. ``height``/``width`` default to the UNet's native
    size; ``strength`` is used only when ``generate`` gets reference images.
    """

    backend_name = "stable-diffusion"

    def __init__(
        self,
        *,
        name: str,
        tokenizer: CLIPTokenizer,
        text_encoder: CLIPTextModel,
        unet: UNet2DConditionModel,
        vae: AutoencoderKL,
        scheduler_config: dict,
        device: str = "cpu",
        dtype: str = "fp32",
        scheduler: str = "ddim",
        steps: int = 25,
        guidance_scale: float = 7.5,
        height: int | None = None,
        width: int | None = None,
        strength: float = 0.5,
        batch_size: int = 8,
        decode_batch_size: int | None = None,
        channels_last: bool = False,
    ):
        self.generator_id = f"sd:{name}"
        self.scheduler_name = scheduler
        self.steps = int(steps)
        self.guidance_scale = float(guidance_scale)
        self.strength = float(strength)
        self.batch_size = positive_int(batch_size, "batch_size")
        self.tokenizer = tokenizer
        self.pipeline = SamplingPipeline(
            unet,
            make_scheduler(scheduler, scheduler_config),
            self.encode_prompts,
            vae=vae,
            device=device,
            dtype=resolve_dtype(dtype, resolve_device(device)),
            decode_batch_size=decode_batch_size,
            channels_last=channels_last,
        )
        self.text_encoder = frozen_module(text_encoder, self.pipeline.device, self.pipeline.precision.weight_dtype)
        native = int(unet.config.sample_size) * self.pipeline.vae_scale_factor
        self.height = int(height or native)
        self.width = int(width or native)
        self.pipeline.check_inputs(self.steps, self.height, self.width, self.strength)

    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | os.PathLike,
        *,
        device: str = "cpu",
        dtype: str = "fp32",
        scheduler: str = "ddim",
        steps: int = 25,
        guidance_scale: float = 7.5,
        height: int | None = None,
        width: int | None = None,
        strength: float = 0.5,
        batch_size: int = 8,
        decode_batch_size: int | None = None,
        channels_last: bool = False,
        local_files_only: bool | None = None,
    ) -> StableDiffusionBackend:
        """Load a diffusers-format SD checkpoint from a folder or a hub id.

        A hub id is looked up in the local Hugging Face cache and downloaded only when the hub
        is reachable; ``local_files_only`` defaults to the ``HF_HUB_OFFLINE`` setting.
        """
        make_scheduler(scheduler, {})  # fail on a bad name before loading any weights
        target = resolve_device(device)
        dtype = resolve_dtype(dtype, target)
        weight_dtype = resolve_precision(dtype, target).weight_dtype
        folder, name = _checkpoint_folder(str(path_or_hub_id), local_files_only)
        _check_components(folder)
        tokenizer = _load(CLIPTokenizer.from_pretrained, folder, "tokenizer")
        text_encoder = _load(CLIPTextModel.from_pretrained, folder, "text_encoder")
        unet = _load(partial(UNet2DConditionModel.from_pretrained, torch_dtype=weight_dtype), folder, "unet")
        vae = _load(partial(AutoencoderKL.from_pretrained, torch_dtype=weight_dtype), folder, "vae")
        scheduler_config = _load(DDPMScheduler.load_config, folder, "scheduler")
        return cls(
            name=name,
            tokenizer=tokenizer,
            text_encoder=text_encoder,
            unet=unet,
            vae=vae,
            scheduler_config=scheduler_config,
            device=device,
            dtype=dtype,
            scheduler=scheduler,
            steps=steps,
            guidance_scale=guidance_scale,
            height=height,
            width=width,
            strength=strength,
            batch_size=batch_size,
            decode_batch_size=decode_batch_size,
        )

    def encode_prompts(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """CLIP hidden states of the prompts, padded to the tokenizer's maximum length."""
        tokens = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        with torch.no_grad(), self.pipeline.autocast():
            hidden = self.text_encoder(tokens.input_ids.to(self.pipeline.device), return_dict=False)[0]
        return {"encoder_hidden_states": hidden}


def _checkpoint_folder(path_or_hub_id: str, local_files_only: bool | None) -> tuple[Path, str]:
    """The local checkpoint folder and the name used in the generator id."""
    path = Path(path_or_hub_id).expanduser()
    if path.exists():
        if not path.is_dir():
            raise SynaugError(f"{path} is a file; pass the checkpoint's folder (diffusers format) or a hub id.")
        return path, path.resolve().name
    if not HUB_ID.match(path_or_hub_id):
        raise SynaugError(f"model folder {path} does not exist; check the path, or give a hub id such as 'org/model'.")
    if local_files_only is None:
        local_files_only = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    from diffusers import DiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        folder = DiffusionPipeline.download(path_or_hub_id, local_files_only=local_files_only)
    except (OSError, ValueError) as exc:
        reason = "offline mode" if local_files_only else type(exc).__name__
        raise SynaugError(
            f"'{path_or_hub_id}' is not a local folder and could not be fetched from the Hugging Face hub ({reason}); "
            f"check the path, or download the model where there is network (`hf download {path_or_hub_id}`) "
            "and pass its local folder."
        ) from None
    finally:
        diffusers_logging.set_verbosity(verbosity)
    return Path(folder), path_or_hub_id


def _check_components(folder: Path) -> None:
    """Raise naming the first missing component folder, or an unsupported SDXL layout."""
    if (folder / "text_encoder_2").is_dir():
        raise SynaugError(f"{folder} is an SDXL-style checkpoint (two text encoders), which is not supported; use an SD 1.x/2.x checkpoint.")
    missing = [name for name in COMPONENTS if not (folder / name).is_dir()]
    if missing:
        raise SynaugError(
            f"model folder {folder} is missing its '{missing[0]}' component ({missing[0]}/); "
            f"a diffusers Stable Diffusion checkpoint has {', '.join(c + '/' for c in COMPONENTS)}."
        )


def _load(load: Callable, folder: Path, component: str):
    """``load(folder, subfolder=component)`` with a one-line error naming the component."""
    try:
        return load(folder, subfolder=component)
    except (OSError, ValueError, KeyError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SynaugError(
            f"could not load the '{component}' component from {folder / component} ({detail}); "
            "re-export the checkpoint in diffusers format (save_pretrained)."
        ) from None
