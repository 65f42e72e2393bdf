"""Synthesis plans: strategies (hand-checked counts), prompts, seeds, JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from synaug.data.dataset import LabeledImages
from synaug.errors import SynaugError
from synaug.plan import SynthesisPlan, derive_seed, make_plan, parse_name_overrides, plan_for_dataset, split_budget

NAMES = ["cat", "dog", "owl", "eel"]
COUNTS = [10, 6, 3, 1]


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# ---- strategies --------------------------------------------------------------------
def test_fill_to_max_fills_every_class_to_the_largest():
    plan = make_plan(COUNTS, NAMES)
    assert plan.synthetic_counts.tolist() == [0, 4, 7, 9]
    assert plan.total == 20
    assert (plan.real_counts + plan.synthetic_counts).tolist() == [10, 10, 10, 10]


def test_fill_to_n_gives_nothing_to_classes_at_or_above_n():
    plan = make_plan(COUNTS, NAMES, "fill-to", target=6)
    assert plan.synthetic_counts.tolist() == [0, 0, 3, 5]


def test_budget_is_split_by_deficit_with_largest_remainders():
    # deficits 0, 4, 7, 9 (sum 20); budget 10 -> exact shares 0, 2, 3.5, 4.5;
    # floors 0, 2, 3, 4 leave 1 image, which goes to the tie 3.5 / 4.5 at the lower index
    plan = make_plan(COUNTS, NAMES, "budget", budget=10)
    assert plan.synthetic_counts.tolist() == [0, 2, 4, 4]
    assert plan.total == 10


@pytest.mark.parametrize("budget", [0, 1, 7, 19, 20, 21, 333])
def test_budget_counts_always_sum_exactly(budget):
    shares = split_budget(budget, np.array([0, 4, 7, 9]))
    assert shares.sum() == budget
    exact = budget * np.array([0, 4, 7, 9]) / 20
    assert np.all(np.abs(shares - exact) < 1)


def test_budget_remainders_go_to_largest_fraction_not_largest_deficit():
    # deficits 1, 2: budget 2 -> exact 0.667, 1.333 -> floors 0, 1; one left, fraction .667 wins
    assert split_budget(2, np.array([1, 2])).tolist() == [1, 1]


def test_budget_on_a_balanced_dataset_is_an_error():
    with pytest.raises(SynaugError) as error:
        make_plan([5, 5], ["a", "b"], "budget", budget=3)
    assert "fill-to" in one_line(error)


def test_final_counts_mapping_like_imbalanced_learn():
    plan = make_plan(COUNTS, NAMES, {"owl": 8, "eel": 2})
    assert plan.synthetic_counts.tolist() == [0, 0, 5, 1]
    assert plan.strategy == "final-counts"


def test_final_count_below_real_count_names_class_and_counts():
    with pytest.raises(SynaugError) as error:
        make_plan(COUNTS, NAMES, {"dog": 4})
    message = one_line(error)
    assert "'dog'" in message and "6" in message and "4" in message


def test_plan_naming_a_class_the_dataset_lacks_is_a_one_line_error():
    with pytest.raises(SynaugError) as error:
        make_plan(COUNTS, NAMES, {"zebra": 20})
    message = one_line(error)
    assert "zebra" in message and "cat, dog, owl, eel" in message


@pytest.mark.parametrize(
    "strategy, options, needle",
    [
        ("fill-to", {}, "--target"),
        ("budget", {}, "--budget"),
        ("fill-to-max", {"target": 3}, "drop --target"),
        ("fill-to-max", {"budget": 3}, "drop --budget"),
        ("fill-up", {}, "fill-to-max, fill-to, budget, class-only"),
    ],
)
def test_strategy_parameters_are_checked(strategy, options, needle):
    with pytest.raises(SynaugError) as error:
        make_plan(COUNTS, NAMES, strategy, **options)
    assert needle in one_line(error)


# ---- group cells -------------------------------------------------------------------
CELLS = [[8, 2], [1, 3]]


def test_fill_to_max_on_cells_fills_every_cell_to_the_largest_cell():
    plan = make_plan(CELLS, ["cat", "dog"], group_names=["land", "water"])
    assert plan.synthetic_counts.tolist() == [[0, 6], [7, 5]]
    items = list(plan.rows())
    assert len(items) == 18
    assert items[0].prompt == "a photo of a cat, water"  # default group template has the context
    assert {(i.class_id, i.group_id) for i in items} == {(0, 1), (1, 0), (1, 1)}


def test_class_only_ignores_groups():
    plan = make_plan(CELLS, ["cat", "dog"], "class-only", group_names=["land", "water"])
    assert plan.group_names is None
    assert plan.real_counts.tolist() == [10, 4]
    assert plan.synthetic_counts.tolist() == [0, 6]
    assert {item.prompt for item in plan.rows()} == {"a photo of a dog"}
    assert all(item.group_id is None for item in plan.rows())


def test_class_only_rejects_a_group_field_in_templates():
    with pytest.raises(SynaugError) as error:
        make_plan(CELLS, ["cat", "dog"], "class-only", group_names=["land", "water"], templates=["a {class} on {context}"])
    assert "no groups" in one_line(error)


def test_final_counts_for_cells_take_class_group_pairs():
    plan = make_plan(CELLS, ["cat", "dog"], {("dog", "land"): 4}, group_names=["land", "water"])
    assert plan.synthetic_counts.tolist() == [[0, 0], [3, 0]]


def test_plan_for_dataset_uses_cells_resolution_and_channels():
    data = LabeledImages(
        labels=np.array([0, 0, 0, 1]),
        class_names=["cat", "dog"],
        images=torch.zeros(4, 1, 5, 7, dtype=torch.uint8),
        groups=np.array([0, 0, 1, 1]),
        group_names=["land", "water"],
    )
    plan = plan_for_dataset(data)
    assert plan.real_counts.tolist() == [[2, 1], [0, 1]]
    assert plan.synthetic_counts.tolist() == [[0, 1], [2, 1]]
    assert plan.image_size == (5, 7) and plan.channels == 1
    assert plan_for_dataset(data, "class-only").synthetic_counts.tolist() == [0, 2]


# ---- prompts -----------------------------------------------------------------------
def test_templates_rotate_by_index_and_prompt_names_override():
    plan = make_plan([3, 0], ["T-shirt/top", "Bag"], templates=["a photo of a {class}", "a {class}, studio"],
                     class_prompt_names={"T-shirt/top": "t-shirt"})
    prompts = [item.prompt for item in plan.rows()]
    assert prompts == ["a photo of a Bag", "a Bag, studio", "a photo of a Bag"]
    assert plan.prompt(0, None, 1) == "a t-shirt, studio"


def test_unknown_template_field_names_the_valid_fields():
    with pytest.raises(SynaugError) as error:
        make_plan(COUNTS, NAMES, templates=["a photo of a {klass}"])
    message = one_line(error)
    assert "{klass}" in message and "{class}" in message


def test_a_template_without_the_class_is_an_error():
    with pytest.raises(SynaugError) as error:
        make_plan(COUNTS, NAMES, templates=["a photo of a {class}", "a photo"])
    assert "'a photo' has no {class}" in one_line(error) and "'a photo of a {class}'" in one_line(error)


def test_positional_and_malformed_templates_are_errors():
    with pytest.raises(SynaugError):
        make_plan(COUNTS, NAMES, templates=["a photo of a {}"])
    with pytest.raises(SynaugError) as error:
        make_plan(COUNTS, NAMES, templates=["a photo of a {class"])
    assert "malformed" in one_line(error)


def test_prompt_name_for_an_unknown_class_is_an_error():
    with pytest.raises(SynaugError) as error:
        make_plan(COUNTS, NAMES, class_prompt_names={"horse": "pony"})
    assert "horse" in one_line(error)


def test_parse_name_overrides():
    assert parse_name_overrides(["T-shirt/top=t-shirt", "Ankle boot = boot"]) == {"T-shirt/top": "t-shirt", "Ankle boot": "boot"}
    with pytest.raises(SynaugError) as error:
        parse_name_overrides(["just-a-name"])
    assert "CLASS=NAME" in one_line(error)


# ---- identity, seeds, files -------------------------------------------------------------
def test_digest_is_stable_and_covers_what_determines_images():
    plan = make_plan([5, 3, 1], ["a", "b", "c"], seed=7, templates=["a photo of a {class}"])
    assert plan.digest() == "ab2a68b967583c9e"  # changes only if the hashed content changes
    assert make_plan([5, 3, 1], ["a", "b", "c"], seed=8).digest() != plan.digest()
    assert make_plan([5, 3, 1], ["a", "b", "c"], seed=7, templates=["a {class}"]).digest() != plan.digest()
    assert make_plan([5, 3, 1], ["a", "b", "c"], seed=7, image_size=(8, 8)).digest() != plan.digest()
    # a different route to the same images has the same digest
    assert make_plan([5, 3, 1], ["a", "b", "c"], {"b": 5, "c": 5}, seed=7).digest() == plan.digest()


def test_json_round_trip_and_file(tmp_path):
    plan = make_plan(CELLS, ["cat", "dog"], "fill-to", target=5, group_names=["land", "water"], negative_prompt="blurry",
                     seed=3, image_size=(32, 32), channels=3, class_prompt_names={"cat": "kitten"})
    again = SynthesisPlan.from_json(plan.to_json())
    assert again.to_dict() == plan.to_dict()
    assert [i.prompt for i in again.rows()] == [i.prompt for i in plan.rows()]
    path = plan.save(tmp_path / "sub" / "plan.json")
    assert SynthesisPlan.load(path).digest() == plan.digest()
    assert json.loads(path.read_text())["digest"] == plan.digest()
    assert [p.name for p in path.parent.iterdir()] == ["plan.json"]  # no temp file left


@pytest.mark.parametrize("text, needle", [("{", "not valid JSON"), ("[1]", "not a synaug plan"), ('{"synaug_plan": 1}', "lacks")])
def test_bad_plan_files_are_one_line_errors(tmp_path, text, needle):
    path = tmp_path / "plan.json"
    path.write_text(text)
    with pytest.raises(SynaugError) as error:
        SynthesisPlan.load(path)
    assert needle in one_line(error)
    with pytest.raises(SynaugError) as error:
        SynthesisPlan.load(tmp_path / "missing.json")
    assert "synaug plan --out" in one_line(error)


def test_check_dataset_names_the_missing_class():
    plan = make_plan(COUNTS, NAMES)
    plan.check_dataset(["eel", "owl", "dog", "cat", "extra"])
    with pytest.raises(SynaugError) as error:
        plan.check_dataset(["cat", "dog", "owl"])
    assert "'eel'" in one_line(error)


def test_seeds_derive_from_run_seed_class_group_index_attempt():
    assert derive_seed(0, 0, None, 0, 0) == 4334430513956379144
    seeds = {derive_seed(run, c, g, i, a) for run in (0, 1) for c in (0, 1) for g in (None, 0, 1) for i in (0, 1) for a in (0, 1)}
    assert len(seeds) == 2 * 2 * 3 * 2 * 2
    assert all(0 <= s < 2**63 for s in seeds)
    plan = make_plan(COUNTS, NAMES, seed=5)
    item = next(plan.rows())
    assert plan.seed_for(item, 1) == derive_seed(5, item.class_id, None, item.index, 1)
