"""The seed's causal runner: saved JSON files, aggregation by ref depth, pictures, and `debug patch`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from debug.causal_experiment_runner import CausalExperimentRunner, aggregate_by_target, main
from debug.causal_result import SweepResult
from debug.models import load
from debug.programs import Program

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
    assert main(argv + ["--results-dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "ref depth 1" in printed and "picture:" in printed
    run = next(tmp_path.iterdir())
    assert {p.name for p in run.iterdir()} >= {
        "intervention_results.json",
        "patch_results.json",
        "program_0_normalized.png",
        "aggregate_normalized.png",
    }
    assert main(argv + ["--site", "neurons", "--results-dir", str(tmp_path)]) == 2
    assert "unknown site 'neurons'" in capsys.readouterr().err
    assert (
        main(
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
