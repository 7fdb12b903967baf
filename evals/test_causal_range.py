"""Causal range tracking: where a model carries a loop's increment or bound, by residual-stream patching.

Run: `pytest evals -k causal_range` (add `--model PATH_OR_ID`, `--num-seqs 20`). The programs are in
query form for every model, as in `test_causal_binding.py` (`--prompt-form` does not select these cases).
Without `--num-seqs` a case answers all its programs and patches `debug.causal.evaluate.SWEPT_PAIRS` (4)
pairs.

Each case is one (model, seq_len): `make_range_program` loops of `seq_len` iterations in query form
(`x = 0`, `for i in range(N):`, `    x += z`, `#x:`), each with a counterfactual whose increment or loop bound
changed (seeded, same token length, CPython-checked: `debug.counterfactual.create_range_counterfactual`).
Targets are the changed constant, the accumulator (`x` of the `x += z` line), the query and the final
token. What is measured and recorded (effects per layer at each target, a target x layer heatmap, IIA at
the query, accuracy, robust and swept pairs with the reasons for skipped ones) is described in
`debug.causal.evaluate`. A model that does not solve range programs (the binding-only default model) is
still traced over its first pairs, and the case says so (`robust_pairs`, `measured_on`). Effects are
measurements: nothing here fails on a low value.
"""

from __future__ import annotations

from debug.plugin import Task

FAMILY = "causal_range"
# One short loop length: the programs are ~40 tokens, so a case costs a few forwards per pair. It is one of
# test_range_tracking.py's lengths, so the case reads those programs' answers from the answer cache.
TASKS = [
    Task(
        "loop",
        generator="make_range_program",
        prompt="{code}",
        seq_lens=(4,),
        knobs={"query": True},
    )
]


def test_causal_range(debug_case, debug_model, measure):
    measure.trace(debug_case, debug_model, family="range")
