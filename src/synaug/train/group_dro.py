"""Group-DRO (Sagawa et al., ICLR 2020): minimise the loss of the worst group, online.

The objective keeps a distribution ``q`` over groups. At every step it takes the mean loss
``L_g`` of each group present in the batch, updates ``q_g <- q_g * exp(step_size * (L_g +
C / sqrt(n_g)))`` (``n_g`` = training images of group g; ``C`` the optional group
adjustment, 0 by default; groups absent from the batch keep their weight before
renormalising), and returns ``sum_g q_g * L_g``. Groups are the (class, attribute) cells of
:func:`synaug.data.groups.group_cells` unless given.

**Images without a group** (synthetic images from a class-only plan, whose context is
unknown) have group -1. They do not enter the group weighting; they add their plain mean
loss, weighted by their share of the batch: ``loss = (k/B) * sum_g q_g L_g + (u/B) * mean
unknown loss`` for k grouped and u ungrouped images in a batch of B. So they train the model
as ERM would, and a batch without them gives exactly the Group-DRO loss.

**Regularisation.** Group-DRO only helps worst groups when the model cannot simply memorise
every training image; the paper uses strong L2 (up to 1.0 when fine-tuning a ResNet-50 with
learning rate 1e-5) or early stopping. :func:`train_group_dro` uses weight decay
:data:`DRO_WEIGHT_DECAY` = 1e-3 (twice the Fashion-MNIST recipe's 5e-4, at its learning rate
0.2) unless told otherwise; raise it for larger models or longer training.

With Mixup/CutMix each mixed image counts for the group of the image it was mixed into.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import torch

from synaug.data.dataset import LabeledImages
from synaug.data.groups import group_cells
from synaug.errors import SynaugError
from synaug.train.batches import Batch
from synaug.train.trainer import TrainConfig, TrainResult, train_classifier

DRO_STEP_SIZE = 0.01
DRO_WEIGHT_DECAY = 1e-3
UNKNOWN_GROUP = -1


class GroupDRO:
    """The Group-DRO objective for :func:`~synaug.train.train_classifier` (``objective=``).

    Parameters
    ----------
    sample_groups : group of every training image (-1: unknown), aligned with the training set.
    group_names : name of each group.
    step_size : eta of the exponentiated-gradient update; 0 keeps ``q`` uniform.
    adjustment : C of the group adjustment C / sqrt(n_g) added to the group losses in the update.

    Attributes
    ----------
    weights : the current ``q`` (numpy, sums to 1).
    group_counts : training images per group.
    steps : updates made so far.
    """

    def __init__(
        self, sample_groups: np.ndarray, group_names: Sequence[str], step_size: float = DRO_STEP_SIZE, adjustment: float = 0.0
    ):
        sample_groups = np.asarray(sample_groups, dtype=np.int64)
        self.group_names = [str(n) for n in group_names]
        if len(self.group_names) < 1 or not len(sample_groups):
            raise SynaugError("Group-DRO needs at least one group and one training image.")
        if sample_groups.min() < UNKNOWN_GROUP or sample_groups.max() >= len(self.group_names):
            raise SynaugError(f"group indices must lie in 0..{len(self.group_names) - 1} (or -1 for unknown); fix the group labels.")
        if step_size < 0 or adjustment < 0:
            raise SynaugError(f"Group-DRO needs step_size >= 0 and adjustment >= 0 (got {step_size}, {adjustment}).")
        self.step_size = float(step_size)
        self.adjustment = float(adjustment)
        self.group_counts = np.bincount(sample_groups[sample_groups >= 0], minlength=len(self.group_names))
        self.steps = 0
        self._sample_groups = torch.from_numpy(sample_groups)
        counts = torch.from_numpy(self.group_counts).double()
        # q starts uniform over the groups that have training images; empty groups keep q = 0
        self._log_weights = torch.where(counts > 0, -torch.log((counts > 0).sum().double()), -torch.inf)
        self._bonus = self.adjustment / counts.clamp_min(1).sqrt()

    @property
    def weights(self) -> np.ndarray:
        return self._log_weights.exp().cpu().numpy()

    def __call__(self, losses: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The batch loss: q-weighted group means (after updating q), plus the unknown-group term."""
        if self._sample_groups.device != losses.device:
            self._sample_groups, self._log_weights, self._bonus = (
                t.to(losses.device) for t in (self._sample_groups, self._log_weights, self._bonus)
            )
        groups = self._sample_groups[batch.index]
        known = groups >= 0
        zeros = torch.zeros(len(self.group_names), device=losses.device, dtype=losses.dtype)
        sums = zeros.index_add(0, groups[known], losses[known])
        counts = zeros.index_add(0, groups[known], torch.ones_like(losses[known]))
        group_loss = sums / counts.clamp_min(1)

        update = self.step_size * (group_loss.detach().double() + self._bonus)
        self._log_weights = self._log_weights + torch.where(counts > 0, update, torch.zeros_like(update))
        self._log_weights = self._log_weights - torch.logsumexp(self._log_weights, 0)
        self.steps += 1

        robust = (self._log_weights.exp().to(losses.dtype) * group_loss).sum()
        known_share = known.to(losses.dtype).mean()
        unknown = (~known).to(losses.dtype)
        return known_share * robust + (losses * unknown).sum() / len(losses)


