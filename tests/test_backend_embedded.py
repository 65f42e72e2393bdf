"""The embedded backend, loaded from tiny random generator folders in the documented format."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from diffusers import UNet2DConditionModel

import synaug.generate.backends.embedded as embedded
from fixtures_generation import BrightnessHook, FASHION_CLASSES, build_tiny_embedded, single_thread_torch  # noqa: F401 (fixture)
from synaug.errors import SynaugError
from synaug.generate.backends import EmbeddedBackend, EmbeddedGeneratorSpec

pytestmark = pytest.mark.usefixtures("single_thread_torch")

PROMPTS = [f"a photo of a {name}" for name in FASHION_CLASSES[:4]]


@pytest.fixture(scope="module")
def gray_folder(tmp_path_factory):
    return build_tiny_embedded(tmp_path_factory.mktemp("generators") / "tiny-fashion")


@pytest.fixture(scope="module")
def backend(gray_folder):
    return EmbeddedBackend.from_pretrained(gray_folder, batch_size=4)


def count_unet_rows(backend: EmbeddedBackend) -> list[int]:
    rows: list[int] = []
    backend.pipeline.unet.register_forward_pre_hook(lambda module, args: rows.append(len(args[0])))
    return rows


def test_uses_the_folders_recommended_sampler(backend, gray_folder):
    settings = json.loads(json.dumps(backend.settings()))
    assert settings == {
        "backend": "embedded", "scheduler": "ddim", "scheduler_class": "DDIMScheduler", "steps": 4,
        "guidance_scale": 1.0, "dtype": "fp32", "height": 28, "width": 28, "strength": 0.5,
    }
    assert backend.generator_id.startswith("embedded:tiny-fashion@")
    assert len(backend.generator_id.split("@")[1]) == 8
    assert backend.spec.class_names == FASHION_CLASSES


def test_generates_grayscale_28px_images(backend):
    output = backend.generate(PROMPTS, [0, 1, 2, 3])
    assert output.images.shape == (4, 1, 28, 28) and output.images.dtype == torch.uint8
    assert output.ok.all()
    assert backend.generate(PROMPTS[:1], [0], output_channels=3, output_size=(32, 32)).images.shape == (1, 3, 32, 32)


def test_empty_prompt_is_the_zero_null_condition_and_prompts_are_cached(backend, monkeypatch):
    condition = backend.encode_prompts(["", PROMPTS[0]])
    assert torch.equal(condition["class_labels"][0], torch.zeros(384))
    assert condition["class_labels"][1].norm() == pytest.approx(1.0, abs=1e-4)
    assert torch.equal(condition["encoder_hidden_states"][:, 0], condition["class_labels"])
    monkeypatch.setattr(embedded, "encode_texts", lambda texts: pytest.fail("prompt was re-encoded"))
    backend.encode_prompts([PROMPTS[0]])


def test_guidance_one_skips_the_unconditional_pass(gray_folder):
    plain = EmbeddedBackend.from_pretrained(gray_folder, steps=3)
    plain_rows = count_unet_rows(plain)
    plain.generate(PROMPTS[:2], [0, 1])
    guided = EmbeddedBackend.from_pretrained(gray_folder, steps=3, guidance_scale=2.0)
    guided_rows = count_unet_rows(guided)
    guided.generate(PROMPTS[:2], [0, 1])
    assert plain_rows == [2, 2, 2]
    assert guided_rows == [4, 4, 4]


def test_images_do_not_depend_on_batch_composition(gray_folder):
    large = EmbeddedBackend.from_pretrained(gray_folder, scheduler="ddpm", batch_size=4)
    small = EmbeddedBackend.from_pretrained(gray_folder, scheduler="ddpm", batch_size=1)
    seeds = [3, 1, 4, 1]
    assert torch.equal(large.generate(PROMPTS, seeds).images, small.generate(PROMPTS, seeds).images)


def test_bf16_autocast_stays_close_to_fp32(gray_folder):
    full = EmbeddedBackend.from_pretrained(gray_folder).generate(PROMPTS, [0, 1, 2, 3]).images.float()
    bf16 = EmbeddedBackend.from_pretrained(gray_folder, dtype="bf16")
    half = bf16.generate(PROMPTS, [0, 1, 2, 3]).images.float()
    assert bf16.settings()["dtype"] == "bf16"
    assert (full - half).abs().mean() < 8


def test_sdedit_from_a_reference_in_pixel_space(gray_folder):
    backend = EmbeddedBackend.from_pretrained(gray_folder, steps=10, strength=0.2)
    white = torch.full((2, 1, 28, 28), 255, dtype=torch.uint8)
    black = torch.zeros((2, 1, 28, 28), dtype=torch.uint8)
    from_white = backend.generate(PROMPTS[:2], [0, 1], reference_images=white).images.float().mean()
    from_black = backend.generate(PROMPTS[:2], [0, 1], reference_images=black).images.float().mean()
    assert from_white > from_black + 50


def test_gradient_hook_in_pixel_space(backend):
    plain = backend.generate(PROMPTS, [0, 1, 2, 3]).images.float().mean(dim=(1, 2, 3))
    guided = backend.generate(PROMPTS, [0, 1, 2, 3], hooks=[BrightnessHook(0.1, True)]).images.float().mean(dim=(1, 2, 3))
    assert (guided > plain + 5).all()


def test_rgb_generator(tmp_path):
    folder = build_tiny_embedded(tmp_path / "rgb", channels=3, size=16)
    output = EmbeddedBackend.from_pretrained(folder).generate(PROMPTS[:2], [0, 1], output_channels=1)
    assert output.images.shape == (2, 1, 16, 16)


def test_weights_digest_follows_the_weights(tmp_path):
    first = EmbeddedBackend.from_pretrained(build_tiny_embedded(tmp_path / "gen", seed=0)).generator_id
    same = EmbeddedBackend.from_pretrained(build_tiny_embedded(tmp_path / "gen", seed=0)).generator_id
    other = EmbeddedBackend.from_pretrained(build_tiny_embedded(tmp_path / "gen", seed=1)).generator_id
    assert first == same != other


def test_spec_round_trip(tmp_path):
    spec = EmbeddedGeneratorSpec(image_size=(28, 28), channels=1, class_names=["a", "b"],
                                 caption_templates=["a {context} {class}"], context_names=["x", "y"])
    spec.write(tmp_path)
    assert EmbeddedGeneratorSpec.read(tmp_path) == spec


# --- the shipped model and bad folders ---------------------------------------------------------------


def test_default_names_the_training_command_until_the_model_ships(monkeypatch, tmp_path, gray_folder):
    monkeypatch.setattr(embedded, "SHIPPED_FOLDER", tmp_path / "missing")
    with pytest.raises(SynaugError, match="train one with `synaug generator train`"):
        EmbeddedBackend.default()
    monkeypatch.setattr(embedded, "SHIPPED_FOLDER", gray_folder)
    assert EmbeddedBackend.default(steps=2).steps == 2


def test_missing_folder_and_files_are_named(gray_folder, tmp_path):
    with pytest.raises(SynaugError, match="does not exist; train one with `synaug generator train`"):
        EmbeddedBackend.from_pretrained(tmp_path / "nothing")
    no_spec = shutil.copytree(gray_folder, tmp_path / "no-spec")
    (no_spec / "synaug_generator.json").unlink()
    with pytest.raises(SynaugError, match="has no synaug_generator.json"):
        EmbeddedBackend.from_pretrained(no_spec)
    no_unet = shutil.copytree(gray_folder, tmp_path / "no-unet")
    shutil.rmtree(no_unet / "unet")
    with pytest.raises(SynaugError, match="missing its 'unet' component"):
        EmbeddedBackend.from_pretrained(no_unet)
    bad_json = shutil.copytree(gray_folder, tmp_path / "bad-json")
    (bad_json / "synaug_generator.json").write_text("{")
    with pytest.raises(SynaugError, match="is not valid JSON"):
        EmbeddedBackend.from_pretrained(bad_json)


def test_unet_without_the_projection_condition_is_rejected(gray_folder, tmp_path):
    wrong = shutil.copytree(gray_folder, tmp_path / "wrong")
    shutil.rmtree(wrong / "unet")
    UNet2DConditionModel(
        sample_size=28, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4, cross_attention_dim=384,
    ).save_pretrained(wrong / "unet")
    with pytest.raises(SynaugError, match="class_embed_type='projection'"):
        EmbeddedBackend.from_pretrained(wrong)


@pytest.mark.parametrize("native_bf16, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_dtype_is_bf16_where_the_cpu_runs_it_natively(gray_folder, monkeypatch, native_bf16, expected):
    monkeypatch.setattr("synaug.train.trainer._cpu_has_native_bf16", lambda: native_bf16)
    assert EmbeddedBackend.from_pretrained(gray_folder, dtype="auto").settings()["dtype"] == expected


def test_fp16_on_cpu_and_unknown_scheduler(gray_folder):
    with pytest.raises(SynaugError, match="on CPU use dtype fp32 or bf16"):
        EmbeddedBackend.from_pretrained(gray_folder, dtype="fp16")
    with pytest.raises(SynaugError, match="unknown dtype 'fp8'; choose auto, fp32"):
        EmbeddedBackend.from_pretrained(gray_folder, dtype="fp8")
    with pytest.raises(SynaugError, match="unknown scheduler 'lms'"):
        EmbeddedBackend.from_pretrained(gray_folder, scheduler="lms")
