"""Tests for the independent binding generator that the acceptance check of the default model relies on."""

from __future__ import annotations

import random

from independent_binding import independent_program, independent_programs

from debug.train.data import line_values


def test_programs_have_the_asked_depth_and_cpythons_answer() -> None:
    rng = random.Random(0)
    for hops in range(1, 5):
        for _ in range(25):
            program = independent_program(16, hops, rng)
            lines = program.text.split("\n")
            assert len(lines) == 17 and lines[-1].startswith("#") and lines[-1].endswith(":")
            assert program.metadata["hops"] == hops
            query = lines[-1][1:-1]
            # debug's own line-by-line reading agrees with the exec oracle on the queried name's last value.
            values = [value for _, value in line_values(program.text)]
            last = [value for value, line in zip(values, lines, strict=False) if line[0] == query]
            assert last and last[-1] == str(program.answer)


def test_the_set_is_seeded_and_balanced() -> None:
    a, b = independent_programs(5, seed=1), independent_programs(5, seed=1)
    assert [p.text for p in a] == [p.text for p in b]
    assert [p.metadata["hops"] for p in a] == [h for h in range(1, 5) for _ in range(5)]
    assert [p.text for p in independent_programs(5, seed=2)] != [p.text for p in a]
