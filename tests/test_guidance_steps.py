"""Classifier-free guidance on the first N sampling steps only (``guidance_steps``): the loop,
its validation, and the setting as the library, a run config and the CLI take it."""

from __future__ import annotations

import pytest
import torch
from diffusers.configuration_utils import FrozenDict

from cli_helpers import fails
from fixtures_generation import single_thread_torch  # noqa: F401 (fixture)
from synaug.errors import SynaugError
from synaug.generate.backends.base import guided_steps
from synaug.generate.pipeline import SamplingPipeline, check_guidance_steps, conditional_rows
from synaug.generate.schedulers import make_scheduler

pytestmark = pytest.mark.usefixtures("single_thread_torch")


class ConditionShift(torch.nn.Module):
    """Predicts 0.1 * x_t plus its condition's mean, so guided and unguided steps differ; records rows per call."""

    def __init__(self):
        super().__init__()
        self.config = FrozenDict(in_channels=1)
        self.rows: list[int] = []

    def forward(self, sample, timestep, encoder_hidden_states=None, return_dict=True):
        self.rows.append(len(sample))
        return (0.1 * sample + encoder_hidden_states.mean(dim=(1, 2)).view(-1, 1, 1, 1),)


def shift_encoder(prompts: list[str]) -> dict[str, torch.Tensor]:
    values = {"": 0.0, "cat": 0.05, "dog": -0.05}
    return {"encoder_hidden_states": torch.tensor([values[p] for p in prompts]).view(-1, 1, 1)}


def draw(guidance_steps, steps: int = 6, scheduler: str = "dpm++"):
    model = ConditionShift()
    pipeline = SamplingPipeline(model, make_scheduler(scheduler, {}), shift_encoder)
    output = pipeline(["cat", "dog", "cat"], [1, 2, 3], num_steps=steps, guidance_scale=3.0, height=4, width=4,
                      guidance_steps=guidance_steps)
    return output.images, model.rows


@pytest.mark.parametrize("scheduler", ["dpm++", "ddim"])
def test_guidance_on_every_step_draws_the_images_of_no_setting(scheduler):
    images, rows = draw(None, scheduler=scheduler)
    for covering in (6, 7, 100):
        same, same_rows = draw(covering, scheduler=scheduler)
        assert torch.equal(same, images) and same_rows == rows == [6] * 6


def test_guidance_runs_on_the_first_steps_only_and_changes_the_images():
    images, _ = draw(None)
    limited, rows = draw(2)
    assert rows == [6, 6, 3, 3, 3, 3]  # [unconditional; conditional] on two steps, then the conditional rows alone
    assert not torch.equal(limited, images)


def test_unguided_steps_use_the_conditional_rows():
    condition = {"a": torch.arange(6), "nested": {"b": [torch.arange(6) * 10]}, "shared": torch.ones(1), "n": 3}
    half = conditional_rows(condition, 3)
    assert half["a"].tolist() == [3, 4, 5] and half["nested"]["b"][0].tolist() == [30, 40, 50]
    assert half["shared"].tolist() == [1.0] and half["n"] == 3


@pytest.mark.parametrize("bad", [0, -2, 2.5, True, "3"])
def test_a_bad_guidance_steps_is_one_line_naming_the_fix(bad):
    with pytest.raises(SynaugError, match="at least 1") as error:
        check_guidance_steps(bad)
    assert "\n" not in str(error.value)


def test_a_setting_that_limits_nothing_is_recorded_as_no_setting():
    assert guided_steps(3, 10, 1.5) == 3
    assert guided_steps(10, 10, 1.5) is None and guided_steps(12, 10, 1.5) is None  # covers every step
    assert guided_steps(3, 10, 1.0) is None  # guidance off
    with pytest.raises(SynaugError):
        guided_steps(0, 10, 1.5)


def test_embedded_generator_takes_it_and_records_it():
    from synaug.generate.loading import load_generator

    limited = load_generator("embedded", device="cpu", steps=8, guidance_scale=1.5, guidance_steps=3)
    assert limited.settings()["guidance_steps"] == 3
    covering = load_generator("embedded", device="cpu", steps=8, guidance_scale=1.5, guidance_steps=8)
    assert "guidance_steps" not in covering.settings()
    with pytest.raises(SynaugError, match="guidance_steps=0"):
        load_generator("embedded", device="cpu", guidance_steps=0)


def test_run_config_refuses_a_bad_value_before_any_work(tmp_path):
    from synaug.pipeline.config import parse_run_config

    with pytest.raises(SynaugError, match="generator.guidance_steps must be at least 1"):
        parse_run_config({"generator": {"guidance_steps": 0}, "output": str(tmp_path / "out")}, where="run.yaml")
    assert parse_run_config({"generator": {"guidance_steps": 3}}, where="run.yaml").generator.guidance_steps == 3
    assert not (tmp_path / "out").exists()


def test_cli_refuses_a_bad_value_in_one_line(tmp_path, capsys):
    error = fails(["generator", "check", "--out", tmp_path / "check", "--guidance-steps", "0"], capsys)
    assert "guidance_steps=0" in error
