"""Test helpers for the generation stage: tiny random-weight checkpoints in the real formats.

* :func:`build_tiny_sd` writes a Stable-Diffusion-format pipeline folder (CLIP tokenizer and
  text encoder, UNet2DConditionModel with cross-attention, AutoencoderKL, DDIM scheduler) via
  ``StableDiffusionPipeline.save_pretrained``: the same layout a user's checkpoint has.
* :func:`build_tiny_embedded` writes an embedded-generator folder (pixel-space UNet with a
  384-d projection class embedding, DDPM scheduler config, ``synaug_generator.json``).
* :class:`ExactDenoiser` is a UNet-shaped analytic model whose prediction is exact for data
  that is one known image, used to check the schedulers on meaningful outputs.

Nothing here touches a hub: the CLIP tokenizer is built from a character vocabulary.
Test modules opt into the :func:`single_thread_torch` fixture with
``pytestmark = pytest.mark.usefixtures("single_thread_torch")`` (importing it).
"""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from diffusers.configuration_utils import FrozenDict
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from synaug.generate.backends.embedded import EmbeddedGeneratorSpec
from synaug.generate.hooks import StepHook, StepState

TINY_SD_SIZE = 32
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


@pytest.fixture
def single_thread_torch():
    """Run a test with one torch thread, then restore the count. The tiny models here gain
    nothing from a second thread, and on a busy 2-core machine OpenMP barriers in every small
    op made these tests several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build_character_tokenizer(folder: Path, max_length: int = 16) -> CLIPTokenizer:
    """A CLIP tokenizer whose vocabulary is single characters (no merges), written offline."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in string.ascii_lowercase + string.digits + "-'.,/!?":
        vocab[char] = len(vocab)
        vocab[char + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length)


def build_tiny_sd(folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny random SD-format checkpoint (32 px images, 16 px latents) to ``folder``."""
    from diffusers import StableDiffusionPipeline

    folder = Path(folder)
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as vocab_folder:
        tokenizer = build_character_tokenizer(Path(vocab_folder))
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=tokenizer.model_max_length,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=TINY_SD_SIZE // 2,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        cross_attention_dim=16,
        attention_head_dim=2,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        latent_channels=4,
        norm_num_groups=4,
        sample_size=TINY_SD_SIZE,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1,
    )
    pipeline = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipeline.save_pretrained(folder)
    return folder


def build_tiny_embedded(
    folder: str | Path,
    channels: int = 1,
    size: int = 28,
    class_names: list[str] | None = None,
    beta_schedule: str = "squaredcos_cap_v2",
    seed: int = 0,
) -> Path:
    """Write a tiny random embedded-generator folder (pixel-space UNet, 384-d projection condition)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=size,
        in_channels=channels,
        out_channels=channels,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        mid_block_type="UNetMidBlock2D",
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        class_embed_type="projection",
        projection_class_embeddings_input_dim=384,
        cross_attention_dim=384,
    )
    unet.save_pretrained(folder / "unet")
    DDPMScheduler(beta_schedule=beta_schedule).save_config(folder / "scheduler")
    EmbeddedGeneratorSpec(
        image_size=(size, size),
        channels=channels,
        class_names=class_names or FASHION_CLASSES,
        caption_templates=["a photo of a {class}"],
        sampler={"scheduler": "ddim", "steps": 4, "guidance_scale": 1.0},
    ).write(folder)
    return folder


class ExactDenoiser(torch.nn.Module):
    """A UNet-shaped model whose prediction is exact for data drawn evenly from known images.

    For ``images`` (K x C x H x W) it returns the posterior-mean denoiser of the K-point data
    distribution: ``x̂0 = Σ_k softmax_k(-|x_t - sqrt(ᾱ_t) X_k|² / 2(1-ᾱ_t)) X_k`` and
    ``ε = (x_t - sqrt(ᾱ_t) x̂0) / sqrt(1 - ᾱ_t) + error * pattern`` (or the matching v).
    ``error`` is a fixed small pattern, as any trained network has; it exposes samplers that
    amplify model error. ``max_input`` records the largest |x_t| the model was fed (a trained
    network never sees values far beyond the unit-variance range, so huge inputs mean the
    sampler diverged). It is differentiable, so gradient hooks can go through it.
    """

    def __init__(self, images: torch.Tensor, alphas_cumprod: torch.Tensor, error: float = 0.0,
                 prediction_type: str = "epsilon"):
        super().__init__()
        self.register_buffer("images", images.double())
        pattern = torch.randn(images.shape[1:], generator=torch.Generator().manual_seed(1)).double()
        self.register_buffer("pattern", pattern)
        alphas_cumprod = alphas_cumprod.double().numpy()
        self.sigmas = np.sqrt((1 - alphas_cumprod) / alphas_cumprod)
        self.error = error
        self.prediction_type = prediction_type
        self.config = FrozenDict(in_channels=images.shape[1], out_channels=images.shape[1], sample_size=images.shape[-1])
        self.max_input = 0.0
        self.calls = 0

    def forward(self, sample, timestep, encoder_hidden_states=None, class_labels=None, return_dict=True):
        sigma = np.interp(float(timestep), np.arange(len(self.sigmas)), self.sigmas)
        alpha_bar = 1.0 / (1.0 + sigma**2)
        x = sample.double()
        self.max_input = max(self.max_input, float(x.detach().abs().max()))
        self.calls += 1
        distances = ((x[:, None] - alpha_bar**0.5 * self.images[None]) ** 2).flatten(2).sum(2)
        weights = torch.softmax(-distances / (2 * (1 - alpha_bar)), dim=1)
        x0 = torch.einsum("nk,kchw->nchw", weights, self.images)
        eps = (x - alpha_bar**0.5 * x0) / (1 - alpha_bar) ** 0.5 + self.error * self.pattern
        if self.prediction_type == "v_prediction":
            out = alpha_bar**0.5 * eps - (1 - alpha_bar) ** 0.5 * x0
        else:
            out = eps
        return (out.to(sample.dtype),)


def null_prompt_encoder(prompts: list[str]) -> dict[str, torch.Tensor]:
    """A prompt encoder for models that ignore the condition (one dummy token per prompt)."""
    return {"encoder_hidden_states": torch.zeros(len(prompts), 1, 4)}


class BrightnessHook(StepHook):
    """Gradient ascent on the mean brightness of decode(x̂0), the feedback-guidance recipe:
    the gradient w.r.t. x_t, normalised, rescaled to the latents' norm times ``scale``."""

    def __init__(self, scale: float, through_model: bool, **window):
        super().__init__(**window)
        self.scale = scale
        self.through_model = through_model

    def __call__(self, state: StepState) -> torch.Tensor:
        x_t = state.latents.detach().requires_grad_(True)
        _, x0 = state.predict(x_t, through_model=self.through_model)
        (gradient,) = torch.autograd.grad(state.decode(x0).mean(dim=(1, 2, 3)).sum(), x_t)
        return self.scale * gradient / _norm(gradient) * _norm(x_t.detach())


def _norm(batch: torch.Tensor) -> torch.Tensor:
    """Per-sample L2 norm, shaped to broadcast over the sample."""
    return batch.flatten(1).norm(dim=1).view(-1, *[1] * (batch.ndim - 1))
