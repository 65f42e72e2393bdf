"""DistributedDataParallel training on 2 CPU processes (gloo) against single-process training.

Two processes are spawned once for the module; each sets the environment torchrun would set
(RANK, WORLD_SIZE, ...) and runs the ordinary :func:`train_classifier` and cRT, so the code
path is the one `torchrun --nproc_per_node 2` takes. Tolerances:

- a model without BatchNorm, without random augmentation: the global batch's gradient is
  the average of the two ranks' half-batch gradients, so weights agree with single-process
  training up to float32 summation order (``atol=1e-5`` after 8 SGD steps);
- the small ResNet with BatchNorm: each rank normalises with its own half-batch statistics
  (SyncBatchNorm exists only on GPUs), and with crop/flip each rank draws its own
  augmentation, so weights differ. The checks: both ranks hold identical weights, and the
  DDP update (weights after 8 steps minus initial weights) points the same way as the
  single-process one: cosine similarity > 0.8 without augmentation (measured 0.91 with 32
  images per rank and batch), > 0.6 with crop/flip (measured 0.81); unrelated updates give ~0;
- cRT after DDP training: the features are gathered from both ranks and the last layer is
  trained the same way everywhere, so it equals single-process cRT on the same backbone.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from data_writers import write_fashion_mnist
from PIL import Image
from torch import nn

from synaug.data.dataset import LabeledImages
from synaug.errors import SynaugError
from synaug.train import TrainConfig, retrain_classifier, train_classifier
from synaug.train.batches import BatchSource
from synaug.train.models import MODELS, build_model
from synaug.train.trainer import make_normalizer

WORLD_SIZE = 2
SCENARIOS = ("exact", "exact-files", "batchnorm", "batchnorm-augmented")


class _NoBatchNormNet(nn.Module):
    """conv -> ReLU -> global average pool -> linear: the model contract without BatchNorm."""

    def __init__(self, num_classes: int, in_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 6, 3, padding=1)
        self.classifier = nn.Linear(6, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


MODELS.setdefault("no_batchnorm_net", _NoBatchNormNet)


def dataset(folder: Path | None = None, count: int = 64) -> LabeledImages:
    """Seeded 1 x 8 x 8 noise images of 4 classes, brighter by class; file-backed PNGs in ``folder`` when given."""
    generator = torch.Generator().manual_seed(0)
    labels = np.arange(count) % 4
    noise = torch.randint(0, 128, (count, 1, 8, 8), dtype=torch.uint8, generator=generator)
    images = noise + torch.from_numpy(labels * 40).to(torch.uint8).view(-1, 1, 1, 1)
    names = ["a", "b", "c", "d"]
    if folder is None:
        return LabeledImages(labels=labels, class_names=names, images=images)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i, image in enumerate(images):
        files.append(folder / f"{i:03d}.png")
        if not files[-1].exists():
            Image.fromarray(image[0].numpy()).save(files[-1])
    return LabeledImages(labels=labels, class_names=names, files=files, size=(8, 8), channels=1)


def config(scenario: str) -> TrainConfig:
    """2 epochs of 4 steps; the BatchNorm scenarios use batches of 64 (32 images per rank)."""
    common = dict(epochs=2, lr=0.1, amp="off", channels_last=False, num_workers=0, device="cpu", seed=3)
    if scenario.startswith("batchnorm"):
        augmented = scenario == "batchnorm-augmented"
        return TrainConfig(model="small_resnet", batch_size=64, crop_padding=int(augmented), flip=augmented, **common)
    return TrainConfig(model="no_batchnorm_net", batch_size=16, crop_padding=0, flip=False, **common)


def scenario_data(scenario: str, folder: Path) -> LabeledImages:
    if scenario.startswith("batchnorm"):
        return dataset(count=256)
    return dataset(folder / "pngs" if scenario == "exact-files" else None)


def train(scenario: str, folder: Path):
    return train_classifier(scenario_data(scenario, folder), config(scenario), progress=False)


def _rank_main(rank: int, port: int, folder: str) -> None:
    """One of the spawned processes: what torchrun would run, saving each result for the parent."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD_SIZE))
    torch.set_num_threads(1)
    folder = Path(folder)
    try:
        for scenario in SCENARIOS:
            result = train(scenario, folder)
            crt = retrain_classifier(result.model, scenario_data(scenario, folder), result.normalizer, epochs=2, batch_size=16, seed=1)
            torch.save(
                {"state": result.model.state_dict(), "history": result.history, "crt": crt.classifier.state_dict()},
                folder / f"{scenario}-rank{rank}.pt",
            )
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, dict]:
    """(folder, {scenario: [rank 0 result, rank 1 result]}) of one 2-process run."""
    folder = tmp_path_factory.mktemp("ddp")
    dataset(folder / "pngs")  # written once, before the processes read it
    torch.multiprocessing.spawn(_rank_main, args=(_free_port(), str(folder)), nprocs=WORLD_SIZE, join=True)
    return folder, {s: [torch.load(folder / f"{s}-rank{r}.pt") for r in range(WORLD_SIZE)] for s in SCENARIOS}


