"""Feedback guidance at the settings users run: classifier-free guidance 1.5 under every scheduler.

The model is exact and class-conditional: the posterior-mean denoiser of eight flat-ish 8 x 8
images whose mean brightness runs over ±0.2 … ±0.8; the prompt "dark" restricts it to the four
dark images, "bright" to the four bright ones, and the empty (unconditional) prompt uses all
eight, so classifier-free guidance really extrapolates between two different predictions.
The feedback classifier is the linear brightness classifier (boundary at brightness 0).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fixtures_generation import ExactDenoiser, single_thread_torch  # noqa: F401 (fixture)
from fixtures_guidance import BrightnessClassifier
from synaug.generate.hooks import StepHook, StepState
from synaug.generate.pipeline import SamplingPipeline
from synaug.generate.schedulers import SCHEDULERS, make_scheduler
from synaug.guidance import FeedbackGuidance
from synaug.train.models import Normalizer

pytestmark = pytest.mark.usefixtures("single_thread_torch")

CLASSES = ["dark", "bright"]
BRIGHT = 1
CFG = 1.5
STEPS = 10
SIGMA_SPACE = {"euler"}  # schedulers whose latents are x0 + σ·ε (variance exploding), not √ᾱ·x0 + √(1-ᾱ)·ε
KNOWN = {"ddim", "dpm++", "euler", "ddpm", "unipc"}


class PromptedDenoiser(torch.nn.Module):
    """An exact denoiser per prompt: the prompted class's images, or all images for the empty prompt."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, alphas_cumprod: torch.Tensor):
        super().__init__()
        self.unconditional = ExactDenoiser(images, alphas_cumprod)
        self.per_class = torch.nn.ModuleList(ExactDenoiser(images[labels == c], alphas_cumprod) for c in range(len(CLASSES)))
        self.config = self.unconditional.config

    def forward(self, sample, timestep, encoder_hidden_states=None, return_dict=True):
        classes = encoder_hidden_states[:, 0, 0].round().long()
        output = torch.zeros_like(sample)
        for c in classes.unique().tolist():
            rows = classes == c
            model = self.unconditional if c < 0 else self.per_class[c]
            output = output.index_put((rows,), model(sample[rows], timestep)[0])
        return (output,)


def encode(prompts: list[str]) -> dict[str, torch.Tensor]:
    """Class id as the one hidden-state value; -1 for the empty (unconditional) prompt."""
    ids = [CLASSES.index(p) if p else -1 for p in prompts]
    return {"encoder_hidden_states": torch.tensor(ids, dtype=torch.float32).view(-1, 1, 1)}


def pipeline_for(scheduler_name: str) -> tuple[SamplingPipeline, PromptedDenoiser]:
    levels = torch.tensor([-0.8, -0.6, -0.4, -0.2, 0.2, 0.4, 0.6, 0.8]).view(-1, 1, 1, 1)
    texture = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(3)) * 0.2 - 0.1
    scheduler = make_scheduler(scheduler_name, {"beta_schedule": "squaredcos_cap_v2"})
    model = PromptedDenoiser(levels + texture, (levels.flatten() > 0).long(), scheduler.alphas_cumprod)
    return SamplingPipeline(model, scheduler, encode), model


def sample(pipeline: SamplingPipeline, hooks=(), n: int = 24, prompt: str = "bright"):
    return pipeline([prompt] * n, list(range(n)), num_steps=STEPS, guidance_scale=CFG, height=8, width=8, hooks=hooks,
                    class_ids=torch.full((n,), CLASSES.index(prompt)))


def brightness(images: torch.Tensor) -> torch.Tensor:
    return images.float().mean(dim=(1, 2, 3)) / 127.5 - 1.0


def guidance(criterion: str, scale: float = 0.05, **options) -> FeedbackGuidance:
    return FeedbackGuidance(BrightnessClassifier(), Normalizer.fixed(1), criterion=criterion, scale=scale, every=1,
                            input_channels=1, **options)


class RecordingGuidance(FeedbackGuidance):
    """Feedback guidance that keeps (step, timestep, x_t, x̂0, correction) of every guided step."""

    def __call__(self, state: StepState) -> torch.Tensor:
        correction = super().__call__(state)
        self.seen.append((state.step, state.timestep, state.latents.clone(), state.x0.clone(), correction.clone()))
        return correction


class LatentsRecorder(StepHook):
    """Keeps x_t at every step and corrects nothing."""

    def __init__(self):
        super().__init__()
        self.latents: dict[int, torch.Tensor] = {}

    def __call__(self, state: StepState) -> None:
        self.latents[state.step] = state.latents.clone()


def test_every_scheduler_synaug_offers_is_covered_here():
    assert set(SCHEDULERS) == KNOWN, "a scheduler was added or removed: cover it in this file"


