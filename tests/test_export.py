"""synaug.export and `synaug export`: a store (and real images) read back by `datasets` and `webdataset`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fake_generator import FakeGenerator
from synaug.cli import main
from synaug.data.dataset import LabeledImages
from synaug.data.folders import load_image_folder
from synaug.errors import SynaugError
from synaug.export import export_store
from synaug.generate.runner import generate_plan
from synaug.generate.store import SyntheticStore
from synaug.plan import make_plan

NAMES = ["T-shirt/top", "Bag", "Sandal"]
REAL_COUNTS = [5, 2, 3]


def real_images() -> LabeledImages:
    labels = np.repeat(np.arange(3), REAL_COUNTS)
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (len(labels), 1, 6, 6), dtype=np.uint8))
    return LabeledImages(labels=labels, class_names=NAMES, images=images, channels=1, size=(6, 6))


def make_store(root: Path) -> SyntheticStore:
    """3 + 2 synthetic images of Bag and Sandal, two templates, so prompts differ within a class."""
    plan = make_plan(REAL_COUNTS, NAMES, templates=["a photo of a {class}", "a drawing of a {class}"], image_size=(6, 6), channels=1)
    store = SyntheticStore(root)
    generate_plan(plan, FakeGenerator(), store, progress=False)
    return store


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> SyntheticStore:
    return make_store(tmp_path_factory.mktemp("export") / "store")


def test_hf_export_loads_with_datasets_with_labels_prompts_and_sources(store, tmp_path):
    datasets = pytest.importorskip("datasets")
    summary = export_store(store.root, tmp_path / "hf", "hf", real=real_images())
    assert (summary.synthetic, summary.real) == (5, 10)
    loaded = datasets.load_dataset("imagefolder", data_dir=str(tmp_path / "hf"), cache_dir=str(tmp_path / "cache"))["train"]
    assert len(loaded) == 15
    rows = loaded.to_pandas().drop(columns="image")
    synthetic = rows[rows["source"] == "synthetic"]
    manifest = store.manifest()
    assert sorted(zip(synthetic["class_name"], synthetic["prompt"], synthetic["seed"])) == sorted(
        zip(manifest["class_name"], manifest["prompt"], manifest["seed"])
    )
    assert set(synthetic["prompt"]) == {"a photo of a Bag", "a drawing of a Bag", "a photo of a Sandal", "a drawing of a Sandal"}
    assert set(synthetic["generator"]) == {"fake"}
    assert synthetic["criterion"].notna().all()  # the fake generator records a criterion score
    real = rows[rows["source"] == "real"]
    assert real["label"].tolist() == np.repeat(np.arange(3), REAL_COUNTS).tolist()
    assert real["prompt"].isna().all()
    assert [NAMES[label] for label in rows["label"]] == rows["class_name"].tolist()
    first_real = np.asarray(loaded[int(real.index[0])]["image"])
    assert np.array_equal(first_real, real_images().images[0, 0].numpy())


def test_webdataset_shards_read_back(store, tmp_path):
    webdataset = pytest.importorskip("webdataset")
    summary = export_store(store.root, tmp_path / "wds", "webdataset", real=real_images(), shard_size=4)
    shards = sorted(str(p) for p in (tmp_path / "wds").glob("shard-*.tar"))
    assert summary.files == len(shards) == 4  # 15 samples, 4 per shard
    samples = list(webdataset.WebDataset(shards, shardshuffle=False, empty_check=False).decode("l8"))
    assert len(samples) == 15
    meta = [json.loads(s["json"]) if isinstance(s["json"], (bytes, str)) else s["json"] for s in samples]
    assert [int(s["cls"]) for s in samples] == [m["label"] for m in meta]
    assert [m["source"] for m in meta] == ["synthetic"] * 5 + ["real"] * 10
    assert {m["prompt"] for m in meta[:5]} == set(store.manifest()["prompt"])
    assert samples[5]["png"].shape == (6, 6)
    assert np.array_equal(samples[5]["png"], real_images().images[0, 0].numpy())


def test_imagefolder_export_is_class_folders_with_a_metadata_csv(store, tmp_path):
    export_store(store.root, tmp_path / "folders", "imagefolder")
    loaded = load_image_folder(tmp_path / "folders", channels=1)
    assert sorted(loaded.class_names) == ["Bag", "Sandal"]  # the classes with synthetic images
    metadata = pd.read_csv(tmp_path / "folders" / "metadata.csv")
    assert len(metadata) == len(loaded) == 5
    assert all((tmp_path / "folders" / name).is_file() for name in metadata["file_name"])
    assert set(metadata["source"]) == {"synthetic"}


class Brightness:
    """A filter scorer: each image's mean pixel value."""

    name = "brightness"

    def settings(self) -> dict:
        return {"name": self.name}

    def score(self, data, prompts):
        return {"brightness": data.stack(range(len(data))).float().mean(dim=(1, 2, 3)).numpy()}


