"""Reading YAML configs into dataclasses, with one-line errors that name the fix."""

from __future__ import annotations

import dataclasses
import difflib
import math
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
    text = path.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SynaugError(f"config file {path} is not valid YAML{_yaml_problem(exc, text)}; fix its syntax.") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SynaugError(f"config file {path} must hold a mapping of keys to values at its top level.")
    return data


def _yaml_problem(error: yaml.YAMLError, text: str) -> str:
    """Where and what a YAML error is: " at line 3 (found unexpected end of stream while scanning a quoted scalar from line 2)"."""
    mark = getattr(error, "problem_mark", None)
    if mark is None:
        return ""
    last_line = max(len(text.splitlines()), 1)  # marks count lines from 0; the end of the stream lies past the last line
    where = f" at line {min(mark.line + 1, last_line)}"
    problem, context, start = getattr(error, "problem", None), getattr(error, "context", None), getattr(error, "context_mark", None)
    if not problem:
        return where
    opened = f" {context} from line {start.line + 1}" if context and start is not None else ""
    return f"{where} ({problem}{opened})"


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


def coerce_value(value: Any, hint: Any, where: str) -> Any:
    """``value`` as one of the types in ``hint``, else a one-line error naming the expected type.

    Understands str, int, float, bool, dataclasses, ``list``/``dict`` (bare or typed, whose items
    are converted in turn) and ``X | None``; ints become floats where a float is expected, and a
    single string stands for a one-item list of strings.
    """
    allowed = _union_members(hint)
    if value is None:
        if type(None) in allowed:
            return None
        raise SynaugError(f"{where} needs a value; give one or remove the key.")
    for target in allowed:
        origin, arguments = typing.get_origin(target) or target, typing.get_args(target)
        if isinstance(value, bool):
            if target is bool:
                return value
            continue
        if target is str and isinstance(value, (str, int, float)):
            return str(value)
        if target is int and isinstance(value, int):
            return value
        if target is float and isinstance(value, (int, float)):
            return finite_number(value, where)
        if dataclasses.is_dataclass(target) and dataclasses.is_dataclass(value):
            return value
        if origin is list and isinstance(value, str) and arguments in ((), (str,)):
            return [value]
        if origin is list and isinstance(value, list):
            return [coerce_value(v, arguments[0], f"{where}[{i}]") for i, v in enumerate(value)] if arguments else list(value)
        if origin is dict and isinstance(value, dict):
            return {str(k): coerce_value(v, arguments[1], f"{where}.{k}") for k, v in value.items()} if arguments else dict(value)
    raise SynaugError(f"{where} must be {' or '.join(_type_name(target) for target in allowed)}, not {value!r}; fix the value.")


def finite_number(value: int | float, where: str) -> float:
    """``value`` as a float, or a one-line error when it is NaN or infinite (no setting takes those)."""
    number = float(value)
    if not math.isfinite(number):
        raise SynaugError(f"{where} is {number}; give a finite number.")
    return number


def _union_members(hint: Any) -> tuple[Any, ...]:
    """The members of ``X | Y`` (or ``Optional[X]``), else ``(hint,)``."""
    return typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)


def _type_name(hint: Any) -> str:
    """How an error names a type: "an integer", "a list of numbers", "null" ..."""
    if hint is type(None):
        return "null"
    origin, arguments = typing.get_origin(hint) or hint, typing.get_args(hint)
    if origin is list:
        return f"a list of {_type_name(arguments[0]).removeprefix('an ').removeprefix('a ')}s" if arguments else "a list"
    if origin is dict:
        return "a mapping"
    return {str: "text", int: "an integer", float: "a number", bool: "true or false"}.get(hint, getattr(hint, "__name__", str(hint)))


def _dataclass_type(cls: type, field: dataclasses.Field) -> type | None:
    """The dataclass type of ``field`` (also inside ``X | None``), or None."""
    for candidate in _union_members(typing.get_type_hints(cls).get(field.name)):
        if dataclasses.is_dataclass(candidate):
            return candidate
    return None
