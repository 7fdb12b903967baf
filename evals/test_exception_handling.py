"""Exception handling: try/except blocks that change a running total; the answer is its final value.

Run: `pytest evals -k exception_handling`.

The answer is always the integer left in `result` (every exception is caught; which ones were raised is what
the total encodes), never an exception's name, so the family has a query form like any other:
`EXCEPTION_HANDLING_QUERY` shows the raw program ending in `#result:` (what the embedded models are trained
on); `EXCEPTION_HANDLING` wraps it in the worded `debug.prompts.EXCEPTION_HANDLING` template.
`--prompt-form auto` (the default) runs the query task for `embedded:*` models and the instruction task for
every other model; `--prompt-form query|instruction` forces one form for all.
"""

from debug.plugin import Task

TASKS = [
    Task(
        "EXCEPTION_HANDLING",
        generator="make_exception_program",
        prompt="EXCEPTION_HANDLING",
        seq_lens=(1, 2, 3),
        form="instruction",
    ),
    Task(
        "EXCEPTION_HANDLING_QUERY",
        generator="make_exception_program",
        prompt="{code}",
        seq_lens=(1, 2, 3),
        knobs={"query": True},
        form="query",
    ),
]


def test_exception_handling(debug_case, debug_model, measure):
    measure.evaluate(debug_case, debug_model)
