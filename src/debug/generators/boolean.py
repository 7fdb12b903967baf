"""Boolean logic programs: a straight-line run of boolean assignments; the answer is the last one's value.

Example (seq_len=4)::

    q = True
    d = not q
    m = q or d
    w = d != m

answers True. Every line assigns a fresh letter (so seq_len is at most 26): a constant, `not v`, or `v and u`,
`v or u`, `v != u` (exclusive or), `v == u` over variables already assigned. With `query=True` the program
ends in the query line `#w:` (the last variable assigned), so the answer, `True` or `False`, is the very next
text.
"""

from __future__ import annotations

from typing import Any

from debug.generators._common import add_query, check_query, check_seq_len
from debug.programs import Program
from debug.rng import as_random

_VARS = "abcdefghijklmnopqrstuvwxyz"
OPERATORS = ("not", "and", "or", "!=", "==")


def make_boolean_program(
    seq_len: int,
    rng: Any,
    *,
    p_constant: float = 0.25,
    operators: tuple[str, ...] = OPERATORS,
    query: bool = False,
) -> Program:
    """Generate `seq_len` boolean assignment lines.

    Args:
        seq_len: Number of lines, 1..26.
        rng: Random source (see `debug.rng.as_random`).
        p_constant: Probability that a line after the first assigns True/False rather than an expression.
        operators: Which of "not", "and", "or", "!=", "==" expressions may use.
        query: End the program with the query line `#<last variable>:`.

    Returns:
        Program answering the last assigned variable (a bool); metadata: answer_var, operators_used.

    Raises:
        ValueError: For seq_len outside 1..26, p_constant outside [0, 1], an unknown operator or a
            non-bool query.
    """
    name = "make_boolean_program"
    seq_len = check_seq_len(name, seq_len, 1, 26)
    if not 0.0 <= p_constant <= 1.0:
        raise ValueError(f"{name}: p_constant must be in [0, 1]; got {p_constant!r}")
    if not operators or any(op not in OPERATORS for op in operators):
        raise ValueError(f"{name}: operators must be a non-empty subset of {OPERATORS}; got {operators!r}")
    query = check_query(name, query)
    r = as_random(rng)
    names = r.sample(_VARS, seq_len)
    values: dict[str, bool] = {}
    lines, used = [], []
    for i, lhs in enumerate(names):
        if i == 0 or r.random() < p_constant:
            value = r.random() < 0.5
            rhs = str(value)
        else:
            op = r.choice(operators)
            a = names[r.randrange(i)]
            if op == "not":
                rhs, value = f"not {a}", not values[a]
            else:
                b = names[r.randrange(i)]
                while b == a and i > 1:  # `v and v` says nothing; pick a second, different operand
                    b = names[r.randrange(i)]
                rhs = f"{a} {op} {b}"
                value = {"and": values[a] and values[b], "or": values[a] or values[b]}.get(
                    op, (values[a] != values[b]) if op == "!=" else (values[a] == values[b])
                )
            used.append(op)
        values[lhs] = value
        lines.append(f"{lhs} = {rhs}")
    text = add_query("\n".join(lines), names[-1], query)
    return Program(text, values[names[-1]], {"answer_var": names[-1], "operators_used": used})
