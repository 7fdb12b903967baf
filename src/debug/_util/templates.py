"""The jinja2 environment of the package's templates (`debug/templates`), written once for every page."""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def template_env() -> Any:
    """The jinja2 environment of the package's templates: autoescaped, strict, with the number filters.

    One per process: the environment caches each compiled template, which every causal case's two heatmaps
    would otherwise compile again.
    """
    import jinja2  # deferred: only pages and pictures need it

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("debug", "templates"),
        autoescape=True,  # every value is untrusted text: programs and model outputs
        undefined=jinja2.StrictUndefined,
    )
    env.filters["pct"] = lambda v: "–" if v is None else f"{100.0 * float(v):.1f}%"
    env.filters["num"] = lambda v, d=3: "–" if v is None else f"{float(v):.{d}f}"
    env.filters["signed_pp"] = lambda v: "–" if v is None else f"{100.0 * float(v):+.1f} pp"
    env.filters["pval"] = lambda v: "–" if v is None else (f"{float(v):.3g}")
    return env
