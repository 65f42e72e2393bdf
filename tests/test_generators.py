"""The embedded generator: training for a few steps, resume, export/load round trip, the quality gate."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from data_writers import write_fashion_mnist
from fixtures_generation import single_thread_torch  # noqa: F401  (fixture)
from train_helpers import pattern_images

from synaug.cli import main
from synaug.errors import SynaugError
from synaug.generate.backends.embedded import EmbeddedBackend
from synaug.generators.check import GateThresholds, Oracle, check_generator, check_markdown, write_check
from synaug.generators.training import GeneratorTrainConfig, train_generator
from synaug.train.trainer import TrainConfig, train_classifier

pytestmark = pytest.mark.usefixtures("single_thread_torch")


def tiny_config(**overrides) -> GeneratorTrainConfig:
    values = dict(
        block_out_channels=[8, 16], layers_per_block=1, norm_num_groups=4, steps=3, batch_size=8,
        checkpoint_every=1, warmup_steps=1, precision="fp32", device="cpu",
        sampler={"scheduler": "ddim", "steps": 3, "guidance_scale": 1.0},
    )
    values.update(overrides)
    return GeneratorTrainConfig(**values)


@pytest.fixture(scope="module")
def tiny_data():
    return pattern_images(6, size=12)


def test_train_export_and_load_round_trip(tmp_path, tiny_data):
    folder = train_generator(tiny_data, tiny_config(), tmp_path / "gen", progress=False)
    meta = json.loads((folder / "synaug_generator.json").read_text())
    assert meta["class_names"] == tiny_data.class_names
    assert meta["training"]["steps"] == 3
    backend = EmbeddedBackend.from_pretrained(folder, batch_size=4)
    out = backend.generate(["a photo of a vertical", "a photo of a checker"], [1, 2])
    assert out.images.shape == (2, 1, 12, 12) and out.images.dtype == torch.uint8
    again = EmbeddedBackend.from_pretrained(folder, batch_size=4).generate(["a photo of a vertical"], [1])
    assert torch.equal(again.images[0], out.images[0])  # same seed, same image
    # The exported weights are the EMA weights, not the raw ones.
    from safetensors.torch import load_file

    raw = load_file(str(tmp_path / "gen" / "checkpoint" / "unet.safetensors"))
    exported = load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))
    assert raw.keys() == exported.keys()
    assert any(not torch.equal(raw[k], exported[k]) for k in raw)


def test_resume_continues_from_the_checkpoint(tmp_path, tiny_data):
    out = tmp_path / "gen"
    train_generator(tiny_data, tiny_config(steps=2), out, progress=False)
    train_generator(tiny_data, tiny_config(steps=4), out, progress=False)
    steps = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == [2, 4]  # the second run started at step 2, not 0
    assert json.loads((out / "checkpoint" / "progress.json").read_text())["step"] == 4


def test_resume_with_other_settings_is_refused(tmp_path, tiny_data):
    out = tmp_path / "gen"
    train_generator(tiny_data, tiny_config(steps=1), out, progress=False)
    with pytest.raises(SynaugError, match="other settings.*lr"):
        train_generator(tiny_data, tiny_config(steps=2, lr=1e-2), out, progress=False)


def test_loss_goes_down(tmp_path, tiny_data):
    out = tmp_path / "gen"
    train_generator(tiny_data, tiny_config(steps=200, checkpoint_every=1000, lr=2e-3, batch_size=16), out, progress=False)
    losses = [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert losses[-1] < 0.6 * losses[0]


def test_warm_start_from_an_exported_model(tmp_path, tiny_data):
    first = train_generator(tiny_data, tiny_config(), tmp_path / "a", progress=False)
    second = train_generator(tiny_data, tiny_config(steps=1, init_from=str(first)), tmp_path / "b", progress=False)
    with pytest.raises(SynaugError, match="another architecture"):
        train_generator(tiny_data, tiny_config(block_out_channels=[8, 8], init_from=str(second)), tmp_path / "c", progress=False)


def test_template_with_unknown_field(tmp_path, tiny_data):
    with pytest.raises(SynaugError, match="unknown field 'context'"):
        train_generator(tiny_data, tiny_config(caption_templates=["a {context} {class}"]), tmp_path / "g", progress=False)


def test_cli_trains_on_the_reserved_half(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SYNAUG_FASHION_MNIST", str(write_fashion_mnist(tmp_path / "fm", train_per_class=4)))
    code = main([
        "generator", "train", "--out", str(tmp_path / "gen"), "--steps", "2", "--batch-size", "4",
        "--blocks", "8,16", "--precision", "fp32", "--device", "cpu", "--quiet",
    ])
    assert code == 0
    meta = json.loads((tmp_path / "gen" / "model" / "synaug_generator.json").read_text())
    assert meta["training"]["images"] == 20  # half of the 40 training images
    assert main(["generator", "train", "--out", str(tmp_path / "x"), "--dataset", "nope"]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--blocks", "16,abc"], "--blocks 16,abc must be whole numbers separated by commas"),
        (["--blocks", "15,30"], "block widths [15, 30] must be whole numbers, each a multiple of norm_num_groups=8"),
        (["--lr", "-1"], "need lr > 0"),
        (["--layers-per-block", "0"], "layers_per_block, steps, batch_size and checkpoint_every must each be at least 1"),
        (["--batch-size", "0"], "must each be at least 1"),
        (["--steps", "0"], "must each be at least 1"),
        (["--max-minutes", "0"], "max_minutes 0.0 must be positive"),
        (["--template", "nocls"], "caption template 'nocls' lacks {class}"),
        (["--size", "0"], "--size 0 must be at least 1"),
        (["--size", "32"], "--size and --channels apply to file-backed datasets"),
        (["--checkpoint-every", "0"], "must each be at least 1"),
    ],
)
def test_cli_refuses_bad_training_settings_in_one_line(tmp_path, monkeypatch, capsys, options, message):
    monkeypatch.setenv("SYNAUG_FASHION_MNIST", str(write_fashion_mnist(tmp_path / "fm", train_per_class=4)))
    assert main(["generator", "train", "--out", str(tmp_path / "gen"), "--device", "cpu", "--quiet", *options]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "gen").exists()


def test_check_on_a_tiny_generator(tmp_path, tiny_data):
    folder = train_generator(tiny_data, tiny_config(), tmp_path / "gen", progress=False)
    backend = EmbeddedBackend.from_pretrained(folder, batch_size=16)
    result = train_classifier(tiny_data, TrainConfig(epochs=2, batch_size=8, device="cpu", amp="off"), progress=False)
    oracle = Oracle(result.model.eval(), result.normalizer)
    test = pattern_images(4, size=12, seed=1)
    report, generated = check_generator(backend, oracle, test, reference=tiny_data, per_cell=3, seed=0)
    assert len(report.cells) == 3 and len(generated) == 9
    for row in report.cells:
        assert 0 <= row["generated_accuracy"] <= 100 and row["generated_nn_distance"] > 0
    # The verdict follows the thresholds: an impossible gate fails, a lax one passes.
    strict, _ = check_generator(backend, oracle, test, per_cell=3, thresholds=GateThresholds(mean_gap=-101.0))
    lax, _ = check_generator(backend, oracle, test, per_cell=3, thresholds=GateThresholds(mean_gap=101, cell_gap=101))
    assert not strict.passed and lax.passed
    write_check(report, generated, test, tmp_path / "check")
    assert {p.name for p in (tmp_path / "check").iterdir()} >= {"check.json", "check.md", "samples.png"}
    assert "Gate" in check_markdown(report)


def test_check_per_context_cell(tmp_path):
    from synaug.data.spurious import uniform_contexts, with_contexts

    gray = pattern_images(6, size=12)
    colored = with_contexts(gray, uniform_contexts(len(gray)))
    folder = train_generator(colored, tiny_config(caption_templates=["a {class} on a {context} background"]), tmp_path / "g", progress=False)
    backend = EmbeddedBackend.from_pretrained(folder, batch_size=16)
    result = train_classifier(colored, TrainConfig(epochs=1, batch_size=8, device="cpu", amp="off"), progress=False)
    oracle = Oracle(result.model.eval(), result.normalizer)
    report, generated = check_generator(backend, oracle, colored, per_cell=2, context_oracle=oracle)
    assert [(r["class"], r["context"]) for r in report.cells][:2] == [("horizontal", "red"), ("horizontal", "blue")]
    assert generated.images.shape[1] == 3 and set(np.unique(generated.groups)) == {0, 1}


def test_generator_check_exits_1_when_the_gate_fails_and_names_the_world_a_generator_needs(tmp_path, monkeypatch, capsys):
    import synaug.generators.check as check

    assert main(["generator", "check", "--out", str(tmp_path / "c"), "--generator", "embedded:colored-fashion-mnist"]) == 2
    assert "draws class x context images; check it with --world colored-fashion-mnist." in capsys.readouterr().err
    failed = SimpleNamespace(passed=False)
    monkeypatch.setattr(check, "fashion_mnist_world", lambda colored, root: SimpleNamespace(real_test=None, reference=None))
    monkeypatch.setattr(check, "train_oracles", lambda data, out, seed: (None, None))
    monkeypatch.setattr(check, "check_generator", lambda *args, **kwargs: (failed, None))
    monkeypatch.setattr(check, "write_check", lambda *args: None)
    monkeypatch.setattr(check, "check_markdown", lambda report: "**Gate FAILED.**")
    assert main(["generator", "check", "--out", str(tmp_path / "c")]) == 1
    assert "Gate FAILED" in capsys.readouterr().out
    assert main(["generator", "check", "--out", str(tmp_path / "c"), "--per-cell", "0"]) == 2
    assert "--per-cell 0 must be at least 1" in capsys.readouterr().err
