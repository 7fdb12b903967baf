"""Swap-and-compare: baselines paired by program hash, exact McNemar, --compare-fail, bad baselines."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest

import plugin.preload  # noqa: F401  (pytester forgets modules an inner run imports: import the heavy ones once)
from debug.stats import holm_adjust, mcnemar_exact, programs_to_clear_bar
from plugin.fakes import FAKE_CONFTEST, FAKE_EVAL

pytest_plugins = ["pytester"]


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(FAKE_CONFTEST)
    pytester.makepyfile(test_counting=FAKE_EVAL)
    return pytester


def _run_baseline(project: pytest.Pytester, model: str = "good", *extra: str) -> Path:
    result = project.runpytest("--model", model, "--num-seqs", "60", *extra)
    assert result.ret == 0
    saved = project.path / "baseline"
    shutil.copytree(project.path / "reports" / "latest", saved)
    return saved / "results.json"


def _latest(project: pytest.Pytester) -> dict:
    return json.loads((project.path / "reports" / "latest" / "results.json").read_text())


def _literal(text: str) -> str:
    """`text` as an fnmatch pattern that matches it literally ([ and ] are character classes there)."""
    return re.sub(r"[\[\]]", lambda m: f"[{m.group()}]", text)


def test_swap_models_gives_paired_deltas_and_pooled_family_test(project: pytest.Pytester) -> None:
    baseline = _run_baseline(project)
    result = project.runpytest("--model", "bad", "--num-seqs", "60", "--baseline", str(baseline))
    assert result.ret == 0  # without --compare-fail a drop is reported, not enforced
    result.stdout.fnmatch_lines(
        [
            "*test_counting[[]bad-COUNT-2[]]*pp (p=*",
            "counting: bad vs baseline good: -*pp over 120 paired programs*",
        ]
    )
    comparisons = _latest(project)["comparisons"]
    rows = {r["case"]: r for r in comparisons["cases"]}
    row = rows["test_counting[bad-COUNT-2]"]
    assert row["reference_case"] == "test_counting[good-COUNT-2]" and row["reference"] == "good"
    assert row["source"] == "baseline" and row["model"] == "bad"
    assert row["pairing"] == {
        "paired": 60,
        "programs": 60,
        "reference_programs": 60,
        "reference_samples": 60,
        "complete": True,
        "why": None,
        "fix": None,
    }
    acc = row["metrics"]["accuracy"]
    assert acc["n_pairs"] == 60 and acc["delta"] < 0
    assert acc["p_value"] == pytest.approx(mcnemar_exact(acc["base_only"], acc["new_only"]))
    # Recompute the pairing from the two samples files: program hash by program hash.
    old = [json.loads(x) for x in (baseline.parent / "samples.jsonl").read_text().splitlines()]
    new = [json.loads(x) for x in (project.path / "reports/latest/samples.jsonl").read_text().splitlines()]
    old_ok = [s["correct"] for s in old if s["case"] == "test_counting[good-COUNT-2]"]
    new_ok = [s["correct"] for s in new if s["case"] == "test_counting[bad-COUNT-2]"]
    assert acc["base_only"] == sum(o and not n for o, n in zip(old_ok, new_ok))
    assert acc["new_only"] == sum(n and not o for o, n in zip(old_ok, new_ok))
    family = comparisons["families"][0]
    assert family["family"] == "counting" and family["metrics"]["accuracy"]["n_pairs"] == 120
    pooled_b = sum(r["metrics"]["accuracy"]["base_only"] for r in comparisons["cases"])
    assert family["metrics"]["accuracy"]["base_only"] == pooled_b
    html = (project.path / "reports" / "latest" / "report.html").read_text()
    assert 'id="comparisons-heading"' in html and 'id="comparison-grid"' in html


def test_compare_fail_sets_the_exit_code_only_for_significant_drops(project: pytest.Pytester) -> None:
    baseline = _run_baseline(project)
    worse = project.runpytest(
        "--model", "bad", "--num-seqs", "60", "--baseline", str(baseline), "--compare-fail", "accuracy:2pp"
    )
    assert worse.ret == pytest.ExitCode.TESTS_FAILED
    worse.assert_outcomes(passed=2)
    worse.stdout.fnmatch_lines(["*REGRESSION test_counting[[]bad-COUNT-2[]]: accuracy -*pp (p=*"])
    assert len(_latest(project)["regressions"]) == 2
    same = project.runpytest(
        "--model", "good", "--num-seqs", "60", "--baseline", str(baseline), "--compare-fail", "accuracy:2pp"
    )
    assert same.ret == pytest.ExitCode.OK
    rows = _latest(project)["comparisons"]["cases"]
    assert all(r["metrics"]["accuracy"]["delta"] == 0 for r in rows)
    # A huge margin tolerates the drop.
    tolerant = project.runpytest(
        "--model", "bad", "--num-seqs", "60", "--baseline", str(baseline), "--compare-fail", "accuracy:0.9"
    )
    assert tolerant.ret == pytest.ExitCode.OK


def test_fewer_programs_pair_on_the_common_ones(project: pytest.Pytester) -> None:
    baseline = _run_baseline(project)
    result = project.runpytest("--model", "bad", "--num-seqs", "20", "--baseline", str(baseline))
    assert result.ret == 0
    rows = _latest(project)["comparisons"]["cases"]
    assert {r["metrics"]["accuracy"]["n_pairs"] for r in rows} == {20}


def test_new_cases_are_marked_not_in_baseline(project: pytest.Pytester) -> None:
    baseline = _run_baseline(project)
    result = project.runpytest(
        "--model", "good", "--num-seqs", "10", "--seq-lens", "2,9", "--baseline", str(baseline)
    )
    assert result.ret == 0
    rows = {r["case"]: r for r in _latest(project)["comparisons"]["cases"]}
    assert rows["test_counting[good-COUNT-9]"]["note"] == "not in baseline"


def test_baseline_from_other_programs_is_refused(project: pytest.Pytester) -> None:
    baseline = _run_baseline(project)
    project.makepyfile(test_counting=FAKE_EVAL.replace("parser=int)", 'parser=int, knobs={"step": 3})'))
    result = project.runpytest("--model", "bad", "--num-seqs", "10", "--baseline", str(baseline))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stdout.fnmatch_lines(["*was measured on other programs*same --program-seed*"])
    other_seed = project.runpytest("--model", "bad", "--program-seed", "7", "--baseline", str(baseline))
    assert other_seed.ret == pytest.ExitCode.USAGE_ERROR
    other_seed.stderr.fnmatch_lines(["ERROR: --baseline * ran with --program-seed 0, this run with 7*"])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("missing", "*does not exist; pass the results.json of an earlier run*"),
        ("corrupt", "*is not valid JSON*"),
        ("schema", "*has schema_version 999, but this debug reads version 1 only*"),
        ("no-samples", "*samples.jsonl is missing; keep samples.jsonl beside results.json*"),
        ("bad-samples", "*samples.jsonl line 1 is corrupt*"),
    ],
)
def test_bad_baselines_give_one_line_errors(project: pytest.Pytester, damage: str, message: str) -> None:
    baseline = _run_baseline(project)
    if damage == "missing":
        baseline = baseline.parent / "nope.json"
    elif damage == "corrupt":
        baseline.write_text('{"schema_version": 1, "cases": [')
    elif damage == "schema":
        data = json.loads(baseline.read_text())
        data["schema_version"] = 999
        baseline.write_text(json.dumps(data))
    elif damage == "no-samples":
        (baseline.parent / "samples.jsonl").unlink()
    else:
        (baseline.parent / "samples.jsonl").write_text("{not json\n")
    result = project.runpytest("--model", "good", "--baseline", str(baseline))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: --baseline: {message}"])
    assert len([ln for ln in result.stderr.lines if ln.strip()]) == 1


def test_two_models_in_one_run_are_compared_with_the_reference(project: pytest.Pytester) -> None:
    result = project.runpytest(
        "--model", "good", "--model", "bad", "--num-seqs", "60", "--gate", "good:accuracy>=0.93"
    )
    assert result.ret == 0  # without --compare-fail a drop is reported, not enforced
    result.stdout.fnmatch_lines(
        [
            "case * accuracy [[]95% CI[]] * vs good * gate",
            "*test_counting[[]bad-COUNT-2[]] * pp (p=*, holm *)*",
            "*test_counting[[]good-COUNT-2[]] * reference *",
            "counting: bad vs reference good: -*pp over 120 paired programs (95% CI -* to -* pp; *",
        ]
    )
    data = _latest(project)
    comparisons = data["comparisons"]
    assert comparisons["reference"] == "good" and comparisons["baseline"] is None
    assert comparisons["correction"] == "holm" and comparisons["alpha"] == 0.05
    rows = comparisons["cases"]
    assert [(r["source"], r["model"], r["reference"]) for r in rows] == [("run", "bad", "good")] * 2
    samples = [
        json.loads(x) for x in (project.path / "reports/latest/samples.jsonl").read_text().splitlines()
    ]
    for row in rows:
        assert row["reference_case"] == row["case"].replace("bad-", "good-")
        assert row["pairing"]["complete"] and row["pairing"]["paired"] == 60
        # Both models scored the same programs in the same order: pair them by position.
        ref = [s["correct"] for s in samples if s["case"] == row["reference_case"]]
        new = [s["correct"] for s in samples if s["case"] == row["case"]]
        acc = row["metrics"]["accuracy"]
        assert acc["base_only"] == sum(r and not n for r, n in zip(ref, new))
        assert acc["new_only"] == sum(n and not r for r, n in zip(ref, new))
    raw = [r["metrics"]["accuracy"]["p_value"] for r in rows]
    assert [r["metrics"]["accuracy"]["p_adjusted"] for r in rows] == pytest.approx(holm_adjust(raw))
    breakdown = {(b["key"], b["value"]) for b in comparisons["breakdowns"]}
    assert breakdown == {("seq_len", 2), ("seq_len", 4)}
    # The gate's interval straddles its bar: the report says how many programs would decide it.
    (gate,) = data["gates"]
    assert gate["model"] == "good" and gate["straddles"] and gate["status"] == "pass"
    per_case = math.ceil(programs_to_clear_bar(gate["value"], 0.93) / gate["cases"])
    assert gate["programs_per_case"] == per_case
    result.stdout.fnmatch_lines(
        [f"PASS *straddles the bar (about {per_case} programs per case would decide it)"]
    )
    html = (project.path / "reports" / "latest" / "report.html").read_text()
    for anchor in (
        'id="comparison-grid"',
        'id="comparison-cases"',
        'id="breakdowns"',
        "Holm&#39;s step-down",
    ):
        assert anchor in html


def test_compare_fail_decides_within_a_run(project: pytest.Pytester) -> None:
    worse = project.runpytest(
        "--model", "good", "--model", "bad", "--num-seqs", "60", "--compare-fail", "accuracy:2pp"
    )
    assert worse.ret == pytest.ExitCode.TESTS_FAILED
    worse.stdout.fnmatch_lines(
        [
            "REGRESSION test_counting[[]bad-COUNT-2[]]: accuracy -*pp (p=*, holm-adjusted *) against the "
            "reference good exceeds the allowed 2.0 pp"
        ]
    )
    found = _latest(project)["regressions"]
    assert {(r["reason"], r["model"], r["reference"], r["correction"]) for r in found} == {
        ("regression", "bad", "good", "holm")
    }
    better = project.runpytest(
        "--model", "good", "--model", "bad", "--reference", "bad", "--num-seqs", "60",
        "--compare-fail", "accuracy:2pp", "--compare-correction", "none",
    )  # fmt: skip
    assert better.ret == pytest.ExitCode.OK
    comparisons = _latest(project)["comparisons"]
    assert comparisons["reference"] == "bad" and comparisons["correction"] == "none"
    assert all(r["model"] == "good" and r["metrics"]["accuracy"]["delta"] > 0 for r in comparisons["cases"])
    assert all(
        r["metrics"]["accuracy"]["p_adjusted"] == r["metrics"]["accuracy"]["p_value"]
        for r in comparisons["cases"]
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--model", "good", "--model", "bad", "--reference", "other"],
            "ERROR: --reference names the model the others are compared with and must be one of the --model "
            "values (good, bad); got 'other'",
        ),
        (
            ["--model", "good", "--reference", "good"],
            "ERROR: --reference good needs a second --model to compare with it, e.g. --model good --model *",
        ),
        (
            ["--model", "good", "--compare-fail", "accuracy:2pp"],
            "ERROR: --compare-fail needs something to compare with: --baseline PATH * or a second --model",
        ),
        (
            ["--model", "good", "--model", "bad", "--compare-alpha", "0.9"],
            "ERROR: --compare-alpha takes a number in [[]1e-06, 0.5[]], e.g. --compare-alpha 0.05; got '0.9'",
        ),
    ],
)
def test_bad_comparison_options_give_one_line_errors(
    project: pytest.Pytester, args: list[str], message: str
) -> None:
    result = project.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert len([ln for ln in result.stderr.lines if ln.strip()]) == 1


def test_a_truncated_baseline_cannot_pass_compare_fail(project: pytest.Pytester) -> None:
    baseline = _run_baseline(project)
    samples_path = baseline.parent / "samples.jsonl"
    lines = samples_path.read_text().splitlines(keepends=True)
    assert len(lines) == 120
    samples_path.write_text("".join(lines[:90]))  # the first lines kept: one case whole, one cut at 30 of 60
    cut = json.loads(lines[89])["case"]
    assert json.loads(lines[0])["case"] != cut
    strict = project.runpytest(
        "--model", "good", "--num-seqs", "60", "--baseline", str(baseline), "--compare-fail", "accuracy:2pp"
    )
    assert strict.ret == pytest.ExitCode.TESTS_FAILED
    strict.stdout.fnmatch_lines(
        [
            _literal(
                f"UNPAIRED {cut}: only 30 of 60 programs paired with the baseline (30 of the baseline "
                "case's 60 samples are missing from its samples.jsonl), so --compare-fail cannot vouch for "
                "it; restore the baseline's samples.jsonl or rerun it"
            )
        ]
    )
    data = _latest(project)
    (failure,) = data["regressions"]
    assert failure["reason"] == "unpaired" and failure["case"] == cut
    row = next(r for r in data["comparisons"]["cases"] if r["case"] == cut)
    assert row["pairing"]["paired"] == 30 and not row["pairing"]["complete"]
    assert row["pairing"]["reference_programs"] == 60 and row["pairing"]["reference_samples"] == 30
    # Without --compare-fail the run passes, and the table still says how few programs paired.
    plain = project.runpytest("--model", "good", "--num-seqs", "60", "--baseline", str(baseline))
    assert plain.ret == pytest.ExitCode.OK
    plain.stdout.fnmatch_lines([_literal(cut) + " * +0.0 pp (p=1, holm 1); only 30/60 paired *"])


BINDING_CONFTEST = """
import pytest
from debug.plugin.testing import FakeBackend


