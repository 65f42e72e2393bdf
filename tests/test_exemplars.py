"""Exemplar choice: the seeded rule per class (or cell), the manifest's ``exemplar`` column, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fake_generator import FakeGenerator
from synaug.data.dataset import LabeledImages
from synaug.errors import SynaugError
from synaug.generate.exemplars import DEFAULT_STRENGTH, ExemplarPicker, check_exemplar_source, check_strength
from synaug.generate.runner import generate_plan
from synaug.generate.store import SyntheticStore
from synaug.plan import make_plan


class Recording(FakeGenerator):
    """Records the exemplars of each call; the images carry no trace of them."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.exemplars: list[torch.Tensor] = []

    def generate(self, prompts, seeds, **kwargs):
        self.exemplars.append(kwargs["reference_images"])
        return super().generate(prompts, seeds, **kwargs)


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def numbered(labels, class_names, groups=None, group_names=None, synthetic=None) -> LabeledImages:
    """In-memory 1x4x4 images whose pixels hold their own position, so an exemplar names itself."""
    count = len(labels)
    images = torch.arange(count, dtype=torch.uint8).view(count, 1, 1, 1).expand(count, 1, 4, 4).contiguous()
    return LabeledImages(labels=np.array(labels), class_names=class_names, images=images, groups=groups,
                         group_names=group_names, is_synthetic=synthetic)


def test_every_real_image_of_a_class_serves_in_turn_in_a_seeded_order(tmp_path):
    real = numbered([0] * 9 + [1] * 3, ["cat", "dog"])
    plan = make_plan([9, 3], ["cat", "dog"], image_size=(4, 4), channels=1, seed=7)  # dog gets 6 images
    generator = Recording(batch_size=4)
    generate_plan(plan, generator, SyntheticStore(tmp_path / "s"), reference_images=real, progress=False)
    used = [int(image.flatten()[0]) for batch in generator.exemplars for image in batch]
    assert sorted(used[:3]) == [9, 10, 11] and used[3:] == used[:3]  # each of the 3 dogs twice, in one order
    manifest = SyntheticStore(tmp_path / "s").manifest().sort_values("index")
    assert manifest["exemplar"].tolist() == [str(p) for p in used]
    orders = {tuple(ExemplarPicker(make_plan([9, 3], ["cat", "dog"], seed=seed), real).pools[(1, -1)]) for seed in range(6)}
    assert len(orders) > 1  # the plan's seed decides the order


def test_a_smaller_plan_of_the_same_seed_takes_a_prefix_of_the_exemplars():
    real = numbered([0] * 10 + [1] * 4, ["cat", "dog"])
    full = make_plan([10, 4], ["cat", "dog"], seed=3)
    budget = make_plan([10, 4], ["cat", "dog"], "budget", budget=3, seed=3)
    items = {item.key: item for item in full.rows()}
    small = ExemplarPicker(budget, real)
    large = ExemplarPicker(full, real)
    assert all(small.position(item) == large.position(items[item.key]) for item in budget.rows())


def test_cells_draw_from_their_own_group_and_synthetic_images_never_serve():
    real = numbered([0, 0, 0, 1, 1], ["cat", "dog"], groups=np.array([0, 1, 1, 0, 1]), group_names=["land", "water"],
                    synthetic=np.array([False, False, True, False, False]))
    plan = make_plan(np.array([[1, 2], [1, 1]]), ["cat", "dog"], "fill-to", target=3, group_names=["land", "water"])
    picker = ExemplarPicker(plan, real)
    assert {picker.position(item) for item in plan.rows() if (item.class_id, item.group_id) == (0, 1)} == {1}
    assert {picker.position(item) for item in plan.rows() if (item.class_id, item.group_id) == (1, 0)} == {3}


