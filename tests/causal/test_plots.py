"""Heatmaps show the program's tokens, mark ref-depth targets, and centre the colour scale on 0."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from debug._util.figures import save_figure
from debug.causal.inputs import AnswerTokens
from debug.causal.plots import TARGET_COLOR, plot_head_heatmaps, plot_ref_depth_aggregate, plot_token_heatmap
from debug.causal.result import SweepResult, UnpatchedRun, aggregate_by_target

TOKENS = ["a", "=", "1", "\\n", "b", "=", "a", "\\n", "#", "b", ":"]
TARGETS = {"ref depth 1": 2, "ref depth 2": 6, "query": 9, "final": 10}


def _result(heads: int | None = None, scale: float = 1.0) -> SweepResult:
    shape = (3, len(TOKENS)) + ((heads,) if heads else ())
    rng = np.random.default_rng(0)
    values = rng.normal(size=shape) * scale
    base = UnpatchedRun(0.0, 0.1, 0.9, 5, "1")
    return SweepResult(
        site="attention_heads" if heads else "residual_stream",
        layers=[0, 1, 2],
        positions=list(range(len(TOKENS))),
        heads=list(range(heads)) if heads else None,
        num_layers=2,
        tokens=TOKENS,
        targets=TARGETS,
        logit_diff=values,
        normalized=values,
        prob_cf=np.abs(values).clip(0, 1),
        iia=values > 0.5,
        original=base,
        counterfactual=UnpatchedRun(2.0, 0.8, 0.1, 8, "4"),
        answer=AnswerTokens(5, 8, "1", "4"),
        definitions={},
        model_id="tiny",
    )


def test_token_heatmap_labels_tokens_and_marks_targets() -> None:
    fig = plot_token_heatmap(_result(scale=3.0))
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == TOKENS
    red = [i for i, t in enumerate(ax.get_xticklabels()) if t.get_color() == TARGET_COLOR]
    assert red == sorted(TARGETS.values())
    assert len(ax.patches) == len(TARGETS)
    assert {t.get_text() for t in ax.texts} == {"k1", "k2", "q", "final"}
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "1", "final"]
    low, high = ax.images[0].get_clim()
    assert low == -high and high >= 3.0  # symmetric, covers the data
    plt.close(fig)


def test_probability_maps_use_zero_to_one() -> None:
    fig = plot_token_heatmap(_result(), "prob_cf")
    assert fig.axes[0].images[0].get_clim() == (0.0, 1.0)
    plt.close(fig)


def test_head_heatmaps_one_panel_per_target() -> None:
    result = _result(heads=4)
    fig = plot_head_heatmaps(result)
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == len(TARGETS)
    assert panels[0].images[0].get_array().shape == (3, 4)
    np.testing.assert_allclose(
        panels[0].images[0].get_array(), result.normalized[:, TARGETS["ref depth 1"], :]
    )
    plt.close(fig)
    # The layer x token view of a head sweep shows the strongest head of each cell.
    fig = plot_token_heatmap(result)
    shown = fig.axes[0].images[0].get_array()
    idx = np.abs(result.normalized).argmax(axis=2)
    np.testing.assert_allclose(shown, np.take_along_axis(result.normalized, idx[..., None], 2)[..., 0])
    plt.close(fig)
    with pytest.raises(ValueError, match="site='attention_heads'"):
        plot_head_heatmaps(_result())


def test_aggregate_draws_one_line_per_target_in_depth_order(tmp_path: Path) -> None:
    aggregate = aggregate_by_target([_result(), _result(scale=2.0)])
    fig = plot_ref_depth_aggregate(aggregate)
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()[: len(TARGETS)]] == [
        "ref depth 1 (n=2)",
        "ref depth 2 (n=2)",
        "query (n=2)",
        "final (n=2)",
    ]
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), 1.5 * _result().normalized[:, 2])
    path = save_figure(fig, tmp_path / "deep" / "agg.png")
    assert path.read_bytes().startswith(b"\x89PNG")


def test_titles_say_when_the_model_answers_a_run_wrong() -> None:
    right = _result()
    wrong = SweepResult(**{**vars(right), "original_correct": False})
    assert "wrong" not in plot_token_heatmap(right).axes[0].get_title()
    title = plot_token_heatmap(wrong).axes[0].get_title()
    assert title.endswith("model answers the original (top-1 '1') wrong")
    assert (
        "wrong"
        in plot_head_heatmaps(
            SweepResult(**{**vars(_result(heads=4)), "original_correct": False})
        )._suptitle.get_text()
    )
    plt.close("all")
