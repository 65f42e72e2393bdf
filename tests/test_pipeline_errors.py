"""`synaug run` refuses bad input with one line: unknown keys, out-of-range values, missing
stage inputs, and synthetic stores made by another plan or generator."""

from __future__ import annotations

import json

import pytest
from fake_generator import FakeGenerator
from fixtures_generation import single_thread_torch  # noqa: F401  (fixture)
from pipeline_helpers import error_line, run_cli, stage_folders, tiny_config, tiny_fashion, write_config

from synaug.generate.runner import generate_plan
from synaug.generate.store import SyntheticStore
from synaug.plan import make_plan

pytestmark = pytest.mark.usefixtures("single_thread_torch")


@pytest.fixture
def fashion(tmp_path, monkeypatch):
    return tiny_fashion(tmp_path, monkeypatch)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"train": {"epoch": 3}}, "unknown key 'train.epoch'; did you mean 'epochs'?"),
        ({"data": {"longtail": {"imbalance_factr": 10}}}, "unknown key 'data.longtail.imbalance_factr'; did you mean 'imbalance_factor'?"),
        ({"generater": {}}, "unknown key 'generater'; did you mean 'generator'?"),
        ({"train": {"mixup_alpha": -0.5}}, "train: mixup_alpha must be a number >= 0"),
        ({"train": {"cutmix_alpha": float("inf")}}, "train: cutmix_alpha is inf; give a finite number"),
        ({"train": {"mix_prob": 1.5}}, "train: mix_prob must be a ratio in [0, 1]"),
        ({"runs": {"substitute_fraction": 0}}, "runs.substitute_fraction 0 must be a ratio in (0, 1]"),
        ({"runs": {"recipes": ["synaug", "orcale"]}}, "unknown recipe 'orcale' in runs.recipes (did you mean 'oracle'?)"),
        ({"generator": {"steps": "many"}}, "generator.steps must be an integer or null, not 'many'"),
        ({"plan": {"strategy": "budget"}}, "plan.strategy budget needs plan.budget"),
    ],
)
def test_bad_config_is_one_line_before_any_work(tmp_path, capsys, change, expected):
    out = tmp_path / "out"
    config = write_config(tmp_path / "bad.yaml", tiny_config(out, **change))
    line = error_line(capsys, "run", config)
    assert line.startswith(f"error: {config}: ") and expected in line
    assert not out.exists()


def test_a_data_root_that_does_not_exist_is_named(tmp_path, capsys):
    missing = tmp_path / "no-such-folder"
    config = write_config(tmp_path / "folder.yaml", tiny_config(tmp_path / "out", data={"kind": "imagefolder", "root": str(missing), "size": 28}))
    assert f"{config}: data.root {missing} does not exist; fix the path" in error_line(capsys, "run", config, "--no-progress")


def test_a_stage_whose_input_is_missing(fashion, tmp_path, capsys):
    config = write_config(tmp_path / "tiny.yaml", tiny_config(tmp_path / "out"))
    assert "data" in error_line(capsys, "run", config, "--stage", "plan")
    assert run_cli(capsys, "run", config, "--stage", "data", "--no-progress")[0] == 0
    assert run_cli(capsys, "run", config, "--stage", "plan", "--no-progress")[0] == 0
    line = error_line(capsys, "run", config, "--stage", "train")
    assert "needs the 'generate' stage's output (synthetic images)" in line
    assert f"run `synaug run {config} --stage generate` first" in line
    assert set(stage_folders(tmp_path / "out")) == {"data", "plan"}
    assert "unknown stage 'trian'; choose one of data, plan" in error_line(capsys, "run", config, "--stage", "trian")
    fresh = tmp_path / "fresh"
    assert f"run `synaug run {config} --stage data --out {fresh}` first" in error_line(capsys, "run", config, "--stage", "train", "--out", fresh)


def test_a_store_of_another_plan_is_refused_with_the_config_named(fashion, tmp_path, capsys):
    out = tmp_path / "out"
    first = write_config(tmp_path / "first.yaml", tiny_config(out))
    assert run_cli(capsys, "run", first, "--stage", "data", "--no-progress")[0] == 0
    assert run_cli(capsys, "run", first, "--stage", "plan", "--no-progress")[0] == 0
    assert run_cli(capsys, "run", first, "--stage", "generate", "--no-progress")[0] == 0
    second = write_config(tmp_path / "second.yaml", tiny_config(out, plan={"templates": ["a sketch of a {class}"]}))
    assert run_cli(capsys, "run", second, "--stage", "plan", "--no-progress")[0] == 0
    line = error_line(capsys, "run", second, "--stage", "train")
    assert "was made by a different plan or generator" in line and f"than {second} asks for" in line
    assert "use a new output folder (--out)" in line


