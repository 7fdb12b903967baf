"""Integer tracking: increments, arithmetic sequences, counters and Fibonacci steps; the answer is an integer.

Run: `pytest evals -k integer_tracking`, or one generator: `pytest evals -k "integer_tracking and counter"`.

Each generator is measured in two forms: `<name>_query` shows the raw program ending in the query line
`#<var>:` (`#x:`, `#count:`, `#result:`; what the embedded models are trained on), `<name>` wraps it in the
worded `debug.prompts.RANGE_TRACKING` template. `--prompt-form auto` (the default) runs the query tasks for
`embedded:*` models and the instruction tasks for every other model; `--prompt-form query|instruction`
forces one form for all.
"""

from debug.plugin import Task

_GENERATORS = {
    "increments": "make_variable_increments",
    "arithmetic": "make_arithmetic_sequence",
    "counter": "make_counter_program",
    "fibonacci": "make_fibonacci_program",
}

TASKS = [
    *(
        Task(name, generator=gen, prompt="RANGE_TRACKING", seq_lens=(2, 4, 6), form="instruction")
        for name, gen in _GENERATORS.items()
    ),
    *(
        Task(
            f"{name}_query",
            generator=gen,
            prompt="{code}",
            seq_lens=(2, 4, 6),
            knobs={"query": True},
            form="query",
        )
        for name, gen in _GENERATORS.items()
    ),
]


def test_integer_tracking(debug_case, debug_model, measure):
    measure.evaluate(debug_case, debug_model)
