"""Stable Diffusion backend: any SD-family checkpoint in diffusers format, sampled by our loop.

The components (CLIP tokenizer and text encoder, UNet, VAE, scheduler config) are loaded with
their own ``from_pretrained`` from a local folder, or from the Hugging Face hub cache for a hub
id; generation always goes through :class:`~synaug.generate.pipeline.SamplingPipeline`, so
per-step hooks work exactly as with the embedded generator.

Exemplars (``reference_images``) enter by img2img / SDEdit from their pixels, and, with an
IP-Adapter or a Stable unCLIP checkpoint (:mod:`~synaug.generate.backends.image_condition`),
through their image embedding as well.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from synaug.errors import SynaugError
from synaug.generate.backends.base import LoopGenerator, guided_steps, positive_int, resolve_dtype
from synaug.generate.backends.image_condition import (
    ImageCondition,
    check_noise_level,
    is_unclip_checkpoint,
    load_ip_adapter,
    load_unclip,
)
from synaug.generate.exemplars import DEFAULT_STRENGTH, check_strength
from synaug.generate.pipeline import SamplingPipeline, frozen_module, resolve_device, resolve_precision
from synaug.generate.schedulers import make_scheduler

COMPONENTS = ("tokenizer", "text_encoder", "unet", "vae", "scheduler")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class StableDiffusionBackend(LoopGenerator):
    """Text-to-image, img2img (SDEdit) and image-embedding conditioning with a Stable Diffusion checkpoint.

    Build it with :meth:`from_pretrained`. ``height``/``width`` default to the UNet's native
    size; ``strength`` is used only when ``generate`` gets exemplars (``reference_images``).
    With an ``image_condition`` every image needs an exemplar; ``strength`` 1 (its default
    there) starts from noise, so the exemplar enters through its embedding only.
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
        guidance_steps: int | None = None,
        height: int | None = None,
        width: int | None = None,
        strength: float | None = None,
        batch_size: int = 8,
        decode_batch_size: int | None = None,
        channels_last: bool = False,
        image_condition: ImageCondition | None = None,
    ):
        self.generator_id = f"sd:{name}"
        self.scheduler_name = scheduler
        self.steps = int(steps)
        self.guidance_scale = float(guidance_scale)
        self.guidance_steps = guided_steps(guidance_steps, self.steps, self.guidance_scale)
        self.strength = check_strength(strength if strength is not None else 1.0 if image_condition else DEFAULT_STRENGTH)
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
        self.image_condition = image_condition
        if image_condition is not None:
            image_condition.image_encoder = frozen_module(
                image_condition.image_encoder, self.pipeline.device, self.pipeline.precision.weight_dtype
            )
        native = int(unet.config.sample_size) * self.pipeline.vae_scale_factor
        self.height = int(height or native)
        self.width = int(width or native)
        self.pipeline.check_inputs(self.steps, self.height, self.width, self.strength, self.guidance_scale, self.guidance_steps)

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
        guidance_steps: int | None = None,
        height: int | None = None,
        width: int | None = None,
        strength: float | None = None,
        batch_size: int = 8,
        decode_batch_size: int | None = None,
        channels_last: bool = False,
        local_files_only: bool | None = None,
        ip_adapter: str | None = None,
        ip_adapter_scale: float = 1.0,
        noise_level: int = 0,
    ) -> StableDiffusionBackend:
        """Load a diffusers-format SD checkpoint from a folder or a hub id.

        A hub id is looked up in the local Hugging Face cache and downloaded only when the hub
        is reachable; ``local_files_only`` defaults to the ``HF_HUB_OFFLINE`` setting.
        ``ip_adapter`` (a weight file, a folder holding one, or ORG/REPO/PATH/FILE on the hub)
        is loaded into the UNet with diffusers' ``load_ip_adapter`` at ``ip_adapter_scale``; a
        Stable unCLIP checkpoint conditions on the exemplar's embedding noised to ``noise_level``.
        """
        make_scheduler(scheduler, {})  # fail on a bad name before loading any weights
        if strength is not None:
            check_strength(strength)
        target = resolve_device(device)
        dtype = resolve_dtype(dtype, target)
        weight_dtype = resolve_precision(dtype, target).weight_dtype
        if local_files_only is None:
            local_files_only = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
        folder, name = _checkpoint_folder(str(path_or_hub_id), local_files_only)
        _check_components(folder)
        _check_image_settings(folder, ip_adapter, ip_adapter_scale, noise_level)
        tokenizer = _load(CLIPTokenizer.from_pretrained, folder, "tokenizer")
        text_encoder = _load(CLIPTextModel.from_pretrained, folder, "text_encoder")
        unet = _load(partial(UNet2DConditionModel.from_pretrained, torch_dtype=weight_dtype), folder, "unet")
        vae = _load(partial(AutoencoderKL.from_pretrained, torch_dtype=weight_dtype), folder, "vae")
        scheduler_config = _load(DDPMScheduler.load_config, folder, "scheduler")
        image_condition = _image_condition(
            folder,
            {"tokenizer": tokenizer, "text_encoder": text_encoder, "unet": unet, "vae": vae, "scheduler": DDPMScheduler.from_config(scheduler_config)},
            ip_adapter=ip_adapter, ip_adapter_scale=ip_adapter_scale, noise_level=noise_level, local_files_only=local_files_only,
        )
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
            guidance_steps=guidance_steps,
            height=height,
            width=width,
            strength=strength,
            batch_size=batch_size,
            decode_batch_size=decode_batch_size,
            channels_last=channels_last,
            image_condition=image_condition,
        )

    def settings(self) -> dict:
        """The sampler settings, plus the image condition's when there is one."""
        settings = super().settings()
        if self.image_condition is not None:
            settings["image_condition"] = self.image_condition.settings()
        return settings

    def steps_run(self, with_exemplars: bool) -> int:
        """All steps when the exemplars enter through their embedding only (strength 1)."""
        return self.steps if self.image_condition is not None and self.strength >= 1.0 else super().steps_run(with_exemplars)

    def exemplar_inputs(self, reference_images: torch.Tensor | None, seeds: list[int]) -> dict[str, Any]:
        """Pixels for SDEdit (below strength 1 when conditioning on embeddings) and the exemplars' embedding."""
        if self.image_condition is None:
            return super().exemplar_inputs(reference_images, seeds)
        if reference_images is None:
            raise SynaugError(
                f"generator {self.generator_id} conditions every image on an exemplar ({self.image_condition.kind}); "
                "give real exemplars (--reference real, or generator.exemplars: real in a run config), or drop the image conditioning."
            )
        with torch.no_grad(), self.pipeline.autocast():
            condition = self.image_condition(
                reference_images, seeds, float(self.guidance_scale) != 1.0, self.pipeline.precision.weight_dtype
            )
        return {"reference_images": reference_images if self.strength < 1.0 else None, "image_condition": condition}

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


