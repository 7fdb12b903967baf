"""Parsers on the strings models actually write, adversarial ones included."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from debug.core import parse_boolean, parse_integer, parse_variable_binding, parser_for
from debug.parsing import parse_text


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("5", 5),
        (" 5", 5),
        ("5\n#b:", 5),
        ("5\nb=3", 5),
        ("is: 5", 5),
        ("x = 5", 5),
        ("x=5", 5),
        ("#d: 5", 5),
        ("#d:5", 5),
        ("The answer is 5.", 5),
        ("The answer is: -12, because", -12),
        ("-7", -7),
        ("x = -3\n", -3),
        ("\u22124", -4),
        ("Final answer: **7**", 7),
        ("x = 0\nx = 3\nx = 6\nFinal answer: 9", 9),
        ("answer: 4 (after the loop)", 4),
        ("x1 = 3", 3),
        ("12 apples", 12),
        ("", None),
        ("no idea", None),
        ("2.5", None),
        ("abc5", None),
        ("value 5x", None),
        ("x = y", None),
    ],
)
def test_parse_integer(text, value):
    assert parse_integer(text) == value
    assert parse_variable_binding(text) == value


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("True", True),
        (" false.", False),
        ("The answer is False", False),
        ("x = True\ny = False\nFinal answer: True", True),
        ("FALSE", False),
        ("Truely", None),
        ("maybe", None),
        ("", None),
    ],
)
def test_parse_boolean(text, value):
    assert parse_boolean(text) is value


@settings(deadline=None)
@given(
    value=st.integers(-(10**6), 10**6), prefix=st.sampled_from(["", " ", "x = ", "#q: ", "is: ", "Answer: "])
)
def test_integer_round_trips_through_common_shapes(value, prefix):
    suffix_free = f"{prefix}{value}"
    assert parse_integer(suffix_free) == value
    assert parse_integer(suffix_free + "\nb=3\n#b:") == value
    assert parse_integer(suffix_free + ". Done.") == value


@settings(deadline=None, max_examples=300)
@given(st.text())
def test_parsers_never_raise_and_digit_free_text_gives_none(text):
    parsed = parse_integer(text)
    if not any(c.isdigit() for c in text):
        assert parsed is None
    assert parse_boolean(text) in (True, False, None)
    assert parse_text(text) is None or parse_text(text) == parse_text(text).strip()


def test_non_text_gives_none():
    assert parse_integer(None) is None and parse_boolean(5) is None and parse_text(b"x") is None


def test_parser_for_picks_by_answer_type():
    assert parser_for(True) is parse_boolean
    assert parser_for(3) is parse_integer
    assert parser_for("abc") is parse_text
    assert parse_text("\n  hello world \nmore") == "hello world"
