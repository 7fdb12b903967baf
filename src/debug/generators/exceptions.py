"""Exception-handling programs: a running total built from `try`/`except` blocks.

What they compute: `result = 0`, then `seq_len` blocks; each block's `try` body adds the value of one
expression that may raise, and its `except` clause (naming exactly the exception that expression can raise)
adds a negative fallback instead. The answer is the final value of `result`, so a model must decide, block by
block, whether the `try` line raises. Example (seq_len=2, kinds="all")::

    result = 0
    try:
        result += 12 // 0
    except ZeroDivisionError:
        result += -3
    try:
        result += [4, 7, 1][1]
    except IndexError:
        result += -2

answers 4 (-3 + 7). Fallbacks are drawn from -5..-1 so a raising block never looks like a quiet one.

The answer is a value, never an exception's name: every exception is caught, and which ones were raised is
what the total encodes. So the query form (`query=True`) is the same as every other family's: the program
ends in `#result:` and the answer (an integer, possibly negative) is the very next text.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from debug.generators._common import add_query, check_query, check_seq_len
from debug.programs import Program
from debug.rng import as_random

Block = tuple[str, str, int | None]  # (try expression, exception name, value or None when it raises)


def _zero_division(r: random.Random, raise_: bool) -> Block:
    n = r.randint(1, 20)
    if raise_:
        return f"{n} // 0", "ZeroDivisionError", None
    d = r.choice([k for k in range(1, 11) if n % k == 0])
    return f"{n} // {d}", "ZeroDivisionError", n // d


def _index(r: random.Random, raise_: bool) -> Block:
    items = [r.randint(0, 9) for _ in range(r.randint(2, 4))]
    i = r.randint(len(items), len(items) + 2) if raise_ else r.randrange(len(items))
    return f"{items}[{i}]", "IndexError", None if raise_ else items[i]


def _key(r: random.Random, raise_: bool) -> Block:
    keys = r.sample("abcdefgh", 3)
    table = {k: r.randint(0, 9) for k in keys[:2]}
    key = keys[2] if raise_ else r.choice(keys[:2])
    return f"{table}[{key!r}]", "KeyError", None if raise_ else table[key]


def _value(r: random.Random, raise_: bool) -> Block:
    if raise_:
        return f"int({r.choice(['x', 'ab', '1.5', '-', '3a'])!r})", "ValueError", None
    n = r.randint(0, 20)
    return f"int({str(n)!r})", "ValueError", n


#: Kind name -> maker of one block. `kinds` picks among these.
KINDS: dict[str, Callable[[random.Random, bool], Block]] = {
    "zero_division": _zero_division,
    "index": _index,
    "key": _key,
    "value": _value,
}


def make_exception_program(
    seq_len: int,
    rng: Any,
    *,
    p_raise: float = 0.3,
    kinds: str | tuple[str, ...] = ("zero_division",),
    query: bool = False,
) -> Program:
    """A running total over `seq_len` try/except blocks, some of which raise.

    Args:
        seq_len: Number of try/except blocks, >= 1.
        rng: Random source (see `debug.rng.as_random`).
        p_raise: Probability that a block's `try` expression raises.
        kinds: Which exceptions blocks use: names from `KINDS` or "all". The default, integer division only,
            is the seed's program.
        query: End the program with the query line `#result:`.

    Returns:
        Program answering `result`; metadata: answer_var, raised (per block), kinds (per block).

    Raises:
        ValueError: For seq_len < 1, p_raise outside [0, 1], an unknown kind or a non-bool query.
    """
    name = "make_exception_program"
    seq_len = check_seq_len(name, seq_len, 1)
    if not 0.0 <= p_raise <= 1.0:
        raise ValueError(f"{name}: p_raise must be in [0, 1]; got {p_raise!r}")
    chosen = tuple(KINDS) if kinds == "all" else ((kinds,) if isinstance(kinds, str) else tuple(kinds))
    unknown = [k for k in chosen if k not in KINDS]
    if unknown or not chosen:
        raise ValueError(f"{name}: kinds must be 'all' or names from {sorted(KINDS)}; got {kinds!r}")
    query = check_query(name, query)
    r = as_random(rng)
    lines, total, raised, used = ["result = 0"], 0, [], []
    for _ in range(seq_len):
        kind = r.choice(chosen)
        expr, exc, value = KINDS[kind](r, r.random() < p_raise)
        fallback = r.randint(-5, -1)
        lines += ["try:", f"    result += {expr}", f"except {exc}:", f"    result += {fallback}"]
        total += fallback if value is None else value
        raised.append(value is None)
        used.append(kind)
    return Program(
        add_query("\n".join(lines), "result", query),
        total,
        {"answer_var": "result", "raised": raised, "kinds": used},
    )
