"""Heuristic baselines on hand-built programs whose scores are known."""

from __future__ import annotations

import random

import pytest

from debug.baselines import copy_last_constant, copy_line_1, heuristic_baselines, majority
from debug.generators import make_boolean_program, make_range_program_lines
from debug.programs import Program

PROGRAMS = [
    Program("a=5\nb=a\n#b:", 5),  # line 1 right, last constant right
    Program("a=5\nb=3\nc=a\n#c:", 5),  # line 1 right, last constant (3) wrong
    Program("a=1\nb=4\n#b:", 4),  # line 1 wrong, last constant right
    ("a=2\nb=a\nc=8\n#b:", 2),  # tuple form: line 1 right, last wrong
]


def test_known_scores():
    assert copy_line_1(PROGRAMS) == 0.75
    assert copy_last_constant(PROGRAMS) == 0.5
    assert majority(PROGRAMS) == 0.5  # answer 5 twice out of four
    assert heuristic_baselines(PROGRAMS) == {"copy_line_1": 0.75, "copy_last_constant": 0.5, "majority": 0.5}


def test_comments_do_not_count_as_constants():
    program = Program("x = 0\nx += 2  # step 1\nx += 2  # step 2", 4)
    assert copy_last_constant([program]) == 0.0  # the last code literal is 2, not the comment's 2 or 1


def test_boolean_programs_copy_boolean_literals():
    program = Program("a = True\nb = not a", False)
    assert copy_line_1([program]) == 0.0
    assert copy_last_constant([Program("a = False\nb = a", False)]) == 1.0


def test_every_family_gets_all_three_baselines():
    rng = random.Random(0)
    for make in (make_boolean_program, make_range_program_lines):
        scores = heuristic_baselines([make(5, rng) for _ in range(50)])
        assert set(scores) == {"copy_line_1", "copy_last_constant", "majority"}
        assert all(0.0 <= v <= 1.0 for v in scores.values())


def test_empty_list_is_refused():
    with pytest.raises(ValueError, match="non-empty"):
        heuristic_baselines([])
