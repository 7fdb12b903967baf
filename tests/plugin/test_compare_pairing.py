"""The comparison path on hand-made cases and samples: pairing, Holm decisions, unpaired cases, breakdowns."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from debug.plugin.compare import (
    BaselineRun,
    annotate_gates,
    build_comparisons,
    parse_alpha,
    parse_fail_rule,
    regressions,
)
from debug.stats import holm_adjust, mcnemar_exact, mcnemar_programs_needed, programs_to_clear_bar


def _case(model: str, seq_len: int, n: int, task: str = "T") -> dict[str, Any]:
    return {
        "id": f"test_fam[{model}-{task}-{seq_len}]",
        "model": model,
        "family": "fam",
        "seq_len": seq_len,
        "info": {"task": task},
        "outcome": "passed",
        "metrics": {"accuracy": {"value": None, "k": None, "n": n}},
    }


def _samples(outcomes: list[bool], *, start: int = 0, meta: list[dict] | None = None) -> dict[str, dict]:
    """Pairing key -> sample fields for programs start, start + 1, ...; outcome i is `outcomes[i]`."""
    return {
        f"h{start + i}#0": {"correct": ok, "parsed": True, "metadata": (meta[i] if meta else {})}
        for i, ok in enumerate(outcomes)
    }


def _discordant(b: int, c: int, n: int) -> tuple[list[bool], list[bool]]:
    """Reference and new outcomes over n programs: b only the reference right, c only the new one."""
    ref = [True] * b + [False] * c + [True] * (n - b - c)
    new = [False] * b + [True] * c + [True] * (n - b - c)
    return ref, new


def test_holm_decides_where_raw_p_values_would_fail_the_run() -> None:
    """Two cases each with 6 programs only the reference got right (and none the other way), 20 pairs.

    Each raw McNemar p-value is 2 * 0.5**6 = 0.03125 < 0.05, a -30 pp drop; Holm over the two compared
    cases multiplies the smaller by 2: both adjusted p-values are 0.0625, so Holm fails nothing.
    """
    cases, samples = [], {}
    for seq_len in (4, 8):
        ref_ok, new_ok = _discordant(6, 0, 20)
        for model, outcomes in (("A", ref_ok), ("B", new_ok)):
            case = _case(model, seq_len, 20)
            cases.append(case)
            samples[case["id"]] = _samples(outcomes)
    holm = build_comparisons(cases, samples, reference="A")
    assert holm is not None and holm["correction"] == "holm" and holm["tests"]["accuracy"] == 2
    rows = holm["cases"]
    assert [(r["source"], r["model"], r["reference"]) for r in rows] == [("run", "B", "A")] * 2
    acc = rows[0]["metrics"]["accuracy"]
    assert acc["p_value"] == pytest.approx(mcnemar_exact(6, 0)) == pytest.approx(0.03125)
    assert acc["p_adjusted"] == pytest.approx(0.0625) and not acc["significant"]
    assert acc["delta"] == pytest.approx(-0.3) and acc["low"] < -0.3 < acc["high"] < 0
    assert regressions(holm, "accuracy", 0.02) == []
    raw = build_comparisons(cases, samples, reference="A", correction="none")
    failed = regressions(raw, "accuracy", 0.02)
    assert [f["case"] for f in failed] == ["test_fam[B-T-4]", "test_fam[B-T-8]"]
    assert failed[0]["reason"] == "regression" and failed[0]["p_adjusted"] == pytest.approx(0.03125)
    assert "against the reference A" in failed[0]["message"] and "\n" not in failed[0]["message"]
    # A not-yet-significant delta says how many programs per case would decide it.
    expected = mcnemar_programs_needed(6 / 20, -0.3, 0.05, 0.8)
    assert acc["needed_per_case"] == expected
    family = holm["families"][0]
    assert family["cases"] == 2 and family["metrics"]["accuracy"]["n_pairs"] == 40
    assert family["metrics"]["accuracy"]["p_value"] == pytest.approx(mcnemar_exact(12, 0))


def test_holm_over_many_cases_matches_holm_adjust() -> None:
    cases, samples = [], {}
    for seq_len, (b, c) in zip((2, 3, 4, 5), ((7, 0), (1, 2), (9, 1), (3, 3))):
        ref_ok, new_ok = _discordant(b, c, 30)
        for model, outcomes in (("A", ref_ok), ("B", new_ok)):
            case = _case(model, seq_len, 30)
            cases.append(case)
            samples[case["id"]] = _samples(outcomes)
    rows = build_comparisons(cases, samples, reference="A")["cases"]
    raw = [r["metrics"]["accuracy"]["p_value"] for r in rows]
    assert [r["metrics"]["accuracy"]["p_adjusted"] for r in rows] == pytest.approx(holm_adjust(raw))


def _baseline(cases: list[dict], samples: dict) -> BaselineRun:
    return BaselineRun(Path("old/results.json"), {"cases": cases, "run": {}}, samples)


@pytest.mark.parametrize(
    ("ref_n", "ref_samples", "why", "fix"),
    [
        (
            10,
            _samples([True] * 6),
            "4 of the baseline case's 10 samples are missing from its samples.jsonl",
            "restore",
        ),
        (
            10,
            {**_samples([True] * 7), **_samples([True] * 3, start=20)},
            "3 with different program hashes",
            "same --program-seed",
        ),
        (5, _samples([True] * 5), "the baseline measured only 5 programs", "same --num-seqs"),
    ],
)
def test_incomplete_pairing_is_marked_and_fails_compare_fail(
    ref_n: int, ref_samples: dict, why: str, fix: str
) -> None:
    old = _case("A", 4, ref_n)
    new = _case("A", 4, 10)
    comparisons = build_comparisons(
        [new], {new["id"]: _samples([True] * 10)}, baseline=_baseline([old], {old["id"]: ref_samples})
    )
    row = comparisons["cases"][0]
    assert row["source"] == "baseline" and row["reference_case"] == old["id"]
    pairing = row["pairing"]
    assert not pairing["complete"] and pairing["programs"] == 10 and pairing["why"] == why
    assert pairing["paired"] == row["metrics"]["accuracy"]["n_pairs"] < 10
    (failure,) = regressions(comparisons, "accuracy", 0.02)
    assert failure["reason"] == "unpaired" and failure["case"] == new["id"]
    message = failure["message"]
    assert "\n" not in message and message.startswith(f"{new['id']}: only {pairing['paired']} of 10")
    assert why in message and fix in message


def test_unmatched_cases_are_noted_not_failed() -> None:
    old = _case("A", 4, 10)
    new = _case("A", 9, 10)
    comparisons = build_comparisons(
        [new],
        {new["id"]: _samples([True] * 10)},
        baseline=_baseline([old], {old["id"]: _samples([True] * 10)}),
    )
    assert comparisons["cases"][0]["note"] == "not in baseline"
    assert regressions(comparisons, "accuracy", 0.0) == []


def test_breakdown_shows_which_programs_were_lost() -> None:
    """The new model loses every 4-hop program; the family row averages it away, the breakdown does not."""
    meta = [{"hops": 1 + i % 4, "root_line": 1 + i % 3, "seq_len": 8} for i in range(40)]
    ref = _case("A", 8, 40)
    new = _case("B", 8, 40)
    samples = {
        ref["id"]: _samples([True] * 40, meta=meta),
        new["id"]: _samples([m["hops"] != 4 for m in meta], meta=meta),
    }
    comparisons = build_comparisons([ref, new], samples, reference="A")
    rows = {(b["key"], b["value"]): b["metrics"]["accuracy"] for b in comparisons["breakdowns"]}
    assert {key for key, _ in rows} == {"hops", "root_line"}  # one seq_len: nothing to break down
    assert rows[("hops", 4)]["delta"] == -1.0 and rows[("hops", 4)]["n_pairs"] == 10
    assert rows[("hops", 4)]["significant"] and rows[("hops", 4)]["p_value"] == pytest.approx(2 * 0.5**10)
    assert all(rows[("hops", h)]["delta"] == 0.0 for h in (1, 2, 3))
    assert [v for k, v in rows if k == "hops"] == [1, 2, 3, 4]


def test_annotate_gates_estimates_programs_only_where_the_interval_straddles() -> None:
    gates = [
        {"value": 0.95, "bar": 0.93, "straddles": True, "n": 120, "cases": 2},
        {"value": 0.5, "bar": 0.9, "straddles": False, "n": 120, "cases": 2},
        {"value": -0.3, "bar": -0.5, "straddles": False, "n": None, "cases": 1},
    ]
    annotate_gates(gates)
    total = programs_to_clear_bar(0.95, 0.93)
    assert gates[0]["programs_needed"] == total and gates[0]["programs_per_case"] == math.ceil(total / 2)
    assert gates[1]["programs_needed"] is None and gates[2]["programs_per_case"] is None


def test_rule_and_alpha_errors_name_the_flag() -> None:
    assert parse_fail_rule("accuracy:2pp") == ("accuracy", pytest.approx(0.02))
    with pytest.raises(ValueError, match=r"^--fail takes METRIC:MARGIN"):
        parse_fail_rule("accuracy>2", "--fail")
    assert parse_alpha("0.01") == 0.01
    for bad in ("0", "0.7", "nan", "x"):
        with pytest.raises(ValueError, match=r"^--compare-alpha takes a number in \[1e-06, 0.5\]"):
            parse_alpha(bad)
