"""Every offered scheduler, run through the sampling loop on a model whose outputs mean something.

The model is :class:`ExactDenoiser` for data that is one known image, with a small fixed ε
error like any trained network. A sane sampler returns that image and never feeds the
network inputs far outside the unit-variance range; the second check is what catches the
cosine-schedule divergence of DPM-Solver++ that a single final-image check can miss.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

from fixtures_generation import ExactDenoiser, null_prompt_encoder, single_thread_torch  # noqa: F401 (fixture)
from synaug.errors import SynaugError
from synaug.generate.pipeline import SamplingPipeline
from synaug.generate.schedulers import SCHEDULERS, make_scheduler

pytestmark = pytest.mark.usefixtures("single_thread_torch")

TRAINING_SCHEDULES = {
    "linear": {"beta_schedule": "linear"},
    "cosine": {"beta_schedule": "squaredcos_cap_v2"},
    "stable-diffusion": {
        "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
        "steps_offset": 1, "clip_sample": False, "set_alpha_to_one": False,
    },
}
MODEL_ERROR = 0.05
MAX_SANE_INPUT = 10.0


def target_image() -> torch.Tensor:
    return torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 1.6 - 0.8


def run_sampler(scheduler, image: torch.Tensor, steps: int, prediction_type: str = "epsilon"):
    model = ExactDenoiser(image, scheduler.alphas_cumprod, error=MODEL_ERROR, prediction_type=prediction_type)
    pipeline = SamplingPipeline(model, scheduler, null_prompt_encoder)
    output = pipeline(["x"] * 4, [0, 1, 2, 3], num_steps=steps, guidance_scale=1.0, height=8, width=8)
    images = output.images.float() / 127.5 - 1.0
    return images, model


@pytest.mark.parametrize("steps", [10, 25])
@pytest.mark.parametrize("schedule", sorted(TRAINING_SCHEDULES))
@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_scheduler_returns_the_data_image(name, schedule, steps):
    config = DDIMScheduler(**TRAINING_SCHEDULES[schedule]).config
    image = target_image()
    images, model = run_sampler(make_scheduler(name, config), image, steps)
    assert (images - image).abs().mean() < 0.05
    assert (images - image).abs().max() < 0.3
    assert model.max_input < MAX_SANE_INPUT
    assert model.calls == steps


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_scheduler_handles_v_prediction(name):
    config = DDIMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction").config
    image = target_image()
    images, model = run_sampler(make_scheduler(name, config), image, 10, prediction_type="v_prediction")
    assert (images - image).abs().mean() < 0.05
    assert model.max_input < MAX_SANE_INPUT


def test_default_dpm_solver_spacing_diverges_on_the_cosine_schedule():
    """The failure our "leading" override fixes: diffusers' default spacing starts at t=999."""
    config = DDIMScheduler(beta_schedule="squaredcos_cap_v2").config
    scheduler = DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++")
    _, model = run_sampler(scheduler, target_image(), 10)
    assert model.max_input > 10 * MAX_SANE_INPUT


def test_make_scheduler_forces_documented_settings():
    config = DDIMScheduler(beta_schedule="squaredcos_cap_v2", timestep_spacing="trailing").config
    dpm = make_scheduler("dpm++", config)
    assert isinstance(dpm, DPMSolverMultistepScheduler)
    assert dpm.config.algorithm_type == "dpmsolver++"
    assert all(make_scheduler(name, config).config.timestep_spacing == "leading" for name in SCHEDULERS)
    assert make_scheduler("ddim", config).config.beta_schedule == "squaredcos_cap_v2"


def test_unknown_scheduler_lists_the_valid_names():
    with pytest.raises(SynaugError, match="unknown scheduler 'plms'; choose one of: ddim, dpm\\+\\+, euler, ddpm, unipc"):
        make_scheduler("plms", {})
