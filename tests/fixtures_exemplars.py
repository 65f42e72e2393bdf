"""Test helpers for the exemplar routes: tiny random IP-Adapter and Stable unCLIP checkpoints on disk.

* :func:`build_tiny_ip_adapter` writes an IP-Adapter the way the published ones are laid out:
  one safetensors file with ``image_proj.*`` (the image projection) and ``ip_adapter.<k>.to_k_ip``
  / ``to_v_ip`` keys (k = 1, 3, 5, ... over the UNet's cross-attention layers, in the order of
  ``unet.attn_processors``), next to an ``image_encoder/`` folder (a CLIP vision model with a
  projection), sized for the UNet of :func:`~fixtures_generation.build_tiny_sd`.
* :func:`build_tiny_unclip` writes a ``StableUnCLIPImg2ImgPipeline`` folder (``save_pretrained``):
  the tiny SD components, a UNet whose projection class embedding takes the image embedding
  plus its noise-level embedding, a CLIP image encoder and processor, the image normalizer and
  the image noising scheduler.

Both are loaded by the backend exactly as real ones are; nothing touches a hub.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import DDIMScheduler, DDPMScheduler, StableUnCLIPImg2ImgPipeline, UNet2DConditionModel
from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
from safetensors.torch import save_file
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

from fixtures_generation import TINY_SD_SIZE, build_tiny_sd

IMAGE_EMBED_DIM = 12
ADAPTER_TOKENS = 4  # the published IP-Adapter's image tokens


def tiny_image_encoder(projection_dim: int = IMAGE_EMBED_DIM) -> CLIPVisionModelWithProjection:
    """A random CLIP vision model with a projection, on 32 px images."""
    return CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=16, intermediate_size=32, projection_dim=projection_dim, num_hidden_layers=2,
            num_attention_heads=2, image_size=TINY_SD_SIZE, patch_size=8,
        )
    )


def build_tiny_ip_adapter(folder: str | Path, unet: UNet2DConditionModel, seed: int = 0,
                          encoder_dim: int = IMAGE_EMBED_DIM) -> Path:
    """Write ``folder/ip-adapter.safetensors`` and ``folder/image_encoder/`` for ``unet``; returns the weight file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tiny_image_encoder(encoder_dim).save_pretrained(folder / "image_encoder")
    cross = int(unet.config.cross_attention_dim)
    tensors = {
        "image_proj.proj.weight": torch.randn(ADAPTER_TOKENS * cross, IMAGE_EMBED_DIM) * 0.2,
        "image_proj.proj.bias": torch.zeros(ADAPTER_TOKENS * cross),
        "image_proj.norm.weight": torch.ones(cross),
        "image_proj.norm.bias": torch.zeros(cross),
    }
    modules = dict(unet.named_modules())
    key = 1
    for name in unet.attn_processors:
        if not name.endswith("attn2.processor"):
            continue
        hidden = modules[name.removesuffix(".processor")].to_k.weight.shape[0]
        tensors[f"ip_adapter.{key}.to_k_ip.weight"] = torch.randn(hidden, cross) * 0.5
        tensors[f"ip_adapter.{key}.to_v_ip.weight"] = torch.randn(hidden, cross) * 0.5
        key += 2
    path = folder / "ip-adapter.safetensors"
    save_file(tensors, str(path))
    return path


def build_tiny_unclip(folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny random Stable unCLIP checkpoint (32 px images) to ``folder``."""
    folder = Path(folder)
    base = build_tiny_sd(folder.parent / (folder.name + "-base"), seed=seed)
    from diffusers import StableDiffusionPipeline

    components = StableDiffusionPipeline.from_pretrained(base).components
    torch.manual_seed(seed)
    base_unet = components["unet"]
    unet = UNet2DConditionModel.from_config(
        {**base_unet.config, "class_embed_type": "projection", "projection_class_embeddings_input_dim": 2 * IMAGE_EMBED_DIM}
    )
    pipeline = StableUnCLIPImg2ImgPipeline(
        feature_extractor=CLIPImageProcessor(size=TINY_SD_SIZE, crop_size=TINY_SD_SIZE),
        image_encoder=tiny_image_encoder(),
        image_normalizer=StableUnCLIPImageNormalizer(embedding_dim=IMAGE_EMBED_DIM),
        image_noising_scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2"),
        tokenizer=components["tokenizer"],
        text_encoder=components["text_encoder"],
        unet=unet,
        scheduler=DDIMScheduler.from_config(components["scheduler"].config),
        vae=components["vae"],
    )
    pipeline.save_pretrained(folder)
    return folder
