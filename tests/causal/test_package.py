"""`debug.causal`: a light import, a public API that resolves, and the seed's import paths."""

from __future__ import annotations

import subprocess
import sys

import debug.causal


def test_importing_the_package_loads_no_heavy_library() -> None:
    code = (
        "import sys, debug.causal, debug.causal.pairs, debug.causal.result\n"
        "heavy = [m for m in ('torch', 'nnsight', 'matplotlib', 'transformers', 'scipy')"
        " if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_public_name_resolves() -> None:
    for name in debug.causal.__all__:
        assert getattr(debug.causal, name) is not None, name


def test_the_seed_paths_re_export_the_same_objects() -> None:
    import debug.causal_experiment_runner as seed_runner
    import debug.causal_tracing as seed_tracing
    import debug.causal_visualization as seed_plots

    assert seed_tracing.sweep is debug.causal.sweep
    assert seed_tracing.run_causal_tracing_experiment is debug.causal.run_causal_tracing_experiment
    assert seed_runner.CausalExperimentRunner is debug.causal.CausalExperimentRunner
    assert seed_plots.plot_token_heatmap is debug.causal.plot_token_heatmap
    for module in (seed_tracing, seed_runner, seed_plots):
        assert all(hasattr(module, name) for name in module.__all__)
