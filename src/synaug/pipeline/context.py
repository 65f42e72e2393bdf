"""What every stage of `synaug run` shares: the config, the stage cache, progress lines and timings.

A stage (see :mod:`synaug.pipeline.stages`) is a function of a :class:`RunContext` and the
outputs of the stages before it. It describes its output by its inputs and the modules it runs
(``CODE``), and :meth:`RunContext.stage` returns the cached folder or builds it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence

import torch
from rich.console import Console
from rich.text import Text

from synaug.data.dataset import LabeledImages
from synaug.data.registry import load_dataset
from synaug.devices import resolve_device
from synaug.errors import SynaugError
from synaug.pipeline.cache import StageCache, code_digest, stage_digest
from synaug.pipeline.config import RunConfig
from synaug.report import StageTiming

STAGES = ("data", "plan", "feedback", "generate", "train", "crt", "evaluate", "report")


@dataclass
class StageOutput:
    """A finished stage folder and its record."""

    digest: str
    folder: Path
    record: dict[str, Any]


class RunContext:
    """The state one run of the stages shares.

    Parameters
    ----------
    config : the run config.
    config_name : how errors name the config (its file name).
    target : the only stage of :data:`STAGES` this run computes (None: all); the others must be cached.
    progress : show progress bars.
    rerun_command : the command that runs one stage (for the error naming a missing stage), if any.
    """

    def __init__(
        self,
        config: RunConfig,
        *,
        config_name: str = "run config",
        target: str | None = None,
        progress: bool = True,
        rerun_command: Callable[[str], str] | None = None,
    ):
        if target is not None and target not in STAGES:
            raise SynaugError(f"unknown stage '{target}'; choose one of {', '.join(STAGES)}.")
        self.config = config
        self.config_name = config_name
        self.target = target
        self.progress = progress
        self.rerun_command = rerun_command
        self.out = Path(config.output)
        self.cache = StageCache(self.out / "stages")
        self.console = Console(stderr=True, highlight=False)
        self.timings: list[StageTiming] = []
        self.datasets: dict[str, LabeledImages] = {}
        self.training_sets: dict[str, LabeledImages] = {}
        self.generator: Any = None

    def stage(
        self,
        stage: str,
        label: str,
        inputs: dict[str, Any],
        build: Callable[[Path, dict[str, Any]], None],
        code: Sequence[str],
        group: str | None = None,
    ) -> StageOutput:
        """The finished output of cache stage ``stage``: from the cache, or built now by ``build(folder, facts)``
        when this run may compute it (as ``group`` of :data:`STAGES`); ``code``: the modules it runs."""
        code_hash = code_digest(tuple(code))
        digest = stage_digest(stage, inputs, code_hash)
        record = self.cache.record(stage, digest)
        if record is None:
            if not self.may_compute(group or stage):
                self.missing(group or stage, label)
            self.say(stage, f"{label} ...")
            with self.cache.build(stage, digest, inputs) as (folder, facts):
                facts["code"] = code_hash
                build(folder, facts)
            record = self.cache.record(stage, digest)
            self.note(stage, label, record, cached=False)
        else:
            self.note(stage, label, record, cached=True)
        return StageOutput(digest, self.cache.folder(stage, digest), record)

    def may_compute(self, stage: str) -> bool:
        """Whether this run computes ``stage`` (all stages, or only the one asked for)."""
        return self.target is None or self.target == stage_group(stage)

    def missing(self, stage: str, label: str) -> NoReturn:
        """Refuse to go on without ``stage``'s output, naming the stage to run first."""
        group = stage_group(stage)
        how = f"run `{self.rerun_command(group)}` first" if self.rerun_command else f"run the '{group}' stage first"
        raise SynaugError(
            f"--stage {self.target} needs the '{group}' stage's output ({label}) for {self.config_name}, and {self.cache.root} has none; "
            f"{how} (or run without --stage to run every stage)."
        )

    def note(self, stage: str, label: str, record: dict[str, Any], cached: bool) -> None:
        """Record a finished stage's timing and say it was cached or done."""
        folder = self.cache.folder(stage, record["digest"])
        self.timings.append(StageTiming(stage, label, float(record["seconds"]), cached, str(folder)))
        status = "cached" if cached else f"done in {record['seconds']:.1f} s"
        self.say(stage, f"{label}: {status}")

    def say(self, stage: str, text: str) -> None:
        """One progress line on stderr, prefixed by the stage."""
        self.console.print(Text.assemble((f"{stage:>14} ", "bold cyan"), text))

    def device(self) -> torch.device:
        """The device of training and evaluation (train.device, "auto" resolved)."""
        return resolve_device(self.config.train.device)

    def load(self, source: dict[str, Any]) -> LabeledImages:
        """The dataset of ``load_dataset(**source)``, loaded once per run."""
        key = json.dumps(source, sort_keys=True)
        if key not in self.datasets:
            self.datasets[key] = load_dataset(**source)
        return self.datasets[key]


def stage_group(stage: str) -> str:
    """The stage of :data:`STAGES` that cache stage ``stage`` belongs to (plan-extra and plan-feedback to plan, ...)."""
    return stage.split("-")[0]
