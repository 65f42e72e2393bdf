"""The frozen reference classifier of the embedded Fashion-MNIST world, for the confidence filter.

It is the quality gate's oracle recipe (:func:`synaug.generators.check.train_oracles`: the
small ResNet, 30 epochs, 500 images per class) trained on the *reserved* half of
Fashion-MNIST train only — the half the embedded generator was trained on — so it has seen
no image of any long-tailed set (they are drawn from the other half) nor of the test set.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from synaug.data.benchmarks import fashion_mnist_reserved
from synaug.data.dataset import LabeledImages
from synaug.data.longtail import balanced_subset

REFERENCE_NAME = "reference"  # what run configs and `synaug filter --classifier` call it
REFERENCE_FOLDER = "fashion-mnist-reserved-reference"
DEFAULT_CACHE = Path.home() / ".cache" / "synaug"  # where `synaug filter` and `synaug run` keep it


def fashion_mnist_reference(cache: str | Path, root: str | Path | None = None, per_class: int = 500, epochs: int = 30,
                            seed: int = 0, progress: bool = True) -> Path:
    """The reference checkpoint folder under ``cache``, trained on the first call and reused after.

    The folder's name carries a fingerprint of the reserved images, so another copy of the data
    (a test's small files, say) never reuses this one's classifier.
    """
    from synaug.train.checkpoint import save_checkpoint
    from synaug.train.trainer import TrainConfig, train_classifier

    reserved = fashion_mnist_reserved(root)
    folder = Path(cache) / f"{REFERENCE_FOLDER}-{per_class}-{epochs}-{seed}-{_fingerprint(reserved)}"
    if not (folder / "config.json").is_file():
        chosen = balanced_subset(reserved.labels, per_class, seed, reserved.num_classes, class_names=reserved.class_names)
        result = train_classifier(reserved.subset(chosen).materialize(), TrainConfig(seed=seed, epochs=epochs), progress=progress)
        save_checkpoint(result, folder, extra={"trained_on": "the reserved half of Fashion-MNIST train"})
    return folder


def _fingerprint(data: LabeledImages) -> str:
    """A short hash of a dataset's labels and pixels."""
    digest = hashlib.sha256(data.labels.astype("int64").tobytes())
    digest.update(data.images.numpy().tobytes())
    return digest.hexdigest()[:10]
