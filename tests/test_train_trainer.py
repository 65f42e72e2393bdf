"""The trainer: learning, determinism, real/synthetic bookkeeping, schedules, file-backed data, inference."""

from __future__ import annotations

import gc
import multiprocessing

import numpy as np
import pytest
import torch
from PIL import Image
from train_helpers import pattern_images

from synaug.config import from_dict
from synaug.data import LabeledImages
from synaug.errors import SynaugError
from synaug.train import TrainConfig, extract_features, infer, recipe, train_classifier
from synaug.train.batches import BatchSource
from synaug.train.models import Normalizer, build_model
from synaug.train.trainer import lr_factor

# On the CPU, where identical weights from identical seeds are promised.
FAST = dict(epochs=4, batch_size=32, lr=0.1, crop_padding=1, flip=True, amp="off", device="cpu")


def _accuracy(result, data: LabeledImages) -> float:
    return float((infer(result.model, data, result.normalizer).argmax(1).numpy() == data.labels).mean())


def test_a_short_run_learns_an_easy_task():
    result = train_classifier(pattern_images(40), TrainConfig(**FAST), progress=False)
    assert _accuracy(result, pattern_images(30, seed=1)) > 0.8  # chance is 1/3
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert not result.model.training


def test_same_seed_same_weights_other_seed_other_weights():
    data = pattern_images(20)
    config = TrainConfig(**{**FAST, "epochs": 2, "mixup_alpha": 0.5})
    states = [train_classifier(data, config, progress=False).model.state_dict() for _ in range(2)]
    other = train_classifier(data, TrainConfig(**{**FAST, "epochs": 2, "mixup_alpha": 0.5, "seed": 1}), progress=False)
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not all(torch.equal(states[0][k], v) for k, v in other.model.state_dict().items())


def test_real_and_synthetic_samples_are_tracked_apart():
    data = pattern_images(20, synthetic_every=4)  # 15 of 60 synthetic
    config = TrainConfig(**{**FAST, "epochs": 2, "batch_size": 60, "mixup_alpha": 1.0, "domain_mixup": True})
    result = train_classifier(data, config, progress=False)
    assert result.sample_counts == {"real": 45, "synthetic": 15}
    assert result.synthetic_counts.sum() == 15 and (result.train_counts + result.synthetic_counts == 20).all()
    for row in result.history:
        assert row["real_seen"] == 45 and row["synthetic_seen"] == 15
        assert row["real_loss"] > 0 and row["synthetic_loss"] > 0
        weighted = (45 * row["real_loss"] + 15 * row["synthetic_loss"]) / 60
        assert weighted == pytest.approx(row["loss"], rel=1e-5)


def test_bf16_autocast_trains_on_the_cpu():
    result = train_classifier(pattern_images(10), TrainConfig(**{**FAST, "epochs": 1, "amp": "bf16"}), progress=False)
    assert np.isfinite(result.history[0]["loss"])
    assert next(result.model.parameters()).dtype == torch.float32


def test_schedules():
    onecycle = TrainConfig(epochs=10, schedule="onecycle")  # warm-up defaults to 2 epochs
    factors = [lr_factor(s, 10, onecycle) for s in range(100)]
    assert factors[19] == 1.0 and factors[0] == pytest.approx(0.05) and factors[-1] == pytest.approx(1 / 80)
    ldam = recipe("cifar-lt")
    assert ldam.model == "resnet32" and ldam.epochs == 200 and ldam.weight_decay == 2e-4
    at = {epoch: lr_factor(epoch * 100, 100, ldam) for epoch in (0, 4, 5, 159, 160, 179, 180, 199)}
    assert at[0] == pytest.approx(1 / 500) and at[5] == 1.0 and at[159] == 1.0
    assert at[160] == pytest.approx(0.01) and at[179] == pytest.approx(0.01) and at[180] == pytest.approx(1e-4)
    cosine = TrainConfig(epochs=4, schedule="cosine")
    assert lr_factor(0, 10, cosine) == 1.0 and lr_factor(20, 10, cosine) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"modle": "resnet32"}, "unknown key 'config.modle'; did you mean 'model'"),
        ({"model": "vgg"}, "unknown model 'vgg'"),
        ({"schedule": "linear"}, "unknown schedule 'linear'"),
        ({"lr": "fast"}, "lr must be a number"),
        ({"epochs": 2.5}, "epochs must be a whole number"),
        ({"warmup_epochs": 40}, r"warmup_epochs must lie in \[0, epochs=30\)"),
        ({"mixup_alpha": -1}, "mixup_alpha must be a number >= 0"),
        ({"amp": "fp16", "device": "cpu"}, None),
        ({"flip": "yes"}, "flip must be true or false"),
    ],
)
def test_bad_settings_are_one_line_errors(values, message):
    if message is None:  # valid as a config, refused when training on the CPU
        with pytest.raises(SynaugError, match="fp16 autocast needs a GPU"):
            train_classifier(pattern_images(2), from_dict(TrainConfig, values), progress=False)
        return
    with pytest.raises(SynaugError, match=message) as error:
        from_dict(TrainConfig, values)
    assert "\n" not in str(error.value)


