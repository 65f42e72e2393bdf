"""The library's generator loading and the checks of its generation call, shared by the CLI, run configs and the API."""

from __future__ import annotations

import warnings

import pytest
import torch
from fake_generator import FakeGenerator
from fixtures_generation import build_tiny_embedded, single_thread_torch  # noqa: F401  (fixture)
from fixtures_guidance import BrightnessClassifier
from pipeline_helpers import error_line, tiny_config, tiny_fashion, write_config

from synaug.devices import resolve_device
from synaug.errors import SynaugError, SynaugWarning
from synaug.generate import loading
from synaug.generate.loading import GeneratorBackend, check_vocabulary, load_generator, register_backend
from synaug.generate.runner import generate_plan
from synaug.generate.store import SyntheticStore
from synaug.guidance import FeedbackGuidance
from synaug.plan import make_plan
from synaug.train.models import Normalizer

pytestmark = pytest.mark.usefixtures("single_thread_torch")


def test_device_auto_is_accepted_by_generation_and_resolves_to_this_machine():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    generator = load_generator("embedded", device="auto", steps=2)
    assert generator.pipeline.device.type == expected
    with pytest.raises(SynaugError, match="unknown device 'gpu0'; use auto"):
        resolve_device("gpu0")


def test_the_embedded_generator_defaults_to_dtype_auto_as_run_configs_do(monkeypatch):
    monkeypatch.setattr("synaug.train.trainer._cpu_has_native_bf16", lambda: True)
    assert load_generator("embedded", device="cpu").settings()["dtype"] == "bf16"
    assert load_generator("embedded", device="cpu", dtype="fp32").settings()["dtype"] == "fp32"


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("embeded", "did you mean 'embedded'?"),
        ("embedded:nope", "no shipped generator 'nope'"),
        ("python:fake_generator", "is not python:MODULE:FUNCTION"),
        ("no/such/local-folder-or-hub-id", "does not exist; check the path, or give a hub id"),
        ("nobody-here/no-such-model", "could not be fetched from the Hugging Face hub"),
        ("", "is not a name"),
    ],
)
def test_an_unknown_generator_spec_is_a_one_line_error(spec, needle, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SynaugError, match=needle) as error:
        load_generator(spec)
    assert "\n" not in str(error.value)


def test_a_registered_backend_is_one_entry_ahead_of_the_diffusers_fallback(monkeypatch):
    monkeypatch.setattr(loading, "BACKENDS", list(loading.BACKENDS))
    register_backend(GeneratorBackend("noise", lambda spec: spec.startswith("noise:"), lambda spec, s: FakeGenerator(size=int(spec[6:]))))
    assert [b.name for b in loading.BACKENDS] == ["python", "embedded", "noise", "diffusers"]
    assert load_generator("noise:12").size == 12


def recording_generator(**settings) -> FakeGenerator:
    """Factory for ``python:test_generator_loading:recording_generator``: keeps the settings it got."""
    generator = FakeGenerator()
    generator.given = settings
    return generator


def test_python_factories_get_only_the_settings_given():
    spec = "python:test_generator_loading:recording_generator"
    assert load_generator(spec, batch_size=3, steps=None).given == {"batch_size": 3}
    assert load_generator(spec, device="cpu", dtype="auto").given == {"device": "cpu", "dtype": "auto"}
    assert load_generator(spec, device="auto").given == {}


def test_a_vocabulary_warning_is_a_synaug_warning():
    plan = make_plan([[3, 1], [2, 1]], ["Bag", "Sandal"], group_names=["red", "green"],
                     templates=["a photo of a {class} on a {context} background"])
    with pytest.warns(SynaugWarning, match="the prompts of group green name none of these"):
        check_vocabulary(plan, "embedded:colored-fashion-mnist")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_vocabulary(plan, "python:fake_generator:make_generator")


def test_feedback_that_guides_no_step_of_the_shipped_generator_is_refused_by_the_library(tmp_path):
    generator = load_generator("embedded", device="cpu")
    assert generator.steps == 10
    hook = FeedbackGuidance(BrightnessClassifier(), Normalizer.fixed(1), criterion="entropy", start=0.9, input_channels=1)
    plan = make_plan([1, 0], ["Bag", "Sandal"], seed=0)
    with pytest.raises(SynaugError, match="every 5 steps, guides none of the generator's 10 steps") as error:
        generate_plan(plan, generator, SyntheticStore(tmp_path / "s"), hooks=[hook], progress=False)
    assert "\n" not in str(error.value) and not (tmp_path / "s").exists()


def test_feedback_start_0_9_is_a_one_line_error_under_synaug_run(tmp_path, monkeypatch, capsys):
    tiny_fashion(tmp_path, monkeypatch)
    config = tiny_config(tmp_path / "out", generator={"spec": "embedded", "batch_size": 64}, runs={"recipes": ["fg"], "seeds": [0]},
                         feedback={"start": 0.9, "budgets": [1.0]})
    line = error_line(capsys, "run", write_config(tmp_path / "fg.yaml", config), "--no-progress")
    assert "guides none of the generator's 10 steps" in line and "feedback.start/stop" in line


def test_a_run_whose_every_new_image_failed_is_an_error_of_the_library(tmp_path):
    generator = FakeGenerator()
    generator.bad_seeds = _EverySeed()
    plan = make_plan([2, 1], ["Bag", "Sandal"], seed=0)
    with pytest.raises(SynaugError, match="all 1 new images stayed non-finite or blank"):
        generate_plan(plan, generator, SyntheticStore(tmp_path / "s"), progress=False)
    summary = generate_plan(plan, FakeGenerator(), SyntheticStore(tmp_path / "ok"), progress=False)
    assert summary.generated == 1 and summary.failed == 0


class _EverySeed(set):
    def __contains__(self, seed) -> bool:
        return True
