"""A classifier object over synaug's trainer: fit, re-train the last layer, predict, score, save, load.

Every method calls the library function that does the work (:func:`~synaug.train.train_classifier`,
:func:`~synaug.train.retrain_classifier`, :func:`~synaug.train.dfr.dfr_retrain`,
:func:`~synaug.train.group_dro.train_group_dro`, :func:`~synaug.evaluate.evaluate`,
:func:`~synaug.evaluate.groups.cell_report`); the settings are theirs, declared once there.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synaug.data.dataset import LabeledImages
from synaug.errors import SynaugError
from synaug.train.trainer import TrainConfig, TrainResult, recipe

__all__ = ["Classifier"]

TRAIN_CELLS_KEY = "train_cell_counts"  # config.json: real training images per (class, group) cell


class Classifier:
    """An image classifier trained with synaug's recipes.

    Parameters
    ----------
    config : a :class:`~synaug.train.TrainConfig`, a recipe name ("fashion-mnist", "cifar-lt",
        ...) or None for the defaults (the Fashion-MNIST recipe).
    progress : show progress bars while training.
    settings : :class:`~synaug.train.TrainConfig` fields replacing the config's, e.g.
        ``epochs=30``, ``mixup_alpha=0.2``, ``cutmix_alpha=1.0``, ``device="auto"``, ``seed=0``.

    After fitting, ``result_`` holds the :class:`~synaug.train.TrainResult` (model, normalizer,
    history, class names and real training counts) and ``reports_`` what cRT, DFR or Group-DRO reported.

    >>> clf = synaug.Classifier(epochs=30).fit(balanced).crt(balanced)  # doctest: +SKIP
    >>> clf.score(test)["top1"]  # doctest: +SKIP
    """

    def __init__(self, config: TrainConfig | str | None = None, *, progress: bool = True, **settings: Any):
        base = recipe(config) if isinstance(config, str) else (config or TrainConfig())
        if not isinstance(base, TrainConfig):
            raise SynaugError(f"config must be a TrainConfig, a recipe name or None, not {type(base).__name__}.")
        fields = [f.name for f in dataclasses.fields(TrainConfig)]
        unknown = [name for name in settings if name not in fields]
        if unknown:
            near = difflib.get_close_matches(unknown[0], fields, n=1)
            hint = f"did you mean '{near[0]}'?" if near else f"the settings are {', '.join(fields)}"
            raise SynaugError(f"Classifier has no setting '{unknown[0]}'; {hint}")
        self.config = dataclasses.replace(base, **settings)
        self.progress = progress
        self.result_: TrainResult | None = None
        self.reports_: dict[str, Any] = {}
        self.train_cell_counts_: np.ndarray | None = None

    # ---- training ------------------------------------------------------------------------
    def fit(self, data: LabeledImages) -> "Classifier":
        """Train from scratch on ``data`` (real and synthetic images) with cross-entropy, Mixup/CutMix as configured."""
        from synaug.train.trainer import train_classifier

        data = _dataset(data, "fit")
        self.result_ = train_classifier(data, self.config, progress=self.progress)
        self._record_cells(data)
        return self

    def fit_group_dro(self, data: LabeledImages, **settings: Any) -> "Classifier":
        """Train from scratch with the Group-DRO objective over the (class, group) cells of ``data``.

        Synthetic images of ``data`` keep their cell when they have groups, else they count
        towards no group. ``settings``: those of :func:`~synaug.train.group_dro.train_group_dro`
        (``step_size``, ``adjustment``, ``weight_decay``).
        """
        from synaug.train.group_dro import dro_training_set, train_group_dro

        data = _dataset(data, "fit_group_dro")
        if data.groups is None:
            raise SynaugError("Group-DRO needs group labels; load data with groups (e.g. a groups CSV) or use fit().")
        synthetic = data.subset(np.flatnonzero(data.is_synthetic))
        train, groups, names = dro_training_set(data.subset(np.flatnonzero(~data.is_synthetic)), synthetic if len(synthetic) else None)
        self.result_, objective = train_group_dro(train, self.config, groups, names, progress=self.progress, **settings)
        self._record_cells(data)
        self.reports_["group_dro"] = {"weights": objective.weights.tolist(), "groups": names}
        return self

    def crt(self, data: LabeledImages, **settings: Any) -> "Classifier":
        """Classifier re-training (cRT): a fresh last layer trained class-balanced on frozen features of ``data``.

        ``settings``: those of :func:`~synaug.train.retrain_classifier` (``epochs``,
        ``batch_size``, ``lr``, ``weight_decay``, ``source``: "real" or "real+synthetic").
        """
        from synaug.train.crt import retrain_classifier

        result = self._fitted("crt")
        data = self._same_classes(_dataset(data, "crt"))
        settings.setdefault("seed", self.config.seed)
        self.result_ = dataclasses.replace(result, model=retrain_classifier(result.model, data, result.normalizer, **settings))
        self.reports_["crt"] = {k: v for k, v in settings.items()}
        return self

    def dfr(self, val: LabeledImages, **settings: Any) -> "Classifier":
        """Deep feature re-weighting (DFR): the last layer re-fitted group-balanced on held-out real images ``val``.

        ``settings``: those of :func:`~synaug.train.dfr.dfr_retrain` (``c_grid``, ``retrains``, ``seed``).
        """
        from synaug.train.dfr import dfr_retrain

        result = self._fitted("dfr")
        val = self._same_classes(_dataset(val, "dfr"))
        settings.setdefault("seed", self.config.seed)
        model, report = dfr_retrain(result.model, val, result.normalizer, **settings)
        self.result_ = dataclasses.replace(result, model=model)
        self.reports_["dfr"] = report
        return self

    # ---- use -----------------------------------------------------------------------------
    def predict_logits(self, data: LabeledImages) -> torch.Tensor:
        """Logits ``(N, classes)`` (float32, CPU) for every image of ``data``, in order."""
        from synaug.train.inference import infer

        result = self._fitted("predict")
        data = self._same_classes(_dataset(data, "predict"))
        return infer(result.model, data, result.normalizer, num_workers=0 if data.in_memory else self.config.num_workers)

    def predict(self, data: LabeledImages) -> np.ndarray:
        """The predicted class index of every image of ``data``."""
        return self.predict_logits(data).argmax(1).numpy()

    def score(self, data: LabeledImages, many_threshold: int = 100, few_threshold: int = 20) -> dict[str, Any]:
        """Metrics on labelled ``data`` (e.g. the test set): ``top1``, ``balanced_accuracy``, ``many``,
        ``medium``, ``few`` (classes by their real training count, see :func:`synaug.evaluate.evaluate`),
        per-class accuracy, and for data with groups ``group_report`` (``worst_group_accuracy``,
        per-cell accuracy and the ``fairness`` gaps, see :func:`synaug.evaluate.groups.cell_report`)."""
        from synaug.evaluate.groups import cell_report
        from synaug.evaluate.metrics import evaluate

        result = self._fitted("score")
        logits = self.predict_logits(data)
        metrics = evaluate(logits, data.labels, result.train_counts, result.class_names, many_threshold, few_threshold)
        if data.groups is not None:
            known = self.train_cell_counts_ is not None and self.train_cell_counts_.shape == data.cell_counts().shape
            metrics["group_report"] = cell_report(logits, data, self.train_cell_counts_ if known else data.cell_counts())
        return metrics

    # ---- files ---------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write the model and its description to ``folder`` (a checkpoint `synaug evaluate` and FG read)."""
        from synaug.train.checkpoint import save_checkpoint

        cells = None if self.train_cell_counts_ is None else self.train_cell_counts_.tolist()
        return save_checkpoint(self._fitted("save"), folder, extra=_json_safe({**self.reports_, TRAIN_CELLS_KEY: cells}))

    @classmethod
    def load(cls, folder: str | Path, device: str = "auto", progress: bool = True) -> "Classifier":
        """The classifier saved in ``folder`` (by :meth:`save`, `synaug train` or `synaug run`), on ``device``."""
        from synaug.devices import resolve_device
        from synaug.train.checkpoint import CONFIG_FILE, checkpoint_folder, load_train_result

        result = load_train_result(folder, resolve_device(device))
        classifier = cls(result.config, progress=progress)
        classifier.result_ = result
        cells = json.loads((checkpoint_folder(folder) / CONFIG_FILE).read_text()).get(TRAIN_CELLS_KEY)
        classifier.train_cell_counts_ = None if cells is None else np.asarray(cells, dtype=np.int64)
        return classifier

    @property
    def class_names(self) -> list[str]:
        """The classes the classifier predicts, in label order."""
        return list(self._fitted("class_names").class_names)

    # ---- checks --------------------------------------------------------------------------
    def _fitted(self, what: str) -> TrainResult:
        if self.result_ is None:
            raise SynaugError(f"{what} needs a trained classifier; call fit(data) first, or Classifier.load(folder).")
        return self.result_

    def _same_classes(self, data: LabeledImages) -> LabeledImages:
        names = self._fitted("the data check").class_names
        if list(data.class_names) != list(names):
            raise SynaugError(
                f"the classifier has {len(names)} classes ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''}) and the data "
                f"{data.num_classes} ({', '.join(data.class_names[:4])}{', ...' if data.num_classes > 4 else ''}); "
                "use data with the classifier's class list in its order, or fit a classifier on this data."
            )
        return data

    def _record_cells(self, data: LabeledImages) -> None:
        """Keep the real training images per (class, group) cell: they weight the group means of :meth:`score`."""
        self.reports_ = {}
        real = data.subset(np.flatnonzero(~data.is_synthetic))
        self.train_cell_counts_ = real.cell_counts() if real.groups is not None else None


def _dataset(data: Any, what: str) -> LabeledImages:
    if not isinstance(data, LabeledImages):
        raise SynaugError(f"{what} takes a synaug LabeledImages dataset, not a {type(data).__name__}; load it with synaug.load_dataset.")
    return data


def _json_safe(value: Any) -> Any:
    """``value`` with tuples and numpy numbers made JSON-safe (for config.json)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value