def test_yaml_style_numbers_are_accepted():
    config = from_dict(TrainConfig, {"lr": "1e-3", "epochs": 3.0, "warmup_epochs": 1})
    assert config.lr == 0.001 and config.epochs == 3 and isinstance(config.epochs, int)


def _saved_as_pngs(data: LabeledImages, folder) -> LabeledImages:
    """``data`` (grayscale, in memory) written to ``folder`` as PNGs and read back file-backed."""
    files = []
    for i, image in enumerate(data.images):
        files.append(folder / f"{i}.png")
        Image.fromarray(image[0].numpy()).save(files[-1])
    return LabeledImages(labels=data.labels, class_names=data.class_names, files=files, channels=1)


def test_file_backed_data_streams_through_a_dataloader(tmp_path):
    data = pattern_images(8)
    on_disk = _saved_as_pngs(data, tmp_path)
    config = TrainConfig(**{**FAST, "epochs": 2, "num_workers": 2})
    result = train_classifier(on_disk, config, progress=False)
    in_memory = train_classifier(data, config, progress=False)
    assert result.image_shape == (1, 12, 12) and len(result.history) == 2
    torch.testing.assert_close(
        infer(result.model, on_disk, result.normalizer), infer(result.model, data, result.normalizer)
    )
    assert result.normalizer.std == pytest.approx(in_memory.normalizer.std)


def test_releasing_a_file_backed_batch_source_stops_its_workers_at_once(tmp_path):
    on_disk = _saved_as_pngs(pattern_images(8), tmp_path)
    gc.disable()  # without a reference cycle no collection is needed to stop the workers
    try:
        source = BatchSource(on_disk, 4, torch.device("cpu"), shuffle=True, num_workers=2)
        assert sum(1 for _ in source) == len(source) > 1
        assert len(multiprocessing.active_children()) == 2
        del source
        assert multiprocessing.active_children() == []
    finally:
        gc.enable()


def test_images_of_different_sizes_are_a_one_line_error_naming_size(tmp_path):
    files = []
    for i, shape in enumerate([(12, 12)] * 5 + [(48, 64)]):
        files.append(tmp_path / "a" / f"{i}.png")
        files[-1].parent.mkdir(exist_ok=True)
        Image.fromarray(np.zeros(shape, dtype=np.uint8)).save(files[-1])
    mixed = LabeledImages(labels=[0, 1, 0, 1, 0, 1], class_names=["x", "y"], files=files, channels=1)
    message = rf"images in {tmp_path / 'a'} differ in size \(12x12 \d.png, 64x48 5.png\); pass --size N"
    with pytest.raises(SynaugError, match=message):
        train_classifier(mixed, TrainConfig(**FAST), progress=False)
    with pytest.raises(SynaugError, match=message):  # raised in a DataLoader worker, re-raised without its traceback
        infer(build_model("small_resnet", 2, in_channels=1), mixed, Normalizer.fixed(1), batch_size=6, num_workers=1)
    resized = LabeledImages(labels=mixed.labels, class_names=["x", "y"], files=files, channels=1, size=(12, 12))
    assert train_classifier(resized, TrainConfig(**FAST), progress=False).image_shape == (1, 12, 12)


def test_infer_and_features_keep_the_order_and_batching_does_not_matter():
    data = pattern_images(7)
    result = train_classifier(data, TrainConfig(**{**FAST, "epochs": 1}), progress=False)
    logits = infer(result.model, data, result.normalizer, batch_size=4)
    assert logits.shape == (21, 3) and logits.dtype == torch.float32
    torch.testing.assert_close(logits, infer(result.model, data, result.normalizer, batch_size=100))
    torch.testing.assert_close(infer(result.model, data.subset([5]), result.normalizer)[0], logits[5])
    features = extract_features(result.model, data, result.normalizer)
    torch.testing.assert_close(result.model.classifier(features), logits, atol=1e-5, rtol=1e-5)


def test_too_little_data_is_a_one_line_error():
    with pytest.raises(SynaugError, match="training needs at least 2 images"):
        train_classifier(pattern_images([1, 0, 0]), TrainConfig(**FAST), progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_gpu_training_with_autocast_and_channels_last(amp, tmp_path):
    from synaug.train import load_checkpoint, retrain_classifier, save_checkpoint

    data = pattern_images(40, synthetic_every=3)
    config = TrainConfig(**{**FAST, "device": "cuda", "amp": amp, "mixup_alpha": 0.2, "domain_mixup": True, "epochs": 6})
    result = train_classifier(data, config, progress=False)
    assert next(result.model.parameters()).is_cuda
    test = pattern_images(30, seed=1)
    assert _accuracy(result, test) > 0.8
    retrained = retrain_classifier(result.model, data, result.normalizer, epochs=2)
    model, normalizer, _ = load_checkpoint(save_checkpoint(result, tmp_path / "ckpt"), device="cuda")
    # TF32 convolutions in other memory layouts: close, not equal
    torch.testing.assert_close(infer(model, test, normalizer), infer(result.model, test, result.normalizer), atol=1e-2, rtol=1e-2)
    assert infer(retrained, test, result.normalizer).shape == (90, 3)
