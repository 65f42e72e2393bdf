"""Models: output shapes and the features/classifier contract; the input normaliser."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from synaug.errors import SynaugError
from synaug.train.models import MODELS, Normalizer, build_model

SHAPES = {"small_resnet": (1, 28, 64), "resnet32": (3, 32, 64), "resnet50": (3, 64, 2048)}


def test_every_builtin_model_has_a_shape_case():
    builtin = {name for name, factory in MODELS.items() if factory.__module__ == "synaug.train.models"}
    assert builtin == set(SHAPES)


@pytest.mark.parametrize("name", list(SHAPES))
def test_forward_is_classifier_of_features(name):
    channels, size, feature_dim = SHAPES[name]
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, in_channels=channels).eval()
    x = torch.randn(2, channels, size, size)
    features = model.features(x)
    assert features.shape == (2, feature_dim)
    assert isinstance(model.classifier, nn.Linear) and model.classifier.out_features == 7
    torch.testing.assert_close(model(x), model.classifier(features))


def test_resnet32_has_the_cifar_size_and_depth():
    model = build_model("resnet32", 100, 3)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) + 1 == 32  # 31 convolutions (no projection shortcuts) + the linear layer
    parameters = sum(p.numel() for p in model.parameters())
    assert 460_000 < parameters < 480_000  # 0.46 M backbone + 6,500 for 100 classes


def test_small_resnet_takes_one_channel_28px():
    model = build_model("small_resnet", 10, 1).eval()
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 1 + 3 * 2 + 2  # stem, 3 blocks, 2 shortcuts


def test_unknown_model_and_too_few_classes_are_one_line_errors():
    with pytest.raises(SynaugError, match="unknown model 'resnet18'; choose one of"):
        build_model("resnet18", 10, 3)
    with pytest.raises(SynaugError, match="at least 2 classes"):
        build_model("resnet32", 1, 3)


def test_normalizer_scales_uint8_and_unit_floats_alike():
    images = torch.tensor([[[[0, 255], [51, 102]]]], dtype=torch.uint8)
    norm = Normalizer(mean=(0.2,), std=(0.5,))
    expected = (torch.tensor([[[[0.0, 1.0], [0.2, 0.4]]]]) - 0.2) / 0.5
    torch.testing.assert_close(norm(images), expected)
    torch.testing.assert_close(norm(images.float() / 255), expected)
    torch.testing.assert_close(norm.from_signed(images.float() / 127.5 - 1), expected)


def test_normalizer_statistics_and_round_trip():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8, generator=generator)
    images[:, 1] = 255
    norm = Normalizer.from_images(images)
    x = norm(images)
    assert x[:, 0].mean().abs() < 1e-4 and (x[:, 0].std() - 1).abs() < 1e-2
    assert norm.std[1] == pytest.approx(1e-3)  # a constant channel gets a floor, not a division by zero
    assert Normalizer.from_dict(norm.to_dict()) == norm
    assert Normalizer.fixed(2) == Normalizer(mean=(0.5, 0.5), std=(0.5, 0.5))
