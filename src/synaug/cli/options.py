"""Command options from a YAML file and the command line, checked against an options dataclass."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from synaug.config import from_dict, load_yaml
from synaug.errors import SynaugError

T = TypeVar("T")

TYPE_NAMES = {int: "an integer", float: "a number", str: "text", bool: "true or false", list: "a list", dict: "a mapping"}


def given_options(config: Path | None, **command_line: Any) -> dict[str, Any]:
    """Option values from the YAML config, overridden by those given on the command line."""
    values = {str(k).replace("-", "_"): v for k, v in load_yaml(config).items()} if config is not None else {}
    values.update({k: v for k, v in command_line.items() if v is not None})
    return values


def build_options(cls: type[T], values: dict[str, Any], config: Path | str | None) -> T:
    """The options dataclass ``cls`` from ``values`` (nearest-key errors), each value type-checked."""
    where = str(config) if config is not None else "options"
    options = from_dict(cls, values, where=where)
    hints = typing.get_type_hints(cls)
    for option in dataclasses.fields(cls):
        setattr(options, option.name, coerce_option(getattr(options, option.name), hints[option.name], f"{where}.{option.name}"))
    return options


def coerce_option(value: Any, hint: Any, where: str) -> Any:
    """``value`` as one of the types in ``hint`` (str, int, float, bool, list, dict, or None when optional)."""
    allowed = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None:
        if type(None) in allowed:
            return None
        raise SynaugError(f"{where} needs a value; give one or remove the key.")
    for target in allowed:
        if target is bool and isinstance(value, bool):
            return value
        if isinstance(value, bool):
            continue
        if target is str and isinstance(value, (str, int, float)):
            return str(value)
        if target is int and isinstance(value, int):
            return value
        if target is float and isinstance(value, (int, float)):
            return float(value)
        if target is list and isinstance(value, (list, str)):
            return [value] if isinstance(value, str) else list(value)
        if target is dict and isinstance(value, dict):
            return dict(value)
    names = " or ".join("null" if t is type(None) else TYPE_NAMES.get(t, t.__name__) for t in allowed)
    raise SynaugError(f"{where} must be {names}, not {value!r}; fix the value.")
