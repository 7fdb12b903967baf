"""Causal tracing: activation patching of program pairs through nnsight, its results, plots and commands.

    from debug.causal import binding_pair, sweep
    from debug.models import load

    loaded = load("embedded:binder")
    original, counterfactual = binding_pair(seq_len=16, num_hops=2, seed=0, tokenizer=loaded.tokenizer)
    result = sweep(loaded, original, counterfactual, site="residual_stream")

Modules: `architectures` (module paths per model family), `inputs` (pairs -> token ids, answers, checks),
`engine` (`sweep`, the batched patching engine), `lens` (`logit_lens`, `logit_lens_programs`), `knockout`
(`attention_knockout`), `das` (distributed alignment search: `from debug.causal.das import das`, since the
name `debug.causal.das` is the module), `path_patching` (`path_patch`), `result` (`SweepResult`,
`aggregate_by_target`), `pairs` (binding pairs and robust seeds), `plots` (heatmaps), `runner` (the seed's
`CausalExperimentRunner` and `run_causal_tracing_experiment`), `evaluate` (the causal eval's measurement) and
`cli` (`debug patch`, `debug seeds`).

Importing this package is light (no torch, nnsight or matplotlib): the names that need them load on first use.
"""

from __future__ import annotations

from debug._util.lazy import lazy_getattr
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
    "sweep_pairs": "debug.causal.engine",
    "METHODS": "debug.causal.attribution",
    "AttributionCheck": "debug.causal.attribution",
    "agreement": "debug.causal.attribution",
    "attribution_sweep": "debug.causal.attribution",
    "verify_attribution": "debug.causal.attribution",
    "attention_knockout": "debug.causal.knockout",
    "knockout_by_layer": "debug.causal.knockout",
    "KnockoutResult": "debug.causal.knockout",
    "plot_knockout": "debug.causal.knockout",
    "logit_lens": "debug.causal.lens",
    "logit_lens_programs": "debug.causal.lens",
    "LensResult": "debug.causal.lens",
    "plot_logit_lens": "debug.causal.lens",
    "das_by_layer": "debug.causal.das",
    "DASResult": "debug.causal.das",
    "plot_das": "debug.causal.das",
    "path_patch": "debug.causal.path_patching",
    "path_patch_heads": "debug.causal.path_patching",
    "path_patch_hops": "debug.causal.path_patching",
    "PathPatchResult": "debug.causal.path_patching",
    "plot_path_patching": "debug.causal.path_patching",
    "CausalExperimentRunner": "debug.causal.runner",
    "run_causal_tracing_experiment": "debug.causal.runner",
    "plot_head_heatmaps": "debug.causal.plots",
    "plot_ref_depth_aggregate": "debug.causal.plots",
    "plot_token_heatmap": "debug.causal.plots",
    "measure_binding_case": "debug.causal.evaluate",
}


__getattr__ = lazy_getattr(__name__, _LAZY)


__all__ = [
    "ARCHITECTURES",
    "METRIC_NAMES",
    "METHODS",
    "AnswerTokens",
    "Architecture",
    "AttributionCheck",
    "CausalExperimentRunner",
    "CausalTracingError",
    "PairedInputs",
    "SITES",
    "SweepResult",
    "UnpatchedRun",
    "UnsolvedPairWarning",
    "UnsupportedArchitectureError",
    "aggregate_by_target",
    "agreement",
    "answers_correctly",
    "as_pair",
    "attribution_sweep",
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
    "sweep_pairs",
    "verify_attribution",
    "warn_if_unsolved",
    "DASResult",
    "KnockoutResult",
    "LensResult",
    "PathPatchResult",
    "attention_knockout",
    "das_by_layer",
    "knockout_by_layer",
    "logit_lens",
    "logit_lens_programs",
    "path_patch",
    "path_patch_heads",
    "path_patch_hops",
    "plot_das",
    "plot_knockout",
    "plot_logit_lens",
    "plot_path_patching",
]
