"""The sampling loop: guidance, seeding, img2img, post-processing and the per-step hook protocol.

Most tests use :class:`ExactDenoiser`, whose outputs are known in closed form, so each check
compares against what the loop must produce rather than against a recorded run.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.configuration_utils import FrozenDict

from fixtures_generation import BrightnessHook, ExactDenoiser, null_prompt_encoder, single_thread_torch  # noqa: F401 (fixture)
from recording_hook import RecordX0Hook
from synaug.errors import SynaugError
from synaug.generate.hooks import StepHook, StepState
from synaug.generate.pipeline import SamplingPipeline, convert_channels, to_uint8
from synaug.generate.schedulers import SCHEDULERS, make_scheduler

pytestmark = pytest.mark.usefixtures("single_thread_torch")

COSINE = {"beta_schedule": "squaredcos_cap_v2"}


def texture(seed: int = 3) -> torch.Tensor:
    return torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) * 0.2 - 0.1


DARK = -0.6 + texture(3)
BRIGHT = 0.6 + texture(4)


def two_image_pipeline(scheduler_name: str = "ddim", prediction_type: str = "epsilon"):
    scheduler = make_scheduler(scheduler_name, {**COSINE, "prediction_type": prediction_type})
    model = ExactDenoiser(torch.cat([DARK, BRIGHT]), scheduler.alphas_cumprod, prediction_type=prediction_type)
    return SamplingPipeline(model, scheduler, null_prompt_encoder), model


def sample(pipeline, n: int, steps: int = 10, seeds=None, **kwargs):
    seeds = list(range(n)) if seeds is None else seeds
    return pipeline(["x"] * len(seeds), seeds, num_steps=steps, guidance_scale=kwargs.pop("guidance_scale", 1.0),
                    height=8, width=8, **kwargs)


def brightness(images: torch.Tensor) -> torch.Tensor:
    return images.float().mean(dim=(1, 2, 3)) / 127.5 - 1.0


class StepRecorder(StepHook):
    """Keeps every StepState it sees, and what ``state.predict`` gave during the call."""

    def __init__(self, **window):
        super().__init__(**window)
        self.states: list[StepState] = []
        self.predictions: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, state: StepState) -> None:
        self.states.append(state)
        self.predictions.append(state.predict(state.latents))


class PoisonHook(StepHook):
    """Returns a NaN correction for sample 0 only."""

    def __call__(self, state: StepState) -> torch.Tensor:
        correction = torch.zeros_like(state.latents)
        correction[0] = float("nan")
        return correction


# --- seeding and batching -------------------------------------------------------------------


@pytest.mark.parametrize("scheduler_name", ["ddpm", "ddim"])
def test_an_image_depends_only_on_its_seed(scheduler_name):
    pipeline, _ = two_image_pipeline(scheduler_name)
    seeds = [11, 22, 33, 44, 55]
    together = sample(pipeline, 5, seeds=seeds).images
    reversed_batch = sample(pipeline, 5, seeds=seeds[::-1]).images.flip(0)
    alone = sample(pipeline, 1, seeds=[33]).images
    assert torch.equal(together, reversed_batch)
    assert torch.equal(together[2:3], alone)
    assert not torch.equal(together[0], together[1]) or not torch.equal(together[1], together[2])


def test_stochastic_sampler_draws_per_image_noise_from_the_seed():
    """DDPM steps draw fresh noise each step; the same seed must still give the same image."""
    pipeline, _ = two_image_pipeline("ddpm")
    first = sample(pipeline, 3, seeds=[5, 5, 6]).images
    assert torch.equal(first[0], first[1])


# --- classifier-free guidance and prompts -----------------------------------------------------


class ConditionEcho(torch.nn.Module):
    """Outputs the mean of its condition everywhere; counts calls and batch rows."""

    def __init__(self):
        super().__init__()
        self.config = FrozenDict(in_channels=1)
        self.rows: list[int] = []

    def forward(self, sample, timestep, encoder_hidden_states=None, return_dict=True):
        self.rows.append(len(sample))
        return (encoder_hidden_states.mean(dim=(1, 2)).view(-1, 1, 1, 1).expand_as(sample),)


def echo_encoder(prompts: list[str]) -> dict[str, torch.Tensor]:
    values = {"": 0.0, "cat": 1.0, "dog": 3.0, "blurry": -2.0}
    return {"encoder_hidden_states": torch.tensor([values[p] for p in prompts]).view(-1, 1, 1)}


@pytest.mark.parametrize("guidance_scale", [1.0, 4.0])
def test_guided_output_is_one_batched_call(guidance_scale):
    model = ConditionEcho()
    pipeline = SamplingPipeline(model, make_scheduler("ddim", {}), echo_encoder)
    condition = pipeline.encode_condition(["cat", "dog"], None, do_guidance=guidance_scale != 1.0)
    t = torch.tensor(10)
    output = pipeline.guided_output(pipeline.scheduler, torch.zeros(2, 1, 4, 4), t, t, condition, guidance_scale)
    # unconditional "" encodes to 0, so the guided value is guidance * conditional
    assert output[:, 0, 0, 0].tolist() == [guidance_scale * 1.0, guidance_scale * 3.0]
    assert model.rows == [2 if guidance_scale == 1.0 else 4]


def test_negative_prompt_replaces_the_unconditional_branch():
    pipeline = SamplingPipeline(ConditionEcho(), make_scheduler("ddim", {}), echo_encoder)
    condition = pipeline.encode_condition(["cat", "dog", "cat"], "blurry", do_guidance=True)
    assert condition["encoder_hidden_states"].flatten().tolist() == [-2.0, -2.0, -2.0, 1.0, 3.0, 1.0]
    t = torch.tensor(5)
    output = pipeline.guided_output(pipeline.scheduler, torch.zeros(3, 1, 2, 2), t, t, condition, 2.0)
    assert output[:, 0, 0, 0].tolist() == [-2 + 2 * 3, -2 + 2 * 5, -2 + 2 * 3]


def test_guidance_skips_the_unconditional_pass_only_at_scale_one():
    pipeline, model = two_image_pipeline()
    sample(pipeline, 2, steps=5, guidance_scale=1.0)
    assert model.calls == 5
    sample(pipeline, 2, steps=5, guidance_scale=3.0)
    assert model.calls == 10


# --- img2img / SDEdit ------------------------------------------------------------------------------


def test_sdedit_keeps_the_reference_class_at_low_strength():
    pipeline, _ = two_image_pipeline()
    to_uint8_reference = lambda image, n: to_uint8(image.expand(n, -1, -1, -1), None, None)  # noqa: E731
    from_dark = sample(pipeline, 8, reference_images=to_uint8_reference(DARK, 8), strength=0.4)
    from_bright = sample(pipeline, 8, reference_images=to_uint8_reference(BRIGHT, 8), strength=0.4)
    assert (brightness(from_dark.images) < 0).all()
    assert (brightness(from_bright.images) > 0).all()


def test_sdedit_runs_the_last_strength_fraction_of_steps():
    pipeline, model = two_image_pipeline()
    reference = to_uint8(DARK.expand(2, -1, -1, -1), None, None)
    sample(pipeline, 2, steps=10, reference_images=reference, strength=0.3)
    assert model.calls == 3
    with pytest.raises(SynaugError, match="leaves no sampling step"):
        sample(pipeline, 2, steps=2, reference_images=reference, strength=0.3)


# --- post-processing and ok flags ----------------------------------------------------------------


def test_rgb_to_gray_uses_luminance_weights():
    rgb = torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1)  # pure red
    gray = convert_channels(rgb, 1)
    assert gray.item() == pytest.approx(0.299 - 0.587 - 0.114)
    assert convert_channels(gray, 3).shape == (1, 3, 1, 1)


def test_to_uint8_resizes_and_converts():
    images = torch.linspace(-1, 1, 2 * 3 * 16 * 16).view(2, 3, 16, 16)
    pixels = to_uint8(images, (8, 4), 1)
    assert pixels.dtype == torch.uint8 and pixels.shape == (2, 1, 8, 4)
    assert to_uint8(torch.full((1, 1, 2, 2), -1.0), None, None).max() == 0
    assert to_uint8(torch.full((1, 1, 2, 2), 1.0), None, None).min() == 255


def test_blank_images_are_not_ok():
    scheduler = make_scheduler("ddim", COSINE)
    flat = torch.full((1, 1, 8, 8), 0.2)
    model = ExactDenoiser(flat, scheduler.alphas_cumprod)
    output = sample(SamplingPipeline(model, scheduler, null_prompt_encoder), 2)
    assert output.ok.tolist() == [False, False]


def test_non_finite_sample_is_marked_and_the_others_are_untouched():
    pipeline, _ = two_image_pipeline()
    clean = sample(pipeline, 3)
    poisoned = sample(pipeline, 3, hooks=[PoisonHook(start=0.5)])
    assert poisoned.ok.tolist() == [False, True, True]
    assert torch.equal(clean.images[1:], poisoned.images[1:])


# --- the hook protocol ---------------------------------------------------------------------------------


def test_hook_runs_on_its_window_and_every_kth_step():
    pipeline, _ = two_image_pipeline()
    recorder = StepRecorder(start=0.2, stop=0.8, every=2)
    sample(pipeline, 2, steps=10, hooks=[recorder], class_ids=torch.tensor([3, 7]))
    assert [state.step for state in recorder.states] == [2, 4, 6]
    state = recorder.states[0]
    assert state.num_steps == 10 and state.latents.shape == (2, 1, 8, 8)
    assert state.class_ids.tolist() == [3, 7]


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("scheduler_name", sorted(SCHEDULERS))
def test_state_x0_and_predict_match_the_exact_model(scheduler_name, prediction_type):
    """For data that is one image, x̂0 must be that image at every step, on every scheduler."""
    scheduler = make_scheduler(scheduler_name, {**COSINE, "prediction_type": prediction_type})
    model = ExactDenoiser(DARK, scheduler.alphas_cumprod, prediction_type=prediction_type)
    recorder = StepRecorder(start=0.1)
    sample(SamplingPipeline(model, scheduler, null_prompt_encoder), 2, steps=10, hooks=[recorder])
    assert len(recorder.states) == 9
    for state, (output, x0) in zip(recorder.states, recorder.predictions):
        assert torch.allclose(state.x0, DARK.float().expand(2, -1, -1, -1), atol=1e-3)
        assert torch.allclose(output, state.model_output, atol=1e-4)
        assert torch.allclose(x0, state.x0, atol=1e-3)


@pytest.mark.parametrize("through_model", [True, False])
def test_gradient_hook_moves_samples_the_way_it_pushes(through_model):
    """Half the seeds land on the dark image unguided; pushing brightness brings them to the bright one."""
    pipeline, _ = two_image_pipeline()
    unguided = brightness(sample(pipeline, 16).images)
    guided = brightness(sample(pipeline, 16, hooks=[BrightnessHook(0.2, through_model, stop=0.5)]).images)
    assert 3 <= int((unguided < 0).sum()) <= 13
    assert int((guided < 0).sum()) == 0


def test_correction_of_the_wrong_shape_is_a_one_line_error():
    class BadHook(StepHook):
        def __call__(self, state):
            return torch.zeros(1)

    pipeline, _ = two_image_pipeline()
    with pytest.raises(SynaugError, match="BadHook returned a correction of shape"):
        sample(pipeline, 2, hooks=[BadHook()])


def test_record_x0_hook_keeps_the_trajectory_and_scores_each_image():
    pipeline, _ = two_image_pipeline()
    recorder = RecordX0Hook(every=5)
    output = sample(pipeline, 3, steps=10, hooks=[recorder])
    trajectory = recorder.trajectory()
    assert sorted(trajectory) == [0, 5]
    assert trajectory[5].shape == (3, 1, 8, 8)
    scores = output.scores["x0_abs_max"]
    assert scores.shape == (3,) and np.all(scores <= 0.75) and np.all(scores > 0.3)


def test_hook_settings_describe_its_schedule():
    assert RecordX0Hook(start=0.2, every=5).settings() == {
        "hook": "recording_hook.RecordX0Hook", "start": 0.2, "stop": 1.0, "every": 5,
    }


def test_hook_window_is_checked():
    with pytest.raises(SynaugError, match="hook window"):
        RecordX0Hook(start=0.6, stop=0.5)
    with pytest.raises(SynaugError, match="every=0"):
        RecordX0Hook(every=0)


# --- settings --------------------------------------------------------------------------------------------


def test_fp16_on_cpu_and_unknown_dtype_are_one_line_errors():
    scheduler = make_scheduler("ddim", COSINE)
    model = ExactDenoiser(DARK, scheduler.alphas_cumprod)
    with pytest.raises(SynaugError, match="fp16 needs a CUDA device; on CPU use dtype fp32 or bf16"):
        SamplingPipeline(model, scheduler, null_prompt_encoder, dtype="fp16")
    with pytest.raises(SynaugError, match="unknown dtype 'float8'"):
        SamplingPipeline(model, scheduler, null_prompt_encoder, dtype="float8")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_is_a_one_line_error():
    scheduler = make_scheduler("ddim", COSINE)
    with pytest.raises(SynaugError, match="no CUDA GPU"):
        SamplingPipeline(ExactDenoiser(DARK, scheduler.alphas_cumprod), scheduler, null_prompt_encoder, device="cuda")


def test_size_must_fit_the_vae():
    pipeline, _ = two_image_pipeline()
    pipeline.vae_scale_factor = 8
    with pytest.raises(SynaugError, match="multiple of 8"):
        pipeline.check_inputs(10, 30, 32, 0.5)
