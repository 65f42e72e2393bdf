"""The Stable Diffusion backend, loaded from a tiny random SD-format folder through the user path."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from fixtures_generation import BrightnessHook, TINY_SD_SIZE, build_tiny_sd, single_thread_torch  # noqa: F401 (fixture)
from recording_hook import RecordX0Hook
from synaug.errors import SynaugError
from synaug.generate.backends import GenerationOutput, StableDiffusionBackend
from synaug.generate.schedulers import SCHEDULERS

pytestmark = pytest.mark.usefixtures("single_thread_torch")

PROMPTS = ["a photo of a cat", "a photo of a dog", "a photo of a bird", "a photo of a frog"]


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return build_tiny_sd(tmp_path_factory.mktemp("checkpoints") / "tiny-sd")


@pytest.fixture(scope="module")
def backend(tiny_sd):
    return StableDiffusionBackend.from_pretrained(tiny_sd, steps=3, batch_size=2)


def test_generates_uint8_images_at_the_native_size(backend, tiny_sd):
    output = backend.generate(PROMPTS[:2], [0, 1])
    assert isinstance(output, GenerationOutput)
    assert output.images.dtype == torch.uint8 and output.images.shape == (2, 3, TINY_SD_SIZE, TINY_SD_SIZE)
    assert output.ok.tolist() == [True, True]
    assert output.scores == {}
    assert backend.generator_id == "sd:tiny-sd"
    settings = json.loads(json.dumps(backend.settings()))
    assert settings["scheduler_class"] == "DDIMScheduler" and settings["steps"] == 3 and settings["dtype"] == "fp32"


def test_resizes_to_the_dataset_size_and_grayscale(backend):
    output = backend.generate(PROMPTS[:2], [0, 1], output_size=(28, 28), output_channels=1)
    assert output.images.shape == (2, 1, 28, 28)


def test_images_do_not_depend_on_batch_composition(backend):
    seeds = [7, 8, 9]
    together = backend.generate(PROMPTS[:3], seeds).images
    reordered = backend.generate(PROMPTS[2::-1], seeds[::-1]).images.flip(0)
    alone = backend.generate(PROMPTS[1:2], seeds[1:2]).images
    assert torch.equal(together, reordered)
    assert torch.equal(together[1:2], alone)


def test_negative_prompt_and_reference_images_change_the_result(backend):
    text_only = backend.generate(PROMPTS[:2], [0, 1]).images
    negative = backend.generate(PROMPTS[:2], [0, 1], negative_prompt="blurry").images
    references = torch.randint(0, 256, (2, 1, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    edited = backend.generate(PROMPTS[:2], [0, 1], reference_images=references)
    again = backend.generate(PROMPTS[:2], [0, 1], reference_images=references)
    assert not torch.equal(text_only, negative)
    assert not torch.equal(text_only, edited.images)
    assert torch.equal(edited.images, again.images)
    assert edited.ok.all()


@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
def test_every_scheduler_runs_in_the_backend(tiny_sd, scheduler):
    backend = StableDiffusionBackend.from_pretrained(tiny_sd, scheduler=scheduler, steps=2)
    output = backend.generate(PROMPTS[:2], [0, 1])
    assert output.ok.all() and backend.settings()["scheduler"] == scheduler


def test_bf16_autocast_on_cpu(tiny_sd):
    backend = StableDiffusionBackend.from_pretrained(tiny_sd, dtype="bf16", steps=2)
    output = backend.generate(PROMPTS[:2], [0, 1])
    assert output.ok.all() and backend.settings()["dtype"] == "bf16"


@pytest.mark.parametrize("through_model", [True, False])
def test_gradient_hook_through_the_vae_moves_brightness(backend, through_model):
    plain = backend.generate(PROMPTS[:2], [0, 1]).images.float().mean(dim=(1, 2, 3))
    hook = BrightnessHook(0.1, through_model)
    guided = backend.generate(PROMPTS[:2], [0, 1], hooks=[hook]).images.float().mean(dim=(1, 2, 3))
    assert (guided > plain + 2).all()


def test_hook_scores_follow_the_images_across_batches(backend):
    output = backend.generate(PROMPTS[:3], [0, 1, 2], hooks=[RecordX0Hook(start=0.5)])
    assert output.scores["x0_abs_max"].shape == (3,)
    assert (output.scores["x0_abs_max"] > 0).all()


# --- bad input: one line each, naming the fix ---------------------------------------------------------


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_hub_id_without_network_says_to_use_a_local_folder():
    with pytest.raises(SynaugError) as error:
        StableDiffusionBackend.from_pretrained("someone/stable-diffusion-test")
    message = one_line(error)
    assert "could not be fetched from the Hugging Face hub (offline mode)" in message
    assert "pass its local folder" in message


def test_missing_local_folder(tmp_path):
    with pytest.raises(SynaugError, match="model folder .* does not exist"):
        StableDiffusionBackend.from_pretrained(str(tmp_path / "no" / "such" / "model"))


def test_folder_missing_a_component_names_it(tiny_sd, tmp_path):
    broken = shutil.copytree(tiny_sd, tmp_path / "broken")
    shutil.rmtree(broken / "vae")
    with pytest.raises(SynaugError, match="missing its 'vae' component"):
        StableDiffusionBackend.from_pretrained(broken)


def test_component_without_weights_names_it(tiny_sd, tmp_path):
    broken = shutil.copytree(tiny_sd, tmp_path / "broken")
    for weights in (broken / "unet").glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(SynaugError) as error:
        StableDiffusionBackend.from_pretrained(broken)
    assert "could not load the 'unet' component" in one_line(error)


def test_auto_dtype_is_bf16_where_the_cpu_runs_it_natively(tiny_sd, monkeypatch):
    monkeypatch.setattr("synaug.train.trainer._cpu_has_native_bf16", lambda: True)
    assert StableDiffusionBackend.from_pretrained(tiny_sd, dtype="auto").settings()["dtype"] == "bf16"


def test_unknown_scheduler_and_fp16_on_cpu(tiny_sd):
    with pytest.raises(SynaugError, match="unknown scheduler 'heun'; choose one of: ddim, dpm\\+\\+"):
        StableDiffusionBackend.from_pretrained(tiny_sd, scheduler="heun")
    with pytest.raises(SynaugError, match="fp16 needs a CUDA device; on CPU use dtype fp32 or bf16"):
        StableDiffusionBackend.from_pretrained(tiny_sd, dtype="fp16")


def test_bad_generate_inputs(backend):
    with pytest.raises(SynaugError, match="2 prompts but 1 seeds"):
        backend.generate(PROMPTS[:2], [0])
    with pytest.raises(SynaugError, match="reference images must be a uint8 tensor"):
        backend.generate(PROMPTS[:1], [0], reference_images=torch.zeros(1, 3, 8, 8))
    with pytest.raises(SynaugError, match="output_channels 2"):
        backend.generate(PROMPTS[:1], [0], output_channels=2)
