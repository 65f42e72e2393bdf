"""Loading a generator from the spec string the CLI, run configs and the Python API share.

A spec names a generator: ``embedded`` (the shipped Fashion-MNIST generator), ``embedded:NAME``
(another shipped one), a folder an embedded generator was saved to, a diffusers Stable Diffusion
folder or hub id, or ``python:MODULE:FUNCTION`` (a factory returning a
:class:`~synaug.generate.backends.base.Generator`). Each kind is one :class:`GeneratorBackend`
in :data:`BACKENDS`; :func:`register_backend` adds a new one in one place.
"""

from __future__ import annotations

import difflib
import importlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synaug.errors import SynaugError, SynaugWarning

if TYPE_CHECKING:
    from synaug.generate.backends.base import Generator
    from synaug.plan.planner import SynthesisPlan

__all__ = ["BACKENDS", "GeneratorBackend", "check_vocabulary", "load_generator", "register_backend"]

PYTHON_PREFIX = "python:"
AUTO = "auto"


@dataclass(frozen=True)
class GeneratorBackend:
    """One kind of generator spec: ``claims(spec)`` says whether the spec is this kind,
    ``load(spec, settings)`` builds the generator from the sampler settings the caller gave."""

    name: str
    claims: Callable[[str], bool]
    load: Callable[[str, dict[str, Any]], "Generator"]
    default_dtype: str | None = AUTO


BACKENDS: list[GeneratorBackend] = []


def register_backend(backend: GeneratorBackend) -> GeneratorBackend:
    """Add ``backend`` to the specs :func:`load_generator` understands, ahead of the diffusers fallback.

    >>> register_backend(GeneratorBackend("mine", lambda s: s.startswith("mine:"), load_mine))  # doctest: +SKIP
    """
    BACKENDS.insert(max(len(BACKENDS) - 1, 0), backend)
    return backend


def load_generator(spec: str, *, device: str | None = AUTO, dtype: str | None = None, **sampler: Any) -> "Generator":
    """The generator named by ``spec`` (see the module docstring), ready to sample.

    ``device``: auto (CUDA when available, else CPU), cpu, cuda or cuda:N. ``dtype``: auto (bf16
    where the device runs it natively, else fp32), fp32, fp16 or bf16; None: the backend's
    default, auto for embedded generators as in ``synaug run``, fp32 for Stable Diffusion (its
    bf16 images on a CPU depend on the batch, so a resumed store would differ). ``sampler``:
    scheduler, steps, guidance_scale, guidance_steps, batch_size, ...; None means the generator's own default.
    For ``python:MODULE:FUNCTION`` the settings given are FUNCTION's keyword arguments (device
    only when not auto).

    >>> import synaug
    >>> generator = synaug.load_generator("embedded", steps=10, batch_size=64)  # doctest: +SKIP
    """
    if not isinstance(spec, str) or not spec.strip():
        raise SynaugError(f"generator spec {spec!r} is not a name; give embedded, embedded:NAME, a model folder or hub id, or python:MODULE:FUNCTION.")
    backend = next(b for b in BACKENDS if b.claims(spec))
    settings = {k: v for k, v in sampler.items() if v is not None}
    settings["device"] = AUTO if device is None else device
    if dtype is not None or backend.default_dtype is not None:
        settings["dtype"] = dtype if dtype is not None else backend.default_dtype
    return backend.load(spec, settings)


def check_vocabulary(synthesis: "SynthesisPlan", generator: str, *, allow_unknown_classes: bool = False) -> None:
    """Refuse an embedded generator asked for classes whose prompts name none of the classes it
    was trained on (a :class:`~synaug.errors.SynaugWarning` instead with ``allow_unknown_classes``),
    and warn when group prompts name none of its contexts.

    Such images would show the generator's own classes (clothing filed under "eight"); map each
    class to one of its names (``class_prompt_names``) or pass a generator trained on them.
    """
    from synaug.generate.backends.embedded import embedded_spec

    spec = embedded_spec(generator)
    if spec is None:
        return
    groups = range(len(synthesis.group_names)) if synthesis.group_names is not None else [None]
    prompts = [[synthesis.prompt(c, g, i) for g in groups for i in range(synthesis.prompt_count(c, g))] for c in range(len(synthesis.class_names))]
    _, synthetic = synthesis.class_totals()
    unknown = [name for c, name in enumerate(synthesis.class_names) if synthetic[c] and not any(map(spec.names_a_class, prompts[c]))]
    if unknown:
        problem = (
            f"generator {generator} was trained on {', '.join(spec.class_names)} only, and the prompts of "
            f"{', '.join(unknown)} name none of these, so their images would show something else"
        )
        if not allow_unknown_classes:
            raise SynaugError(
                f"{problem}; pass a generator (--generator, generator.spec) trained on your classes, plan again mapping each "
                "class to one of those names (--class-prompt-names CLASS=NAME, plan.class_prompt_names), or draw them anyway "
                "with --allow-unknown-classes (generator.allow_unknown_classes: true)."
            )
        warnings.warn(f"{problem}; drawing them anyway, as allowed.", SynaugWarning, stacklevel=2)
    if spec.context_names is None or synthesis.group_names is None:
        return
    contexts = [name.casefold() for name in spec.context_names]
    unknown_groups = [
        name for g, name in enumerate(synthesis.group_names)
        if not any(context in synthesis.prompt(c, g, i).casefold() for context in contexts
                   for c in range(len(synthesis.class_names)) for i in range(synthesis.prompt_count(c, g)))
    ]
    if unknown_groups:
        warnings.warn(
            f"generator {generator} draws the contexts {', '.join(spec.context_names)} only, and the prompts of "
            f"group {', '.join(unknown_groups)} name none of these, so their images will show another context; map each group to "
            "one of those names with plan.group_prompt_names (GROUP: NAME).",
            SynaugWarning, stacklevel=2,
        )


