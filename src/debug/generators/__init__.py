"""Program generators: `(seq_len, rng, **knobs) -> Program`, deterministic for a given rng.

`GENERATORS` maps each name to its callable. Every generator accepts `random.Random`, `np.random.RandomState`,
`np.random.Generator` or an int seed (see `debug.rng.as_random`), refuses a seq_len it cannot honour with a
ValueError that states the valid range, and names `answer_var` in its metadata. Every program is valid Python;
running it leaves the answer in `answer_var` (the test suite checks this against CPython).

Every generator here also has a query form: `query=True` ends the program with the line `#<answer_var>:` (a
Python comment, no trailing space), so the answer is the very next text; this is the form the embedded models
are trained and evaluated on. Binding programs are in that form by default (the paper's); every other family
defaults to `query=False`, its seed program unchanged. `check_query_support` refuses a generator without one.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

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


def supports_query(generator: Callable[..., Any]) -> bool:
    """Whether `generator` takes a `query` argument (the query form `#<answer_var>:`).

    Only a parameter named `query` counts: a generator that swallows `**kwargs` would silently ignore it.
    """
    try:
        parameters = inspect.signature(generator).parameters
    except (TypeError, ValueError):  # a builtin or C callable without a signature
        return False
    param = parameters.get("query")
    return param is not None and param.kind is not inspect.Parameter.POSITIONAL_ONLY


def check_query_support(generator: Callable[..., Any]) -> None:
    """Raise ValueError, in one line naming the generator, when it has no query form.

    Raises:
        ValueError: When `generator` takes no `query` argument.
    """
    if not supports_query(generator):
        name = getattr(generator, "__name__", type(generator).__name__)
        raise ValueError(
            f"generator {name} has no query form (it takes no `query` argument); drop query=True, or give "
            "it a `query: bool` parameter that ends the program with the line '#<answer_var>:'"
        )


__all__ = ["GENERATORS", "check_query_support", "supports_query", *GENERATORS]
