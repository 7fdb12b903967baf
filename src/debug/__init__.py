"""debug: measure how language models trace code, and show how with causal tracing."""

from __future__ import annotations

#: The model every command uses when none is named: a small char-level binder this project trains and ships.
DEFAULT_MODEL = "embedded:binder"

from debug import generators, prompts  # noqa: E402  (DEFAULT_MODEL first: config reads it)
from debug.config import ExperimentConfig, quick_experiment  # noqa: E402
from debug.programs import Program  # noqa: E402

__version__ = "0.1.0"

# Heavier entry points load on first use, so `import debug` stays light (no scipy, matplotlib or models).
_LAZY = {
    "ExperimentRunner": "debug.runner",
    "CausalExperimentRunner": "debug.causal_experiment_runner",
    "run_causal_tracing_experiment": "debug.causal_tracing",
    "sweep": "debug.causal_tracing",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'debug' has no attribute {name!r}")


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
