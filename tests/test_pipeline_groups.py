"""`synaug run` on group data: the group config keys and their one-line errors, a tiny run of the six
group recipes (per-group table, plot, cached re-run), the shipped group configs (the demo's, and the
Waterbirds and UTKFace ones on small fake data in the real formats) and `synaug demo --groups`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from data_writers import write_fashion_mnist, write_image
from fixtures_generation import single_thread_torch  # noqa: F401  (fixture)
from pipeline_helpers import FAKE, error_line, run_cli, stage_folders, tiny_config, write_config
from tiny_transformers import save_backbone

from synaug.config import load_yaml
from synaug.data.registry import load_index
from synaug.errors import SynaugError
from synaug.generate.backends.embedded import SHIPPED_ROOT, shipped_folder
from synaug.pipeline import parse_run_config, run_pipeline
from synaug.pipeline.ablations import GROUP_RECIPES
from synaug.pipeline.demo import demo_config, packaged_config
from synaug.report.results import GROUP_METRICS

pytestmark = pytest.mark.usefixtures("single_thread_torch")

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
SPURIOUS = {"imbalance_factor": 4, "max_per_class": 12, "per_cell_val": 3, "per_cell_test": 2}


@pytest.fixture(scope="module")
def fashion(tmp_path_factory) -> Path:
    """Fashion-MNIST-format files with 120 train and 10 test images per class (the spurious splits need a pool)."""
    return write_fashion_mnist(tmp_path_factory.mktemp("fashion"), train_per_class=120, test_per_class=10)


def spurious_config(out: Path, fashion: Path, **sections) -> dict:
    """The six group recipes on the tiny spurious benchmark (62 real training images), one epoch, the fake generator."""
    config = tiny_config(
        out,
        data={"kind": "spurious-fashion-mnist", "root": str(fashion), "longtail": None, "spurious": dict(SPURIOUS), "val_split": "val"},
        plan={"group_templates": ["a {class} on a {context} background"]},
        dfr={"c_grid": [1.0, 0.1], "retrains": 2},
        crt={"epochs": 1},
        runs={"recipes": list(GROUP_RECIPES)},
    )
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    return config


def run(values: dict, name: str = "groups.yaml"):
    config = parse_run_config(values, where=name)
    return run_pipeline(config, config_name=name, config_text="", command=f"synaug run {name}", progress=False)


# ---- config keys and errors ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"plan": {"cell": "class"}}, "unknown key 'plan.cell'; did you mean 'cells'?"),
        ({"data": {"spurious": {"majorty": 0.9}}}, "unknown key 'data.spurious.majorty'; did you mean 'majority'?"),
        ({"dfr": {"retrain": 3}}, "unknown key 'dfr.retrain'; did you mean 'retrains'?"),
        ({"data": {"spurious": {"majority": 0.5}}}, "data.spurious.majority 0.5 must lie in [0.9, 1]"),
        ({"data": {"longtail": {"imbalance_factor": 10}}}, "spurious-fashion-mnist draws its own long tail; remove data.longtail"),
        ({"data": {"val_split": None}}, "recipe 'dfr' re-trains the last layer on the group-balanced validation split; set data.val_split"),
        ({"runs": {"recipes": ["erm", "oracle"]}}, "recipe 'oracle' is for class-imbalance runs, not group data"),
        ({"plan": {"group_templates": ["a photo of a {class}"]}}, "plan.group_templates 'a photo of a {class}' names no group"),
        ({"plan": {"cells": "groups"}}, "plan.cells 'groups' is unknown; choose one of class, class-group"),
        ({"group_dro": {"step_size": -1}}, "group_dro needs step_size, adjustment and weight_decay >= 0"),
        ({"generator": {"store": "elsewhere"}}, "generator.store holds one plan's images"),
    ],
)
def test_bad_group_config_is_one_line(tmp_path, fashion, capsys, change, expected):
    config = write_config(tmp_path / "bad.yaml", spurious_config(tmp_path / "out", fashion, **change))
    line = error_line(capsys, "run", config)
    assert line.startswith(f"error: {config}: ") and expected in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"plan": {"cells": "class-group"}}, "plan.cells class-group fills class x group cells, but fashion-mnist data has no groups; set plan.cells: class or use a group-annotated data.kind"),
        ({"runs": {"recipes": ["ce", "group_dro"]}}, "recipe 'group_dro' needs group labels, and fashion-mnist data has none; use a group-annotated data.kind"),
        ({"data": {"spurious": {"majority": 0.9}}}, "data.spurious holds options of data.kind spurious-fashion-mnist, not fashion-mnist"),
        ({"data": {"val_split": "val"}}, "data.val_split is the group-balanced split of DFR; fashion-mnist data has no groups"),
    ],
)
def test_group_settings_on_data_without_groups_name_the_fix(tmp_path, capsys, change, expected):
    config = write_config(tmp_path / "bad.yaml", tiny_config(tmp_path / "out", **change))
    assert expected in error_line(capsys, "run", config)


# ---- a tiny group run -------------------------------------------------------------------------
def test_six_group_recipes_end_to_end_then_cached(tmp_path, fashion, capsys):
    out = tmp_path / "out"
    config = write_config(tmp_path / "groups.yaml", spurious_config(out, fashion))
    code, stdout, err = run_cli(capsys, "run", config, "--no-progress")
    assert code == 0, err
    assert "accuracy % over the test groups" in stdout and "EO gap" in stdout and "wall time" in stdout

    results = json.loads((out / "report" / "results.json").read_text())
    recipes = results["recipes"]
    assert list(recipes) == list(GROUP_RECIPES)
    for summary in recipes.values():
        assert set(GROUP_METRICS) <= set(summary["mean"]) and len(summary["per_group_mean"]) == 20  # 10 classes x red, blue
    report = results["runs"][0]["metrics"]["group_report"]
    assert report["fairness"]["method"] == "one-vs-rest over classes" and report["groups"][0]["name"] == "T-shirt/top/red"
    assert {r["recipe"]: r["sample_counts"]["synthetic"] for r in results["runs"]} == {
        "erm": 0, "synaug_class": 58, "synaug_group": 178, "group_dro": 0, "dfr": 0, "synaug_dfr": 178,
    }
    # the class x group plan fills every cell to the largest (12) and prompts for the colour; the class plan names none
    cells = np.array(results["groups"]["real_cells"]) + np.array(results["groups"]["filled_cells"])
    assert (cells == 12).all() and results["groups"]["filled_classes"] == [0, 2, 4, 5, 6, 7, 8, 8, 9, 9]
    plans = [json.loads(p.read_text()) for p in sorted((out / "stages").glob("plan-*/plan.json"))]
    by_cells = {plan["group_names"] is not None: plan for plan in plans}
    assert by_cells[True]["templates"] == ["a {class} on a {context} background"] and by_cells[False]["templates"] == ["a photo of a {class}"]
    markdown = (out / "report" / "report.md").read_text()
    assert "| recipe | real images | synthetic images | worst-group | mean | balanced mean | EO gap | DP gap | seeds |" in markdown
    assert "![per-group accuracy](group_accuracy.png)" in markdown and "| Ankle boot/blue | 0 | 2 |" in markdown
    assert (out / "report" / "group_accuracy.png").stat().st_size > 1000

    folders = stage_folders(out)
    assert (len(folders["plan"]), len(folders["generate"]), len(folders["train"]), len(folders["crt"]), len(folders["crt-dfr"])) == (2, 2, 4, 2, 2)
    dro = next(json.loads(p.read_text()) for p in (out / "stages").glob("train-*/stage.json") if "group_dro" in json.loads(p.read_text())["inputs"])
    assert len(dro["group_dro_weights"]) == 20 and dro["inputs"]["train"]["weight_decay"] == 1e-3

    # the same config again: every stage from the cache; the binary target (new data digest) reuses the synthetic stores
    again = run(load_yaml(config))
    assert all(t.cached for t in again.timings if t.stage != "report") and stage_folders(out) == folders
    binary = spurious_config(out, fashion, data={"spurious": {**SPURIOUS, "binary": True}}, runs={"recipes": ["erm", "synaug_group"]})
    result = run(binary)
    assert {t.stage for t in result.timings if t.cached} >= {"generate"} and len(stage_folders(out)["generate"]) == 2
    report = result.runs[0].metrics["group_report"]
    assert report["fairness"]["method"] == "binary (positive label 1)"
    assert [g["name"] for g in report["groups"]] == ["blue-majority/red", "blue-majority/blue", "red-majority/red", "red-majority/blue"]


# ---- the shipped group configs -------------------------------------------------------------
def test_demo_groups_config_loads_and_is_the_repository_copy():
    packaged = packaged_config("spurious-fashion-mnist.yaml")
    assert packaged.read_text() == (CONFIGS / "spurious-fashion-mnist.yaml").read_text()
    config, text, overrides = demo_config(groups=True)
    assert config.runs.recipes == list(GROUP_RECIPES) and config.runs.seeds == [0, 1, 2]
    assert config.generator.spec == "embedded:colored-fashion-mnist" and config.data.binary and config.data.val_split == "val"
    assert config.output == "synaug-demo-groups" and overrides == ["output = synaug-demo-groups"] and text == packaged.read_text()
    assert shipped_folder("embedded:colored-fashion-mnist") == SHIPPED_ROOT / "colored-fashion-mnist"
    assert shipped_folder("embedded") == SHIPPED_ROOT / "fashion-mnist" and shipped_folder("models/sd") is None
    with pytest.raises(SynaugError, match="--full and --fg do not extend"):
        demo_config(groups=True, full=True)


def test_an_unknown_shipped_generator_names_the_shipped_ones():
    from synaug.generate.loading import load_generator

    with pytest.raises(SynaugError, match=r"no shipped generator 'nope' .*\(shipped: .*fashion-mnist"):
        load_generator("embedded:nope")


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory) -> Path:
    """A tiny random transformers ResNet saved to disk, standing in for the configs' pretrained ResNet-50."""
    return save_backbone(tmp_path_factory.mktemp("backbone") / "resnet", "resnet", channels=3)


