"""The one-command pipeline: data → long-tail split → plan → feedback classifier → generate → train → cRT → evaluate → report."""

from synaug.pipeline.ablations import RECIPES, Recipe, build_training_set
from synaug.pipeline.cache import StageCache, code_digest, stage_digest
from synaug.pipeline.config import RunConfig, dump_run_config, load_run_config, parse_run_config
from synaug.pipeline.context import STAGES, RunContext
from synaug.pipeline.demo import run_demo
from synaug.pipeline.runner import Pipeline, PipelineResult, run_pipeline

__all__ = [
    "RECIPES",
    "STAGES",
    "Pipeline",
    "PipelineResult",
    "Recipe",
    "RunConfig",
    "RunContext",
    "StageCache",
    "build_training_set",
    "code_digest",
    "dump_run_config",
    "load_run_config",
    "parse_run_config",
    "run_demo",
    "run_pipeline",
    "stage_digest",
]
