"""Causal binding: where a model carries a bound value, measured by residual-stream activation patching.

Run: `pytest evals -k causal_binding` (add `--model PATH_OR_ID`, `--num-seqs 20`). Without `--num-seqs` a case
answers all its programs and patches `debug.causal.evaluate.SWEPT_PAIRS` (4) pairs; with it, every pair.

Each case is one (model, hops): paper-style binding programs with that query depth, each with a counterfactual
whose chain root constant changed. What is measured and recorded (effects per layer at each ref-depth target,
IIA at the query, accuracy, robust and swept pairs, a sample per program, heatmaps) is described in
`debug.causal.evaluate`. Effects are measurements: nothing here fails on a low value.
"""

from __future__ import annotations

import pytest

from debug.plugin import Task

FAMILY = "causal_binding"
TASKS = [
    Task(
        f"hops{hops}",
        generator="make_variable_binding_program",
        prompt="{code}",
        seq_lens=(16,),
        knobs={"num_hops": hops},
    )
    for hops in (1, 2, 3, 4)
]


def test_causal_binding(debug_case, debug_model, measure):
    hops = debug_case.task.knobs["num_hops"]
    if hops > debug_case.seq_len:
        pytest.skip(f"{hops} hops need at least {hops} lines (seq_len {debug_case.seq_len})")
    measure.trace(debug_case, debug_model, family="binding")
