"""Causal binding: where a model carries a bound value, measured by residual-stream activation patching.

Run: `pytest evals -k causal_binding` (add `--model PATH_OR_ID`, `--num-seqs 20`).

Each case is one (model, hops). Its programs are paper-style binding programs with that query depth; each
gets a counterfactual whose chain root constant changed (same token length). The residual stream of every
layer (and the final residual) is patched from the counterfactual into the original at the TokenAnalyzer
targets — the right-hand side of each chain line ("ref depth k"), the query variable and the final token —
and the case records, per layer:

- `normalized/<target>/layer_<l>`: the mean normalized effect, (LD - LD_orig) / (LD_cf - LD_orig);
- `iia/query/layer_<l>`: interchange intervention accuracy at the query position (k of n programs), and
  `iia/query/max` at the best layer (named in the case info); `normalized/<target>/max` likewise;
- `accuracy`: how many originals the model answers correctly (greedy, teacher-forced check);
- `robust_pairs`: how many pairs the model answers correctly both ways. Effects are averaged over those
  pairs (the paper's practice); when there is none, over all pairs, and the case says so.

The first program's full layer x token heatmap and the by-depth aggregate are attached to the case, so
report.html shows them. Effects are measurements: nothing here fails on a low value.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
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


def _metric_key(label: str) -> str:
    return label.replace(" ", "_")


def test_causal_binding(debug_case, debug_model, measure, tmp_path: Path):
    from debug.architectures import resolve_architecture
    from debug.causal_experiment_runner import aggregate_by_target
    from debug.causal_inputs import prepare_inputs
    from debug.causal_tracing import sweep
    from debug.causal_visualization import plot_ref_depth_aggregate, plot_token_heatmap, save_figure
    from debug.counterfactual import create_counterfactual_program
    from debug.generators import make_variable_binding_program
    from debug.programs import generate_programs, program_seed
    from debug.seeds import answers_correctly

    hops = debug_case.task.knobs["num_hops"]
    if hops > debug_case.seq_len:
        pytest.skip(f"{hops} hops need at least {hops} lines (seq_len {debug_case.seq_len})")
    tokenizer = debug_model.tokenizer
    programs = generate_programs(
        make_variable_binding_program, debug_case.seq_len, debug_case.num_seqs, debug_case.seed, num_hops=hops
    )
    pairs = []
    for index, program in enumerate(programs):
        try:
            seed = program_seed(debug_case.seed, debug_case.seq_len, index)
            pairs.append((program, create_counterfactual_program(program, seed, tokenizer=tokenizer)))
        except ValueError:
            continue  # no counterfactual of equal token length under this tokenizer
    correct = answers_correctly(debug_model, [p for pair in pairs for p in pair])
    robust = [pair for k, pair in enumerate(pairs) if correct[2 * k] and correct[2 * k + 1]]
    # accuracy: the originals answered correctly (what the terminal table shows); robust_pairs: both ways.
    measure.metric("accuracy", k=sum(correct[0::2]), n=len(pairs))
    measure.metric("robust_pairs", k=len(robust), n=len(pairs))
    measured = robust or pairs
    measure.info(
        model=debug_model.model_id,
        fingerprint=debug_model.fingerprint,
        hops=hops,
        site="residual_stream",
        measured_on="pairs answered correctly both ways" if robust else "all pairs (none answered correctly)",
        pairs=len(measured),
    )
    if not measured:
        pytest.skip("no program pair of equal token length to patch")

    layers = range(resolve_architecture(debug_model.model).num_layers + 1)  # + the final residual
    results = []
    for index, (original, counterfactual) in enumerate(measured):
        # The measurements need only the target positions; the first program gets the full picture.
        targets = prepare_inputs(tokenizer, original, counterfactual).targets
        positions = None if index == 0 else sorted(set(targets.values()))
        result = sweep(debug_model, original, counterfactual, layers=layers, positions=positions)
        results.append(result)
        measure.sample(
            {
                "program": original.text,
                "counterfactual": counterfactual.text,
                "program_hash": original.hash,
                "answer": original.answer,
                "counterfactual_answer": counterfactual.answer,
                "correct": result.clean.top1_id == result.answer.original_id,
                "clean_top1": result.clean.top1,
                "counterfactual_top1": result.counterfactual.top1,
                "normalized_by_target": result.target_effects(),
            }
        )

    aggregate = aggregate_by_target(results)
    labels = aggregate["layer_labels"]
    for target, entry in aggregate["by_target"].items():
        for layer, value in zip(labels, entry["normalized"]):
            measure.metric(f"normalized/{_metric_key(target)}/layer_{layer}", value)
        finite = [v for v in entry["normalized"] if v is not None]
        if finite:
            measure.metric(f"normalized/{_metric_key(target)}/max", max(finite))
    at_query = [r.at_target("query", "iia") for r in results if r.at_target("query") is not None]
    hits = [sum(bool(v[i]) for v in at_query) for i in range(len(labels))]
    for layer, k in zip(labels, hits):
        measure.metric(f"iia/query/layer_{layer}", k=k, n=len(at_query))
    if at_query:
        best = int(np.argmax(hits))
        measure.metric("iia/query/max", k=hits[best], n=len(at_query))
        measure.info(iia_query_best_layer=labels[best])

    heatmap = save_figure(plot_token_heatmap(results[0]), tmp_path / "heatmap.png")
    measure.image("layer x token", heatmap, caption=f"normalized effect, first program ({hops} hops)")
    by_depth = save_figure(plot_ref_depth_aggregate(aggregate), tmp_path / "by_depth.png")
    measure.image("by ref depth", by_depth, caption=f"mean over {len(results)} programs, by target")
