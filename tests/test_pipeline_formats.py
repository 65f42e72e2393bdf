"""The shipped configs parse, and the CIFAR-100-LT and ImageNet-LT ones run a tiny step on small
fake data in the real formats (CIFAR python pickles; split lists of JPEGs) with a tiny Stable
Diffusion checkpoint."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from data_writers import write_cifar100
from fixtures_generation import build_tiny_sd, single_thread_torch  # noqa: F401  (fixture)
from PIL import Image

from synaug.config import load_yaml
from synaug.data.longtail import longtail_counts
from synaug.pipeline import load_run_config, parse_run_config, run_pipeline

pytestmark = pytest.mark.usefixtures("single_thread_torch")

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
CIFAR100_NAMES = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can castle "
    "caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin elephant flatfish "
    "forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle "
    "mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine "
    "possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake spider squirrel streetcar "
    "sunflower sweet_pepper table tank telephone television tiger tractor train trout tulip turtle wardrobe whale "
    "willow_tree wolf woman worm"
).split()


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("sd") / "tiny-sd")


def run(values: dict, name: str):
    config = parse_run_config(values, where=name)
    return run_pipeline(config, config_name=name, config_text="", command=f"synaug run {name}", progress=False)


@pytest.mark.parametrize("name", ["fashion-mnist-lt", "cifar100-lt-if100", "cifar100-lt-if50", "cifar100-lt-if10", "imagenet-lt-sd", "imagefolder-sd"])
def test_shipped_configs_parse(name):
    config, text = load_run_config(CONFIGS / f"{name}.yaml")
    assert text.startswith("#") and config.runs.recipes
    if name.startswith("cifar100"):
        assert (config.train.model, config.train.epochs, config.train.lr, config.train.schedule) == ("resnet32", 200, 0.1, "step")
        assert (config.train.weight_decay, config.train.milestones, config.train.crop_padding) == (2e-4, [160, 180], 4)
        assert config.data.longtail.imbalance_factor == int(name.rsplit("if", 1)[1]) and config.data.longtail.reserve == 0
        assert set(config.plan.class_prompt_names) <= set(CIFAR100_NAMES)


def test_cifar100_lt_config_runs_on_fake_cifar_pickles(tmp_path, tiny_sd):
    folder = write_cifar100(tmp_path, train_per_class=5, test_per_class=1)
    with (folder / "meta").open("wb") as f:  # the real class names, so the config's prompt names apply
        pickle.dump({"fine_label_names": CIFAR100_NAMES, "coarse_label_names": [f"c{i}" for i in range(20)]}, f, protocol=2)
    values = load_yaml(CONFIGS / "cifar100-lt-if100.yaml")
    values["data"].update(root=str(folder))
    values["data"]["longtail"].update(imbalance_factor=5, max_per_class=5)
    values["generator"].update(spec=str(tiny_sd), steps=2, dtype="fp32", device="cpu")
    values["train"].update(epochs=1, warmup_epochs=0, num_workers=0, device="cpu")
    values["crt"].update(epochs=1)
    values["runs"].update(recipes=["synaug"])
    values["output"] = str(tmp_path / "out")
    result = run(values, "cifar100-lt-if100.yaml")

    real = longtail_counts(100, 5, 5)
    assert result.runs[0].sample_counts == {"real": int(real.sum()), "synthetic": int((5 - real).sum())}
    (plan,) = (tmp_path / "out" / "stages").glob("plan-*/plan.json")
    prompts = json.loads(plan.read_text())
    assert prompts["image_size"] == [32, 32] and prompts["channels"] == 3
    assert "aquarium fish" in prompts["prompt_names"] and "sweet pepper" in prompts["prompt_names"]
    assert (tmp_path / "out" / "report" / "report.md").is_file()


def test_imagenet_lt_config_runs_on_a_split_list_of_jpegs(tmp_path, tiny_sd):
    rng = np.random.default_rng(0)
    root = tmp_path / "imagenet"
    lines = {"train": [], "test": []}
    for label, (train_count, synset) in enumerate(zip([6, 3, 2, 1], ["n01440764", "n01443537", "n01484850", "n01491361"])):
        for split, count in (("train", train_count), ("test", 2)):
            for i in range(count):
                path = root / split / synset / f"{synset}_{i}.JPEG"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)).save(path, format="JPEG")
                lines[split].append(f"{split}/{synset}/{path.name} {label}")
    lists = tmp_path / "ImageNet_LT"
    lists.mkdir()
    for split, entries in lines.items():
        (lists / f"ImageNet_LT_{split}.txt").write_text("\n".join(entries) + "\n")
    (lists / "class_names.txt").write_text("tench\ngoldfish\ngreat white shark\ntiger shark\n")

    values = load_yaml(CONFIGS / "imagenet-lt-sd.yaml")
    values["data"].update(
        root=str(root), list_file=str(lists / "ImageNet_LT_train.txt"), test_list_file=str(lists / "ImageNet_LT_test.txt"), size=32
    )
    values["plan"]["class_prompt_names"] = str(lists / "class_names.txt")
    values["generator"].update(spec=str(tiny_sd), steps=2, dtype="fp32", device="cpu", batch_size=8)
    values["train"].update(epochs=1, warmup_epochs=0, batch_size=8, num_workers=0, device="cpu")
    values["crt"].update(epochs=1)
    values["runs"].update(recipes=["ce_crt", "synaug"])
    values["output"] = str(tmp_path / "out")
    result = run(values, "imagenet-lt-sd.yaml")

    assert {r.recipe: r.sample_counts for r in result.runs} == {
        "ce_crt": {"real": 12, "synthetic": 0}, "synaug": {"real": 12, "synthetic": 12},
    }
    store = next((tmp_path / "out" / "stages").glob("generate-*/store"))
    assert sorted(p.name for p in store.iterdir() if p.is_dir()) == ["1", "2", "3"]  # class folders; class 0 is full
    manifest = json.loads((store / "store.json").read_text())
    assert manifest["plan"]["prompt_names"] == ["tench", "goldfish", "great white shark", "tiger shark"]
    assert result.runs[0].metrics["num_samples"] == 8


def test_imagefolder_config_runs_on_train_and_test_class_folders(tmp_path, tiny_sd):
    rng = np.random.default_rng(0)
    root = tmp_path / "my-dataset"
    for name, train_count in (("cat", 6), ("dog", 3), ("red fox", 1)):
        for split, count in (("train", train_count), ("test", 2)):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(root / split / name / f"{i}.png")
    values = load_yaml(CONFIGS / "imagefolder-sd.yaml")
    values["data"].update(root=str(root), size=16)
    values["generator"].update(spec=str(tiny_sd), steps=2, dtype="fp32", device="cpu", batch_size=8)
    values["train"].update(epochs=1, warmup_epochs=0, batch_size=4, num_workers=0, device="cpu")
    values["crt"].update(epochs=1)
    values["runs"].update(recipes=["synaug"])
    values["output"] = str(tmp_path / "out")
    result = run(values, "imagefolder-sd.yaml")

    assert result.runs[0].sample_counts == {"real": 10, "synthetic": 8}  # fill to the largest class, 6
    assert result.runs[0].metrics["num_samples"] == 6
    store = next((tmp_path / "out" / "stages").glob("generate-*/store"))
    assert sorted(p.name for p in store.iterdir() if p.is_dir()) == ["dog", "red fox"]
