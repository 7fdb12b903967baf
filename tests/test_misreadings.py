"""Tests for debug.misreadings: hand-read programs, then CPython as the oracle on generated ones."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from debug.generators import make_variable_binding_program
from debug.misreadings import MISREADINGS, NEIGHBOURHOOD, misreading_rates, misreadings
from debug.programs import Program

# Lines 0-3 assign a, b, c, then d=c; the query reads d (answer 3). Read right: line 3, then line 2.
NEIGHBOURS = Program("a=1\nb=2\nc=3\nd=c\n#d:", 3)
# y=x reads the x of line 0 (4); x is re-assigned to 9 on line 5, too far from line 0 to be a neighbour.
REASSIGNED = Program("x=4\ny=x\na=1\nb=2\nc=3\nx=9\n#y:", 4)


def test_a_neighbouring_line_and_another_assignment_are_told_apart() -> None:
    assert misreadings(NEIGHBOURS, 1) == {"neighbour_line"}  # line 0, read for c
    assert misreadings(NEIGHBOURS, 2) == {"neighbour_line"}  # line 1, read for d or c
    assert misreadings(NEIGHBOURS, 7) == set()  # nowhere in the program
    assert misreadings(REASSIGNED, 9) == {"other_assignment"}
    assert misreadings(REASSIGNED, 2) == {"neighbour_line"}  # line 3, two below y=x
    assert misreadings(REASSIGNED, 3) == set()  # line 4 is three below y=x: out of reach


def test_the_right_answer_and_a_non_integer_are_no_misreading() -> None:
    assert misreadings(NEIGHBOURS, 3) == set()
    assert misreadings(NEIGHBOURS, None) == set()
    assert misreadings(Program("x = 2\nwhile x:\n    x = 0\n#x:", 0), 2) == set()  # untraceable: none


def test_rates_count_shares_of_the_wrong_answers_against_chance() -> None:
    rates = misreading_rates([NEIGHBOURS, NEIGHBOURS, REASSIGNED], [1, 3, None])
    assert rates["errors"] == 2  # the right answer is not counted; a non-answer is an error
    assert rates["share"] == {"neighbour_line": 0.5, "other_assignment": 0.0, "unexplained": 0.5}
    # Of the 9 wrong digits, NEIGHBOURS' misreadings give 1 and 2; REASSIGNED's give 1, 2 (neighbours), 9.
    assert rates["chance"]["neighbour_line"] == pytest.approx((2 / 9 + 2 / 9) / 2)
    assert rates["chance"]["other_assignment"] == pytest.approx((0 + 1 / 9) / 2)
    assert rates["chance"]["unexplained"] == pytest.approx((7 / 9 + 6 / 9) / 2)


def test_no_wrong_answer_gives_no_shares() -> None:
    rates = misreading_rates([NEIGHBOURS], [3])
    assert rates["errors"] == 0 and set(rates["share"].values()) == {None}


def _python_misread_values(text: str) -> dict[str, set[int]]:
    """The misread answers worked out independently: CPython runs each prefix for the values."""
    lines = text.split("\n")[:-1]
    names = [line.split("=")[0].strip() for line in lines]

    def value_after(k: int) -> int:
        scope: dict[str, int] = {}
        exec("\n".join(lines[: k + 1]), {}, scope)
        return scope[names[k]]

    query = text.split("\n")[-1][1:-1]
    out: dict[str, set[int]] = {name: set() for name in MISREADINGS}
    reader, variable = len(lines), query
    while True:
        right = max(k for k in range(reader) if names[k] == variable)
        for k in range(len(lines)):
            if k != right and abs(k - right) <= NEIGHBOURHOOD and k < reader:
                out["neighbour_line"].add(value_after(k))
            if k != right and names[k] == variable:
                out["other_assignment"].add(value_after(k))
        rhs = lines[right].split("=")[1].strip()
        if rhs.isdigit():
            return out
        reader, variable = right, rhs


@settings(max_examples=60, deadline=None)
@given(
    seq_len=st.integers(2, 16),
    seed=st.integers(0, 2**32 - 1),
    style=st.sampled_from(["paper", "spaced"]),
)
def test_misreadings_match_python_on_generated_programs(seq_len: int, seed: int, style: str) -> None:
    program = make_variable_binding_program(seq_len, random.Random(seed), style=style)
    expected = _python_misread_values(program.text)
    for digit in range(10):
        want = {name for name, values in expected.items() if digit in values and digit != program.answer}
        assert misreadings(program, digit) == want
