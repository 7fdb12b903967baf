"""Counterfactual pairs: two arithmetic programs that share every line but one.

The seed called this `make_counterfactual_pair(seq_len, divergence_index, rng)` and returned four values. Here
it follows the registry's shape, `(seq_len, rng, divergence_index=None) -> Program`: the Program is program A,
and its metadata carries program B and both runs' intermediate values. The seed's positional order
`(seq_len, divergence_index, rng)` is still accepted when the third argument is a random source. With
`query=True` both programs end in the query line `#x:` (so they still differ in exactly one line).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np

from debug.generators._common import add_query, check_int, check_query, check_seq_len
from debug.programs import Program
from debug.rng import as_random

#: Operation name -> (statement template on x with constant v, its effect).
OPERATIONS: dict[str, tuple[str, Callable[[int, int], int]]] = {
    "add": ("x += {v}", lambda x, v: x + v),
    "sub": ("x -= {v}", lambda x, v: x - v),
    "div": ("x //= {v}", lambda x, v: x // v),
    "mod": ("x %= {v}", lambda x, v: x % v),
    "abs": ("x = abs(x - {v})", lambda x, v: abs(x - v)),
}
_OPS = tuple(OPERATIONS)
_MAX_TRIES = 200


def _is_rng(value: Any) -> bool:
    return isinstance(value, random.Random | np.random.RandomState | np.random.Generator)


def make_counterfactual_pair(
    seq_len: int, rng: Any = None, divergence_index: Any = None, *, query: bool = False
) -> Program:
    """Two programs `x = 0` + `seq_len` operations that differ only at step `divergence_index`.

    Operations are `x += v`, `x -= v`, `x //= v`, `x %= v` and `x = abs(x - v)` with v in 1..9. The pair is
    redrawn until the final values differ, so B is a true counterfactual of A.

    Args:
        seq_len: Number of operations, >= 1.
        rng: Random source (see `debug.rng.as_random`).
        divergence_index: 0-based step where B differs (0..seq_len-1); None draws it uniformly.
        query: End both programs with the query line `#x:`.

    Returns:
        Program A answering `x`; metadata: answer_var, counterfactual (program B), counterfactual_answer,
        divergence_index, divergence_line (1-based line in both texts), intermediates and
        counterfactual_intermediates (x after each step).

    Raises:
        ValueError: For seq_len or divergence_index out of range, or a non-bool query.
    """
    name = "make_counterfactual_pair"
    if _is_rng(divergence_index) and not _is_rng(rng):
        rng, divergence_index = divergence_index, rng  # the seed's (seq_len, divergence_index, rng) order
    if rng is None:
        raise TypeError(
            f"{name}: pass a random source as rng (random.Random, numpy RandomState/Generator, int)"
        )
    seq_len = check_seq_len(name, seq_len, 1)
    if divergence_index is not None:
        divergence_index = check_int(name, "divergence_index", divergence_index, 0, seq_len - 1)
    query = check_query(name, query)
    r = as_random(rng)
    for _ in range(_MAX_TRIES):
        split = divergence_index if divergence_index is not None else r.randrange(seq_len)
        steps = [(r.choice(_OPS), r.randint(1, 9)) for _ in range(seq_len)]
        alt = steps[split]
        while alt == steps[split]:
            alt = (r.choice(_OPS), r.randint(1, 9))
        text_a, values_a = _render(steps)
        text_b, values_b = _render(steps[:split] + [alt] + steps[split + 1 :])
        if values_a[-1] != values_b[-1]:
            metadata = {
                "answer_var": "x",
                "counterfactual": add_query(text_b, "x", query),
                "counterfactual_answer": values_b[-1],
                "divergence_index": split,
                "divergence_line": split + 2,
                "intermediates": values_a,
                "counterfactual_intermediates": values_b,
            }
            return Program(add_query(text_a, "x", query), values_a[-1], metadata)
    raise ValueError(
        f"{name}: no pair with different answers in {_MAX_TRIES} draws; try another divergence_index"
    )


def _render(steps: list[tuple[str, int]]) -> tuple[str, list[int]]:
    x, lines, values = 0, ["x = 0"], []
    for op, v in steps:
        template, effect = OPERATIONS[op]
        lines.append(template.format(v=v))
        x = effect(x, v)
        values.append(x)
    return "\n".join(lines), values
