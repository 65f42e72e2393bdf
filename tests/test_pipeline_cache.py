"""The stage cache: what a re-run reuses, what it rebuilds, and that a killed stage leaves nothing behind."""

from __future__ import annotations

import json

import pytest
from fixtures_generation import single_thread_torch  # noqa: F401  (fixture)
from pipeline_helpers import stage_folders, tiny_config, tiny_fashion

from synaug.errors import SynaugError
from synaug.pipeline import StageCache, parse_run_config, run_pipeline, stage_digest

pytestmark = pytest.mark.usefixtures("single_thread_torch")


@pytest.fixture
def fashion(tmp_path, monkeypatch):
    return tiny_fashion(tmp_path, monkeypatch)


def run(config: dict, **options):
    parsed = parse_run_config(config, where="tiny.yaml")
    return run_pipeline(parsed, config_name="tiny.yaml", config_text="", command="synaug run tiny.yaml", progress=False, **options)


def no_generation(*args, **kwargs):
    raise AssertionError("the generator was loaded, so the synthetic images were not reused")


def test_changing_training_settings_reuses_data_plan_and_store(fashion, tmp_path, monkeypatch):
    out = tmp_path / "out"
    config = tiny_config(out, runs={"recipes": ["fill"]})
    run(config)
    before = stage_folders(out)
    store = out / "stages" / before["generate"][0] / "store"
    images = {p: p.stat().st_mtime_ns for p in store.rglob("*.png")}
    assert len(images) == 54  # fill-to-max of 10/8/6/5/4/4/3/2/2/2

    monkeypatch.setattr("synaug.generate.loading.load_generator", no_generation)
    config["train"]["lr"] = 0.05
    result = run(config)
    after = stage_folders(out)
    for stage in ("data", "plan", "generate"):
        assert after[stage] == before[stage]
    assert {p: p.stat().st_mtime_ns for p in store.rglob("*.png")} == images
    assert len(after["train"]) == 2 and len(after["evaluate"]) == 2
    assert [t.cached for t in result.timings if t.stage in ("data", "plan", "generate")] == [True, True, True]
    assert [t.cached for t in result.timings if t.stage == "train"] == [False]


def test_changing_the_plan_regenerates_and_retrains(fashion, tmp_path):
    out = tmp_path / "out"
    config = tiny_config(out, runs={"recipes": ["fill"]})
    run(config)
    config["plan"]["templates"] = ["a drawing of a {class}"]
    run(config)
    folders = stage_folders(out)
    assert len(folders["data"]) == 1
    assert len(folders["plan"]) == len(folders["generate"]) == len(folders["train"]) == 2
    digests = {json.loads((out / "stages" / f / "store" / "store.json").read_text())["plan_digest"] for f in folders["generate"]}
    assert len(digests) == 2


def test_recipes_that_differ_only_in_crt_share_one_training(fashion, tmp_path):
    out = tmp_path / "out"
    result = run(tiny_config(out, runs={"recipes": ["ce", "ce_crt"]}))
    folders = stage_folders(out)
    assert len(folders["train"]) == 1 and len(folders["crt"]) == 1 and len(folders["evaluate"]) == 2
    assert [t.cached for t in result.timings if t.stage == "train"] == [False, True]
    assert [run.recipe for run in result.runs] == ["ce", "ce_crt"]


def test_a_killed_stage_leaves_no_folder_and_the_rerun_finishes(fashion, tmp_path, monkeypatch):
    out = tmp_path / "out"
    config = tiny_config(out, runs={"recipes": ["ce"]})

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr("synaug.train.train_classifier", killed)
        with pytest.raises(KeyboardInterrupt):
            run(config)
    assert "train" not in stage_folders(out)
    assert [p.name for p in (out / "stages").iterdir() if p.name.startswith(".")] == []
    result = run(config)
    assert result.report is not None and (result.report / "report.md").is_file()
    assert [t.cached for t in result.timings if t.stage == "data"] == [True]


def test_stage_cache_records_and_digests(tmp_path):
    cache = StageCache(tmp_path)
    inputs = {"a": 1, "b": [1, 2]}
    digest = stage_digest("train", inputs)
    assert digest == stage_digest("train", {"b": [1, 2], "a": 1}) != stage_digest("train", {"a": 2, "b": [1, 2]})
    assert digest != stage_digest("crt", inputs)
    with pytest.raises(RuntimeError):
        with cache.build("train", digest, inputs) as (folder, facts):
            (folder / "half.bin").write_bytes(b"x")
            raise RuntimeError("killed")
    assert cache.record("train", digest) is None and list(tmp_path.iterdir()) == []
    with cache.build("train", digest, inputs) as (folder, facts):
        (folder / "model.bin").write_bytes(b"x")
        facts["images"] = 3
    record = cache.record("train", digest)
    assert record["inputs"] == inputs and record["images"] == 3
    assert (cache.folder("train", digest) / "model.bin").read_bytes() == b"x"
    (cache.folder("train", digest) / "stage.json").write_text("{not json")
    with pytest.raises(SynaugError, match="is corrupt; delete the folder"):
        cache.record("train", digest)


def test_changed_data_files_start_the_run_again_from_the_data(tmp_path):
    from data_writers import write_image

    root = tmp_path / "data"
    for name, count in (("a", 4), ("b", 2)):
        for split, n in (("train", count), ("test", 1)):
            for i in range(n):
                write_image(root / split / name / f"{i}.png", size=(12, 12))
    config = tiny_config(tmp_path / "out", data={"kind": "imagefolder", "root": str(root), "size": 12, "channels": 1}, runs={"recipes": ["ce"]})
    config["data"].pop("longtail")
    first = run(config).runs[0].sample_counts["real"]
    write_image(root / "train" / "b" / "9.png", size=(12, 12))  # an image added to a class folder
    assert (first, run(config).runs[0].sample_counts["real"]) == (6, 7)
    assert len(stage_folders(tmp_path / "out")["data"]) == 2

    groups = {split: tmp_path / f"{split}_groups.csv" for split in ("train", "test")}
    for split, csv in groups.items():
        rows = [f"{p.relative_to(root / split)},{'y' if p.parent.name == 'b' else 'x'}\n" for p in sorted((root / split).rglob("*.png"))]
        csv.write_text("path,group\n" + "".join(rows))
    config["data"].update(groups_csv=str(groups["train"]), test_groups_csv=str(groups["test"]))
    config["runs"]["recipes"] = ["erm"]
    run(config)
    groups["train"].write_text(groups["train"].read_text().replace("a/0.png,x", "a/0.png,y"))  # an edited groups CSV
    run(config)
    assert len(stage_folders(tmp_path / "out")["data"]) == 4
