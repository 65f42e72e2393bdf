"""The ablation set's training sets, built from small hand-made real and synthetic sets."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from synaug.data.dataset import LabeledImages
from synaug.errors import SynaugError
from synaug.pipeline.ablations import (
    GROUP_RECIPES,
    RECIPES,
    build_training_set,
    extra_counts,
    replace_class_ids,
    substitution_counts,
)

NAMES = ["big", "mid", "small"]
REAL_COUNTS = [8, 4, 1]


def images(counts: list[int], synthetic: bool, value: int) -> LabeledImages:
    """``counts[c]`` images of class c; pixel value ``value`` plus the position, so images are traceable."""
    labels = np.repeat(np.arange(len(counts)), counts)
    pixels = (value + np.arange(len(labels)))[:, None, None, None] * np.ones((1, 1, 2, 2))
    return LabeledImages(
        labels=labels, class_names=NAMES, images=torch.from_numpy(pixels.astype(np.uint8)),
        is_synthetic=np.full(len(labels), synthetic),
    )


@pytest.fixture
def sets():
    real = images(REAL_COUNTS, False, 0)
    fill = images([0, 4, 7], True, 100)  # fill-to-max: every class reaches 8
    extra = images([4, 2, 1], True, 200)  # extra_counts of replace ("small") and substitute (0.5)
    oracle = images([8, 8, 8], False, 50)
    return real, fill, extra, oracle


def composition(data: LabeledImages) -> tuple[list[int], list[int]]:
    real = np.bincount(data.labels[~data.is_synthetic], minlength=3).tolist()
    synthetic = np.bincount(data.labels[data.is_synthetic], minlength=3).tolist()
    return real, synthetic


def test_the_recipe_table():
    assert list(RECIPES) == [
        "ce", "ce_crt", "fill", "fill_mixup", "synaug", "replace", "substitute", "oracle", "fg", "fill_budget",
        "erm", "synaug_class", "synaug_group", "group_dro", "dfr", "synaug_dfr",
    ]
    assert [name for name, recipe in RECIPES.items() if recipe.groups] == list(GROUP_RECIPES) and GROUP_RECIPES[0] == "erm"
    cells = {name: (RECIPES[name].cells, RECIPES[name].crt, RECIPES[name].dfr) for name in ("synaug_class", "synaug_group", "synaug_dfr")}
    assert cells == {"synaug_class": ("class", True, False), "synaug_group": ("class-group", True, False), "synaug_dfr": ("class-group", False, True)}
    assert RECIPES["group_dro"].objective == "group_dro" and RECIPES["dfr"].dfr and RECIPES["erm"].training_set == "lt"
    synaug = RECIPES["synaug"]
    assert (synaug.training_set, synaug.mixup, synaug.crt) == ("fill", True, True)
    assert (RECIPES["ce_crt"].training_set, RECIPES["ce_crt"].crt, RECIPES["ce"].crt) == ("lt", True, False)
    assert not RECIPES["fill"].mixup and RECIPES["fill_mixup"].mixup and not RECIPES["oracle"].uses_synthetic
    fg = RECIPES["fg"]
    assert (fg.training_set, fg.mixup, fg.crt, fg.guided) == ("fill", True, True, True) and not synaug.guided
    control = RECIPES["fill_budget"]
    assert (control.training_set, control.mixup, control.crt, control.budgeted, control.guided) == ("fill", True, True, True, False)


def test_fill_and_oracle(sets):
    real, fill, extra, oracle = sets
    assert composition(build_training_set("lt", real)) == (REAL_COUNTS, [0, 0, 0])
    assert composition(build_training_set("fill", real, fill)) == (REAL_COUNTS, [0, 4, 7])
    assert build_training_set("oracle", real, oracle=oracle) is oracle


def test_class_only_synthetic_images_on_group_data_drop_the_unknown_groups(sets):
    real, fill, _, _ = sets
    grouped = dataclasses.replace(real, groups=np.arange(len(real)) % 2, group_names=["a", "b"])
    joined = build_training_set("fill", grouped, fill)
    assert joined.groups is None and composition(joined) == (REAL_COUNTS, [0, 4, 7])
    with_groups = dataclasses.replace(fill, groups=np.zeros(len(fill), dtype=int), group_names=["a", "b"])
    assert build_training_set("fill", grouped, with_groups).groups.tolist() == grouped.groups.tolist() + [0] * len(fill)


def test_replace_swaps_every_real_image_of_the_chosen_classes(sets):
    real, fill, extra, _ = sets
    data = build_training_set("replace", real, fill, extra, replace_ids=[2])
    assert composition(data) == ([8, 4, 0], [0, 4, 8])  # class counts equal fill's
    chosen = data.images[torch.from_numpy(data.labels == 2)][:, 0, 0, 0].tolist()
    assert sorted(chosen) == list(range(104, 111)) + [206]  # the 7 fill images + the first extra image of the class


def test_substitute_keeps_class_counts_with_a_smaller_real_share(sets):
    real, fill, extra, _ = sets
    assert substitution_counts(np.array(REAL_COUNTS), 0.5).tolist() == [4, 2, 1]  # halves round up
    data = build_training_set("substitute", real, fill, extra, fraction=0.5, seed=0)
    real_counts, synthetic_counts = composition(data)
    assert (real_counts, synthetic_counts) == ([4, 2, 0], [4, 4 + 2, 7 + 1])  # every class still at 8
    again = build_training_set("substitute", real, fill, extra, fraction=0.5, seed=0)
    assert torch.equal(again.images, data.images)  # the dropped real images depend on the seed only


def test_extra_counts_cover_the_selected_recipes():
    assert extra_counts([RECIPES["replace"], RECIPES["substitute"]], np.array(REAL_COUNTS), [2], 0.5).tolist() == [4, 2, 1]
    real = np.array([500, 64, 5])
    replace = [RECIPES["replace"]]
    substitute = [RECIPES["substitute"]]
    assert extra_counts(replace, real, [2], 0.5).tolist() == [0, 0, 5]
    assert extra_counts(substitute, real, [2], 0.5).tolist() == [250, 32, 3]
    assert extra_counts(replace + substitute, real, [1, 2], 0.5).tolist() == [250, 64, 5]
    assert extra_counts([RECIPES["synaug"]], real, [2], 0.5).tolist() == [0, 0, 0]


def test_replace_classes_by_shot_group_or_name():
    counts = np.array([500, 64, 5, 12])
    names = ["a", "b", "c", "d"]
    assert replace_class_ids("few", counts, names, 100, 20) == [2, 3]
    assert replace_class_ids("medium", counts, names, 100, 20) == [1]
    assert replace_class_ids(["d", "b"], counts, names, 100, 20) == [1, 3]
    with pytest.raises(SynaugError, match="names 'z', which the dataset does not have"):
        replace_class_ids(["z"], counts, names, 100, 20)
    with pytest.raises(SynaugError, match="names no class"):
        replace_class_ids("few", np.array([500, 400]), ["a", "b"], 100, 20)


def test_missing_inputs_are_one_line_errors(sets):
    real, fill, _, _ = sets
    with pytest.raises(SynaugError, match="needs the synthetic store"):
        build_training_set("fill", real)
    with pytest.raises(SynaugError, match="needs the extra synthetic store"):
        build_training_set("replace", real, fill, replace_ids=[2])
    with pytest.raises(SynaugError, match="balanced real set"):
        build_training_set("oracle", real)
