"""Variable binding: 16-line assignment programs (paper style), query depth 1-4, answer one digit.

Run: `pytest evals -k variable_binding` (add `--model PATH_OR_ID`, `--num-seqs 100`, `--seq-lens 8,16`).

The binding program is already in the query form (it ends in `#q:`, and the prompt is the raw program), which
is both the paper's prompt for every model and what the embedded models are trained on. So its one task has
no `form` and runs under every `--prompt-form`; there is no worded variant.
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
