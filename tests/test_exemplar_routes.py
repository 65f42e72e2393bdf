"""Exemplar routes of the Stable Diffusion backend: img2img, IP-Adapter and Stable unCLIP, each with
guidance hooks, loaded from tiny random checkpoints on disk through the same code as real ones."""

from __future__ import annotations

import shutil

import pytest
import torch
from diffusers import UNet2DConditionModel

from fixtures_exemplars import build_tiny_ip_adapter, build_tiny_unclip
from fixtures_generation import BrightnessHook, build_tiny_sd, single_thread_torch  # noqa: F401 (fixture)
from synaug.errors import SynaugError
from synaug.generate.backends import StableDiffusionBackend

pytestmark = pytest.mark.usefixtures("single_thread_torch")

PROMPTS = ["a photo of a cat", "a photo of a dog", "a photo of a bird"]
EXEMPLARS = torch.randint(0, 256, (3, 1, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
OTHERS = torch.full((3, 1, 28, 28), 255, dtype=torch.uint8)  # plain white, unlike the noise exemplars


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    sd = build_tiny_sd(root / "tiny-sd")
    unet = UNet2DConditionModel.from_pretrained(sd, subfolder="unet")
    return {
        "sd": sd,
        "adapter": build_tiny_ip_adapter(root / "ip-adapter", unet),
        "unclip": build_tiny_unclip(root / "tiny-unclip"),
        "root": root,
    }


def load(checkpoints, route: str, **settings) -> StableDiffusionBackend:
    """The backend of ``route``: plain SD (img2img), SD + the tiny IP-Adapter, or the tiny unCLIP checkpoint."""
    if route == "ip-adapter":
        settings.setdefault("ip_adapter", str(checkpoints["adapter"]))
    folder = checkpoints["unclip" if route == "unclip" else "sd"]
    return StableDiffusionBackend.from_pretrained(folder, steps=4, batch_size=2, **settings)


def images(backend, exemplars=EXEMPLARS, count=3, **kwargs) -> torch.Tensor:
    return backend.generate(PROMPTS[:count], list(range(count)), reference_images=exemplars[:count], **kwargs).images.float()


@pytest.mark.parametrize("route", ["ip-adapter", "unclip"])
def test_embedding_routes_condition_each_image_on_its_own_exemplar(checkpoints, route):
    backend = load(checkpoints, route)
    batch = images(backend)
    alone = backend.generate(PROMPTS[1:2], [1], reference_images=EXEMPLARS[1:2]).images.float()
    swapped = backend.generate(PROMPTS[:1], [0], reference_images=EXEMPLARS[1:2]).images.float()
    assert backend.strength == 1.0 and backend.settings()["image_condition"]["kind"] == route
    assert torch.equal(alone[0], batch[1])  # an image does not depend on its batch
    assert not torch.equal(swapped[0], batch[0])  # same prompt and seed, another exemplar: another image
    assert (images(backend, OTHERS) - batch).abs().mean() > 0.5


def test_an_ip_adapter_at_scale_zero_ignores_the_exemplar(checkpoints):
    backend = load(checkpoints, "ip-adapter", ip_adapter_scale=0.0)
    assert torch.equal(images(backend), images(backend, OTHERS))
    assert backend.settings()["image_condition"] == {"kind": "ip-adapter", "adapter": "ip-adapter.safetensors", "scale": 0.0}


def test_an_embedding_route_below_strength_one_also_starts_from_the_exemplar(checkpoints):
    pure, edited = load(checkpoints, "ip-adapter"), load(checkpoints, "ip-adapter", strength=0.5)
    assert edited.settings()["strength"] == 0.5
    assert (images(edited) - images(pure)).abs().mean() > 1.0


def test_unclip_noise_level_is_a_setting_that_changes_the_images(checkpoints):
    assert (images(load(checkpoints, "unclip", noise_level=500)) - images(load(checkpoints, "unclip"))).abs().mean() > 0.5


@pytest.mark.parametrize("route, settings", [("img2img", {"strength": 0.75}), ("ip-adapter", {}), ("unclip", {}), ("ip-adapter", {"strength": 0.75})])
@pytest.mark.parametrize("through_model", [True, False])
def test_guidance_hooks_act_on_every_exemplar_route(checkpoints, route, settings, through_model):
    backend = load(checkpoints, route, **settings)
    plain = images(backend, count=2).mean(dim=(1, 2, 3))
    guided = images(backend, count=2, hooks=[BrightnessHook(0.1, through_model)]).mean(dim=(1, 2, 3))
    assert (guided > plain + 2).all()


# --- bad input: one line each, naming the fix ---------------------------------------------------------


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("route", ["ip-adapter", "unclip"])
def test_an_embedding_route_without_exemplars_says_to_give_them(checkpoints, route):
    with pytest.raises(SynaugError) as error:
        load(checkpoints, route).generate(PROMPTS[:1], [0])
    assert "conditions every image on an exemplar" in one_line(error) and "--reference real" in one_line(error)


def test_an_ip_adapter_for_another_unet_does_not_fit(checkpoints, tmp_path):
    other = UNet2DConditionModel.from_config({**UNet2DConditionModel.load_config(checkpoints["sd"], subfolder="unet"), "cross_attention_dim": 24})
    adapter = build_tiny_ip_adapter(tmp_path / "sd2-adapter", other)
    with pytest.raises(SynaugError) as error:
        load(checkpoints, "ip-adapter", ip_adapter=str(adapter))
    assert "does not fit this checkpoint" in one_line(error) and "adapter made for the checkpoint's base model" in one_line(error)


def test_an_ip_adapter_with_another_image_encoder_does_not_fit(checkpoints, tmp_path):
    unet = UNet2DConditionModel.from_pretrained(checkpoints["sd"], subfolder="unet")
    adapter = build_tiny_ip_adapter(tmp_path / "mixed", unet, encoder_dim=8)
    with pytest.raises(SynaugError) as error:
        load(checkpoints, "ip-adapter", ip_adapter=str(adapter.parent))  # the folder, holding one weight file
    assert "takes 12-d image embeddings, its image encoder gives 8-d" in one_line(error)


def test_ip_adapter_locations_that_name_no_single_weight_file(checkpoints, tmp_path):
    folder = tmp_path / "two"
    shutil.copytree(checkpoints["adapter"].parent, folder)
    shutil.copy(folder / "ip-adapter.safetensors", folder / "ip-adapter-plus.safetensors")
    with pytest.raises(SynaugError) as error:
        load(checkpoints, "ip-adapter", ip_adapter=str(folder))
    assert "must hold one weight file" in one_line(error) and "pass the file itself" in one_line(error)
    with pytest.raises(SynaugError) as error:
        load(checkpoints, "ip-adapter", ip_adapter="h94/IP-Adapter")
    assert "ORG/REPO/PATH/FILE" in one_line(error)
    with pytest.raises(SynaugError) as error:
        load(checkpoints, "ip-adapter", ip_adapter="nobody/none/models/ip-adapter_sd15.safetensors")
    assert "could not load IP-Adapter" in one_line(error)
    shutil.rmtree(folder / "image_encoder")
    (folder / "ip-adapter-plus.safetensors").unlink()
    with pytest.raises(SynaugError) as error:
        load(checkpoints, "ip-adapter", ip_adapter=str(folder))
    assert "could not load IP-Adapter" in one_line(error) and "image_encoder/ next to it" in one_line(error)


@pytest.mark.parametrize(
    "route, settings, needle",
    [
        ("unclip", {"ip_adapter": "x.safetensors"}, "is a Stable unCLIP checkpoint"),
        ("img2img", {"noise_level": 10}, "applies to Stable unCLIP checkpoints"),
        ("img2img", {"ip_adapter_scale": 0.5}, "weighs an IP-Adapter"),
        ("unclip", {"noise_level": 5000}, "must lie in [0, 1000)"),
        ("img2img", {"strength": 0.0}, "must lie in (0, 1]"),
        ("ip-adapter", {"strength": 1.2}, "must lie in (0, 1]"),
    ],
)
def test_settings_that_do_not_apply(checkpoints, route, settings, needle):
    with pytest.raises(SynaugError) as error:
        load(checkpoints, route, **settings)
    assert needle in one_line(error)


def test_feedback_that_guides_none_of_the_img2img_steps_is_refused(checkpoints, tmp_path):
    from fixtures_generation import FASHION_CLASSES
    from synaug.data.dataset import LabeledImages
    from synaug.generate.runner import generate_plan
    from synaug.generate.store import SyntheticStore
    from synaug.plan import make_plan

    real = LabeledImages(labels=torch.tensor([0, 1]).numpy(), class_names=FASHION_CLASSES[:2], images=EXEMPLARS[:2])
    plan = make_plan([2, 1], FASHION_CLASSES[:2], image_size=(28, 28), channels=1)
    late = BrightnessHook(0.1, False, start=0.5, every=5)  # acts on step 5 of 10, but img2img at 0.3 runs 3 steps
    backend = StableDiffusionBackend.from_pretrained(checkpoints["sd"], steps=10, strength=0.3)
    assert backend.steps_run(True) == 3 and backend.steps_run(False) == 10
    with pytest.raises(SynaugError) as error:
        generate_plan(plan, backend, SyntheticStore(tmp_path / "s"), hooks=[late], reference_images=real, progress=False)
    assert "guides none of the generator's 3 steps" in one_line(error)
    assert load(checkpoints, "ip-adapter").steps_run(True) == 4  # from noise: every step
