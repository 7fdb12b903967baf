"""The seed's import path of the patching plots; the code lives in `debug.causal.plots`."""

from __future__ import annotations

from debug._util.figures import figure_base64, save_figure
from debug.causal.plots import (
    METRIC_TITLES,
    TARGET_COLOR,
    plot_head_heatmaps,
    plot_ref_depth_aggregate,
    plot_token_heatmap,
)

__all__ = [
    "METRIC_TITLES",
    "TARGET_COLOR",
    "figure_base64",
    "plot_head_heatmaps",
    "plot_ref_depth_aggregate",
    "plot_token_heatmap",
    "save_figure",
]
