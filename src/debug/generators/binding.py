"""Variable binding programs in the style of Wu, Geiger & Millière (arXiv 2505.20896).

A program is `seq_len` assignment lines followed by a query comment, e.g. (4 lines, 2 hops)::

    c=4
    k=c
    c=7
    x=c
    #k:

Every line is `var=const` (a digit 0-9) or `var=var` (letters a-z). Variables may be re-assigned; the
answer follows Python's sequential semantics (`k` is 4 above, not 7). The query line `#k:` is a Python
comment, so the program runs as is, and it has no trailing space: the answer digit is the very next character.
This query form is the default here (`query=True`), as in the paper; `query=False` leaves the line off.

Sampling defeats the seed's confound (81% of its answers equalled the line-1 constant): the hop count is drawn
uniformly from 1..min(max_hops, seq_len), then the line holding the chain's root constant is drawn uniformly
from the lines that leave room for the rest of the chain, then the other chain lines uniformly after it. So a
model that copies line 1 is right only about 1/(seq_len - hops + 1) of the time plus the 1-in-10 coincidence.
"""

from __future__ import annotations

from typing import Any

from debug.generators._common import add_query, check_int, check_query, check_seq_len
from debug.programs import Program
from debug.rng import as_random

_VARS = "abcdefghijklmnopqrstuvwxyz"
_DIGITS = "0123456789"
STYLES = ("paper", "spaced")
_NAME = "make_variable_binding_program"


def make_variable_binding_program(
    seq_len: int,
    rng: Any,
    num_hops: int | None = None,
    *,
    style: str = "paper",
    max_hops: int = 4,
    p_constant: float = 0.5,
    reassign: float = 0.0,
    query: bool = True,
) -> Program:
    """Generate one variable binding program whose answer is a single digit.

    Args:
        seq_len: Number of assignment lines (the query line comes after them). Paper style: >= 1 (and
            >= num_hops); spaced style: 1..26 (no re-assignment, so at most one line per letter).
        rng: `random.Random`, `np.random.RandomState`, `np.random.Generator` or an int seed.
        num_hops: Fix the query depth (1 = the queried variable is assigned a constant). None samples it
            uniformly from 1..min(max_hops, seq_len).
        style: "paper" (`a=5`, re-assignment allowed) or "spaced" (the seed's `a = 5`, every line assigns a
            fresh variable).
        max_hops: Largest depth sampled when `num_hops` is None (default 4, as in the paper).
        p_constant: Probability that a distractor line assigns a constant rather than a variable.
        reassign: Probability that a distractor line re-assigns one of the chain's variables where that
            leaves the answer alone (before the chain line that sets it, or after the line that reads it)
            instead of a name drawn from all 26. Paper style only. Such lines are the hard negatives of a
            model that reads the wrong assignment of a re-assigned name; at 0 (the default) the chain's
            names come up only as often as any other, and the random stream is the one without the knob.
        query: End the program with the query line `#<query_var>:` (the default, the paper's form). False
            leaves it off; the lines and metadata are the same either way.

    Returns:
        A `Program` whose metadata holds: answer_var and query_var (the queried variable), hops, chain
        (variables from the query back to the root), chain_lines (the 1-based line assigning each chain
        variable, same order), root_line (1-based line of the root constant), root_value, num_distractors
        (lines off the chain), style, seq_len.

    Raises:
        ValueError: For an unknown style, or a seq_len / num_hops / max_hops out of range (the message says
            the valid range).
    """
    if style not in STYLES:
        raise ValueError(f"{_NAME}: style must be one of {STYLES}; got {style!r}")
    spaced = style == "spaced"
    seq_len = check_seq_len(_NAME, seq_len, 1, 26 if spaced else None)
    max_hops = check_int(_NAME, "max_hops", max_hops, 1, 26)
    if num_hops is not None:
        num_hops = check_int(_NAME, "num_hops", num_hops, 1, min(seq_len, 26))
    if not 0.0 <= p_constant <= 1.0:
        raise ValueError(f"{_NAME}: p_constant must be in [0, 1]; got {p_constant!r}")
    if not 0.0 <= reassign <= 1.0:
        raise ValueError(f"{_NAME}: reassign must be in [0, 1]; got {reassign!r}")
    if reassign and spaced:
        raise ValueError(f"{_NAME}: reassign needs style='paper' (the spaced style never re-assigns)")
    query = check_query(_NAME, query)

    r = as_random(rng)
    rand = r.random
    hops = num_hops if num_hops is not None else 1 + int(rand() * min(max_hops, seq_len))
    root = int(rand() * (seq_len - hops + 1))
    chain_lines = [root] + sorted(r.sample(range(root + 1, seq_len), hops - 1)) if hops > 1 else [root]
    root_value = int(rand() * 10)
    if spaced:
        lines, chain_vars = _spaced_lines(seq_len, r, chain_lines, root_value, p_constant)
    else:
        lines, chain_vars = _paper_lines(seq_len, r, chain_lines, root_value, p_constant, reassign)
    query_var = chain_vars[-1]
    metadata = {
        "answer_var": query_var,
        "query_var": query_var,
        "hops": hops,
        "chain": chain_vars[::-1],
        "chain_lines": [i + 1 for i in chain_lines[::-1]],
        "root_line": root + 1,
        "root_value": root_value,
        "num_distractors": seq_len - hops,
        "style": style,
        "seq_len": seq_len,
    }
    return Program(add_query("\n".join(lines), query_var, query), root_value, metadata)


