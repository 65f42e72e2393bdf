"""Prompt diversity: the built-in template sets and descriptions files, in the API, the manifest and `synaug plan`."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_writers import write_fashion_mnist
from fake_generator import FakeGenerator
from synaug.cli import main
from synaug.errors import SynaugError
from synaug.generate.runner import generate_plan
from synaug.generate.store import SyntheticStore
from synaug.plan import MODIFIERS, TEMPLATE_SETS, SynthesisPlan, make_plan, read_descriptions, template_set

NAMES = ["T-shirt/top", "Bag", "Sandal"]
COUNTS = [6, 2, 3]
DESCRIPTIONS = """\
# prompts an LLM wrote
Bag: a leather handbag with a gold clasp
Bag: a canvas tote bag

T-shirt/top: a plain white cotton t-shirt
Sandal: a brown sandal with thin straps
Sandal: a rubber beach sandal
Sandal: a sandal with a cork sole, product photo: side view
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_template_sets_are_documented_sizes_and_the_default_is_unchanged():
    assert len(TEMPLATE_SETS["plain"]) == 5 and len(MODIFIERS) == 20
    assert template_set("modifier")[:2] == ["a photo of a small {class}", "a photo of a large {class}"]
    assert all(t.endswith(", {context}") for t in template_set("plain", with_groups=True))
    assert make_plan(COUNTS, NAMES).prompt(1, None, 0) == "a photo of a Bag"


def test_modifier_set_rotates_the_modifiers_and_changes_the_digest():
    plan = make_plan(COUNTS, NAMES, template_set="modifier")
    assert [plan.prompt(2, None, i) for i in (0, 1, 2, 20)] == [
        "a photo of a small Sandal", "a photo of a large Sandal", "a photo of an old Sandal", "a photo of a small Sandal",
    ]
    assert plan.prompt_count(2) == 20
    assert plan.digest() != make_plan(COUNTS, NAMES).digest()
    grouped = make_plan([[3, 1], [1, 1], [2, 2]], NAMES, group_names=["land", "water"], template_set="plain")
    assert grouped.prompt(1, 1, 3) == "an image of a Bag, water"


def test_descriptions_file_rotates_per_class_word_for_word_and_lands_in_the_manifest(tmp_path):
    path = write(tmp_path / "descriptions.txt", DESCRIPTIONS)
    plan = make_plan(COUNTS, NAMES, descriptions=path, image_size=(6, 6), channels=1)
    assert [plan.prompt(2, None, i) for i in range(4)] == [
        "a brown sandal with thin straps", "a rubber beach sandal", "a sandal with a cork sole, product photo: side view",
        "a brown sandal with thin straps",
    ]
    assert plan.prompt_count(1) == 2
    again = SynthesisPlan.from_json(plan.to_json())
    assert again.descriptions == plan.descriptions and again.digest() == plan.digest()
    assert make_plan(COUNTS, NAMES, descriptions=read_descriptions(path, NAMES), image_size=(6, 6), channels=1).digest() == plan.digest()
    store = SyntheticStore(tmp_path / "store")
    generate_plan(plan, FakeGenerator(), store, progress=False)
    manifest = store.manifest()
    assert len(manifest) == plan.total == 7
    assert all(row.prompt == plan.prompt(row.class_id, None, row.index) for row in manifest.itertuples())
    assert set(manifest["prompt"]) == {"a leather handbag with a gold clasp", "a canvas tote bag", "a brown sandal with thin straps",
                                       "a rubber beach sandal", "a sandal with a cork sole, product photo: side view"}


def test_the_over_sampler_takes_a_descriptions_file(tmp_path):
    import numpy as np
    import torch

    from synaug import SyntheticOverSampler
    from synaug.data.dataset import LabeledImages

    labels = np.repeat(np.arange(3), COUNTS)
    data = LabeledImages(labels=labels, class_names=NAMES, images=torch.zeros(len(labels), 1, 6, 6, dtype=torch.uint8), channels=1)
    sampler = SyntheticOverSampler("embedded", descriptions=write(tmp_path / "d.txt", DESCRIPTIONS), store=tmp_path / "s")
    plan = sampler.make_plan(data)
    assert plan.prompt(1, None, 1) == "a canvas tote bag" and plan.total == 7
    with pytest.raises(SynaugError, match="descriptions"):
        SyntheticOverSampler("embedded", descriptions=3, store=tmp_path / "s").make_plan(data)


