"""Files for plugin runs (pytester): a conftest using `FakeBackend`; an eval with its own generator."""

from __future__ import annotations

#: A conftest that swaps the real backend for `FakeBackend` ("good" 90%, "bad" 30% with some unparsable
#: answers).
FAKE_CONFTEST = """
import pytest
from debug.plugin.testing import FakeBackend


@pytest.fixture(scope="session")
def debug_backend():
    return FakeBackend({"good": 0.9, "bad": 0.3}, unparsable={"bad": 0.2})
"""

#: An eval module with its own tiny generator (no dependency on the generator registry or prompts).
FAKE_EVAL = """
from debug.plugin import Task
from debug.programs import Program


def make_count(seq_len, rng, step=1):
    start = rng.randint(0, 99)
    text = f"x = {start}\\n" + f"x = x + {step}\\n" * seq_len + "#x:"
    return Program(text, start + step * seq_len, {"answer_var": "x"})


TASKS = [Task("COUNT", generator=make_count, prompt="Trace this:\\n{code}", seq_lens=(2, 4), parser=int)]


def test_counting(debug_case, debug_model, measure):
    measure.evaluate(debug_case, debug_model)
"""
