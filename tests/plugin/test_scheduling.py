"""The plugin under pytest-xdist: workers measure, the controller alone writes; a dead worker costs a case."""

from __future__ import annotations

import json

import pytest

import plugin.preload  # noqa: F401  (pytester forgets modules an inner run imports: import the heavy ones once)
from plugin.fakes import FAKE_CONFTEST, FAKE_EVAL

pytest_plugins = ["pytester"]
pytest.importorskip("xdist")


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(FAKE_CONFTEST)
    pytester.makepyfile(test_counting=FAKE_EVAL)
    return pytester


def _results(pytester: pytest.Pytester) -> dict:
    return json.loads((pytester.path / "reports" / "latest" / "results.json").read_text())


@pytest.mark.slow  # starts two xdist workers (~10 s on two shared cores)
def test_two_workers_deliver_every_measurement_grouped_by_model(project: pytest.Pytester) -> None:
    result = project.runpytest(
        "-n", "2", "--model", "good", "--model", "bad", "--num-seqs", "15", "--seq-lens", "2,3,4"
    )
    result.assert_outcomes(passed=6)
    results = _results(project)
    cases = results["cases"]
    assert len(cases) == 6 and all(c["metrics"]["accuracy"]["n"] == 15 for c in cases)
    workers = {}
    for case in cases:
        workers.setdefault(case["model"], set()).add(case["info"]["worker"])
    assert all(len(w) == 1 for w in workers.values())  # each model measured (and loaded) on one worker
    assert all(w.pop().startswith("gw") for w in workers.values())
    samples = (project.path / "reports" / "latest" / "samples.jsonl").read_text().splitlines()
    assert len(samples) == 6 * 15
    run_dirs = [p for p in (project.path / "reports").iterdir() if p.name != "latest"]
    assert len(run_dirs) == 1  # only the controller writes
    assert all(c["id"].startswith("test_counting[") and "@" not in c["id"] for c in cases)


@pytest.mark.slow  # starts three xdist workers
def test_a_dead_worker_loses_only_its_case(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_counting=FAKE_EVAL.replace(
            "    measure.evaluate(debug_case, debug_model)",
            "    import os\n"
            "    if debug_case.model == 'crash' and debug_case.seq_len == 2:\n"
            "        os._exit(1)\n"
            "    measure.evaluate(debug_case, debug_model)",
        )
    )
    result = project.runpytest("-n", "2", "--model", "good", "--model", "crash", "--num-seqs", "5")
    assert result.ret != 0
    results = _results(project)
    measured = {c["id"] for c in results["cases"] if c["outcome"] == "passed"}
    assert {"test_counting[good-COUNT-2]", "test_counting[good-COUNT-4]"} <= measured
    crashed = [e for e in results["errors"] if "crash-COUNT-2" in e["nodeid"]]
    assert crashed and "crash" in crashed[0]["message"].lower()
