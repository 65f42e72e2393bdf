"""Group-DRO (the objective, its plumbing through the trainer) and DFR (last-layer re-training)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression
from torch import nn
from train_helpers import pattern_images

from synaug.data import LabeledImages
from synaug.data.groups import group_cells
from synaug.errors import SynaugError
from synaug.evaluate.groups import group_report
from synaug.train import Normalizer, TrainConfig, infer, train_classifier
from synaug.train.dfr import DFR_C_GRID, dfr_retrain
from synaug.train.group_dro import GroupDRO, dro_training_set, train_group_dro
from synaug.train.batches import Batch

FAST = dict(epochs=2, batch_size=32, lr=0.1, crop_padding=0, flip=False, amp="off", device="cpu")


def _batch(index) -> Batch:
    index = torch.as_tensor(index)
    return Batch(images=None, labels=None, is_synthetic=None, index=index)


# ---- the Group-DRO objective --------------------------------------------------------------
def test_weights_move_toward_the_high_loss_group():
    objective = GroupDRO(np.array([0, 0, 1, 1]), ["easy", "hard"], step_size=0.5)
    losses = torch.tensor([0.1, 0.1, 2.0, 2.0])
    shares = []
    for _ in range(5):
        objective(losses, _batch([0, 1, 2, 3]))
        shares.append(objective.weights[1])
    assert all(a < b for a, b in zip([0.5] + shares, shares))  # q_hard rises every step
    # after one step, by hand: q ∝ (0.5 e^{0.05}, 0.5 e^{1.0})
    one = GroupDRO(np.array([0, 0, 1, 1]), ["easy", "hard"], step_size=0.5)
    loss = one(losses, _batch([0, 1, 2, 3]))
    q_hard = np.exp(1.0) / (np.exp(0.05) + np.exp(1.0))
    assert one.weights[1] == pytest.approx(q_hard)
    assert loss.item() == pytest.approx((1 - q_hard) * 0.1 + q_hard * 2.0)


def test_zero_step_size_is_the_erm_loss_on_a_group_balanced_batch():
    objective = GroupDRO(np.array([0, 1, 2, 0, 1, 2]), ["a", "b", "c"], step_size=0.0)
    losses = torch.tensor([0.3, 1.2, 2.5, 0.7, 0.1, 4.0], requires_grad=True)
    loss = objective(losses, _batch(range(6)))
    assert loss.item() == pytest.approx(losses.mean().item())
    (grad,) = torch.autograd.grad(loss, losses)
    assert torch.allclose(grad, torch.full((6,), 1 / 6))
    assert objective.weights == pytest.approx([1 / 3] * 3)


def test_group_adjustment_favours_small_groups_and_unknown_images_add_their_mean_loss():
    groups = np.array([0] * 100 + [1] * 4 + [-1] * 2)
    adjusted = GroupDRO(groups, ["big", "small"], step_size=1.0, adjustment=1.0)
    adjusted(torch.ones(4), _batch([0, 1, 100, 101]))  # equal losses: only C / sqrt(n_g) differs (0.1 vs 0.5)
    assert adjusted.weights[1] == pytest.approx(np.exp(0.5) / (np.exp(0.1) + np.exp(0.5)))
    plain = GroupDRO(groups, ["big", "small"], step_size=0.0)
    losses = torch.tensor([1.0, 3.0, 5.0, 6.0])  # big, small, unknown, unknown
    # (2 grouped of 4) * (1/2 * 1 + 1/2 * 3) + (5 + 6) / 4
    assert plain(losses, _batch([0, 100, 104, 105])).item() == pytest.approx(0.5 * 2.0 + 11 / 4)
    assert plain.group_counts.tolist() == [100, 4]


def test_empty_groups_get_no_weight_and_bad_groups_are_refused():
    objective = GroupDRO(np.array([0, 0, 2]), ["a", "never", "c"])
    assert objective.weights == pytest.approx([0.5, 0.0, 0.5])
    with pytest.raises(SynaugError, match="group indices must lie in 0..1"):
        GroupDRO(np.array([0, 2]), ["a", "b"])
    with pytest.raises(SynaugError, match="step_size >= 0"):
        GroupDRO(np.array([0, 1]), ["a", "b"], step_size=-1)


# ---- through the trainer -------------------------------------------------------------------
def _with_hard_group(per_class: int = 24) -> LabeledImages:
    """pattern_images with a context: every 4th image is pure noise (context "noisy"), the rest "clean"."""
    data = pattern_images(per_class)
    noisy = np.arange(len(data)) % 4 == 0
    images = data.images.clone()
    images[torch.from_numpy(noisy)] = torch.randint(0, 256, (int(noisy.sum()), 1, 12, 12), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    return dataclasses.replace(data, images=images, groups=noisy.astype(int), group_names=["clean", "noisy"])


def _recorder(data: LabeledImages, seen: list):
    """An objective that records each batch's indices, checks they match its labels, and returns the mean."""

    def objective(losses, batch):
        seen.append(batch.index.clone())
        assert (batch.labels.numpy() == data.labels[batch.index.numpy()]).all()
        return losses.mean()

    return objective


