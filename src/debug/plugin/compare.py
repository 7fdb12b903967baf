"""Paired model comparisons: against a saved baseline, within one run, and between two saved runs.

Three ways in, one pairing path (`build_comparisons`):

- `--baseline PATH`: each case of this run is compared with the baseline case of the same test, task and
  seq_len. The model part of the id is ignored, since a swap changes it: the baseline case of the *same*
  model is preferred, otherwise the single baseline case of that key; when the baseline ran several other
  models on it the case is marked ambiguous.
- Several `--model`s: each model's case is compared with the reference model's case of the same key (the
  first `--model`, or `--reference ID`), on the programs both saw in this run.
- `debug compare OLD NEW` (`debug.plugin.compare_cli`): NEW's saved cases against OLD's, exactly as if NEW had
  run with `--baseline OLD`.

Samples pair by `pairing_key` (program hash plus occurrence), so only programs both sides saw count, and
each binary per-sample outcome (`PAIRED_METRICS`) gets an exact McNemar test and Newcombe's interval of the
paired delta. Pairs are also pooled per (family, model, reference) and, within that, per value of the program
metadata the generators record (`BREAKDOWN_KEYS`: binding hops and root line, seq_len), so a swap that loses
4-hop programs shows where.

`--compare-fail METRIC:MARGIN` (`regressions`) decides over every compared case at once: a case regresses when
its metric got worse by more than MARGIN and its p-value, adjusted by Holm's step-down procedure over all
compared cases (or unadjusted with `--compare-correction none`), is below `--compare-alpha` (0.05). A compared
case with fewer paired samples than it has programs is never silently passed: it is marked with how many
paired and why, and under `--compare-fail` it fails the run.

Where a comparison is not significant, the rows say roughly how many programs per case would make the
observed delta significant (`debug.stats.mcnemar_programs_needed`, 80% power); `annotate_gates` does the same
for gates whose interval straddles the bar (`debug.stats.programs_to_clear_bar`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from debug.plugin.results import ReportError, load_results
from debug.stats import (
    compare_paired,
    holm_adjust,
    mcnemar_programs_needed,
    programs_to_clear_bar,
)

#: Per-sample binary outcomes that can be compared paired, with their direction (True: higher is better).
PAIRED_METRICS: dict[str, tuple[Callable[[Mapping[str, Any]], bool], bool]] = {
    "accuracy": (lambda s: bool(s.get("correct")), True),
    "parse_failure_rate": (lambda s: not s.get("parsed", True), False),
}
#: Program metadata that comparisons are broken down by (binding: hops, root line; every family: seq_len).
BREAKDOWN_KEYS = ("hops", "root_line", "seq_len")
#: `--compare-correction` choices: Holm's step-down procedure, or raw p-values.
CORRECTIONS = ("holm", "none")
DEFAULT_ALPHA = 0.05
#: Accepted `--compare-alpha` range: above 0.5 a "significant" drop is more likely noise than not.
ALPHA_RANGE = (1e-6, 0.5)
#: Power of the "how many programs would decide it" estimates.
POWER = 0.8
#: Where a comparison's reference samples come from: a saved run (`--baseline`, OLD) or this run's reference.
SOURCE_BASELINE, SOURCE_RUN = "baseline", "run"
_FAIL_GRAMMAR = "takes METRIC:MARGIN, e.g. accuracy:2pp or accuracy:0.02"


class BaselineError(ValueError):
    """The baseline cannot be used; the message is one line that names the fix."""


def parse_fail_rule(text: str, flag: str = "--compare-fail") -> tuple[str, float]:
    """Parse `METRIC:MARGIN`, MARGIN being `2pp` (percentage points) or an absolute number like `0.02`.

    Args:
        text: The rule as written.
        flag: The option it came from, named in the error.

    Returns:
        (metric, margin as a proportion).

    Raises:
        ValueError: One line naming `flag` and the accepted grammar.
    """
    match = re.fullmatch(r"\s*([A-Za-z_][\w]*)\s*:\s*([0-9]*\.?[0-9]+)\s*(pp)?\s*", text or "")
    grammar = f"{flag} {_FAIL_GRAMMAR}"
    if not match:
        raise ValueError(f"{grammar}; got {text!r}")
    metric, number, unit = match.groups()
    if metric not in PAIRED_METRICS:
        raise ValueError(f"{grammar}; METRIC must be one of {', '.join(PAIRED_METRICS)}, got {metric!r}")
    margin = float(number) / 100.0 if unit else float(number)
    if not 0.0 <= margin < 1.0:
        raise ValueError(f"{grammar}; the margin must be below 100pp, got {text!r}")
    return metric, margin


def parse_alpha(text: Any, flag: str = "--compare-alpha") -> float:
    """A family-wise significance level within `ALPHA_RANGE`.

    Raises:
        ValueError: One line naming `flag` and the range.
    """
    low, high = ALPHA_RANGE
    try:
        value = float(str(text).strip())
    except ValueError:
        value = math.nan
    if not low <= value <= high:  # also refuses NaN
        raise ValueError(f"{flag} takes a number in [{low:g}, {high:g}], e.g. {flag} 0.05; got {text!r}")
    return value


def pairing_key(program_hash: str, seen: dict[str, int]) -> str:
    """`hash#i` for the i-th sample with this program hash in a case, so duplicate programs still pair 1:1."""
    index = seen.get(program_hash, 0)
    seen[program_hash] = index + 1
    return f"{program_hash}#{index}"


def pairing_fields(sample: Mapping[str, Any]) -> dict[str, Any]:
    """What a comparison keeps of a sample record: its outcomes and the metadata it is broken down by.

    Keeping only these (not the program and output text) bounds the memory of a run that pairs samples.
    """
    metadata = sample.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    kept: dict[str, Any] = {}
    for key in BREAKDOWN_KEYS:
        value = metadata.get(key, sample.get(key) if key == "seq_len" else None)
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            kept[key] = value
    return {"correct": bool(sample.get("correct")), "parsed": sample.get("parsed", True), "metadata": kept}


def case_key(case: Mapping[str, Any]) -> tuple[Any, ...]:
    """The model-independent identity of a case: (test name, family, task, seq_len)."""
    info = case.get("info") or {}
    if info.get("task") is None:
        return (str(case["id"]), case.get("family"), None, case.get("seq_len"))
    return (str(case["id"]).split("[", 1)[0], case.get("family"), info.get("task"), case.get("seq_len"))


@dataclass
class BaselineRun:
    """A loaded saved run: its results and its per-case samples keyed by `pairing_key`.

    Attributes:
        path: Its results.json.
        results: The results.json document.
        samples: Case id -> pairing key -> `pairing_fields` of the sample.
    """

    path: Path
    results: dict[str, Any]
    samples: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    @property
    def cases(self) -> list[dict[str, Any]]:
        """The run's case records."""
        return list(self.results.get("cases", []))

    @property
    def program_seed(self) -> int | None:
        """The `--program-seed` the run used, when recorded."""
        return ((self.results.get("run") or {}).get("options") or {}).get("program_seed")


