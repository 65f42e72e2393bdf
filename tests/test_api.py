"""The public Python API at the top of the package: the over-sampler, the classifier, run, and their bad input."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from fixtures_generation import single_thread_torch  # noqa: F401  (fixture)
from fixtures_guidance import tiny_checkpoint
from pipeline_helpers import tiny_config, tiny_fashion
from sklearn.base import clone
from train_helpers import pattern_images

import synaug
from synaug.generate.store import SyntheticStore

pytestmark = pytest.mark.usefixtures("single_thread_torch")

FAKE = "python:fake_generator:make_generator"
QUICK = {"epochs": 2, "batch_size": 16, "device": "cpu", "num_workers": 0, "amp": "off", "channels_last": False}


def grouped_images(counts: list[list[int]], size: int = 12) -> synaug.LabeledImages:
    """The pattern task with two groups ("dim", "bright"): ``counts[c][g]`` images of class c in group g."""
    data = pattern_images([sum(row) for row in counts], size=size)
    groups = np.zeros(len(data), dtype=np.int64)
    for class_id, row in enumerate(counts):
        members = np.flatnonzero(data.labels == class_id)
        groups[members[row[0]:]] = 1
    images = data.images.clone()
    images[groups == 1] = (images[groups == 1].int() // 2 + 120).to(torch.uint8)
    return dataclasses.replace(data, images=images, groups=groups, group_names=["dim", "bright"])


def test_every_public_name_has_a_docstring_with_an_example():
    for name in synaug.__all__:
        if name != "__version__":
            doc = getattr(synaug, name).__doc__ or ""
            assert ">>> " in doc, f"synaug.{name} needs a docstring with a short example"
    assert "SyntheticOverSampler" in dir(synaug)
    with pytest.raises(AttributeError):
        synaug.no_such_name


# ---- the over-sampler -----------------------------------------------------------------------
def test_fit_resample_returns_real_then_flagged_synthetic_images_and_resumes(tmp_path):
    data = pattern_images([9, 4, 2])
    sampler = synaug.SyntheticOverSampler(FAKE, store=tmp_path / "store", progress=False)
    balanced = sampler.fit_resample(data)
    assert balanced.class_counts().tolist() == [9, 9, 9] and balanced.is_synthetic.sum() == 12
    assert not balanced.is_synthetic[: len(data)].any() and torch.equal(balanced.images[: len(data)], data.images)
    assert sampler.sampling_strategy_ == {"horizontal": 0, "vertical": 5, "checker": 7}
    assert sampler.summary_.generated == 12
    again = synaug.SyntheticOverSampler(FAKE, store=tmp_path / "store", progress=False)
    assert torch.equal(again.fit_resample(data).images, balanced.images)
    assert again.summary_.generated == 0 and again.summary_.already_done == 12


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("auto", [0, 5, 7]), ("not majority", [0, 5, 7]), ("all", [0, 5, 7]), ("fill-to-max", [0, 5, 7]),
        ("minority", [0, 0, 7]), ("not minority", [0, 5, 0]), ({"checker": 4, "vertical": 4}, [0, 0, 2]),
        (("fill-to", 6), [0, 2, 4]), (("budget", 6), [0, 3, 3]),
    ],
)
def test_sampling_strategy_speaks_imbalanced_learn_and_synaug(strategy, expected):
    plan = synaug.SyntheticOverSampler(FAKE, sampling_strategy=strategy, store="unused").make_plan(pattern_images([9, 4, 2]))
    assert plan.synthetic_counts.tolist() == expected


def test_group_data_is_over_sampled_per_class_and_group_cell(tmp_path):
    data = grouped_images([[6, 2], [3, 1]])
    sampler = synaug.SyntheticOverSampler(FAKE, store=tmp_path / "s", templates=["a {class} on {context}"], progress=False)
    balanced = sampler.fit_resample(data)
    assert balanced.cell_counts().tolist() == [[6, 6], [6, 6]]
    assert sampler.sampling_strategy_[("vertical", "bright")] == 5
    minority = synaug.SyntheticOverSampler(FAKE, sampling_strategy="minority", store="unused").make_plan(data)
    assert minority.synthetic_counts.tolist() == [[0, 0], [0, 5]]


def test_the_sampler_follows_the_estimator_contract():
    sampler = synaug.SyntheticOverSampler("embedded", sampling_strategy=("fill-to", 100), store="s", random_state=3)
    assert sampler.get_params()["sampling_strategy"] == ("fill-to", 100)
    copy = clone(sampler).set_params(random_state=4)
    assert copy.random_state == 4 and sampler.random_state == 3 and copy.store == "s"


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        ({"sampling_strategy": {"zebra": 10}}, "names class 'zebra', which the dataset does not have; valid classes"),
        ({"sampling_strategy": {"horizontal": 5}}, "class 'horizontal' has 9 real images, above its target 5"),
        ({"sampling_strategy": "majority"}, "sampling_strategy='majority' is not valid; give one of auto"),
        ({"sampling_strategy": ("fill-to", -1)}, "sampling_strategy=('fill-to', -1) is not valid"),
        ({"store": None}, "store=None is not valid; give a folder for the synthetic images"),
        ({"random_state": None}, "random_state=None is not valid; give a non-negative int"),
        ({"templates": ["a photo"]}, "prompt template 'a photo' has no {class}"),
        ({"generator": "embeded"}, "did you mean 'embedded'?"),
    ],
)
def test_bad_sampler_settings_are_one_line_errors(tmp_path, settings, needle):
    sampler = synaug.SyntheticOverSampler(**{"generator": FAKE, "store": tmp_path / "s", "progress": False, **settings})
    with pytest.raises(synaug.SynaugError) as error:
        sampler.fit_resample(pattern_images([9, 4, 2]))
    assert needle in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "s").exists()


# ---- feedback guidance through the same object ------------------------------------------------
def test_fg_is_the_sampler_given_a_guidance_object(tmp_path, monkeypatch):
    tiny_fashion(tmp_path, monkeypatch)
    train, _ = synaug.fashion_mnist_lt(imbalance_factor=4, max_per_class=4)
    guidance = synaug.Guidance(tiny_checkpoint(tmp_path / "clf", train.class_names), criterion="entropy", every=1)
    generator = synaug.load_generator("embedded", steps=2, device="cpu")
    sampler = synaug.SyntheticOverSampler(generator, store=tmp_path / "s", guidance=guidance, progress=False)
    balanced = sampler.fit_resample(train)
    assert balanced.class_counts().tolist() == [4] * 10 and balanced.is_synthetic.sum() == sampler.plan_.total
    store = SyntheticStore(tmp_path / "s")
    assert store.info["settings"]["hooks"][0]["criterion"] == "entropy" and store.manifest()["criterion"].notna().all()


def test_guidance_that_guides_no_step_of_the_shipped_generator_is_refused(tmp_path, monkeypatch):
    tiny_fashion(tmp_path, monkeypatch)
    train, _ = synaug.fashion_mnist_lt(imbalance_factor=4, max_per_class=4)
    guidance = synaug.Guidance(tiny_checkpoint(tmp_path / "clf", train.class_names), start=0.9)
    sampler = synaug.SyntheticOverSampler("embedded", store=tmp_path / "s", guidance=guidance, progress=False)
    with pytest.raises(synaug.SynaugError, match="every 5 steps, guides none of the generator's 10 steps"):
        sampler.fit_resample(train)
    assert not (tmp_path / "s").exists()


def test_guidance_from_a_classifier_of_other_classes_is_refused(tmp_path):
    guidance = synaug.Guidance(tiny_checkpoint(tmp_path / "clf", ["a", "b", "c"]))
    sampler = synaug.SyntheticOverSampler(FAKE, store=tmp_path / "s", guidance=guidance, progress=False)
    with pytest.raises(synaug.SynaugError, match="the plan has class 0 'horizontal', the feedback classifier 'a'"):
        sampler.fit_resample(pattern_images([9, 4, 2]))


# ---- the classifier ---------------------------------------------------------------------------
def test_classifier_fit_crt_score_save_and_load(tmp_path):
    train, test = pattern_images([30, 10, 4], synthetic_every=5), pattern_images(6, seed=1)
    clf = synaug.Classifier(**QUICK, mixup_alpha=0.2, progress=False).fit(train)
    before = clf.predict_logits(test)
    clf.crt(train, epochs=2)
    assert not torch.equal(before, clf.predict_logits(test))
    metrics = clf.score(test, many_threshold=20, few_threshold=5)
    assert {"top1", "many", "medium", "few", "balanced_accuracy"} <= set(metrics) and metrics["num_samples"] == 18
    assert [c["train_count"] for c in metrics["classes"]] == clf.result_.train_counts.tolist()
    loaded = synaug.Classifier.load(clf.save(tmp_path / "clf"), device="cpu")
    assert np.array_equal(loaded.predict(test), clf.predict(test)) and loaded.config.mixup_alpha == 0.2
    assert json.loads((tmp_path / "clf" / "config.json").read_text())["crt"] == {"epochs": 2, "seed": 0}


def test_group_dro_dfr_and_the_worst_group(tmp_path):
    train, val, test = grouped_images([[12, 3], [10, 4], [8, 2]]), grouped_images([[3, 3], [3, 3], [3, 3]]), grouped_images([[2, 2]] * 3)
    clf = synaug.Classifier(**QUICK, progress=False).fit_group_dro(train, step_size=0.05)
    assert len(clf.reports_["group_dro"]["weights"]) == 6
    report = clf.dfr(val, retrains=2).score(test)["group_report"]
    assert report["worst_group_accuracy"] <= report["accuracy"] and report["fairness"] is not None
    assert [g["train_count"] for g in report["groups"]] == [12, 3, 10, 4, 8, 2]
    assert "chosen_C" in clf.reports_["dfr"]
    loaded = synaug.Classifier.load(clf.save(tmp_path / "clf"), device="cpu")
    assert loaded.score(test)["group_report"]["mean_weighted_by_train"] == report["mean_weighted_by_train"]


def test_classifier_bad_input_is_one_line(tmp_path):
    with pytest.raises(synaug.SynaugError, match="no setting 'epoch'; did you mean 'epochs'"):
        synaug.Classifier(epoch=3)
    with pytest.raises(synaug.SynaugError, match="score needs a trained classifier; call fit"):
        synaug.Classifier().score(pattern_images(2))
    clf = synaug.Classifier(**QUICK, progress=False).fit(pattern_images([6, 6, 6]))
    with pytest.raises(synaug.SynaugError, match="the classifier has 3 classes .* and the data 2 .*fit a classifier on this data"):
        clf.score(pattern_images([3, 3]))
    with pytest.raises(synaug.SynaugError, match="Group-DRO needs group labels"):
        clf.fit_group_dro(pattern_images(4))


# ---- a whole run ------------------------------------------------------------------------------
def test_run_takes_a_mapping_and_needs_no_command_line(tmp_path, monkeypatch):
    tiny_fashion(tmp_path, monkeypatch)
    result = synaug.run(tiny_config(tmp_path / "out", runs={"recipes": ["ce"], "seeds": [0]}), progress=False)
    assert len(result.summaries) == 1 and result.summaries[0].seeds == [0]
    report = (result.report / "report.md").read_text()
    assert "synaug run config.yaml" in report and "Config file `config.yaml`, verbatim" in report