def test_a_filtered_store_exports_its_kept_images_with_their_scores(tmp_path):
    from synaug.filters import FilterStep, filter_store

    store = make_store(tmp_path / "store")
    filter_store(store, [FilterStep(Brightness(), keep_best=1)])
    export_store(store.root, tmp_path / "kept", "imagefolder")
    kept = pd.read_csv(tmp_path / "kept" / "metadata.csv")
    assert sorted(kept["class_name"]) == ["Bag", "Sandal"] and kept["kept"].all()
    assert kept["filter_brightness"].notna().all()
    export_store(store.root, tmp_path / "all", "imagefolder", include_rejected=True)
    every = pd.read_csv(tmp_path / "all" / "metadata.csv")
    assert len(every) == 5 and every["kept"].sum() == 2
    assert set(every.loc[~every["kept"], "rejected_by"]) == {"brightness"}
    best = every[every["kept"]].set_index("class_name")["filter_brightness"]
    assert all(best[c] == every.loc[every["class_name"] == c, "filter_brightness"].max() for c in ("Bag", "Sandal"))


def test_the_exemplar_each_image_was_made_from_is_a_column(tmp_path):
    from synaug.generate.store import ImageRecord

    plan = make_plan(REAL_COUNTS, NAMES, image_size=(6, 6), channels=1)
    store = SyntheticStore(tmp_path / "store").open(plan, "fake", {})
    records = []
    for position, item in enumerate(plan.rows()):
        file = store.write_image(item, torch.full((1, 6, 6), position, dtype=torch.uint8))
        records.append(ImageRecord(item, plan.seed_for(item), 0, file, exemplar=f"real:{position}"))
    store.append(records)
    export_store(store.root, tmp_path / "out", "imagefolder")
    metadata = pd.read_csv(tmp_path / "out" / "metadata.csv")
    assert metadata["exemplar"].tolist() == [f"real:{i}" for i in range(plan.total)]
    assert "criterion" not in metadata  # recorded for no image: left out


def test_export_target_that_is_not_empty_is_a_one_line_error(store, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "note.txt").write_text("keep me")
    with pytest.raises(SynaugError, match="exists and is not empty") as error:
        export_store(store.root, taken, "hf")
    assert "\n" not in str(error.value)
    assert sorted(p.name for p in taken.iterdir()) == ["note.txt"]
    assert not list(tmp_path.glob(".taken*"))  # no temporary folder left
    export_store(store.root, tmp_path / "empty", "hf")  # an empty (or missing) folder is fine
    (tmp_path / "empty2").mkdir()
    export_store(store.root, tmp_path / "empty2", "imagefolder")


@pytest.mark.parametrize(
    "options, message",
    [
        ({"format": "parquet"}, "unknown export format 'parquet'"),
        ({"format": "webdataset", "shard_size": 0}, "shard size 0"),
    ],
)
def test_bad_export_settings_are_one_line_errors(store, tmp_path, options, message):
    with pytest.raises(SynaugError, match=message):
        export_store(store.root, tmp_path / "out", **options)
    assert not (tmp_path / "out").exists()


def test_real_data_of_other_classes_is_refused(store, tmp_path):
    other = LabeledImages(labels=np.array([0, 1]), class_names=["Cat", "Dog"], images=torch.zeros(2, 1, 6, 6, dtype=torch.uint8), channels=1)
    with pytest.raises(SynaugError, match="class 'Cat', which the store's plan lacks"):
        export_store(store.root, tmp_path / "out", real=other)
    assert not (tmp_path / "out").exists()


def test_cli_export_writes_the_folder_and_refuses_a_taken_one(store, tmp_path, capsys):
    assert main(["export", str(store.root), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    assert "5 synthetic images" in capsys.readouterr().out
    assert (tmp_path / "hf" / "metadata.jsonl").is_file()
    assert main(["export", str(store.root), "--format", "hf", "--out", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: export target") and "\n" not in err
