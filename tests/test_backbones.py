"""Pretrained ``transformers`` backbones as classifiers: the model contract for each family, training
with a separate backbone learning rate and a resolution, checkpoints that rebuild without the source,
cRT and DFR on their features, and the one-line errors for a backbone that does not fit the data."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_generation import single_thread_torch  # noqa: F401  (fixture)
from pipeline_helpers import error_line, stage_folders, tiny_config, tiny_fashion, write_config
from tiny_transformers import save_backbone
from train_helpers import pattern_images

from synaug.errors import SynaugError
from synaug.guidance.classifier import fit_class_gaussians
from synaug.guidance.criteria import resolve_criterion
from synaug.train import build_model, load_checkpoint, save_checkpoint, train_classifier
from synaug.train.backbones import BackboneClassifier, parameter_groups
from synaug.train.crt import retrain_classifier
from synaug.train.dfr import dfr_retrain
from synaug.train.inference import extract_features, infer
from synaug.train.trainer import TrainConfig

pytestmark = pytest.mark.usefixtures("single_thread_torch")
KINDS = ("resnet", "convnext", "vit", "dinov2", "clip")


@pytest.fixture(scope="module")
def backbones(tmp_path_factory) -> dict[str, Path]:
    """Each tiny random backbone family saved to disk, taking 1-channel images (ViT-style ones at 16 px)."""
    root = tmp_path_factory.mktemp("backbones")
    return {kind: save_backbone(root / kind, kind, channels=1, image_size=16) for kind in KINDS}


@pytest.mark.parametrize("kind", KINDS)
def test_every_family_follows_the_model_contract(backbones, kind):
    torch.manual_seed(0)
    model = build_model(f"hf:{backbones[kind]}", 3, 1, image_size=(12, 12), resolution=16).eval()
    x = torch.randn(4, 1, 12, 12, requires_grad=True)
    features = model.features(x)
    assert isinstance(model, BackboneClassifier) and isinstance(model.classifier, torch.nn.Linear)
    assert features.shape == (4, model.classifier.in_features) and model.classifier.out_features == 3
    torch.testing.assert_close(model(x), model.classifier(features))
    model(x)[:, 0].sum().backward()  # the hardness criterion differentiates through the resize and the backbone
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_a_backbone_trains_with_its_own_learning_rate_and_its_checkpoint_rebuilds(backbones, tmp_path):
    data = pattern_images(24, size=12)
    source = Path(shutil.copytree(backbones["resnet"], tmp_path / "resnet"))
    config = TrainConfig(model=f"hf:{source}", epochs=3, batch_size=24, lr=0.05, backbone_lr=0.0, resolution=16,
                         device="cpu", num_workers=0, channels_last=False)
    before = build_model(config.model, 3, 1, image_size=(12, 12), resolution=16).backbone.state_dict()
    result = train_classifier(data, config, progress=False)
    after = result.model.backbone.state_dict()
    weights = [name for name in before if name.endswith("weight")]
    # backbone_lr 0 freezes the pretrained weights (batch-norm statistics still move); the fresh head learns
    assert all(torch.equal(before[name], after[name]) for name in weights)
    assert result.history[-1]["accuracy"] > result.history[0]["accuracy"] or result.history[-1]["accuracy"] == 1.0

    save_checkpoint(result, tmp_path / "ckpt")
    shutil.rmtree(source)  # the checkpoint needs no source folder
    model, normalizer, meta = load_checkpoint(tmp_path / "ckpt")
    assert meta["backbone"]["resolution"] == 16 and meta["train_config"]["backbone_lr"] == 0.0
    torch.testing.assert_close(infer(model, data, normalizer), infer(result.model, data, result.normalizer))


def test_parameter_groups_split_the_head_from_the_backbone(backbones):
    model = build_model(f"hf:{backbones['vit']}", 2, 1, image_size=(16, 16))
    head, body = parameter_groups(model, 0.1, 0.001)
    assert (head["lr"], body["lr"]) == (0.1, 0.001) and head["params"] == list(model.classifier.parameters())
    assert len(head["params"]) + len(body["params"]) == len(list(model.parameters()))
    assert parameter_groups(model, 0.1, None)[1]["base_lr"] == 0.1


def test_crt_dfr_and_hardness_run_on_backbone_features(backbones):
    data = pattern_images([20, 8, 4], size=16, seed=1)
    config = TrainConfig(model=f"hf:{backbones['dinov2']}", epochs=1, batch_size=16, lr=0.05, backbone_lr=0.01,
                         device="cpu", num_workers=0, channels_last=False)
    result = train_classifier(data, config, progress=False)
    retrained = retrain_classifier(result.model, data, result.normalizer, epochs=1, batch_size=8)
    assert not torch.equal(retrained.classifier.weight, result.model.classifier.weight)
    assert torch.equal(retrained.backbone.embeddings.patch_embeddings.projection.weight,
                       result.model.backbone.embeddings.patch_embeddings.projection.weight)
    groups = np.arange(len(data)) % 2
    features = extract_features(result.model, data, result.normalizer)
    assert features.shape == (len(data), result.model.feature_dim)
    fitted, report = dfr_retrain(result.model, data, result.normalizer, groups=groups, c_grid=[1.0], retrains=1)
    assert report["chosen_C"] == 1.0 and infer(fitted, data, result.normalizer).shape == (len(data), 3)
    # the hardness criterion: class Gaussians on the backbone's features, differentiated back to the pixels
    hardness = resolve_criterion("hardness", fit_class_gaussians(result.model, data, result.normalizer))
    pixels = (torch.rand(4, 1, 16, 16) * 2 - 1).requires_grad_()
    features = result.model.features(result.normalizer.from_signed(pixels))
    hardness(result.model.classifier(features), features, torch.tensor([0, 1, 2, 0])).sum().backward()
    assert torch.isfinite(pixels.grad).all() and pixels.grad.abs().sum() > 0

@pytest.mark.parametrize(
    ("kind", "channels", "size", "resolution", "expected"),
    [
        ("resnet", 3, (12, 12), None, "takes 1-channel images but the data has 3; set the data's channels to 1"),
        ("vit", 1, (28, 28), None, "cannot take 1x28x28 images (Input image size (28*28) doesn't match model (16*16).); set train.resolution to 16"),
        ("clip", 1, (12, 12), 20, "set train.resolution to 16 (the backbone's image size)"),
    ],
)
def test_a_backbone_that_does_not_fit_the_data_is_one_line(backbones, kind, channels, size, resolution, expected):
    with pytest.raises(SynaugError) as error:
        build_model(f"hf:{backbones[kind]}", 3, channels, image_size=size, resolution=resolution)
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_bad_backbone_settings_are_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SynaugError, match=r"backbone folder .*empty holds no config.json; give a folder written by save_pretrained"):
        build_model(f"hf:{tmp_path / 'empty'}", 3, 1)
    with pytest.raises(SynaugError, match="resolution 32 needs an hf: backbone model"):
        TrainConfig(model="small_resnet", resolution=32)
    with pytest.raises(SynaugError, match=r"unknown model 'resnet18'; choose one of .*hf:<hub id or folder>"):
        TrainConfig(model="resnet18")
    with pytest.raises(SynaugError, match="backbone_lr >= 0"):
        TrainConfig(backbone_lr=-1)


def test_a_run_whose_backbone_cannot_take_the_images_stops_before_planning(backbones, tmp_path, monkeypatch, capsys):
    tiny_fashion(tmp_path, monkeypatch)
    out = tmp_path / "out"
    config = write_config(tmp_path / "vit.yaml", tiny_config(out, train={"model": f"hf:{backbones['vit']}"}))
    line = error_line(capsys, "run", config, "--no-progress")
    assert "cannot take 1x28x28 images" in line and "set train.resolution to 16" in line
    assert set(stage_folders(out)) <= {"data"}  # nothing planned or generated
