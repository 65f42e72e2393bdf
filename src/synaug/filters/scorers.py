"""Per-image scores for filtering synthetic images.

A scorer maps a batch of images with their intended classes and prompts to named score
columns (higher is better); :mod:`synaug.filters.select` turns them into kept / rejected
decisions. Two scorers:

:class:`ClipScorer`
    Cosine similarity between the image and its prompt in a CLIP model's joint space (any
    CLIP checkpoint ``transformers`` loads, a local folder or a hub id). With negative prompts
    ("a blurry photo", "a drawing") it also records the highest similarity to any of them;
    an image closer to a negative prompt than to its own is rejected.
:class:`ClassifierScorer`
    The softmax probability a classifier checkpoint (``synaug train`` / ``save_checkpoint``)
    gives the image's intended class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from synaug.data.dataset import LabeledImages
from synaug.errors import SynaugError
from synaug.train.backbones import quiet_transformers


class Scorer(Protocol):
    """What a filter step needs: a name, per-image scores (the column ``name`` is the main one) and settings."""

    name: str

    def score(self, data: LabeledImages, prompts: Sequence[str]) -> dict[str, np.ndarray]:
        """Score columns for ``data`` (labels index ``data.class_names``), one value per image."""
        ...

    def settings(self) -> dict:
        """What identifies the scorer (JSON-safe), recorded with the decisions."""
        ...


class ClipScorer:
    """CLIP image-text similarity of each image to its prompt (and to optional negative prompts).

    Parameters
    ----------
    checkpoint : a CLIP model folder (``save_pretrained``, with its processor) or hub id.
    negative_prompts : texts an acceptable image must be less similar to than to its prompt.
    device, batch_size : where and how many images at a time.
    """

    name = "clip"

    def __init__(self, checkpoint: str | Path, negative_prompts: Sequence[str] = (), device: str = "cpu", batch_size: int = 64):
        self.checkpoint = str(checkpoint)
        self.negative_prompts = [str(p) for p in negative_prompts]
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.model, self.processor = _load_clip(self.checkpoint)
        self.model.to(self.device).eval()

    def settings(self) -> dict:
        """What identifies this scorer, recorded with the decisions."""
        return {"kind": "clip", "checkpoint": self.checkpoint, "negative_prompts": self.negative_prompts}

    def score(self, data: LabeledImages, prompts: Sequence[str]) -> dict[str, np.ndarray]:
        """``clip``: cosine similarity to the image's prompt; ``clip_negative``: the highest to a negative prompt."""
        texts = sorted(set(prompts))
        text_features = self._texts(texts)
        position = {text: i for i, text in enumerate(texts)}
        own = torch.tensor([position[p] for p in prompts])
        negatives = self._texts(self.negative_prompts) if self.negative_prompts else None
        scores, negative_scores = [], []
        for start in range(0, len(data), self.batch_size):
            index = np.arange(start, min(start + self.batch_size, len(data)))
            image_features = self._images(data.stack(index))
            scores.append((image_features * text_features[own[index]]).sum(dim=1))
            if negatives is not None:
                negative_scores.append((image_features @ negatives.T).max(dim=1).values)
        columns = {"clip": torch.cat(scores).numpy().astype(np.float64)}
        if negatives is not None:
            columns["clip_negative"] = torch.cat(negative_scores).numpy().astype(np.float64)
        return columns

    @torch.inference_mode()
    def _texts(self, texts: Sequence[str]) -> torch.Tensor:
        limit = getattr(getattr(self.model.config, "text_config", None), "max_position_embeddings", 77)
        tokens = self.processor(text=list(texts), return_tensors="pt", padding=True, truncation=True, max_length=limit)
        features = _embedding(self.model.get_text_features(**{k: v.to(self.device) for k, v in tokens.items()}))
        return F.normalize(features.float(), dim=-1).cpu()

    @torch.inference_mode()
    def _images(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        pixels = self.processor(images=list(images.permute(0, 2, 3, 1).numpy()), return_tensors="pt")["pixel_values"]
        features = _embedding(self.model.get_image_features(pixel_values=pixels.to(self.device)))
        return F.normalize(features.float(), dim=-1).cpu()


class ClassifierScorer:
    """The probability a classifier checkpoint gives each image's intended class (column ``confidence``).

    The checkpoint's classes are matched to the data's by name, so it may know more classes
    than the data has, in any order.
    """

    name = "confidence"

    def __init__(self, checkpoint: str | Path, device: str = "cpu", batch_size: int = 500):
        from synaug.train.checkpoint import load_checkpoint

        self.checkpoint = str(checkpoint)
        self.model, self.normalizer, meta = load_checkpoint(checkpoint, device)
        self.class_names = [str(n) for n in meta.get("class_names", [])]
        self.image_size = tuple(meta.get("image_size", ()))
        self.channels = meta.get("in_channels")
        self.batch_size = batch_size

    def settings(self) -> dict:
        """What identifies this scorer, recorded with the decisions."""
        return {"kind": "classifier", "checkpoint": self.checkpoint}

    def score(self, data: LabeledImages, prompts: Sequence[str]) -> dict[str, np.ndarray]:
        from synaug.train.inference import infer

        columns = self._class_columns(data.class_names)
        shape = (data.channels, *(data.size or data.load(0).shape[1:]))
        if self.image_size and shape != (self.channels, *self.image_size):
            raise SynaugError(
                f"classifier {self.checkpoint} takes {self.channels}x{self.image_size[0]}x{self.image_size[1]} images but these are "
                f"{shape[0]}x{shape[1]}x{shape[2]}; filter with a classifier trained on images like these."
            )
        probabilities = infer(self.model, data, self.normalizer, batch_size=self.batch_size).softmax(dim=1).numpy()
        return {"confidence": probabilities[np.arange(len(data)), columns[data.labels]].astype(np.float64)}

    def _class_columns(self, class_names: Sequence[str]) -> np.ndarray:
        missing = [name for name in class_names if name not in self.class_names]
        if missing:
            raise SynaugError(
                f"classifier {self.checkpoint} does not know class '{missing[0]}' (its classes: {', '.join(self.class_names)}); "
                "filter with a classifier trained on the same classes."
            )
        return np.array([self.class_names.index(name) for name in class_names])


def _load_clip(checkpoint: str):
    """The CLIP model and processor at ``checkpoint``; anything else is a one-line error."""
    import transformers

    fix = "give a CLIP checkpoint folder (save_pretrained, with its processor) or hub id, e.g. openai/clip-vit-base-patch32"
    folder = Path(checkpoint).expanduser()
    if folder.exists() and not (folder / "config.json").is_file():
        raise SynaugError(f"{checkpoint} is not a CLIP model (no config.json); {fix}.")
    try:
        with quiet_transformers():
            config = transformers.AutoConfig.from_pretrained(checkpoint)
            model = transformers.AutoModel.from_pretrained(checkpoint)
            if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
                raise SynaugError(f"{checkpoint} is a '{config.model_type}' model, not a CLIP model; {fix}.")
            processor = transformers.AutoProcessor.from_pretrained(checkpoint)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SynaugError(f"cannot load CLIP model {checkpoint} ({first}); {fix}.") from None
    if not (hasattr(processor, "tokenizer") and hasattr(processor, "image_processor")):
        raise SynaugError(f"{checkpoint} lacks a CLIP processor (tokenizer and image processor); {fix}.")
    return model, processor


def _embedding(output) -> torch.Tensor:
    """The projected embedding: a tensor, or the pooled output of a model output object."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output
