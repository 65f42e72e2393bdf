"""The feedback-guidance hook: direction, rescaling, gradient paths, batching, failures, the store.

The direction tests use :class:`ExactDenoiser` over nine flat-ish 8 x 8 images whose mean
brightness runs from -0.8 to 0.8, and a linear classifier of the mean brightness with its
decision boundary at 0 (class 0 dark, class 1 bright); unguided samples spread over all nine.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fixtures_generation import ExactDenoiser, build_tiny_embedded, null_prompt_encoder, single_thread_torch  # noqa: F401 (fixture)
from fixtures_guidance import BrightnessClassifier, tiny_checkpoint, train_result
from synaug.data.dataset import LabeledImages
from synaug.errors import SynaugError
from synaug.generate.backends.embedded import EmbeddedBackend
from synaug.generate.hooks import StepState
from synaug.generate.pipeline import SamplingPipeline
from synaug.generate.schedulers import make_scheduler
from synaug.generate.runner import generate_plan
from synaug.generate.store import SyntheticStore
from synaug.guidance import FeedbackGuidance, budget_plan, feedback_hook
from synaug.guidance import classifier as classifier_module
from synaug.guidance.classifier import GAUSSIANS_FILE, load_feedback_classifier
from synaug.plan import make_plan
from synaug.train.models import Normalizer

pytestmark = pytest.mark.usefixtures("single_thread_torch")

CLASSES = ["dark", "bright"]
FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def brightness_pipeline() -> tuple[SamplingPipeline, ExactDenoiser]:
    levels = torch.linspace(-0.8, 0.8, 9).view(-1, 1, 1, 1)
    texture = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(3)) * 0.2 - 0.1
    scheduler = make_scheduler("ddim", {"beta_schedule": "squaredcos_cap_v2"})
    model = ExactDenoiser(levels + texture, scheduler.alphas_cumprod)
    return SamplingPipeline(model, scheduler, null_prompt_encoder), model


def sample(pipeline: SamplingPipeline, hooks=(), n: int = 48, target: int = 1, seeds=None):
    seeds = list(range(n)) if seeds is None else seeds
    return pipeline(["x"] * len(seeds), seeds, num_steps=10, guidance_scale=1.0, height=8, width=8, hooks=hooks,
                    class_ids=torch.full((len(seeds),), target))


def brightness(images: torch.Tensor) -> torch.Tensor:
    return images.float().mean(dim=(1, 2, 3)) / 127.5 - 1.0


def guidance(criterion, path: str = "x0", scale: float = 0.05, every: int = 1, **options) -> FeedbackGuidance:
    return FeedbackGuidance(BrightnessClassifier(), Normalizer.fixed(1), criterion=criterion, scale=scale, every=every,
                            gradient_path=path, input_channels=1, **options)


# ---- direction ------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["x0", "full"])
def test_entropy_guidance_moves_samples_toward_the_decision_boundary(path):
    pipeline, _ = brightness_pipeline()
    plain = sample(pipeline, [guidance("entropy", path, scale=0.0)])
    guided = sample(pipeline, [guidance("entropy", path)])
    assert brightness(plain.images).abs().mean() > 0.3  # spread over the nine levels
    assert brightness(guided.images).abs().mean() < 0.1  # gathered at the boundary, brightness 0
    assert guided.scores["criterion"].mean() > plain.scores["criterion"].mean() + 0.2
    assert guided.scores["criterion"].mean() < math.log(2) + 1e-6  # entropy of two classes at most


@pytest.mark.parametrize("path", ["x0", "full"])
def test_loss_guidance_lowers_the_prompted_class_probability(path):
    pipeline, _ = brightness_pipeline()
    plain = sample(pipeline, [guidance("loss", path, scale=0.0)], target=1)
    guided = sample(pipeline, [guidance("loss", path)], target=1)
    assert guided.scores["feedback_target_prob"].mean() < plain.scores["feedback_target_prob"].mean() - 0.3
    assert brightness(guided.images).mean() < brightness(plain.images).mean() - 0.3  # pushed toward "dark"
    assert guided.scores["criterion"].mean() > plain.scores["criterion"].mean()


def test_full_path_runs_the_unet_again_at_guided_steps_and_x0_path_does_not():
    pipeline, model = brightness_pipeline()
    counts = {}
    for path in ("x0", "full"):
        model.calls = 0
        sample(pipeline, [guidance("entropy", path, every=5)], n=2)
        counts[path] = model.calls
    assert counts == {"x0": 10, "full": 12}  # 10 steps; guided at steps 0 and 5


# ---- the correction itself --------------------------------------------------------------------
def hand_state(latents: torch.Tensor, class_ids: torch.Tensor | None = None) -> StepState:
    """A step where x̂0 = x_t and decoding is the identity."""
    return StepState(step=0, timestep=torch.tensor(500), num_steps=10, latents=latents, model_output=torch.zeros_like(latents),
                     x0=latents, class_ids=class_ids, decode=lambda x: x, predict=lambda x, through_model=True: (None, x))


def mean_brightness(logits, features, target):
    return features[:, 0]


def test_correction_is_the_normalised_gradient_times_the_latents_norm():
    latents = torch.stack([torch.full((1, 8, 8), 0.5), torch.full((1, 8, 8), -2.0)])
    correction = guidance(mean_brightness, scale=0.03)(hand_state(latents, torch.tensor([0, 1])))
    # d mean / dx = 1/64 everywhere, so g / |g| = 1/8 in every pixel; |x_t| = 8 · 0.5 and 8 · 2
    assert torch.allclose(correction[0], torch.full((1, 8, 8), 0.03 * 4.0 / 8))
    assert torch.allclose(correction[1], torch.full((1, 8, 8), 0.03 * 16.0 / 8))


def test_zero_gradient_gives_zero_correction_and_non_finite_gives_a_nan_row():
    latents = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    state = hand_state(latents, torch.tensor([0, 1, 1]))
    constant = guidance(lambda logits, features, target: features[:, 0] * 0.0)(state)
    assert torch.equal(constant, torch.zeros_like(latents))

    def poisoned(logits, features, target):
        return features[:, 0] * torch.tensor([1.0, math.nan, 1.0])

    correction = guidance(poisoned)(state)
    assert torch.isnan(correction[1]).all() and torch.isfinite(correction[[0, 2]]).all()


def test_criteria_that_need_the_prompted_class_refuse_to_run_without_it():
    latents = torch.zeros(2, 1, 8, 8)
    with pytest.raises(SynaugError, match="criterion 'loss' needs the prompted class"):
        guidance("loss")(hand_state(latents))
    assert guidance("entropy")(hand_state(latents)).shape == latents.shape


def test_non_finite_guidance_marks_only_that_sample_not_ok():
    pipeline, _ = brightness_pipeline()
    plain = sample(pipeline, [guidance(mean_brightness, scale=0.0)], n=3)

    def nan_for_first(logits, features, target):
        return features[:, 0] * torch.tensor([math.nan, 1.0, 1.0])

    poisoned = sample(pipeline, [guidance(nan_for_first, scale=0.0)], n=3)
    assert poisoned.ok.tolist() == [False, True, True]
    assert torch.equal(poisoned.images[1:], plain.images[1:])


@pytest.fixture(scope="module")
def tiny_backend(tmp_path_factory) -> EmbeddedBackend:
    return EmbeddedBackend.from_pretrained(build_tiny_embedded(tmp_path_factory.mktemp("gen") / "tiny"), steps=4)


def test_batched_guidance_equals_one_image_at_a_time(tiny_backend):
    hook = feedback_hook("loss", train_result(FASHION), every=1, scale=0.1)
    prompts, seeds, classes = ["a photo of a Trouser", "a photo of a Bag", "a photo of a Coat"], [5, 6, 7], [1, 8, 4]
    together = tiny_backend.generate(prompts, seeds, class_ids=classes, hooks=[hook])
    alone = [tiny_backend.generate([p], [s], class_ids=[c], hooks=[hook]) for p, s, c in zip(prompts, seeds, classes)]
    unguided = tiny_backend.generate(prompts, seeds, class_ids=classes)
    assert not torch.equal(together.images, unguided.images)  # the guidance did something
    for i, single in enumerate(alone):
        assert (together.images[i].int() - single.images[0].int()).abs().max() <= 1
        assert together.scores["criterion"][i] == pytest.approx(single.scores["criterion"][0], rel=1e-4)


# ---- through the runner and the store ---------------------------------------------------------
def test_guided_plan_records_criteria_and_retries_then_fails_non_finite_samples(tiny_backend, tmp_path):
    plan = make_plan([5, 3, 2] + [5] * 7, FASHION, "fill-to-max", seed=3)  # 2 Trousers, 3 Pullovers
    hook = feedback_hook("entropy", train_result(FASHION), every=2)
    summary = generate_plan(plan, tiny_backend, SyntheticStore(tmp_path / "guided"), progress=False, hooks=[hook])
    manifest = SyntheticStore(tmp_path / "guided").manifest()
    assert summary.generated == 5 and summary.failed == 0
    assert manifest["criterion"].notna().all() and (manifest["criterion"] > 0).all()
    assert manifest["score_feedback_target_prob"].between(0, 1).all()
    hooks_recorded = SyntheticStore(tmp_path / "guided").info["settings"]["hooks"]
    assert hooks_recorded[0]["criterion"] == "entropy" and hooks_recorded[0]["every"] == 2

    def nan_for_pullovers(logits, features, target):
        return torch.where(target == 2, math.nan, 1.0) * logits[:, 0]

    poisoned = FeedbackGuidance(train_result(FASHION).model, Normalizer.fixed(1), criterion=nan_for_pullovers, every=2)
    summary = generate_plan(plan, tiny_backend, SyntheticStore(tmp_path / "poisoned"), progress=False, hooks=[poisoned])
    manifest = SyntheticStore(tmp_path / "poisoned").manifest()
    assert (summary.generated, summary.retried, summary.failed) == (2, 3, 3)
    pullovers = manifest[manifest["class_id"] == 2]
    assert (pullovers["status"] == "failed").all() and (pullovers["attempt"] == 1).all() and pullovers["file"].isna().all()


def test_store_refuses_to_mix_guided_and_unguided_images(tiny_backend, tmp_path):
    plan = make_plan([2, 1] + [2] * 8, FASHION, "fill-to-max", seed=1)
    store = SyntheticStore(tmp_path / "store")
    generate_plan(plan, tiny_backend, store, progress=False, hooks=[feedback_hook("entropy", train_result(FASHION))])
    with pytest.raises(SynaugError, match="other generator settings"):
        generate_plan(plan, tiny_backend, store, progress=False)
    with pytest.raises(SynaugError, match="other generator settings"):
        generate_plan(plan, tiny_backend, store, progress=False, hooks=[feedback_hook("entropy", train_result(FASHION), scale=0.1)])
    with pytest.raises(SynaugError, match="other generator settings"):
        generate_plan(plan, tiny_backend, store, progress=False, hooks=[feedback_hook("entropy", train_result(FASHION, seed=1))])


# ---- the feedback classifier and its Gaussians ------------------------------------------------
def labelled_noise(per_class: int, seed: int = 0) -> LabeledImages:
    generator = torch.Generator().manual_seed(seed)
    labels = np.repeat(np.arange(10), per_class)
    images = torch.randint(0, 256, (len(labels), 1, 28, 28), generator=generator, dtype=torch.uint8)
    return LabeledImages(images=images, labels=labels, class_names=FASHION)


def test_classifier_from_a_checkpoint_or_a_train_result_is_the_same(tmp_path):
    folder = tiny_checkpoint(tmp_path / "checkpoint", FASHION, seed=4)
    from_folder = load_feedback_classifier(folder)
    from_result = load_feedback_classifier(train_result(FASHION, seed=4))
    assert from_folder.digest == from_result.digest and from_folder.folder == folder and from_result.folder is None
    assert (from_folder.input_size, from_folder.input_channels) == ((28, 28), 1)
    settings = feedback_hook("loss", folder, scale=0.05, every=3, start=0.2, gradient_path="full").settings()
    assert settings | {"hook": None} == {
        "hook": None, "start": 0.2, "stop": 1.0, "every": 3, "criterion": "loss", "scale": 0.05, "gradient_path": "full",
        "classifier": from_folder.digest, "input_size": [28, 28], "input_channels": 1, "class_gaussians": None,
    }
    with pytest.raises(SynaugError, match="the plan has class 9 'Boot', the feedback classifier 'Ankle boot'"):
        feedback_hook("loss", folder, class_names=FASHION[:9] + ["Boot"])


def test_hardness_gaussians_are_fitted_once_and_cached_next_to_the_checkpoint(tmp_path, monkeypatch):
    folder = tiny_checkpoint(tmp_path / "checkpoint", FASHION)
    with pytest.raises(SynaugError, match="needs the real training data"):
        feedback_hook("hardness", folder)
    data = labelled_noise(4)
    first = feedback_hook("hardness", folder, data)
    assert (folder / GAUSSIANS_FILE).is_file() and first.settings()["class_gaussians"] is not None
    assert first.class_gaussians.counts.tolist() == [4] * 10

    def no_refit(*args, **kwargs):
        raise AssertionError("fitted again although the cache matches")

    with monkeypatch.context() as patch:
        patch.setattr(classifier_module, "fit_class_gaussians", no_refit)
        assert feedback_hook("hardness", folder, data).settings() == first.settings()
        assert feedback_hook("hardness", folder).settings() == first.settings()  # no data: the cache
    refitted = feedback_hook("hardness", folder, labelled_noise(3, seed=1))
    assert refitted.class_gaussians.counts.tolist() == [3] * 10
    assert refitted.settings()["class_gaussians"] != first.settings()["class_gaussians"]


def test_hardness_from_a_train_result_fits_without_caching(tmp_path):
    hook = feedback_hook("hardness", train_result(FASHION), labelled_noise(2))
    latents = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    correction = hook(hand_state(latents, torch.tensor([0, 5])))
    assert torch.isfinite(correction).all() and correction.abs().sum() > 0
    assert list(tmp_path.iterdir()) == []


# ---- budgets ----------------------------------------------------------------------------------
def test_budget_plans_match_synaug_and_halve_it():
    synaug_plan = make_plan([500, 299, 179, 107, 64, 38, 23, 13, 8, 5], FASHION, "fill-to-max", seed=7,
                            templates=["a photo of a {class}"], class_prompt_names={"T-shirt/top": "t-shirt"}, image_size=(28, 28), channels=1)
    assert budget_plan(synaug_plan, 1.0).synthetic_counts.tolist() == synaug_plan.synthetic_counts.tolist()
    half = budget_plan(synaug_plan, 0.5)
    assert half.total == round(synaug_plan.total / 2) == 1882
    assert np.abs(half.synthetic_counts - synaug_plan.synthetic_counts / 2).max() <= 1
    assert half.prompt_names == synaug_plan.prompt_names and half.seed == 7 and half.image_size == (28, 28)
    assert half.prompt(0, None, 0) == "a photo of a t-shirt"
    fill = make_plan(synaug_plan.real_counts, FASHION, "fill-to", target=100)
    assert fill.synthetic_counts.tolist() == [0, 0, 0, 0, 36, 62, 77, 87, 92, 95]
    with pytest.raises(SynaugError, match="budget fraction 0 must lie in"):
        budget_plan(synaug_plan, 0)
