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
- `swept_pairs`: how many of the `num_seqs` programs were swept;
- binding cases, beside the patching, over the first `LENS_PAIRS` (8) swept pairs:
  `lens/answer_top1/layer_<l>` (k of n whose logit-lens top-1 at the final token is the answer,
  `debug.causal.lens`) and `lens/stays_from_layer` (mean first layer from which it stays top-1);
  `knockout/final_to_<keys>/answer_kept` (k of n whose top-1 stays the answer when the final token cannot
  attend to the root line, `root_line`, or to the query variable's own line, `last_chain_line`, at every
  layer, `debug.causal.knockout`) and `.../prob_orig` (mean P(answer) then).

Every program gets a sample record, swept or not, with what its counterfactual changed (`change`: line, old
and new value); one that was not swept says why (`skipped`: no counterfactual of equal token length, no
counterfactual that changes the answer, or the model answers it wrong while others are answered right both
ways), and the case info counts the skipped pairs by reason (`skipped_pairs`, `skipped_why`).

The measurement object is duck-typed (`metric`, `info`, `sample`, `image`: `debug.plugin.Measurement`), so
this module does not depend on the plugin.

The same measurement runs other program families (`measure_causal_case(..., family=...)`, families in
`CAUSAL_FAMILIES`): "range" (`make_range_program` in query form; the counterfactual changes the increment or
the loop bound) and "boolean" (`make_boolean_program` in query form; a root constant flipped), built by
`debug.counterfactual.create_counterfactual` and targeted by `debug.token_analyzer.TokenAnalyzer` ("changed
constant", "accumulator" or "operand k", "query", "final"). Which pairs are swept: those the model answers
right both ways when there is any, otherwise every pair with a counterfactual (a model that does not solve
the family, such as the binding-only default model on range programs, is still traced, and `measured_on` and
the `robust_pairs` k/n say so); `sweep_unsolved=True` sweeps every pair even when some are solved, for a
researcher who wants to see what an unsolved pair's effects look like. A "target x layer" heatmap (mean
normalized effect per target and layer) shows where the changed value travels.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from debug._util.figures import save_figure
from debug.causal.architectures import resolve_architecture
from debug.causal.engine import sweep_pairs
from debug.causal.inputs import CausalTracingError, prepare_inputs, token_label
from debug.causal.knockout import knockout_by_layer
from debug.causal.lens import logit_lens
from debug.causal.pairs import check_program_fits
from debug.causal.plots import plot_ref_depth_aggregate, plot_token_heatmap
from debug.causal.result import SweepResult, aggregate_by_target
from debug.counterfactual import create_counterfactual, create_counterfactual_program, mark_change
from debug.generators import GENERATORS
from debug.programs import Program, generate_programs, program_seed
from debug.scoring import teacher_forced

__all__ = [
    "CAUSAL_FAMILIES",
    "BindingPair",
    "binding_pairs",
    "causal_pairs",
    "measure_binding_case",
    "measure_causal_case",
]

#: Family -> (generator, its fixed knobs) of the programs a causal case measures (all in query form).
CAUSAL_FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {
    "binding": ("make_variable_binding_program", {}),
    "range": ("make_range_program", {"query": True}),
    "boolean": ("make_boolean_program", {"query": True}),
}

SITE = "residual_stream"
NO_COUNTERFACTUAL = "no counterfactual of equal token length"
NO_CHANGE = "no counterfactual changes the answer"
WRONG_WAY = "answered wrong on the original or the counterfactual (effects use the pairs right both ways)"


@dataclass
class BindingPair:
    """One program of a case (any family, despite the name), its counterfactual, how the model answers both.

    Attributes:
        index: The program's index in the case.
        original: The program (range and boolean: marked with its change, `debug.counterfactual.mark_change`).
        counterfactual: Its counterfactual, or None when there is none (`why_none` says why).
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
    """The binding case's programs with their counterfactuals (`causal_pairs` for family "binding")."""
    return causal_pairs(loaded, "binding", seq_len, num_seqs, seed, num_hops=hops)


