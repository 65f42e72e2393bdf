"""The exemplar-conditioned embedded generator: training from a text-only one, loading, the exemplar route, the gate."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fixtures_generation import build_tiny_embedded, single_thread_torch  # noqa: F401  (fixture)
from train_helpers import pattern_images

from synaug.errors import SynaugError
from synaug.generate.backends.embedded import EmbeddedBackend
from synaug.generate.loading import load_generator
from synaug.generators.check import GateThresholds, Oracle, check_generator, check_markdown
from synaug.generators.exemplar_model import (
    PROJECTION_FOLDER,
    ExemplarConditionedUNet,
    ExemplarProjection,
    encode_exemplars,
    exemplar_pairs,
)
from synaug.generators.training import GeneratorTrainConfig, train_generator
from synaug.train.trainer import TrainConfig, train_classifier

pytestmark = pytest.mark.usefixtures("single_thread_torch")


def tiny_config(**overrides) -> GeneratorTrainConfig:
    values = dict(
        block_out_channels=[8, 16], layers_per_block=1, norm_num_groups=4, steps=3, batch_size=8, checkpoint_every=1,
        warmup_steps=1, precision="fp32", device="cpu", sampler={"scheduler": "ddim", "steps": 3, "guidance_scale": 1.5},
    )
    values.update(overrides)
    return GeneratorTrainConfig(**values)


@pytest.fixture(scope="module")
def tiny_data():
    return pattern_images(6, size=12)


@pytest.fixture(scope="module")
def exemplar_model(tmp_path_factory, tiny_data):
    """A tiny exemplar-conditioned generator warm-started from a tiny text-only one, its exemplar pathway made non-zero."""
    root = tmp_path_factory.mktemp("exemplar-gen")
    text_only = train_generator(tiny_data, tiny_config(), root / "text", progress=False)
    folder = train_generator(
        tiny_data, tiny_config(exemplar_grid=3, exemplar_neighbours=2, init_from=str(text_only)), root / "exemplar", progress=False
    )
    projection = ExemplarProjection.from_pretrained(folder / PROJECTION_FOLDER)
    torch.manual_seed(0)
    torch.nn.init.normal_(projection.linear_2.weight, std=0.5)  # a few steps leave it near zero; make the exemplar matter
    projection.save_pretrained(folder / PROJECTION_FOLDER)
    return {"text": text_only, "exemplar": folder}


def test_the_exemplar_pathway_starts_at_zero_so_a_warm_start_is_exactly_the_text_only_model(tmp_path):
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(build_tiny_embedded(tmp_path / "g") / "unet").eval()
    model = ExemplarConditionedUNet(unet, ExemplarProjection(input_dim=9))
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([500, 20])
    caption = torch.randn(2, 384)
    exemplars = encode_exemplars(torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8), 3)
    with torch.no_grad():
        plain = unet(x, t, encoder_hidden_states=caption[:, None], class_labels=caption).sample
        joined = model(x, t, encoder_hidden_states=caption[:, None], class_labels=caption, exemplar_embeds=exemplars).sample
    assert torch.equal(plain, joined)
    # Bias-free: the all-zeros embedding (no exemplar) adds exactly nothing, whatever the weights.
    torch.nn.init.normal_(model.projection.linear_2.weight)
    assert torch.equal(model.projection(torch.zeros(2, 9)), torch.zeros(2, 384))


def test_training_pairs_are_other_images_of_the_same_class(tiny_data):
    images, labels = tiny_data.images, torch.as_tensor(tiny_data.labels)
    pairs = exemplar_pairs(images, labels, grid=3, neighbours=2)
    assert pairs.neighbours.shape == (len(images), 2) and pairs.embeddings.shape == (len(images), 9)
    for target, partners in enumerate(pairs.neighbours.tolist()):
        assert target not in partners and all(labels[p] == labels[target] for p in partners)
    with pytest.raises(SynaugError, match="too few for 6 exemplar neighbours each; lower --exemplar-neighbours"):
        exemplar_pairs(images, labels, grid=3, neighbours=6)


def test_export_records_the_encoder_and_the_generator_id_covers_the_projection(exemplar_model, tiny_data):
    folder = exemplar_model["exemplar"]
    meta = json.loads((folder / "synaug_generator.json").read_text())
    assert meta["exemplar"] == {"encoder": "pooled-pixels", "grid": 3}
    assert meta["training"]["config"]["init_from"] == str(exemplar_model["text"])
    backend = load_generator(str(folder), device="cpu", dtype="fp32")
    text = load_generator(str(exemplar_model["text"]), device="cpu", dtype="fp32")
    assert backend.generator_id != text.generator_id and backend.strength == 1.0
    assert backend.settings()["image_condition"] == {"kind": "exemplar-conditioned", "encoder": "pooled-pixels", "grid": 3}


def test_each_image_follows_its_own_exemplar_and_text_only_still_works(exemplar_model, tiny_data):
    backend = EmbeddedBackend.from_pretrained(exemplar_model["exemplar"], dtype="fp32", batch_size=4)
    prompts, seeds = ["a photo of a vertical"] * 4, [1, 2, 3, 4]
    references = tiny_data.images[:4]
    with_exemplars = backend.generate(prompts, seeds, reference_images=references).images
    text_only = backend.generate(prompts, seeds).images
    assert not torch.equal(with_exemplars, text_only)
    # An image depends on its own exemplar only, not on the others in its batch.
    single = EmbeddedBackend.from_pretrained(exemplar_model["exemplar"], dtype="fp32", batch_size=1)
    assert torch.equal(single.generate(prompts[:2], seeds[:2], reference_images=references[:2]).images, with_exemplars[:2])
    swapped = backend.generate(prompts, seeds, reference_images=references.flip(0)).images
    assert not torch.equal(swapped[0], with_exemplars[0])
    # Exemplars of another size are resized for the encoder, as img2img resizes them.
    bigger = torch.nn.functional.interpolate(references.float(), size=(24, 24)).round().to(torch.uint8)
    assert backend.generate(prompts, seeds, reference_images=bigger).images.shape == with_exemplars.shape


def test_below_strength_one_the_exemplar_also_starts_the_sampling(exemplar_model, tiny_data):
    full = EmbeddedBackend.from_pretrained(exemplar_model["exemplar"], dtype="fp32")
    partial = EmbeddedBackend.from_pretrained(exemplar_model["exemplar"], dtype="fp32", strength=0.5, steps=4)
    assert full.steps_run(True) == full.steps and partial.steps_run(True) == 2
    references = tiny_data.images[:2]
    assert not torch.equal(
        full.generate(["a photo of a checker"] * 2, [5, 6], reference_images=references).images,
        partial.generate(["a photo of a checker"] * 2, [5, 6], reference_images=references).images,
    )
    with pytest.raises(SynaugError, match=r"strength 1.5 must lie in \(0, 1\]"):
        EmbeddedBackend.from_pretrained(exemplar_model["exemplar"], strength=1.5)


def test_a_spec_whose_projection_does_not_fit_its_encoder_is_refused(exemplar_model, tmp_path):
    import shutil

    folder = shutil.copytree(exemplar_model["exemplar"], tmp_path / "g")
    meta = json.loads((folder / "synaug_generator.json").read_text())
    (folder / "synaug_generator.json").write_text(json.dumps({**meta, "exemplar": {"encoder": "pooled-pixels", "grid": 4}}))
    with pytest.raises(SynaugError, match="takes 9 numbers but the spec's encoder gives 16"):
        EmbeddedBackend.from_pretrained(folder)
    (folder / "synaug_generator.json").write_text(json.dumps({**meta, "exemplar": {"encoder": "clip", "grid": 3}}))
    with pytest.raises(SynaugError, match="'exemplar' must give encoder 'pooled-pixels'"):
        EmbeddedBackend.from_pretrained(folder)


def test_the_stage_key_and_generator_id_change_with_the_projection_alone(exemplar_model, tmp_path):
    import shutil

    from synaug.pipeline.stages.generate import generator_fingerprint

    folder = shutil.copytree(exemplar_model["exemplar"], tmp_path / "g")
    key, generator_id = generator_fingerprint(str(folder)), EmbeddedBackend.from_pretrained(folder).generator_id
    projection = ExemplarProjection.from_pretrained(folder / PROJECTION_FOLDER)
    torch.nn.init.normal_(projection.linear_2.weight, std=0.1)
    projection.save_pretrained(folder / PROJECTION_FOLDER)
    assert generator_fingerprint(str(folder)) != key and EmbeddedBackend.from_pretrained(folder).generator_id != generator_id


class CopyingGenerator(EmbeddedBackend):
    """Returns each exemplar unchanged: the copy the no-copying figure must catch."""

    def _generate_batch(self, prompts, seeds, *, reference_images, **kwargs):
        output = super()._generate_batch(prompts, seeds, reference_images=reference_images, **kwargs)
        output.images = reference_images.clone()
        return output


def test_the_gate_reports_closeness_and_no_copying_and_catches_a_copy(exemplar_model, tiny_data):
    pool, test = pattern_images(5, size=12, seed=2), pattern_images(4, size=12, seed=1)
    result = train_classifier(tiny_data, TrainConfig(epochs=2, batch_size=8, device="cpu", amp="off"), progress=False)
    oracle = Oracle(result.model.eval(), result.normalizer)
    backend = EmbeddedBackend.from_pretrained(exemplar_model["exemplar"], dtype="fp32", batch_size=16)
    lax = GateThresholds(mean_gap=101, cell_gap=101, max_closeness_ratio=100.0)
    report, _ = check_generator(backend, oracle, test, per_cell=4, exemplars=pool, thresholds=lax)
    for row in report.cells:
        assert row["exemplar_distance"] > 0 and row["real_nn_distance"] > 0 and row["real_pair_distance"] >= row["real_nn_distance"]
        assert row["closeness_generated"] > 0 and row["closeness_real"] > 0
    assert report.closeness_ratio > 0 and report.copy_ratio > 0 and report.settings["exemplars"]
    assert "No copying: median distance of a sample to its exemplar" in check_markdown(report)
    copier = CopyingGenerator.from_pretrained(exemplar_model["exemplar"], dtype="fp32", batch_size=16)
    copied, _ = check_generator(copier, oracle, test, per_cell=4, exemplars=pool, thresholds=lax)
    assert copied.copy_ratio == 0.0 and not copied.passed
    # Every image of a class takes the pool's images of that class in turn.
    assert all(row["exemplar_distance"] == 0.0 for row in copied.cells)
    without = pattern_images([3, 3, 0], size=12, seed=3)
    with pytest.raises(SynaugError, match="no real image of class 'checker' to serve as exemplar in the check"):
        check_generator(backend, oracle, test, per_cell=2, exemplars=without, thresholds=lax)


def test_the_exemplar_route_of_a_plan_records_each_images_exemplar(exemplar_model, tmp_path):
    from synaug.generate.runner import generate_plan
    from synaug.generate.store import SyntheticStore
    from synaug.plan import make_plan

    real = pattern_images([6, 3, 2], size=12, seed=4)
    plan = make_plan([6, 3, 2], real.class_names, image_size=(12, 12), channels=1, seed=1)
    backend = EmbeddedBackend.from_pretrained(exemplar_model["exemplar"], dtype="fp32", batch_size=4)
    store = SyntheticStore(tmp_path / "s")
    generate_plan(plan, backend, store, batch_size=4, progress=False, reference_images=real)
    manifest = store.manifest()
    assert len(manifest) == int(np.sum(plan.synthetic_counts)) > 0
    exemplar_classes = [real.class_names[real.labels[int(position)]] for position in manifest["exemplar"]]
    assert exemplar_classes == manifest["class_name"].tolist()
    assert store.info["settings"]["image_condition"]["kind"] == "exemplar-conditioned"
