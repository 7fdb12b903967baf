"""The seed's causal runner: saved JSON files, aggregation by ref depth, pictures, and `debug patch`."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import debug.causal.runner as runner
from debug.causal.cli import main_patch
from debug.causal.plots import plot_token_heatmap
from debug.causal.result import SweepResult, UnsolvedPairWarning, aggregate_by_target
from debug.causal.runner import CausalExperimentRunner, run_causal_tracing_experiment
from debug.models import load
from debug.programs import Program

# Untrained models get most pairs wrong; the tests that check that warning catch it themselves.
pytestmark = pytest.mark.filterwarnings("ignore::debug.causal.result.UnsolvedPairWarning")

SEED_PROGRAMS = [
    {
        "original": "x = 5\ny = x\n#y:",
        "counterfactual": "x = 3\ny = x\n#y:",
        "expected_original": 5,
        "expected_counterfactual": 3,
        "variable_chain": ["y", "x"],
    },
    {
        "original": "x = 2\ny = x\nz = y\n#z:",
        "counterfactual": "x = 7\ny = x\nz = y\n#z:",
        "expected_original": 2,
        "expected_counterfactual": 7,
        "variable_chain": ["z", "y", "x"],
    },
]


@pytest.fixture(scope="module")
def loaded(tiny_qwen3_dir: Path):
    return load(str(tiny_qwen3_dir), device="cpu")


def test_seed_program_dicts_are_swept_saved_and_aggregated(loaded, tmp_path: Path) -> None:
    runner = CausalExperimentRunner(tmp_path, progress=False)
    results = runner.run_intervention_experiment(
        model_id=loaded, programs=SEED_PROGRAMS, intervention_type="residual_stream"
    )
    out = Path(results["output_dir"])
    assert out.parent == tmp_path
    saved = json.loads((out / "intervention_results.json").read_text())
    aggregate = json.loads((out / "patch_results.json").read_text())
    assert [p["expected_counterfactual"] for p in saved["programs"]] == [3, 7]
    first = saved["programs"][0]["sweep"]
    assert len(first["normalized"]) == 2 and len(first["normalized"][0]) == len(SEED_PROGRAMS[0]["original"])
    # ref depth 1 = the root constant in both programs; ref depth 3 only in the 3-hop one.
    by = aggregate["by_target"]
    assert by["ref depth 1"]["n"] == 2 and by["ref depth 3"]["n"] == 1
    sweeps = results["sweeps"]
    expected = np.mean([s.at_target("ref depth 1") for s in sweeps], axis=0)
    np.testing.assert_allclose(by["ref depth 1"]["normalized"], expected, rtol=1e-9)
    assert by["ref depth 3"]["normalized"] == pytest.approx(sweeps[1].at_target("ref depth 3").tolist())
    # The JSON round-trips into the same arrays.
    again = SweepResult.from_dict(first)
    np.testing.assert_allclose(again.logit_diff, sweeps[0].logit_diff)
    assert again.layer_labels == sweeps[0].layer_labels and again.targets == sweeps[0].targets


def test_plots_are_pngs_next_to_the_results(loaded, tmp_path: Path) -> None:
    runner = CausalExperimentRunner(tmp_path, progress=False)
    results = runner.run_intervention_experiment(loaded, SEED_PROGRAMS[:1], "attention_heads")
    paths = runner.plot_intervention_results(results)
    names = sorted(p.name for p in paths)
    assert names == ["aggregate_normalized.png", "program_0_heads.png", "program_0_normalized.png"]
    for path in paths:
        assert path.parent == Path(results["output_dir"]) and path.read_bytes().startswith(b"\x89PNG")
    # Reading the saved JSON back (no SweepResult objects) draws the same pictures.
    saved = json.loads((Path(results["output_dir"]) / "intervention_results.json").read_text())
    again = runner.plot_intervention_results(saved, output_dir=tmp_path / "again")
    assert sorted(p.name for p in again) == names


def test_generated_programs_and_lone_programs(loaded, tmp_path: Path) -> None:
    runner = CausalExperimentRunner(tmp_path, progress=False)
    results = runner.run_intervention_experiment(
        loaded, None, num_hops=2, seq_len=5, num_programs=2, save=False
    )
    assert results["output_dir"] is None and len(results["programs"]) == 2
    for record in results["programs"]:
        assert (
            record["original"].count("\n") == 5
            and record["expected_original"] != record["expected_counterfactual"]
        )
        assert len(record["variable_chain"]) == 2
    lone = Program("a=3\nb=a\n#b:", 3, {"answer_var": "b"})
    results = runner.run_intervention_experiment(loaded, [lone], save=False, layers=[0])
    assert results["programs"][0]["counterfactual"].startswith("a=") and results["programs"][0]["seed"] == 0


def test_aggregate_of_nothing_is_empty() -> None:
    assert aggregate_by_target([])["by_target"] == {}


def test_debug_patch_command(tiny_gpt2_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["--model", str(tiny_gpt2_dir), "--rng-seed", "3", "--num-hops", "2", "--seq-len", "6"]
    assert main_patch(argv + ["--results-dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "ref depth 1" in printed and "picture:" in printed
    run = next(tmp_path.iterdir())
    assert {p.name for p in run.iterdir()} >= {
        "intervention_results.json",
        "patch_results.json",
        "program_0_normalized.png",
        "aggregate_normalized.png",
    }
    with pytest.raises(SystemExit) as refused:
        main_patch(argv + ["--site", "neurons", "--results-dir", str(tmp_path)])
    assert refused.value.code == 2
    assert "invalid choice: 'neurons'" in capsys.readouterr().err
    assert (
        main_patch(
            [
                "--model",
                str(tiny_gpt2_dir),
                "--num-hops",
                "5",
                "--seq-len",
                "3",
                "--results-dir",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "num_hops" in capsys.readouterr().err


@pytest.fixture(scope="module")
def binder():
    return load("embedded:binder", device="cpu")


README_PROGRAM = {
    "original": "x = 5\ny = x * 2\n#y:",
    "counterfactual": "x = 3\ny = x * 2\n#y:",
    "expected_original": 10,
    "expected_counterfactual": 6,
    "variable_chain": ["y", "x"],
}


def test_the_readme_example_warns_that_the_binder_gets_it_wrong(binder, tmp_path: Path) -> None:
    # The binder copies the bound value (5) instead of computing x * 2 = 10: swept anyway, and said once.
    with pytest.warns(UserWarning) as caught:  # also: the README's layers 17..27 are skipped
        (result,) = run_causal_tracing_experiment(
            binder, [README_PROGRAM], list(range(28)), "residual_stream"
        )
    unsolved = [w for w in caught if w.category is UnsolvedPairWarning]
    assert len(unsolved) == 1 and "\n" not in str(unsolved[0].message)
    assert unsolved[0].filename == __file__  # points at the caller's line, not the library's
    assert "original (top-1 '5', expected '10')" in str(unsolved[0].message)
    assert result.original_correct is False and result.original.top1 == "5"
    fig = plot_token_heatmap(result)
    assert "model answers the original" in fig.axes[0].get_title() and "wrong" in fig.axes[0].get_title()
    with pytest.warns(UnsolvedPairWarning):
        results = CausalExperimentRunner(tmp_path, progress=False).run_intervention_experiment(
            binder, [README_PROGRAM], layers=[0]
        )
    saved = json.loads((Path(results["output_dir"]) / "intervention_results.json").read_text())
    assert saved["programs"][0]["original_correct"] is False and saved["unsolved"] == 1
    assert saved["programs"][0]["sweep"]["original_correct"] is False


def test_a_pair_the_binder_solves_is_not_warned(binder) -> None:
    original = Program("a=1\nb=a\nc=7\n#b:", 1, {"answer_var": "b"})
    counterfactual = Program("a=4\nb=a\nc=7\n#b:", 4, {"answer_var": "b"})
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnsolvedPairWarning)
        (result,) = run_causal_tracing_experiment(binder, [(original, counterfactual)], [0])
    assert result.original_correct and result.counterfactual_correct and result.solved
    assert "wrong" not in plot_token_heatmap(result).axes[0].get_title()


def test_generated_seeds_without_a_pair_are_listed_with_the_reason(loaded, monkeypatch) -> None:
    real = runner.binding_pair

    def every_other(seq_len, num_hops, seed, tokenizer=None):
        if seed % 2 == 0:
            raise ValueError(f"no counterfactual for seed {seed}")
        return real(seq_len, num_hops, seed, tokenizer)

    monkeypatch.setattr(runner, "binding_pair", every_other)
    results = CausalExperimentRunner(progress=False).run_intervention_experiment(
        loaded, None, num_hops=1, seq_len=3, num_programs=2, layers=[0], save=False
    )
    assert [r["seed"] for r in results["programs"]] == [1, 3]
    assert results["skipped"] == [
        {"seed": 0, "reason": "no counterfactual for seed 0"},
        {"seed": 2, "reason": "no counterfactual for seed 2"},
    ]