def _check_family(family: str) -> tuple[str, dict[str, Any]]:
    if family not in CAUSAL_FAMILIES:
        raise ValueError(f"family must be one of {', '.join(CAUSAL_FAMILIES)}; got {family!r}")
    return CAUSAL_FAMILIES[family]


def causal_pairs(
    loaded: Any, family: str, seq_len: int, num_seqs: int, seed: int, **knobs: Any
) -> list[BindingPair]:
    """The case's programs with their counterfactuals, checked against the context, then answered.

    Program i is seeded by `program_seed(seed, seq_len, i)`, its counterfactual by the same seed. For the
    range and boolean families the original carries the change (`debug.counterfactual.mark_change`), so
    its "changed constant" token is a target.

    Args:
        loaded: The model (`debug.models.LoadedModel`).
        family: A key of `CAUSAL_FAMILIES`.
        seq_len: The generator's seq_len.
        num_seqs: Programs in the case.
        seed: The case's base seed.
        **knobs: More generator knobs (e.g. `num_hops` for binding).

    Raises:
        ValueError: For an unknown family (before any work).
        debug.causal.inputs.CausalTracingError: When a program (with its answer) is longer than the model's
            context, before any forward.
    """
    generator, fixed = _check_family(family)
    tokenizer = loaded.tokenizer
    programs = generate_programs(GENERATORS[generator], seq_len, num_seqs, seed, **fixed, **knobs)
    for program in programs:
        check_program_fits(loaded, program)
    pairs = []
    for index, program in enumerate(programs):
        try:
            cf_seed = program_seed(seed, seq_len, index)
            if family == "binding":
                cf, original = create_counterfactual_program(program, cf_seed, tokenizer=tokenizer), program
            else:
                cf = create_counterfactual(program, cf_seed, tokenizer=tokenizer, family=family)
                original = mark_change(program, cf)
            pairs.append(BindingPair(index, original, cf))
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
        # Range and boolean programs can have no change that moves the answer (`x = a or True`).
        return NO_CHANGE if "does not depend on" in pair.why_none else NO_COUNTERFACTUAL
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
        "change": _change(cf),
        "normalized_by_target": result.target_effects() if result is not None else None,
    }


def _change(cf: Program | None) -> dict[str, Any] | None:
    """What the counterfactual changed: line, old and new value (and the kind for range and boolean)."""
    if cf is None:
        return None
    keys = ("change", "changed_line", "original_value", "counterfactual_value")
    return {k: cf.metadata[k] for k in keys if k in cf.metadata}


def _sweep_pairs(loaded: Any, measured: list[BindingPair]) -> dict[int, SweepResult]:
    """Sweep the measured pairs; the first over every position (its heatmap), the rest at the targets only.

    All pairs go to one `sweep_pairs` call, so the cells of pairs of equal token length share forwards.
    """
    layers = range(resolve_architecture(loaded.model).num_layers + 1)  # + the final residual
    positions: list[list[int] | None] = []
    for pair in measured:
        if positions:
            targets = prepare_inputs(loaded.tokenizer, pair.original, pair.counterfactual).targets
            positions.append(sorted(set(targets.values())))
        else:
            positions.append(None)
    # Wrong answers are recorded in the samples and the robust_pairs metric; no warning per pair.
    swept = sweep_pairs(
        loaded,
        [(pair.original, pair.counterfactual) for pair in measured],
        layers=layers,
        positions=positions,
        warn_unsolved=False,
    )
    return {pair.index: result for pair, result in zip(measured, swept)}


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


#: Swept pairs the lens and knockout metrics use (the first ones): enough to read a layer, and a bound on the
#: case's cost however large --num-seqs is.
LENS_PAIRS = 8


