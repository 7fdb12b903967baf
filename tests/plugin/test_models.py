"""The plugin on a real (tiny, random) model: scoring, the answer cache, --no-cache, a killed run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import plugin.preload  # noqa: F401  (pytester forgets modules an inner run imports: import the heavy ones once)

pytest_plugins = ["pytester"]

EVAL = """
import os
from debug.plugin import Task

TASKS = [Task("VARIABLE_BINDING", generator="make_variable_binding_program", prompt="VARIABLE_BINDING",
              seq_lens=(4, 6))]


def test_variable_binding(debug_case, debug_model, measure):
    if os.environ.get("KILL_AT_SEQ_LEN") == str(debug_case.seq_len):
        os.kill(os.getpid(), 9)
    measure.evaluate(debug_case, debug_model)
"""


@pytest.fixture(autouse=True)
def _cache_in_the_test_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each pytester run's answer cache must live in its own rootdir, not in a shared $DEBUG_CACHE_DIR.
    monkeypatch.delenv("DEBUG_CACHE_DIR", raising=False)


def _samples(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]


def test_real_model_run_then_cached_rerun_then_no_cache(
    pytester: pytest.Pytester, tiny_qwen3_dir: Path
) -> None:
    pytester.makepyfile(test_variable_binding=EVAL)
    args = [
        "--model",
        str(tiny_qwen3_dir),
        "--num-seqs",
        "6",
        "-p",
        "no:cacheprovider",
        f"--rootdir={pytester.path}",
    ]
    first = pytester.runpytest(*args)
    first.assert_outcomes(passed=2)
    latest = pytester.path / "reports" / "latest"
    results = json.loads((latest / "results.json").read_text())
    case = results["cases"][0]
    assert case["id"] == "test_variable_binding[tiny-qwen30-VARIABLE_BINDING-4]"
    assert case["fingerprint"] and results["run"]["models"][0]["fingerprint"] == case["fingerprint"]
    assert case["metrics"]["accuracy"]["n"] == 6
    assert case["metrics"]["mean_logprob"]["value"] < 0
    first_samples = _samples(latest)
    assert len(first_samples) == 12 and not any(s["cached"] for s in first_samples)
    assert all(s["prompt_hash"] and s["fingerprint"] == case["fingerprint"] for s in first_samples)

    second = pytester.runpytest(*args)
    second.assert_outcomes(passed=2)
    second_samples = _samples(latest)
    assert all(s["cached"] for s in second_samples)
    assert [s["output"] for s in second_samples] == [s["output"] for s in first_samples]

    third = pytester.runpytest(*args, "--no-cache")
    third.assert_outcomes(passed=2)
    assert not any(s["cached"] for s in _samples(latest))


@pytest.mark.slow  # a subprocess that imports torch, then an in-process rerun
def test_a_killed_run_keeps_finished_samples_and_a_rerun_reuses_them(
    pytester: pytest.Pytester, tiny_qwen3_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_variable_binding=EVAL)
    args = [
        "--model",
        str(tiny_qwen3_dir),
        "--num-seqs",
        "5",
        "-p",
        "no:cacheprovider",
        f"--rootdir={pytester.path}",
    ]
    monkeypatch.setenv("KILL_AT_SEQ_LEN", "6")
    killed = pytester.runpytest_subprocess(*args)
    assert killed.ret != 0
    run_dirs = [p for p in (pytester.path / "reports").iterdir() if p.name != "latest"]
    assert len(run_dirs) == 1
    # The placeholder written at the start says the run never finished; `latest` points at it, not at an
    # older run.
    placeholder = json.loads((run_dirs[0] / "results.json").read_text())
    assert placeholder["run"]["status"] == "running" and placeholder["cases"] == []
    assert (pytester.path / "reports" / "latest").resolve() == run_dirs[0].resolve()
    kept = _samples(run_dirs[0])
    assert len(kept) == 5 and {s["case"] for s in kept} == {
        "test_variable_binding[tiny-qwen30-VARIABLE_BINDING-4]"
    }
    monkeypatch.delenv("KILL_AT_SEQ_LEN")
    rerun = pytester.runpytest(*args)
    rerun.assert_outcomes(passed=2)
    samples = _samples(pytester.path / "reports" / "latest")
    finished_before = [s for s in samples if s["seq_len"] == 4]
    assert all(s["cached"] for s in finished_before)
    assert not any(s["cached"] for s in samples if s["seq_len"] == 6)


def test_a_model_that_fails_to_load_errors_only_its_cases(
    pytester: pytest.Pytester, tiny_qwen3_dir: Path
) -> None:
    pytester.makepyfile(test_variable_binding=EVAL)
    result = pytester.runpytest(
        "--model",
        "embedded:no-such-model",
        "--model",
        str(tiny_qwen3_dir),
        "--num-seqs",
        "3",
        "-p",
        "no:cacheprovider",
        f"--rootdir={pytester.path}",
    )
    result.assert_outcomes(passed=2, errors=2)
    cases = json.loads((pytester.path / "reports" / "latest" / "results.json").read_text())["cases"]
    broken = [c for c in cases if c["model"] == "embedded:no-such-model"]
    assert len(broken) == 2 and all(c["outcome"] == "error" for c in broken)
    assert all("failed to load" in c["error"] and "\n" not in c["error"] for c in broken)
