"""Tests of debug.plugin."""