def _lens_and_knockout_metrics(loaded: Any, measure: Any, pairs: list[BindingPair], hops: int) -> None:
    """Logit-lens and attention-knockout metrics of the first `LENS_PAIRS` swept pairs (module docstring)."""
    pairs = pairs[:LENS_PAIRS]
    lenses = [logit_lens(loaded, p.original, p.counterfactual) for p in pairs]
    if lenses:
        for index, label in enumerate(lenses[0].layer_labels):
            hits = sum(int(r.rank[index]) == 1 for r in lenses)
            measure.metric(f"lens/answer_top1/layer_{label}", k=hits, n=len(lenses))
        stays = [r.stays_from_layer for r in lenses if r.stays_from_layer is not None]
        if stays:
            measure.metric("lens/stays_from_layer", float(np.mean(stays)))
    num_layers = resolve_architecture(loaded.model).num_layers
    for name, keys in (("root_line", "line:ref depth 1"), ("last_chain_line", f"line:ref depth {hops}")):
        kept, probs = [], []
        for p in pairs:
            try:
                result = knockout_by_layer(
                    loaded, (p.original, p.counterfactual), "final", keys, [range(num_layers)]
                )
            except CausalTracingError:
                continue  # a program without that chain target: nothing to cut
            kept.append(bool(result.original_top1[0]))
            probs.append(float(result.prob_original[0]))
        if kept:
            measure.metric(f"knockout/final_to_{name}/answer_kept", k=sum(kept), n=len(kept))
            measure.metric(f"knockout/final_to_{name}/prob_orig", float(np.mean(probs)))


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
    return measure_causal_case(
        loaded, measure, family="binding", seq_len=seq_len, num_seqs=num_seqs, seed=seed, out_dir=out_dir,
        knobs={"num_hops": hops},
    )  # fmt: skip


def measure_causal_case(
    loaded: Any,
    measure: Any,
    *,
    family: str,
    seq_len: int,
    num_seqs: int,
    seed: int,
    out_dir: str | Path,
    knobs: dict[str, Any] | None = None,
    sweep_unsolved: bool = False,
) -> list[SweepResult]:
    """Measure one causal case of a program family into `measure` (see the module docstring).

    Args:
        loaded: The model (`debug.models.LoadedModel`).
        measure: The case's `debug.plugin.Measurement`.
        family: A key of `CAUSAL_FAMILIES` ("binding", "range", "boolean").
        seq_len: The generator's seq_len (lines, or loop iterations for range).
        num_seqs: Programs in the case.
        seed: The case's base seed.
        out_dir: Where the attached pictures are written.
        knobs: More generator knobs (`{"num_hops": 2}` for binding).
        sweep_unsolved: Sweep every pair with a counterfactual, even when some are answered right both ways
            (default: only those, when there is any).

    Returns:
        The sweeps, in program order (empty when no program had a counterfactual).

    Raises:
        ValueError: For an unknown family, before any work.
        debug.causal.inputs.CausalTracingError: When the programs are longer than the model's context,
            before any forward.
    """
    knobs = dict(knobs or {})
    _check_family(family)
    pairs = causal_pairs(loaded, family, seq_len, num_seqs, seed, **knobs)
    usable = [p for p in pairs if p.counterfactual is not None]
    robust = [p for p in usable if p.robust]
    measure.metric("accuracy", k=sum(p.original_correct for p in usable), n=len(usable))
    measure.metric("robust_pairs", k=len(robust), n=len(usable))
    measured = usable if sweep_unsolved else (robust or usable)
    swept = _sweep_pairs(loaded, measured)
    reasons = {p.index: _skip_reason(p, bool(robust) and not sweep_unsolved) for p in pairs}
    why = Counter(reason for reason in reasons.values() if reason)
    measure.samples(_sample(p, swept.get(p.index), reasons[p.index]) for p in pairs)
    measure.metric("swept_pairs", k=len(swept), n=len(pairs))
    measure.info(
        model=loaded.model_id,
        fingerprint=loaded.fingerprint,
        **({"hops": knobs["num_hops"]} if family == "binding" else {"family": family}),
        site=SITE,
        measured_on=_measured_on(robust, usable, sweep_unsolved),
        pairs=len(measured),
        skipped_pairs=sum(why.values()),
        skipped_why="; ".join(f"{n} {reason}" for reason, n in why.items()) or "none skipped",
    )
    results = list(swept.values())
    if not results:
        return results
    aggregate = _effect_metrics(measure, results)
    if family == "binding":
        _lens_and_knockout_metrics(
            loaded, measure, [p for p in measured if p.index in swept], knobs["num_hops"]
        )
    what = f"{knobs['num_hops']} hops" if family == "binding" else f"{family}, seq_len {seq_len}"
    heatmap = save_figure(plot_token_heatmap(results[0]), Path(out_dir) / "heatmap.png")
    measure.image("layer x token", heatmap, caption=f"normalized effect, first program ({what})")
    by_depth = save_figure(plot_ref_depth_aggregate(aggregate), Path(out_dir) / "by_depth.png")
    measure.image("by ref depth", by_depth, caption=f"mean over {len(results)} programs, by target")
    if family != "binding":  # the binding case's pictures stay the paper's two
        by_target = save_figure(plot_target_layer_heatmap(aggregate, what), Path(out_dir) / "by_target.png")
        measure.image("target x layer", by_target, caption=f"mean normalized effect, {len(results)} programs")
    return results


