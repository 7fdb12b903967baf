"""Program generators: `(seq_len, rng, **knobs) -> Program`, deterministic for a given rng.

`GENERATORS` maps each name to its callable. Every generator accepts `random.Random`, `np.random.RandomState`,
`np.random.Generator` or an int seed (see `debug.rng.as_random`), refuses a seq_len it cannot honour with a
ValueError that states the valid range, and names `answer_var` in its metadata. Every program is valid Python;
running it leaves the answer in `answer_var` (the test suite checks this against CPython).
"""

from __future__ import annotations

from collections.abc import Callable

from debug.generators.binding import make_variable_binding_program
from debug.generators.boolean import make_boolean_program
from debug.generators.exceptions import make_exception_program
from debug.generators.loops import (
    make_arithmetic_sequence,
    make_counter_program,
    make_fibonacci_program,
    make_range_program,
    make_range_program_lines,
    make_variable_increments,
)
from debug.generators.pairs import make_counterfactual_pair
from debug.programs import Program

#: Name -> generator, for every family this package ships.
GENERATORS: dict[str, Callable[..., Program]] = {
    fn.__name__: fn
    for fn in (
        make_range_program,
        make_range_program_lines,
        make_variable_increments,
        make_arithmetic_sequence,
        make_counter_program,
        make_fibonacci_program,
        make_variable_binding_program,
        make_counterfactual_pair,
        make_exception_program,
        make_boolean_program,
    )
}

__all__ = ["GENERATORS", *GENERATORS]