def test_cell_descriptions_and_class_names_holding_a_colon(tmp_path):
    names = ["cat: tabby", "dog"]
    text = "cat: tabby | indoor: a tabby on a sofa\ncat: tabby | outdoor: a tabby in grass\ndog|indoor: a dog on a rug\ndog | outdoor: a dog in a park\n"
    path = write(tmp_path / "d.txt", text + "dog: a dog\ncat: tabby: a tabby cat\n")  # class lines too, for a class-only plan
    plan = make_plan([[1, 3], [2, 2]], names, group_names=["indoor", "outdoor"], descriptions=path)
    assert plan.prompt(0, 0, 0) == "a tabby on a sofa" and plan.prompt(1, 0, 0) == "a dog on a rug"
    assert set(plan.descriptions) == {"cat: tabby | indoor", "cat: tabby | outdoor", "dog | indoor", "dog | outdoor"}
    class_only = make_plan([[1, 3], [2, 2]], names, "class-only", group_names=["indoor", "outdoor"], descriptions=path)
    assert [class_only.prompt(c, None, 0) for c in (0, 1)] == ["a tabby cat", "a dog"]


@pytest.mark.parametrize(
    "text, needle",
    [
        ("Bga: a bag\n", "names class 'Bga', which the dataset does not have; did you mean 'Bag'?"),
        ("Bag: a bag\nSandal: a sandal\n", "no prompt for 'T-shirt/top'; add a line 'T-shirt/top: <prompt>'"),
        ("Bag | beach: a bag\n", "has only 'CLASS | GROUP: prompt' lines, but the plan is per class; add lines such as 'T-shirt/top: <prompt>'"),
        ("Bag | beach | sand: a bag\n", "more than one '|'"),
        ("Bag a bag\n", "line 1 is not 'CLASS: prompt'"),
        ("Bag:\n", "'Bag' has an empty prompt"),
        ("# nothing yet\n", "holds no prompt"),
    ],
)
def test_bad_descriptions_files_are_one_line_errors(tmp_path, text, needle):
    with pytest.raises(SynaugError) as error:
        make_plan(COUNTS, NAMES, descriptions=write(tmp_path / "d.txt", text))
    assert needle in one_line(error)


def test_cell_plans_need_cell_lines_and_other_prompt_errors(tmp_path):
    path = write(tmp_path / "d.txt", DESCRIPTIONS)
    with pytest.raises(SynaugError, match="has only 'CLASS: prompt' lines, but the plan is per class x group cell"):
        make_plan([[1, 2]] * 3, NAMES, group_names=["a", "b"], descriptions=path)
    with pytest.raises(SynaugError, match="names group 'c', which the dataset does not have; valid groups: a, b"):
        make_plan([[1, 2]] * 3, NAMES, group_names=["a", "b"], descriptions={"Bag | c": "a bag"})
    with pytest.raises(SynaugError, match="not both templates and descriptions"):
        make_plan(COUNTS, NAMES, templates=["a {class}"], descriptions=path)
    with pytest.raises(SynaugError, match="unknown template set 'fancy'; use one of plain, modifier"):
        make_plan(COUNTS, NAMES, template_set="fancy")
    with pytest.raises(SynaugError, match="does not exist"):
        make_plan(COUNTS, NAMES, descriptions=tmp_path / "missing.txt")


def test_synaug_plan_takes_template_set_and_descriptions(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SYNAUG_FASHION_MNIST", str(write_fashion_mnist(tmp_path / "fashion", train_per_class=20, test_per_class=2)))
    common = ["plan", "--longtail", "5", "--max-per-class", "5"]
    assert main([*common, "--template-set", "modifier", "--out", str(tmp_path / "m.json")]) == 0
    assert SynthesisPlan.load(tmp_path / "m.json").templates == template_set("modifier")
    classes = SynthesisPlan.load(tmp_path / "m.json").class_names
    lines = "".join(f"{name}: a studio photo of one {name.lower()}\n" for name in classes)
    config = write(tmp_path / "plan.yaml", f"descriptions: {write(tmp_path / 'd.txt', lines)}\n")
    assert main([*common, "--config", str(config), "--out", str(tmp_path / "d.json")]) == 0
    assert SynthesisPlan.load(tmp_path / "d.json").prompt(0, None, 0) == f"a studio photo of one {classes[0].lower()}"
    capsys.readouterr()
    write(tmp_path / "d.txt", lines.replace(classes[-1], "Boot", 1))
    assert main([*common, "--config", str(config), "--out", str(tmp_path / "e.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: descriptions file") and "'Boot'" in err and "\n" not in err
    assert not (tmp_path / "e.json").exists()
