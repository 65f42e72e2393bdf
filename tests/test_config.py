"""The one value checker behind every config and options file (synaug.config.coerce_value), and YAML errors."""

from __future__ import annotations

import pytest

from synaug.config import coerce_value, load_yaml
from synaug.errors import SynaugError


@pytest.mark.parametrize(
    ("value", "hint", "expected"),
    [
        (3, float, 3.0),
        (3, int | None, 3),
        (None, int | None, None),
        (7, str, "7"),
        ("a", list, ["a"]),
        ("a", list[str], ["a"]),
        ([1, 2.5], list[float], [1.0, 2.5]),
        ({"x": 1}, dict[str, float], {"x": 1.0}),
        ({"x": [1]}, dict, {"x": [1]}),
        (True, bool, True),
    ],
)
def test_values_are_converted_to_their_type(value, hint, expected):
    assert coerce_value(value, hint, "key") == expected


@pytest.mark.parametrize(
    ("value", "hint", "message"),
    [
        (None, int, "key needs a value; give one or remove the key."),
        ("many", int | None, "key must be an integer or null, not 'many'; fix the value."),
        (True, int, "key must be an integer, not True; fix the value."),
        ("half", list[float], "key must be a list of numbers, not 'half'; fix the value."),
        (["a", "b"], list[float], "key[0] must be a number, not 'a'; fix the value."),
        ({"x": "y"}, dict[str, int], "key.x must be an integer, not 'y'; fix the value."),
        (3, dict, "key must be a mapping, not 3; fix the value."),
        ((1, 2), list, "key must be a list, not (1, 2); fix the value."),  # only YAML lists are lists
    ],
)
def test_wrong_types_are_one_line_errors(value, hint, message):
    with pytest.raises(SynaugError) as caught:
        coerce_value(value, hint, "key")
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('a: 1\nb: "x\nc: 3\n', "at line 3 (found unexpected end of stream while scanning a quoted scalar from line 2)"),
        ("a: 1\n b: 2\nc: 3\n", "at line 2 (mapping values are not allowed here)"),
    ],
)
def test_yaml_syntax_errors_name_a_line_of_the_file(tmp_path, text, where):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(SynaugError) as error:
        load_yaml(path)
    assert str(error.value) == f"config file {path} is not valid YAML {where}; fix its syntax."
