"""The seed project's README examples, run as written with the embedded model id in place of hub ids.

Users paste these; if one breaks, the README lies. Each runs in a temporary working directory because the
seed's runners write `results/` relative to it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

MODEL = "embedded:binder"


@pytest.fixture(autouse=True)
def _in_tmp_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DEBUG_CACHE_DIR", str(tmp_path / "cache"))


def test_quick_start_basic_experiment():
    from debug import ExperimentRunner, generators, prompts, quick_experiment

    config = quick_experiment(
        name="range_tracking",
        prompt_template=prompts.RANGE_TRACKING,
        program_generator=generators.make_range_program,
        models=[MODEL],
        num_seqs=4,
        seq_lens=[2, 3],
    )
    runner = ExperimentRunner()
    result = runner.run(config)
    runner.plot("range_tracking")
    runner.analyze_errors("range_tracking")
    runner.analyze_errors("range_tracking", show_programs=True)
    runner.analyze_errors("range_tracking", min_seq_len=3, max_seq_len=3)

    summary = result["summary"]
    assert 0.0 <= summary["overall_accuracy"] <= 1.0
    output_dir = Path(result["output_dir"])
    records = json.loads((output_dir / "results.json").read_text())
    assert len(records) == 8 and {r["seq_len"] for r in records} == {2, 3}
    assert (output_dir / "accuracy_plot.png").stat().st_size > 0


def test_custom_generator_and_prompt_with_defaults():
    from debug import ExperimentRunner, generators, prompts, quick_experiment

    def my_generator(seq_len: int, rng: np.random.RandomState):
        program = f"x = 0\nfor i in range({seq_len}):\n    x += 2"
        expected = seq_len * 2
        metadata = {"operation": "addition", "increment": 2}
        return program, expected, metadata

    config = quick_experiment("my_test", prompts.MINIMAL, my_generator)
    assert config.models == [MODEL]

    my_prompt = """Trace this code step by step:
{code}
Final answer: """
    config = quick_experiment("my_test", my_prompt, generators.make_range_program, num_seqs=2, seq_lens=[2])
    result = ExperimentRunner().run(config)
    assert len(result["results"]) == 2


def test_interactive_model_caching():
    from debug import ExperimentRunner

    runner = ExperimentRunner()
    runner.preload_models([MODEL, "embedded:binder-early"])
    assert {MODEL, "embedded:binder-early"} <= set(runner.list_loaded_models())
    runner.unload_model("embedded:binder-early")
    assert "embedded:binder-early" not in runner.list_loaded_models()
    runner.unload_all_models()
    assert runner.list_loaded_models() == []


def test_robust_program_generation():
    from debug import generators

    robust_seeds = {(1, 5): 11, (2, 5): 3, (3, 5): 2, (1, 17): 5, (2, 17): 14, (3, 17): 12}
    for (num_hops, seq_len), seed in robust_seeds.items():
        rng = np.random.RandomState(seed)
        program, expected = generators.make_variable_binding_program(seq_len, rng, num_hops)
        namespace: dict = {}
        exec(program, namespace)  # the query line is a comment: the program runs as-is
        query_var = program.rstrip().splitlines()[-1].strip("#: ")
        assert namespace[query_var] == expected


def test_causal_tracing_examples():
    from debug.causal_experiment_runner import CausalExperimentRunner
    from debug.causal_tracing import run_causal_tracing_experiment

    programs = [
        {
            "original": "x = 5\ny = x * 2\n#y:",
            "counterfactual": "x = 3\ny = x * 2\n#y:",
            "expected_original": 10,
            "expected_counterfactual": 6,
            "variable_chain": ["y", "x"],
        }
    ]
    results = run_causal_tracing_experiment(
        model_id=MODEL,
        programs=programs,
        intervention_layers=list(range(4)),
        intervention_type="residual_stream",
    )
    assert len(results) == 1

    runner = CausalExperimentRunner()
    results = runner.run_intervention_experiment(
        model_id=MODEL,
        programs=None,
        intervention_type="residual_stream",
        num_hops=2,
        seq_len=5,
    )
    runner.plot_intervention_results(results)
    results = runner.run_intervention_experiment(
        model_id=MODEL, programs=programs, intervention_type="attention_heads"
    )
    runner.plot_intervention_results(results)
