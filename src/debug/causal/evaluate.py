"""The causal eval cases' measurement: residual-stream patching of program pairs, recorded per case.

`measure_causal_case` is what `evals/test_causal_binding.py`, `test_causal_range.py` and
`test_causal_boolean.py` run for one case (through `measure_eval_case`). Each of the case's `num_seqs`
programs (the same programs as the behavioural twin with the same generator, knobs, length and seed) gets a
counterfactual of equal token length: for "binding" the chain root constant changed, for "range"
(`make_range_program`, query form) the increment or loop bound, for "boolean" (`make_boolean_program`, query
form) a root constant flipped (`debug.counterfactual`; families in `CAUSAL_FAMILIES`).

What a case costs, and why it is shaped this way. The behavioural twin runs one forward row per program. A
patching cell (layer, position) is one more row, and a full layer x position map of one 16-line binding
program is about 1,100 rows: measured side by side (`bench/causal_eval.py`), exact full maps made the causal
cases 60x their twins. So a case spends its patching where the answer can move:

- every program's original is answered as the twin answers it (`debug.scoring.score_programs`, the program
  as the prompt, the run's answer cache: the twin's work, read back when the twin ran first), which gives
  `accuracy` (k of n programs with a counterfactual), the twin's on the same programs;
- the counterfactuals of the first `2 * max_pairs` candidates (program order; originals answered right
  first) are answered, which gives `robust_pairs` (k of those checked answered right both ways);
- the first `max_pairs` robust ones (`SWEPT_PAIRS`, 4, in `make evals`; every pair when the user passes
  --num-seqs), or when none is robust the first candidates, are patched exactly, in one `sweep_pairs` call, at
  every layer and the final residual but only at the TokenAnalyzer targets: binding "ref depth k" (the
  right-hand side of each chain line), range "changed constant" and "accumulator", boolean "changed constant"
  and "operand k", and for all three the query variable ("query") and the final token ("final");
- one map of every (layer, position) cell is drawn for the first swept pair with attribution patching
  (`sweep(..., method="attribution")`: first-order estimates from two forwards and one backward), labelled as
  an estimate; its agreement with the exact effects at that pair's target cells is recorded
  (`map_vs_exact_spearman`, info) so a reader knows how far to trust it. Positions before the changed token
  are exactly zero in any map: the original and counterfactual residuals there are identical.

Recorded per case:

- `normalized/<target>/layer_<l>`: the mean normalized effect, (LD - LD_orig) / (LD_cf - LD_orig), of the
  exact patches; `normalized/<target>/max` the largest over layers;
- `iia/query/layer_<l>`: interchange intervention accuracy at the query position (k of n swept pairs), and
  `iia/query/max` at the best layer (named in the case info);
- `accuracy`, `robust_pairs` as above; `swept_pairs`: how many of the `num_seqs` programs were patched;
- binding cases, over the swept pairs: `lens/answer_top1/layer_<l>` (k of n whose logit-lens top-1 at the
  final token is the answer, `debug.causal.lens`) and `lens/stays_from_layer` (mean first layer from which it
  stays top-1); `knockout/final_to_<keys>/answer_kept` (k of n whose top-1 stays the answer when the final
  token cannot attend to the root line, `root_line`, or to the query variable's own line, `last_chain_line`,
  at every layer, `debug.causal.knockout`) and `.../prob_orig` (mean P(answer) then).

The case info also carries `seconds`: wall time per phase (answers, exact sweep, lens and knockout,
attribution map and pictures), which `bench/causal_eval.py` prints beside the behavioural twin's time.

Pictures, attached as SVG (`debug.causal.plots.token_heatmap_svg` and `target_heatmap_svg`: drawn from the
numbers in milliseconds, where a matplotlib figure of the map cost more than the behavioural twin): "layer x
token" (the attribution map above) and "target x layer", the exact mean effect per target and layer - where
the changed value travels (for binding the numbers of the paper's by-ref-depth lines).

Every program gets a sample record, swept or not, with what its counterfactual changed (`change`: line, old
and new value); one that was not swept says why (`skipped`: no counterfactual of equal token length, no
counterfactual that changes the answer, answered wrong on either run while others are answered right both
ways, or beyond the case's `max_pairs`), and the case info counts the skipped pairs by reason
(`skipped_pairs`, `skipped_why`). A model that does not solve the family (the binding-only default model on
range programs) is still traced over its first candidates, and `measured_on` and the `robust_pairs` k/n say
so; `sweep_unsolved=True` sweeps the first candidates even when some are solved.

The measurement object is duck-typed (`metric`, `info`, `sample`, `image`: `debug.plugin.Measurement`), so
this module does not depend on the plugin.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from debug.causal.architectures import resolve_architecture
from debug.causal.engine import REMOTE_CHOICES, check_remote, sweep, sweep_pairs
from debug.causal.inputs import prepare_inputs
from debug.causal.knockout import knockout_programs
from debug.causal.lens import logit_lens_programs
from debug.causal.pairs import check_program_fits
from debug.causal.plots import target_heatmap_svg, token_heatmap_svg
from debug.causal.result import SweepResult, aggregate_by_target
from debug.counterfactual import create_counterfactual, create_counterfactual_program, mark_change
from debug.generators import GENERATORS
from debug.programs import Program, generate_programs, program_seed
from debug.scoring import score_programs
from debug.stats import spearman

__all__ = [
    "CAUSAL_FAMILIES",
    "BindingPair",
    "SWEPT_PAIRS",
    "attribution_map",
    "binding_pairs",
    "candidates",
    "causal_pairs",
    "measure_binding_case",
    "measure_causal_case",
    "measure_eval_case",
    "target_positions",
]

#: Family -> (generator, its fixed knobs) of the programs a causal case measures (all in query form).
CAUSAL_FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {
    "binding": ("make_variable_binding_program", {}),
    "range": ("make_range_program", {"query": True}),
    "boolean": ("make_boolean_program", {"query": True}),
}

SITE = "residual_stream"
#: The prompt of every answer a causal case reads: the program itself, as patching runs it (query form).
RAW_PROMPT = "{code}"
NO_COUNTERFACTUAL = "no counterfactual of equal token length"
NO_CHANGE = "no counterfactual changes the answer"
WRONG_WAY = "answered wrong on the original or the counterfactual (effects use the pairs right both ways)"
NOT_SAMPLED = "not among the case's patched pairs (max_pairs; pass --num-seqs to patch every pair)"

#: Pairs a causal eval case patches without --num-seqs. Each costs its targets x (layers + 1) rows of
#: forward, about a dozen of the behavioural twin's rows for a 16-line binding program; 4 keeps a 50-program
#: case near twice its twin while giving every layer's IIA and effects over several programs.
SWEPT_PAIRS = 4


@dataclass
class BindingPair:
    """One program of a case (any family, despite the name), its counterfactual, how the model answers both.

    Attributes:
        index: The program's index in the case.
        original: The program (range and boolean: marked with its change, `debug.counterfactual.mark_change`).
        counterfactual: Its counterfactual, or None when there is none (`why_none` says why).
        why_none: Why there is no counterfactual ("" when there is one).
        original_output: The model's greedy answer text on the original.
        original_correct: Whether that answer parses to the original's answer.
        counterfactual_output: The same on the counterfactual ("" when it was not answered).
        counterfactual_correct: Whether that answer is right (None when it was not answered).
    """

    index: int
    original: Program
    counterfactual: Program | None
    why_none: str = ""
    original_output: str = ""
    original_correct: bool = False
    counterfactual_output: str = ""
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
    loaded: Any,
    family: str,
    seq_len: int,
    num_seqs: int,
    seed: int,
    *,
    check_counterfactuals: int | None = None,
    cache: Any = None,
    **knobs: Any,
) -> list[BindingPair]:
    """The case's programs with their counterfactuals, checked against the context, then answered.

    Program i is seeded by `program_seed(seed, seq_len, i)`, its counterfactual by the same seed. For the
    range and boolean families the original carries the change (`debug.counterfactual.mark_change`), so
    its "changed constant" token is a target. Every original is answered; the counterfactuals of the first
    `check_counterfactuals` candidates (`candidates` order) are answered, the others keep
    `counterfactual_correct=None`. Answers are judged as the behavioural eval judges them
    (`debug.scoring.score_programs` with the raw program as the prompt: greedy decoding, the family's
    parser), so a case's `accuracy` is its twin's on the same programs.

    Args:
        loaded: The model (`debug.models.LoadedModel`).
        family: A key of `CAUSAL_FAMILIES`.
        seq_len: The generator's seq_len.
        num_seqs: Programs in the case.
        seed: The case's base seed.
        check_counterfactuals: How many counterfactuals to answer (default all).
        cache: An answer cache (`debug.cache.AnswerCache`) to read and extend, or None.
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
    # Answered as the behavioural twin answers them (`score_programs`, prompt `{code}`): the same greedy
    # decode, parser and answer cache, so a case whose twin ran first reads its answers back.
    answered = score_programs(loaded, [p.original for p in pairs], RAW_PROMPT, cache=cache)
    for pair, sample in zip(pairs, answered):
        pair.original_correct = sample.correct
        pair.original_output = sample.raw_output
    checked = candidates(pairs)[:check_counterfactuals]
    if checked:
        answered = score_programs(loaded, [p.counterfactual for p in checked], RAW_PROMPT, cache=cache)
        for pair, sample in zip(checked, answered):
            pair.counterfactual_correct = sample.correct
            pair.counterfactual_output = sample.raw_output
    return pairs


