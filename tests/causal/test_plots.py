"""Heatmaps (matplotlib, SVG) show the program's tokens, mark ref-depth targets, centre the colours on 0."""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest

from debug._util.figures import save_figure
from debug._util.heatmap import MISSING, heatmap_svg
from debug.causal.inputs import AnswerTokens
from debug.causal.plots import (
    TARGET_COLOR,
    plot_head_heatmaps,
    plot_ref_depth_aggregate,
    plot_token_heatmap,
    target_heatmap_svg,
    token_heatmap_svg,
)
from debug.causal.result import SweepResult, UnpatchedRun, aggregate_by_target

TOKENS = ["a", "=", "1", "\\n", "b", "=", "a", "\\n", "#", "b", ":"]
TARGETS = {"ref depth 1": 2, "ref depth 2": 6, "query": 9, "final": 10}
SVG = "{http://www.w3.org/2000/svg}"


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


def _svg(document: bytes) -> ElementTree.Element:
    return ElementTree.fromstring(document)


def _cells(root: ElementTree.Element) -> list[ElementTree.Element]:
    """The grid's cells: the rects that carry their value as a hover title."""
    return [r for r in root.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]


def test_token_heatmap_svg_draws_every_cell_in_the_colour_of_its_value() -> None:
    result = _result()
    root = _svg(token_heatmap_svg(result))
    cells = _cells(root)
    assert len(cells) == 3 * len(TOKENS)
    # Rows run from the last layer at the top down to layer 0, columns in token order.
    by_place = {(float(c.get("y")), float(c.get("x"))): c for c in cells}
    ys, xs = sorted({y for y, _ in by_place}), sorted({x for _, x in by_place})
    bottom_left = by_place[(ys[-1], xs[0])]
    value = result.normalized[0, 0]
    assert bottom_left.find(f"{SVG}title").text == f"{value:.3f}"
    bound = max(1.0, float(np.abs(result.normalized).max()))
    colour = matplotlib.colormaps["RdBu_r"]((value + bound) / (2 * bound))
    red, green, blue = (round(255 * c) for c in colour[:3])
    assert bottom_left.get("fill") == f"#{red:02x}{green:02x}{blue:02x}"
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert all(token in texts for token in TOKENS) and {"k1", "k2", "q", "final"} <= set(texts)
    marked = [t for t in root.iter(f"{SVG}text") if t.get("fill") == TARGET_COLOR and t.text in TOKENS]
    assert [t.text for t in marked] == [TOKENS[p] for p in sorted(TARGETS.values())]


def test_svg_heatmaps_escape_text_draw_nan_grey_and_refuse_a_wrong_shape() -> None:
    document = heatmap_svg([[np.nan, 0.5]], ["<row>"], ["a&b", "c"], title="x < y\nsecond line")
    root = _svg(document)  # well-formed: the markup in the labels was escaped
    assert [c.get("fill") for c in _cells(root)][0] == MISSING
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert {"<row>", "a&b", "x < y", "second line"} <= set(texts)
    with pytest.raises(ValueError, match="shape"):
        heatmap_svg([[0.0, 1.0]], ["one", "two"], ["a", "b"], title="t")


def test_target_heatmap_svg_has_a_row_per_target_in_reading_order() -> None:
    aggregate = aggregate_by_target([_result(), _result(scale=2.0)])
    root = _svg(target_heatmap_svg(aggregate, "2 hops"))
    assert len(_cells(root)) == len(TARGETS) * 3
    rows = [t.text for t in root.iter(f"{SVG}text") if t.text and t.text.endswith("(n=2)")]
    assert rows == ["ref depth 1 (n=2)", "ref depth 2 (n=2)", "query (n=2)", "final (n=2)"]
    heads = aggregate_by_target([_result(heads=4)])
    assert len(_cells(_svg(target_heatmap_svg(heads)))) == len(TARGETS) * 3  # the strongest head per cell