def _shipped(name: str, root: Path, backbone: Path, **data) -> dict:
    """A shipped SD config on fake data: the fake generator, 16 px, one epoch, the six recipes, the
    configs' pretrained backbone replaced by a tiny random one (resized to 24 px inside the model)."""
    values = load_yaml(CONFIGS / name)
    assert values["train"]["model"] == "hf:microsoft/resnet-50"
    values["data"].update(root=str(root), size=16, **data)
    values["generator"].update(spec=FAKE, device="cpu", batch_size=64)
    values["train"].update(model=f"hf:{backbone}", resolution=24, epochs=1, warmup_epochs=0, batch_size=16, num_workers=0, device="cpu")
    values["crt"].update(epochs=1)
    values["dfr"].update(retrains=2)
    values["runs"].update(seeds=[0])
    return values


def test_waterbirds_config_runs_on_a_fake_wilds_folder(tmp_path, tiny_backbone):
    root = tmp_path / "waterbirds"
    rows = ["img_id,img_filename,y,split,place,place_filename"]
    rng = np.random.default_rng(0)
    # train (split 0): landbirds mostly on land, waterbirds mostly on water; val (1) and test (2): 2 per (bird, place) cell
    balanced = [(y, place) for y in (0, 1) for place in (0, 1)] * 2
    splits = {0: [(0, 0)] * 6 + [(0, 1)] + [(1, 1)] * 4 + [(1, 0)], 1: balanced, 2: balanced}
    for split, members in splits.items():
        for y, place in members:
            name = f"{'001.Albatross' if y else '010.Blackbird'}/{len(rows)}.jpg"
            write_image(root / name, size=(20, 20), color=tuple(int(c) for c in rng.integers(0, 256, 3)))
            rows.append(f"{len(rows)},{name},{y},{split},{place},/x/{len(rows)}.jpg")
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    values = _shipped("waterbirds-sd.yaml", root, tiny_backbone)
    values["output"] = str(tmp_path / "out")
    result = run(values, "waterbirds-sd.yaml")

    assert [r.recipe for r in result.runs] == list(GROUP_RECIPES)
    report = result.runs[0].metrics["group_report"]
    assert [g["name"] for g in report["groups"]] == ["landbird/land", "landbird/water", "waterbird/land", "waterbird/water"]
    assert [g["train_count"] for g in report["groups"]] == [6, 1, 1, 4] and report["fairness"]["method"].startswith("binary")
    assert {r.recipe: r.sample_counts["synthetic"] for r in result.runs}["synaug_group"] == 4 * 6 - 12
    plan = next(json.loads(p.read_text()) for p in (tmp_path / "out" / "stages").glob("plan-*/plan.json") if json.loads(p.read_text())["group_names"])
    store = next(p for p in (tmp_path / "out" / "stages").glob("generate-*/store") if (p / "store.json").is_file())
    assert plan["prompt_names"] == ["land bird", "water bird"] and plan["group_prompt_names"] == ["forest", "lake"]
    assert store.is_dir() and "group_accuracy.png" in {p.name for p in (tmp_path / "out" / "report").iterdir()}