class LosesFourHops(FakeBackend):
    def score(self, loaded, programs, template, *, parser=None):
        samples = super().score(loaded, programs, template, parser=parser)
        if loaded.model_id == "loses-4-hops":
            for sample, program in zip(samples, programs):
                if program.metadata["hops"] == 4:
                    sample.update(raw_output="?", predicted_answer=None, correct=False)
        return samples


@pytest.fixture(scope="session")
def debug_backend():
    return LosesFourHops({"steady": 1.0, "loses-4-hops": 1.0})
"""

BINDING_EVAL = """
from debug.plugin import Task

TASKS = [Task("BIND", generator="make_variable_binding_program", prompt="{code}", seq_lens=(8,))]


def test_binding(debug_case, debug_model, measure):
    measure.evaluate(debug_case, debug_model)
"""


def test_the_breakdown_shows_a_swap_that_loses_four_hop_programs(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(BINDING_CONFTEST)
    pytester.makepyfile(test_swap_binding=BINDING_EVAL)  # the suite already has a module test_binding
    result = pytester.runpytest("--model", "steady", "--model", "loses-4-hops", "--num-seqs", "80")
    assert result.ret == 0
    comparisons = _latest(pytester)["comparisons"]
    hops = {b["value"]: b["metrics"]["accuracy"] for b in comparisons["breakdowns"] if b["key"] == "hops"}
    assert sorted(hops) == [1, 2, 3, 4]
    assert hops[4]["delta"] == -1.0 and hops[4]["significant"] and hops[4]["n_pairs"] >= 10
    assert all(hops[h]["delta"] == 0.0 for h in (1, 2, 3))
    root_lines = [b["value"] for b in comparisons["breakdowns"] if b["key"] == "root_line"]
    assert len(root_lines) > 1 and root_lines == sorted(root_lines)
    html = (pytester.path / "reports" / "latest" / "report.html").read_text()
    assert 'id="breakdowns"' in html and "<td>hops</td>" in html
