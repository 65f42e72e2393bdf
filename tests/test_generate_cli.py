"""`synaug plan` and `synaug generate` through the real command line (in process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from data_writers import write_fashion_mnist
from synaug.cli import main
from synaug.data.longtail import longtail_counts
from synaug.generate.store import SyntheticStore
from synaug.plan import SynthesisPlan, make_plan

FAKE = "python:fake_generator:make_generator"


@pytest.fixture
def fashion(tmp_path, monkeypatch) -> Path:
    folder = write_fashion_mnist(tmp_path / "fashion", train_per_class=20, test_per_class=2)
    monkeypatch.setenv("SYNAUG_FASHION_MNIST", str(folder))
    return folder


def run(argv, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def fails(argv, capsys) -> str:
    """The error line of a command that must fail with status 2."""
    code, _, err = run(argv, capsys)
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and err.strip().endswith(errors[0]) and "Traceback" not in err, err
    return errors[0]


def test_plan_for_a_long_tail_prints_table_and_estimate(fashion, tmp_path, capsys):
    out = tmp_path / "plan.json"
    code, stdout, _ = run(["plan", "--longtail", 5, "--max-per-class", 5, "--out", out, "--rate", 0.5,
                           "--class-prompt-names", "T-shirt/top=t-shirt", "--template", "a photo of a {class}",
                           "--template", "a drawing of a {class}"], capsys)
    assert code == 0
    plan = SynthesisPlan.load(out)
    real = longtail_counts(10, 5, 5)
    assert plan.real_counts.tolist() == real.tolist()
    assert plan.synthetic_counts.tolist() == (5 - real).tolist()
    assert plan.image_size == (28, 28) and plan.channels == 1
    assert "a photo of a t-shirt" in stdout and "Ankle boot" in stdout
    # real 5/4/3/2/2/2/1/1/1/1: 28 synthetic images at 0.5 images/s
    assert plan.total == 28 and "estimated generation time: 56 s" in stdout


def test_plan_from_an_index_file_and_a_yaml_config(fashion, tmp_path, capsys):
    index = tmp_path / "lt.json"
    assert run(["data", "longtail", "--imbalance-factor", 5, "--max-per-class", 5, "--out", index], capsys)[0] == 0
    config = tmp_path / "plan.yaml"
    config.write_text(f"index: {index}\nstrategy: budget\nbudget: 7\ntemplate: 'a {{class}} on white'\n"
                      f"class_prompt_names: {{Ankle boot: boot}}\nseed: 3\nout: {tmp_path / 'p.json'}\n")
    code, stdout, _ = run(["plan", "--config", config], capsys)
    assert code == 0
    plan = SynthesisPlan.load(tmp_path / "p.json")
    assert plan.total == 7 and plan.seed == 3 and plan.strategy == "budget"
    assert plan.real_counts.tolist() == longtail_counts(10, 5, 5).tolist()
    assert plan.prompt(9, None, 0) == "a boot on white"
    # the command line wins over the file
    assert run(["plan", "--config", config, "--budget", 9], capsys)[0] == 0
    assert SynthesisPlan.load(tmp_path / "p.json").total == 9


def test_plan_final_counts_from_yaml(fashion, tmp_path, capsys):
    config = tmp_path / "plan.yaml"
    config.write_text(f"strategy: {{Sandal: 25, Bag: 30}}\nout: {tmp_path / 'p.json'}\n")
    assert run(["plan", "--config", config], capsys)[0] == 0
    plan = SynthesisPlan.load(tmp_path / "p.json")
    assert plan.synthetic_counts.tolist() == [0, 0, 0, 0, 0, 5, 0, 0, 10, 0]


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--template", "a photo of a {klass}"], "unknown field {klass}; valid fields: {class}"),
        (["--template", "a photo"], "'a photo' has no {class}"),
        (["--class-prompt-names", "Zebra=zebra"], "class 'Zebra', which the dataset does not have"),
        (["--strategy", "fill-to"], "--target"),
        (["--strategy", "fill-up"], "unknown strategy 'fill-up'"),
        (["--max-per-class", 5], "add --longtail"),
        (["--rate", 0], "rate 0.0 must be positive"),
    ],
)
def test_plan_bad_input_is_one_line(fashion, tmp_path, capsys, argv, needle):
    assert needle in fails(["plan", "--out", tmp_path / "p.json", *argv], capsys)
    assert not (tmp_path / "p.json").exists()


def test_plan_unknown_config_key_names_the_nearest(fashion, tmp_path, capsys):
    config = tmp_path / "plan.yaml"
    config.write_text("stratgy: budget\n")
    assert f"error: {config}: unknown key 'stratgy'; did you mean 'strategy'?" == fails(["plan", "--config", config], capsys)
    config.write_text("target: many\n")
    assert f"{config}: target must be an integer or null, not 'many'" in fails(["plan", "--config", config], capsys)


def test_plan_class_the_dataset_lacks_is_one_line(fashion, tmp_path, capsys):
    config = tmp_path / "plan.yaml"
    config.write_text("strategy: {Zebra: 100}\n")
    assert "class 'Zebra', which the dataset does not have" in fails(["plan", "--config", config], capsys)


@pytest.fixture
def plan_file(fashion, tmp_path, capsys) -> Path:
    path = tmp_path / "plan.json"
    assert run(["plan", "--longtail", 5, "--max-per-class", 5, "--out", path], capsys)[0] == 0
    return path


def test_generate_fills_the_store_and_a_rerun_does_nothing(plan_file, tmp_path, capsys):
    out = tmp_path / "store"
    code, stdout, _ = run(["generate", "--plan", plan_file, "--out", out, "--generator", FAKE, "--batch-size", 4, "--no-progress"], capsys)
    assert code == 0 and "28 new images" in stdout
    store = SyntheticStore(out)
    assert len(store.load()) == 28 and store.info["generator_id"] == "fake"
    code, stdout, _ = run(["generate", "--plan", plan_file, "--out", out, "--generator", FAKE, "--no-progress"], capsys)
    assert code == 0 and "0 new images" in stdout and "28 were done already" in stdout


def test_generate_refuses_a_store_of_another_plan_unless_overwrite(plan_file, tmp_path, capsys):
    out = tmp_path / "store"
    assert run(["generate", "--plan", plan_file, "--out", out, "--generator", FAKE, "--no-progress"], capsys)[0] == 0
    message = fails(["generate", "--plan", plan_file, "--out", out, "--generator", FAKE, "--seed", 9], capsys)
    assert "different plan" in message and "--overwrite" in message
    message = fails(["generate", "--plan", plan_file, "--out", out, "--generator", FAKE, "--steps", 3], capsys)
    assert "other generator settings" in message
    code, stdout, _ = run(["generate", "--plan", plan_file, "--out", out, "--generator", FAKE, "--seed", 9, "--overwrite", "--no-progress"], capsys)
    assert code == 0 and "28 new images" in stdout
    assert json.loads((out / "store.json").read_text())["plan"]["seed"] == 9


def test_generate_shards_from_yaml(plan_file, tmp_path, capsys):
    out = tmp_path / "store"
    for shard in (0, 1):
        config = tmp_path / f"gen{shard}.yaml"
        config.write_text(f"plan: {plan_file}\nout: {out}\ngenerator: '{FAKE}'\nshard_index: {shard}\nnum_shards: 2\nprogress: false\n")
        code, stdout, _ = run(["generate", "--config", config], capsys)
        assert code == 0 and "(shard" in stdout
    assert len(SyntheticStore(out).load()) == 28


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--generator", "python:fake_generator"], "python:MODULE:FUNCTION"),
        (["--generator", "python:no_such_module_here:make"], "cannot import module 'no_such_module_here'"),
        (["--generator", "python:fake_generator:missing"], "no function 'missing'"),
        (["--generator", "embeded"], "generator 'embeded' is neither a folder here nor a shipped generator; did you mean 'embedded'?"),
        (["--generator", "Embedded:colored-fashion-mnist"], "did you mean 'embedded:colored-fashion-mnist'?"),
    ],
)
def test_generate_bad_generator_spec_is_one_line(plan_file, tmp_path, capsys, argv, needle):
    assert needle in fails(["generate", "--plan", plan_file, "--out", tmp_path / "s", *argv], capsys)


def test_generate_bad_input_is_one_line(plan_file, tmp_path, capsys):
    assert "needs --plan" in fails(["generate", "--out", tmp_path / "s"], capsys)
    assert "does not exist" in fails(["generate", "--plan", tmp_path / "nope.json", "--out", tmp_path / "s"], capsys)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert "cannot write to output folder" in fails(["generate", "--plan", plan_file, "--out", blocker / "s", "--generator", FAKE], capsys)
    config = tmp_path / "gen.yaml"
    config.write_text("plan: x\nbatch_sise: 3\n")
    assert "did you mean 'batch_size'?" in fails(["generate", "--config", config], capsys)


@pytest.mark.slow  # ~10 s alone; torch's first CPU convolutions take seconds in every process
def test_generate_through_a_tiny_stable_diffusion_checkpoint_resumes_identically(tmp_path, capsys, monkeypatch):
    from fixtures_generation import build_tiny_sd
    from test_store import _failing_save, file_bytes

    model = build_tiny_sd(tmp_path / "tiny-sd")
    plan_file = make_plan([4, 1, 0], ["cat", "dog", "owl"], image_size=(28, 28), channels=1, seed=5).save(tmp_path / "plan.json")
    command = ["generate", "--plan", plan_file, "--generator", model, "--steps", 2, "--batch-size", 3, "--no-progress"]
    code, stdout, _ = run([*command, "--out", tmp_path / "whole"], capsys)
    assert code == 0 and "7 new images" in stdout
    store = SyntheticStore(tmp_path / "whole")
    assert store.info["generator_id"] == "sd:tiny-sd" and store.info["settings"]["steps"] == 2
    assert store.load(in_memory=True).images.shape == (7, 1, 28, 28)
    with monkeypatch.context() as patch:
        patch.setattr(Image.Image, "save", _failing_save(2))
        assert "No space left on device" in fails([*command, "--out", tmp_path / "resumed"], capsys)
    code, stdout, _ = run([*command, "--out", tmp_path / "resumed"], capsys)
    assert code == 0 and "5 new images" in stdout and "2 were done already" in stdout
    assert file_bytes(tmp_path / "resumed") == file_bytes(tmp_path / "whole")
    code, stdout, _ = run([*command, "--out", tmp_path / "whole"], capsys)
    assert code == 0 and "0 new images" in stdout


@pytest.mark.parametrize("native_bf16, dtype", [(True, "bf16"), (False, "fp32")])
def test_embedded_generators_default_to_dtype_auto(tmp_path, capsys, monkeypatch, native_bf16, dtype):
    from fixtures_generation import build_tiny_embedded

    monkeypatch.setattr("synaug.train.trainer._cpu_has_native_bf16", lambda: native_bf16)
    generator = build_tiny_embedded(tmp_path / "tiny", class_names=["cat", "dog"])
    plan_file = make_plan([1, 0], ["cat", "dog"], seed=5).save(tmp_path / "plan.json")
    command = ["generate", "--plan", plan_file, "--generator", generator, "--steps", 2, "--no-progress"]
    assert run([*command, "--out", tmp_path / "default"], capsys)[0] == 0
    assert SyntheticStore(tmp_path / "default").info["settings"]["dtype"] == dtype
    assert run([*command, "--out", tmp_path / "auto", "--dtype", "auto"], capsys)[0] == 0
    assert SyntheticStore(tmp_path / "auto").info["settings"]["dtype"] == dtype


def test_embedded_generator_refuses_classes_it_was_not_trained_on_unless_allowed(tmp_path, capsys):
    from fixtures_generation import build_tiny_embedded

    generator = build_tiny_embedded(tmp_path / "tiny", class_names=["T-shirt/top", "Bag"])
    command = ["generate", "--generator", generator, "--steps", 1, "--no-progress"]
    plan = make_plan([1, 1, 1, 3], ["Tshirt", "bag", "zebra", "T-shirt/top"], seed=5).save(tmp_path / "plan.json")
    message = fails([*command, "--plan", plan, "--out", tmp_path / "store"], capsys)
    assert "trained on T-shirt/top, Bag only" in message and "the prompts of Tshirt, zebra name none" in message
    assert "--class-prompt-names CLASS=NAME" in message and "--generator" in message and "--allow-unknown-classes" in message
    assert not (tmp_path / "store").exists()
    code, _, err = run([*command, "--plan", plan, "--out", tmp_path / "store", "--allow-unknown-classes"], capsys)
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert code == 0 and len(warnings) == 1 and "Traceback" not in err
    assert "the prompts of Tshirt, zebra name none" in warnings[0] and "drawing them anyway" in warnings[0]
    known = make_plan([1, 1], ["bag", "T-SHIRT/TOP"], seed=5).save(tmp_path / "known.json")
    assert "warning" not in run([*command, "--plan", known, "--out", tmp_path / "known"], capsys)[2]


def make_not_a_generator(**options):
    """A factory returning the wrong type, for the test below."""
    return object()


def test_generate_factory_must_return_a_generator(plan_file, tmp_path, capsys):
    message = fails(["generate", "--plan", plan_file, "--out", tmp_path / "s", "--generator", "python:test_generate_cli:make_not_a_generator"], capsys)
    assert "returned a object, not a synaug Generator" in message
    assert not (tmp_path / "s").exists()


class _EverySeed(set):
    def __contains__(self, seed) -> bool:
        return True


def make_failing_generator(**options):
    """The fake generator with every image coming back blank, for the test below."""
    from fake_generator import FakeGenerator

    generator = FakeGenerator(**options)
    generator.bad_seeds = _EverySeed()
    return generator


def test_a_run_whose_every_image_failed_is_an_error(plan_file, tmp_path, capsys):
    message = fails(["generate", "--plan", plan_file, "--out", tmp_path / "s", "--generator", "python:test_generate_cli:make_failing_generator"], capsys)
    assert "new images stayed non-finite or blank after their retry; check the sampler settings" in message
