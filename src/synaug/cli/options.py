"""Command options from a YAML file and the command line, checked against an options dataclass."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, TypeVar

from synaug.config import coerce_value, from_dict, load_yaml
from synaug.errors import SynaugError

T = TypeVar("T")


def given_options(config: Path | None, **command_line: Any) -> dict[str, Any]:
    """Option values from the YAML config, overridden by those given on the command line."""
    values = {str(k).replace("-", "_"): v for k, v in load_yaml(config).items()} if config is not None else {}
    values.update({k: v for k, v in command_line.items() if v is not None})
    return values


def build_options(cls: type[T], values: dict[str, Any], config: Path | str | None) -> T:
    """The options dataclass ``cls`` from ``values`` (nearest-key errors), each value type-checked.

    Errors read as `synaug run`'s do: "c.yaml: unknown key 'stratgy'; did you mean 'strategy'?".
    """
    where = str(config) if config is not None else "options"
    try:
        options = from_dict(cls, values, where="options")
    except SynaugError as exc:
        raise SynaugError(f"{where}: {str(exc).replace('options.', '', 1)}") from None
    hints = typing.get_type_hints(cls)
    for option in dataclasses.fields(cls):
        name = f"{where}: {option.name}" if config is not None else "--" + option.name.replace("_", "-")
        setattr(options, option.name, coerce_value(getattr(options, option.name), hints[option.name], name))
    return options
