"""Import the heavy modules a run needs at its end (scipy.stats, matplotlib, jinja2) ahead of time.

Tests that run the plugin in-process with `pytester` import this module first: pytester forgets modules first
imported inside an inner run, so without it every inner run would pay the imports again.
"""

from __future__ import annotations

import contextlib

import jinja2  # noqa: F401
import matplotlib
import scipy.stats  # noqa: F401
import tabulate  # noqa: F401

matplotlib.use("Agg")

import matplotlib.pyplot  # noqa: E402, F401

import debug.plugin.compare  # noqa: E402, F401
import debug.plugin.html  # noqa: E402, F401
import debug.plugin.results  # noqa: E402, F401
import debug.plugin.session  # noqa: E402, F401
import debug.plugin.storage  # noqa: E402, F401
import debug.plugin.terminal  # noqa: E402, F401
import debug.stats  # noqa: E402, F401

# hypothesis's pytest plugin imports hypothesis at the end of every inner run when it is installed.
with contextlib.suppress(ImportError):
    import hypothesis  # noqa: F401