# ---- the built-in backends -----------------------------------------------------------------
def _is_embedded(spec: str) -> bool:
    from synaug.generate.backends.embedded import SHIPPED_PREFIX, SPEC_FILE

    return spec == "embedded" or spec.startswith(SHIPPED_PREFIX) or (Path(spec).expanduser() / SPEC_FILE).is_file()


def _load_embedded(spec: str, settings: dict[str, Any]) -> "Generator":
    from synaug.generate.backends.embedded import SHIPPED_PREFIX, EmbeddedBackend

    embedding = [name for name in ("ip_adapter", "ip_adapter_scale", "noise_level") if name in settings]
    if embedding:
        raise SynaugError(
            f"{embedding[0]} conditions a Stable Diffusion checkpoint on the exemplar's embedding; embedded generators take "
            "exemplars by img2img (strength) only, or through their own encoder (embedded:fashion-mnist-exemplar): pass a Stable Diffusion "
            "checkpoint as the generator, or drop it."
        )

    if spec == "embedded":
        return EmbeddedBackend.default(**settings)
    if spec.startswith(SHIPPED_PREFIX):
        return EmbeddedBackend.shipped(spec[len(SHIPPED_PREFIX):], **settings)
    return EmbeddedBackend.from_pretrained(spec, **settings)


def _load_python(spec: str, settings: dict[str, Any]) -> "Generator":
    """Call FUNCTION of MODULE (``spec`` = "python:MODULE:FUNCTION") with the settings given."""
    target = spec[len(PYTHON_PREFIX):]
    module_name, sep, function_name = target.partition(":")
    if not sep or not module_name or not function_name:
        raise SynaugError(f"generator '{spec}' is not python:MODULE:FUNCTION; write e.g. python:mypackage.generators:make.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SynaugError(f"cannot import module '{module_name}' for the generator ({exc}); put it on PYTHONPATH or install it.") from None
    factory = getattr(module, function_name, None)
    if not callable(factory):
        raise SynaugError(f"module '{module_name}' has no function '{function_name}'; name the factory that returns the generator.")
    from synaug.generate.backends.base import Generator

    generator = factory(**{k: v for k, v in settings.items() if not (k == "device" and v == AUTO)})
    if not isinstance(generator, Generator):
        raise SynaugError(f"{spec} returned a {type(generator).__name__}, not a synaug Generator; return a subclass of synaug.generate.backends.base.Generator.")
    return generator


def _load_diffusers(spec: str, settings: dict[str, Any]) -> "Generator":
    """A Stable Diffusion folder or hub id; a near miss of a shipped name is a typo, not a hub id."""
    from synaug.generate.backends.embedded import SHIPPED_PREFIX, shipped_names

    near = difflib.get_close_matches(spec, ["embedded"] + [SHIPPED_PREFIX + name for name in shipped_names()], n=1)
    if near and not Path(spec).expanduser().exists():
        raise SynaugError(f"generator '{spec}' is neither a folder here nor a shipped generator; did you mean '{near[0]}'?")
    from synaug.generate.backends.stable_diffusion import StableDiffusionBackend

    return StableDiffusionBackend.from_pretrained(spec, **settings)


BACKENDS.extend([
    GeneratorBackend("python", lambda spec: spec.startswith(PYTHON_PREFIX), _load_python, default_dtype=None),
    GeneratorBackend("embedded", _is_embedded, _load_embedded),
    GeneratorBackend("diffusers", lambda spec: True, _load_diffusers, default_dtype="fp32"),
])
