"""A deterministic stand-in for models, to test eval modules and the plugin without loading anything.

Use it by overriding the `debug_backend` fixture in a conftest::

    import pytest
    from debug.plugin.testing import FakeBackend

    @pytest.fixture(scope="session")
    def debug_backend():
        return FakeBackend({"good": 0.8, "bad": 0.3})

A fake model answers a program correctly when a hash of (program, model) falls under its rate, so answers are
stable across runs and workers, and two fake models disagree on some programs (which McNemar needs). Model ids
starting with "broken" fail to load.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


def _wrong_answer(answer: Any) -> Any:
    if isinstance(answer, bool):
        return not answer
    if isinstance(answer, int):
        return answer + 1
    return f"not {answer}"


@dataclass(frozen=True)
class FakeLoaded:
    """What `FakeBackend.load` returns: the id and a fingerprint, like `debug.models.LoadedModel`."""

    model_id: str
    fingerprint: str


class FakeBackend:
    """Loads fake models and scores programs deterministically (see the module docstring).

    Args:
        rates: Model id -> probability of a correct answer (unknown ids answer at 0.5).
        unparsable: Model id -> probability of an answer no parser reads (counted as a parse failure).
    """

    def __init__(
        self, rates: Mapping[str, float] | None = None, unparsable: Mapping[str, float] | None = None
    ):
        self.rates = dict(rates or {})
        self.unparsable = dict(unparsable or {})
        self.loads: list[str] = []

    def load(self, model_id: str) -> FakeLoaded:
        """A fake model; ids starting with "broken" raise OSError like a missing checkpoint."""
        self.loads.append(model_id)
        if model_id.startswith("broken"):
            raise OSError(f"{model_id} is not a model folder (fake backend)")
        return FakeLoaded(model_id, hashlib.sha256(model_id.encode()).hexdigest()[:16])

    def score(
        self, loaded: FakeLoaded, programs: Sequence[Any], template: str, *, parser: Any = None
    ) -> list:
        """One sample dict per program, in order."""
        rate = self.rates.get(loaded.model_id, 0.5)
        junk = self.unparsable.get(loaded.model_id, 0.0)
        samples = []
        for program in programs:
            draw = (
                int(hashlib.sha256(f"{program.hash}:{loaded.model_id}".encode()).hexdigest()[:8], 16) / 16**8
            )
            prompt = template.replace("{code}", program.text)
            if draw < rate:
                output, parsed = str(program.answer), program.answer
            elif draw < rate + junk * (1 - rate):
                output, parsed = "I cannot tell", None
            else:
                wrong = _wrong_answer(program.answer)
                output, parsed = str(wrong), wrong
            samples.append(
                {
                    "prompt": prompt,
                    "prompt_hash": hashlib.sha256(prompt.encode()).hexdigest()[:16],
                    "program_hash": program.hash,
                    "raw_output": output,
                    "predicted_answer": parsed,
                    "correct": parsed == program.answer and parsed is not None,
                    "answer_logprob": -draw,
                }
            )
        return samples
