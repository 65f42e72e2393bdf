"""`synaug generate --reference real` with a strength, an IP-Adapter and feedback, through the real command line."""

from __future__ import annotations

import pytest
from diffusers import UNet2DConditionModel

from data_writers import write_fashion_mnist
from fixtures_exemplar_generator import build_tiny_exemplar_embedded
from fixtures_exemplars import build_tiny_ip_adapter
from fixtures_generation import FASHION_CLASSES, build_tiny_embedded, build_tiny_sd, single_thread_torch  # noqa: F401 (fixture)
from fixtures_guidance import tiny_checkpoint
from cli_helpers import fails, run
from synaug.cli import main
from synaug.data.registry import load_index
from synaug.generate.store import SyntheticStore

pytestmark = pytest.mark.usefixtures("single_thread_torch")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Fashion-MNIST-shaped files, a long-tail index and its plan, a classifier checkpoint, tiny generators."""
    root = tmp_path_factory.mktemp("exemplar-cli")
    patch = pytest.MonkeyPatch()
    patch.setenv("SYNAUG_FASHION_MNIST", str(write_fashion_mnist(root / "fashion", train_per_class=12, test_per_class=1)))
    patch.setenv("HF_HUB_OFFLINE", "1")
    index = root / "lt.json"
    assert main(["data", "longtail", "--imbalance-factor", "3", "--max-per-class", "6", "--out", str(index)]) == 0
    plan = root / "plan.json"
    assert main(["plan", "--index", str(index), "--out", str(plan), "--seed", "1"]) == 0
    sd = build_tiny_sd(root / "tiny-sd")
    yield {
        "index": index, "plan": plan, "sd": sd, "embedded": build_tiny_embedded(root / "tiny-embedded"),
        "adapter": build_tiny_ip_adapter(root / "adapter", UNet2DConditionModel.from_pretrained(sd, subfolder="unet")),
        "checkpoint": tiny_checkpoint(root / "classifier" / "checkpoint", FASHION_CLASSES),
        "exemplar_generator": build_tiny_exemplar_embedded(root / "tiny-exemplar-generator"),
    }
    patch.undo()


def generate(world, out, *extra, generator: str = "embedded"):
    return ["generate", "--plan", world["plan"], "--out", out, "--generator", world[generator], "--batch-size", 8,
            "--no-progress", "--real-data", world["index"], *extra]


def test_img2img_at_a_chosen_strength_records_each_images_exemplar(world, tmp_path, capsys):
    code, _, err = run(generate(world, tmp_path / "s", "--reference", "real", "--strength", 0.3), capsys)
    assert code == 0, err
    store = SyntheticStore(tmp_path / "s")
    assert store.info["settings"]["strength"] == 0.3
    manifest = store.manifest()
    real = load_index(world["index"]).load()
    exemplar_classes = [real.class_names[real.labels[int(position)]] for position in manifest["exemplar"]]
    assert exemplar_classes == manifest["class_name"].tolist()  # every exemplar is a real image of its row's class


def test_ip_adapter_with_feedback_guidance_from_the_command_line(world, tmp_path, capsys):
    command = generate(world, tmp_path / "s", "--reference", "real", "--ip-adapter", world["adapter"], "--ip-adapter-scale", 0.5,
                       "--steps", 3, "--feedback", "entropy", "--feedback-classifier", world["checkpoint"], "--feedback-every", 1,
                       generator="sd")
    code, _, err = run(command, capsys)
    assert code == 0, err
    store = SyntheticStore(tmp_path / "s")
    settings = store.info["settings"]
    assert settings["image_condition"] == {"kind": "ip-adapter", "adapter": "ip-adapter.safetensors", "scale": 0.5}
    assert settings["strength"] == 1.0 and settings["hooks"][0]["criterion"] == "entropy"
    manifest = store.manifest()
    assert manifest["criterion"].notna().all() and manifest["exemplar"].notna().all()


def test_an_exemplar_conditioned_embedded_generator_takes_each_images_exemplar_with_feedback(world, tmp_path, capsys):
    command = generate(world, tmp_path / "s", "--reference", "real", "--feedback", "entropy", "--feedback-classifier",
                       world["checkpoint"], "--feedback-every", 1, generator="exemplar_generator")
    code, _, err = run(command, capsys)
    assert code == 0, err
    store = SyntheticStore(tmp_path / "s")
    settings = store.info["settings"]
    assert settings["image_condition"] == {"kind": "exemplar-conditioned", "encoder": "pooled-pixels", "grid": 7}
    assert settings["strength"] == 1.0 and settings["hooks"][0]["criterion"] == "entropy"
    manifest = store.manifest()
    real = load_index(world["index"]).load()
    assert [real.class_names[real.labels[int(p)]] for p in manifest["exemplar"]] == manifest["class_name"].tolist()


@pytest.mark.parametrize(
    "extra, generator, needle",
    [
        (["--reference", "real", "--strength", 1.5], "embedded", "strength 1.5 must lie in (0, 1]"),
        (["--reference", "real", "--strength", 0], "embedded", "strength 0.0 must lie in (0, 1]"),
        (["--strength", 0.3], "embedded", "strength shapes how exemplars enter the images, and none are given; add them (--reference real"),
        (["--ip-adapter", "x.safetensors"], "sd", "ip_adapter shapes how exemplars enter the images"),
        (["--reference", "real", "--ip-adapter", "adapter"], "embedded", "embedded generators take exemplars by img2img (strength) only, or through their own encoder"),
        (["--reference", "real", "--noise-level", 10], "sd", "applies to Stable unCLIP checkpoints"),
        (["--reference", "images"], "embedded", "--reference 'images' is not known; use real"),
    ],
)
def test_exemplar_options_that_cannot_work(world, tmp_path, capsys, extra, generator, needle):
    extra = [world["adapter"] if value == "adapter" else value for value in extra]
    assert needle in fails(generate(world, tmp_path / "s", *extra, generator=generator), capsys)
    assert not (tmp_path / "s").exists()
