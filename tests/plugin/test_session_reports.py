"""Every run with eval cases writes a report, even when no case measured anything; `latest` is never stale."""

from __future__ import annotations

import json
import os

import pytest

import plugin.preload  # noqa: F401  (pytester forgets modules an inner run imports: import the heavy ones once)
from plugin.fakes import FAKE_CONFTEST, FAKE_EVAL

pytest_plugins = ["pytester"]

RAISES = FAKE_EVAL.replace(
    "    measure.evaluate(debug_case, debug_model)", "    raise RuntimeError('the eval itself is broken')"
)
CRASHES = FAKE_EVAL.replace("    measure.evaluate(debug_case, debug_model)", "    import os\n    os._exit(3)")


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(FAKE_CONFTEST)
    pytester.makepyfile(test_counting=FAKE_EVAL)
    return pytester


def _latest(pytester: pytest.Pytester) -> tuple[str, dict, str]:
    latest = pytester.path / "reports" / "latest"
    results = json.loads((latest / "results.json").read_text())
    return os.readlink(latest), results, (latest / "report.html").read_text()


def _previous_run(project: pytest.Pytester) -> str:
    assert project.runpytest("--model", "good", "--num-seqs", "3").ret == 0
    name, results, _ = _latest(project)
    assert results["run"]["status"] == "finished" and results["run"]["note"] is None
    return name


def test_a_run_whose_every_case_raises_still_reports(project: pytest.Pytester) -> None:
    before = _previous_run(project)
    project.makepyfile(test_counting=RAISES)
    result = project.runpytest("--model", "good", "--num-seqs", "3")
    result.assert_outcomes(failed=2)
    name, results, html = _latest(project)
    assert name != before and results["run"]["id"] == name
    assert [c["outcome"] for c in results["cases"]] == ["failed", "failed"]
    assert all("the eval itself is broken" in c["error"] for c in results["cases"])
    assert results["run"]["status"] == "finished"
    assert "no measurement was recorded" in results["run"]["note"]
    assert 'id="run-note"' in html and "no measurement was recorded" in html
    result.stdout.fnmatch_lines(["*debug: no measurement was recorded*"])


@pytest.mark.slow  # starts an xdist worker (and its replacement)
def test_a_run_whose_only_case_crashes_its_worker_still_reports(project: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    before = _previous_run(project)
    project.makepyfile(test_counting=CRASHES)
    result = project.runpytest(
        "-p", "xdist", "-n", "1", "--model", "good", "--num-seqs", "3", "--seq-lens", "2"
    )
    assert result.ret != 0
    name, results, html = _latest(project)
    assert name != before and results["cases"] == []
    assert results["errors"][0]["nodeid"].endswith("test_counting[good-COUNT-2]")
    assert "crashed" in results["errors"][0]["message"]
    assert "no measurement was recorded" in results["run"]["note"] and "no measurement" in html


def test_a_run_killed_mid_case_leaves_latest_at_itself(project: pytest.Pytester) -> None:
    before = _previous_run(project)
    project.makepyfile(test_counting=CRASHES)
    # In-process os._exit ends the whole pytest process: nothing after collection gets to write.
    result = project.runpytest_subprocess("--model", "good", "--num-seqs", "3", "--seq-lens", "2")
    assert result.ret == 3
    name, results, html = _latest(project)
    assert name != before and results["run"]["status"] == "running" and results["run"]["finished"] is None
    assert "has not finished" in results["run"]["note"] and "has not finished" in html


def test_runs_without_eval_cases_write_nothing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain="def test_fails():\n    assert False\n")
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    assert not (pytester.path / "reports").exists()


def test_only_eval_case_ids_start_a_report() -> None:
    """Under xdist the controller sees node ids only: a harness test parametrized by a model id is no case."""
    from types import SimpleNamespace

    from debug.plugin.session import DebugSession

    session = SimpleNamespace(_labels=["embedded:binder"])
    assert DebugSession._is_case_id(session, "evals/test_x.py::test_x[embedded:binder-VARIABLE_BINDING-16]")
    assert not DebugSession._is_case_id(session, "tests/train/test_card.py::test_card[embedded:binder-4l]")
    assert not DebugSession._is_case_id(session, "tests/test_x.py::test_plain")
