"""The causal binding eval's measurement: residual-stream patching of binding pairs, recorded per case.

`measure_binding_case` is what `evals/test_causal_binding.py` runs for one (model, hops) case. Each of the
case's `num_seqs` paper-style binding programs gets a counterfactual whose chain root constant changed (same
token length). The residual stream of every layer (and the final residual) is patched from the counterfactual
into the original at the TokenAnalyzer targets - the right-hand side of each chain line ("ref depth k"), the
query variable and the final token - and the case records, per layer:

- `normalized/<target>/layer_<l>`: the mean normalized effect, (LD - LD_orig) / (LD_cf - LD_orig);
- `iia/query/layer_<l>`: interchange intervention accuracy at the query position (k of n programs), and
  `iia/query/max` at the best layer (named in the case info); `normalized/<target>/max` likewise;
- `accuracy`: how many originals the model answers correctly (greedy, teacher-forced check);
- `robust_pairs`: how many pairs the model answers correctly both ways. Effects are averaged over those
  pairs (the paper's practice); when there is none, over all pairs, and the case says so;
- `swept_pairs`: how many of the `num_seqs` programs were swept.

Every program gets a sample record, swept or not; one that was not swept says why (`skipped`: no
counterfactual of equal token length, or the model answers it wrong while others are answered right both
ways), and the case info counts the skipped pairs by reason (`skipped_pairs`, `skipped_why`).

The measurement object is duck-typed (`metric`, `info`, `sample`, `image`: `debug.plugin.Measurement`), so
this module does not depend on the plugin.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from debug._util.figures import save_figure
from debug.causal.architectures import resolve_architecture
from debug.causal.engine import sweep
from debug.causal.inputs import prepare_inputs, token_label
from debug.causal.pairs import check_program_fits
from debug.causal.plots import plot_ref_depth_aggregate, plot_token_heatmap
from debug.causal.result import SweepResult, aggregate_by_target
from debug.counterfactual import create_counterfactual_program
from debug.generators import make_variable_binding_program
from debug.programs import Program, generate_programs, program_seed
from debug.scoring import teacher_forced

__all__ = ["BindingPair", "binding_pairs", "measure_binding_case"]

SITE = "residual_stream"
NO_COUNTERFACTUAL = "no counterfactual of equal token length"
WRONG_WAY = "answered wrong on the original or the counterfactual (effects use the pairs right both ways)"


@dataclass
class BindingPair:
    """One program of a case, its counterfactual and how the model answers both.

    Attributes:
        index: The program's index in the case.
        original: The program.
        counterfactual: Its counterfactual, or None when none of equal token length exists.
        why_none: Why there is no counterfactual ("" when there is one).
        original_top1: The model's greedy first answer token on the original (readable label).
        original_correct: Whether greedy decoding gives the original's answer.
        counterfactual_correct: The same on the counterfactual (None without one).
    """

    index: int
    original: Program
    counterfactual: Program | None
    why_none: str = ""
    original_top1: str = ""
    original_correct: bool = False
    counterfactual_correct: bool | None = None

    @property
    def robust(self) -> bool:
        """Answered correctly both ways."""
        return self.counterfactual is not None and self.original_correct and bool(self.counterfactual_correct)


def binding_pairs(loaded: Any, hops: int, seq_len: int, num_seqs: int, seed: int) -> list[BindingPair]:
    """The case's programs with their counterfactuals, checked against the context, then answered.

    Program i is seeded by `program_seed(seed, seq_len, i)`, its counterfactual by the same seed.

    Raises:
        debug.causal.inputs.CausalTracingError: When a program (with its answer) is longer than the model's
            context, before any forward.
    """
    tokenizer = loaded.tokenizer
    programs = generate_programs(make_variable_binding_program, seq_len, num_seqs, seed, num_hops=hops)
    for program in programs:
        check_program_fits(loaded, program)
    pairs = []
    for index, program in enumerate(programs):
        try:
            cf = create_counterfactual_program(
                program, program_seed(seed, seq_len, index), tokenizer=tokenizer
            )
            pairs.append(BindingPair(index, program, cf))
        except ValueError as exc:
            pairs.append(BindingPair(index, program, None, why_none=str(exc)))
    asked = [p.original for p in pairs] + [p.counterfactual for p in pairs if p.counterfactual is not None]
    answered = iter(teacher_forced(loaded.model, tokenizer, asked))
    for pair in pairs:
        predicted, answer = next(answered)
        pair.original_correct = predicted == answer
        pair.original_top1 = token_label(tokenizer, predicted[0]) if predicted else ""
    for pair in pairs:
        if pair.counterfactual is not None:
            predicted, answer = next(answered)
            pair.counterfactual_correct = predicted == answer
    return pairs


def _skip_reason(pair: BindingPair, measured_robust: bool) -> str:
    if pair.counterfactual is None:
        return NO_COUNTERFACTUAL
    if measured_robust and not pair.robust:
        return WRONG_WAY
    return ""


def _sample(pair: BindingPair, result: SweepResult | None, skipped: str) -> dict[str, Any]:
    original, cf = pair.original, pair.counterfactual
    return {
        "program": original.text,
        "counterfactual": cf.text if cf is not None else None,
        "program_hash": original.hash,
        "answer": original.answer,
        "counterfactual_answer": cf.answer if cf is not None else None,
        "correct": pair.original_correct,
        "counterfactual_correct": pair.counterfactual_correct,
        "original_top1": result.original.top1 if result is not None else pair.original_top1,
        "counterfactual_top1": result.counterfactual.top1 if result is not None else None,
        "swept": result is not None,
        "skipped": skipped or None,
        "why": pair.why_none or None,
        "normalized_by_target": result.target_effects() if result is not None else None,
    }


def _sweep_pairs(loaded: Any, measured: list[BindingPair]) -> dict[int, SweepResult]:
    """Sweep the measured pairs; the first over every position (its heatmap), the rest at the targets only."""
    layers = range(resolve_architecture(loaded.model).num_layers + 1)  # + the final residual
    results: dict[int, SweepResult] = {}
    for pair in measured:
        positions = None
        if results:
            targets = prepare_inputs(loaded.tokenizer, pair.original, pair.counterfactual).targets
            positions = sorted(set(targets.values()))
        # Wrong answers are recorded in the samples and the robust_pairs metric; no warning per pair.
        results[pair.index] = sweep(
            loaded,
            pair.original,
            pair.counterfactual,
            layers=layers,
            positions=positions,
            warn_unsolved=False,
        )
    return results


def _effect_metrics(measure: Any, results: list[SweepResult]) -> dict[str, Any]:
    """The per-layer effect metrics at each target and the IIA at the query; returns the aggregate."""
    aggregate = aggregate_by_target(results)
    labels = aggregate["layer_labels"]
    for target, entry in aggregate["by_target"].items():
        key = target.replace(" ", "_")
        for layer, value in zip(labels, entry["normalized"]):
            measure.metric(f"normalized/{key}/layer_{layer}", value)
        finite = [v for v in entry["normalized"] if v is not None]
        if finite:
            measure.metric(f"normalized/{key}/max", max(finite))
    at_query = [r.at_target("query", "iia") for r in results if r.at_target("query") is not None]
    hits = [sum(bool(v[i]) for v in at_query) for i in range(len(labels))]
    for layer, k in zip(labels, hits):
        measure.metric(f"iia/query/layer_{layer}", k=k, n=len(at_query))
    if at_query:
        best = int(np.argmax(hits))
        measure.metric("iia/query/max", k=hits[best], n=len(at_query))
        measure.info(iia_query_best_layer=labels[best])
    return aggregate


def measure_binding_case(
    loaded: Any, measure: Any, *, hops: int, seq_len: int, num_seqs: int, seed: int, out_dir: str | Path
) -> list[SweepResult]:
    """Measure one causal binding case into `measure` (see the module docstring for what is recorded).

    Args:
        loaded: The model (`debug.models.LoadedModel`).
        measure: The case's `debug.plugin.Measurement`.
        hops: Query depth of the programs.
        seq_len: Assignment lines per program.
        num_seqs: Programs in the case.
        seed: The case's base seed.
        out_dir: Where the attached pictures are written.

    Returns:
        The sweeps, in program order (empty when no program had a counterfactual).

    Raises:
        debug.causal.inputs.CausalTracingError: When the programs are longer than the model's context,
            before any forward.
    """
    pairs = binding_pairs(loaded, hops, seq_len, num_seqs, seed)
    usable = [p for p in pairs if p.counterfactual is not None]
    robust = [p for p in usable if p.robust]
    measure.metric("accuracy", k=sum(p.original_correct for p in usable), n=len(usable))
    measure.metric("robust_pairs", k=len(robust), n=len(usable))
    measured = robust or usable
    swept = _sweep_pairs(loaded, measured)
    reasons = {p.index: _skip_reason(p, bool(robust)) for p in pairs}
    why = Counter(reason for reason in reasons.values() if reason)
    measure.samples(_sample(p, swept.get(p.index), reasons[p.index]) for p in pairs)
    measure.metric("swept_pairs", k=len(swept), n=len(pairs))
    measure.info(
        model=loaded.model_id,
        fingerprint=loaded.fingerprint,
        hops=hops,
        site=SITE,
        measured_on="pairs answered correctly both ways" if robust else "all pairs (none answered correctly)",
        pairs=len(measured),
        skipped_pairs=sum(why.values()),
        skipped_why="; ".join(f"{n} {reason}" for reason, n in why.items()) or "none skipped",
    )
    results = list(swept.values())
    if not results:
        return results
    aggregate = _effect_metrics(measure, results)
    heatmap = save_figure(plot_token_heatmap(results[0]), Path(out_dir) / "heatmap.png")
    measure.image("layer x token", heatmap, caption=f"normalized effect, first program ({hops} hops)")
    by_depth = save_figure(plot_ref_depth_aggregate(aggregate), Path(out_dir) / "by_depth.png")
    measure.image("by ref depth", by_depth, caption=f"mean over {len(results)} programs, by target")
    return results