def candidates(pairs: list[BindingPair]) -> list[BindingPair]:
    """The pairs with a counterfactual: those whose original is answered right first, in program order."""
    usable = [p for p in pairs if p.counterfactual is not None]
    return [p for p in usable if p.original_correct] + [p for p in usable if not p.original_correct]


def _skip_reason(pair: BindingPair, swept: bool, measured_robust: bool) -> str:
    if pair.counterfactual is None:
        # Range and boolean programs can have no change that moves the answer (`x = a or True`).
        return NO_CHANGE if "does not depend on" in pair.why_none else NO_COUNTERFACTUAL
    if swept:
        return ""
    if measured_robust and pair.counterfactual_correct is not None and not pair.robust:
        return WRONG_WAY
    return NOT_SAMPLED


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
        "output": pair.original_output,
        "counterfactual_output": None if pair.counterfactual_correct is None else pair.counterfactual_output,
        "original_top1": result.original.top1 if result is not None else None,
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


def target_positions(loaded: Any, pair: BindingPair) -> list[int]:
    """The token positions of a pair's targets (sorted, once each): the cells patched at every layer."""
    targets = prepare_inputs(loaded.tokenizer, pair.original, pair.counterfactual).targets
    return sorted(set(targets.values()))


def _all_layers(loaded: Any) -> range:
    return range(resolve_architecture(loaded.model).num_layers + 1)  # + the final residual