def test_file_backed_exemplars_are_recorded_by_their_file(tmp_path):
    files = []
    for i, label in enumerate([0, 1, 1]):
        files.append(tmp_path / f"real{i}.png")
        Image.fromarray(np.full((4, 4), 10 * i, dtype=np.uint8)).save(files[-1])
    real = LabeledImages(labels=np.array([0, 1, 1]), class_names=["cat", "dog"], files=files, size=(4, 4), channels=1)
    plan = make_plan([1, 2], ["cat", "dog"], "fill-to", target=4, image_size=(4, 4), channels=1)
    generate_plan(plan, FakeGenerator(), SyntheticStore(tmp_path / "s"), reference_images=real, progress=False)
    manifest = SyntheticStore(tmp_path / "s").manifest()
    assert set(manifest["exemplar"]) <= {str(f) for f in files} and manifest["exemplar"].notna().all()
    assert set(manifest.loc[manifest["class_name"] == "dog", "exemplar"]) == {str(files[1]), str(files[2])}


def test_text_only_rows_have_no_exemplar_and_the_rule_is_part_of_the_store(tmp_path):
    plan = make_plan([2, 1], ["cat", "dog"], image_size=(4, 4), channels=1)
    generate_plan(plan, FakeGenerator(), SyntheticStore(tmp_path / "t"), progress=False)
    assert SyntheticStore(tmp_path / "t").manifest()["exemplar"].isna().all()
    generate_plan(plan, FakeGenerator(), SyntheticStore(tmp_path / "e"), reference_images=numbered([0, 1, 1], ["cat", "dog"]), progress=False)
    recorded = SyntheticStore(tmp_path / "e").info["settings"]["reference_images"]
    assert recorded["rule"] == "seeded-shuffle-per-cell" and recorded["count"] == 3


def test_a_class_without_real_images_is_a_one_line_error_before_any_image(tmp_path):
    plan = make_plan([2, 1], ["cat", "dog"], image_size=(4, 4), channels=1)
    all_synthetic_dogs = numbered([0, 0, 1], ["cat", "dog"], synthetic=np.array([False, False, True]))
    generator = Recording()
    with pytest.raises(SynaugError) as error:
        generate_plan(plan, generator, SyntheticStore(tmp_path / "s"), reference_images=all_synthetic_dogs, progress=False)
    assert "no real image of class 'dog' to serve as exemplar" in one_line(error)
    assert "generate from text only" in one_line(error)
    assert generator.exemplars == [] and not (tmp_path / "s").exists()


@pytest.mark.parametrize("strength", [0, -0.1, 1.5, float("nan"), "half"])
def test_a_strength_outside_zero_one_is_a_one_line_error(strength):
    with pytest.raises(SynaugError) as error:
        check_strength(strength)
    assert "must lie in (0, 1]" in one_line(error) and f"e.g. {DEFAULT_STRENGTH}" in one_line(error)


def test_strength_one_and_known_sources_pass():
    assert check_strength(1) == 1.0 and check_strength("0.3") == 0.3
    assert check_exemplar_source("real") == "real" and check_exemplar_source(None) is None
    with pytest.raises(SynaugError, match="use real"):
        check_exemplar_source("synthetic")


def test_the_over_sampler_takes_exemplars_from_the_dataset(tmp_path):
    import synaug

    real = numbered([0] * 5 + [1] * 2, ["cat", "dog"])
    sampler = synaug.SyntheticOverSampler(FakeGenerator(), exemplars=synaug.ExemplarSpec("real"), store=tmp_path / "s", progress=False)
    sampler.fit_resample(real)
    manifest = SyntheticStore(tmp_path / "s").manifest()
    assert len(manifest) == 3 and set(manifest["exemplar"]) == {"5", "6"}  # the two real dogs
    with pytest.raises(SynaugError) as error:
        synaug.SyntheticOverSampler(FakeGenerator(), exemplars=synaug.ExemplarSpec("real", strength=0.3), store=tmp_path / "t").fit_resample(real)
    assert "pass the generator as a spec string" in one_line(error)
    with pytest.raises(SynaugError) as error:
        synaug.ExemplarSpec(strength=0.3)
    assert "strength shapes how exemplars enter the images, and none are given" in one_line(error)
