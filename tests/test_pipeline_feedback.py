"""Feedback-guided synthesis (FG) in `synaug run`: the feedback section, the ``fg`` rows, their
stores (cached, guided, never mixed with SYNAuG's) and the feedback classifier they use."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from fixtures_generation import FASHION_CLASSES, build_tiny_embedded, single_thread_torch  # noqa: F401  (fixture)
from fixtures_guidance import tiny_checkpoint
from pipeline_helpers import error_line, stage_folders, tiny_config, tiny_fashion, write_config

from synaug.errors import SynaugError
from synaug.generate.store import SyntheticStore
from synaug.guidance.feedback import DEFAULT_EVERY, DEFAULT_SCALE
from synaug.pipeline import parse_run_config, run_pipeline
from synaug.pipeline.ablations import expand_recipes
from synaug.train.checkpoint import WEIGHTS_FILE

pytestmark = pytest.mark.usefixtures("single_thread_torch")

FILL = [0, 2, 4, 5, 6, 6, 7, 8, 8, 8]  # fill-to-max of the tiny long tail 10/8/6/5/4/4/3/2/2/2 (54 images)


def run(config: dict):
    parsed = parse_run_config(config, where="tiny.yaml")
    return run_pipeline(parsed, config_name="tiny.yaml", config_text="", command="synaug run tiny.yaml", progress=False)


def no_generation(*args, **kwargs):
    raise AssertionError("the generator was loaded, so the synthetic images were not reused")


def record(out: Path, folder: str) -> dict:
    return json.loads((out / "stages" / folder / "stage.json").read_text())


def file_digest(checkpoint: Path) -> str:
    return hashlib.sha256((checkpoint / WEIGHTS_FILE).read_bytes()).hexdigest()[:16]


# ---- the feedback section ------------------------------------------------------------------
def test_feedback_defaults_and_fg_rows(tmp_path):
    feedback = parse_run_config(tiny_config(tmp_path)).feedback
    assert (feedback.criteria, feedback.scale, feedback.every, feedback.path) == (["entropy"], DEFAULT_SCALE, DEFAULT_EVERY, "x0")
    assert feedback.budgets == [1.0, 0.5] and feedback.classifier is None
    rows = expand_recipes(["ce", "fg"], ["entropy", "loss"], [1.0, 0.5])
    assert [r.name for r in rows] == ["ce", "fg-entropy-1", "fg-entropy-0.5", "fg-loss-1", "fg-loss-0.5"]
    assert rows[2].label == "FG entropy (budget 0.5)" and (rows[2].training_set, rows[2].mixup, rows[2].crt) == ("fill", True, True)
    control = expand_recipes(["fill_budget"], ["entropy", "loss"], [1.0, 0.5, 0.25])
    assert [(r.name, r.label, r.guidance.criterion, r.guidance.budget) for r in control] == [
        ("fill_budget-0.5", "SYNAuG unguided (budget 0.5)", None, 0.5), ("fill_budget-0.25", "SYNAuG unguided (budget 0.25)", None, 0.25),
    ]


@pytest.mark.parametrize(
    ("feedback", "expected"),
    [
        ({"critera": ["loss"]}, "unknown key 'feedback.critera'; did you mean 'criteria'?"),
        ({"criteria": ["entrpy"]}, "feedback criterion 'entrpy' is unknown (did you mean 'entropy'?); choose one of entropy, hardness, loss"),
        ({"criteria": []}, "feedback.criteria must list distinct criteria"),
        ({"scale": -0.1}, "feedback.scale -0.1 must be a non-negative number"),
        ({"every": 0}, "feedback.every must be at least 1"),
        ({"path": "through"}, "feedback.path 'through' is unknown; choose one of x0, full"),
        ({"budgets": [1.0, 1.5]}, "feedback budget 1.5 must be a fraction in (0, 1]"),
        ({"budgets": [0.5, 0.5]}, "feedback.budgets must list distinct fractions"),
        ({"budgets": "half"}, "feedback.budgets must be a list of numbers, not 'half'"),
        ({"classifier": "no/such/folder"}, "feedback.classifier no/such/folder is not a folder; give the checkpoint folder"),
        ({"classifier": "ce_crtt"}, "or one of ce, ce_crt for the run's own model"),
        ({"start": 0.6, "stop": 0.5}, "feedback.start 0.6 and feedback.stop 0.5 must satisfy 0 <= start < stop <= 1"),
        ({"stop": 1.5}, "must satisfy 0 <= start < stop <= 1"),
        ({"budgets": [1.0], "recipes": ["fill_budget"]}, "recipe 'fill_budget' needs a feedback budget below 1.0"),
    ],
)
def test_bad_feedback_settings_are_one_line_errors(tmp_path, capsys, feedback, expected):
    recipes = feedback.pop("recipes", ["fg"])
    config = write_config(tmp_path / "bad.yaml", tiny_config(tmp_path / "out", runs={"recipes": recipes}, feedback=feedback))
    line = error_line(capsys, "run", config)
    assert line.startswith(f"error: {config}: ") and expected in line


# ---- FG end to end -------------------------------------------------------------------------
def test_fg_rows_use_guided_cached_stores_and_the_first_seeds_ce_model(tmp_path, monkeypatch):
    tiny_fashion(tmp_path, monkeypatch)
    generator = build_tiny_embedded(tmp_path / "generator")
    out = tmp_path / "out"
    config = tiny_config(
        out, generator={"spec": str(generator), "steps": 2, "dtype": "fp32"},
        runs={"recipes": ["ce", "synaug", "fg"], "seeds": [1, 0]}, feedback={"every": 1},
    )
    result = run(config)

    folders = stage_folders(out)
    assert len(folders["plan-feedback"]) == 2 and len(folders["generate-feedback"]) == 2 and len(folders["generate"]) == 1
    unguided = SyntheticStore(out / "stages" / folders["generate"][0] / "store")
    stores = {record(out, f)["inputs"]["feedback"]["budget"]: SyntheticStore(out / "stages" / f / "store") for f in folders["generate-feedback"]}
    counts = {budget: np.bincount(store.manifest()["class_id"], minlength=10).tolist() for budget, store in stores.items()}
    assert counts == {1.0: FILL, 0.5: [0, 1, 2, 3, 3, 3, 3, 4, 4, 4]}  # 27 images, split by shortfall
    for store in stores.values():
        assert store.manifest()["criterion"].notna().all() and (store.manifest()["status"] == "ok").all()
        assert store.info["settings"]["hooks"][0]["criterion"] == "entropy"
    assert "hooks" not in unguided.info["settings"] and unguided.manifest()["criterion"].isna().all()
    guided, plain = (store.manifest().sort_values("file") for store in (stores[1.0], unguided))
    assert guided["seed"].tolist() == plain["seed"].tolist()  # the same prompts and seeds ...
    pixels = [np.stack([np.asarray(Image.open(store.root / f)) for f in frame["file"]]) for store, frame in ((stores[1.0], guided), (unguided, plain))]
    assert not np.array_equal(*pixels)  # ... but guided

    # the feedback classifier is the CE model of the first seed (1), trained once and reused by the ce row
    lt = [f for f in folders["train"] if record(out, f)["inputs"]["training_set"] == "lt"]
    assert len(lt) == 2 and len(folders["train"]) == 2 + 2 * 3  # ce, synaug, fg-1, fg-0.5 at seeds 1 and 0
    first = next(f for f in lt if record(out, f)["inputs"]["train"]["seed"] == 1)
    for folder in folders["generate-feedback"]:
        feedback = record(out, folder)["inputs"]["feedback"]
        assert feedback["classifier"] == file_digest(out / "stages" / first / "checkpoint")
        assert feedback["classifier_source"] == "CE on the real long tail, seed 1"
    lt_timings = [t.cached for t in result.timings if t.stage == "train" and "'lt' set" in t.label]
    assert lt_timings == [False, True, False]  # the classifier (generate), then the ce rows at seeds 1 (cached) and 0

    # the report: FG rows with the synthetic images each used
    results = json.loads((result.report / "results.json").read_text())
    assert list(results["recipes"]) == ["ce", "synaug", "fg-entropy-1", "fg-entropy-0.5"]
    assert results["recipes"]["fg-entropy-0.5"]["sample_counts"] == {"real": 46, "synthetic": 27}
    assert results["recipes"]["fg-entropy-1"]["feedback"]["criterion"] == "entropy" and results["recipes"]["synaug"]["feedback"] is None
    markdown = (result.report / "report.md").read_text()
    assert "| FG entropy (budget 1.0) | 46 | 54 |" in markdown and "| FG entropy (budget 0.5) | 46 | 27 |" in markdown
    assert "FG rows: SYNAuG's training" in markdown and "feedback classifier: CE on the real long tail, seed 1" in markdown

    # a re-run is fully cached, and the unguided store stays SYNAuG's without the fg rows
    monkeypatch.setattr("synaug.generate.loading.load_generator", no_generation)
    again = run(config)
    assert all(t.cached for t in again.timings if t.stage != "report") and stage_folders(out) == folders
    alone = run({**config, "runs": {"recipes": ["synaug"], "seeds": [1]}})
    assert [t.cached for t in alone.timings if t.stage == "generate"] == [True] and stage_folders(out) == folders


def test_fg_with_a_given_classifier_and_the_hardness_criterion(tmp_path, monkeypatch):
    tiny_fashion(tmp_path, monkeypatch)
    generator = build_tiny_embedded(tmp_path / "generator")
    checkpoint = tiny_checkpoint(tmp_path / "classifier", FASHION_CLASSES)
    out = tmp_path / "out"
    config = tiny_config(
        out, generator={"spec": str(generator), "steps": 2, "dtype": "fp32"}, runs={"recipes": ["fg"]},
        feedback={"criteria": ["hardness"], "budgets": [0.5], "classifier": str(checkpoint)},
    )
    result = run(config)
    folders = stage_folders(out)
    assert "generate" not in folders and len(folders["train"]) == 1  # no unguided store, no CE training
    (folder,) = folders["generate-feedback"]
    assert record(out, folder)["inputs"]["feedback"]["classifier"] == file_digest(checkpoint)
    store = SyntheticStore(out / "stages" / folder / "store")
    assert len(store.manifest()) == 27 and store.manifest()["criterion"].notna().all()
    assert (checkpoint / "class_gaussians.safetensors").is_file()  # fitted on the real long tail, cached
    assert [run.label for run in result.runs] == ["FG hardness (budget 0.5)"]

    (checkpoint / WEIGHTS_FILE).unlink()
    with pytest.raises(SynaugError, match=f"feedback.classifier {checkpoint} holds no {WEIGHTS_FILE}"):
        run(config)


def test_the_unguided_control_a_late_window_and_the_crt_classifier(tmp_path, monkeypatch):
    tiny_fashion(tmp_path, monkeypatch)
    generator = build_tiny_embedded(tmp_path / "generator")
    out = tmp_path / "out"
    config = tiny_config(
        out, generator={"spec": str(generator), "steps": 4, "dtype": "fp32"}, runs={"recipes": ["ce_crt", "synaug", "fill_budget", "fg"]},
        feedback={"budgets": [0.5], "classifier": "ce_crt", "every": 1, "start": 0.5},
    )
    result = run(config)
    folders = stage_folders(out)

    # the control trains on the first images per class of SYNAuG's store, cut to the budget plan's counts
    assert "generate-budget" not in folders and len(folders["generate"]) == 1
    fill = SyntheticStore(out / "stages" / folders["generate"][0] / "store").manifest()
    control = [f for f in folders["train"] if record(out, f)["inputs"].get("per_class") is not None]
    (folder,) = control
    assert record(out, folder)["inputs"]["per_class"] == [0, 1, 2, 3, 3, 3, 3, 4, 4, 4]
    assert record(out, folder)["inputs"]["synthetic"] == record(out, folders["generate"][0])["digest"]
    assert record(out, folder)["synthetic_per_class"] == [0, 1, 2, 3, 3, 3, 3, 4, 4, 4]
    assert np.bincount(fill["class_id"], minlength=10).tolist() == FILL

    # the FG store: guided on the second half of the steps by the cRT model of the first seed (shared with the ce_crt row)
    (guided,) = folders["generate-feedback"]
    feedback = record(out, guided)["inputs"]["feedback"]
    assert (feedback["start"], feedback["stop"], feedback["classifier_source"]) == (0.5, 1.0, "CE + cRT on the real long tail, seed 0")
    (crt,) = [f for f in folders["crt"] if file_digest(out / "stages" / f / "checkpoint") == feedback["classifier"]]
    (lt,) = [f for f in folders["train"] if record(out, f)["inputs"]["training_set"] == "lt"]
    assert record(out, crt)["inputs"]["model"] == record(out, lt)["digest"]
    hook = SyntheticStore(out / "stages" / guided / "store").info["settings"]["hooks"][0]
    assert (hook["start"], hook["stop"], hook["every"]) == (0.5, 1.0, 1)

    labels = [run.label for run in result.runs]
    assert labels == ["CE + cRT", "SYNAuG (fill + Mixup + cRT)", "SYNAuG unguided (budget 0.5)", "FG entropy (budget 0.5)"]
    markdown = (result.report / "report.md").read_text()
    assert "at every sampling step from 0.5 to 1 of the run" in markdown and "'SYNAuG unguided' rows are the same training" in markdown
