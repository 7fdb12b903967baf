"""Causal boolean logic: where a model carries a flipped root constant, by residual-stream patching.

Run: `pytest evals -k causal_boolean` (add `--model PATH_OR_ID`, `--num-seqs 20`). The programs are in
query form for every model, as in `test_causal_binding.py` (`--prompt-form` does not select these cases).
Without `--num-seqs` a case answers all its programs and patches `debug.causal.evaluate.SWEPT_PAIRS` (4)
pairs.

Each case is one (model, seq_len): `make_boolean_program` runs of `seq_len` boolean assignments in query
form (`q = True`, `d = not q`, ..., `#w:`), each with a counterfactual whose root constant flipped (seeded,
same token length, CPython-checked: `debug.counterfactual.create_boolean_counterfactual`; a program whose
answer no flip changes has no counterfactual, and its sample says so). Targets are the changed constant,
the operands of the queried variable's line ("operand 1", "operand 2"), the query and the final token.
What is measured and recorded (effects per layer at each target, a target x layer heatmap, IIA at the
query, accuracy, robust and swept pairs with the reasons for skipped ones) is described in
`debug.causal.evaluate`. A model that does not solve boolean programs (the binding-only default model) is
still traced over its first pairs, and the case says so (`robust_pairs`, `measured_on`). Effects are
measurements: nothing here fails on a low value.
"""

from __future__ import annotations

from debug.plugin import Task

FAMILY = "causal_boolean"
# One short program length keeps the case cheap (~40 tokens per program).
TASKS = [
    Task(
        "logic",
        generator="make_boolean_program",
        prompt="{code}",
        seq_lens=(4,),
        knobs={"query": True},
    )
]


def test_causal_boolean(debug_case, debug_model, measure):
    measure.trace(debug_case, debug_model, family="boolean")
