"""Pictures of patching sweeps: layer x token and layer x head heatmaps, and effects aggregated by ref depth.

Figures are drawn with matplotlib; when pyplot has not been imported yet, the Agg backend is chosen (files
only, no display needed), and a backend the caller already chose (a notebook's) is left alone. Save them with
`debug._util.figures.save_figure` (PNG). The eval report's causal cases attach the same pictures as SVG
(`token_heatmap_svg`, `target_heatmap_svg`, drawn by `debug._util.heatmap` in milliseconds: a matplotlib
figure of a 16-line program's map costs more than the behavioural case over 50 programs). Colours are a
diverging map centred on 0, so a cell that moves the
answer toward the counterfactual (normalized effect 1) and one that pushes it away (negative) read
differently; the colour range is symmetric and at least [-1, 1]. A pair the model answers wrong says so in
the title.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from debug._util.heatmap import MARK, heatmap_svg
from debug.causal.result import SweepResult, target_sort_key

__all__ = [
    "METRIC_TITLES",
    "TARGET_COLOR",
    "plot_head_heatmaps",
    "plot_ref_depth_aggregate",
    "plot_token_heatmap",
    "target_heatmap_svg",
    "token_heatmap_svg",
]

METRIC_TITLES = {
    "normalized": "normalized effect (0 = original, 1 = counterfactual)",
    "logit_diff": "logit(cf) - logit(orig)",
    "prob_cf": "P(counterfactual answer)",
    "iia": "interchange intervention accuracy (top-1 = cf answer)",
}
TARGET_COLOR = MARK  # the SVG pictures mark targets in the same red


def _pyplot() -> Any:
    """matplotlib.pyplot, on the Agg backend unless pyplot was already imported with another one."""
    import matplotlib  # deferred: matplotlib costs ~0.3 s to import

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: as above

    return plt


def _limits(values: np.ndarray, metric: str) -> tuple[float, float]:
    if metric in ("prob_cf", "iia"):
        return 0.0, 1.0
    finite = np.abs(values[np.isfinite(values)])
    bound = max(1.0, float(finite.max())) if finite.size else 1.0
    return -bound, bound


def _cmap(metric: str) -> str:
    return "Blues" if metric in ("prob_cf", "iia") else "RdBu_r"


def _targets_at(result: SweepResult) -> dict[int, str]:
    """Patched position index -> short label ("k1", "k2", "q", "final")."""
    short: dict[int, list[str]] = {}
    for label, position in result.targets.items():
        if position in result.positions:
            name = label.replace("ref depth ", "k").replace("query", "q")
            short.setdefault(result.positions.index(position), []).append(name)
    return {i: "/".join(names) for i, names in short.items()}


def _strongest_head(values: np.ndarray) -> np.ndarray:
    """`[layers, positions, heads]` -> `[layers, positions]`: the head with the largest magnitude."""
    pick = np.nanargmax(np.nan_to_num(np.abs(values), nan=-1.0), axis=2)
    return np.take_along_axis(values, pick[..., None], axis=2)[..., 0]


def _title(result: SweepResult, metric: str, extra: str = "") -> str:
    site = result.site.replace("_", " ")
    answer = f"answer {result.answer.original_text!r} -> {result.answer.counterfactual_text!r}"
    title = f"{site}: {METRIC_TITLES.get(metric, metric)}{extra}\n{result.model_id}  ({answer})"
    wrong = [
        f"original (top-1 {result.original.top1!r})" if result.original_correct is False else "",
        f"counterfactual (top-1 {result.counterfactual.top1!r})"
        if result.counterfactual_correct is False
        else "",
    ]
    wrong = [w for w in wrong if w]
    if wrong:
        title += f"\nmodel answers the {' and the '.join(wrong)} wrong"
    return title


def plot_token_heatmap(result: SweepResult, metric: str = "normalized", *, title: str | None = None) -> Any:
    """Layer x token heatmap of one metric; program tokens label the x axis, ref-depth targets in red.

    For attention-head sweeps the value shown per (layer, position) is the head with the largest magnitude.

    Returns:
        The matplotlib Figure.
    """
    values = result.metric(metric).astype(float)
    extra = ""
    if values.ndim == 3:
        values, extra = _strongest_head(values), ", strongest head"
    labels = [result.tokens[p] for p in result.positions]
    plt = _pyplot()
    width = min(28.0, 2.5 + 0.32 * len(labels))
    height = min(16.0, 2.2 + 0.28 * len(result.layers))
    fig, ax = plt.subplots(figsize=(width, height))
    vmin, vmax = _limits(values, metric)
    image = ax.imshow(values, aspect="auto", origin="lower", cmap=_cmap(metric), vmin=vmin, vmax=vmax)
    ax.set_xticks(range(len(labels)), labels, fontsize=8, fontfamily="monospace")
    ax.set_yticks(range(len(result.layers)), result.layer_labels, fontsize=8)
    ax.set_xlabel("token position (program text)")
    ax.set_ylabel("layer (residual = input of the layer)" if result.site == "residual_stream" else "layer")
    marks = _targets_at(result)
    for index, name in marks.items():
        ax.get_xticklabels()[index].set_color(TARGET_COLOR)
        ax.get_xticklabels()[index].set_fontweight("bold")
        ax.add_patch(
            plt.Rectangle(
                (index - 0.5, -0.5), 1, len(result.layers), fill=False, edgecolor=TARGET_COLOR, lw=1.2
            )
        )
        ax.text(
            index, len(result.layers) - 0.4, name, ha="center", va="bottom", color=TARGET_COLOR, fontsize=8
        )
    ax.set_title(title or _title(result, metric, extra), fontsize=10, pad=18 if marks else 6)
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.01)
    fig.tight_layout()
    return fig


def token_heatmap_svg(result: SweepResult, metric: str = "normalized", *, title: str | None = None) -> bytes:
    """`plot_token_heatmap`'s picture as SVG (`debug._util.heatmap`): layers bottom to top, targets marked.

    Returns:
        The SVG document (UTF-8 bytes).
    """
    values = result.metric(metric).astype(float)
    extra = ""
    if values.ndim == 3:
        values, extra = _strongest_head(values), ", strongest head"
    return heatmap_svg(
        values[::-1],  # the last layer on top, as the residual stream rises
        list(result.layer_labels)[::-1],
        [result.tokens[p] for p in result.positions],
        title=title or _title(result, metric, extra),
        limits=_limits(values, metric),
        cmap=_cmap(metric),
        marked=_targets_at(result),
        x_label="token position (program text)",
        y_label="layer (residual = input of the layer)" if result.site == "residual_stream" else "layer",
    )


def target_heatmap_svg(aggregate: dict[str, Any], what: str = "", metric: str = "normalized") -> bytes:
    """The mean effect per target (rows) and layer (columns) as SVG: where the changed value travels.

    Args:
        aggregate: `debug.causal.result.aggregate_by_target` of the sweeps (head sweeps: the strongest head).
        what: Names the programs in the title.
        metric: Which metric to draw.

    Returns:
        The SVG document (UTF-8 bytes).
    """
    targets = sorted(aggregate["by_target"], key=target_sort_key)
    rows = [[np.nan if v is None else v for v in aggregate["by_target"][t][metric]] for t in targets]
    values = np.array(rows, dtype=float).reshape(len(targets), len(aggregate["layer_labels"]), -1)
    values = values[..., 0] if values.shape[2] == 1 else np.nanmax(values, axis=2)
    counts = {t: aggregate["by_target"][t]["n"] for t in targets}
    title = f"{METRIC_TITLES.get(metric, metric)}, mean by target ({what})\n{aggregate.get('model_id', '')}"
    return heatmap_svg(
        values,
        [f"{t} (n={counts[t]})" for t in targets],
        [str(label) for label in aggregate["layer_labels"]],
        title=title,
        limits=_limits(values, metric),
        cmap=_cmap(metric),
        x_label="layer",
    )


def plot_head_heatmaps(result: SweepResult, metric: str = "normalized", *, max_panels: int = 6) -> Any:
    """Layer x head heatmaps, one panel per target position (or the strongest positions when no targets).

    Raises:
        ValueError: When the sweep is not an attention-head sweep.
    """
    if result.heads is None:
        raise ValueError("layer x head heatmaps need a sweep with site='attention_heads'")
    values = result.metric(metric).astype(float)
    marks = _targets_at(result)
    if not marks:
        strength = np.nan_to_num(np.abs(values), nan=0.0).max(axis=(0, 2))
        marks = {int(i): result.tokens[result.positions[int(i)]] for i in np.argsort(-strength)[:max_panels]}
    panels = sorted(marks.items())[:max_panels]
    vmin, vmax = _limits(values, metric)
    fig, axes = _pyplot().subplots(
        1,
        len(panels),
        figsize=(1.0 + 2.6 * len(panels), 2.4 + 0.25 * len(result.layers)),
        squeeze=False,
        layout="constrained",  # keeps the two-line title clear of the panel titles
    )
    for ax, (index, name) in zip(axes[0], panels):
        image = ax.imshow(
            values[:, index, :], aspect="auto", origin="lower", cmap=_cmap(metric), vmin=vmin, vmax=vmax
        )
        token = result.tokens[result.positions[index]]
        ax.set_title(f"{name}: pos {result.positions[index]} {token!r}", fontsize=9)
        ax.set_xticks(range(len(result.heads)), [str(h) for h in result.heads], fontsize=7)
        ax.set_yticks(range(len(result.layers)), result.layer_labels, fontsize=7)
        ax.set_xlabel("head")
    axes[0][0].set_ylabel("layer")
    fig.suptitle(_title(result, metric), fontsize=10)
    fig.colorbar(image, ax=list(axes[0]), fraction=0.03, pad=0.02)
    return fig


def plot_ref_depth_aggregate(
    aggregate: dict[str, Any], metric: str = "normalized", *, ax: Any = None, title: str | None = None
) -> Any:
    """Effect per layer at each target label, averaged over programs (the `patch_results.json` aggregate).

    Args:
        aggregate: A dict with `layer_labels` and `by_target` -> label -> {metric: per-layer values,
            "n": count};
            for head sweeps the per-layer values are lists over heads and the strongest head is drawn.
        metric: Which metric to draw.
        ax: Draw into these axes (one panel of a larger figure) instead of a new figure.
        title: The panel title (default: the site and model id).

    Returns:
        The figure drawn into.
    """
    if ax is None:
        _, ax = _pyplot().subplots(figsize=(7.5, 4.2))
    layers = aggregate["layer_labels"]
    for label, entry in sorted(aggregate["by_target"].items(), key=lambda kv: target_sort_key(kv[0])):
        values = np.array(entry[metric], dtype=float)  # None (undefined) becomes nan: a gap in the line
        if values.ndim == 2:
            values = values[
                np.arange(len(values)), np.nanargmax(np.nan_to_num(np.abs(values), nan=-1.0), axis=1)
            ]
        ax.plot(range(len(layers)), values, marker="o", ms=3, label=f"{label} (n={entry['n']})")
    ax.axhline(0.0, color="0.6", lw=0.8)
    ax.set_xticks(range(len(layers)), layers, fontsize=8)
    ax.set_xlabel("layer")
    ax.set_ylabel(METRIC_TITLES.get(metric, metric), fontsize=8)
    default = f"{aggregate.get('site', '')}: mean over programs by ref depth\n{aggregate.get('model_id', '')}"
    ax.set_title(default if title is None else title, fontsize=9)
    ax.legend(fontsize=7)
    ax.figure.tight_layout()
    return ax.figure
