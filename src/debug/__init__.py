"""debug: measure how language models trace code, and show how with causal tracing."""

from __future__ import annotations

#: The model every command uses when none is named: a small char-level binder this project trains and ships.
DEFAULT_MODEL = "embedded:binder"

from debug import generators, prompts  # noqa: E402  (DEFAULT_MODEL first: config reads it)
from debug.config import ExperimentConfig, quick_experiment  # noqa: E402
from debug.programs import Program  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "ExperimentConfig",
    "Program",
    "__version__",
    "generators",
    "prompts",
    "quick_experiment",
]
