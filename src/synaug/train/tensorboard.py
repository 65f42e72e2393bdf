"""TensorBoard event files of a training run's per-epoch history (optional: the ``tensorboard`` extra).

Set :attr:`synaug.train.TrainConfig.tensorboard` to a folder (``synaug train --tensorboard DIR``,
``train.tensorboard`` in a run config, where each run writes to ``DIR/<recipe>-seed<seed>``) and
watch it live with ``tensorboard --logdir DIR``. Each epoch adds the scalars ``loss/all``,
``accuracy/all`` and, for real and synthetic samples separately, ``loss/real``,
``accuracy/real``, ``loss/synthetic`` and ``accuracy/synthetic`` (when the epoch saw such
samples), plus ``lr``, at step = epoch. Writing them never changes the weights.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from synaug.errors import SynaugError

SCALARS = {
    "loss": "loss/all", "accuracy": "accuracy/all", "real_loss": "loss/real", "real_accuracy": "accuracy/real",
    "synthetic_loss": "loss/synthetic", "synthetic_accuracy": "accuracy/synthetic", "lr": "lr",
}


def check_tensorboard() -> None:
    """A one-line error when the tensorboard package, which writes the event files, is not installed."""
    if importlib.util.find_spec("tensorboard") is None:
        raise SynaugError("writing TensorBoard event files needs the tensorboard package; `pip install 'synaug[tensorboard]'`, or drop the tensorboard setting.")


class EpochLog:
    """Writes each epoch's history row as TensorBoard scalars into ``folder``; use as a context manager."""

    def __init__(self, folder: str | Path):
        check_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        try:
            self.writer = SummaryWriter(log_dir=str(folder))
        except OSError as exc:
            raise SynaugError(f"cannot write TensorBoard files to {folder} ({exc.strerror or exc}); choose a writable tensorboard folder.") from None

    def write(self, record: dict[str, Any]) -> None:
        """Add the scalars of one history row (see :data:`SCALARS`) at step ``record["epoch"]``."""
        for key, tag in SCALARS.items():
            if record.get(key) is not None:
                self.writer.add_scalar(tag, float(record[key]), global_step=int(record["epoch"]))
        self.writer.flush()

    def __enter__(self) -> "EpochLog":
        return self

    def __exit__(self, *exc_info) -> None:
        self.writer.close()
