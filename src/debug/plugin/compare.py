"""Baseline comparison: cases matched by id, samples paired by program hash, exact McNemar tests.

A case of this run is matched with the baseline case of the same test, task and seq_len. The model part of the
id is ignored, since a swap changes it: the baseline case of the *same* model is preferred, otherwise the
single baseline case of that key; when the baseline ran several other models on it the case is marked
ambiguous.
Samples pair by `program_hash`, so only programs both runs saw count, and each binary per-sample outcome
(`correct`, parse failure) gets an exact McNemar test. Pairs are also pooled per (family, model) for one
family-level test.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from debug.stats import compare_paired

#: Per-sample binary outcomes that can be compared paired, with their direction (True: higher is better).
PAIRED_METRICS: dict[str, tuple[Callable[[Mapping[str, Any]], bool], bool]] = {
    "accuracy": (lambda s: bool(s.get("correct")), True),
    "parse_failure_rate": (lambda s: not s.get("parsed", True), False),
}


class BaselineError(ValueError):
    """The baseline cannot be used; the message is one line that names the fix."""


def pairing_key(program_hash: str, seen: dict[str, int]) -> str:
    """`hash#i` for the i-th sample with this program hash in a case, so duplicate programs still pair 1:1."""
    index = seen.get(program_hash, 0)
    seen[program_hash] = index + 1
    return f"{program_hash}#{index}"


def case_key(case: Mapping[str, Any]) -> tuple[Any, ...]:
    """The model-independent identity of a case: (test name, family, task, seq_len)."""
    info = case.get("info") or {}
    if info.get("task") is None:
        return (str(case["id"]), case.get("family"), None, case.get("seq_len"))
    return (str(case["id"]).split("[", 1)[0], case.get("family"), info.get("task"), case.get("seq_len"))


@dataclass
class Baseline:
    """A loaded baseline run: its results and its per-case samples keyed by program hash."""

    path: Path
    results: dict[str, Any]
    samples: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    @property
    def cases(self) -> list[dict[str, Any]]:
        """The baseline's case records."""
        return list(self.results.get("cases", []))

    @property
    def program_seed(self) -> int | None:
        """The `--program-seed` the baseline ran with, when recorded."""
        return ((self.results.get("run") or {}).get("options") or {}).get("program_seed")


def load_baseline(path: Path) -> Baseline:
    """Read a baseline results.json and the samples.jsonl beside it.

    Raises:
        BaselineError: Missing or corrupt files, or another schema version.
    """
    from debug.report import ReportError, load_results

    try:
        results = load_results(path)
    except ReportError as exc:
        raise BaselineError(f"--baseline: {exc}") from None
    samples_path = path.parent / "samples.jsonl"
    if not samples_path.is_file():
        raise BaselineError(
            f"--baseline: {samples_path} is missing; keep samples.jsonl beside results.json "
            "(pairing needs it)"
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
                samples.setdefault(case_id, {})[key] = row
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise BaselineError(
                    f"--baseline: {samples_path} line {lineno} is corrupt ({type(exc).__name__}); "
                    "rerun the baseline or point --baseline at an intact run"
                ) from None
    return Baseline(path, results, samples)


def match_cases(cases: Iterable[Mapping[str, Any]], baseline: Baseline) -> dict[str, dict[str, Any] | str]:
    """Map each current case id to its baseline case, or to a reason string when none fits."""
    by_key: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for old in baseline.cases:
        by_key.setdefault(case_key(old), []).append(old)
    matched: dict[str, dict[str, Any] | str] = {}
    for case in cases:
        candidates = by_key.get(case_key(case), [])
        same_model = [c for c in candidates if c.get("model") == case.get("model")]
        if len(same_model) == 1:
            matched[case["id"]] = same_model[0]
        elif len(candidates) == 1:
            matched[case["id"]] = candidates[0]
        elif not candidates:
            matched[case["id"]] = "not in baseline"
        else:
            models = ", ".join(sorted(str(c.get("model")) for c in candidates))
            matched[case["id"]] = f"ambiguous: the baseline ran {models} on this case"
    return matched


def compare_to_baseline(
    cases: Iterable[Mapping[str, Any]],
    samples: Mapping[str, Mapping[str, Mapping[str, Any]]],
    baseline: Baseline,
) -> dict[str, Any]:
    """Per-case and per-family paired comparisons against the baseline.

    Args:
        cases: This run's case records.
        samples: This run's samples: case id -> pairing key (`pairing_key`) -> sample record.
        baseline: The loaded baseline.

    Returns:
        {"baseline": path, "cases": [...], "families": [...]} in plain JSON.

    Raises:
        BaselineError: When a matched case shares no program with its baseline case (other programs).
    """
    cases = list(cases)
    matched = match_cases(cases, baseline)
    rows: list[dict[str, Any]] = []
    pools: dict[tuple[str, str, str], dict[str, list[tuple[bool, bool]]]] = {}
    for case in cases:
        old = matched[case["id"]]
        row: dict[str, Any] = {"case": case["id"], "model": case.get("model"), "family": case.get("family")}
        if isinstance(old, str):
            rows.append({**row, "baseline_case": None, "note": old, "metrics": {}})
            continue
        new_samples = samples.get(case["id"], {})
        old_samples = baseline.samples.get(str(old["id"]), {})
        common = sorted(new_samples.keys() & old_samples.keys())
        if new_samples and old_samples and not common:
            raise BaselineError(
                f"--baseline {baseline.path} was measured on other programs: case {case['id']} shares no "
                f"program hash with {old['id']}; rerun the baseline with the same --program-seed and "
                "generator settings"
            )
        metrics = {}
        pool_key = (str(case.get("family")), str(case.get("model")), str(old.get("model")))
        for name, (outcome, higher_is_better) in PAIRED_METRICS.items():
            pairs = [(outcome(old_samples[h]), outcome(new_samples[h])) for h in common]
            pools.setdefault(pool_key, {}).setdefault(name, []).extend(pairs)
            metrics[name] = {**compare_paired(pairs).to_dict(), "higher_is_better": higher_is_better}
        rows.append(
            {
                **row,
                "baseline_case": old["id"],
                "baseline_model": old.get("model"),
                "baseline_fingerprint": old.get("fingerprint"),
                "note": None,
                "metrics": metrics,
            }
        )
    families = [
        {
            "family": family,
            "model": model,
            "baseline_model": old_model,
            "metrics": {
                name: {**compare_paired(pairs).to_dict(), "higher_is_better": PAIRED_METRICS[name][1]}
                for name, pairs in by_metric.items()
            },
        }
        for (family, model, old_model), by_metric in sorted(pools.items())
    ]
    return {"baseline": str(baseline.path), "cases": rows, "families": families}


def regressions(
    comparisons: Mapping[str, Any], metric: str, margin: float, alpha: float = 0.05
) -> list[dict]:
    """Cases whose `metric` got worse by more than `margin` with p < `alpha`.

    Returns:
        One dict per regression: case, delta, p_value, margin.
    """
    found = []
    for row in comparisons.get("cases", []):
        stats = row.get("metrics", {}).get(metric)
        if not stats or not stats["n_pairs"]:
            continue
        worse_by = -stats["delta"] if stats["higher_is_better"] else stats["delta"]
        if worse_by > margin and stats["p_value"] < alpha:
            found.append(
                {
                    "case": row["case"],
                    "metric": metric,
                    "delta": stats["delta"],
                    "p_value": stats["p_value"],
                    "margin": margin,
                }
            )
    return found