def _sweep_targets(
    loaded: Any, measured: list[BindingPair], remote: bool | str = False
) -> dict[int, SweepResult]:
    """Exact patches of the measured pairs at every layer, at their targets only, in one `sweep_pairs` call.

    The pairs' cells share forwards (shorter programs left-padded); with `remote` they run through
    nnsight's remote path (`sweep_pairs(remote=...)`).
    """
    swept = sweep_pairs(
        loaded,
        [(pair.original, pair.counterfactual) for pair in measured],
        layers=_all_layers(loaded),
        positions=[target_positions(loaded, pair) for pair in measured],
        warn_unsolved=False,  # wrong answers are in the samples and the robust_pairs metric
        remote=remote,
    )
    return {pair.index: result for pair, result in zip(measured, swept)}


def attribution_map(loaded: Any, pair: BindingPair, exact: SweepResult) -> tuple[SweepResult, float | None]:
    """Every (layer, position) cell of one pair by attribution patching, and its agreement with `exact`.

    Args:
        loaded: The model.
        pair: The pair drawn.
        exact: The pair's exact sweep (at its targets).

    Returns:
        The estimate (a `SweepResult` whose `normalized` is estimated; `iia` and `prob_cf` are NaN), and the
        Spearman rank correlation of its normalized effect with the exact one over the exact sweep's cells
        (None when fewer than three cells are finite on both).
    """
    estimate = sweep(
        loaded,
        pair.original,
        pair.counterfactual,
        layers=exact.layers,
        method="attribution",
        warn_unsolved=False,
    )
    columns = [estimate.positions.index(p) for p in exact.positions]
    rows = [estimate.layers.index(layer) for layer in exact.layers]
    guess = estimate.metric("normalized")[np.ix_(rows, columns)].ravel()
    truth = exact.metric("normalized").ravel()
    keep = np.isfinite(guess) & np.isfinite(truth)
    rho = spearman(guess[keep], truth[keep]) if keep.sum() >= 3 else float("nan")
    return estimate, (None if np.isnan(rho) else rho)


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


