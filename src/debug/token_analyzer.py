"""Seed module name: `from debug.token_analyzer import TokenAnalyzer` keeps working."""

from debug.tokens import TokenAnalyzer, TokenTargets

__all__ = ["TokenAnalyzer", "TokenTargets"]
