"""Mixup and cRT as the pipeline runs them: soft labels only for the mixing recipes, and
class-balanced draws of the real images for cRT."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures_generation import single_thread_torch  # noqa: F401  (fixture)
from pipeline_helpers import tiny_config, tiny_fashion

from synaug.pipeline import parse_run_config, run_pipeline
from synaug.train.augment import BatchAugment
from synaug.train.crt import ClassBalancedSampler

pytestmark = pytest.mark.usefixtures("single_thread_torch")


@pytest.fixture
def fashion(tmp_path, monkeypatch):
    return tiny_fashion(tmp_path, monkeypatch)


def run(config: dict):
    parsed = parse_run_config(config, where="tiny.yaml")
    return run_pipeline(parsed, config_name="tiny.yaml", config_text="", command="synaug run tiny.yaml", progress=False)


def test_mixup_mixes_labels_only_in_the_recipes_that_mix(fashion, tmp_path, monkeypatch):
    seen: list[tuple[float, bool, bool]] = []
    original = BatchAugment.mix

    def recording(self, images, labels, is_synthetic=None):
        mixed, targets = original(self, images, labels, is_synthetic)
        soft = bool((targets.max(dim=1).values < 1).any())
        one_hot_rows_sum_to_one = bool(np.allclose(targets.sum(dim=1).numpy(), 1.0))
        seen.append((self.mixup_alpha, soft, one_hot_rows_sum_to_one))
        return mixed, targets

    monkeypatch.setattr(BatchAugment, "mix", recording)
    result = run(tiny_config(tmp_path / "out", runs={"recipes": ["fill", "fill_mixup"]}, train={"mixup_alpha": 0.4}))
    plain = [entry for entry in seen if entry[0] == 0.0]
    mixed = [entry for entry in seen if entry[0] == 0.4]
    assert plain and mixed and len(plain) + len(mixed) == len(seen)
    assert not any(soft for _, soft, _ in plain)
    assert all(soft for _, soft, _ in mixed)  # Beta(0.4, 0.4) never gives exactly 0 or 1
    assert all(total for _, _, total in seen)
    counts = {run.recipe: run.sample_counts for run in result.runs}
    assert counts == {"fill": {"real": 46, "synthetic": 54}, "fill_mixup": {"real": 46, "synthetic": 54}}


def test_crt_draws_the_real_images_class_balanced(fashion, tmp_path, monkeypatch):
    drawn: list[np.ndarray] = []
    original_init, original_epoch = ClassBalancedSampler.__init__, ClassBalancedSampler.epoch

    def init(self, labels, num_samples=None, seed=0):
        original_init(self, labels, num_samples, seed)
        self.recorded_labels = np.asarray(labels)

    def epoch(self):
        indices = original_epoch(self)
        drawn.append(self.recorded_labels[indices.numpy()])
        return indices

    monkeypatch.setattr(ClassBalancedSampler, "__init__", init)
    monkeypatch.setattr(ClassBalancedSampler, "epoch", epoch)
    result = run(tiny_config(tmp_path / "out", runs={"recipes": ["synaug"]}, crt={"epochs": 20}))
    labels = np.concatenate(drawn)
    assert len(drawn) == 20 and len(labels) == 20 * 46  # one epoch = the 46 *real* images, not the 100 of the filled set
    shares = np.bincount(labels, minlength=10) / len(labels)
    real_shares = np.array([10, 8, 6, 5, 4, 4, 3, 2, 2, 2]) / 46
    assert np.all(np.abs(shares - 0.1) < 0.035), shares  # balanced, although the real data is not
    assert shares[0] < real_shares[0] - 0.05 and shares[-1] > real_shares[-1] + 0.03
    assert result.runs[0].label == "SYNAuG (fill + Mixup + cRT)"