def _lens_and_knockout_metrics(loaded: Any, measure: Any, pairs: list[BindingPair], hops: int) -> None:
    """Logit-lens and attention-knockout metrics of the swept pairs (module docstring)."""
    lenses = logit_lens_programs(loaded, [p.original for p in pairs], [p.counterfactual for p in pairs])
    if lenses:
        for index, label in enumerate(lenses[0].layer_labels):
            hits = sum(int(r.rank[index]) == 1 for r in lenses)
            measure.metric(f"lens/answer_top1/layer_{label}", k=hits, n=len(lenses))
        stays = [r.stays_from_layer for r in lenses if r.stays_from_layer is not None]
        if stays:
            measure.metric("lens/stays_from_layer", float(np.mean(stays)))
    # Only the originals run: a knockout of the program alone needs no counterfactual forward.
    cuts = {"root_line": "line:ref depth 1", "last_chain_line": f"line:ref depth {hops}"}
    for name, outcomes in knockout_programs(loaded, [p.original for p in pairs], "final", cuts).items():
        found = [o for o in outcomes if o is not None]  # None: a program without that chain target
        if found:
            kept = sum(o.answer_kept for o in found)
            measure.metric(f"knockout/final_to_{name}/answer_kept", k=kept, n=len(found))
            probs = [o.prob_original for o in found]
            measure.metric(f"knockout/final_to_{name}/prob_orig", float(np.mean(probs)))


def measure_binding_case(
    loaded: Any,
    measure: Any,
    *,
    hops: int,
    seq_len: int,
    num_seqs: int,
    seed: int,
    max_pairs: int | None = SWEPT_PAIRS,
) -> list[SweepResult]:
    """Measure one causal binding case into `measure` (see the module docstring for what is recorded).

    Args:
        loaded: The model (`debug.models.LoadedModel`).
        measure: The case's `debug.plugin.Measurement`.
        hops: Query depth of the programs.
        seq_len: Assignment lines per program.
        num_seqs: Programs in the case.
        seed: The case's base seed.
        max_pairs: Pairs patched at most (None: every measured pair).

    Returns:
        The exact sweeps (at the targets), in program order (empty when no program had a counterfactual).

    Raises:
        debug.causal.inputs.CausalTracingError: When the programs are longer than the model's context,
            before any forward.
    """
    return measure_causal_case(
        loaded, measure, family="binding", seq_len=seq_len, num_seqs=num_seqs, seed=seed,
        knobs={"num_hops": hops}, max_pairs=max_pairs,
    )  # fmt: skip


def measure_causal_case(
    loaded: Any,
    measure: Any,
    *,
    family: str,
    seq_len: int,
    num_seqs: int,
    seed: int,
    knobs: dict[str, Any] | None = None,
    sweep_unsolved: bool = False,
    max_pairs: int | None = SWEPT_PAIRS,
    remote: bool | str = False,
    cache: Any = None,
) -> list[SweepResult]:
    """Measure one causal case of a program family into `measure` (see the module docstring).

    Args:
        loaded: The model (`debug.models.LoadedModel`).
        measure: The case's `debug.plugin.Measurement`.
        family: A key of `CAUSAL_FAMILIES` ("binding", "range", "boolean").
        seq_len: The generator's seq_len (lines, or loop iterations for range).
        num_seqs: Programs in the case.
        seed: The case's base seed.
        knobs: More generator knobs (`{"num_hops": 2}` for binding).
        sweep_unsolved: Sweep the first candidates even when some are answered right both ways (default:
            only those, when there is any).
        max_pairs: Pairs patched at most; the counterfactuals of twice as many candidates are answered
            (None: every pair, every counterfactual).
        remote: Where the exact patching traces run (`debug.causal.engine.sweep_pairs`'s `remote`).
        cache: The answer cache the programs' answers are read from and added to (`causal_pairs`), or None.

    Returns:
        The exact sweeps (at the targets), in program order (empty when no program had a counterfactual).

    Raises:
        ValueError: For an unknown family or a max_pairs below 1, before any work.
        debug.causal.inputs.CausalTracingError: When the programs are longer than the model's context,
            before any forward.
    """
    knobs = dict(knobs or {})
    _check_family(family)
    if max_pairs is not None and max_pairs < 1:
        raise ValueError(f"max_pairs must be a positive integer or None; got {max_pairs!r}")
    check = None if max_pairs is None else 2 * max_pairs
    clock = _Clock()
    with clock("answers"):
        pairs = causal_pairs(
            loaded, family, seq_len, num_seqs, seed, check_counterfactuals=check, cache=cache, **knobs
        )
    usable = [p for p in pairs if p.counterfactual is not None]
    checked = [p for p in candidates(pairs) if p.counterfactual_correct is not None]
    robust = [p for p in checked if p.robust]
    measure.metric("accuracy", k=sum(p.original_correct for p in usable), n=len(usable))
    measure.metric("robust_pairs", k=len(robust), n=len(checked))
    measured = (checked if sweep_unsolved else (robust or checked))[:max_pairs]
    measured.sort(key=lambda p: p.index)
    with clock("exact sweep"):
        swept = _sweep_targets(loaded, measured, remote) if measured else {}
    measured_robust = bool(robust) and not sweep_unsolved
    reasons = {p.index: _skip_reason(p, p.index in swept, measured_robust) for p in pairs}
    why = Counter(reason for reason in reasons.values() if reason)
    measure.samples(_sample(p, swept.get(p.index), reasons[p.index]) for p in pairs)
    measure.metric("swept_pairs", k=len(swept), n=len(pairs))
    measure.info(
        model=loaded.model_id,
        fingerprint=loaded.fingerprint,
        **({"hops": knobs["num_hops"]} if family == "binding" else {"program_family": family}),
        site=SITE,
        measured_on=_measured_on(robust, checked, sweep_unsolved),
        pairs=len(measured),
        patched_cells="every layer and the final residual, at the targets",
        skipped_pairs=sum(why.values()),
        skipped_why="; ".join(f"{n} {reason}" for reason, n in why.items()) or "none skipped",
    )
    results = list(swept.values())
    if results:
        aggregate = _effect_metrics(measure, results)
        if family == "binding":
            with clock("lens and knockout"):
                _lens_and_knockout_metrics(loaded, measure, measured, knobs["num_hops"])
        with clock("attribution map and pictures"):
            _attach_pictures(loaded, measure, measured[0], results, aggregate, what=(
                f"{knobs['num_hops']} hops" if family == "binding" else f"{family}, seq_len {seq_len}"
            ))  # fmt: skip
    measure.info(seconds=clock.seconds)
    return results


