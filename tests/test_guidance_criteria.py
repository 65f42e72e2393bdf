"""Feedback criteria against hand-computed values; the class Gaussians of the hardness score."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from synaug.errors import SynaugError
from synaug.guidance import criteria
from synaug.guidance.criteria import CRITERIA, ClassGaussians, entropy, hardness, loss, register_criterion, resolve_criterion

LOG_2PI = math.log(2 * math.pi)


def test_loss_is_the_cross_entropy_against_the_prompted_class():
    logits = torch.tensor([[2.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    values = loss(logits, torch.zeros(2, 1), torch.tensor([0, 1]))
    # p(0) = e²/(e²+2): -log p(0) = log(1 + 2e⁻²); -log p(1) = log(e² + 2)
    assert values.tolist() == pytest.approx([math.log(1 + 2 * math.exp(-2)), math.log(math.exp(2) + 2)], rel=1e-6)


def test_entropy_is_the_predictive_entropy_and_ignores_the_target():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [math.log(3.0), 0.0, -math.inf, -math.inf]])
    values = entropy(logits, torch.zeros(2, 1), None)
    # uniform over 4: log 4; (3/4, 1/4, 0, 0): -(3/4 log 3/4 + 1/4 log 1/4)
    assert values.tolist() == pytest.approx([math.log(4), -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))], rel=1e-6)


def two_class_toy() -> ClassGaussians:
    """Class 0: μ = (0, 0), Σ = diag(1, 4). Class 1: μ = (1, 1), Σ = [[2, 1], [1, 2]]."""
    means = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    covariances = torch.tensor([[[1.0, 0.0], [0.0, 4.0]], [[2.0, 1.0], [1.0, 2.0]]])
    return ClassGaussians(means, covariances)


def test_hardness_on_a_two_class_toy_gaussian_matches_the_hand_computation():
    gaussians = two_class_toy()
    features = torch.tensor([[1.0, 2.0], [1.0, 2.0]])
    values = hardness(torch.zeros(2, 2), features, torch.tensor([0, 1]), class_gaussians=gaussians)
    # f = (1, 2) under class 0: Mahalanobis² = 1²/1 + 2²/4 = 2, log det Σ = log 4
    #   NLL = 0.5·2 + 0.5·log 4 + 0.5·2·log 2π = 1 + log 2 + log 2π
    # under class 1: f - μ = (0, 1), Σ⁻¹ = [[2, -1], [-1, 2]] / 3, Mahalanobis² = 2/3, log det Σ = log 3
    #   NLL = 1/3 + 0.5·log 3 + log 2π
    expected = [1 + math.log(2) + LOG_2PI, 1 / 3 + 0.5 * math.log(3) + LOG_2PI]
    assert values.tolist() == pytest.approx(expected, rel=1e-6)


def test_hardness_gradient_is_the_whitened_offset():
    features = torch.tensor([[1.0, 2.0]], requires_grad=True)
    two_class_toy().negative_log_likelihood(features, torch.tensor([0])).sum().backward()
    # d/df 0.5 (f-μ)ᵀ Σ⁻¹ (f-μ) = Σ⁻¹ (f-μ) = (1/1, 2/4)
    assert features.grad.tolist() == [pytest.approx([1.0, 0.5])]


def test_fitted_gaussians_score_as_scipy_says_and_recover_a_well_sampled_class():
    rng = np.random.default_rng(0)
    true_cov = np.array([[1.0, 0.5, 0.0], [0.5, 2.0, 0.3], [0.0, 0.3, 0.5]])
    many = rng.multivariate_normal([1.0, -1.0, 0.0], true_cov, size=4000)
    few = rng.normal(size=(3, 3)) + 5.0
    features = torch.from_numpy(np.concatenate([many, few])).float()
    labels = np.array([0] * len(many) + [1] * len(few))
    fitted = ClassGaussians.fit(features, labels, num_classes=2)
    assert fitted.counts.tolist() == [4000, 3]
    assert np.allclose(fitted.means[0].numpy(), many.mean(axis=0))
    assert np.abs(fitted.covariances[0].numpy() - true_cov).max() < 0.1  # little shrinkage with 4000 samples
    assert fitted.metadata["shrinkage"][1] > fitted.metadata["shrinkage"][0]  # 3 samples in 3-d: heavily shrunk
    points = torch.tensor([[0.0, 0.0, 0.0], [5.0, 5.0, 5.0]])
    for target in (0, 1):
        expected = -multivariate_normal(fitted.means[target].numpy(), fitted.covariances[target].numpy()).logpdf(points.numpy())
        got = fitted.negative_log_likelihood(points, torch.tensor([target, target]))
        assert got.tolist() == pytest.approx(expected.tolist(), rel=1e-4)


def test_fit_keeps_rank_deficient_classes_invertible_and_refuses_single_images():
    features = torch.randn(2 + 10, 16, generator=torch.Generator().manual_seed(0))
    fitted = ClassGaussians.fit(features, np.array([0, 0] + [1] * 10), num_classes=2)  # 2 samples in 16-d
    assert torch.isfinite(fitted.negative_log_likelihood(features, torch.tensor([0] * 12))).all()
    with pytest.raises(SynaugError, match="class 1 has 1 real image"):
        ClassGaussians.fit(features[:3], np.array([0, 0, 1]), num_classes=2)
    with pytest.raises(SynaugError, match="class 2 has 0"):
        ClassGaussians.fit(features[:4], np.array([0, 0, 1, 1]), num_classes=3)


def test_gaussians_round_trip_through_safetensors(tmp_path):
    gaussians = two_class_toy()
    gaussians.metadata["classifier"] = "abc"
    loaded = ClassGaussians.load(gaussians.save(tmp_path / "g.safetensors"))
    assert torch.equal(loaded.covariances, gaussians.covariances) and loaded.metadata == {"classifier": "abc"}
    assert loaded.digest() == gaussians.digest()
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(SynaugError, match="not a readable class Gaussians file"):
        ClassGaussians.load(tmp_path / "bad.safetensors")


def test_non_positive_definite_covariance_is_refused():
    with pytest.raises(SynaugError, match="class 1 is not positive definite"):
        ClassGaussians(torch.zeros(2, 2), torch.stack([torch.eye(2), torch.zeros(2, 2)]))


@pytest.fixture
def registry():
    """Restore the criterion registry after a test that registers one."""
    saved = (dict(CRITERIA), set(criteria.NEEDS_CLASS_GAUSSIANS), set(criteria.NEEDS_NO_TARGET))
    yield
    CRITERIA.clear()
    CRITERIA.update(saved[0])
    criteria.NEEDS_CLASS_GAUSSIANS.clear()
    criteria.NEEDS_CLASS_GAUSSIANS.update(saved[1])
    criteria.NEEDS_NO_TARGET.clear()
    criteria.NEEDS_NO_TARGET.update(saved[2])


def negative_margin(logits, features, target):
    """Largest other logit minus the target's: high where the classifier is wrong."""
    others = logits.scatter(1, target.view(-1, 1), -math.inf)
    return others.amax(dim=1) - logits.gather(1, target.view(-1, 1)).squeeze(1)


def test_a_registered_criterion_is_resolved_by_name(registry):
    register_criterion("margin", negative_margin)
    values = resolve_criterion("margin")(torch.tensor([[3.0, 1.0, 0.0]]), torch.zeros(1, 1), torch.tensor([1]))
    assert values.tolist() == [2.0]
    with pytest.raises(SynaugError, match="exists already"):
        register_criterion("margin", negative_margin)
    register_criterion("margin", entropy, needs_target=False, replace=True)
    assert "margin" in criteria.NEEDS_NO_TARGET


def test_resolving_checks_names_and_the_gaussians_hardness_needs():
    with pytest.raises(SynaugError, match="unknown feedback criterion 'confusion'; choose one of entropy, hardness, loss"):
        resolve_criterion("confusion")
    with pytest.raises(SynaugError, match="needs class Gaussians"):
        resolve_criterion("hardness")
    bound = resolve_criterion("hardness", two_class_toy())
    assert bound(torch.zeros(1, 2), torch.tensor([[0.0, 0.0]]), torch.tensor([0])).item() == pytest.approx(math.log(2) + LOG_2PI)