def dro_training_set(real: LabeledImages, synthetic: LabeledImages | None = None) -> tuple[LabeledImages, np.ndarray, list[str]]:
    """(training set, group of each image, group names) for Group-DRO on real (+ synthetic) data.

    Groups are the (class, attribute) cells of ``real``. Synthetic images with groups (a per-cell
    plan, loaded with the real set's group names) get their cell; synthetic images without
    groups (a class-only plan) get -1, and the returned set drops the group column so the two
    parts can be joined (the cells live in the returned array).
    """
    cells, names = group_cells(real)
    if synthetic is None:
        return real, cells, names
    if synthetic.groups is None:
        ungrouped = dataclasses.replace(real, groups=None, group_names=None)
        return ungrouped.concat(synthetic), np.concatenate([cells, np.full(len(synthetic), UNKNOWN_GROUP)]), names
    if list(synthetic.group_names) != list(real.group_names):
        raise SynaugError(
            f"synthetic groups {synthetic.group_names} differ from the real ones {real.group_names}; "
            "load the synthetic images with the real set's group names."
        )
    return real.concat(synthetic), np.concatenate([cells, group_cells(synthetic)[0]]), names


def train_group_dro(
    train: LabeledImages,
    config: TrainConfig | None = None,
    sample_groups: np.ndarray | None = None,
    group_names: Sequence[str] | None = None,
    step_size: float = DRO_STEP_SIZE,
    adjustment: float = 0.0,
    weight_decay: float | None = DRO_WEIGHT_DECAY,
    progress: bool = True,
) -> tuple[TrainResult, GroupDRO]:
    """Train with the Group-DRO objective; returns the result and the objective (its final ``q``).

    ``sample_groups``/``group_names`` default to the (class, attribute) cells of ``train``
    (see :func:`dro_training_set` for real + synthetic data). ``weight_decay`` replaces the
    config's (None keeps it).
    """
    config = config or TrainConfig()
    if weight_decay is not None:
        config = dataclasses.replace(config, weight_decay=weight_decay)
    if sample_groups is None:
        sample_groups, group_names = group_cells(train)
    elif group_names is None:
        raise SynaugError("pass group_names with sample_groups (one name per group index).")
    if len(sample_groups) != len(train):
        raise SynaugError(f"{len(sample_groups)} group labels for {len(train)} training images; give one per image.")
    objective = GroupDRO(sample_groups, group_names, step_size, adjustment)
    return train_classifier(train, config, progress=progress, objective=objective), objective