def test_utkface_config_runs_on_fake_face_files(tmp_path, tiny_backbone):
    root = tmp_path / "utkface"
    rng = np.random.default_rng(0)
    for split, per_cell in (("train", None), ("val", 2), ("test", 1)):
        for gender in (0, 1):
            for race in range(5):
                count = per_cell or (3 if race == 0 else 1)  # train: many White faces, one of every other cell
                for i in range(count):
                    name = f"{20 + i}_{gender}_{race}_2017011{gender}{race}{i:02d}.jpg.chip.jpg"
                    write_image(root / split / name, size=(20, 20), color=tuple(int(c) for c in rng.integers(0, 256, 3)))
    (root / "train" / "31_1_2017.jpg.chip.jpg").write_bytes(b"")  # a malformed name, skipped as the config says
    values = _shipped("utkface-sd.yaml", root, tiny_backbone)
    values["runs"]["recipes"] = ["erm", "synaug_group", "dfr"]
    values["output"] = str(tmp_path / "out")
    with pytest.warns(UserWarning, match="skipped 1 UTKFace files"):
        result = run(values, "utkface-sd.yaml")

    report = result.runs[0].metrics["group_report"]
    assert [g["name"] for g in report["groups"]][:2] == ["male/White", "male/Black"] and len(report["groups"]) == 10
    assert report["fairness"]["method"].startswith("binary") and {g["group"] for g in report["fairness"]["by_group"]} == {
        "White", "Black", "Asian", "Indian", "Others",
    }
    plan = next(json.loads(p.read_text()) for p in (tmp_path / "out" / "stages").glob("plan-*/plan.json"))
    assert plan["prompt_names"] == ["man", "woman"] and "Hispanic or Middle Eastern" in plan["group_prompt_names"]
    assert result.runs[1].sample_counts == {"real": 14, "synthetic": 2 * 5 * 3 - 14}


