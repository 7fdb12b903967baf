"""Tests of debug.train."""