def assert_ranks_identical(results: list[dict]) -> None:
    for name, value in results[0]["state"].items():
        assert torch.equal(value, results[1]["state"][name]), name


@pytest.mark.parametrize("scenario", ["exact", "exact-files"])
def test_ddp_without_batchnorm_matches_single_process_training(runs, scenario):
    folder, results = runs
    single = train(scenario, folder)
    assert_ranks_identical(results[scenario])
    for name, value in single.model.state_dict().items():
        torch.testing.assert_close(results[scenario][0]["state"][name], value, atol=1e-5, rtol=1e-4, msg=name)
    # statistics are summed over both processes: the history is the single process's
    for ddp, one in zip(results[scenario][0]["history"], single.history):
        assert ddp["real_seen"] == one["real_seen"] == 64
        assert ddp["loss"] == pytest.approx(one["loss"], rel=1e-5) and ddp["accuracy"] == pytest.approx(one["accuracy"])


@pytest.mark.parametrize(("scenario", "least_cosine"), [("batchnorm", 0.8), ("batchnorm-augmented", 0.6)])
def test_ddp_with_batchnorm_updates_like_single_process_training(runs, tmp_path, scenario, least_cosine):
    _, results = runs
    assert_ranks_identical(results[scenario])
    torch.manual_seed(config(scenario).seed)
    start = build_model("small_resnet", 4, 1).state_dict()
    single = train(scenario, tmp_path).model.state_dict()
    ddp = results[scenario][0]["state"]
    weights = [name for name, value in start.items() if value.is_floating_point() and "running" not in name]
    ddp_step = torch.cat([(ddp[n] - start[n]).flatten() for n in weights])
    single_step = torch.cat([(single[n] - start[n]).flatten() for n in weights])
    assert torch.nn.functional.cosine_similarity(ddp_step, single_step, dim=0) > least_cosine
    assert results[scenario][0]["history"][-1]["real_seen"] == 256


def test_crt_after_ddp_equals_single_process_crt_on_the_same_backbone(runs):
    _, results = runs
    for scenario in ("exact", "batchnorm"):
        data = scenario_data(scenario, Path())
        model = build_model(config(scenario).model, 4, 1)
        model.load_state_dict(results[scenario][0]["state"])
        single = retrain_classifier(model.eval(), data, make_normalizer(data, "dataset"), epochs=2, batch_size=16, seed=1)
        for rank in range(WORLD_SIZE):
            for name, value in single.classifier.state_dict().items():
                torch.testing.assert_close(results[scenario][rank]["crt"][name], value, atol=1e-5, rtol=1e-4, msg=name)


def test_each_process_takes_a_disjoint_contiguous_part_of_every_batch():
    data = dataset()
    single = list(BatchSource(data, 16, torch.device("cpu"), shuffle=True, seed=7).index_batches())
    parts = [list(BatchSource(data, 16, torch.device("cpu"), shuffle=True, seed=7, rank=r, world_size=2).index_batches()) for r in (0, 1)]
    assert len(single) == 4
    for step, batch in enumerate(single):
        assert torch.equal(torch.cat([parts[0][step], parts[1][step]]), batch)


def test_a_batch_that_does_not_split_evenly_is_an_error():
    with pytest.raises(SynaugError, match="multiple of 3"):
        BatchSource(dataset(), 16, torch.device("cpu"), shuffle=True, world_size=3)


def _train_command_rank(rank: int, port: int, folder: str) -> None:
    """`synaug train --crt` as one of two torchrun processes, each told to write into its own folder."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD_SIZE))
    torch.set_num_threads(1)
    from synaug.cli import main

    try:
        argv = ["train", "--per-class", "4", "--epochs", "1", "--batch-size", "8", "--crt", "--device", "cpu", "--no-progress"]
        assert main([*argv, "--out", str(Path(folder) / f"rank{rank}")]) == 0
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def test_under_torchrun_only_rank_0_of_synaug_train_writes(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNAUG_FASHION_MNIST", str(write_fashion_mnist(tmp_path / "fm", train_per_class=30, test_per_class=2)))
    torch.multiprocessing.spawn(_train_command_rank, args=(_free_port(), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    written = {path.name for path in (tmp_path / "rank0").iterdir()}
    assert {"options.yaml", "checkpoint", "checkpoint-crt", "results.json", "results.md"} <= written
    assert not (tmp_path / "rank1").exists()  # every rank trained and ran cRT (collectives), only rank 0 wrote
