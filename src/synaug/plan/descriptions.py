"""Per-class (or per-cell) prompts from a descriptions file, e.g. captions an LLM or a captioner wrote.

File format: UTF-8 text, one prompt per line, ``CLASS: prompt``; for a plan over class x
group cells, ``CLASS | GROUP: prompt``. Blank lines and lines starting with ``#`` are skipped.
A class (or cell) may have any number of lines; its images take them in turn (image ``i``
uses its ``i % n``-th line), as templates rotate. The names are the dataset's class (and
group) names, not the prompt names, and the prompt is used word for word (no ``{class}``
fields). Every class (every cell) of the plan needs at least one line, so that what is
generated is never a silent fallback. A file may hold class lines and cell lines together
(e.g. for a run that makes both a class-only and a class x group plan): a plan per class
uses the class lines, a plan per cell the cell lines::

    # descriptions.txt
    Sandal: a brown leather sandal with thin straps, product photo
    Sandal: a rubber beach sandal on white background
    T-shirt/top: a plain white cotton t-shirt, folded

A class name that itself holds a colon is recognised as long as it is a class of the plan.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Mapping, Sequence

from synaug.errors import SynaugError

CELL_SEPARATOR = " | "
COMMENT = "#"
Descriptions = dict[str, list[str]]


def description_key(class_name: str, group_name: str | None = None) -> str:
    """The key of a class ("Sandal") or of a cell ("Sandal | beach") in a descriptions mapping."""
    return str(class_name) if group_name is None else f"{class_name}{CELL_SEPARATOR}{group_name}"


def expected_keys(class_names: Sequence[str], group_names: Sequence[str] | None) -> list[str]:
    """Every key a complete descriptions mapping has: one per class, or one per (class, group) cell."""
    if group_names is None:
        return [description_key(c) for c in class_names]
    return [description_key(c, g) for c in class_names for g in group_names]


def read_descriptions(path: str | Path, class_names: Sequence[str], group_names: Sequence[str] | None = None) -> Descriptions:
    """The prompts of every class (or cell) in the descriptions file ``path`` (format in the module doc), checked complete."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SynaugError(f"descriptions file {path} does not exist; write one line 'CLASS: prompt' per prompt, or fix the path.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SynaugError(f"cannot read descriptions file {path} ({getattr(exc, 'strerror', None) or exc}); save it as UTF-8 text.") from None
    descriptions: Descriptions = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith(COMMENT):
            continue
        key, prompt = _split_line(line, class_names, f"{path} line {number}")
        descriptions.setdefault(key, []).append(prompt)
    return check_descriptions(descriptions, class_names, group_names, where=f"descriptions file {path}")


def check_descriptions(
    descriptions: Mapping, class_names: Sequence[str], group_names: Sequence[str] | None = None, where: str = "descriptions"
) -> Descriptions:
    """``descriptions`` as ``{key: [prompt, ...]}`` with a key per class (or cell), each known and none missing.

    Keys may be given as "CLASS", "CLASS | GROUP" or (CLASS, GROUP) pairs; a value may be one
    prompt or a list of them. Keys of the other kind (cells for a class plan, classes for a
    cell plan) are checked for unknown names, then left out.
    """
    known = expected_keys(class_names, group_names)
    result: Descriptions = {}
    other_kind = 0
    for key, prompts in descriptions.items():
        key = _normal_key(key)
        _check_names(key, class_names, group_names, where)
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise SynaugError(f"{where}: '{key}' has an empty prompt; give each line some text after the colon.")
        if key in known:
            result.setdefault(key, []).extend(p.strip() for p in prompts)
        else:
            other_kind += 1
    if not result and other_kind:
        example = description_key(class_names[0]) if group_names is None else description_key(class_names[0], group_names[0])
        have, need = ("'CLASS | GROUP: prompt'", "per class") if group_names is None else ("'CLASS: prompt'", "per class x group cell")
        raise SynaugError(f"{where} has only {have} lines, but the plan is {need}; add lines such as '{example}: <prompt>'.")
    if not result:
        raise SynaugError(f"{where} holds no prompt; write one line 'CLASS: prompt' per prompt.")
    missing = [key for key in known if key not in result]
    if missing:
        shown = ", ".join(f"'{k}'" for k in missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise SynaugError(f"{where} has no prompt for {shown}; add a line '{missing[0]}: <prompt>' for every one of them.")
    return {key: result[key] for key in known}


def _split_line(line: str, class_names: Sequence[str], where: str) -> tuple[str, str]:
    """(key, prompt) of one line; a class name holding a colon is matched whole, longest first."""
    for name in sorted((c for c in class_names if ":" in c), key=len, reverse=True):
        rest = line[len(name):].lstrip() if line.startswith(name) else ""
        if rest.startswith(":"):
            return description_key(name), rest[1:].strip()
        group, sep, prompt = rest[1:].partition(":") if rest.startswith("|") else ("", "", "")
        if sep:
            return description_key(name, group.strip()), prompt.strip()
    key, sep, prompt = line.partition(":")
    if not sep:
        raise SynaugError(f"{where} is not 'CLASS: prompt' (no colon); write the class name, a colon, then the prompt.")
    return _normal_key(key), prompt.strip()


def _normal_key(key) -> str:
    """A key with its parts stripped: "Sandal|beach" and ("Sandal", "beach") become "Sandal | beach"."""
    parts = [str(p).strip() for p in key] if isinstance(key, (tuple, list)) else [p.strip() for p in str(key).split("|")]
    return CELL_SEPARATOR.join(parts)


def _check_names(key: str, class_names: Sequence[str], group_names: Sequence[str] | None, where: str) -> None:
    """A one-line error for a key naming an unknown class, or (in a plan with groups) an unknown group."""
    parts = key.split(CELL_SEPARATOR)
    if len(parts) > 2:
        raise SynaugError(f"{where}: '{key}' has more than one '|'; write 'CLASS: prompt' or 'CLASS | GROUP: prompt'.")
    if parts[0] not in class_names:
        near = difflib.get_close_matches(parts[0], list(class_names), n=1)
        hint = f"did you mean '{near[0]}'? " if near else ""
        raise SynaugError(f"{where} names class '{parts[0]}', which the dataset does not have; {hint}valid classes: {', '.join(class_names)}.")
    if len(parts) == 2 and group_names is not None and parts[1] not in group_names:
        raise SynaugError(f"{where} names group '{parts[1]}', which the dataset does not have; valid groups: {', '.join(group_names)}.")
