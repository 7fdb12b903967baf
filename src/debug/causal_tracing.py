"""The seed's import path of the causal tracing entry points; the code lives in `debug.causal`.

`from debug.causal_tracing import sweep, run_causal_tracing_experiment` keeps working: the engine is
`debug.causal.engine`, the seed's runner `debug.causal.runner`.
"""

from __future__ import annotations

from debug.causal.engine import DIRECTION, METRICS, SITES, auto_batch_size, resolve_model, sweep
from debug.causal.inputs import CausalTracingError
from debug.causal.result import SweepResult, UnpatchedRun, UnsolvedPairWarning
from debug.causal.runner import run_causal_tracing_experiment

__all__ = [
    "DIRECTION",
    "METRICS",
    "SITES",
    "CausalTracingError",
    "SweepResult",
    "UnpatchedRun",
    "UnsolvedPairWarning",
    "auto_batch_size",
    "resolve_model",
    "run_causal_tracing_experiment",
    "sweep",
]
