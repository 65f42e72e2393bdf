"""Classifier checkpoints: a folder with ``model.safetensors`` and ``config.json``.

``config.json`` holds everything needed to rebuild and use the model without the training
data: the model name, number of classes, input channels and size, the input normalisation,
the class names, the real training images per class (they define the many/medium/few
groups) and the synthetic ones, the full :class:`~synaug.train.trainer.TrainConfig`, the
training history and, for an ``hf:`` backbone, its architecture (so loading downloads nothing).
Both files are written atomically (temporary file, then ``os.replace``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from safetensors import SafetensorError
from torch import nn

from synaug.config import to_dict
from synaug.data.registry import write_atomic
from synaug.errors import SynaugError
from synaug.train.models import Normalizer, build_model
from synaug.train.trainer import TrainConfig, TrainResult

CHECKPOINT_FORMAT = "synaug-classifier/1"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def save_checkpoint(result: TrainResult, folder: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``result``'s model and its description to ``folder``; ``extra`` adds keys to config.json."""
    folder = Path(folder)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in result.model.state_dict().items()}
    channels, height, width = result.image_shape
    meta = {
        "format": CHECKPOINT_FORMAT,
        "model": result.config.model,
        "num_classes": len(result.class_names),
        "in_channels": channels,
        "image_size": [height, width],
        "normalizer": result.normalizer.to_dict(),
        "class_names": list(result.class_names),
        "train_counts": [int(c) for c in result.train_counts],
        "synthetic_counts": [int(c) for c in result.synthetic_counts],
        "sample_counts": dict(result.sample_counts),
        "train_config": to_dict(result.config),
        "train_seconds": result.seconds,
        "history": result.history,
        **(result.model.checkpoint_meta() if hasattr(result.model, "checkpoint_meta") else {}),
        **(extra or {}),
    }
    write_atomic(folder / WEIGHTS_FILE, safetensors.torch.save(state))
    write_atomic(folder / CONFIG_FILE, json.dumps(meta, indent=1) + "\n")
    return folder


def read_history(folder: str | Path) -> list[dict[str, Any]]:
    """The per-epoch training history a checkpoint keeps (one dict per epoch; empty when it has none)."""
    path = checkpoint_folder(folder) / CONFIG_FILE
    try:
        history = json.loads(path.read_text()).get("history", [])
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise SynaugError(f"{path} is not valid checkpoint JSON ({exc}); re-run `synaug train --out {run_folder(path.parent)}`.") from None
    return history if isinstance(history, list) else []


def result_from_checkpoint(model: nn.Module, normalizer: Normalizer, meta: dict[str, Any]) -> TrainResult:
    """A :class:`TrainResult` for ``model`` carrying a loaded checkpoint's description (``meta``, its
    config.json), so a model re-trained from that checkpoint (cRT, DFR) is saved with the same facts."""
    channels = int(meta["in_channels"])
    return TrainResult(
        model=model,
        history=meta.get("history", []),
        normalizer=normalizer,
        config=_saved_config(meta),
        class_names=list(meta["class_names"]),
        train_counts=np.asarray(meta["train_counts"]),
        synthetic_counts=np.asarray(meta["synthetic_counts"]),
        sample_counts=dict(meta["sample_counts"]),
        image_shape=(channels, *[int(s) for s in meta["image_size"]]),
        seconds=float(meta.get("train_seconds", 0.0)),
    )


def _saved_config(meta: dict[str, Any]) -> TrainConfig:
    """The checkpoint's training settings; where it wrote TensorBoard files is dropped, so loading never
    needs the tensorboard package (it never shapes the model)."""
    return TrainConfig(**{**meta["train_config"], "tensorboard": None})


def run_folder(checkpoint: Path) -> Path:
    """The `synaug train --out` folder ``checkpoint`` sits in (as checkpoint/ or checkpoint-crt/), else ``checkpoint``."""
    return checkpoint.parent if checkpoint.name in ("checkpoint", "checkpoint-crt") else checkpoint


def checkpoint_folder(path: str | Path) -> Path:
    """The checkpoint folder ``path`` names: ``path`` itself, or the ``checkpoint/`` of a `synaug train --out` folder.

    Both of its files must exist; a missing one is a one-line error naming the train command.
    """
    path = Path(path)
    if not (path / CONFIG_FILE).exists() and (path / "checkpoint").is_dir():
        path = path / "checkpoint"
    run = run_folder(path)
    if not path.is_dir():
        raise SynaugError(f"checkpoint folder {path} does not exist; train one with `synaug train --out {run}`.")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            raise SynaugError(f"checkpoint {path} lacks {name}; re-run `synaug train --out {run}`.")
    return path


def load_checkpoint(folder: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, Normalizer, dict[str, Any]]:
    """The model (eval mode, on ``device``), its :class:`Normalizer` and the config.json contents.

    ``folder`` is a checkpoint folder or a `synaug train --out` folder (see :func:`checkpoint_folder`).
    """
    folder = checkpoint_folder(folder)
    config_path, weights_path, run = folder / CONFIG_FILE, folder / WEIGHTS_FILE, run_folder(folder)
    try:
        meta = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SynaugError(f"{config_path} is not valid JSON ({exc}); re-run `synaug train --out {run}`.") from None
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise SynaugError(
            f"{folder} is not a synaug classifier checkpoint ({CHECKPOINT_FORMAT}); point to the folder `synaug train --out` wrote."
        )
    try:
        backbone = meta.get("backbone") or {}
        model = build_model(
            meta["model"], int(meta["num_classes"]), int(meta["in_channels"]), image_size=tuple(meta["image_size"]),
            resolution=backbone.get("resolution"), backbone_config=backbone.get("config"),
        )
        normalizer = Normalizer.from_dict(meta["normalizer"])
        state = safetensors.torch.load_file(weights_path)
        model.load_state_dict(state)
    except (KeyError, TypeError, ValueError) as exc:
        raise SynaugError(f"{config_path} is incomplete ({exc}); re-run `synaug train --out {run}`.") from None
    except (SafetensorError, OSError) as exc:
        raise SynaugError(f"{weights_path} is corrupt or truncated ({exc}); re-run `synaug train --out {run}`.") from None
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise SynaugError(
            f"{weights_path} does not match the model in config.json ({first}); re-run `synaug train --out {run}`."
        ) from None
    return model.to(device).eval(), normalizer, meta


def load_train_result(folder: str | Path, device: str | torch.device = "cpu") -> TrainResult:
    """A checkpoint as the :class:`TrainResult` that was saved (model on ``device``), ready to use or save again."""
    return result_from_checkpoint(*load_checkpoint(folder, device))
