"""The one sampling loop that drives every generator backend.

:class:`SamplingPipeline` holds diffusers components — a ``UNet2DConditionModel``, an optional
``AutoencoderKL`` and a scheduler — plus a prompt encoder supplied by the backend, and runs
classifier-free-guided sampling with per-step hooks (:mod:`synaug.generate.hooks`).

Schedulers come by name from :mod:`synaug.generate.schedulers`.

Reproducibility: the initial (and SDEdit) noise of image i comes from
``torch.Generator().manual_seed(seeds[i])`` on the CPU, as do the scheduler's per-step noises
for stochastic schedulers, so an image depends only on its own seed, prompt and reference.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor

from synaug.devices import resolve_device
from synaug.errors import SynaugError
from synaug.generate.hooks import StepHook, StepState, keep_correction
from synaug.generate.schedulers import SCHEDULERS


@dataclass
class GenerationOutput:
    """Images of one ``generate`` call, in the order of its prompts.

    images : uint8 ``N x C x H x W``, at ``output_size``/``output_channels`` when given.
    ok : bool (N,): the image is finite and not blank (not one constant value).
    scores : per-image values reported by hooks, ``{name: array (N,)}``; may be empty.
    """

    images: torch.Tensor
    ok: np.ndarray
    scores: dict[str, np.ndarray] = field(default_factory=dict)

    @staticmethod
    def concat(parts: Sequence[GenerationOutput]) -> GenerationOutput:
        """One output holding ``parts`` in order (a score missing from a part is NaN there)."""
        names = sorted({name for part in parts for name in part.scores})
        scores = {
            name: np.concatenate([part.scores.get(name, np.full(len(part.ok), np.nan)) for part in parts])
            for name in names
        }
        return GenerationOutput(
            images=torch.cat([part.images for part in parts]),
            ok=np.concatenate([part.ok for part in parts]),
            scores=scores,
        )


MAX_GUIDANCE_SCALE = 30.0  # the guidance scales in use run to about 20; beyond 30 the images only saturate

PromptEncoder = Callable[[list[str]], dict[str, torch.Tensor]]
"""Maps prompts to UNet keyword tensors (batched on dim 0), e.g. ``{"encoder_hidden_states": ...}``."""

LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601 RGB -> L, as PIL's "L" mode


@dataclass(frozen=True)
class Precision:
    """How a dtype name runs on a device: the weights' dtype and an optional autocast dtype."""

    name: str
    weight_dtype: torch.dtype
    autocast_dtype: torch.dtype | None


def resolve_precision(dtype: str, device: torch.device | str) -> Precision:
    """``fp32``, ``fp16`` (CUDA only) or ``bf16`` (bf16 weights on CUDA, bf16 autocast on CPU)."""
    device = torch.device(device)
    if dtype == "fp32":
        return Precision("fp32", torch.float32, None)
    if dtype == "fp16":
        if device.type != "cuda":
            raise SynaugError("dtype fp16 needs a CUDA device; on CPU use dtype fp32 or bf16.")
        return Precision("fp16", torch.float16, None)
    if dtype == "bf16":
        if device.type == "cpu":
            return Precision("bf16", torch.float32, torch.bfloat16)
        return Precision("bf16", torch.bfloat16, None)
    raise SynaugError(f"unknown dtype '{dtype}'; choose fp32, fp16 (CUDA) or bf16.")


