"""Variable binding: 16-line assignment programs (paper style), query depth 1-4, answer one digit.

Run: `pytest evals -k variable_binding` (add `--model PATH_OR_ID`, `--num-seqs 100`, `--seq-lens 8,16`).
"""

from debug.plugin import Task

TASKS = [
    Task(
        "VARIABLE_BINDING",
        generator="make_variable_binding_program",
        prompt="VARIABLE_BINDING",
        seq_lens=(4, 8, 16),
    ),
]


def test_variable_binding(debug_case, debug_model, measure):
    measure.evaluate(debug_case, debug_model)
