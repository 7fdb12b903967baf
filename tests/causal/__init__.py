"""Tests of debug.causal."""
