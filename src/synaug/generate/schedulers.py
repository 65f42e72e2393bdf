"""The samplers offered by name, built from a checkpoint's own scheduler config.

Schedulers are chosen by name from :data:`SCHEDULERS` and built with ``from_config`` from the
checkpoint's own scheduler config (betas, prediction type, clipping, steps_offset), plus:

====== =================================== ===============================================
name   class                               settings we force
====== =================================== ===============================================
ddim   DDIMScheduler                       timestep_spacing="leading" (eta 0)
dpm++  DPMSolverMultistepScheduler         algorithm_type="dpmsolver++", solver_order=2,
                                           timestep_spacing="leading"
euler  EulerDiscreteScheduler              timestep_spacing="leading"
ddpm   DDPMScheduler                       timestep_spacing="leading"
unipc  UniPCMultistepScheduler             timestep_spacing="leading"; no corrector at a step
                                           where a hook corrects x_t (see :func:`hooks.keep_correction`)
====== =================================== ===============================================

Why "leading": with the cosine (``squaredcos_cap_v2``) schedule the last training step t=999
has ᾱ ≈ 2.4e-9, so a sampler that starts there ("linspace"/"trailing", the defaults of
DPM-Solver++, Euler and UniPC) multiplies the network's ε error by ~2e4 — the ±5,000
divergence of DPM-Solver++ at 10 steps; "leading" starts one stride lower. The analytic-model
tests in ``tests/test_generate_pipeline_schedulers.py`` check every scheduler at 10 and 25
steps on linear, cosine and Stable Diffusion schedules (and show the default diverging).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from synaug.errors import SynaugError


@dataclass(frozen=True)
class SchedulerChoice:
    """A scheduler offered by name: its class, the settings we force, whether ``step`` takes a generator."""

    scheduler_class: type[SchedulerMixin]
    overrides: dict = field(default_factory=dict)
    takes_generator: bool = False


SCHEDULERS: dict[str, SchedulerChoice] = {
    "ddim": SchedulerChoice(DDIMScheduler, {"timestep_spacing": "leading"}, takes_generator=True),
    "dpm++": SchedulerChoice(
        DPMSolverMultistepScheduler,
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "timestep_spacing": "leading"},
        takes_generator=True,
    ),
    "euler": SchedulerChoice(EulerDiscreteScheduler, {"timestep_spacing": "leading"}, takes_generator=True),
    "ddpm": SchedulerChoice(DDPMScheduler, {"timestep_spacing": "leading"}, takes_generator=True),
    "unipc": SchedulerChoice(UniPCMultistepScheduler, {"timestep_spacing": "leading"}),
}


def make_scheduler(name: str, config: dict) -> SchedulerMixin:
    """Scheduler ``name`` built from a checkpoint's scheduler ``config`` plus our overrides."""
    if name not in SCHEDULERS:
        raise SynaugError(f"unknown scheduler '{name}'; choose one of: {', '.join(SCHEDULERS)}.")
    choice = SCHEDULERS[name]
    return choice.scheduler_class.from_config(dict(config), **choice.overrides)