def _paper_lines(
    seq_len: int, r: Any, chain_lines: list[int], root_value: int, p_constant: float, reassign: float
) -> tuple[list[str], list[str]]:
    """Lines `v=x` with re-assignment; a chain variable is protected only while its value is still needed."""
    rand = r.random
    hops = len(chain_lines)
    chain_vars = r.sample(_VARS, hops)
    # protected[i]: the one variable line i must not overwrite, because a later chain line (or the query)
    # reads the value it holds there. Windows of different chain variables never overlap.
    protected: list[str | None] = [None] * seq_len
    for k in range(hops - 1):
        for i in range(chain_lines[k] + 1, chain_lines[k + 1]):
            protected[i] = chain_vars[k]
    for i in range(chain_lines[-1] + 1, seq_len):
        protected[i] = chain_vars[-1]

    lines: list[str] = []
    defined: list[str] = []
    seen: set[str] = set()
    next_chain = 0
    for i in range(seq_len):
        if next_chain < hops and chain_lines[next_chain] == i:
            lhs = chain_vars[next_chain]
            rhs = str(root_value) if next_chain == 0 else chain_vars[next_chain - 1]
            next_chain += 1
        else:
            # `reassign and ...` draws nothing at 0, so the default programs stay as they were.
            free = [v for v in chain_vars if v != protected[i]] if reassign and rand() < reassign else []
            if free:
                lhs = free[int(rand() * len(free))]
            else:
                lhs = _VARS[int(rand() * 26)]
                while lhs == protected[i]:
                    lhs = _VARS[int(rand() * 26)]
            rhs = _distractor_rhs(rand, lhs, defined, p_constant)
        lines.append(f"{lhs}={rhs}")
        if lhs not in seen:
            seen.add(lhs)
            defined.append(lhs)
    return lines, chain_vars


def _spaced_lines(
    seq_len: int, r: Any, chain_lines: list[int], root_value: int, p_constant: float
) -> tuple[list[str], list[str]]:
    """Lines `v = x`, each assigning a fresh variable, so nothing is ever re-assigned."""
    rand = r.random
    order = r.sample(_VARS, seq_len)
    chain_vars = [order[i] for i in chain_lines]
    chain_rhs = {line: str(root_value) if k == 0 else chain_vars[k - 1] for k, line in enumerate(chain_lines)}
    lines: list[str] = []
    for i in range(seq_len):
        lhs = order[i]
        rhs = chain_rhs.get(i)
        if rhs is None:
            rhs = _distractor_rhs(rand, lhs, order[:i], p_constant)
        lines.append(f"{lhs} = {rhs}")
    return lines, chain_vars


def _distractor_rhs(rand: Any, lhs: str, defined: list[str], p_constant: float) -> str:
    """A digit, or a defined variable other than `lhs` (a self-assignment would be a no-op line)."""
    n = len(defined)
    if n and rand() >= p_constant and not (n == 1 and defined[0] == lhs):
        rhs = defined[int(rand() * n)]
        while rhs == lhs:
            rhs = defined[int(rand() * n)]
        return rhs
    return _DIGITS[int(rand() * 10)]
