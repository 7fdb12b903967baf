"""SweepResult: JSON without NaN, a faithful round trip, short printing and per-target views."""

from __future__ import annotations

import json

import numpy as np

from debug.causal.inputs import AnswerTokens
from debug.causal.result import (
    UNDEFINED_NORMALIZED,
    Effects,
    SweepResult,
    UnpatchedRun,
    array_json,
    layer_label,
    normalized_effect,
    scored_rows,
    target_sort_key,
)


def _result() -> SweepResult:
    values = np.arange(6, dtype=float).reshape(2, 3) / 10
    values[1, 2] = np.nan
    return SweepResult(
        site="residual_stream",
        layers=[0, 2],
        positions=[0, 1, 2],
        heads=None,
        num_layers=2,
        tokens=["a", "=", "1"],
        targets={"ref depth 1": 2, "final": 5},
        logit_diff=values,
        normalized=values,
        prob_cf=values,
        iia=values > 0.25,
        original=UnpatchedRun(0.0, 0.1, 0.9, 5, "1"),
        counterfactual=UnpatchedRun(1.0, 0.8, 0.1, 8, "4"),
        answer=AnswerTokens(5, 8, "1", "4", note="single-token answers"),
        definitions={"site": "s", "answer": "single-token answers"},
        model_id="m",
    )


def test_json_has_no_nan_and_round_trips() -> None:
    result = _result()
    text = json.dumps(result.to_dict(), allow_nan=False)
    again = SweepResult.from_dict(json.loads(text))
    np.testing.assert_array_equal(again.normalized, result.normalized)  # NaN survives as null -> NaN
    assert again.layer_labels == ["0", "final"] and again.answer == result.answer and again.iia.dtype == bool


def test_target_views_skip_unpatched_targets() -> None:
    result = _result()
    assert result.at_target("final") is None
    assert result.target_effects() == {"ref depth 1": [0.2, None]}


def test_a_result_prints_in_one_line() -> None:
    text = repr(_result())
    assert text.startswith("SweepResult(site='residual_stream'") and "cells=2x3" in text and "\n" not in text


def test_correctness_is_recorded_serialized_and_read_back() -> None:
    result = _result()  # original top-1 5 = the original answer token; counterfactual top-1 8 = its answer
    assert result.original_correct is True and result.counterfactual_correct is True and result.solved
    assert result.unsolved_message() == ""
    data = {**result.to_dict(), "counterfactual": {**vars(result.original)}, "counterfactual_correct": None}
    wrong = SweepResult.from_dict(data)  # None: judged again from the top-1 tokens
    assert wrong.counterfactual_correct is False and not wrong.solved
    assert wrong.unsolved_message() == (
        "m answers the counterfactual (top-1 '1', expected '4') wrong: the patching effects describe a pair "
        "it does not solve"
    )
    data = json.loads(json.dumps(wrong.to_dict(), allow_nan=False))
    assert (data["original_correct"], data["counterfactual_correct"]) == (True, False)


def test_results_saved_before_the_rename_are_read() -> None:
    data = _result().to_dict()
    data["clean"] = data.pop("original")
    for key in ("original_correct", "counterfactual_correct"):
        del data[key]
    again = SweepResult.from_dict(data)
    assert again.original == _result().original and again.original_correct is True


def test_an_estimated_result_keeps_iia_undefined_through_json() -> None:
    """Attribution cannot estimate IIA: its NaNs must come back as NaN, not as True."""
    result = _result()
    result.iia = np.full((2, 3), np.nan)
    again = SweepResult.from_dict(json.loads(json.dumps(result.to_dict(), allow_nan=False)))
    assert np.isnan(again.iia).all()


def test_scored_rows_are_the_four_metrics_of_each_row() -> None:
    import torch

    logits = torch.tensor([[0.0, 2.0, 1.0], [0.0, 1.0, 3.0]])
    answer = AnswerTokens(1, 2, "1", "2")
    original, counterfactual = UnpatchedRun(-1.0, 0.2, 0.7, 1, "1"), UnpatchedRun(3.0, 0.8, 0.1, 2, "2")
    notes: list[str] = []
    rows = scored_rows(logits, answer, original, counterfactual, notes)
    np.testing.assert_allclose(rows["logit_diff"], [-1.0, 2.0])
    np.testing.assert_allclose(rows["normalized"], [0.0, 0.75])  # (LD + 1) / (3 + 1)
    np.testing.assert_allclose(rows["prob_cf"], torch.softmax(logits, -1)[:, 2].numpy(), rtol=1e-6)
    assert rows["iia"].tolist() == [False, True] and notes == []


def test_an_undefined_normalization_is_nan_with_a_note() -> None:
    run = UnpatchedRun(1.0, 0.5, 0.5, 1, "1")
    notes: list[str] = []
    assert np.isnan(normalized_effect(np.array([0.5, 2.0]), run, run, notes)).all()
    assert notes == [UNDEFINED_NORMALIZED]


def test_shared_json_helpers() -> None:
    assert array_json(np.array([1.0, np.nan])) == [1.0, None] and array_json(None) is None
    assert array_json(np.array([True, False])) == [1.0, 0.0]
    assert [layer_label(layer, 2) for layer in range(3)] == ["0", "1", "final"]
    result = _result()
    assert isinstance(result, Effects) and result.metric("prob_cf") is result.prob_cf
    shared = result.effects_json()
    assert shared["answer"]["counterfactual_token_id"] == 8 and shared["targets"] == result.targets
    assert set(shared) <= set(result.to_dict())


def test_target_labels_sort_in_reading_order() -> None:
    labels = ["final", "query", "operand 2", "accumulator", "operand 10", "changed constant", "operand 1"]
    labels.append("zeta")
    assert sorted(labels, key=target_sort_key) == [
        "changed constant",
        "operand 1",
        "operand 2",
        "operand 10",
        "accumulator",
        "query",
        "final",
        "zeta",
    ]
    assert sorted(["ref depth 2", "final", "ref depth 1"], key=target_sort_key) == [
        "ref depth 1",
        "ref depth 2",
        "final",
    ]
