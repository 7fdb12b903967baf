"""debug: measure how language models trace code, and show how with causal tracing."""

from __future__ import annotations

from debug.programs import Program

__version__ = "0.1.0"

#: The model every command uses when none is named: a small char-level binder this project trains and ships.
DEFAULT_MODEL = "embedded:binder"

__all__ = ["DEFAULT_MODEL", "Program", "__version__"]
