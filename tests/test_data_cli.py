"""`synaug data describe` and `synaug data longtail`, from options and from YAML configs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from data_writers import write_cifar100, write_fashion_mnist, write_image

from synaug.cli import main
from synaug.data.longtail import longtail_counts


@pytest.fixture
def fashion(tmp_path, monkeypatch):
    """A small Fashion-MNIST-format folder (100 train images per class) found via the environment."""
    folder = write_fashion_mnist(tmp_path / "fm", train_per_class=100, test_per_class=2)
    monkeypatch.setenv("SYNAUG_FASHION_MNIST", str(folder))
    return folder


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_describe_prints_a_table_and_writes_a_histogram(fashion, tmp_path, capsys):
    status, out, err = run(capsys, "data", "describe", "--out", str(tmp_path / "hist.png"))
    assert status == 0, err
    assert "T-shirt/top" in out and "100" in out and "imbalance factor 1.0" in out
    assert (tmp_path / "hist.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_longtail_writes_an_index_that_describe_reads(fashion, tmp_path, capsys):
    index = tmp_path / "lt.json"
    status, out, err = run(capsys, "data", "longtail", "--imbalance-factor", "10", "--max-per-class", "30", "--out", str(index))
    assert status == 0, err
    content = json.loads(index.read_text())
    expected = longtail_counts(10, 30, 10).tolist()
    assert content["class_counts"] == expected and len(content["indices"]) == sum(expected)
    assert content["settings"]["reserve"] == 0.5 and content["settings"]["seed"] == 0
    assert f"wrote {sum(expected)} indices" in out
    status, out, err = run(capsys, "data", "describe", "--index", str(index))
    assert status == 0, err
    assert "imbalance factor 10.0" in out and f"{sum(expected)} images" in out


def test_describe_index_after_the_data_moved(fashion, tmp_path, capsys, monkeypatch):
    index = tmp_path / "lt.json"
    assert run(capsys, "data", "longtail", "--root", str(fashion), "--imbalance-factor", "5", "--max-per-class", "20", "--out", str(index))[0] == 0
    moved = shutil.move(fashion, tmp_path / "moved")
    status, _, err = run(capsys, "data", "describe", "--index", str(index))
    assert status == 2 and "does not exist" in err
    status, out, err = run(capsys, "data", "describe", "--index", str(index), "--root", str(moved))
    assert status == 0, err
    assert "imbalance factor 5.0" in out


def test_longtail_from_a_yaml_config(tmp_path, capsys):
    write_image(tmp_path / "tree" / "train" / "a" / "0.png")
    for cls in "abc":
        for i in range(12):
            write_image(tmp_path / "tree" / "train" / cls / f"{i}.png")
    config = tmp_path / "lt.yaml"
    config.write_text(
        f"dataset: imagefolder\nroot: {tmp_path / 'tree'}\nimbalance-factor: 4\nmax_per_class: 12\nprofile: step\nout: {tmp_path / 'cfg.json'}\n"
    )
    status, _, err = run(capsys, "data", "longtail", "--config", str(config), "--seed", "3")
    assert status == 0, err
    content = json.loads((tmp_path / "cfg.json").read_text())
    assert content["class_counts"] == [12, 3, 3]
    assert content["settings"] == {"imbalance_factor": 4.0, "max_per_class": 12, "profile": "step", "seed": 3, "reserve": 0.0, "reserve_seed": 0, "step_fraction": 0.5}
    assert content["source"]["kind"] == "imagefolder"


def test_cifar100_longtail_from_the_cli(tmp_path, capsys):
    write_cifar100(tmp_path, train_per_class=20, test_per_class=1)
    out = tmp_path / "c100.json"
    status, _, err = run(capsys, "data", "longtail", "--dataset", "cifar100", "--root", str(tmp_path), "--imbalance-factor", "10", "--out", str(out))
    assert status == 0, err
    content = json.loads(out.read_text())
    assert content["settings"]["max_per_class"] == 20
    assert sum(content["class_counts"]) == int(longtail_counts(100, 20, 10).sum())


@pytest.mark.parametrize(
    "argv, message",
    [
        (["data", "describe", "--dataset", "cifar10", "--root", "{tmp}/absent"], "does not exist"),
        (["data", "longtail", "--imbalance-factor", "0.5", "--out", "{tmp}/x.json"], "imbalance factor 0.5 is below 1"),
        (["data", "longtail", "--imbalance-factor", "2", "--max-per-class", "80", "--out", "{tmp}/x.json"], "images but 80 are wanted"),
        (["data", "longtail", "--profile", "linear", "--out", "{tmp}/x.json"], "unknown long-tail profile"),
        (["data", "longtail", "--imbalance-factor", "100", "--max-per-class", "50", "--out", "{tmp}/x.json"], "leaves class 'Bag' with no images"),
        (["data", "describe", "--index", "{tmp}/absent.json"], "index file"),
        (["data", "describe", "--dataset", "mnist"], "unknown dataset 'mnist'"),
        (["data", "describe", "--dataset", "split-list", "--root", "{tmp}"], "needs a list file"),
    ],
)
def test_bad_input_prints_one_error_line_and_exits_2(fashion, tmp_path, capsys, argv, message):
    status, out, err = run(capsys, *[a.format(tmp=tmp_path) for a in argv])
    assert status == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("imbalanse_factor: 10\n", "did you mean 'imbalance_factor'?"),
        ("seed: abc\n", "seed must be an integer, not 'abc'"),
        ("max-per-class: 2.5\n", "max_per_class must be an integer"),
        ("- a list\n", "mapping"),
    ],
)
def test_bad_config_prints_one_error_line(fashion, tmp_path, capsys, yaml_text, message):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml_text)
    status, _, err = run(capsys, "data", "longtail", "--config", str(config))
    assert status == 2 and message in err and err.count("\n") == 1


def test_console_script_exits_2_with_one_line(fashion, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "synaug", "data", "longtail", "--imbalance-factor", "0.5", "--out", str(tmp_path / "x.json")],
        capture_output=True,
        text=True,
        env={**os.environ, "SYNAUG_FASHION_MNIST": str(fashion)},
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: imbalance factor 0.5 is below 1") and result.stderr.count("\n") == 1
