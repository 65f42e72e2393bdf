"""A tiny random exemplar-conditioned embedded generator on disk, loaded exactly as the shipped one is."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from fixtures_generation import build_tiny_embedded

from synaug.generators.exemplar_model import PROJECTION_FOLDER, ExemplarProjection


def build_tiny_exemplar_embedded(folder: str | Path, grid: int = 7, seed: int = 0, **kwargs) -> Path:
    """:func:`build_tiny_embedded` plus a random (non-zero) exemplar projection and the spec's ``exemplar`` entry."""
    folder = build_tiny_embedded(folder, seed=seed, **kwargs)
    spec = json.loads((folder / "synaug_generator.json").read_text())
    torch.manual_seed(seed + 1)
    projection = ExemplarProjection(input_dim=spec["channels"] * grid * grid, hidden_dim=16)
    torch.nn.init.normal_(projection.linear_2.weight, std=0.5)
    projection.save_pretrained(folder / PROJECTION_FOLDER)
    spec["exemplar"] = {"encoder": "pooled-pixels", "grid": grid}
    (folder / "synaug_generator.json").write_text(json.dumps(spec, indent=2))
    return folder
