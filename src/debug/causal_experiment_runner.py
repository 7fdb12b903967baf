"""The seed's import path of `CausalExperimentRunner`; the code lives in `debug.causal.runner`."""

from __future__ import annotations

from debug.causal.result import aggregate_by_target
from debug.causal.runner import RESULTS_DIR, CausalExperimentRunner

__all__ = ["RESULTS_DIR", "CausalExperimentRunner", "aggregate_by_target"]
