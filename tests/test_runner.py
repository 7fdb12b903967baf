"""Tests for debug.runner.ExperimentRunner: the seed's run / plot / analyze_errors API on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from debug import models, prompts
from debug.config import quick_experiment
from debug.generators import make_variable_binding_program
from debug.programs import GeneratorError
from debug.runner import ExperimentRunner


@pytest.fixture
def runner(tmp_path: Path) -> ExperimentRunner:
    return ExperimentRunner(output_dir=tmp_path / "out", cache_dir=tmp_path / "cache", progress=False)


def _config(model_dir: Path, name: str = "binding"):
    return quick_experiment(
        name,
        prompts.VARIABLE_BINDING,
        make_variable_binding_program,
        models=[str(model_dir)],
        num_seqs=4,
        seq_lens=[2, 3, 4],
    )


def test_run_writes_results_summary_and_plot(runner: ExperimentRunner, tiny_qwen3_dir: Path) -> None:
    result = runner.run(_config(tiny_qwen3_dir))
    folder = Path(result["output_dir"])
    assert folder.name.startswith("binding_")
    records = json.loads((folder / "results.json").read_text())
    summary = json.loads((folder / "summary.json").read_text())
    assert (folder / "accuracy_plot.png").stat().st_size > 1000
    assert len(records) == 12 == len(result["results"])
    first = records[0]
    for key in (
        "model_id",
        "seq_len",
        "seq_id",
        "program",
        "prompt",
        "true_answer",
        "predicted_answer",
        "raw_output",
        "correct",
        "answer_logprob",
        "hops",
        "root_line",
        "chain",
    ):
        assert key in first, key
    assert [(r["seq_len"], r["seq_id"]) for r in records[:5]] == [(2, 0), (2, 1), (2, 2), (2, 3), (3, 0)]
    k = sum(r["correct"] for r in records)
    assert summary["overall_accuracy"] == pytest.approx(k / 12)
    by_model = summary["by_model"][str(tiny_qwen3_dir)]
    assert set(by_model["by_seq_len"]) == {"2", "3", "4"}
    assert set(by_model["by_hops"]) <= {"1", "2", "3", "4"}
    low, high = by_model["ci_low"], by_model["ci_high"]
    assert 0.0 <= low <= k / 12 <= high <= 1.0
    assert set(summary["baselines"]) == {"copy_line_1", "copy_last_constant", "majority"}


def test_answer_cache_serves_a_rerun(runner: ExperimentRunner, tiny_qwen3_dir: Path, tmp_path: Path) -> None:
    config = _config(tiny_qwen3_dir)
    first = runner.run(config, save=False)
    assert not any(r["cached"] for r in first["results"])
    assert list((tmp_path / "cache").glob("*.jsonl"))
    second = runner.run(config, save=False)
    assert all(r["cached"] for r in second["results"])
    assert [r["raw_output"] for r in second["results"]] == [r["raw_output"] for r in first["results"]]


def test_no_cache_bypasses_cache_and_unloads(
    runner: ExperimentRunner, tiny_gpt2_dir: Path, tmp_path: Path
) -> None:
    models.unload_all()
    result = runner.run(_config(tiny_gpt2_dir), save=False, no_cache=True)
    assert not any(r["cached"] for r in result["results"])
    assert not list((tmp_path / "cache").glob("*.jsonl"))
    assert runner.list_loaded_models() == []
    # A model loaded before the run stays loaded.
    runner.preload_models([str(tiny_gpt2_dir)])
    runner.run(_config(tiny_gpt2_dir), save=False, no_cache=True)
    assert runner.list_loaded_models() == [str(tiny_gpt2_dir)]
    assert runner.unload_model(str(tiny_gpt2_dir)) is True
    assert runner.unload_all_models() == 0


def test_plot_and_analyze_errors_from_disk(tiny_qwen3_dir: Path, tmp_path: Path, capsys) -> None:
    first = ExperimentRunner(output_dir=tmp_path / "out", cache_dir=tmp_path / "cache", progress=False)
    first.run(_config(tiny_qwen3_dir, "reloaded"))
    fresh = ExperimentRunner(output_dir=tmp_path / "out", progress=False)  # reads the saved run back
    path = fresh.plot("reloaded")
    assert path.is_file()
    analysis = fresh.analyze_errors(
        "reloaded", show_programs=True, min_seq_len=3, max_seq_len=4, n_examples=2
    )
    assert analysis["total"] == 8
    assert set(analysis["error_rate_by_seq_len"]) <= {3, 4}
    assert len(analysis["examples"]) == min(2, analysis["errors"])
    out = capsys.readouterr().out
    assert "errors in 8 samples" in out
    if analysis["examples"]:
        assert ">>> raw output" in out
    with pytest.raises(KeyError, match="run it first"):
        fresh.analyze_errors("never-ran")


def test_generator_that_raises_names_generator_seq_len_and_seed(
    runner: ExperimentRunner, tiny_qwen3_dir: Path
):
    calls = {"n": 0}

    def flaky(seq_len, rng):
        calls["n"] += 1
        if calls["n"] > 2:  # the config's dry run passes; the run itself meets the failure
            raise RuntimeError("boom")
        return make_variable_binding_program(seq_len, rng)

    config = quick_experiment(
        "flaky", prompts.VARIABLE_BINDING, flaky, models=[str(tiny_qwen3_dir)], num_seqs=3, seq_lens=[2]
    )
    with pytest.raises(GeneratorError, match=r"flaky failed at seq_len=2, seed=\d+: RuntimeError: boom"):
        runner.run(config)


def test_unknown_model_fails_before_scoring(runner: ExperimentRunner) -> None:
    config = quick_experiment(
        "nomodel",
        prompts.VARIABLE_BINDING,
        make_variable_binding_program,
        models=["embedded:does-not-exist"],
        num_seqs=1,
        seq_lens=[2],
    )
    with pytest.raises(models.ModelNotAvailableError, match="unknown embedded model"):
        runner.run(config)
