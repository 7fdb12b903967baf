"""Swap-and-compare: baselines paired by program hash, exact McNemar, --compare-fail, bad baselines."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from debug.plugin.testing import FAKE_CONFTEST, FAKE_EVAL
from debug.stats import mcnemar_exact

pytest_plugins = ["pytester"]
PRELOAD = pytest.importorskip("debug.plugin.preload")


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
    assert row["baseline_case"] == "test_counting[good-COUNT-2]" and row["baseline_model"] == "good"
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
    assert "Comparison with baseline" in html


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