def test_an_external_store_of_another_plan_or_generator_is_refused(fashion, tmp_path, capsys):
    store = tmp_path / "store"
    other_plan = make_plan([3, 1], ["T-shirt/top", "Trouser"], "fill-to-max", image_size=(28, 28), channels=1)
    generate_plan(other_plan, FakeGenerator(), SyntheticStore(store), progress=False)
    config = write_config(tmp_path / "tiny.yaml", tiny_config(tmp_path / "out", generator={"store": str(store)}))
    line = error_line(capsys, "run", config, "--no-progress")
    assert f"store {store} (generator.store in {config}) was made by a different plan" in line
    assert "remove generator.store" in line and "new output folder" in line

    # a store made through generator.store is reused from another output folder, and refused for other settings
    own = tmp_path / "own-store"
    config = write_config(tmp_path / "own.yaml", tiny_config(tmp_path / "a", generator={"store": str(own)}, runs={"recipes": ["fill"]}))
    code, _, err = run_cli(capsys, "run", config, "--no-progress")
    assert code == 0 and "54 synthetic images, 1 epoch\n" in err  # not "1 epochs"
    assert run_cli(capsys, "run", config, "--out", tmp_path / "b", "--no-progress")[0] == 0
    (folder,) = stage_folders(tmp_path / "b")["generate"]
    record = json.loads((tmp_path / "b" / "stages" / folder / "stage.json").read_text())
    assert record["store"] == str(own) and record["generated"] == 0 and record["already_done"] == 54
    steps = write_config(tmp_path / "steps.yaml", tiny_config(tmp_path / "c", generator={"store": str(own), "steps": 3}, runs={"recipes": ["fill"]}))
    line = error_line(capsys, "run", steps, "--no-progress")
    assert f"store {own} (generator.store in {steps}) was made with other generator settings (steps: 1 -> 3), not as {steps} asks" in line


def test_a_long_tail_that_empties_a_class_names_it(fashion, tmp_path, capsys):
    config = write_config(tmp_path / "lt.yaml", tiny_config(tmp_path / "out", data={"longtail": {"imbalance_factor": 100, "max_per_class": 10}}))
    line = error_line(capsys, "run", config, "--no-progress")
    assert "leaves class 'Sandal' with no images" in line, line


def test_an_embedded_generator_asked_for_classes_it_never_saw_is_refused_unless_allowed(tmp_path, capsys):
    from data_writers import write_image
    from fixtures_generation import build_tiny_embedded

    generator = build_tiny_embedded(tmp_path / "tiny", class_names=["T-shirt/top", "Bag"])
    for name, count in (("bag", 4), ("zebra", 2)):
        for split, n in (("train", count), ("test", 1)):
            for i in range(n):
                write_image(tmp_path / "data" / split / name / f"{i}.png", size=(12, 12))
    values = tiny_config(
        tmp_path / "out", data={"kind": "imagefolder", "root": str(tmp_path / "data"), "size": 12, "channels": 1},
        generator={"spec": str(generator), "steps": 1}, runs={"recipes": ["synaug"], "seeds": [0]},
    )
    values["data"].pop("longtail")
    line = error_line(capsys, "run", write_config(tmp_path / "zebra.yaml", values), "--no-progress")
    assert "the prompts of zebra name none" in line and "generator.allow_unknown_classes: true" in line
    values["generator"]["allow_unknown_classes"] = True
    status, _, err = run_cli(capsys, "run", write_config(tmp_path / "zebra.yaml", values), "--no-progress")
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert status == 0, err
    assert len(warnings) == 1 and "the prompts of zebra name none" in warnings[0] and "drawing them anyway" in warnings[0]


def test_an_empty_config_is_refused(tmp_path, capsys):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    assert f"config file {empty} is empty; write a run config" in error_line(capsys, "run", empty)


def test_file_backed_data_without_a_size_names_the_images_size(tmp_path, capsys):
    from data_writers import write_image

    for name in ("a", "b"):
        for split in ("train", "test"):
            write_image(tmp_path / "data" / split / name / "0.png", size=(20, 12))
    values = tiny_config(tmp_path / "out", data={"kind": "imagefolder", "root": str(tmp_path / "data")})
    values["data"].pop("longtail")
    line = error_line(capsys, "run", write_config(tmp_path / "nosize.yaml", values), "--no-progress")
    assert "set data.size for file-backed data (its first image is 20 x 12: data.size 20 keeps that resolution)" in line, line
