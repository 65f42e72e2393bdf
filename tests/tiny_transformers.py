"""Tiny random ``transformers`` models saved to disk, loaded by the tests through the same code as real ones."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from synaug.train.backbones import quiet_transformers

TINY_VISION = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}


def save_backbone(folder: Path, kind: str, channels: int = 3, image_size: int = 32) -> Path:
    """A tiny random backbone of ``kind`` (resnet, convnext, vit, dinov2, clip) written with save_pretrained."""
    import transformers

    patches = {"image_size": image_size, "patch_size": 8, "num_channels": channels}
    configs = {
        "resnet": lambda: transformers.ResNetConfig(num_channels=channels, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic"),
        "convnext": lambda: transformers.ConvNextConfig(num_channels=channels, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2),
        "vit": lambda: transformers.ViTConfig(**patches, **TINY_VISION),
        "dinov2": lambda: transformers.Dinov2Config(**patches, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2),
        "clip": lambda: _clip_config(patches),
    }
    torch.manual_seed(0)
    with quiet_transformers():
        config = configs[kind]()
        model = transformers.CLIPModel(config) if kind == "clip" else transformers.AutoModel.from_config(config)
        model.save_pretrained(folder)
    return folder


def save_clip(folder: Path, channels: int = 3, image_size: int = 32) -> Path:
    """A tiny random CLIPModel with its processor (a word-level tokenizer over a small vocabulary)."""
    import transformers

    save_backbone(folder, "clip", channels, image_size)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["-", "/"]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    vocab.update({token: len(vocab) + i for i, token in enumerate(letters + [f"{c}</w>" for c in letters])})
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    with quiet_transformers():
        tokenizer = transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
        images = transformers.CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
        transformers.CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def _clip_config(patches: dict):
    import transformers

    text = {"vocab_size": 64, "max_position_embeddings": 32, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1, **TINY_VISION}
    return transformers.CLIPConfig(text_config=text, vision_config={**patches, **TINY_VISION}, projection_dim=8)
