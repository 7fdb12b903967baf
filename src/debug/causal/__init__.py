"""Causal tracing: activation patching of program pairs through nnsight, its results, plots and commands.

    from debug.causal import binding_pair, sweep
    from debug.models import load

    loaded = load("embedded:binder")
    original, counterfactual = binding_pair(seq_len=16, num_hops=2, seed=0, tokenizer=loaded.tokenizer)
    result = sweep(loaded, original, counterfactual, site="residual_stream")

Modules: `architectures` (module paths per model family), `inputs` (pairs -> token ids, answers, checks),
`engine` (`sweep`, the batched patching engine), `result` (`SweepResult`, `aggregate_by_target`), `pairs`
(binding pairs and robust seeds), `plots` (heatmaps), `runner` (the seed's `CausalExperimentRunner` and
`run_causal_tracing_experiment`), `evaluate` (the causal eval's measurement) and `cli` (`debug patch`,
`debug seeds`).

Importing this package is light (no torch, nnsight or matplotlib): the names that need them load on first use.
"""

from __future__ import annotations

import importlib

from debug.causal.inputs import AnswerTokens, CausalTracingError, PairedInputs, as_pair, prepare_inputs
from debug.causal.pairs import answers_correctly, binding_pair, find_robust_seeds
from debug.causal.result import (
    METRIC_NAMES,
    SweepResult,
    UnpatchedRun,
    UnsolvedPairWarning,
    aggregate_by_target,
    warn_if_unsolved,
)

# Names whose modules import torch, nnsight or matplotlib load on first use: name -> module.
_LAZY = {
    "ARCHITECTURES": "debug.causal.architectures",
    "Architecture": "debug.causal.architectures",
    "UnsupportedArchitectureError": "debug.causal.architectures",
    "resolve_architecture": "debug.causal.architectures",
    "supported_architectures": "debug.causal.architectures",
    "SITES": "debug.causal.engine",
    "sweep": "debug.causal.engine",
    "CausalExperimentRunner": "debug.causal.runner",
    "run_causal_tracing_experiment": "debug.causal.runner",
    "plot_head_heatmaps": "debug.causal.plots",
    "plot_ref_depth_aggregate": "debug.causal.plots",
    "plot_token_heatmap": "debug.causal.plots",
    "measure_binding_case": "debug.causal.evaluate",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'debug.causal' has no attribute {name!r}")


__all__ = [
    "ARCHITECTURES",
    "METRIC_NAMES",
    "AnswerTokens",
    "Architecture",
    "CausalExperimentRunner",
    "CausalTracingError",
    "PairedInputs",
    "SITES",
    "SweepResult",
    "UnpatchedRun",
    "UnsolvedPairWarning",
    "UnsupportedArchitectureError",
    "aggregate_by_target",
    "answers_correctly",
    "as_pair",
    "binding_pair",
    "find_robust_seeds",
    "measure_binding_case",
    "plot_head_heatmaps",
    "plot_ref_depth_aggregate",
    "plot_token_heatmap",
    "prepare_inputs",
    "resolve_architecture",
    "run_causal_tracing_experiment",
    "supported_architectures",
    "sweep",
    "warn_if_unsolved",
]
