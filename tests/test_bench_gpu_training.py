"""benchmarks/gpu_training.py as a smoke run on the CPU, and the trainer's torch.compile option."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from synaug.data.dataset import LabeledImages
from synaug.train import TrainConfig, train_classifier

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "gpu_training.py"


def test_gpu_training_benchmark_runs_and_projects_the_wall_time():
    command = [sys.executable, str(SCRIPT), "--sizes", "192", "--epochs", "2", "--batch-size", "64", "--device", "cpu", "--amp", "off"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr
    header, line = done.stdout.strip().splitlines()
    assert "device: CPU" in header and "batch 64" in header and "compile: False" in header
    found = re.fullmatch(r"\s*192 images:\s+(\d+) images/s; first epoch ([\d.]+) s; 200 epochs projected (\d+) s; 2 epochs took (\d+) s", line)
    assert found, line
    rate, first, projected = int(found[1]), float(found[2]), int(found[3])
    assert rate > 0 and projected == pytest.approx(first + 199 * 192 / rate, rel=0.05, abs=2)


@pytest.mark.slow  # the CPU compile of a small ResNet takes about a minute on 2 cores
def test_compiled_training_matches_eager_and_returns_the_plain_model():
    generator = torch.Generator().manual_seed(0)
    labels = np.arange(128) % 4
    images = torch.randint(0, 256, (128, 1, 8, 8), dtype=torch.uint8, generator=generator)
    data = LabeledImages(labels=labels, class_names=list("abcd"), images=images)
    config = TrainConfig(model="small_resnet", epochs=2, batch_size=64, amp="off", device="cpu", num_workers=0)
    eager = train_classifier(data, config, progress=False)
    compiled = train_classifier(data, TrainConfig(**{**vars(config), "compile": True}), progress=False)
    assert list(compiled.model.state_dict()) == list(eager.model.state_dict())  # no "_orig_mod." prefixes
    for name, value in eager.model.state_dict().items():
        torch.testing.assert_close(compiled.model.state_dict()[name], value, atol=1e-4, rtol=1e-4, msg=name)
