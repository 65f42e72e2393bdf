"""`synaug train` and `synaug evaluate` on a small Fashion-MNIST-format folder."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from data_writers import write_fashion_mnist, write_image
from fake_generator import FakeGenerator

from synaug.cli import main
from synaug.data.fashion_mnist import FASHION_MNIST_CLASSES
from synaug.data.longtail import longtail_counts
from synaug.generate.runner import generate_plan
from synaug.generate.store import SyntheticStore
from synaug.plan import make_plan


@pytest.fixture
def fashion(tmp_path, monkeypatch):
    """Fashion-MNIST-format files (30 train, 3 test images per class) found via the environment."""
    folder = write_fashion_mnist(tmp_path / "fm", train_per_class=30, test_per_class=3)
    monkeypatch.setenv("SYNAUG_FASHION_MNIST", str(folder))
    return folder


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_train_with_crt_writes_checkpoints_results_and_plots(fashion, tmp_path, capsys):
    out = tmp_path / "run"
    status, stdout, err = run(
        capsys, "train", "--longtail", "5", "--max-per-class", "10", "--epochs", "1", "--crt", "--out", str(out), "--no-progress"
    )
    assert status == 0, err
    expected = {
        "options.yaml", "checkpoint", "checkpoint-crt", "results.json", "results.md", "per_class_accuracy.png",
        "confusion_matrix-as-trained.png", "confusion_matrix-after-crt.png",
    }
    assert {p.name for p in out.iterdir()} == expected
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"as trained", "after cRT"} and results["as trained"]["num_samples"] == 30
    meta = json.loads((out / "checkpoint" / "config.json").read_text())
    assert meta["train_counts"] == longtail_counts(10, 10, 5).tolist()
    assert meta["data"]["kind"] == "fashion-mnist"
    assert json.loads((out / "checkpoint-crt" / "config.json").read_text())["crt"]["source"] == "real"
    assert "after cRT" in stdout and "top-1" in stdout

    status, stdout, err = run(capsys, "evaluate", str(out / "checkpoint"), str(out / "checkpoint-crt"), "--out", str(tmp_path / "ev"))
    assert status == 0, err
    evaluated = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert evaluated[str(out)]["top1"] == pytest.approx(results["as trained"]["top1"])
    assert evaluated[f"{out} after cRT"]["top1"] == pytest.approx(results["after cRT"]["top1"])

    oracle = tmp_path / "oracle"
    assert run(capsys, "train", "--per-class", "3", "--epochs", "1", "--out", str(oracle), "--no-progress")[0] == 0
    argv = ["evaluate", str(oracle / "checkpoint"), "--out", str(tmp_path / "ev2"), "--many-threshold", "5", "--few-threshold", "3"]
    status, _, err = run(capsys, *argv, "--groups-from", str(out / "checkpoint"))
    assert status == 0, err
    groups = json.loads((tmp_path / "ev2" / "results.json").read_text())[str(oracle)]["shot_groups"]
    assert [len(groups[g]) for g in ("many", "medium", "few")] == [3, 4, 3]  # by the long tail's counts 10, 8, 6 | 5, 4, 4, 3 | 2, 2, 2


def test_train_from_a_yaml_config_and_a_balanced_subset(fashion, tmp_path, capsys):
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"per_class": 4, "epochs": 1, "batch-size": 16, "mixup_alpha": 0.5, "out": str(tmp_path / "run")}))
    status, _, err = run(capsys, "train", "--config", str(config), "--no-progress", "--epochs", "2")
    assert status == 0, err
    options = yaml.safe_load((tmp_path / "run" / "options.yaml").read_text())
    assert options["epochs"] == 2 and options["batch_size"] == 16 and options["mixup_alpha"] == 0.5
    assert json.loads((tmp_path / "run" / "checkpoint" / "config.json").read_text())["train_counts"] == [4] * 10
    saved = str(tmp_path / "run" / "options.yaml")
    status, _, err = run(capsys, "train", "--config", saved, "--out", str(tmp_path / "again"), "--no-progress")
    assert status == 0, err


def test_train_on_an_index_file(fashion, tmp_path, capsys):
    index = tmp_path / "lt.json"
    assert run(capsys, "data", "longtail", "--imbalance-factor", "2", "--max-per-class", "6", "--out", str(index))[0] == 0
    status, _, err = run(capsys, "train", "--index", str(index), "--epochs", "1", "--out", str(tmp_path / "run"), "--no-progress")
    assert status == 0, err
    counts = json.loads((tmp_path / "run" / "checkpoint" / "config.json").read_text())["train_counts"]
    assert counts == json.loads(index.read_text())["class_counts"]


def test_train_on_real_plus_synthetic_with_domain_mixup(fashion, tmp_path, capsys):
    counts = longtail_counts(10, 8, 4)
    plan = make_plan(counts, FASHION_MNIST_CLASSES, image_size=(28, 28), channels=1)
    generate_plan(plan, FakeGenerator(size=28), SyntheticStore(tmp_path / "store"), batch_size=16, progress=False)
    argv = ["train", "--longtail", "4", "--max-per-class", "8", "--synthetic", str(tmp_path / "store"), "--epochs", "1"]
    argv += ["--mixup-alpha", "1", "--domain-mixup", "--crt", "--crt-source", "real+synthetic", "--out", str(tmp_path / "run")]
    status, stdout, err = run(capsys, *argv, "--no-progress")
    assert status == 0, err
    meta = json.loads((tmp_path / "run" / "checkpoint" / "config.json").read_text())
    assert meta["train_counts"] == counts.tolist()  # real images: the long tail's groups
    assert meta["synthetic_counts"] == plan.synthetic_counts.tolist() and (counts + plan.synthetic_counts == 8).all()
    assert meta["sample_counts"] == {"real": int(counts.sum()), "synthetic": int(plan.synthetic_counts.sum())}
    assert meta["history"][0]["synthetic_seen"] > 0 and meta["train_config"]["domain_mixup"] is True
    assert f"({int(plan.synthetic_counts.sum())} synthetic)" in stdout


@pytest.mark.parametrize(
    ("config", "argv", "message"),
    [
        ({"mixup": 1.0}, [], "{config}: unknown key 'mixup'; did you mean 'mixup_alpha'?"),
        ({"epochs": 1}, [], "`synaug train` needs --out FOLDER"),
        ({"mixup_alpha": -1}, ["--out", "x"], "mixup_alpha must be a number >= 0"),
        ({"longtail": 10, "per_class": 5}, ["--out", "x"], "give at most one of index, longtail and per_class"),
        ({"recipe": "imagenet"}, ["--out", "x"], "unknown recipe 'imagenet'"),
    ],
)
def test_bad_configs_are_one_line_errors(fashion, tmp_path, capsys, config, argv, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    status, _, err = run(capsys, "train", "--config", str(path), *argv)
    assert status == 2
    assert err.startswith("error: ") and message.format(config=path) in err and err.count("\n") == 1


def test_evaluate_a_missing_checkpoint(tmp_path, capsys):
    for out in (["--out", str(tmp_path / "ev")], []):  # the missing checkpoint is named first, --out or not
        status, _, err = run(capsys, "evaluate", str(tmp_path / "none"), *out)
        assert status == 2 and f"checkpoint folder {tmp_path / 'none'} does not exist" in err and err.count("\n") == 1


def test_evaluate_train_output_folders_labelled_by_run(fashion, tmp_path, capsys):
    for run_name in ("a", "c2"):
        argv = ["train", "--per-class", "3", "--epochs", "1", "--seed", str(len(run_name)), "--out", str(tmp_path / run_name)]
        assert run(capsys, *argv, "--no-progress")[0] == 0
    status, stdout, err = run(capsys, "evaluate", str(tmp_path / "a"), str(tmp_path / "c2" / "checkpoint"), "--out", str(tmp_path / "ev"))
    assert status == 0, err
    assert set(json.loads((tmp_path / "ev" / "results.json").read_text())) == {str(tmp_path / "a"), str(tmp_path / "c2")}
    assert "on 30 test images" in (tmp_path / "ev" / "results.md").read_text()  # the fixture's 3 test images per class
    status, stdout, err = run(capsys, "evaluate", str(tmp_path / "a"), "--split", "train", "--out", str(tmp_path / "ev-train"))
    assert status == 0, err
    assert "train images" in stdout and "on 300 train images" in (tmp_path / "ev-train" / "results.md").read_text()
    status, _, err = run(capsys, "evaluate", str(tmp_path / "a"), "--split", "val", "--out", str(tmp_path / "ev"))
    assert status == 2 and "Fashion-MNIST has no split 'val'" in err


def _image_folder(root, per_class: int = 4, odd_size: bool = False):
    """Two classes of small PNGs under ``root/<class>/``; with ``odd_size`` one image of class b is 64x48."""
    for label, name in enumerate(["a", "b"]):
        for i in range(per_class):
            write_image(root / name / f"{i}.png", color=(200 * label, 30 * i, 90))
    if odd_size:
        write_image(root / "b" / "odd.png", size=(64, 48))
    return root


def test_a_missing_test_split_is_an_error_not_the_training_images(tmp_path, capsys):
    flat = _image_folder(tmp_path / "flat")
    status, _, err = run(capsys, "train", "--dataset", "imagefolder", "--root", str(flat), "--epochs", "1", "--out", str(tmp_path / "r"), "--no-progress")
    assert status == 2 and err.count("\n") == 1
    assert f"image folder {flat} has no 'test' folder" in err and "ROOT/test/<class>/ and pass --root ROOT" in err
    assert not (tmp_path / "r").exists()

    _image_folder(tmp_path / "tree" / "train")
    _image_folder(tmp_path / "tree" / "test", per_class=2)
    status, stdout, err = run(
        capsys, "train", "--dataset", "imagefolder", "--root", str(tmp_path / "tree"), "--epochs", "1", "--out", str(tmp_path / "r"), "--no-progress"
    )
    assert status == 0, err
    assert json.loads((tmp_path / "r" / "results.json").read_text())["as trained"]["num_samples"] == 4
    argv = ["evaluate", str(tmp_path / "r" / "checkpoint"), "--out", str(tmp_path / "ev")]
    assert run(capsys, *argv)[0] == 0
    status, _, err = run(capsys, *argv, "--root", str(tmp_path / "tree" / "train"))
    assert status == 2 and "has no 'test' folder" in err and err.count("\n") == 1
    status, _, err = run(capsys, *argv, "--split", "val")
    assert status == 2 and "has no 'val' split (its splits: test, train)" in err and err.count("\n") == 1


def test_split_list_training_needs_a_test_list(tmp_path, capsys):
    _image_folder(tmp_path / "images")
    (tmp_path / "train.txt").write_text("".join(f"{c}/{i}.png {label}\n" for label, c in enumerate("ab") for i in range(4)))
    argv = ["train", "--dataset", "split-list", "--root", str(tmp_path / "images"), "--list-file", str(tmp_path / "train.txt")]
    status, _, err = run(capsys, *argv, "--epochs", "1", "--out", str(tmp_path / "r"), "--no-progress")
    assert status == 2 and "pass --test-list-file FILE" in err and err.count("\n") == 1
    status, _, err = run(capsys, *argv, "--test-list-file", str(tmp_path / "train.txt"), "--epochs", "1", "--out", str(tmp_path / "r"), "--no-progress")
    assert status == 0, err
    status, _, err = run(capsys, "evaluate", str(tmp_path / "r"), "--out", str(tmp_path / "ev"))
    assert status == 2 and "pass --list-file of the images to evaluate on" in err
    assert run(capsys, "evaluate", str(tmp_path / "r"), "--list-file", str(tmp_path / "train.txt"), "--out", str(tmp_path / "ev"))[0] == 0


def test_images_of_different_sizes_ask_for_size(tmp_path, capsys):
    _image_folder(tmp_path / "tree" / "train", odd_size=True)
    _image_folder(tmp_path / "tree" / "test", per_class=1)
    argv = ["train", "--dataset", "imagefolder", "--root", str(tmp_path / "tree"), "--epochs", "1", "--out", str(tmp_path / "r"), "--no-progress"]
    status, _, err = run(capsys, *argv)
    assert status == 2 and err.count("\n") == 1
    assert re.search(rf"images in {tmp_path / 'tree' / 'train'}\S* differ in size \(8x6 \S+, 64x48 \S*odd.png\); pass --size N", err), err
    status, _, err = run(capsys, *argv, "--size", "8")
    assert status == 0, err
    assert json.loads((tmp_path / "r" / "checkpoint" / "config.json").read_text())["image_size"] == [8, 8]


def test_an_unfinished_synthetic_store_is_an_error(fashion, tmp_path, capsys):
    plan = make_plan(longtail_counts(10, 8, 4), FASHION_MNIST_CLASSES, image_size=(28, 28), channels=1)
    store = SyntheticStore(tmp_path / "store")
    generate_plan(plan, FakeGenerator(size=28), store, batch_size=16, progress=False, shard_index=0, num_shards=2)
    argv = ["train", "--longtail", "4", "--max-per-class", "8", "--synthetic", str(tmp_path / "store"), "--epochs", "1"]
    status, _, err = run(capsys, *argv, "--out", str(tmp_path / "run"), "--no-progress")
    assert status == 2 and err.count("\n") == 1
    assert f"{tmp_path / 'store'} holds {(plan.total + 1) // 2} of {plan.total} planned images; re-run `synaug generate" in err
    assert not (tmp_path / "run").exists()
    assert len(store.load(per_class=[1] * 10)) > 0  # a deliberate partial load still works
