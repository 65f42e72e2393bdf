"""The over-sampler's ``filter=``: over-generation by the spec's factor, the best images kept per class by a
classifier's confidence, every score recorded in the store, the same result on every run, and its bad input."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from fixtures_generation import single_thread_torch  # noqa: F401  (fixture)
from train_helpers import pattern_images

import synaug
from synaug.generate.store import FILTER_FILE, SyntheticStore
from synaug.train import save_checkpoint, train_classifier
from synaug.train.trainer import TrainConfig

pytestmark = pytest.mark.usefixtures("single_thread_torch")

FAKE = "python:fake_generator:make_generator"
REAL = [9, 4, 2]  # horizontal, vertical, checker: 0, 5 and 7 synthetic images needed


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> str:
    """A checkpoint of the 3-pattern task (12 x 12, one channel), one epoch: confidences that differ per image."""
    result = train_classifier(pattern_images(12), TrainConfig(epochs=1, batch_size=12, device="cpu", num_workers=0), progress=False)
    return str(save_checkpoint(result, tmp_path_factory.mktemp("classifier") / "classifier"))


def sampler(store: Path, spec) -> synaug.SyntheticOverSampler:
    return synaug.SyntheticOverSampler(FAKE, store=store, filter=spec, progress=False)


def test_the_sampler_overgenerates_and_keeps_the_most_confident_images_of_each_class(tmp_path, classifier):
    data = pattern_images(REAL)
    chosen = sampler(tmp_path / "store", synaug.FilterSpec(classifier=classifier, overgenerate=2))
    balanced = chosen.fit_resample(data)
    assert chosen.plan_.synthetic_counts.tolist() == [0, 10, 14] and chosen.summary_.generated == 24
    assert chosen.sampling_strategy_ == {"horizontal": 0, "vertical": 5, "checker": 7}
    assert balanced.class_counts().tolist() == [9, 9, 9] and balanced.is_synthetic.sum() == 12
    assert [(c["class"], c["scored"], c["kept"], c["needed"]) for c in chosen.filter_.cells] == [("vertical", 10, 5, 5), ("checker", 14, 7, 7)]
    manifest = SyntheticStore(tmp_path / "store").manifest()
    assert manifest["filter_confidence"].between(0, 1).all() and len(manifest) == 24  # every image scored, none deleted
    for class_id, needed in ((1, 5), (2, 7)):
        cell = manifest[manifest["class_id"] == class_id].sort_values(["filter_confidence", "index"], ascending=[False, True])
        assert sorted(cell.loc[cell["kept"], "index"]) == sorted(cell["index"].head(needed))
    assert set(manifest.loc[~manifest["kept"], "rejected_by"]) == {"overgeneration"}
    kept = SyntheticStore(tmp_path / "store").load(data.class_names, in_memory=True)
    assert len(kept) == 12 and torch.equal(balanced.images[len(data):], kept.images)


def test_the_filtered_result_is_the_same_on_a_rerun_and_in_another_store(tmp_path, classifier):
    data = pattern_images(REAL)
    spec = synaug.FilterSpec(classifier=classifier, overgenerate=1.5)
    first = sampler(tmp_path / "a", spec).fit_resample(data)
    table = pd.read_parquet(tmp_path / "a" / FILTER_FILE)
    again = sampler(tmp_path / "a", spec)
    assert torch.equal(again.fit_resample(data).materialize().images, first.materialize().images)
    assert again.summary_.generated == 0 and again.summary_.already_done == 19
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a" / FILTER_FILE), table)
    elsewhere = sampler(tmp_path / "b", {"classifier": classifier, "overgenerate": 1.5})  # a run config's filter section
    assert torch.equal(elsewhere.fit_resample(data).materialize().images, first.materialize().images)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "b" / FILTER_FILE), table)


def test_a_threshold_without_overgeneration_keeps_what_passes(tmp_path, classifier):
    data = pattern_images(REAL)
    everything = sampler(tmp_path / "s", synaug.FilterSpec(classifier=classifier))
    everything.fit_resample(data)
    manifest = SyntheticStore(tmp_path / "s").manifest()
    confidence = manifest["filter_confidence"].to_numpy()
    cut = float(manifest.groupby("class_id")["filter_confidence"].max().min())  # every class keeps one; one class only one
    strict = sampler(tmp_path / "s", synaug.FilterSpec(classifier=classifier, confidence_threshold=cut))
    balanced = strict.fit_resample(data)
    assert balanced.is_synthetic.sum() == strict.filter_.kept == int((confidence >= cut).sum()) < 12
    with pytest.warns(synaug.SynaugWarning, match="holds the decisions of an earlier filter"):
        sampler(tmp_path / "s", None).fit_resample(data)


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        (synaug.FilterSpec(), "filter sets no filter; give clip or classifier"),
        ({"classifier": "reference", "treshold": 0.5}, "unknown key"),
        ({"classifier": "no-such-checkpoint"}, "no-such-checkpoint"),
        ("reference", "filter='reference' is not valid; give None, a synaug.FilterSpec"),
    ],
)
def test_bad_filters_are_one_line_errors_before_any_image(tmp_path, spec, needle):
    with pytest.raises(synaug.SynaugError) as error:
        sampler(tmp_path / "s", spec).fit_resample(pattern_images(REAL))
    assert needle in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "s").exists()