class _Clock:
    """Wall seconds per phase of a case (`info.seconds`): where a causal case's time goes."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = round(time.perf_counter() - start, 3)


def _attach_pictures(
    loaded: Any,
    measure: Any,
    first: BindingPair,
    results: list[SweepResult],
    aggregate: dict[str, Any],
    what: str,
) -> None:
    """The attribution map of the first swept pair and the exact target x layer means (module docstring)."""
    estimate, agreement = attribution_map(loaded, first, results[0])
    measure.info(
        map_method="attribution patching (AtP, first-order estimate) of the first swept pair",
        map_vs_exact_spearman=None if agreement is None else round(agreement, 3),
    )
    rho = "n/a" if agreement is None else f"{agreement:.2f}"
    title = f"AtP estimate of the normalized effect, first swept program ({what})"
    caption = (
        f"attribution estimate, first swept program ({what}); rank agreement with exact at its targets {rho}"
    )
    measure.image("layer x token", token_heatmap_svg(estimate, title=title), caption=caption)
    measure.image(
        "target x layer",
        target_heatmap_svg(aggregate, what),
        caption=f"exact mean normalized effect by target, {len(results)} programs",
    )


def measure_eval_case(
    case: Any,
    loaded: Any,
    measure: Any,
    *,
    family: str,
    num_seqs_given: bool,
    remote: str = "off",
    cache: Any = None,
) -> list[SweepResult]:
    """The causal eval case of an eval module: `measure_causal_case` on the case's programs.

    Args:
        case: The eval case (`debug.plugin.Case`); its task's knobs go to the generator (`query` is fixed).
        loaded: The case's model.
        measure: The test's `Measurement`.
        family: A key of `CAUSAL_FAMILIES`.
        num_seqs_given: Whether the user passed --num-seqs; then every measured pair is patched, otherwise
            `SWEPT_PAIRS`.
        remote: The `--remote` choice (`debug.causal.engine.REMOTE_CHOICES`): where the exact patching
            traces run; the logit lens, knockout and the attribution map stay in this process.
        cache: The run's answer cache (None under --no-cache): the answers of a behavioural twin that ran
            first are read back from it.

    Raises:
        CausalTracingError: A remote choice that cannot run (no API key, no hub model), before any work.
    """
    where = REMOTE_CHOICES[remote]
    check_remote(loaded, where, None)
    knobs = {k: v for k, v in case.task.knobs.items() if k != "query"}  # the family fixes query=True
    return measure_causal_case(
        loaded,
        measure,
        family=family,
        seq_len=case.seq_len,
        num_seqs=case.num_seqs,
        seed=case.seed,
        knobs=knobs,
        max_pairs=None if num_seqs_given else SWEPT_PAIRS,
        remote=where,
        cache=cache,
    )


def _measured_on(robust: list[BindingPair], checked: list[BindingPair], sweep_unsolved: bool) -> str:
    if sweep_unsolved and len(robust) < len(checked):
        solved = f"{len(robust)} of {len(checked)} checked answered right both ways"
        return f"pairs solved or not (sweep_unsolved; {solved})"
    return (
        "pairs answered correctly both ways" if robust else "pairs not answered correctly both ways (none is)"
    )
