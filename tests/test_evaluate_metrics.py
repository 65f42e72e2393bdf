"""Metrics against hand-computed values; results files; plots."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score

from synaug.errors import SynaugError
from synaug.evaluate import evaluate, plot_confusion_matrix, plot_per_class_accuracy, write_results

NAMES = ["cat", "dog", "owl", "yak"]
TRAIN_COUNTS = [150, 100, 19, 20]  # many (> 100), medium (100 is not > 100), few (< 20), medium (20 is not < 20)
LABELS = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
PREDICTIONS = np.array([0, 0, 0, 2, 1, 1, 2, 0, 1, 0])  # class 0: 3/4, class 1: 2/2, class 2: 1/4, class 3: no test images


def _logits(predictions: np.ndarray) -> torch.Tensor:
    logits = torch.zeros(len(predictions), len(NAMES))
    logits[torch.arange(len(predictions)), torch.from_numpy(predictions)] = 1.0
    return logits


@pytest.fixture
def metrics():
    return evaluate(_logits(PREDICTIONS), LABELS, TRAIN_COUNTS, NAMES)


def test_hand_computed_values(metrics):
    assert metrics["top1"] == pytest.approx(60.0)
    assert metrics["balanced_accuracy"] == pytest.approx((75 + 100 + 25) / 3)
    assert metrics["balanced_accuracy"] == pytest.approx(100 * balanced_accuracy_score(LABELS, PREDICTIONS))
    assert metrics["many"] == pytest.approx(75.0)
    assert metrics["medium"] == pytest.approx(100.0)  # mean over classes with test images only
    assert metrics["few"] == pytest.approx(25.0)
    assert [c["accuracy"] for c in metrics["classes"]] == [75.0, 100.0, 25.0, None]
    assert [c["shot_group"] for c in metrics["classes"]] == ["many", "medium", "few", "medium"]
    assert metrics["shot_groups"] == {"many": ["cat"], "medium": ["dog", "yak"], "few": ["owl"]}
    assert metrics["confusion_matrix"][2] == [2, 1, 1, 0] and metrics["num_samples"] == 10


def test_group_accuracy_is_the_mean_of_class_accuracies_not_pooled():
    # many: class 0 has 1 test image (correct), class 1 has 9 (all wrong): mean 50, pooled 10
    labels = np.array([0] + [1] * 9)
    metrics = evaluate(_logits(np.zeros(10, dtype=int)), labels, [200, 300, 5, 5], NAMES)
    assert metrics["many"] == pytest.approx(50.0) and metrics["top1"] == pytest.approx(10.0)
    assert metrics["few"] is None


def test_thresholds_are_configurable(metrics):
    custom = evaluate(_logits(PREDICTIONS), LABELS, TRAIN_COUNTS, NAMES, many_threshold=99, few_threshold=20)
    assert custom["shot_groups"] == {"many": ["cat", "dog"], "medium": ["yak"], "few": ["owl"]}
    assert custom["many"] == pytest.approx(87.5) and custom["medium"] is None


def test_mismatches_are_one_line_errors():
    with pytest.raises(SynaugError, match="do not match 4 classes"):
        evaluate(torch.zeros(10, 3), LABELS, TRAIN_COUNTS, NAMES)
    with pytest.raises(SynaugError, match="10 predictions for 9 labels"):
        evaluate(_logits(PREDICTIONS), LABELS[:9], TRAIN_COUNTS, NAMES)
    with pytest.raises(SynaugError, match="test label 7 is out of range"):
        evaluate(_logits(PREDICTIONS), np.where(LABELS == 2, 7, LABELS), TRAIN_COUNTS, NAMES)


def test_write_results_json_and_markdown(metrics, tmp_path):
    other = evaluate(_logits(LABELS), LABELS, TRAIN_COUNTS, NAMES)
    write_results({"baseline": metrics, "SYNAuG": other}, tmp_path, title="Demo")
    stored = json.loads((tmp_path / "results.json").read_text())
    assert stored["baseline"]["top1"] == pytest.approx(60.0) and stored["SYNAuG"]["top1"] == 100.0
    markdown = (tmp_path / "results.md").read_text()
    assert markdown.startswith("# Demo\n")
    assert "| baseline | 60.0 | 66.7 | 75.0 | 100.0 | 25.0 |" in markdown
    assert "| SYNAuG | 100.0 | 100.0 | 100.0 | 100.0 | 100.0 |" in markdown
    assert "| yak | 20 | medium | 0 | – | – |" in markdown
    write_results(metrics, tmp_path / "single")
    assert json.loads((tmp_path / "single" / "results.json").read_text())["top1"] == pytest.approx(60.0)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["results.json", "results.md"]


def test_plots_are_pngs(metrics, tmp_path):
    other = evaluate(_logits(LABELS), LABELS, TRAIN_COUNTS, NAMES)
    for path in (
        plot_confusion_matrix(metrics, tmp_path / "confusion.png"),
        plot_per_class_accuracy({"baseline": metrics, "SYNAuG": other}, tmp_path / "per_class.png"),
        plot_per_class_accuracy({"only": metrics}, tmp_path / "one.png"),
    ):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SynaugError, match="no runs to plot"):
        plot_per_class_accuracy({}, tmp_path / "none.png")
