"""Group and fairness metrics against values worked out by hand, plus the plot."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synaug.errors import SynaugError
from synaug.evaluate.groups import MEAN_UNWEIGHTED, MEAN_WEIGHTED, group_report, plot_group_accuracy

# Binary target, two sensitive groups (0 = red, 1 = blue), five images each.
LABELS = np.array([1, 1, 1, 0, 0, 1, 1, 0, 0, 0])
PREDS = np.array([1, 1, 0, 0, 1, 1, 0, 0, 0, 0])
SENSITIVE = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
CELLS = LABELS * 2 + SENSITIVE  # (class, sensitive) cells: 0 = 0/red, 1 = 0/blue, 2 = 1/red, 3 = 1/blue
CELL_NAMES = ["0/red", "0/blue", "1/red", "1/blue"]
TRAIN_COUNTS = [10, 30, 50, 10]


def test_group_accuracies_worst_and_both_means_by_hand():
    report = group_report(PREDS, LABELS, CELLS, CELL_NAMES, TRAIN_COUNTS, num_classes=2)
    # 0/red: images 3, 4 -> 1 of 2 right; 0/blue: 7, 8, 9 -> 3 of 3; 1/red: 0, 1, 2 -> 2 of 3; 1/blue: 5, 6 -> 1 of 2
    by_hand = [50.0, 100.0, 200 / 3, 50.0]
    assert [g["accuracy"] for g in report["groups"]] == pytest.approx(by_hand)
    assert [g["test_count"] for g in report["groups"]] == [2, 3, 3, 2]
    assert report["worst_group_accuracy"] == 50.0 and report["worst_group"] == "0/red"
    assert report["mean_unweighted"] == pytest.approx((50 + 100 + 200 / 3 + 50) / 4)  # 66.67
    assert report["mean_weighted_by_train"] == pytest.approx((10 * 50 + 30 * 100 + 50 * 200 / 3 + 10 * 50) / 100)  # 73.33
    assert report["accuracy"] == pytest.approx(70.0)  # 7 of 10
    assert report["labels"] == {"mean_unweighted": MEAN_UNWEIGHTED, "mean_weighted_by_train": MEAN_WEIGHTED}
    logits = torch.nn.functional.one_hot(torch.from_numpy(PREDS), 2).float()
    assert group_report(logits, LABELS, CELLS, CELL_NAMES, TRAIN_COUNTS)["groups"] == report["groups"]


def test_binary_fairness_by_hand():
    fairness = group_report(PREDS, LABELS, CELLS, CELL_NAMES, TRAIN_COUNTS, SENSITIVE, ["red", "blue"], num_classes=2)["fairness"]
    # red: y 1 1 1 0 0, pred 1 1 0 0 1 -> TPR 2/3, FPR 1/2, selection 3/5, accuracy 3/5
    # blue: y 1 1 0 0 0, pred 1 0 0 0 0 -> TPR 1/2, FPR 0/3, selection 1/5, accuracy 4/5
    # equalized odds: max(|2/3 - 1/2|, |1/2 - 0|) = 1/2; demographic parity: 3/5 - 1/5 = 2/5
    assert fairness["equalized_odds_difference"] == pytest.approx(50.0)
    assert fairness["demographic_parity_difference"] == pytest.approx(40.0)
    rows = {row["group"]: row for row in fairness["by_group"]}
    assert rows["red"] == pytest.approx({"group": "red", "accuracy": 60.0, "selection_rate": 60.0, "tpr": 200 / 3, "fpr": 50.0, "count": 5})
    assert rows["blue"] == pytest.approx({"group": "blue", "accuracy": 80.0, "selection_rate": 20.0, "tpr": 50.0, "fpr": 0.0, "count": 5})
    assert fairness["left_out_of_equalized_odds"] == []


def test_multiclass_fairness_one_vs_rest_by_hand():
    labels, preds, sensitive = np.array([0, 1, 2, 0, 1, 2]), np.array([0, 1, 1, 0, 2, 2]), np.array([0, 0, 0, 1, 1, 1])
    fairness = group_report(preds, labels, labels, ["0", "1", "2"], [1, 1, 1], sensitive, ["a", "b"], num_classes=3)["fairness"]
    # class 0: both groups TPR 1, FPR 0, selection 1/3 -> EOD 0, DPD 0
    # class 1: a TPR 1, FPR 1/2, sel 2/3; b TPR 0, FPR 0, sel 0 -> EOD 1, DPD 2/3
    # class 2: a TPR 0, FPR 0, sel 0; b TPR 1, FPR 1/2, sel 2/3 -> EOD 1, DPD 2/3
    assert [row["equalized_odds_difference"] for row in fairness["per_class"]] == pytest.approx([0, 100, 100])
    assert [row["demographic_parity_difference"] for row in fairness["per_class"]] == pytest.approx([0, 200 / 3, 200 / 3])
    assert fairness["equalized_odds_difference"] == pytest.approx(100) and fairness["equalized_odds_difference_mean"] == pytest.approx(200 / 3)
    assert fairness["demographic_parity_difference"] == pytest.approx(200 / 3)
    assert fairness["demographic_parity_difference_mean"] == pytest.approx(400 / 9)
    # by group: accuracy 2/3 each; mean TPR (1 + 1 + 0) / 3 and (1 + 0 + 1) / 3; mean FPR (0 + 1/2 + 0) / 3
    for row in fairness["by_group"]:
        assert row == pytest.approx({"group": row["group"], "accuracy": 200 / 3, "mean_tpr": 200 / 3, "mean_fpr": 50 / 3, "count": 3})


def test_a_sensitive_group_without_positives_is_left_out_of_equalized_odds():
    labels, preds = np.array([1, 0, 1, 0, 0, 0]), np.array([1, 0, 0, 0, 1, 0])
    sensitive = np.array([0, 0, 1, 1, 2, 2])  # group 2 has no positive, so no TPR
    fairness = group_report(preds, labels, labels, ["0", "1"], [1, 1], sensitive, ["a", "b", "c"], num_classes=2)["fairness"]
    # a: TPR 1, FPR 0; b: TPR 0, FPR 0 -> EOD 1 (c left out); selection a 1/2, b 0, c 1/2 -> DPD 1/2
    assert fairness["left_out_of_equalized_odds"] == ["c"]
    assert fairness["equalized_odds_difference"] == pytest.approx(100.0)
    assert fairness["demographic_parity_difference"] == pytest.approx(50.0)


def test_groups_without_test_images_and_bad_input():
    report = group_report(PREDS, LABELS, CELLS, CELL_NAMES + ["empty"], TRAIN_COUNTS + [100], num_classes=2)
    assert report["groups"][-1]["accuracy"] is None and report["mean_unweighted"] == pytest.approx(200 / 3)
    assert report["mean_weighted_by_train"] == pytest.approx(220 / 3)  # the empty group's train weight is dropped
    with pytest.raises(SynaugError, match="one of each per test image"):
        group_report(PREDS[:5], LABELS, CELLS, CELL_NAMES, TRAIN_COUNTS)
    with pytest.raises(SynaugError, match="one training count per group"):
        group_report(PREDS, LABELS, CELLS, CELL_NAMES, TRAIN_COUNTS[:3])
    with pytest.raises(SynaugError, match="out of range for 3 groups"):
        group_report(PREDS, LABELS, CELLS, CELL_NAMES[:3], TRAIN_COUNTS[:3])


def test_perfect_predictions_and_the_plot(tmp_path):
    runs = {
        "ERM": group_report(PREDS, LABELS, CELLS, CELL_NAMES, TRAIN_COUNTS, SENSITIVE, ["red", "blue"], num_classes=2),
        "DFR": group_report(LABELS, LABELS, CELLS, CELL_NAMES, TRAIN_COUNTS, SENSITIVE, ["red", "blue"], num_classes=2),
    }
    # every group right: no equalized-odds gap, and the parity gap of the base rates (red 3/5, blue 2/5 positive)
    perfect = runs["DFR"]
    assert [perfect[k] for k in ("worst_group_accuracy", "mean_unweighted", "mean_weighted_by_train", "accuracy")] == [100.0] * 4
    assert perfect["fairness"]["equalized_odds_difference"] == pytest.approx(0.0)
    assert perfect["fairness"]["demographic_parity_difference"] == pytest.approx(20.0)
    png = plot_group_accuracy(runs, tmp_path / "plots" / "groups.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["groups.png", "plots"]
