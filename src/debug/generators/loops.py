"""Loop and running-sum programs (the seed's range-tracking families).

Each tracks one integer variable through a loop or a run of `+=` lines; the answer is its final value.
With `query=True` the program ends in the query line `#<answer_var>:` (e.g. `#x:`), so the answer is the very
next text, as in the binding programs; the default, `query=False`, is the seed's program unchanged.
"""

from __future__ import annotations

from typing import Any

from debug.generators._common import add_query, check_int, check_query, check_seq_len
from debug.programs import Program
from debug.rng import as_random


def make_range_program(seq_len: int, rng: Any, *, max_increment: int = 9, query: bool = False) -> Program:
    """`x = 0`, then a `for` loop of `seq_len` iterations adding one constant.

    Example (seq_len=3)::

        x = 0
        for i in range(3):
            x += 4

    Args:
        seq_len: Loop iterations, >= 1.
        rng: Random source (see `debug.rng.as_random`).
        max_increment: The constant is drawn from 1..max_increment.
        query: End the program with the query line `#x:`.

    Returns:
        Program answering `x` (= seq_len * increment); metadata: answer_var, increment, iterations.
    """
    seq_len = check_seq_len("make_range_program", seq_len, 1)
    max_increment = check_int("make_range_program", "max_increment", max_increment, 1)
    query = check_query("make_range_program", query)
    z = as_random(rng).randint(1, max_increment)
    text = add_query(f"x = 0\nfor i in range({seq_len}):\n    x += {z}", "x", query)
    return Program(text, seq_len * z, {"answer_var": "x", "increment": z, "iterations": seq_len})


def make_range_program_lines(
    seq_len: int, rng: Any, *, max_increment: int = 9, query: bool = False
) -> Program:
    """The loop of `make_range_program` unrolled: `x = 0` then `seq_len` lines `x += z`.

    Args:
        seq_len: Number of `x += z` lines, >= 1.
        rng: Random source.
        max_increment: The constant is drawn from 1..max_increment.
        query: End the program with the query line `#x:`.

    Returns:
        Program answering `x`; metadata: answer_var, increment, iterations.
    """
    seq_len = check_seq_len("make_range_program_lines", seq_len, 1)
    max_increment = check_int("make_range_program_lines", "max_increment", max_increment, 1)
    query = check_query("make_range_program_lines", query)
    z = as_random(rng).randint(1, max_increment)
    text = add_query("\n".join(["x = 0"] + [f"x += {z}"] * seq_len), "x", query)
    return Program(text, seq_len * z, {"answer_var": "x", "increment": z, "iterations": seq_len})


def make_variable_increments(
    seq_len: int, rng: Any, *, max_increment: int = 4, query: bool = False
) -> Program:
    """`x = 0` then `seq_len` lines `x += k  # step i`, each k drawn afresh from 1..max_increment.

    Args:
        seq_len: Number of increments, >= 1.
        rng: Random source.
        max_increment: Largest increment.
        query: End the program with the query line `#x:`.

    Returns:
        Program answering `x` (the sum); metadata: answer_var, increments.
    """
    seq_len = check_seq_len("make_variable_increments", seq_len, 1)
    max_increment = check_int("make_variable_increments", "max_increment", max_increment, 1)
    query = check_query("make_variable_increments", query)
    r = as_random(rng)
    increments = [r.randint(1, max_increment) for _ in range(seq_len)]
    lines = ["x = 0"] + [f"x += {k}  # step {i + 1}" for i, k in enumerate(increments)]
    text = add_query("\n".join(lines), "x", query)
    return Program(text, sum(increments), {"answer_var": "x", "increments": increments})


def make_arithmetic_sequence(
    seq_len: int, rng: Any, *, max_start: int = 4, max_step: int = 2, query: bool = False
) -> Program:
    """`x = start` then `seq_len` lines `x += step  # step i` with one fixed step.

    Args:
        seq_len: Number of steps, >= 1.
        rng: Random source.
        max_start: start is drawn from 0..max_start.
        max_step: step is drawn from 1..max_step.
        query: End the program with the query line `#x:`.

    Returns:
        Program answering `x` (= start + seq_len * step); metadata: answer_var, start, step.
    """
    name = "make_arithmetic_sequence"
    seq_len = check_seq_len(name, seq_len, 1)
    max_start = check_int(name, "max_start", max_start, 0)
    max_step = check_int(name, "max_step", max_step, 1)
    query = check_query(name, query)
    r = as_random(rng)
    start, step = r.randint(0, max_start), r.randint(1, max_step)
    lines = [f"x = {start}"] + [f"x += {step}  # step {i + 1}" for i in range(seq_len)]
    text = add_query("\n".join(lines), "x", query)
    return Program(text, start + seq_len * step, {"answer_var": "x", "start": start, "step": step})


def make_counter_program(seq_len: int, rng: Any, *, query: bool = False) -> Program:
    """`count = 0` and a loop of `seq_len` iterations of `count += 1`.

    The program depends only on `seq_len`; `rng` is accepted for the common signature and not drawn from.

    Args:
        seq_len: Loop iterations, >= 1.
        rng: Random source (not drawn from).
        query: End the program with the query line `#count:`.

    Returns:
        Program answering `count` (= seq_len); metadata: answer_var, iterations.
    """
    seq_len = check_seq_len("make_counter_program", seq_len, 1)
    query = check_query("make_counter_program", query)
    text = add_query(f"count = 0\nfor i in range({seq_len}):\n    count += 1", "count", query)
    return Program(text, seq_len, {"answer_var": "count", "iterations": seq_len})


def make_fibonacci_program(
    seq_len: int, rng: Any, *, start: tuple[int, int] | None = (1, 1), query: bool = False
) -> Program:
    """`a, b = a0, b0`, then `seq_len` steps `a, b = b, a + b`, then `result = a`.

    Args:
        seq_len: Number of steps, >= 1.
        rng: Random source; drawn from only when `start` is None.
        start: The initial pair; (1, 1) as in the seed. None draws each from 0..5.
        query: End the program with the query line `#result:`.

    Returns:
        Program answering `result`; metadata: answer_var, start, steps.
    """
    seq_len = check_seq_len("make_fibonacci_program", seq_len, 1)
    query = check_query("make_fibonacci_program", query)
    if start is None:
        r = as_random(rng)
        start = (r.randint(0, 5), r.randint(0, 5))
    a, b = start
    lines = [f"a, b = {a}, {b}"]
    for i in range(seq_len):
        a, b = b, a + b
        lines.append(f"a, b = b, a + b  # step {i + 1}")
    lines.append("result = a")
    return Program(
        add_query("\n".join(lines), "result", query),
        a,
        {"answer_var": "result", "start": tuple(start), "steps": seq_len},
    )