class SamplingPipeline:
    """Classifier-free-guided sampling on diffusers components, with per-step hooks.

    Parameters
    ----------
    unet : a ``UNet2DConditionModel`` (or a module with its call signature and ``config``).
    scheduler : a scheduler from :func:`~synaug.generate.schedulers.make_scheduler`; each call works on a fresh copy.
    encode_prompts : the backend's prompt encoder; ``""`` must give the unconditional condition.
    vae : ``AutoencoderKL`` for latent models, None for pixel-space models.
    device, dtype : where and in which precision to run (see :func:`resolve_precision`).
    decode_batch_size : images per VAE decode call; None decodes the whole batch at once.
    channels_last : store UNet and VAE weights channels-last (an option to benchmark, off by default).
    """

    def __init__(
        self,
        unet: torch.nn.Module,
        scheduler: SchedulerMixin,
        encode_prompts: PromptEncoder,
        *,
        vae: torch.nn.Module | None = None,
        device: str | torch.device = "cpu",
        dtype: str = "fp32",
        decode_batch_size: int | None = None,
        channels_last: bool = False,
    ):
        self.device = resolve_device(device)
        self.precision = resolve_precision(dtype, self.device)
        self.unet = frozen_module(unet, self.device, self.precision.weight_dtype, channels_last)
        self.vae = None if vae is None else frozen_module(vae, self.device, self.precision.weight_dtype, channels_last)
        self.scheduler = scheduler
        self.encode_prompts = encode_prompts
        self.decode_batch_size = decode_batch_size
        self.latent_channels = int(unet.config.in_channels)
        self.vae_scale_factor = 1 if vae is None else 2 ** (len(vae.config.block_out_channels) - 1)
        self.image_channels = self.latent_channels if vae is None else int(vae.config.out_channels)
        self._takes_generator = any(isinstance(scheduler, c.scheduler_class) and c.takes_generator for c in SCHEDULERS.values())

    @torch.no_grad()
    def __call__(
        self,
        prompts: list[str],
        seeds: list[int],
        *,
        num_steps: int,
        guidance_scale: float,
        height: int,
        width: int,
        guidance_steps: int | None = None,
        negative_prompt: str | None = None,
        reference_images: torch.Tensor | None = None,
        strength: float = 0.5,
        class_ids: torch.Tensor | None = None,
        hooks: Sequence[StepHook] = (),
        output_size: tuple[int, int] | None = None,
        output_channels: int | None = None,
        image_condition: dict | None = None,
    ) -> GenerationOutput:
        """One batch: an image per (prompt, seed), optionally SDEdit from ``reference_images``; ``image_condition``: extra UNet inputs.

        ``guidance_steps``: classifier-free guidance on the first this many steps of the loop only
        (one UNet row per image on the others); None guides every step.
        """
        # 1. Check inputs
        self.check_inputs(num_steps, height, width, strength, guidance_scale, guidance_steps)
        do_guidance = float(guidance_scale) != 1.0
        generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
        class_ids = None if class_ids is None else class_ids.to(self.device)

        # 2. Encode prompts (unconditional / negative first when guiding)
        condition = {**self.encode_condition(prompts, negative_prompt, do_guidance), **(image_condition or {})}

        # 3. Prepare timesteps (img2img keeps the last `strength` fraction). The scheduler keeps
        #    them on the CPU, next to its own tables, so its steps never wait for the GPU;
        #    the UNet gets one device copy.
        scheduler = type(self.scheduler).from_config(self.scheduler.config)
        scheduler.set_timesteps(num_steps)
        timesteps = scheduler.timesteps
        if reference_images is not None:
            timesteps = self.truncate_timesteps(scheduler, num_steps, strength)
        unet_timesteps = timesteps.to(self.device)
        alpha_bars = _alpha_bars_at(scheduler, timesteps).to(self.device)

        # 4. Prepare latents from each image's own generator
        latents = self.prepare_latents(scheduler, len(prompts), height, width, generators, reference_images, timesteps)

        # 5. Denoising loop
        step_kwargs = {"generator": generators} if self._takes_generator else {}
        failed = torch.zeros(len(prompts), dtype=torch.bool, device=self.device)
        for i, t in enumerate(timesteps):
            step_condition, step_scale = condition, guidance_scale
            if do_guidance and guidance_steps is not None and i >= guidance_steps:
                step_condition, step_scale = conditional_rows(condition, len(prompts)), 1.0
            model_output = self.guided_output(scheduler, latents, t, unet_timesteps[i], step_condition, step_scale)
            active = [hook for hook in hooks if hook.is_active(i, len(timesteps))]
            if active:
                state = self.step_state(scheduler, i, t, unet_timesteps[i], len(timesteps), latents, model_output,
                                        alpha_bars[i], step_condition, step_scale, class_ids)
                correction = self.run_hooks(active, state)
                if correction is not None:
                    latents = latents + correction
                    keep_correction(scheduler)
            latents = scheduler.step(model_output, t, latents, **step_kwargs, return_dict=False)[0]
            failed |= ~torch.isfinite(latents).flatten(1).all(dim=1)
            latents = latents.masked_fill(failed.view(-1, 1, 1, 1), 0.0)

        # 6. Decode
        images = self.decode_in_batches(latents)
        failed |= ~torch.isfinite(images).flatten(1).all(dim=1)
        images = images.nan_to_num(0.0).clamp(-1.0, 1.0)

        # 7. Post-process: hook scores, resize, channels, uint8
        scores = self.collect_scores(hooks, images, class_ids)
        pixels = to_uint8(images, output_size, output_channels)
        flat = pixels.flatten(1)
        blank = flat.amax(dim=1) == flat.amin(dim=1)
        ok = ~failed.cpu() & ~blank
        return GenerationOutput(images=pixels, ok=ok.numpy(), scores=scores)

    def check_inputs(self, num_steps: int, height: int, width: int, strength: float, guidance_scale: float = 1.0,
                     guidance_steps: int | None = None) -> None:
        """Raise a SynaugError for settings the loop cannot run."""
        check_guidance_steps(guidance_steps)
        if not 0.0 <= float(guidance_scale) <= MAX_GUIDANCE_SCALE:
            raise SynaugError(
                f"classifier-free guidance scale {guidance_scale:g} is outside [0, {MAX_GUIDANCE_SCALE:g}]; "
                "1 turns it off, 1.5-10 is usual (beyond 30 the images only saturate)."
            )
        if int(num_steps) < 1:
            raise SynaugError(f"steps={num_steps}; use at least 1 sampling step (10-50 is typical).")
        if height % self.vae_scale_factor or width % self.vae_scale_factor or min(height, width) < self.vae_scale_factor:
            raise SynaugError(
                f"size {height}x{width} must be a positive multiple of {self.vae_scale_factor} (the VAE's downscale); "
                f"pick e.g. {max(1, round(height / self.vae_scale_factor)) * self.vae_scale_factor}."
            )
        if not 0.0 < float(strength) <= 1.0:
            raise SynaugError(f"strength={strength} must lie in (0, 1]; 0.5 keeps the reference's layout, 1 ignores it.")

    def encode_condition(self, prompts: list[str], negative_prompt: str | None, do_guidance: bool) -> dict[str, torch.Tensor]:
        """UNet keyword tensors for the batch; with guidance, [negative; prompts] stacked."""
        unique = {prompt: row for row, prompt in enumerate(dict.fromkeys(prompts))}
        encoded = self._encode(list(unique))
        index = torch.tensor([unique[prompt] for prompt in prompts], device=self.device)
        condition = {key: value[index] for key, value in encoded.items()}
        if not do_guidance:
            return condition
        negative = self._encode([negative_prompt or ""])
        return {key: torch.cat([negative[key].expand_as(value), value]) for key, value in condition.items()}

    def _encode(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """The backend's encoding of ``prompts`` on this device, floats in the weights' dtype."""
        return {
            key: value.to(self.device, self.precision.weight_dtype if value.is_floating_point() else value.dtype)
            for key, value in self.encode_prompts(prompts).items()
        }

    def truncate_timesteps(self, scheduler: SchedulerMixin, num_steps: int, strength: float) -> torch.Tensor:
        """The last ``strength`` fraction of the schedule (img2img / SDEdit)."""
        kept = min(int(num_steps * strength), num_steps)
        if kept < 1:
            raise SynaugError(f"strength={strength} with steps={num_steps} leaves no sampling step; raise strength or steps.")
        begin = (num_steps - kept) * scheduler.order
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(begin)
        return scheduler.timesteps[begin:]

    def prepare_latents(
        self,
        scheduler: SchedulerMixin,
        batch: int,
        height: int,
        width: int,
        generators: list[torch.Generator],
        reference_images: torch.Tensor | None,
        timesteps: torch.Tensor,
    ) -> torch.Tensor:
        """Pure noise, or the reference noised to the first kept timestep (float32)."""
        shape = (batch, self.latent_channels, height // self.vae_scale_factor, width // self.vae_scale_factor)
        noise = randn_tensor(shape, generator=generators, device=self.device, dtype=torch.float32)
        if reference_images is None:
            return noise * scheduler.init_noise_sigma
        references = self.encode_reference(reference_images, height, width)
        return scheduler.add_noise(references, noise, timesteps[:1].repeat(batch))

    def encode_reference(self, reference_images: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """uint8 references -> model space: resized, channel-matched, VAE-encoded (mean) for latent models."""
        images = reference_images.to(self.device).float() / 127.5 - 1.0
        images = convert_channels(images, self.image_channels)
        if images.shape[-2:] != (height, width):
            images = F.interpolate(images, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
        if self.vae is None:
            return images
        with self.autocast():
            latents = self.vae.encode(images.to(self.precision.weight_dtype)).latent_dist.mode().float()
        shift = self.vae.config.get("shift_factor") or 0.0
        return (latents - shift) * self.vae.config.scaling_factor

    def guided_output(
        self,
        scheduler: SchedulerMixin,
        latents: torch.Tensor,
        t: torch.Tensor,
        unet_t: torch.Tensor,
        condition: dict[str, torch.Tensor],
        guidance_scale: float,
    ) -> torch.Tensor:
        """The classifier-free-guided UNet output at x_t (float32); one batched UNet call.

        ``t`` is the scheduler's (CPU) timestep, ``unet_t`` the same value on the UNet's device.
        """
        model_input = scheduler.scale_model_input(latents, t)
        do_guidance = float(guidance_scale) != 1.0
        if do_guidance:
            model_input = torch.cat([model_input, model_input])
        with self.autocast():
            output = self.unet(model_input.to(self.precision.weight_dtype), unet_t, **condition, return_dict=False)[0]
        output = output.float()
        if not do_guidance:
            return output
        unconditional, conditional = output.chunk(2)
        return unconditional + guidance_scale * (conditional - unconditional)

    def predict_x0(self, scheduler: SchedulerMixin, latents: torch.Tensor, t: torch.Tensor,
                   model_output: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
        """x̂0 from x_t and the model output, for epsilon, v_prediction or sample prediction."""
        model_input = scheduler.scale_model_input(latents, t)
        kind = scheduler.config.prediction_type
        if kind == "epsilon":
            return (model_input - (1 - alpha_bar).sqrt() * model_output) / alpha_bar.sqrt()
        if kind == "v_prediction":
            return alpha_bar.sqrt() * model_input - (1 - alpha_bar).sqrt() * model_output
        if kind == "sample":
            return model_output
        raise SynaugError(f"prediction type '{kind}' is not supported; use epsilon, v_prediction or sample.")

    def step_state(
        self,
        scheduler: SchedulerMixin,
        step: int,
        t: torch.Tensor,
        unet_t: torch.Tensor,
        num_steps: int,
        latents: torch.Tensor,
        model_output: torch.Tensor,
        alpha_bar: torch.Tensor,
        condition: dict[str, torch.Tensor],
        guidance_scale: float,
        class_ids: torch.Tensor | None,
    ) -> StepState:
        """The :class:`StepState` handed to hooks at this step."""

        def predict(x_t: torch.Tensor, through_model: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
            output = self.guided_output(scheduler, x_t, t, unet_t, condition, guidance_scale) if through_model else model_output
            return output, self.predict_x0(scheduler, x_t, t, output, alpha_bar)

        return StepState(
            step=step,
            timestep=t,
            num_steps=num_steps,
            latents=latents,
            model_output=model_output,
            x0=self.predict_x0(scheduler, latents, t, model_output, alpha_bar),
            class_ids=class_ids,
            decode=self.decode,
            predict=predict,
        )

    def run_hooks(self, hooks: Sequence[StepHook], state: StepState) -> torch.Tensor | None:
        """The summed corrections of ``hooks`` (autograd enabled while they run); None when no hook corrects."""
        total = None
        with torch.enable_grad():
            for hook in hooks:
                correction = hook(state)
                if correction is None:
                    continue
                if correction.shape != state.latents.shape:
                    raise SynaugError(
                        f"hook {type(hook).__name__} returned a correction of shape {tuple(correction.shape)}; "
                        f"it must match the latents, {tuple(state.latents.shape)}."
                    )
                total = correction.detach().float() if total is None else total + correction.detach().float()
        return total

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (or x̂0) -> images in model pixel space, about [-1, 1]; differentiable."""
        if self.vae is None:
            return latents
        shift = self.vae.config.get("shift_factor") or 0.0
        scaled = latents / self.vae.config.scaling_factor + shift
        with self.autocast():
            return self.vae.decode(scaled.to(self.precision.weight_dtype), return_dict=False)[0].float()

    def decode_in_batches(self, latents: torch.Tensor) -> torch.Tensor:
        """:meth:`decode` over chunks of ``decode_batch_size`` images."""
        size = self.decode_batch_size or len(latents)
        return torch.cat([self.decode(chunk) for chunk in latents.split(size)])

    def collect_scores(self, hooks: Sequence[StepHook], images: torch.Tensor,
                       class_ids: torch.Tensor | None) -> dict[str, np.ndarray]:
        """Per-image scores from every hook's ``finish`` (each hook called once per batch)."""
        scores: dict[str, np.ndarray] = {}
        for hook in hooks:
            for name, values in hook.finish(images, class_ids).items():
                values = torch.as_tensor(values).detach().float().cpu().reshape(-1)
                if len(values) != len(images) or name in scores:
                    raise SynaugError(
                        f"hook {type(hook).__name__} reported score '{name}' twice or not once per image; "
                        "report one value per image under a unique name."
                    )
                scores[name] = values.numpy()
        return scores

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on CPU when asked for; otherwise nothing."""
        if self.precision.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.precision.autocast_dtype)


def check_guidance_steps(guidance_steps: int | None) -> None:
    """Raise a SynaugError unless ``guidance_steps`` is None (every step) or a whole number of at least 1."""
    if guidance_steps is None:
        return
    if isinstance(guidance_steps, bool) or not isinstance(guidance_steps, (int, np.integer)) or guidance_steps < 1:
        raise SynaugError(
            f"guidance_steps={guidance_steps!r}; give a whole number of at least 1 (classifier-free guidance on the "
            "first N sampling steps), or leave it unset for every step (guidance 1 turns guidance off)."
        )


def conditional_rows(condition: dict, batch: int) -> dict:
    """The conditional half of a guided condition (the last ``batch`` rows of every stacked tensor, also inside
    nested dicts and lists); values that are not stacked per image are kept as they are."""
    def half(value):
        if isinstance(value, torch.Tensor) and value.ndim and len(value) == 2 * batch:
            return value[batch:]
        if isinstance(value, dict):
            return {key: half(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(half(item) for item in value)
        return value

    return half(condition)


def to_uint8(images: torch.Tensor, size: tuple[int, int] | None, channels: int | None) -> torch.Tensor:
    """Images in [-1, 1] -> uint8 on the CPU, resized (antialiased) and channel-converted."""
    if channels is not None:
        images = convert_channels(images, channels)
    if size is not None and tuple(images.shape[-2:]) != tuple(size):
        images = F.interpolate(images, size=tuple(int(s) for s in size), mode="bilinear", antialias=True, align_corners=False)
    return ((images.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8).cpu()


def convert_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """1 <-> 3 channels: RGB to luminance, or gray repeated."""
    have = images.shape[1]
    if have == channels:
        return images
    if have == 3 and channels == 1:
        weights = torch.tensor(LUMA_WEIGHTS, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
        return (images * weights).sum(dim=1, keepdim=True)
    if have == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1)
    raise SynaugError(f"cannot convert {have}-channel images to {channels} channels; use 1 or 3 channels.")


def _alpha_bars_at(scheduler: SchedulerMixin, timesteps: torch.Tensor) -> torch.Tensor:
    """ᾱ at each (possibly fractional) timestep, interpolated in σ = sqrt((1-ᾱ)/ᾱ) as the
    sigma-based schedulers do; exact at integer timesteps."""
    alphas_cumprod = scheduler.alphas_cumprod.double().cpu().numpy()
    sigmas = np.sqrt((1 - alphas_cumprod) / alphas_cumprod)
    sigma = np.interp(timesteps.double().cpu().numpy(), np.arange(len(sigmas)), sigmas)
    return torch.from_numpy(1.0 / (1.0 + sigma**2)).float()


def frozen_module(module: torch.nn.Module, device: torch.device, dtype: torch.dtype,
                  channels_last: bool = False) -> torch.nn.Module:
    """``module`` in eval mode on ``device``/``dtype`` with parameters excluded from autograd."""
    if any(parameter.dtype != dtype for parameter in module.parameters()):
        module = module.to(dtype=dtype)
    module = module.to(device=device).eval()
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    module.requires_grad_(False)
    return module
