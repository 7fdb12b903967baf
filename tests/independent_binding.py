"""Helper for tests: binding programs from a generator that shares nothing with `debug.generators`.

`debug`'s own generator builds the queried chain first and fills the other lines around it. This one writes
random programs line by line (any of 26 names on the left; a digit, or a name that already holds a value, on
the right), then picks a queried name whose chain has the wanted length, rejecting programs that have none.
The answer comes from CPython running the program, and the hop count from following the chain back through the
lines. So its programs come from another distribution (a name may be re-assigned on or off the chain, chains
need not be contiguous in any sense the other generator uses) and its answers from another oracle.
"""

from __future__ import annotations

import random
import string

from debug.programs import Program


def _hops(lines: list[tuple[str, str]], name: str) -> int:
    """How many assignments the value of `name` (after all lines) passes through, back to its digit."""
    hops, line = 0, len(lines)
    while True:
        line = max(i for i in range(line) if lines[i][0] == name)  # the last assignment before `line`
        hops += 1
        name = lines[line][1]
        if name.isdigit():
            return hops


def independent_program(seq_len: int, hops: int, rng: random.Random) -> Program:
    """One `seq_len`-line program in the paper's form (`a=5`, `b=a`, `#q:`) whose answer is `hops` deep."""
    while True:
        lines: list[tuple[str, str]] = []
        for _ in range(seq_len):
            name = rng.choice(string.ascii_lowercase)
            bound = sorted({n for n, _ in lines} - {name})
            rhs = rng.choice(bound) if bound and rng.random() < 0.5 else str(rng.randrange(10))
            lines.append((name, rhs))
        names = sorted({n for n, _ in lines})
        rng.shuffle(names)
        query = next((n for n in names if _hops(lines, n) == hops), None)
        if query is not None:
            break
    source = "".join(f"{n}={r}\n" for n, r in lines)
    scope: dict[str, object] = {}
    exec(source, {}, scope)  # the oracle: CPython's own reading of the program
    return Program(f"{source}#{query}:", scope[query], {"hops": hops, "seq_len": seq_len, "style": "paper"})


def independent_programs(per_hop: int, seed: int, seq_len: int = 16) -> list[Program]:
    """`per_hop` programs at each hop count 1..4, from `random.Random(seed)`."""
    rng = random.Random(seed)
    return [independent_program(seq_len, hops, rng) for hops in range(1, 5) for _ in range(per_hop)]
