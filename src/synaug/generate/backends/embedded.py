"""The embedded generator backend: synaug's own small pixel-space text-to-image model.

A model folder (``save_pretrained`` style, see docs/DESIGN.md) holds ``unet/`` (a diffusers
``UNet2DConditionModel`` in pixel space with ``class_embed_type="projection"`` fed with the
pooled 384-d all-MiniLM-L6-v2 caption embedding), ``scheduler/scheduler_config.json`` (the
training ``DDPMScheduler``) and ``synaug_generator.json`` (:class:`EmbeddedGeneratorSpec`).
The UNet is called as ``unet(x, t, encoder_hidden_states=emb[:, None, :], class_labels=emb)``;
the empty prompt maps to the all-zeros embedding, the null condition of classifier-free
guidance. Sampling goes through the same loop and hooks as Stable Diffusion.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel

from synaug.errors import SynaugError
from synaug.generate.backends.base import LoopGenerator, guided_steps, positive_int, resolve_dtype
from synaug.generate.exemplars import DEFAULT_STRENGTH, check_strength
from synaug.generate.pipeline import SamplingPipeline, resolve_device, resolve_precision
from synaug.generate.schedulers import make_scheduler
from synaug.generators.exemplar_model import PROJECTION_FOLDER, ExemplarCondition, ExemplarSettings, load_exemplar_unet
from synaug.generators.text import EMBEDDING_DIM, encode_texts

SPEC_FILE = "synaug_generator.json"
DEFAULT_SAMPLER = {"scheduler": "ddim", "steps": 20, "guidance_scale": 1.0, "guidance_steps": None}
SHIPPED_ROOT = Path(str(importlib.resources.files("synaug"))) / "generators" / "weights"
SHIPPED_FOLDER = SHIPPED_ROOT / "fashion-mnist"
SHIPPED_PREFIX = "embedded:"


@dataclass
class EmbeddedGeneratorSpec:
    """What ``synaug_generator.json`` records about an embedded generator.

    image_size : (H, W) the model generates.
    channels : image channels (1 for grayscale).
    class_names : the classes it was trained on.
    caption_templates : templates such as "a photo of a {class}" (and "{context}" for groups).
    context_names : group/context names for class x context captions, or None.
    sampler : recommended defaults: {"scheduler": ..., "steps": ..., "guidance_scale": ..., "guidance_steps": ...}
        (guidance_steps: classifier-free guidance on the first N steps only; None: every step).
    exemplar : the frozen exemplar encoder's settings of an exemplar-conditioned generator
        (:mod:`synaug.generators.exemplar_model`), None for a text-only one.
    Unknown keys in the file are ignored.
    """

    image_size: tuple[int, int]
    channels: int
    class_names: list[str]
    caption_templates: list[str]
    context_names: list[str] | None = None
    sampler: dict = field(default_factory=lambda: dict(DEFAULT_SAMPLER))
    exemplar: dict | None = None

    @classmethod
    def read(cls, folder: str | os.PathLike) -> EmbeddedGeneratorSpec:
        """The spec stored in ``folder``, validated."""
        path = Path(folder) / SPEC_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise SynaugError(f"generator folder {folder} has no {SPEC_FILE}; point to a folder written by `synaug generator train`.") from None
        except json.JSONDecodeError as exc:
            raise SynaugError(f"{path} is not valid JSON (line {exc.lineno}); fix or re-create it with `synaug generator train`.") from None
        missing = [key for key in ("image_size", "channels", "class_names", "caption_templates") if key not in data]
        if missing:
            raise SynaugError(f"{path} lacks the key '{missing[0]}'; re-create it with `synaug generator train`.")
        spec = cls(
            image_size=tuple(int(s) for s in data["image_size"]),
            channels=int(data["channels"]),
            class_names=[str(name) for name in data["class_names"]],
            caption_templates=[str(t) for t in data["caption_templates"]],
            context_names=None if data.get("context_names") is None else [str(n) for n in data["context_names"]],
            sampler={**DEFAULT_SAMPLER, **(data.get("sampler") or {})},
            exemplar=data.get("exemplar"),
        )
        if len(spec.image_size) != 2 or spec.channels not in (1, 3) or not spec.class_names:
            raise SynaugError(f"{path} needs image_size [H, W], channels 1 or 3 and a non-empty class_names list.")
        spec.exemplar_settings()  # validates
        return spec

    def exemplar_settings(self) -> ExemplarSettings | None:
        """The frozen exemplar encoder of an exemplar-conditioned generator; None for a text-only one."""
        return ExemplarSettings.read(self.exemplar, self.channels, SPEC_FILE)

    def names_a_class(self, prompt: str) -> bool:
        """Whether ``prompt`` names one of the classes the generator was trained on (case-insensitively)."""
        text = prompt.casefold()
        return any(name.casefold() in text for name in self.class_names)

    def write(self, folder: str | os.PathLike) -> Path:
        """Write ``synaug_generator.json`` into ``folder`` atomically; returns its path."""
        path = Path(folder) / SPEC_FILE
        data = {**asdict(self), "image_size": list(self.image_size)}
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(temporary, path)
        return path


class EmbeddedBackend(LoopGenerator):
    """Sampling from an embedded generator folder; build it with :meth:`from_pretrained`.

    ``scheduler``, ``steps``, ``guidance_scale`` and ``guidance_steps`` default to the folder's
    recommended sampler settings. With ``guidance_scale == 1`` the unconditional pass is skipped.
    ``dtype="bf16"`` runs under bf16 autocast on CPU (about 2x faster than fp32 on 2 cores), ``"auto"``
    picks it where the device runs bf16 natively;
    ``channels_last`` stores the UNet channels-last (an option to try; no gain measured at 28 px).
    An exemplar-conditioned generator (``exemplar`` in its spec) conditions each image on its
    exemplar's embedding when ``generate`` gets exemplars, from noise unless ``strength`` < 1.
    """

    backend_name = "embedded"

    def __init__(
        self,
        *,
        name: str,
        unet: UNet2DConditionModel,
        scheduler_config: dict,
        spec: EmbeddedGeneratorSpec,
        weights_digest: str,
        device: str = "cpu",
        dtype: str = "fp32",
        scheduler: str | None = None,
        steps: int | None = None,
        guidance_scale: float | None = None,
        guidance_steps: int | None = None,
        strength: float | None = None,
        batch_size: int = 256,
        channels_last: bool = False,
    ):
        _check_unet(unet, spec, name)
        exemplar = spec.exemplar_settings()
        self.exemplar_condition = None if exemplar is None else ExemplarCondition(exemplar, spec.image_size)
        self.spec = spec
        self.generator_id = f"embedded:{name}@{weights_digest}"
        self.scheduler_name = scheduler or spec.sampler["scheduler"]
        self.steps = int(steps if steps is not None else spec.sampler["steps"])
        self.guidance_scale = float(guidance_scale if guidance_scale is not None else spec.sampler["guidance_scale"])
        self.guidance_steps = guided_steps(
            guidance_steps if guidance_steps is not None else spec.sampler["guidance_steps"], self.steps, self.guidance_scale
        )
        self.strength = check_strength(strength if strength is not None else 1.0 if exemplar else DEFAULT_STRENGTH)
        self.batch_size = positive_int(batch_size, "batch_size")
        self.height, self.width = spec.image_size
        self._embeddings: dict[str, torch.Tensor] = {}
        self.pipeline = SamplingPipeline(
            unet, make_scheduler(self.scheduler_name, scheduler_config), self.encode_prompts,
            device=device, dtype=resolve_dtype(dtype, resolve_device(device)), channels_last=channels_last,
        )
        self.pipeline.check_inputs(self.steps, self.height, self.width, self.strength, self.guidance_scale, self.guidance_steps)

    @classmethod
    def from_pretrained(
        cls,
        folder: str | os.PathLike,
        *,
        device: str = "cpu",
        dtype: str = "fp32",
        scheduler: str | None = None,
        steps: int | None = None,
        guidance_scale: float | None = None,
        guidance_steps: int | None = None,
        strength: float | None = None,
        batch_size: int = 256,
        channels_last: bool = False,
    ) -> EmbeddedBackend:
        """Load an embedded generator folder (``unet/``, ``scheduler/``, ``synaug_generator.json``)."""
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise SynaugError(f"generator folder {folder} does not exist; train one with `synaug generator train` or fix the path.")
        if scheduler is not None:
            make_scheduler(scheduler, {})  # fail on a bad name before loading weights
        target = resolve_device(device)
        dtype = resolve_dtype(dtype, target)
        weight_dtype = resolve_precision(dtype, target).weight_dtype
        spec = EmbeddedGeneratorSpec.read(folder)
        for part in ("unet", "scheduler"):
            if not (folder / part).is_dir():
                raise SynaugError(f"generator folder {folder} is missing its '{part}' component ({part}/); re-save it with `synaug generator train`.")
        try:
            # a few-MB model: plain loading, and no "install accelerate" warning on every run
            unet = UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=weight_dtype, low_cpu_mem_usage=False)
            scheduler_config = DDPMScheduler.load_config(folder / "scheduler")
        except (OSError, ValueError) as exc:
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise SynaugError(f"could not load the generator in {folder} ({detail}); re-save it with `synaug generator train`.") from None
        weight_folders = [folder / "unet"]
        if spec.exemplar_settings() is not None:
            unet = load_exemplar_unet(folder, unet, spec.exemplar_settings())
            weight_folders.append(folder / PROJECTION_FOLDER)
        return cls(
            name=folder.resolve().name,
            unet=unet,
            scheduler_config=scheduler_config,
            spec=spec,
            weights_digest=weights_digest(*weight_folders),
            device=device,
            dtype=dtype,
            scheduler=scheduler,
            steps=steps,
            guidance_scale=guidance_scale,
            guidance_steps=guidance_steps,
            strength=strength,
            batch_size=batch_size,
            channels_last=channels_last,
        )

    @classmethod
    def default(cls, **kwargs) -> EmbeddedBackend:
        """The Fashion-MNIST generator shipped inside the package (keyword arguments as :meth:`from_pretrained`)."""
        if not (SHIPPED_FOLDER / SPEC_FILE).is_file():
            raise SynaugError(
                "the shipped Fashion-MNIST generator is not installed in this copy of synaug; "
                "train one with `synaug generator train` and pass its folder instead."
            )
        return cls.from_pretrained(SHIPPED_FOLDER, **kwargs)

    @classmethod
    def shipped(cls, name: str, **kwargs) -> EmbeddedBackend:
        """The generator shipped as ``weights/NAME`` (spec ``embedded:NAME``, e.g. embedded:colored-fashion-mnist)."""
        folder = SHIPPED_ROOT / name
        if not name or "/" in name or not (folder / SPEC_FILE).is_file():
            raise SynaugError(
                f"no shipped generator '{name}' in this copy of synaug (shipped: {', '.join(shipped_names()) or 'none'}); "
                "use one of those names after 'embedded:' or pass a generator folder instead."
            )
        return cls.from_pretrained(folder, **kwargs)

    def settings(self) -> dict:
        """The loop's settings, and the exemplar encoder of an exemplar-conditioned generator."""
        settings = super().settings()
        if self.exemplar_condition is not None:
            settings["image_condition"] = self.exemplar_condition.settings()
        return settings

    def steps_run(self, with_exemplars: bool) -> int:
        """All steps when exemplars enter through their embedding only (strength 1)."""
        return self.steps if self.exemplar_condition is not None and self.strength >= 1.0 else super().steps_run(with_exemplars)

    def exemplar_inputs(self, reference_images: torch.Tensor | None, seeds: list[int]) -> dict:
        """img2img pixels for a text-only generator; the exemplars' embedding (and pixels below strength 1) otherwise."""
        if self.exemplar_condition is None or reference_images is None:
            return super().exemplar_inputs(reference_images, seeds)
        condition = self.exemplar_condition(reference_images, self.guidance_scale != 1.0, self.pipeline.device)
        return {"reference_images": reference_images if self.strength < 1.0 else None, "image_condition": condition}

    def encode_prompts(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Pooled MiniLM embeddings (cached per prompt); "" is the all-zeros null condition."""
        missing = list(dict.fromkeys(p for p in prompts if p and p not in self._embeddings))
        if missing:
            self._embeddings.update(zip(missing, encode_texts(missing)))
        null = torch.zeros(EMBEDDING_DIM)
        embeddings = torch.stack([self._embeddings[p] if p else null for p in prompts])
        return {"encoder_hidden_states": embeddings[:, None, :], "class_labels": embeddings}


def shipped_names() -> list[str]:
    """The NAMEs of the generators shipped in this copy of synaug (``embedded:NAME``)."""
    return sorted(p.name for p in SHIPPED_ROOT.iterdir() if (p / SPEC_FILE).is_file()) if SHIPPED_ROOT.is_dir() else []


def shipped_folder(spec: str) -> Path | None:
    """The folder of a shipped-generator spec: "embedded" (Fashion-MNIST) or "embedded:NAME"; None for other specs."""
    if spec == "embedded":
        return SHIPPED_FOLDER
    if spec.startswith(SHIPPED_PREFIX):
        return SHIPPED_ROOT / spec[len(SHIPPED_PREFIX):]
    return None


def embedded_spec(spec: str) -> EmbeddedGeneratorSpec | None:
    """What an embedded generator named by ``spec`` (see :func:`shipped_folder`, or its folder) records; None for other generators."""
    folder = shipped_folder(spec) or Path(spec).expanduser()
    return EmbeddedGeneratorSpec.read(folder) if (folder / SPEC_FILE).is_file() else None


def weights_digest(*folders: Path) -> str:
    """First 8 hex digits of the SHA-256 over the weight files in ``folders`` (each sorted by name)."""
    files = []
    for folder in folders:
        found = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin"))
        if not found:
            raise SynaugError(f"{folder} holds no weight file (*.safetensors); re-save the generator with `synaug generator train`.")
        files += found
    digest = hashlib.sha256()
    for path in files:
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:8]


def _check_unet(unet: UNet2DConditionModel, spec: EmbeddedGeneratorSpec, name: str) -> None:
    """Raise when the UNet does not match the embedded format."""
    config = unet.config
    if config.class_embed_type != "projection" or config.projection_class_embeddings_input_dim != EMBEDDING_DIM:
        raise SynaugError(
            f"generator '{name}': its UNet must use class_embed_type='projection' with "
            f"projection_class_embeddings_input_dim={EMBEDDING_DIM}; re-train it with `synaug generator train`."
        )
    if config.in_channels != spec.channels or config.out_channels != spec.channels:
        raise SynaugError(
            f"generator '{name}': UNet has {config.in_channels} input channels but {SPEC_FILE} says {spec.channels}; "
            "fix the json or re-train."
        )
