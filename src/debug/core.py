"""Seed module: `from debug.core import ExperimentConfig, parse_integer, ...` keeps working."""

from debug.config import ExperimentConfig, quick_experiment
from debug.parsing import parse_boolean, parse_integer, parse_text, parse_variable_binding, parser_for

__all__ = [
    "ExperimentConfig",
    "parse_boolean",
    "parse_integer",
    "parse_text",
    "parse_variable_binding",
    "parser_for",
    "quick_experiment",
]
