"""Reading YAML configs into dataclasses, with one-line errors that name the fix."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from synaug.errors import SynaugError

T = TypeVar("T")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping stored in a YAML file."""
    path = Path(path)
    if not path.is_file():
        raise SynaugError(f"config file {path} does not exist; check the path.")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SynaugError(f"config file {path} is not valid YAML{where}; fix its syntax.") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SynaugError(f"config file {path} must hold a mapping of keys to values at its top level.")
    return data


def from_dict(cls: type[T], values: dict[str, Any] | None, where: str = "config") -> T:
    """Build dataclass ``cls`` from ``values``, recursing into nested dataclass fields.

    An unknown key raises a SynaugError naming the nearest valid key.
    """
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            near = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"did you mean '{near[0]}'?" if near else f"valid keys: {', '.join(sorted(fields))}."
            raise SynaugError(f"unknown key '{where}.{key}'; {hint}")
        nested = _dataclass_type(cls, fields[key])
        if nested is not None and isinstance(value, dict):
            value = from_dict(nested, value, f"{where}.{key}")
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise SynaugError(f"{where}: {exc}; add the missing key.") from None


def to_dict(obj: Any) -> Any:
    """A plain (YAML/JSON-safe) copy of a dataclass tree."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _dataclass_type(cls: type, field: dataclasses.Field) -> type | None:
    """The dataclass type of ``field`` (also inside ``X | None``), or None."""
    hint = typing.get_type_hints(cls).get(field.name)
    candidates = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else (hint,)
    for candidate in candidates:
        if dataclasses.is_dataclass(candidate):
            return candidate
    return None
