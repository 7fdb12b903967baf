"""Range tracking: a loop over `range(...)` accumulates into a variable; the answer is its final value.

Run: `pytest evals -k range` (the seed's `run_experiments.sh range -m MODEL -n 50` is
`pytest evals -k range --model MODEL --num-seqs 50`).
"""

from debug.plugin import Task

TASKS = [
    Task("RANGE_TRACKING", generator="make_range_program", prompt="RANGE_TRACKING", seq_lens=(2, 4, 6)),
    Task("RANGE_LINES", generator="make_range_program_lines", prompt="RANGE_TRACKING", seq_lens=(2, 4, 6)),
]


def test_range_tracking(debug_case, debug_model, measure):
    measure.evaluate(debug_case, debug_model)