def results_path(path: str | Path) -> Path:
    """A run folder's results.json, or `path` itself when it names a file."""
    path = Path(path)
    return path / "results.json" if path.is_dir() else path


def load_run(path: str | Path, flag: str = "--baseline") -> BaselineRun:
    """Read a saved run: its results.json (or the folder holding it) and the samples.jsonl beside it.

    Args:
        path: results.json, or the run folder.
        flag: The option or argument it came from, named in errors.

    Raises:
        BaselineError: Missing or corrupt files, or another schema version (one line, naming `flag`).
    """
    path = results_path(path)
    try:
        results = load_results(path)
    except ReportError as exc:
        raise BaselineError(f"{flag}: {exc}") from None
    samples_path = path.parent / "samples.jsonl"
    if not samples_path.is_file():
        raise BaselineError(
            f"{flag}: {samples_path} is missing; keep samples.jsonl beside results.json (pairing needs it)"
        )
    samples: dict[str, dict[str, dict[str, Any]]] = {}
    seen: dict[str, dict[str, int]] = {}
    with open(samples_path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                case_id = str(row["case"])
                key = pairing_key(str(row["program_hash"]), seen.setdefault(case_id, {}))
                samples.setdefault(case_id, {})[key] = pairing_fields(row)
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
                raise BaselineError(
                    f"{flag}: {samples_path} line {lineno} is corrupt ({type(exc).__name__}); "
                    f"rerun that run or point {flag} at an intact one"
                ) from None
    return BaselineRun(path, results, samples)


def load_baseline(path: Path) -> BaselineRun:
    """`load_run` for `--baseline`."""
    return load_run(path, "--baseline")


def _match(
    cases: Iterable[Mapping[str, Any]], candidates: Iterable[Mapping[str, Any]], missing: str, what: str
) -> dict[str, dict[str, Any] | str]:
    by_key: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for old in candidates:
        by_key.setdefault(case_key(old), []).append(dict(old))
    matched: dict[str, dict[str, Any] | str] = {}
    for case in cases:
        found = by_key.get(case_key(case), [])
        same_model = [c for c in found if c.get("model") == case.get("model")]
        if len(same_model) == 1:
            matched[case["id"]] = same_model[0]
        elif len(found) == 1:
            matched[case["id"]] = found[0]
        elif not found:
            matched[case["id"]] = missing
        else:
            models = ", ".join(sorted(str(c.get("model")) for c in found))
            matched[case["id"]] = f"ambiguous: {what} ran {models} on this case"
    return matched


def match_cases(cases: Iterable[Mapping[str, Any]], baseline: BaselineRun) -> dict[str, dict[str, Any] | str]:
    """Map each current case id to its baseline case, or to a reason string when none fits."""
    return _match(cases, baseline.cases, "not in baseline", "the baseline")


def match_reference(cases: Iterable[Mapping[str, Any]], reference: str) -> dict[str, dict[str, Any] | str]:
    """Map each case of a model other than `reference` to the reference model's case of the same key."""
    cases = list(cases)
    ref_cases = [c for c in cases if str(c.get("model")) == reference]
    others = [c for c in cases if str(c.get("model")) != reference]
    return _match(others, ref_cases, f"not measured for the reference {reference}", "the reference")


def _programs_recorded(case: Mapping[str, Any]) -> int | None:
    acc = (case.get("metrics") or {}).get("accuracy") or {}
    return int(acc["n"]) if acc.get("n") is not None else None


def _pairing(
    source: str,
    case: Mapping[str, Any],
    ref_case: Mapping[str, Any],
    programs: int,
    ref_lines: int,
    paired: int,
) -> dict[str, Any]:
    """How many of a case's programs paired, and, when not all did, why and what fixes it."""
    ref_programs = _programs_recorded(ref_case)
    out: dict[str, Any] = {
        "paired": paired,
        "programs": programs,
        "reference_programs": ref_programs,
        "reference_samples": ref_lines,
        "complete": paired >= programs,
        "why": None,
        "fix": None,
    }
    if out["complete"]:
        return out
    whose = "the baseline" if source == SOURCE_BASELINE else f"the reference {ref_case.get('model')}"
    reasons, fixes = [], []
    if ref_programs is not None and ref_lines < ref_programs:
        reasons.append(
            f"{ref_programs - ref_lines} of {whose} case's {ref_programs} samples are missing from its "
            "samples.jsonl"
        )
        fixes.append(f"restore {whose}'s samples.jsonl or rerun it")
    if ref_lines > paired:
        reasons.append(f"{ref_lines - paired} with different program hashes")
        fixes.append("rerun both with the same --program-seed and generator settings")
    elif ref_programs is not None and ref_lines >= ref_programs and ref_programs < programs:
        reasons.append(f"{whose} measured only {ref_programs} programs")
        fixes.append(f"run both with the same --num-seqs (this case has {programs})")
    if not reasons:
        reasons.append(f"{whose} case recorded no samples ({ref_case.get('outcome') or 'no outcome'})")
        fixes.append(f"rerun {whose} case")
    out["why"] = "; ".join(reasons)
    out["fix"] = "; ".join(fixes)
    return out


def _stats(pairs: Sequence[tuple[bool, bool]], higher_is_better: bool) -> dict[str, Any]:
    result = compare_paired(pairs)
    low, high = result.delta_interval()
    return {**result.to_dict(), "higher_is_better": higher_is_better, "low": low, "high": high}


def _needed(stats: Mapping[str, Any], alpha: float, cases: int = 1) -> int | None:
    """Programs per case that would make the observed delta significant at `alpha` (None when moot)."""
    n = stats["n_pairs"]
    if not n or stats.get("significant"):
        return None
    discordant = (stats["base_only"] + stats["new_only"]) / n
    total = mcnemar_programs_needed(discordant, stats["delta"], alpha, POWER)
    return None if total is None else math.ceil(total / max(1, cases))


@dataclass
class _Pool:
    cases: int = 0
    pairs: dict[str, list[tuple[bool, bool]]] = field(default_factory=dict)
    by_value: dict[tuple[str, Any], dict[str, list[tuple[bool, bool]]]] = field(default_factory=dict)


def _value_order(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, int | float) else (1, str(value))


def _compare_matched(
    source: str,
    cases: Sequence[Mapping[str, Any]],
    matched: Mapping[str, dict[str, Any] | str],
    samples: Mapping[str, Mapping[str, Mapping[str, Any]]],
    ref_samples: Mapping[str, Mapping[str, Mapping[str, Any]]],
    pools: dict[tuple[str, str, str, str], _Pool],
    baseline_path: Path | None = None,
) -> dict[str, dict[str, Any]]:
    """The one pairing path: a row per matched case, pairs pooled per (source, family, model, reference)."""
    rows: dict[str, dict[str, Any]] = {}
    for case in cases:
        if case["id"] not in matched:
            continue
        ref = matched[case["id"]]
        row: dict[str, Any] = {
            "source": source,
            "case": case["id"],
            "model": case.get("model"),
            "family": case.get("family"),
        }
        if isinstance(ref, str):
            rows[case["id"]] = {**row, "reference": None, "reference_case": None, "note": ref, "metrics": {}}
            continue
        new_samples = samples.get(case["id"], {})
        old_samples = ref_samples.get(str(ref["id"]), {})
        common = sorted(new_samples.keys() & old_samples.keys())
        if source == SOURCE_BASELINE and new_samples and old_samples and not common:
            raise BaselineError(
                f"--baseline {baseline_path} was measured on other programs: case {case['id']} shares no "
                f"program hash with {ref['id']}; rerun the baseline with the same --program-seed and "
                "generator settings"
            )
        row.update(
            reference=ref.get("model"),
            reference_case=ref["id"],
            reference_fingerprint=ref.get("fingerprint"),
            note=None if new_samples else "no samples to compare",
            pairing=_pairing(source, case, ref, len(new_samples), len(old_samples), len(common)),
            metrics={},
        )
        pool = pools.setdefault(
            (source, str(case.get("family")), str(case.get("model")), str(ref.get("model"))), _Pool()
        )
        pool.cases += 1
        for name, (outcome, higher_is_better) in PAIRED_METRICS.items():
            pairs = [(outcome(old_samples[k]), outcome(new_samples[k])) for k in common]
            pool.pairs.setdefault(name, []).extend(pairs)
            row["metrics"][name] = _stats(pairs, higher_is_better)
        for k in common:
            metadata = {**(old_samples[k].get("metadata") or {}), **(new_samples[k].get("metadata") or {})}
            for key in BREAKDOWN_KEYS:
                if key in metadata:
                    per = pool.by_value.setdefault((key, metadata[key]), {})
                    for name, (outcome, _) in PAIRED_METRICS.items():
                        per.setdefault(name, []).append((outcome(old_samples[k]), outcome(new_samples[k])))
        rows[case["id"]] = row
    return rows


def _adjust(rows: Sequence[dict[str, Any]], correction: str, alpha: float) -> dict[str, int]:
    """Fill `p_adjusted`, `significant` and `needed_per_case` of every compared case; tests per metric."""
    tests: dict[str, int] = {}
    for name in PAIRED_METRICS:
        tested = [r["metrics"][name] for r in rows if r["metrics"].get(name, {}).get("n_pairs")]
        raw = [m["p_value"] for m in tested]
        adjusted = holm_adjust(raw) if correction == "holm" else raw
        for stats, p in zip(tested, adjusted):
            stats["p_adjusted"] = p
        tests[name] = len(tested)
        for row in rows:
            stats = row["metrics"].get(name)
            if stats is None:
                continue
            stats.setdefault("p_adjusted", None)
            stats["significant"] = stats["p_adjusted"] is not None and stats["p_adjusted"] < alpha
            stats["needed_per_case"] = _needed(stats, alpha)
    return tests


def build_comparisons(
    cases: Iterable[Mapping[str, Any]],
    samples: Mapping[str, Mapping[str, Mapping[str, Any]]],
    *,
    baseline: BaselineRun | None = None,
    reference: str | None = None,
    correction: str = "holm",
    alpha: float = DEFAULT_ALPHA,
) -> dict[str, Any] | None:
    """Every paired comparison of a run: against `baseline`, and of each model against `reference`.

    Args:
        cases: This run's case records.
        samples: This run's samples: case id -> pairing key (`pairing_key`) -> `pairing_fields`.
        baseline: A saved run to compare every case with (see the module docstring), or None.
        reference: The model every other model of this run is compared with, or None.
        correction: "holm" (adjust over all compared cases) or "none".
        alpha: Family-wise significance level of `significant` and `--compare-fail`.

    Returns:
        None when there is nothing to compare with, else plain JSON: baseline (path or None), reference,
        correction, alpha, tests (compared cases per metric), cases (one row per compared case and source),
        families (pooled per source, family, model and reference) and breakdowns (pooled per value of each
        `BREAKDOWN_KEYS` metadata key that takes two or more values).

    Raises:
        BaselineError: When a matched case shares no program with its baseline case (other programs).
        ValueError: On an unknown correction.
    """
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {', '.join(CORRECTIONS)}; got {correction!r}")
    if baseline is None and reference is None:
        return None
    cases = list(cases)
    pools: dict[tuple[str, str, str, str], _Pool] = {}
    by_source: list[dict[str, dict[str, Any]]] = []
    if baseline is not None:
        matched = match_cases(cases, baseline)
        by_source.append(
            _compare_matched(SOURCE_BASELINE, cases, matched, samples, baseline.samples, pools, baseline.path)
        )
    if reference is not None:
        matched = match_reference(cases, reference)
        by_source.append(_compare_matched(SOURCE_RUN, cases, matched, samples, samples, pools))
    rows = [source_rows[c["id"]] for c in cases for source_rows in by_source if c["id"] in source_rows]
    tests = _adjust(rows, correction, alpha)
    families, breakdowns = [], []
    for (source, family, model, ref_model), pool in sorted(pools.items()):
        head = {"source": source, "family": family, "model": model, "reference": ref_model}
        metrics = {}
        for name, pairs in pool.pairs.items():
            stats = _stats(pairs, PAIRED_METRICS[name][1])
            stats["significant"] = stats["p_value"] < alpha  # descriptive: not part of the correction
            stats["needed_per_case"] = _needed(stats, alpha, pool.cases)
            metrics[name] = stats
        families.append({**head, "cases": pool.cases, "metrics": metrics})
        values: dict[str, list[Any]] = {}
        for key, value in pool.by_value:
            values.setdefault(key, []).append(value)
        for key in BREAKDOWN_KEYS:
            if len(values.get(key, [])) < 2:
                continue  # one value is the family row again
            for value in sorted(values[key], key=_value_order):
                per = pool.by_value[(key, value)]
                cell = {name: _stats(pairs, PAIRED_METRICS[name][1]) for name, pairs in per.items()}
                for stats in cell.values():
                    stats["significant"] = stats["p_value"] < alpha
                breakdowns.append({**head, "key": key, "value": value, "metrics": cell})
    return {
        "baseline": str(baseline.path) if baseline is not None else None,
        "reference": reference,
        "correction": correction,
        "alpha": alpha,
        "tests": tests,
        "cases": rows,
        "families": families,
        "breakdowns": breakdowns,
    }


def compare_to_baseline(
    cases: Iterable[Mapping[str, Any]],
    samples: Mapping[str, Mapping[str, Mapping[str, Any]]],
    baseline: BaselineRun,
    **options: Any,
) -> dict[str, Any]:
    """`build_comparisons` against a baseline only (options: correction, alpha)."""
    result = build_comparisons(cases, samples, baseline=baseline, **options)
    assert result is not None  # a baseline always gives a document
    return result


def _label(row: Mapping[str, Any]) -> str:
    return "the baseline" if row.get("source") == SOURCE_BASELINE else f"the reference {row.get('reference')}"


def regressions(comparisons: Mapping[str, Any] | None, metric: str, margin: float) -> list[dict[str, Any]]:
    """What `--compare-fail METRIC:MARGIN` fails on, over every compared case of `comparisons`.

    A case fails when its pairing is incomplete (reason "unpaired": fewer paired samples than programs), or
    when `metric` got worse by more than `margin` and its p-value, adjusted with the document's correction,
    is below its alpha (reason "regression").

    Returns:
        One dict per failure: source, case, model, reference, reference_case, reason, metric, delta,
        p_value, p_adjusted, correction, alpha, margin, message (one line naming the case and the fix).
    """
    if not comparisons:
        return []
    alpha = float(comparisons.get("alpha", DEFAULT_ALPHA))
    correction = comparisons.get("correction", "none")
    found = []
    for row in comparisons.get("cases", []):
        pairing = row.get("pairing")
        if row.get("note") or pairing is None:
            continue  # not compared: nothing matched, or this case has no samples
        head = {
            "source": row.get("source"),
            "case": row["case"],
            "model": row.get("model"),
            "reference": row.get("reference"),
            "reference_case": row.get("reference_case"),
            "metric": metric,
            "correction": correction,
            "alpha": alpha,
            "margin": margin,
        }
        stats = row.get("metrics", {}).get(metric) or {}
        if not pairing["complete"]:
            found.append(
                {
                    **head,
                    "reason": "unpaired",
                    "delta": stats.get("delta"),
                    "p_value": stats.get("p_value"),
                    "p_adjusted": stats.get("p_adjusted"),
                    "message": f"{row['case']}: only {pairing['paired']} of {pairing['programs']} programs "
                    f"paired with {_label(row)} ({pairing['why']}), so --compare-fail cannot vouch for "
                    f"it; {pairing['fix']}",
                }
            )
            continue
        if not stats.get("n_pairs"):
            continue
        worse_by = -stats["delta"] if stats["higher_is_better"] else stats["delta"]
        p_adjusted = stats.get("p_adjusted")
        p_adjusted = stats["p_value"] if p_adjusted is None else p_adjusted
        if worse_by > margin and p_adjusted < alpha:
            adjusted = "" if correction == "none" else f", {correction}-adjusted {p_adjusted:.3g}"
            found.append(
                {
                    **head,
                    "reason": "regression",
                    "delta": stats["delta"],
                    "p_value": stats["p_value"],
                    "p_adjusted": p_adjusted,
                    "message": f"{row['case']}: {metric} {100 * stats['delta']:+.1f} pp "
                    f"(p={stats['p_value']:.3g}{adjusted}) against {_label(row)} exceeds the allowed "
                    f"{100 * margin:.1f} pp",
                }
            )
    return found


def annotate_gates(gates: Iterable[dict[str, Any]], confidence: float = 0.95) -> None:
    """Add `programs_needed` (pooled) and `programs_per_case` to gates whose interval straddles the bar.

    Both are None elsewhere. The estimate is `debug.stats.programs_to_clear_bar` at the observed rate.
    """
    for gate in gates:
        total = None
        if gate.get("straddles") and gate.get("value") is not None and gate.get("n"):
            total = programs_to_clear_bar(float(gate["value"]), float(gate["bar"]), confidence)
        gate["programs_needed"] = total
        per_case = None if total is None else math.ceil(total / max(1, gate.get("cases") or 1))
        gate["programs_per_case"] = per_case
