"""Filtering a finished store: CLIP scores from a tiny random CLIP saved to disk (threshold, keep-best,
negative prompts), a classifier's confidence, over-generation keeping the best images per class and
cell, every score and decision recorded and joined to the manifest, and the one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from data_writers import write_fashion_mnist
from fake_generator import FakeGenerator
from fixtures_generation import single_thread_torch  # noqa: F401  (fixture)
from pipeline_helpers import FAKE, error_line, run_cli, stage_folders, tiny_config, tiny_fashion, write_config
from tiny_transformers import save_backbone, save_clip
from train_helpers import pattern_images

from synaug.errors import SynaugError
from synaug.filters import ClassifierScorer, ClipScorer, FilterSpec, FilterStep, filter_store
from synaug.generate.runner import generate_plan
from synaug.generate.store import FILTER_FILE, SyntheticStore
from synaug.pipeline import parse_run_config, run_pipeline
from synaug.plan import make_plan
from synaug.plan.planner import SynthesisPlan, overgenerate
from synaug.train import save_checkpoint, train_classifier
from synaug.train.trainer import TrainConfig

pytestmark = pytest.mark.usefixtures("single_thread_torch")
CLASSES = ["horizontal", "vertical", "checker"]


class IndexScorer:
    """Scores each image by a fixed table of its plan index (ties included), to test the rules exactly."""

    name = "table"

    def __init__(self, store: SyntheticStore, values: dict[int, float]):
        self.files = {f: int(i) for f, i in zip(store.manifest()["file"], store.manifest()["index"])}
        self.values = values

    def settings(self) -> dict:
        return {"kind": "table"}

    def score(self, data, prompts):
        return {"table": np.array([self.values[self.files[f"{p.parent.name}/{p.name}"]] for p in data.files], dtype=float)}


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return save_clip(tmp_path_factory.mktemp("clip") / "clip", channels=3, image_size=16)


def make_store(folder: Path, counts, overgrow: float | None = None, groups=None, channels: int = 3) -> SyntheticStore:
    plan = make_plan(counts, CLASSES, group_names=groups, image_size=(12, 12), channels=channels,
                     templates=["a photo of a {class}"] if groups is None else ["a {class} on {context}"])
    plan = overgenerate(plan, overgrow) if overgrow else plan
    store = SyntheticStore(folder)
    generate_plan(plan, FakeGenerator(), store, progress=False)
    return store


def test_clip_threshold_and_keep_best_record_every_score(tmp_path, clip):
    store = make_store(tmp_path / "s", [9, 5, 3])  # 0, 4 and 6 synthetic images
    scorer = ClipScorer(clip, negative_prompts=["text"])
    first = filter_store(store, [FilterStep(scorer, threshold=-1.0, keep_best=3)])
    manifest = store.manifest()
    assert {"filter_clip", "filter_clip_negative", "kept", "rejected_by"} <= set(manifest.columns)
    assert manifest["filter_clip"].between(-1, 1).all() and manifest["filter_clip"].nunique() == 10
    kept = manifest[manifest["kept"]]
    passes = manifest["filter_clip"] > manifest["filter_clip_negative"]
    for class_id in (1, 2):
        cell = manifest[(manifest["class_id"] == class_id) & passes].sort_values(["filter_clip", "index"], ascending=[False, True])
        assert kept[kept["class_id"] == class_id]["index"].tolist() == sorted(cell["index"].head(3).tolist())
    assert set(manifest.loc[~manifest["kept"], "rejected_by"]) == {"clip"} and manifest.loc[manifest["kept"], "rejected_by"].isna().all()
    loaded = store.load()
    assert len(loaded) == first.kept == len(kept) and sorted(str(f.relative_to(store.root)) for f in loaded.files) == sorted(kept["file"])
    assert len(store.load(per_class=[0, 1, 1])) == 2
    assert [c["scored"] for c in first.cells] == [4, 6]
    table = pd.read_parquet(store.root / FILTER_FILE)
    filter_store(store, [FilterStep(ClipScorer(clip, negative_prompts=["text"]), threshold=-1.0, keep_best=3)])
    pd.testing.assert_frame_equal(pd.read_parquet(store.root / FILTER_FILE), table)  # deterministic; nothing deleted
    assert len(list(store.root.glob("*/*.png"))) == 10


def test_overgeneration_keeps_the_best_per_cell_with_ties_to_the_lower_index(tmp_path):
    store = make_store(tmp_path / "s", [[4, 2], [3, 3], [1, 4]], overgrow=2, groups=["red", "blue"])
    plan = store.plan
    assert plan.keep_counts.tolist() == [[0, 2], [1, 1], [3, 0]] and plan.synthetic_counts.tolist() == [[0, 4], [2, 2], [6, 0]]
    values = {0: 0.9, 1: 0.9, 2: 0.9, 3: 0.1, 4: 0.95, 5: 0.2}
    result = filter_store(store, [FilterStep(IndexScorer(store, values))])
    manifest = store.manifest()
    kept = {(r.class_name, r.group_name): sorted(g["index"]) for r, g in [(g.iloc[0], g) for _, g in manifest[manifest["kept"]].groupby(["class_id", "group_key"])]}
    assert kept == {("horizontal", "blue"): [0, 1], ("vertical", "red"): [0], ("vertical", "blue"): [0], ("checker", "red"): [0, 1, 4]}
    assert set(manifest.loc[~manifest["kept"], "rejected_by"]) == {"overgeneration"}
    assert [(c["class"], c["group"], c["kept"], c["needed"]) for c in result.cells][0] == ("horizontal", "blue", 2, 2)
    # the first images of an over-generated cell are those of the plan it grew from (same seeds)
    plain = make_store(tmp_path / "plain", [[4, 2], [3, 3], [1, 4]], groups=["red", "blue"]).manifest()
    same = plain.merge(manifest, on=["class_id", "group_key", "index"], suffixes=("", "_over"))
    assert len(same) == len(plain) == 7 and (same["seed"] == same["seed_over"]).all()


def test_classifier_confidence_keeps_the_most_confident_images(tmp_path):
    data = pattern_images(12, size=12)
    result = train_classifier(data, TrainConfig(epochs=1, batch_size=12, device="cpu", num_workers=0), progress=False)
    save_checkpoint(result, tmp_path / "classifier")
    store = make_store(tmp_path / "s", [6, 4, 3], overgrow=1.5, channels=1)
    scorer = ClassifierScorer(tmp_path / "classifier")
    with pytest.warns(UserWarning, match=r"kept fewer images than needed in 2 classes \(cells\), e\.g\. vertical: 1 of 2"):
        filter_store(store, [FilterStep(scorer, threshold=0.0), FilterStep(IndexScorer(store, {i: -i for i in range(9)}), keep_best=1)])
    manifest = store.manifest()
    assert manifest["filter_confidence"].between(0, 1).all() and manifest.groupby("class_id")["kept"].sum().tolist() == [1, 1]
    assert manifest.loc[manifest["kept"], "index"].tolist() == [0, 0]  # the table step prefers the lowest index
    assert set(manifest.loc[~manifest["kept"], "rejected_by"]) == {"table"}


def test_bad_filters_are_one_line_and_write_nothing(tmp_path, clip):
    store = make_store(tmp_path / "s", [6, 4, 3])
    with pytest.raises(SynaugError) as error:
        filter_store(store, [FilterStep(ClipScorer(clip), threshold=0.99)])
    assert str(error.value) == "filter 'clip' (threshold 0.99) keeps no image of class 'vertical' (0 of 2 passed); lower the threshold or use keep_best."
    assert not (store.root / FILTER_FILE).exists()
    resnet = save_backbone(tmp_path / "resnet", "resnet")
    with pytest.raises(SynaugError, match=r"resnet is a 'resnet' model, not a CLIP model; give a CLIP checkpoint"):
        ClipScorer(resnet)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SynaugError, match=r"empty is not a CLIP model \(no config.json\)"):
        ClipScorer(tmp_path / "empty")
    with pytest.raises(SynaugError, match="keep_best 0 must be at least 1"):
        FilterStep(ClipScorer(clip), keep_best=0)
    data = pattern_images(4, size=12)
    data.class_names = ["horizontal", "vertical", "dots"]
    save_checkpoint(train_classifier(data, TrainConfig(epochs=1, device="cpu", num_workers=0), progress=False), tmp_path / "other")
    with pytest.raises(SynaugError, match=r"does not know class 'checker' \(its classes: horizontal, vertical, dots\)"):
        filter_store(store, [FilterStep(ClassifierScorer(tmp_path / "other"))])
    with pytest.raises(SynaugError, match="over-generation factor 0.5 must be a number from 1 to 100"):
        overgenerate(store.plan, 0.5)
    with pytest.raises(SynaugError, match="over-generation keeps the best images by a score; set clip or classifier too"):
        FilterSpec(overgenerate=2)
    with pytest.raises(SynaugError, match="confidence_threshold and confidence_keep_best need a classifier"):
        FilterSpec(clip=str(clip), confidence_threshold=0.5)
    with pytest.raises(SynaugError, match="filter clip_threshold must be a finite number, got nan"):
        FilterSpec(clip=str(clip), clip_threshold=float("nan"))


def test_plan_overgenerate_then_synaug_filter_on_the_command_line(tmp_path, clip, capsys, monkeypatch):
    fashion = write_fashion_mnist(tmp_path / "fashion", train_per_class=20, test_per_class=2)
    monkeypatch.setenv("SYNAUG_FASHION_MNIST", str(fashion))
    plan_file, store = tmp_path / "plan.json", tmp_path / "store"
    code, stdout, err = run_cli(capsys, "plan", "--longtail", 5, "--max-per-class", 5, "--overgenerate", 2, "--out", plan_file)
    assert code == 0, err
    assert "56 synthetic images (over-generated: `synaug filter` keeps the best 28)" in " ".join(stdout.split())
    plan = SynthesisPlan.load(plan_file)
    assert plan.total == 56 and plan.keep_counts.sum() == 28
    assert run_cli(capsys, "generate", "--plan", plan_file, "--out", store, "--generator", FAKE, "--no-progress")[0] == 0
    assert error_line(capsys, "filter", store, "--clip", tmp_path / "fashion") == (
        f"error: {tmp_path / 'fashion'} is not a CLIP model (no config.json); give a CLIP checkpoint folder "
        "(save_pretrained, with its processor) or hub id, e.g. openai/clip-vit-base-patch32."
    )
    assert "need a CLIP checkpoint; set clip" in error_line(capsys, "filter", store, "--clip-threshold", 0.3)
    assert "keeps no image of class 'Trouser' (0 of 2 passed)" in error_line(capsys, "filter", store, "--clip", clip, "--clip-threshold", 0.9)

    code, stdout, err = run_cli(capsys, "filter", store, "--clip", clip, "--no-progress")
    assert code == 0, err
    assert "kept 28 of 56 images" in stdout and "filter.parquet" in stdout
    manifest = SyntheticStore(store).manifest()
    assert manifest.groupby("class_id")["kept"].sum().tolist() == plan.keep_counts[1:].tolist()
    assert len(SyntheticStore(store).load()) == 28


def test_decisions_can_live_outside_the_store(tmp_path):
    store = make_store(tmp_path / "s", [6, 4, 3], overgrow=1.5)
    filter_store(store, [FilterStep(IndexScorer(store, {i: -i for i in range(5)}))])
    own = store.manifest()
    with pytest.warns(UserWarning, match="kept fewer images than needed"):
        elsewhere = filter_store(store, [FilterStep(IndexScorer(store, {i: i for i in range(5)}), keep_best=1)], out=tmp_path / "other.parquet")
    assert elsewhere.path == tmp_path / "other.parquet"
    pd.testing.assert_frame_equal(store.manifest(), own)  # the store's own decisions are untouched
    assert own.loc[own["kept"], "index"].tolist() == [0, 1, 0, 1, 2]
    files = [f"{p.parent.name}/{p.name}" for p in store.load(decisions=elsewhere.path).files]
    assert files == ["vertical/000002.png", "checker/000004.png"]


def test_a_run_config_overgenerates_and_filters_the_fill_store(tmp_path, clip, monkeypatch, capsys):
    tiny_fashion(tmp_path, monkeypatch)
    out = tmp_path / "out"
    values = tiny_config(out, runs={"recipes": ["synaug"], "seeds": [0]}, filter={"clip": str(clip), "overgenerate": 2})
    config = parse_run_config(values, where="filter.yaml")
    result = run_pipeline(config, config_name="filter.yaml", config_text="", command="synaug run filter.yaml", progress=False)
    assert result.runs[0].sample_counts["synthetic"] == 54  # the fill plan's images (IF 5, 10 to 2 per class), not the 108 made
    folders = stage_folders(out)
    assert len(folders["filter"]) == 1 and len(folders["generate"]) == 1
    store = SyntheticStore(next((out / "stages").glob("generate-*/store")))
    assert store.plan.total == 108 and not (store.root / FILTER_FILE).exists()  # the decisions live in the filter stage
    decisions = pd.read_parquet(next((out / "stages").glob("filter-*/filter.parquet")))
    assert len(decisions) == 108 and decisions["kept"].sum() == 54 and decisions["filter_clip"].notna().all()
    again = run_pipeline(config, config_name="filter.yaml", config_text="", command="synaug run filter.yaml", progress=False)
    assert all(t.cached for t in again.timings if t.stage != "report")
    bad = write_config(tmp_path / "bad.yaml", tiny_config(out, filter={"clip_threshold": 0.3}))
    assert "filter: clip_threshold, clip_keep_best and negative_prompts need a CLIP checkpoint" in error_line(capsys, "run", bad)
