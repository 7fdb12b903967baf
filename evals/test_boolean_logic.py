"""Boolean logic: chains of and/or/not over boolean variables; the answer is True or False.

Run: `pytest evals -k boolean_logic`.

Two forms: `BOOLEAN_LOGIC_QUERY` shows the raw program ending in the query line `#<last variable>:`, answered
`True` or `False` (what the embedded models are trained on); `BOOLEAN_LOGIC` wraps it in the worded
`debug.prompts.BOOLEAN_LOGIC` template. `--prompt-form auto` (the default) runs the query task for
`embedded:*` models and the instruction task for every other model; `--prompt-form query|instruction`
forces one form for all.
"""

from debug.plugin import Task

TASKS = [
    Task(
        "BOOLEAN_LOGIC",
        generator="make_boolean_program",
        prompt="BOOLEAN_LOGIC",
        seq_lens=(2, 4, 6),
        form="instruction",
    ),
    Task(
        "BOOLEAN_LOGIC_QUERY",
        generator="make_boolean_program",
        prompt="{code}",
        seq_lens=(2, 4, 6),
        knobs={"query": True},
        form="query",
    ),
]


def test_boolean_logic(debug_case, debug_model, measure):
    measure.evaluate(debug_case, debug_model)
