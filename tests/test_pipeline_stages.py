"""The stages alone (a RunContext and the outputs before them), and the code digest in the stage cache key."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from fixtures_generation import single_thread_torch  # noqa: F401  (fixture)
from pipeline_helpers import stage_folders, tiny_config, tiny_fashion

import synaug
from synaug.data import FASHION_MNIST_CLASSES, LabeledImages, default_reserve, draw_longtail
from synaug.errors import SynaugError
from synaug.pipeline import RunContext, code_digest, parse_run_config, run_pipeline, stage_digest
from synaug.pipeline.ablations import RECIPES
from synaug.pipeline.stages import train as train_module
from synaug.pipeline.stages.data import data_stage
from synaug.pipeline.stages.evaluate import evaluate_stage
from synaug.pipeline.stages.plan import plan_stage
from synaug.pipeline.stages.train import train_stage

pytestmark = pytest.mark.usefixtures("single_thread_torch")

LONG_TAIL = [10, 8, 6, 5, 4, 4, 3, 2, 2, 2]  # IF 5, at most 10 per class


def context(config: dict, target: str | None = None) -> RunContext:
    return RunContext(parse_run_config(config, where="tiny.yaml"), config_name="tiny.yaml", target=target, progress=False)


def run(config: dict):
    return run_pipeline(parse_run_config(config, where="tiny.yaml"), config_name="tiny.yaml", progress=False)


def test_stages_run_alone_on_a_context(tmp_path, monkeypatch):
    tiny_fashion(tmp_path, monkeypatch)
    ctx = context(tiny_config(tmp_path / "out", runs={"recipes": ["ce"]}))
    data = data_stage(ctx)
    assert data.train.class_counts().tolist() == LONG_TAIL and len(data.test) == 30
    assert data.oracle_draw == {"reserve": 0.5, "seed": 0}  # Fashion-MNIST train: the generator's half is never drawn
    plan = plan_stage(ctx, data, "class").plan
    assert plan.class_totals()[1].tolist() == [10 - n for n in LONG_TAIL]
    model = train_stage(ctx, RECIPES["ce"], 0, data, None, None)
    metrics = evaluate_stage(ctx, RECIPES["ce"], 0, model, data)
    assert 0 <= metrics["top1"] <= 100 and set(metrics["thresholds"]) == {"many", "few"}

    # a second context finds every one of them in the cache
    again = context(tiny_config(tmp_path / "out", runs={"recipes": ["ce"]}), target="evaluate")
    assert data_stage(again).digest == data.digest
    assert train_stage(again, RECIPES["ce"], 0, data, None, None).digest == model.digest
    assert [t.cached for t in again.timings] == [True, True]


def test_a_stage_made_by_other_code_is_made_again(tmp_path, monkeypatch):
    tiny_fashion(tmp_path, monkeypatch)
    out = tmp_path / "out"
    config = tiny_config(out, runs={"recipes": ["ce"]})
    run(config)
    before = stage_folders(out)

    # the train stage's code changes (here: one more module in what it runs): it trains again,
    # and the evaluation of the new model is made again, while the data stay cached
    monkeypatch.setattr(train_module, "CODE", (*train_module.CODE, "synaug.errors"))
    result = run(config)
    cached = {t.stage: t.cached for t in result.timings if t.stage != "report"}
    assert cached == {"data": True, "train": False, "evaluate": False}
    after = stage_folders(out)
    assert after["data"] == before["data"] and len(after["train"]) == 2 and len(after["evaluate"]) == 2


def test_a_new_synaug_version_makes_every_stage_again(tmp_path, monkeypatch):
    tiny_fashion(tmp_path, monkeypatch)
    config = tiny_config(tmp_path / "out", runs={"recipes": ["ce"]})
    run(config)
    monkeypatch.setattr(synaug, "__version__", f"{synaug.__version__}.post1")
    code_digest.cache_clear()
    try:
        result = run(config)
    finally:
        code_digest.cache_clear()
    assert not any(t.cached for t in result.timings)


def test_code_digest_follows_the_source(tmp_path, monkeypatch):
    package = tmp_path / "src" / "digest_probe"
    (package / "inner").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "inner" / "step.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    monkeypatch.delitem(sys.modules, "digest_probe", raising=False)
    code_digest.cache_clear()
    first = code_digest(("digest_probe",))
    assert code_digest(("digest_probe",)) == first and len(first) == 16
    (package / "inner" / "step.py").write_text("VALUE = 2\n")
    code_digest.cache_clear()
    assert code_digest(("digest_probe",)) != first
    assert code_digest(("digest_probe.inner.step",)) != code_digest(("digest_probe",))
    assert stage_digest("train", {"a": 1}, first) != stage_digest("train", {"a": 1}, code_digest(("digest_probe",)))
    code_digest.cache_clear()


def test_one_long_tail_draw_and_its_reserve():
    assert default_reserve("fashion-mnist", "train") == 0.5
    assert default_reserve("fashion-mnist", "test") == 0.0 and default_reserve("cifar10", "train") == 0.0
    labels = np.repeat(np.arange(10), 100)
    data = LabeledImages(labels=labels, class_names=list(FASHION_MNIST_CLASSES), images=torch.zeros(1000, 1, 2, 2, dtype=torch.uint8))
    indices, settings = draw_longtail(data, 10, kind="fashion-mnist", split="train")
    assert settings["reserve"] == 0.5 and np.isin(indices, np.arange(1000)).all()
    counts = np.bincount(labels[indices], minlength=10)
    assert counts[0] == settings["max_per_class"] and counts[-1] == int(settings["max_per_class"] * 0.1)
    test_indices, test_settings = draw_longtail(data, 10, kind="fashion-mnist", split="test", max_per_class=100)
    assert test_settings["reserve"] == 0.0 and np.bincount(labels[test_indices], minlength=10)[0] == 100
    with pytest.raises(SynaugError, match="no images"):
        draw_longtail(data, 1000, kind="fashion-mnist", split="test", max_per_class=100)


def test_synaug_plan_draws_a_test_split_long_tail_without_the_generators_reserve(tmp_path, monkeypatch, capsys):
    from data_writers import write_fashion_mnist

    from synaug.cli import main
    from synaug.plan import SynthesisPlan

    monkeypatch.setenv("SYNAUG_FASHION_MNIST", str(write_fashion_mnist(tmp_path / "fashion", train_per_class=4, test_per_class=2)))
    out = tmp_path / "plan.json"
    assert main(["plan", "--split", "test", "--longtail", "2", "--out", str(out)]) == 0, capsys.readouterr().err
    assert SynthesisPlan.load(out).real_counts.tolist()[0] == 2  # the whole test split is the pool: 2 images of class 0