@pytest.mark.parametrize("kind", ["nico", "imagefolder"])
def test_nico_and_csv_grouped_folders_load_as_group_data(tmp_path, kind):
    root = tmp_path / "data"
    rows = {split: ["path,group"] for split in ("train", "val", "test")}
    for split in rows:
        for cls in ("cat", "dog"):
            for context in ("grass", "snow"):
                for i in range(2 if split == "train" else 1):
                    relative = f"{context}/{cls}/{i}.png" if kind == "nico" else f"{cls}/{context}-{i}.png"
                    write_image(root / split / relative)
                    rows[split].append(f"{relative},{context}")
    data = {"kind": kind, "root": str(root), "longtail": None, "size": 8, "val_split": "val"}
    if kind == "imagefolder":
        for split, lines in rows.items():
            (tmp_path / f"{split}.csv").write_text("\n".join(lines) + "\n")
        data.update(groups_csv=str(tmp_path / "train.csv"), val_groups_csv=str(tmp_path / "val.csv"), test_groups_csv=str(tmp_path / "test.csv"))
    config = parse_run_config(tiny_config(tmp_path / "out", data=data, runs={"recipes": ["synaug_group", "dfr"]}))
    for stage in ("data", "plan"):
        run_pipeline(config, stage=stage, config_name="c.yaml", config_text="", command=f"synaug run c.yaml --stage {stage}", progress=False)
    data_folder = next((tmp_path / "out" / "stages").glob("data-*"))
    train = load_index(data_folder / "train-index.json").load()
    assert train.group_names == ["grass", "snow"] and train.cell_counts().tolist() == [[2, 2], [2, 2]]
    assert json.loads((data_folder / "stage.json").read_text())["inputs"]["val"]["split"] == "val"
    (plan,) = (tmp_path / "out" / "stages").glob("plan-*/plan.json")
    assert json.loads(plan.read_text())["synthetic_counts"] == [[0, 0], [0, 0]]  # every cell already holds 2
