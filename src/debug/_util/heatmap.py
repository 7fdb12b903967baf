"""Heatmaps as SVG text, drawn straight from the numbers: the pictures of the eval report's causal cases.

A causal eval case attaches two heatmaps (its layer x token map and its target x layer means). Laying out and
rasterising such a figure with matplotlib took 0.3-0.7 s (its tick labels dominate), more than the
behavioural case over the same 50 programs; writing the cells, labels and colour bar as SVG elements takes
milliseconds, and the picture stays sharp at any zoom. Colours come from matplotlib's colormaps, the maps of
`debug.causal.plots`, so both kinds of picture read alike. For figures to style further (a notebook, a
paper), use the matplotlib functions of `debug.causal.plots`.

No torch here, like `debug._util.figures`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from debug._util.templates import template_env

#: Pixels: one cell, one character of the 10 px labels (about), one title line.
CELL = 14
CHAR = 6.2
LINE = 14
#: Drawn for an undefined value (nan): a cell whose effect is not defined for any program.
MISSING = "#e6e6e6"
MARK = "#d62728"


def _hex(rgba: np.ndarray) -> list[str]:
    return ["#{:02x}{:02x}{:02x}".format(*(int(round(255 * c)) for c in row[:3])) for row in rgba]


def heatmap_svg(
    values: Any,
    rows: Sequence[str],
    columns: Sequence[str],
    *,
    title: str,
    limits: tuple[float, float] = (-1.0, 1.0),
    cmap: str = "RdBu_r",
    marked: Mapping[int, str] | None = None,
    x_label: str = "",
    y_label: str = "",
) -> bytes:
    """An SVG heatmap of a 2-D array: rows top to bottom, columns left to right, a colour bar at the right.

    Args:
        values: `[len(rows), len(columns)]` numbers; nan is drawn grey.
        rows: Row labels, drawn left of the grid, the first at the top.
        columns: Column labels, drawn below the grid, turned a quarter (program tokens fit).
        title: Drawn above; newlines start new lines.
        limits: The values at the two ends of the colour map (values beyond are drawn at the ends).
        cmap: A matplotlib colormap name.
        marked: Column index -> short name: those columns are outlined, their labels drawn in red and
            the name written above the grid.
        x_label: Below the column labels.
        y_label: Left of the row labels, turned a quarter.

    Returns:
        The SVG document as UTF-8 bytes (for `Measurement.image`).

    Raises:
        ValueError: When the shape does not match the labels.
    """
    import matplotlib  # deferred: matplotlib costs ~0.3 s to import; only its colormaps are used

    grid = np.asarray(values, dtype=float)
    if grid.shape != (len(rows), len(columns)):
        raise ValueError(f"values have shape {grid.shape}; the labels need {(len(rows), len(columns))}")
    low, high = limits
    colormap = matplotlib.colormaps[cmap]
    scaled = np.clip((np.nan_to_num(grid, nan=low) - low) / (high - low), 0.0, 1.0)
    colours = np.array(_hex(colormap(scaled.ravel())), dtype=object).reshape(grid.shape)
    colours[~np.isfinite(grid)] = MISSING
    marked = dict(marked or {})
    # In a run of adjacent marked columns every second name is written a line higher, so they stay apart.
    raised, run = {}, 0
    for j in sorted(marked):
        run = run + 1 if j - 1 in marked else 0
        raised[j] = run % 2
    titles = title.split("\n")
    left = 8 + (LINE if y_label else 0) + CHAR * max((len(r) for r in rows), default=1)
    mark_lines = (1 + max(raised.values())) if marked else 0
    top = 8 + LINE * (len(titles) + mark_lines) + 4
    width, height = CELL * len(columns), CELL * len(rows)
    below = 8 + CHAR * max((len(c) for c in columns), default=1) + (LINE if x_label else 0)
    bar_x = left + width + 12
    stops = np.linspace(0.0, 1.0, 11)
    bar_labels = [f"{high:.3g}", f"{(low + high) / 2:.3g}", f"{low:.3g}"]
    title_width = 8 + 6.8 * max(len(t) for t in titles)  # 11 px characters
    document = (
        template_env()
        .get_template("heatmap.svg.j2")
        .render(
            total_width=round(max(bar_x + 16 + CHAR * max(len(b) for b in bar_labels) + 8, title_width)),
            total_height=round(top + height + below + 4),
            titles=titles,
            left=left,
            top=top,
            width=width,
            height=height,
            cell=CELL,
            line=LINE,
            cells=[
                (left + CELL * j, top + CELL * i, colours[i, j], _cell_text(grid[i, j]))
                for i in range(len(rows))
                for j in range(len(columns))
            ],
            rows=list(rows),
            columns=list(columns),
            marks={j: (name, top - 4 - LINE * raised[j]) for j, name in marked.items()},
            mark=MARK,
            x_label=x_label,
            y_label=y_label,
            below=below,
            bar_x=bar_x,
            bar_stops=list(zip((100 * stops).tolist(), _hex(colormap(stops[::-1])))),
            bar_labels=bar_labels,
        )
    )
    return document.encode("utf-8")


def _cell_text(value: float) -> str:
    return "undefined" if not np.isfinite(value) else f"{value:.3f}"