def _check_image_settings(folder: Path, ip_adapter: str | None, ip_adapter_scale: float, noise_level: int) -> None:
    """One-line errors for image-embedding settings that do not apply to checkpoint ``folder``."""
    unclip = is_unclip_checkpoint(folder)
    if unclip and ip_adapter is not None:
        raise SynaugError(f"{folder} is a Stable unCLIP checkpoint, which conditions on the exemplar's embedding itself; drop the IP-Adapter.")
    if not unclip and noise_level:
        raise SynaugError(f"noise_level {noise_level} applies to Stable unCLIP checkpoints, and {folder} is none; drop it.")
    if unclip and noise_level:
        check_noise_level(noise_level, _load(DDPMScheduler.load_config, folder, "image_noising_scheduler"))
    if ip_adapter is None and float(ip_adapter_scale) != 1.0:
        raise SynaugError(f"ip_adapter_scale {ip_adapter_scale:g} weighs an IP-Adapter; name one (ip_adapter) or drop the scale.")


def _image_condition(
    folder: Path, components: dict[str, Any], *, ip_adapter: str | None, ip_adapter_scale: float, noise_level: int, local_files_only: bool
) -> ImageCondition | None:
    """The checkpoint's unCLIP condition, the IP-Adapter loaded into its UNet, or None."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # diffusers' deprecation notes on a pipeline object built only to load
        if is_unclip_checkpoint(folder):
            return load_unclip(folder, components, _load, noise_level=noise_level)
        if ip_adapter is not None:
            return load_ip_adapter(str(ip_adapter), components, scale=ip_adapter_scale, local_files_only=local_files_only)
    return None


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
