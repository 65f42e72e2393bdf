"""`synaug generate --feedback ...` through the real command line, on both backends, and killed part-way."""

from __future__ import annotations

import math

import pytest
import yaml

from data_writers import write_fashion_mnist
from fixtures_generation import FASHION_CLASSES, build_tiny_embedded, build_tiny_sd, single_thread_torch  # noqa: F401 (fixture)
from fixtures_guidance import tiny_checkpoint
from cli_helpers import fails, run
from synaug.cli import main
from synaug.generate.store import SyntheticStore
from synaug.guidance import criteria
from synaug.guidance.classifier import GAUSSIANS_FILE
from synaug.guidance.criteria import CRITERIA, register_criterion
from test_resume import check_matches_reference, kill_when_blocked, pngs, start

pytestmark = pytest.mark.usefixtures("single_thread_torch")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Fashion-MNIST-shaped files, a long-tail index, its plan, a plan-options YAML, a checkpoint, a tiny generator."""
    root = tmp_path_factory.mktemp("fg-cli")
    fashion = write_fashion_mnist(root / "fashion", train_per_class=20, test_per_class=1)
    patch = pytest.MonkeyPatch()
    patch.setenv("SYNAUG_FASHION_MNIST", str(fashion))
    index = root / "lt.json"
    assert main(["data", "longtail", "--imbalance-factor", "4", "--max-per-class", "8", "--out", str(index)]) == 0
    plan = root / "plan.json"
    assert main(["plan", "--index", str(index), "--out", str(plan), "--seed", "2"]) == 0
    options = root / "plan-options.yaml"
    options.write_text(yaml.safe_dump({"index": str(index), "out": str(plan)}))
    yield {
        "index": index, "plan": plan, "options": options,
        "checkpoint": tiny_checkpoint(root / "classifier" / "checkpoint", FASHION_CLASSES),
        "embedded": build_tiny_embedded(root / "tiny-embedded"),
    }
    patch.undo()


def generate(world, out, *extra, classifier: bool = True):
    return ["generate", "--plan", world["plan"], "--out", out, "--generator", world["embedded"], "--batch-size", 8,
            "--no-progress", *(["--feedback-classifier", world["checkpoint"]] if classifier else []), *extra]


def test_entropy_guidance_on_the_embedded_backend_records_criteria(world, tmp_path, capsys):
    code, stdout, err = run(generate(world, tmp_path / "s", "--feedback", "entropy", "--feedback-every", 2,
                                     "--feedback-window", "0:0.5"), capsys)
    assert code == 0, err
    store = SyntheticStore(tmp_path / "s")
    manifest = store.manifest()
    planned = store.plan.total
    assert f"{planned} new images" in stdout and len(manifest) == planned
    assert manifest["criterion"].between(0, math.log(10)).all()
    hook = store.info["settings"]["hooks"][0]
    assert (hook["criterion"], hook["every"], hook["start"], hook["stop"], hook["gradient_path"]) == ("entropy", 2, 0.0, 0.5, "x0")


def test_hardness_guidance_fits_its_gaussians_on_the_plan_data_and_caches_them(world, tmp_path, capsys):
    checkpoint = tiny_checkpoint(tmp_path / "own" / "checkpoint", FASHION_CLASSES, seed=3)
    command = [*generate(world, tmp_path / "s", "--feedback", "hardness", "--feedback-data", world["index"]),
               "--feedback-classifier", checkpoint]
    code, _, err = run(command, capsys)
    assert code == 0, err
    assert (checkpoint / GAUSSIANS_FILE).is_file()
    manifest = SyntheticStore(tmp_path / "s").manifest()
    assert manifest["criterion"].notna().all()


@pytest.fixture
def margin_registered():
    saved = dict(CRITERIA)
    register_criterion("margin", lambda logits, features, target: logits.amax(dim=1) - logits.gather(1, target.view(-1, 1)).squeeze(1))
    yield
    CRITERIA.clear()
    CRITERIA.update(saved)
    criteria.NEEDS_NO_TARGET.discard("margin")


def test_a_registered_criterion_works_from_the_command_line(world, tmp_path, capsys, margin_registered):
    code, _, err = run(generate(world, tmp_path / "s", "--feedback", "margin", "--feedback-every", 1, "--feedback-scale", 0.1), capsys)
    assert code == 0, err
    manifest = SyntheticStore(tmp_path / "s").manifest()
    assert (manifest["criterion"] >= 0).all()  # the largest logit minus the target's
    assert SyntheticStore(tmp_path / "s").info["settings"]["hooks"][0]["criterion"] == "margin"


def test_loss_guidance_on_stable_diffusion_from_real_reference_images(world, tmp_path, capsys):
    model = build_tiny_sd(tmp_path / "tiny-sd")
    command = ["generate", "--plan", world["plan"], "--generator", model, "--steps", 4, "--batch-size", 8, "--no-progress",
               "--feedback", "loss", "--feedback-classifier", world["checkpoint"], "--feedback-path", "full", "--feedback-every", 1,
               "--reference", "real", "--real-data", world["options"]]
    code, stdout, err = run([*command, "--out", tmp_path / "s"], capsys)
    assert code == 0, err
    store = SyntheticStore(tmp_path / "s")
    assert store.info["settings"]["reference_images"]["count"] > 0
    assert store.info["settings"]["hooks"][0]["gradient_path"] == "full"
    assert store.load(in_memory=True).images.shape[1:] == (1, 28, 28)
    assert store.manifest()["criterion"].notna().all()
    code, stdout, err = run([*command, "--out", tmp_path / "s"], capsys)
    assert code == 0 and "0 new images" in stdout


@pytest.mark.parametrize(
    "extra, classifier, needle",
    [
        (["--feedback", "entropy"], False, "--feedback needs --feedback-classifier"),
        ([], True, "--feedback-classifier sets up feedback guidance; add --feedback"),
        (["--feedback-scale", "0.1"], False, "--feedback-scale sets up feedback guidance; add --feedback"),
        (["--feedback", "entropy", "--feedback-scale", "inf"], True, "--feedback-scale is inf; give a finite number"),
        (["--feedback", "entropy", "--feedback-window", "half"], True, "--feedback-window 'half' is not START:STOP"),
        (["--feedback", "entropy", "--feedback-window", "0.95:1", "--feedback-every", "5"], True, "every 5 steps, guides none of the generator's"),
        (["--feedback", "entropy", "--feedback-window", "0.5:0.2"], True, "hook window start=0.5, stop=0.2"),
        (["--feedback", "confusion"], True, "unknown feedback criterion 'confusion'"),
        (["--feedback", "entropy", "--feedback-path", "both"], True, "unknown gradient path 'both'"),
        (["--feedback", "hardness"], True, "needs the real training data"),
        (["--reference", "synthetic"], False, "--reference 'synthetic' is not known"),
        (["--reference", "real"], False, "--reference real needs the plan's real data"),
        (["--reference", "real", "--real-data", "missing.yaml"], False, "config file missing.yaml does not exist"),
        (["--feedback", "entropy", "--feedback-classifier", "no-such-folder"], False, "checkpoint folder no-such-folder does not exist"),
    ],
)
def test_bad_feedback_options_are_one_line(world, tmp_path, capsys, extra, classifier, needle):
    assert needle in fails(generate(world, tmp_path / "s", *extra, classifier=classifier), capsys)
    assert not (tmp_path / "s").exists()


def test_a_plan_of_other_classes_is_refused(world, tmp_path, capsys):
    other = tiny_checkpoint(tmp_path / "other", [f"c{i}" for i in range(10)])
    message = fails([*generate(world, tmp_path / "s", "--feedback", "entropy"), "--feedback-classifier", other], capsys)
    assert "the plan has class 0 'T-shirt/top', the feedback classifier 'c0'" in message


def test_guided_generation_killed_part_way_then_rerun_gives_the_uninterrupted_result(world, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SYNAUG_TEST_GENERATOR", str(world["embedded"]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the same arithmetic as this single-threaded process
    slow = "python:fixtures_guidance:make_slow_embedded"
    extra = ["--generator", slow, "--feedback", "loss", "--feedback-classifier", str(world["checkpoint"]), "--feedback-every", "1",
             "--reference", "real", "--real-data", str(world["index"])]
    reference = tmp_path / "reference"
    code, _, err = run(["generate", "--plan", world["plan"], "--out", reference, "--batch-size", 3, "--no-progress", *extra], capsys)
    assert code == 0, err
    total = SyntheticStore(reference).plan.total
    out, blocked = tmp_path / "store", tmp_path / "blocked"
    third_batch = list(SyntheticStore(reference).plan.rows())[6]  # stop for good there, once the first two are recorded
    process = start(world["plan"], out, 0.0, *extra, FAKE_GENERATOR_BLOCK_AT=str(SyntheticStore(reference).plan.seed_for(third_batch, 0)),
                    FAKE_GENERATOR_BLOCKED_FILE=str(blocked))
    kill_when_blocked(process, out, blocked, rows=6)
    assert len(SyntheticStore(out).manifest()) == 6 and len(pngs(out)) < total  # it really stopped part-way
    code, _, err = run(["generate", "--plan", world["plan"], "--out", out, "--batch-size", 3, "--no-progress", *extra], capsys)
    assert code == 0, err
    check_matches_reference(out, reference)
    assert SyntheticStore(out).manifest()["criterion"].tolist() == pytest.approx(SyntheticStore(reference).manifest()["criterion"].tolist())
