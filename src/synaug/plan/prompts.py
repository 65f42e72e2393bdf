"""Prompts for synthetic images, built from templates such as "a photo of a {class}".

A template must use the field ``{class}`` (the class name as written in prompts); for group
data it may also use ``{context}`` or its synonym ``{group}`` (the group's name). When a plan
has several templates they rotate by image index: image ``i`` of a class uses template
``i % len(templates)``.

Built-in template sets (:data:`TEMPLATE_SETS`, chosen with ``template_set``):

``plain``
    Five neutral phrasings of a photo of the class, such as "a photo of a {class}" and
    "a picture of a {class}".
``modifier``
    "a photo of {modifier} {class}" with each of the 20 :data:`MODIFIERS` (size, age, state,
    colour and pattern words such as "a small", "an old", "a striped"), one template per
    modifier, in that order.

For class x group plans every template gets ", {context}" appended. The default (no
templates, no set) stays :data:`DEFAULT_TEMPLATES`. Per-class prompts written by hand, by an
LLM or by a captioner come from a descriptions file instead (:mod:`synaug.plan.descriptions`).
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Mapping, Sequence

from synaug.errors import SynaugError

DEFAULT_TEMPLATES = ("a photo of a {class}",)
DEFAULT_GROUP_TEMPLATES = ("a photo of a {class}, {context}",)
PLAIN_TEMPLATES = (
    "a photo of a {class}",
    "a photo of the {class}",
    "a picture of a {class}",
    "an image of a {class}",
    "a snapshot of a {class}",
)
MODIFIERS = (
    "a small", "a large", "an old", "a new", "a clean", "a worn", "a bright", "a dark", "a colorful", "a plain",
    "a shiny", "a matte", "a striped", "a patterned", "a simple", "a detailed", "a modern", "a vintage", "a light", "a heavy",
)
TEMPLATE_SETS = {
    "plain": PLAIN_TEMPLATES,
    "modifier": tuple(f"a photo of {modifier} {{class}}" for modifier in MODIFIERS),
}
GROUP_SUFFIX = ", {context}"
CLASS_FIELDS = ("class",)
GROUP_FIELDS = ("context", "group")


@dataclass
class PromptSources:
    """The prompt settings besides explicit templates, declared once for `synaug plan` (options and
    ``--config`` keys) and the ``plan`` section of run configs; :func:`synaug.plan.make_plan` takes
    the same names as keywords. Give at most one of them, and then no templates.

    Parameters
    ----------
    template_set : a built-in set of :data:`TEMPLATE_SETS` ("plain" or "modifier").
    descriptions : a descriptions file (format: :mod:`synaug.plan.descriptions`).
    """

    template_set: str | None = None
    descriptions: str | None = None


def template_fields(template: str) -> list[str]:
    """The field names a template uses, in order ("{class} on {context}" -> ["class", "context"])."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise SynaugError(f"prompt template '{template}' is malformed ({exc}); write fields as {{class}} and literal braces as {{{{ }}}}.") from None
    return [name for _, name, _, _ in parsed if name is not None]


def check_templates(templates: Sequence[str], with_groups: bool) -> list[str]:
    """``templates`` as a list, after checking every field is known for this kind of plan."""
    templates = [str(t) for t in templates]
    if not templates:
        raise SynaugError("no prompt templates given; pass at least one, e.g. 'a photo of a {class}'.")
    valid = CLASS_FIELDS + GROUP_FIELDS if with_groups else CLASS_FIELDS
    for template in templates:
        fields = template_fields(template)
        for name in fields:
            if name in valid:
                continue
            hint = " (this plan has no groups, so {context}/{group} cannot be used)" if name in GROUP_FIELDS else ""
            shown = "{" + name + "}" if name else "{}"
            raise SynaugError(
                f"prompt template '{template}' uses unknown field {shown}{hint}; valid fields: {', '.join('{' + v + '}' for v in valid)}."
            )
        if "class" not in fields:
            raise SynaugError(
                f"prompt template '{template}' has no {{class}}, so every class would get the same prompt; "
                f"put the class name in it, e.g. '{template} of a {{class}}'."
            )
    return templates


def template_set(name: str, with_groups: bool = False) -> list[str]:
    """The templates of the built-in set ``name`` (see the module doc); with groups, each ends in ", {context}"."""
    if name not in TEMPLATE_SETS:
        raise SynaugError(f"unknown template set '{name}'; use one of {', '.join(TEMPLATE_SETS)}, or give your own templates.")
    return [template + GROUP_SUFFIX if with_groups else template for template in TEMPLATE_SETS[name]]


def render_prompt(template: str, class_name: str, group_name: str | None = None) -> str:
    """``template`` filled with the class (and group) name."""
    values = {"class": class_name}
    if group_name is not None:
        values.update(context=group_name, group=group_name)
    return template.format(**values)


def prompt_names(class_names: Sequence[str], overrides: Mapping[str, str] | None, kind: str = "class") -> list[str]:
    """Class (or group, with ``kind="group"``) names as written in prompts: the name unless ``overrides`` renames it.

    ``overrides`` maps a dataset class name to its prompt name ("T-shirt/top" -> "t-shirt");
    naming a class the dataset does not have is an error.
    """
    overrides = dict(overrides or {})
    unknown = [name for name in overrides if name not in class_names]
    if unknown:
        plural = "classes" if kind == "class" else "groups"
        raise SynaugError(
            f"prompt name given for {kind} '{unknown[0]}', which the dataset does not have; valid {plural}: {', '.join(class_names)}."
        )
    return [str(overrides.get(name, name)) for name in class_names]


def parse_name_overrides(pairs: Sequence[str]) -> dict[str, str]:
    """``["T-shirt/top=t-shirt", ...]`` as a mapping; each entry must be ``CLASS=PROMPT NAME``."""
    overrides: dict[str, str] = {}
    for pair in pairs:
        name, sep, prompt_name = pair.partition("=")
        if not sep or not name.strip() or not prompt_name.strip():
            raise SynaugError(f"class prompt name '{pair}' is not CLASS=NAME; write e.g. 'T-shirt/top=t-shirt'.")
        overrides[name.strip()] = prompt_name.strip()
    return overrides