#: Programs per range or boolean case without --num-seqs: each pair costs a patching sweep, so fewer than the
#: behavioural default (the case's `swept_pairs` n shows the number used).
FAMILY_CASE_PROGRAMS = 8


def measure_family_case(
    case: Any, loaded: Any, measure: Any, *, family: str, out_dir: str | Path, num_seqs_given: bool
) -> list[SweepResult]:
    """The causal eval case of a range or boolean module: `measure_causal_case` on the case's programs.

    Args:
        case: The eval case (`debug.plugin.Case`); its task's knobs go to the generator (`query` is fixed).
        loaded: The case's model.
        measure: The test's `Measurement`.
        family: "range" or "boolean".
        out_dir: Where the pictures are written.
        num_seqs_given: Whether the user passed --num-seqs; without it a case uses `FAMILY_CASE_PROGRAMS`.
    """
    num_seqs = case.num_seqs if num_seqs_given else min(case.num_seqs, FAMILY_CASE_PROGRAMS)
    knobs = {k: v for k, v in case.task.knobs.items() if k != "query"}  # the family fixes query=True
    return measure_causal_case(
        loaded,
        measure,
        family=family,
        seq_len=case.seq_len,
        num_seqs=num_seqs,
        seed=case.seed,
        out_dir=out_dir,
        knobs=knobs,
    )


def _measured_on(robust: list[BindingPair], usable: list[BindingPair], sweep_unsolved: bool) -> str:
    if sweep_unsolved and len(robust) < len(usable):
        solved = f"{len(robust)} of {len(usable)} answered right both ways"
        return f"all pairs, solved or not (sweep_unsolved; {solved})"
    return "pairs answered correctly both ways" if robust else "all pairs (none answered correctly)"


def plot_target_layer_heatmap(aggregate: dict[str, Any], what: str = "", metric: str = "normalized") -> Any:
    """A heatmap of the mean effect per target (rows) and layer (columns): where the changed value travels.

    Args:
        aggregate: `debug.causal.result.aggregate_by_target` of the case's sweeps.
        what: Names the case in the title.
        metric: Which metric to draw.

    Returns:
        The matplotlib figure.
    """
    import matplotlib  # deferred: matplotlib costs ~0.3 s to import

    if "matplotlib.pyplot" not in sys.modules:  # keep a notebook's interactive backend
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: as above

    targets = list(aggregate["by_target"])
    values = np.array(
        [[np.nan if v is None else v for v in aggregate["by_target"][t][metric]] for t in targets],
        dtype=float,
    )
    if values.ndim == 3:  # head sweeps: the strongest head
        values = np.nanmax(values, axis=2)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * values.shape[1] + 2.0), 0.45 * len(targets) + 1.6))
    image = ax.imshow(values, aspect="auto", cmap="RdBu_r", vmin=-1.0, vmax=1.0, interpolation="nearest")
    ax.set_yticks(range(len(targets)), targets, fontsize=8)
    ax.set_xticks(range(len(aggregate["layer_labels"])), aggregate["layer_labels"], fontsize=7)
    ax.set_xlabel("layer")
    ax.set_title(f"{metric} effect by target and layer ({what})\n{aggregate.get('model_id', '')}", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    fig.tight_layout()
    return fig
