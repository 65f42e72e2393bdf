"""Checkpoints: safetensors + config.json round trip, and one-line errors for bad folders."""

from __future__ import annotations

import json

import pytest
import torch
from train_helpers import pattern_images

from synaug.errors import SynaugError
from synaug.train import TrainConfig, infer, load_checkpoint, save_checkpoint, train_classifier


@pytest.fixture(scope="module")
def result():
    config = TrainConfig(epochs=1, batch_size=16, amp="off", device="cpu")
    return train_classifier(pattern_images([12, 6, 3]), config, progress=False)


def test_round_trip_gives_the_same_logits_and_description(result, tmp_path):
    folder = save_checkpoint(result, tmp_path / "ckpt", extra={"data": {"kind": "fashion-mnist"}})
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    model, normalizer, meta = load_checkpoint(folder)
    data = pattern_images(4, seed=9)
    torch.testing.assert_close(infer(model, data, normalizer), infer(result.model, data, result.normalizer))
    assert normalizer == result.normalizer
    assert meta["model"] == "small_resnet" and meta["num_classes"] == 3 and meta["in_channels"] == 1
    assert meta["image_size"] == [12, 12] and meta["train_counts"] == [12, 6, 3] and meta["synthetic_counts"] == [0, 0, 0]
    assert meta["class_names"] == ["horizontal", "vertical", "checker"]
    assert meta["train_config"]["epochs"] == 1 and meta["data"] == {"kind": "fashion-mnist"}
    assert meta["sample_counts"] == {"real": 21, "synthetic": 0} and len(meta["history"]) == 1


def test_missing_and_damaged_checkpoints_are_one_line_errors(result, tmp_path):
    with pytest.raises(SynaugError, match="checkpoint folder .* does not exist"):
        load_checkpoint(tmp_path / "nothing")
    folder = save_checkpoint(result, tmp_path / "ckpt")
    weights = (folder / "model.safetensors").read_bytes()

    (folder / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(SynaugError, match="is corrupt or truncated") as error:
        load_checkpoint(folder)
    assert "\n" not in str(error.value)

    (folder / "model.safetensors").unlink()
    with pytest.raises(SynaugError, match="lacks model.safetensors"):
        load_checkpoint(folder)

    save_checkpoint(result, folder)
    meta = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**meta, "model": "resnet32"}))
    with pytest.raises(SynaugError, match="does not match the model in config.json") as error:
        load_checkpoint(folder)
    assert "\n" not in str(error.value)

    (folder / "config.json").write_text("{not json")
    with pytest.raises(SynaugError, match="is not valid JSON"):
        load_checkpoint(folder)

    (folder / "config.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(SynaugError, match="is not a synaug classifier checkpoint"):
        load_checkpoint(folder)


def test_saving_leaves_no_temporary_files(result, tmp_path):
    folder = save_checkpoint(result, tmp_path / "ckpt")
    save_checkpoint(result, folder)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
