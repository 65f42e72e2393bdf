"""Bad input through the real command line: each case exits 2 with exactly one line on stderr.

Every case runs ``synaug.cli.main`` in this process (the console script's own entry point: it
prints ``error: ...`` and returns the exit status, so stderr and the status are exactly what a
shell sees; ``test_data_cli.test_console_script_exits_2_with_one_line`` runs the real process). Work is forbidden
while a case runs: a training step or a generated batch fails the test, so every error must
come before any work. A case's fresh ``{out}`` path must not exist afterwards.
Run: ``pytest tests/test_bad_inputs.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from data_writers import write_fashion_mnist, write_image
from fake_generator import FakeGenerator
from fixtures_exemplar_generator import build_tiny_exemplar_embedded
from fixtures_guidance import tiny_checkpoint
from tiny_transformers import save_backbone

from synaug.cli import main
from synaug.data.fashion_mnist import FASHION_MNIST_CLASSES
from synaug.data.longtail import longtail_counts
from synaug.errors import SynaugError
from synaug.generate.backends.base import Generator
from synaug.generate.runner import generate_plan
from synaug.generate.store import SyntheticStore
from synaug.plan import make_plan

FAKE = "python:fake_generator:make_generator"


class FailingGenerator(FakeGenerator):
    """Every image comes back not ok (as NaN or blank images do)."""

    def _generate_batch(self, prompts, seeds, **kwargs):
        output = super()._generate_batch(prompts, seeds, **kwargs)
        output.ok[:] = False
        return output


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """The files the cases point at (built once; no case may change them)."""
    root = tmp_path_factory.mktemp("bad-inputs")
    fashion = write_fashion_mnist(root / "fashion", train_per_class=20, test_per_class=2)
    plan = make_plan(longtail_counts(10, 5, 5), FASHION_MNIST_CLASSES, image_size=(28, 28), channels=1, seed=3)
    plan_file = plan.save(root / "plan.json")
    digits = make_plan([2, 1, 1], ["zero", "one", "eight"], image_size=(28, 28), channels=1).save(root / "digits.json")
    failed = SyntheticStore(root / "failed-store")
    with pytest.raises(SynaugError, match="all 28 new images stayed non-finite or blank"):  # recorded as failed all the same
        generate_plan(plan, FailingGenerator(size=28), failed, batch_size=32, progress=False)
    finished = SyntheticStore(root / "finished-store")
    generate_plan(plan, FakeGenerator(size=28), finished, batch_size=32, progress=False)
    not_store = root / "my-photos"
    write_image(not_store / "holiday.png")
    images = root / "images"
    for c in "abc":
        for i in range(2):
            write_image(images / c / f"{i}.png", color=(80 * "abc".index(c), 40 * i, 90))
    (root / "train.txt").write_text("".join(f"{c}/{i}.png {label}\n" for label, c in enumerate("ab") for i in range(2)))
    (root / "test.txt").write_text("".join(f"{c}/{i}.png {label}\n" for label, c in enumerate("abc") for i in range(2)))
    for split, classes in (("train", "ab"), ("test", "abc")):
        for c in classes:
            write_image(root / "tree" / split / c / "0.png")
    corrupt = root / "corrupt" / "train"
    for c in "ab":
        write_image(corrupt / c / "0.png")
    (corrupt / "b" / "1.png").write_bytes(write_image(root / "whole.png").read_bytes()[:40])  # a truncated PNG
    blocker = root / "a-file"
    blocker.write_text("not a folder")
    yaml_files = {
        "nan_yaml": ("plan.yaml", "longtail: .nan\n"),
        "inf_guidance_yaml": ("generate.yaml", "guidance: .inf\n"),
        "nan_lr_yaml": ("train.yaml", "lr: .nan\nepochs: 1\n"),
        "proc_run": ("run.yaml", "data: {kind: fashion-mnist}\ngenerator: {spec: 'python:fake_generator:make_generator'}\n"
                                 "runs: {recipes: [ce], seeds: [0]}\noutput: /proc/synaug-run\n"),
        "extra_class_run": ("run-extra.yaml", f"data: {{kind: imagefolder, root: '{root / 'tree'}', size: 8}}\n"
                                              f"output: '{root / 'extra-class-run'}'\n"),
        "nan_run": ("run-nan.yaml", "data: {kind: fashion-mnist}\ntrain: {lr: .nan}\noutput: run\n"),
        "unknown_descriptions": ("unknown.txt", "".join(f"{c}: a photo of a {c}\n" for c in FASHION_MNIST_CLASSES) + "Zebra: a zebra\n"),
        "partial_descriptions": ("partial.txt", "T-shirt/top: a plain t-shirt\nTrouser: blue jeans\n"),
    }
    paths = {name: root / file for name, (file, _) in yaml_files.items()}
    for name, (_, text) in yaml_files.items():
        paths[name].write_text(text)
    return {
        "fashion": fashion, "plan": plan_file, "digits": digits, "failed": failed.root, "not_store": not_store, "images": images,
        "train_list": root / "train.txt", "test_list": root / "test.txt", "corrupt": corrupt.parent, "blocker": blocker,
        "checkpoint": tiny_checkpoint(root / "checkpoint", FASHION_MNIST_CLASSES), "missing": root / "no-such-thing", **paths,
        "exemplar_generator": build_tiny_exemplar_embedded(root / "exemplar-generator"),
        "finished": finished.root, "rgb_backbone": save_backbone(root / "rgb-resnet", "resnet", channels=3),
    }


SPLIT_LIST = ["--dataset", "split-list", "--root", "{images}", "--list-file", "{train_list}", "--test-list-file", "{test_list}"]
GEN = ["generate", "--plan", "{plan}", "--out", "{out}"]

# (id, argv, a part of the error line). Cheap cases first: parsing, then files, then loading a generator.
CASES = [
    ("unknown-command", ["trian"], "No such command 'trian'"),
    ("unknown-option", ["plan", "--longtale", "5"], "No such option: --longtale"),
    ("float-not-a-number", ["plan", "--longtail", "five"], "Invalid value for '--longtail'"),
    ("plan-longtail-nan", ["plan", "--longtail", "nan"], "longtail is nan; give a finite number"),
    ("plan-longtail-inf", ["plan", "--longtail", "inf"], "longtail is inf; give a finite number"),
    ("plan-reserve-nan", ["plan", "--longtail", "5", "--reserve", "nan"], "reserve is nan"),
    ("plan-reserve-alone-nan", ["plan", "--reserve", "nan"], "reserve is nan"),
    ("plan-estimate-rate-nan", ["plan", "--plan", "{plan}", "--estimate", "--rate", "nan"], "rate is nan"),
    ("plan-estimate-rate-inf", ["plan", "--plan", "{plan}", "--estimate", "--rate", "inf"], "rate is inf"),
    ("plan-rate-negative", ["plan", "--longtail", "5", "--rate", "-1", "--out", "{out}"], "rate -1.0 must be positive"),
    ("plan-yaml-nan", ["plan", "--config", "{nan_yaml}"], "longtail is nan"),
    ("plan-strategy-unknown", ["plan", "--strategy", "fill-up", "--out", "{out}"], "unknown strategy 'fill-up'"),
    ("plan-template-without-class", ["plan", "--template", "a photo", "--out", "{out}"], "has no {class}"),
    ("plan-missing-plan-file", ["plan", "--plan", "{missing}"], "does not exist"),
    ("plan-missing-index", ["plan", "--index", "{missing}"], "does not exist"),
    ("plan-index-and-longtail", ["plan", "--index", "{missing}", "--longtail", "5"], "either --index or --longtail"),
    ("data-longtail-if-nan", ["data", "longtail", "--imbalance-factor", "nan", "--out", "{out}"], "--imbalance-factor is nan"),
    ("data-longtail-step-inf", ["data", "longtail", "--step-fraction", "inf", "--out", "{out}"], "--step-fraction is inf"),
    ("data-longtail-reserve-nan", ["data", "longtail", "--reserve", "nan", "--out", "{out}"], "reserve is nan"),
    ("data-describe-unknown-dataset", ["data", "describe", "--dataset", "mnist-ish"], "unknown dataset 'mnist-ish'"),
    ("data-describe-missing-folder", ["data", "describe", "--dataset", "imagefolder", "--root", "{missing}"], "does not exist"),
    ("data-describe-corrupt-png", ["data", "describe", "--dataset", "imagefolder", "--root", "{corrupt}"], "1.png is corrupt or truncated"),
    ("train-lr-nan", ["train", "--lr", "nan", "--out", "{out}"], "lr is nan; give a finite number"),
    ("train-lr-inf", ["train", "--lr", "inf", "--out", "{out}"], "lr is inf"),
    ("train-lr-negative", ["train", "--lr", "-0.1", "--out", "{out}"], "need lr > 0"),
    ("train-mixup-nan", ["train", "--mixup-alpha", "nan", "--out", "{out}"], "mixup_alpha is nan"),
    ("train-cutmix-inf", ["train", "--cutmix-alpha", "inf", "--out", "{out}"], "cutmix_alpha is inf"),
    ("train-longtail-nan", ["train", "--longtail", "nan", "--out", "{out}"], "longtail is nan"),
    ("train-yaml-lr-nan", ["train", "--config", "{nan_lr_yaml}", "--out", "{out}"], "lr is nan"),
    ("train-epochs-zero", ["train", "--epochs", "0", "--out", "{out}"], "epochs and batch_size must be at least 1"),
    ("train-no-out", ["train", "--epochs", "1"], "needs --out FOLDER"),
    ("train-unknown-recipe", ["train", "--recipe", "magic", "--out", "{out}"], "unknown recipe 'magic'"),
    ("train-unknown-crt-source", ["train", "--crt-source", "both", "--out", "{out}"], "unknown crt_source 'both'"),
    ("train-out-in-proc", ["train", "--epochs", "1", "--out", "/proc/synaug-out"], "cannot write to /proc/synaug-out"),
    ("train-out-under-a-file", ["train", "--epochs", "1", "--out", "{blocker}/run"], "a-file is a file, not a folder"),
    ("train-synthetic-not-a-store", ["train", "--epochs", "1", "--synthetic", "{not_store}", "--out", "{out}"],
     "my-photos is not a synaug store (no store.json); give the --out folder `synaug generate` filled"),
    ("train-synthetic-missing-store", ["train", "--epochs", "1", "--synthetic", "{missing}", "--out", "{out}"], "is not a synaug store"),
    ("train-synthetic-all-failed", ["train", "--longtail", "5", "--max-per-class", "5", "--synthetic", "{failed}", "--out", "{out}"],
     "every image in"),
    ("train-test-class-missing-from-train", ["train", *SPLIT_LIST, "--epochs", "1", "--out", "{out}"],
     "the test split has class '2', which the training data lacks"),
    ("run-output-in-proc", ["run", "{proc_run}"], "cannot write to /proc/synaug-run"),
    ("run-test-class-missing-from-train", ["run", "{extra_class_run}", "--no-progress"],
     "the test set has class 'c', which the training set lacks"),
    ("run-config-lr-nan", ["run", "{nan_run}"], "lr is nan"),
    ("demo-out-in-proc", ["demo", "--out", "/proc/synaug-demo"], "cannot write to /proc/synaug-demo"),
    ("generator-train-out-in-proc", ["generator", "train", "--out", "/proc/synaug-generator", "--steps", "1"],
     "cannot write to /proc/synaug-generator"),
    ("generator-train-lr-nan", ["generator", "train", "--out", "{out}", "--lr", "nan"], "need lr > 0"),
    ("generator-train-minutes-nan", ["generator", "train", "--out", "{out}", "--max-minutes", "nan"], "max_minutes nan must be positive"),
    ("data-describe-out-in-proc", ["data", "describe", "--out", "/proc/synaug.png"], "cannot write to /proc"),
    ("data-longtail-out-in-proc", ["data", "longtail", "--imbalance-factor", "5", "--out", "/proc/synaug.json"], "cannot write to /proc"),
    ("evaluate-out-under-a-file", ["evaluate", "{checkpoint}", "--out", "{blocker}"], "a-file is a file, not a folder"),
    ("evaluate-missing-checkpoint", ["evaluate", "{missing}", "--out", "{out}"], "no-such-thing"),
    ("generate-no-plan", ["generate", "--out", "{out}"], "generate needs --plan"),
    ("generate-missing-plan", ["generate", "--plan", "{missing}", "--out", "{out}"], "does not exist"),
    ("generate-guidance-nan", [*GEN, "--guidance", "nan"], "guidance is nan"),
    ("generate-yaml-guidance-inf", ["generate", "--config", "{inf_guidance_yaml}", "--plan", "{plan}", "--out", "{out}"], "guidance is inf"),
    ("generate-feedback-scale-nan", [*GEN, "--feedback", "entropy", "--feedback-scale", "nan"], "--feedback-scale is nan"),
    ("generate-cpus-per-worker-inf", [*GEN, "--ray", "--cpus-per-worker", "inf"], "--cpus-per-worker is inf"),
    ("generate-feedback-option-alone", [*GEN, "--feedback-every", "2", "--generator", FAKE], "add --feedback CRITERION"),
    ("generate-bad-python-spec", [*GEN, "--generator", "python:fake_generator"], "python:MODULE:FUNCTION"),
    ("generate-out-under-a-file", ["generate", "--plan", "{plan}", "--out", "{blocker}/store", "--generator", FAKE],
     "cannot write to output folder"),
    ("generate-embedded-on-unknown-classes", ["generate", "--plan", "{digits}", "--out", "{out}", "--generator", "embedded"],
     "the prompts of one, eight name none of these"),
    ("generate-guidance-1e9", [*GEN, "--guidance", "1e9"], "guidance scale 1e+09 is outside [0, 30]"),
    ("generate-guidance-negative", [*GEN, "--guidance", "-2"], "guidance scale -2 is outside [0, 30]"),
    ("generate-steps-zero", [*GEN, "--steps", "0"], "use at least 1 sampling step"),
    ("generate-exemplar-generator-on-unknown-classes",
     ["generate", "--plan", "{digits}", "--out", "{out}", "--generator", "{exemplar_generator}", "--reference", "real"],
     "the prompts of one, eight name none of these"),
    ("generate-exemplar-generator-strength-zero", [*GEN, "--generator", "{exemplar_generator}", "--reference", "real", "--strength", "0"],
     "strength 0.0 must lie in (0, 1]"),
    ("generator-check-strength-above-one", ["generator", "check", "--out", "{out}", "--generator", "{exemplar_generator}", "--strength", "1.5"],
     "--strength 1.5 must lie in (0, 1]"),
    ("generator-check-strength-without-exemplars", ["generator", "check", "--out", "{out}", "--strength", "0.5"],
     "--strength shapes how exemplars enter the images, and none are given; add --exemplars real"),
    ("generator-check-unknown-exemplars", ["generator", "check", "--out", "{out}", "--exemplars", "photos"], "--exemplars 'photos' is not known"),
    ("generator-train-exemplar-grid-zero", ["generator", "train", "--out", "{out}", "--exemplar-grid", "0"],
     "exemplar_grid, exemplar_neighbours and exemplar_hidden must each be at least 1"),
    ("filter-clip-not-a-clip-model", ["filter", "{finished}", "--clip", "{not_store}"], "my-photos is not a CLIP model (no config.json)"),
    ("filter-threshold-keeps-no-image", ["filter", "{finished}", "--classifier", "{checkpoint}", "--confidence-threshold", "1.01"],
     "passed); lower the threshold or use keep_best"),
    ("plan-descriptions-unknown-class", ["plan", "--longtail", "5", "--descriptions", "{unknown_descriptions}", "--out", "{out}"],
     "names class 'Zebra', which the dataset does not have"),
    ("plan-descriptions-missing-classes", ["plan", "--longtail", "5", "--descriptions", "{partial_descriptions}", "--out", "{out}"],
     "has no prompt for"),
    ("export-target-not-empty", ["export", "{finished}", "--format", "hf", "--out", "{not_store}"], "exists and is not empty"),
]


@pytest.fixture
def no_work(monkeypatch):
    """Training steps and generated batches fail the case: every error must come before any work."""

    def forbidden(*args, **kwargs):
        raise AssertionError("a bad-input case started real work")

    monkeypatch.setattr(torch.optim.Optimizer, "step", forbidden)
    monkeypatch.setattr(Generator, "generate", forbidden)


def fill(argv: list[str], world: dict[str, Path], out: Path) -> list[str]:
    return [arg.format(out=out, **world) if "{" in arg and "{class}" not in arg else arg for arg in argv]


@pytest.mark.parametrize("argv, needle", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_one_line_and_status_2(world, argv, needle, tmp_path, capsys, monkeypatch, no_work):
    monkeypatch.setenv("SYNAUG_FASHION_MNIST", str(world["fashion"]))
    out = tmp_path / "out"
    status = main(fill(argv, world, out))
    captured = capsys.readouterr()
    assert status == 2, captured.err
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    assert needle in captured.err, captured.err
    assert captured.out == ""
    assert not out.exists(), "an output was (half) written"


def test_a_backbone_that_does_not_fit_the_data_is_one_line_before_any_step(world, tmp_path, capsys, monkeypatch, no_work):
    """Like the cases above, except that `synaug train` has printed its one-line header when the model is built."""
    monkeypatch.setenv("SYNAUG_FASHION_MNIST", str(world["fashion"]))
    out = tmp_path / "out"
    status = main(["train", "--longtail", "5", "--model", f"hf:{world['rgb_backbone']}", "--epochs", "1", "--out", str(out)])
    captured = capsys.readouterr()
    assert status == 2 and captured.err.count("\n") == 1, captured.err
    assert "takes 3-channel images but the data has 1; set the data's channels to 3" in captured.err
    assert captured.out.startswith("training hf:") and "trained in" not in captured.out  # the header only (wrapped by the console)
    assert not out.exists(), "an output was (half) written"


def test_there_are_at_least_40_cases_with_distinct_names():
    names = [case[0] for case in CASES]
    assert len(names) >= 40 and len(set(names)) == len(names)


def test_a_suggested_command_never_writes_into_a_folder_holding_other_files(world):
    with pytest.raises(SynaugError) as error:
        SyntheticStore(world["not_store"]).plan
    assert "--out" in str(error.value) and f"--out {world['not_store']}" not in str(error.value)


def test_the_failed_store_really_holds_only_failed_images(world):
    manifest = SyntheticStore(world["failed"]).manifest()
    assert len(manifest) == 28 and set(np.unique(manifest["status"])) == {"failed"}


NAN, INF = float("nan"), float("inf")


def library_calls():
    """(name, call) of library entry points given a NaN or infinite number: the checks the CLI surfaces."""
    from synaug.config import coerce_value
    from synaug.data.benchmarks import longtail_indices, pool_indices
    from synaug.data.splits import disjoint_split
    from synaug.generate.bench import estimate_plan
    from synaug.train import TrainConfig

    labels = np.repeat(np.arange(3), 10)
    plan = make_plan([1, 2], ["a", "b"])
    return [
        ("longtail_counts", lambda: longtail_counts(3, 10, NAN), "imbalance factor nan is not a number"),
        ("longtail_indices", lambda: longtail_indices(labels, NAN, 5), "imbalance factor nan is not a number"),
        ("pool_indices", lambda: pool_indices(30, NAN), "cannot reserve nan of 30 items"),
        ("disjoint_split", lambda: disjoint_split(30, INF), "cannot reserve inf of 30 items"),
        ("estimate_plan", lambda: estimate_plan(plan, None, NAN, None, 1), "rate nan must be a positive finite number"),
        ("TrainConfig", lambda: TrainConfig(lr=NAN), "lr is nan; give a finite number"),
        ("TrainConfig-mixup", lambda: TrainConfig(mixup_alpha=INF), "mixup_alpha is inf"),
        ("coerce_value", lambda: coerce_value(NAN, float, "data.reserve"), "data.reserve is nan; give a finite number"),
    ]


@pytest.mark.parametrize("index", range(len(library_calls())), ids=[name for name, *_ in library_calls()])
def test_the_library_refuses_non_finite_numbers(index):
    _, call, needle = library_calls()[index]
    with pytest.raises(SynaugError, match=re.escape(needle)):
        call()