def test_the_objective_hook_sees_each_batch_and_the_mean_objective_changes_nothing(tmp_path):
    data = pattern_images(10)  # 30 images, one batch of 32 per epoch
    config = TrainConfig(**FAST)
    seen: list = []
    hooked = train_classifier(data, config, progress=False, objective=_recorder(data, seen))
    plain = train_classifier(data, config, progress=False)
    assert all(torch.equal(v, plain.model.state_dict()[k]) for k, v in hooked.model.state_dict().items())
    assert len(seen) == 2 and all(sorted(index.tolist()) == list(range(30)) for index in seen)
    # file-backed data: the index still points at the right image
    files = []
    for i, image in enumerate(data.images):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(image[0].numpy()).save(files[-1])
    on_disk = LabeledImages(labels=data.labels, class_names=data.class_names, files=files, channels=1)
    seen.clear()
    train_classifier(on_disk, dataclasses.replace(config, epochs=1, num_workers=0), progress=False, objective=_recorder(on_disk, seen))
    assert sorted(seen[0].tolist()) == list(range(30))


def test_train_group_dro_upweights_the_hard_cells():
    data = _with_hard_group()
    result, objective = train_group_dro(data, TrainConfig(**FAST), step_size=0.1, progress=False)
    assert result.config.weight_decay == 1e-3
    assert objective.steps == 2 * (len(data) // 32)
    noisy = np.array([name.endswith("/noisy") for name in group_cells(data)[1]])
    assert objective.weights[noisy].min() > objective.weights[~noisy].max()  # all six started at 1/6
    kept, _ = train_group_dro(data, TrainConfig(**FAST), weight_decay=None, progress=False)
    assert kept.config.weight_decay == TrainConfig().weight_decay


def test_dro_training_set_with_per_cell_and_class_only_synthetic_images():
    real = _with_hard_group(8)
    per_cell = dataclasses.replace(real.subset([0, 1, 2]), is_synthetic=np.ones(3, bool))
    train, groups, names = dro_training_set(real, per_cell)
    assert len(train) == len(real) + 3 and groups[-3:].tolist() == group_cells(per_cell)[0].tolist()
    class_only = dataclasses.replace(per_cell, groups=None, group_names=None)
    train, groups, names = dro_training_set(real, class_only)
    assert train.groups is None and groups[-3:].tolist() == [-1, -1, -1]
    assert groups[:-3].tolist() == group_cells(real)[0].tolist() and names == group_cells(real)[1]
    renamed = dataclasses.replace(per_cell, group_names=["a", "b"])
    with pytest.raises(SynaugError, match="differ from the real ones"):
        dro_training_set(real, renamed)


# ---- DFR -----------------------------------------------------------------------------------
class PixelFeatures(nn.Module):
    """The normalised pixels are the features; a linear classifier on top."""

    def __init__(self, dim: int, classes: int = 2):
        super().__init__()
        self.classifier = nn.Linear(dim, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _spurious_toy(n: int, agree: float | None, rng: np.random.Generator, per_cell: int = 0) -> LabeledImages:
    """Pixel 0 carries the class (noisy), pixel 1 the attribute (clean), pixels 2-5 noise.

    ``agree``: share of images whose attribute equals the class; None draws ``per_cell`` per cell.
    """
    if agree is None:
        y, a = np.repeat([0, 0, 1, 1], per_cell), np.tile(np.repeat([0, 1], per_cell), 2)
    else:
        y = rng.integers(0, 2, n)
        a = np.where(rng.random(n) < agree, y, 1 - y)
    pixels = np.column_stack([
        128 + 30 * (2 * y - 1) + rng.normal(0, 30, len(y)),
        128 + 60 * (2 * a - 1) + rng.normal(0, 8, len(y)),
        rng.normal(128, 30, (len(y), 4)),
    ])
    images = torch.from_numpy(np.clip(pixels, 0, 255).round().astype(np.uint8)).view(len(y), 1, 1, 6)
    return LabeledImages(labels=y, class_names=["no", "yes"], images=images, groups=a, group_names=["a0", "a1"])


def test_dfr_beats_erm_on_the_worst_group_when_a_spurious_feature_dominates():
    rng = np.random.default_rng(0)
    train, val, test = _spurious_toy(2000, 0.95, rng), _spurious_toy(0, None, rng, 60), _spurious_toy(0, None, rng, 300)
    normalizer = Normalizer.fixed(1)
    erm = PixelFeatures(6)
    head = LogisticRegression(C=100.0).fit(normalizer(train.images).flatten(1).numpy(), train.labels)
    with torch.no_grad():  # ERM on the last layer: the logistic regression fitted on the spurious training set
        erm.classifier.weight.copy_(torch.tensor(np.vstack([np.zeros(6), head.coef_[0]])))
        erm.classifier.bias.copy_(torch.tensor([0.0, head.intercept_[0]]))

    dfr, report = dfr_retrain(erm, val, normalizer, retrains=5, seed=0)
    cells, names = group_cells(test)
    train_counts = np.bincount(group_cells(train)[0], minlength=4)
    erm_worst = group_report(infer(erm, test, normalizer), test.labels, cells, names, train_counts)["worst_group_accuracy"]
    dfr_worst = group_report(infer(dfr, test, normalizer), test.labels, cells, names, train_counts)["worst_group_accuracy"]
    assert erm_worst < 60 and dfr_worst > erm_worst + 20
    assert report["chosen_C"] in DFR_C_GRID and set(report["worst_group_accuracy_by_C"]) == {str(c) for c in DFR_C_GRID}
    assert report["per_group_subsample"] == 60 and report["half_sizes"] == [120, 120] and report["retrains"] == 5
    assert torch.equal(erm.classifier.bias, torch.tensor([0.0, head.intercept_[0]], dtype=torch.float32))  # input untouched
    # deterministic for a seed
    again, _ = dfr_retrain(erm, val, normalizer, retrains=5, seed=0)
    assert torch.equal(again.classifier.weight, dfr.classifier.weight)


def test_dfr_multiclass_head_matches_its_one_vs_rest_fit_and_checks_inputs():
    data = _with_hard_group(12)
    model = PixelFeatures(144, classes=3)
    normalizer = Normalizer.fixed(1)
    retrained, report = dfr_retrain(model, data, normalizer, c_grid=[1.0, 0.1], retrains=2)
    assert report["chosen_C"] in (1.0, 0.1) and retrained.classifier.weight.shape == (3, 144)
    assert not torch.equal(retrained.classifier.weight, model.classifier.weight)
    with pytest.raises(SynaugError, match="no image of class 'checker'"):
        dfr_retrain(model, data.subset(np.flatnonzero(data.labels < 2)), normalizer)
    with pytest.raises(SynaugError, match="nn.Linear with 3 outputs"):
        dfr_retrain(PixelFeatures(144, classes=2), data, normalizer)
    with pytest.raises(SynaugError, match="C > 0"):
        dfr_retrain(model, data, normalizer, c_grid=[0.0])