def alpha_bar_at(model: PromptedDenoiser, t: torch.Tensor) -> float:
    """ᾱ at a (possibly fractional) timestep, interpolated in σ as the denoiser does."""
    sigma = np.interp(float(t), np.arange(len(model.unconditional.sigmas)), model.unconditional.sigmas)
    return float(1 / (1 + sigma**2))


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_correction_is_the_guidance_math_on_the_cfg_prediction(name):
    pipeline, model = pipeline_for(name)
    hook = RecordingGuidance(BrightnessClassifier(), Normalizer.fixed(1), criterion="loss", scale=0.05, every=3,
                             input_channels=1)
    hook.seen = []
    sample(pipeline, [hook], n=4)
    assert [step for step, *_ in hook.seen] == [0, 3, 6, 9]
    for _, t, latents, x0, correction in hook.seen:
        alpha_bar = alpha_bar_at(model, t)
        model_input = latents * math.sqrt(alpha_bar) if name in SIGMA_SPACE else latents
        conditions = {c: torch.full((len(latents), 1, 1), float(c)) for c in (-1, BRIGHT)}
        unconditional, conditional = (model(model_input, t, encoder_hidden_states=conditions[c])[0] for c in (-1, BRIGHT))
        eps = unconditional + CFG * (conditional - unconditional)
        expected_x0 = (model_input - math.sqrt(1 - alpha_bar) * eps) / math.sqrt(alpha_bar)
        assert torch.allclose(x0, expected_x0, atol=1e-4), "x̂0 is not the classifier-free-guided prediction"
        # loss = -log p(bright) falls as the brightness of x̂0 rises, and on the x0 path x̂0 = c·x_t + const with
        # c > 0, so ascent on the loss is a uniform darkening of norm scale·|x_t|: -scale·|x_t|/8 in each of 64 pixels.
        expected = -0.05 * latents.flatten(1).norm(dim=1).view(-1, 1, 1, 1) / 8 * torch.ones_like(latents)
        assert torch.allclose(correction, expected, rtol=1e-4, atol=1e-6)


def first_order_carry(name: str, model: PromptedDenoiser, t_now: torch.Tensor, t_next: torch.Tensor) -> float:
    """How much of a change to x_t reaches x_{t-1} when the model output is held: √ᾱ ratio, or 1 in σ space."""
    if name in SIGMA_SPACE:
        return 1.0
    return math.sqrt(alpha_bar_at(model, t_next) / alpha_bar_at(model, t_now))


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_the_correction_holds_through_the_scheduler_step(name):
    """A correction δ at step k moves x_{k+1} by at least the first-order share of δ (UniPC's corrector
    would rebuild x_k from its saved sample and keep about half of it)."""
    k = 4
    runs = {}
    for scale in (0.0, 0.05):
        pipeline, model = pipeline_for(name)
        recorder = LatentsRecorder()
        hook = RecordingGuidance(BrightnessClassifier(), Normalizer.fixed(1), criterion="loss", scale=scale, every=1,
                                 start=k / STEPS, stop=(k + 1) / STEPS, input_channels=1)
        hook.seen = []
        sample(pipeline, [hook, recorder], n=8)
        runs[scale] = recorder.latents, hook.seen
    (plain, _), (guided, seen) = runs[0.0], runs[0.05]
    (step, t_now, _, _, correction), = seen
    assert step == k and torch.equal(plain[k], guided[k])
    moved = (guided[k + 1] - plain[k + 1]).flatten(1)
    delta = correction.flatten(1)
    share = (moved * delta).sum(1) / (delta * delta).sum(1)
    expected = first_order_carry(name, model, t_now, next_timestep(pipeline, t_now))
    assert share.min() >= 0.99 * expected, f"only {share.min():.2f} of the correction reached the next step ({expected:.2f} expected)"
    assert share.max() <= 1.5 * expected


def next_timestep(pipeline: SamplingPipeline, t: torch.Tensor) -> torch.Tensor:
    scheduler = type(pipeline.scheduler).from_config(pipeline.scheduler.config)
    scheduler.set_timesteps(STEPS)
    timesteps = scheduler.timesteps.tolist()
    return torch.tensor(timesteps[timesteps.index(float(t)) + 1])


@pytest.mark.parametrize("name", sorted(KNOWN))
@pytest.mark.parametrize("criterion", ["loss", "entropy"])
def test_guidance_raises_the_criterion_of_the_final_images(name, criterion):
    pipeline, _ = pipeline_for(name)
    plain = sample(pipeline, [guidance(criterion, scale=0.0)])
    guided = sample(pipeline, [guidance(criterion)])
    assert (brightness(plain.images) > 0).all()  # CFG on "bright": every unguided image is bright
    assert guided.scores["criterion"].mean() > plain.scores["criterion"].mean() + 0.1
    if criterion == "loss":  # ascent on -log p(bright): darker
        assert brightness(guided.images).mean() < brightness(plain.images).mean() - 0.15
    else:  # ascent on the entropy: toward the boundary at brightness 0
        assert brightness(guided.images).abs().mean() < brightness(plain.images).abs().mean() - 0.15


def test_a_hook_that_corrects_nothing_leaves_unipc_unchanged():
    """UniPC skips its corrector only at steps where a correction is added."""
    pipeline, _ = pipeline_for("unipc")
    assert torch.equal(sample(pipeline).images, sample(pipeline, [LatentsRecorder()]).images)
