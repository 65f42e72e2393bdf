"""Running a whole run config from Python, as `synaug run` does, with or without a config file."""

from __future__ import annotations

import dataclasses
import os
import shlex
from collections.abc import Mapping
from typing import Any

from synaug.errors import SynaugError
from synaug.pipeline.config import RunConfig, dump_run_config, load_run_config, parse_run_config
from synaug.pipeline import PipelineResult, run_pipeline

__all__ = ["run"]

UNNAMED_CONFIG = "config.yaml"


def run(
    config: RunConfig | Mapping[str, Any] | str | os.PathLike,
    *,
    stage: str | None = None,
    out: str | os.PathLike | None = None,
    progress: bool = True,
    config_name: str | None = None,
    command: str | None = None,
) -> PipelineResult:
    """Run a run config (a YAML file, a mapping of its sections, or a :class:`RunConfig`); each stage is cached.

    ``stage`` runs one stage only (earlier ones must be cached), ``out`` replaces the config's
    output folder. The report's "Reproduce" section shows ``command`` and the config verbatim;
    by default the `synaug run` command line for the file, or for the config written out as
    ``config_name`` (default config.yaml) when it was given as a mapping.

    >>> result = synaug.run("fashion-mnist-lt.yaml", out="runs/lt")  # doctest: +SKIP
    >>> result.report  # doctest: +SKIP
    """
    if isinstance(config, (str, os.PathLike)):
        parsed, text = load_run_config(config)
        name = config_name or str(config)
    elif isinstance(config, Mapping):
        parsed = parse_run_config(config, where=config_name or "config")
        text, name = dump_run_config(parsed), config_name or UNNAMED_CONFIG
    elif isinstance(config, RunConfig):
        parsed, name = config, config_name or UNNAMED_CONFIG
        text = dump_run_config(parsed)
    else:
        raise SynaugError(f"run takes a run config file, a mapping or a RunConfig, not a {type(config).__name__}.")
    overrides = []
    if out is not None:
        parsed = dataclasses.replace(parsed, output=str(out))
        overrides.append(f"output = {out}")
    def words(only: str | None) -> str:
        return shlex.join(["synaug", "run", name] + (["--stage", only] if only else []) + (["--out", str(out)] if out is not None else []))

    return run_pipeline(
        parsed, stage=stage, config_name=name, config_text=text, command=command or words(stage),
        overrides=overrides, progress=progress, rerun_command=words,
    )
