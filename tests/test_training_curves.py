"""Training you can watch: the history kept with the checkpoint, drawn per recipe in the report, and TensorBoard event files."""

from __future__ import annotations

import importlib.util

import pytest
from train_helpers import pattern_images

from synaug.errors import SynaugError
from synaug.report import RunResult
from synaug.report.curves import curve_file, plot_training_curves
from synaug.train import TrainConfig, save_checkpoint, train_classifier
from synaug.train.checkpoint import read_history

FAST = dict(epochs=3, batch_size=32, lr=0.1, amp="off", device="cpu", num_workers=0)


def event_files(folder) -> list:
    return sorted(folder.rglob("events.out.tfevents.*"))


def test_event_files_hold_each_epochs_loss_and_accuracy_and_the_history_stays_with_the_checkpoint(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = pattern_images(20, synthetic_every=3)
    result = train_classifier(data, TrainConfig(**FAST, tensorboard=str(tmp_path / "tb")), progress=False)
    assert len(event_files(tmp_path / "tb")) == 1
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert {"loss/all", "accuracy/all", "loss/real", "loss/synthetic", "accuracy/synthetic", "lr"} <= set(events.Tags()["scalars"])
    losses = events.Scalars("loss/all")
    assert [e.step for e in losses] == [1, 2, 3]
    assert [e.value for e in losses] == pytest.approx([row["loss"] for row in result.history], rel=1e-6)
    assert [e.value for e in events.Scalars("accuracy/real")] == pytest.approx([row["real_accuracy"] for row in result.history], rel=1e-6)
    save_checkpoint(result, tmp_path / "run" / "checkpoint")
    assert read_history(tmp_path / "run") == result.history


def test_no_event_files_without_the_setting(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train_classifier(pattern_images(10), TrainConfig(**{**FAST, "epochs": 1}), progress=False)
    assert event_files(tmp_path) == []


def test_bad_tensorboard_settings_are_one_line_errors(monkeypatch):
    with pytest.raises(SynaugError, match="tensorboard must be a folder"):
        TrainConfig(tensorboard=True)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real_find_spec(name, *a))
    with pytest.raises(SynaugError, match=r"pip install 'synaug\[tensorboard\]'") as error:
        TrainConfig(tensorboard="runs/tb")
    assert "\n" not in str(error.value)


def test_a_checkpoint_trained_with_tensorboard_loads_without_the_package(tmp_path, monkeypatch):
    from synaug.train.checkpoint import load_train_result

    config = TrainConfig(**{**FAST, "epochs": 1}, tensorboard=str(tmp_path / "tb"))
    save_checkpoint(train_classifier(pattern_images(10), config, progress=False), tmp_path / "run" / "checkpoint")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real_find_spec(name, *a))
    loaded = load_train_result(tmp_path / "run")
    assert loaded.config.tensorboard is None and loaded.config.epochs == 1


def history(losses: list[float]) -> list[dict]:
    return [{"epoch": i + 1, "loss": loss, "accuracy": 1 - loss / 3} for i, loss in enumerate(losses)]


def test_one_curves_figure_per_recipe_with_its_seeds_and_a_report_section(tmp_path):
    from synaug.report import write_report

    runs = [
        RunResult("ce", "CE", seed, {}, {"real": 10}, history=history([2.0 - seed * 0.1, 1.5, 1.0])) for seed in (0, 1)
    ] + [RunResult("old", "Old run", 0, {}, {"real": 10})]  # no history: no figure
    assert plot_training_curves(runs, tmp_path) == {"ce": "curves-ce.png"}
    assert (tmp_path / "curves-ce.png").stat().st_size > 1000
    assert curve_file("ce+crt/x") == "curves-ce_crt_x.png"
    from test_report_writer import inputs as report_inputs, runs_for

    scored = runs_for("ce", "CE", [70.0, 72.0], [40.0, 44.0])
    for run, losses in zip(scored, ([2.0, 1.0], [2.1, 0.9])):
        run.history = history(losses)
    folder = write_report(report_inputs(tmp_path, scored), tmp_path / "report")
    assert (folder / "curves-ce.png").is_file()
    markdown = (folder / "report.md").read_text()
    assert "## Training curves" in markdown and "![CE: training curves](curves-ce.png)" in markdown
    bare = write_report(report_inputs(tmp_path, runs_for("ce", "CE", [70.0], [40.0])), tmp_path / "bare")
    assert "Training curves" not in (bare / "report.md").read_text() and not list(bare.glob("curves-*"))


def test_synaug_train_writes_event_files_with_tensorboard_only(tmp_path, monkeypatch, capsys):
    from data_writers import write_fashion_mnist
    from synaug.cli import main

    monkeypatch.setenv("SYNAUG_FASHION_MNIST", str(write_fashion_mnist(tmp_path / "fm", train_per_class=30, test_per_class=3)))
    common = ["train", "--longtail", "5", "--max-per-class", "10", "--epochs", "2", "--no-progress"]
    assert main([*common, "--tensorboard", str(tmp_path / "tb"), "--out", str(tmp_path / "with")]) == 0
    assert len(event_files(tmp_path / "tb")) == 1
    assert len(read_history(tmp_path / "with")) == 2
    assert main([*common, "--out", str(tmp_path / "without")]) == 0
    assert len(event_files(tmp_path)) == 1  # still only the first run's
    capsys.readouterr()
