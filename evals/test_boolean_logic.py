"""Boolean logic: chains of and/or/not over boolean variables; the answer is True or False.

Run: `pytest evals -k boolean_logic`.
"""

from debug.plugin import Task

TASKS = [
    Task("BOOLEAN_LOGIC", generator="make_boolean_program", prompt="BOOLEAN_LOGIC", seq_lens=(2, 4, 6)),
]


def test_boolean_logic(debug_case, debug_model, measure):
    measure.evaluate(debug_case, debug_model)
