"""Range tracking: a loop over `range(...)` accumulates into a variable; the answer is its final value.

Run: `pytest evals -k range` (the seed's `run_experiments.sh range -m MODEL -n 50` is
`pytest evals -k range --model MODEL --num-seqs 50`).

Each program is measured in two forms. The `*_QUERY` tasks show the raw program ending in the query line
`#x:` (what the embedded models are trained on); `RANGE_TRACKING` and `RANGE_LINES` wrap the program in the
worded `debug.prompts.RANGE_TRACKING` template. `--prompt-form auto` (the default) runs the query tasks for
`embedded:*` models and the instruction tasks for every other model, which has never been taught that a
trailing `#x:` is a question; `--prompt-form query` or `--prompt-form instruction` forces one form for all.
"""

from debug.plugin import Task

TASKS = [
    Task(
        "RANGE_TRACKING",
        generator="make_range_program",
        prompt="RANGE_TRACKING",
        seq_lens=(2, 4, 6),
        form="instruction",
    ),
    Task(
        "RANGE_LINES",
        generator="make_range_program_lines",
        prompt="RANGE_TRACKING",
        seq_lens=(2, 4, 6),
        form="instruction",
    ),
    Task(
        "RANGE_TRACKING_QUERY",
        generator="make_range_program",
        prompt="{code}",
        seq_lens=(2, 4, 6),
        knobs={"query": True},
        form="query",
    ),
    Task(
        "RANGE_LINES_QUERY",
        generator="make_range_program_lines",
        prompt="{code}",
        seq_lens=(2, 4, 6),
        knobs={"query": True},
        form="query",
    ),
]


def test_range_tracking(debug_case, debug_model, measure):
    measure.evaluate(debug_case, debug_model)
