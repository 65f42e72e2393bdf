"""Tiny pipeline runs for the tests: a Fashion-MNIST-shaped IDX set, a small config, CLI helpers."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml
from data_writers import write_fashion_mnist

from synaug.cli import main

FAKE = "python:fake_generator:make_generator"


def tiny_fashion(tmp_path: Path, monkeypatch) -> Path:
    """Fashion-MNIST-format files (40 train and 3 test images per class), found via the environment."""
    folder = write_fashion_mnist(tmp_path / "fashion", train_per_class=40, test_per_class=3)
    monkeypatch.setenv("SYNAUG_FASHION_MNIST", str(folder))
    return folder


def tiny_config(out: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    """A run config for 46 long-tailed images (IF 5, 10 to 2 per class), one epoch, the fake generator.

    ``sections`` are merged into the matching sections (``output`` replaces the folder).
    """
    config: dict[str, Any] = {
        "data": {"kind": "fashion-mnist", "longtail": {"imbalance_factor": 5, "max_per_class": 10}},
        "plan": {"templates": ["a photo of a {class}"]},
        "generator": {"spec": FAKE, "batch_size": 64, "device": "cpu"},
        "train": {"epochs": 1, "batch_size": 32, "num_workers": 0, "device": "cpu"},
        "crt": {"epochs": 2},
        "evaluate": {"batch_size": 100},
        "runs": {"recipes": ["ce", "synaug"], "seeds": [0]},
        "output": str(out),
    }
    for name, values in sections.items():
        if isinstance(values, dict):
            config[name] = {**config.get(name, {}), **copy.deepcopy(values)}
        else:
            config[name] = values
    return config


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_cli(capsys, *argv: Any) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_line(capsys, *argv: Any) -> str:
    """The one error line of a command that must fail with status 2 (no traceback)."""
    code, _, err = run_cli(capsys, *argv)
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and err.strip().endswith(errors[0]) and "Traceback" not in err, err
    return errors[0]


def stage_folders(out: Path) -> dict[str, list[str]]:
    """Finished stage folder names under ``out/stages``, grouped by stage."""
    folders: dict[str, list[str]] = {}
    for record in sorted((out / "stages").glob("*/stage.json")):
        stage = json.loads(record.read_text())["stage"]
        folders.setdefault(stage, []).append(record.parent.name)
    return folders
