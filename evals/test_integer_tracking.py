"""Integer tracking: increments, arithmetic sequences, counters and Fibonacci steps; the answer is an integer.

Run: `pytest evals -k integer_tracking`, or one generator: `pytest evals -k "integer_tracking and counter"`.
"""

from debug.plugin import Task

TASKS = [
    Task("increments", generator="make_variable_increments", prompt="RANGE_TRACKING", seq_lens=(2, 4, 6)),
    Task("arithmetic", generator="make_arithmetic_sequence", prompt="RANGE_TRACKING", seq_lens=(2, 4, 6)),
    Task("counter", generator="make_counter_program", prompt="RANGE_TRACKING", seq_lens=(2, 4, 6)),
    Task("fibonacci", generator="make_fibonacci_program", prompt="RANGE_TRACKING", seq_lens=(2, 4, 6)),
]


def test_integer_tracking(debug_case, debug_model, measure):
    measure.evaluate(debug_case, debug_model)
