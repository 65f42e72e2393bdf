"""cRT: class-balanced sampling, a frozen backbone, a re-trained last layer."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from train_helpers import pattern_images

from synaug.errors import SynaugError
from synaug.train import ClassBalancedSampler, TrainConfig, infer, retrain_classifier, train_classifier


def test_class_balanced_sampler_draws_every_class_equally_often():
    labels = np.repeat([0, 1, 2, 3], [500, 60, 7, 1])
    sampler = ClassBalancedSampler(labels, num_samples=40_000, seed=0)
    counts = np.bincount(labels[sampler.epoch().numpy()], minlength=4)
    assert len(sampler) == 40_000
    assert np.all(np.abs(counts - 10_000) < 400)  # about 4.6 standard deviations
    assert len(ClassBalancedSampler(labels).epoch()) == len(labels)


def test_class_balanced_batches_are_balanced_too():
    labels = np.repeat([0, 1], [990, 10])
    batch = labels[ClassBalancedSampler(labels, seed=1).epoch().numpy()[:128]]
    assert 40 < (batch == 1).sum() < 88


def test_sampler_is_seeded():
    labels = np.repeat([0, 1, 2], [30, 5, 2])
    assert torch.equal(ClassBalancedSampler(labels, seed=4).epoch(), ClassBalancedSampler(labels, seed=4).epoch())


@pytest.fixture(scope="module")
def trained():
    data = pattern_images([60, 8, 3], synthetic_every=5)
    config = TrainConfig(epochs=3, batch_size=16, lr=0.1, crop_padding=1, amp="off", device="cpu")
    return data, train_classifier(data, config, progress=False)


def test_backbone_frozen_classifier_retrained_input_untouched(trained):
    data, result = trained
    before = {k: v.clone() for k, v in result.model.state_dict().items()}
    retrained = retrain_classifier(result.model, data, result.normalizer, epochs=3, seed=0)
    after = retrained.state_dict()
    for name, tensor in before.items():
        assert torch.equal(result.model.state_dict()[name], tensor), f"{name} of the input model changed"
        if not name.startswith("classifier."):
            assert torch.equal(after[name], tensor), f"backbone tensor {name} changed"
    assert not torch.equal(after["classifier.weight"], before["classifier.weight"])
    assert all(p.requires_grad for p in retrained.parameters())
    again = retrain_classifier(result.model, data, result.normalizer, epochs=3, seed=0)
    assert torch.equal(again.classifier.weight, retrained.classifier.weight)


def test_crt_raises_the_accuracy_of_rare_classes(trained):
    data, result = trained
    test = pattern_images(30, seed=5)
    retrained = retrain_classifier(result.model, data, result.normalizer, epochs=10, seed=0)
    def per_class(model):
        predictions = infer(model, test, result.normalizer).argmax(1).numpy()
        return np.array([(predictions[test.labels == c] == c).mean() for c in range(3)])
    assert per_class(retrained)[1:].mean() > per_class(result.model)[1:].mean() + 0.2  # here: 50 % -> 100 %


def test_sources_and_bad_settings(trained):
    data, result = trained
    synthetic_only = data.subset(np.flatnonzero(data.is_synthetic))
    with pytest.raises(SynaugError, match="cRT found no real training images"):
        retrain_classifier(result.model, synthetic_only, result.normalizer)
    from_synthetic = retrain_classifier(result.model, synthetic_only, result.normalizer, epochs=1, source="real+synthetic")
    assert not torch.equal(from_synthetic.classifier.weight, result.model.classifier.weight)
    with pytest.raises(SynaugError, match="unknown cRT source 'fake'"):
        retrain_classifier(result.model, data, result.normalizer, source="fake")
    with pytest.raises(SynaugError, match="cRT needs epochs >= 1"):
        retrain_classifier(result.model, data, result.normalizer, epochs=0)


def test_real_plus_synthetic_trains_on_every_image_and_real_on_the_real_ones(trained):
    data, result = trained
    unflagged = dataclasses.replace(data, is_synthetic=np.zeros(len(data), dtype=bool))
    real_only = data.subset(np.flatnonzero(~data.is_synthetic))

    def weight(images, source):
        return retrain_classifier(result.model, images, result.normalizer, epochs=1, seed=0, source=source).classifier.weight

    both = weight(data, "real+synthetic")
    assert torch.equal(both, weight(unflagged, "real"))  # every image, the synthetic flag ignored
    assert torch.equal(weight(data, "real"), weight(real_only, "real+synthetic"))  # the real images only
    assert not torch.equal(both, weight(data, "real"))
