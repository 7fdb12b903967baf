"""debug: measure how language models trace code, and show how with causal tracing."""

from __future__ import annotations

from importlib import metadata

from debug import generators, prompts
from debug._util.lazy import lazy_getattr
from debug.config import ExperimentConfig, quick_experiment
from debug.models import DEFAULT_MODEL
from debug.programs import Program

try:
    __version__ = metadata.version("debug")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

# Heavier entry points load on first use, so `import debug` stays light (no scipy, matplotlib or models).
_LAZY = {
    "ExperimentRunner": "debug.runner",
    "CausalExperimentRunner": "debug.causal.runner",
    "run_causal_tracing_experiment": "debug.causal.runner",
    "sweep": "debug.causal.engine",
}


__getattr__ = lazy_getattr(__name__, _LAZY)


__all__ = [
    "CausalExperimentRunner",
    "DEFAULT_MODEL",
    "ExperimentConfig",
    "ExperimentRunner",
    "Program",
    "__version__",
    "generators",
    "prompts",
    "quick_experiment",
    "run_causal_tracing_experiment",
    "sweep",
]
