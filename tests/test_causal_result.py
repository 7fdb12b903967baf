"""SweepResult: JSON without NaN, a faithful round trip, short printing and per-target views."""

from __future__ import annotations

import json

import numpy as np

from debug.causal_inputs import AnswerTokens
from debug.causal_result import Baseline, SweepResult


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
        clean=Baseline(0.0, 0.1, 0.9, 5, "1"),
        counterfactual=Baseline(1.0, 0.8, 0.1, 8, "4"),
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
