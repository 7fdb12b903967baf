"""Exception handling: try/except/finally blocks that change a variable; the answer is its final value.

Run: `pytest evals -k exception_handling`.
"""

from debug.plugin import Task

TASKS = [
    Task(
        "EXCEPTION_HANDLING",
        generator="make_exception_program",
        prompt="EXCEPTION_HANDLING",
        seq_lens=(1, 2, 3),
    ),
]


def test_exception_handling(debug_case, debug_model, measure):
    measure.evaluate(debug_case, debug_model)
