"""Matplotlib figures to files and to base64 text, closing each figure.

No torch here: the behavioural report embeds its plots through these too.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any


def figure_base64(fig: Any, *, dpi: int | None = None) -> str:
    """A figure as base64 PNG text (for pages that embed their images), closing the figure."""
    import matplotlib.pyplot as plt  # deferred: matplotlib costs ~0.3 s to import

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def save_figure(fig: Any, path: str | Path, *, dpi: int = 120) -> Path:
    """Save a figure as PNG, create parent folders, close the figure, and return the path."""
    import matplotlib.pyplot as plt  # deferred: matplotlib costs ~0.3 s to import

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    plt.close(fig)
    return path
