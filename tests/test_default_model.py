"""Acceptance of the shipped default model (`debug.DEFAULT_MODEL`) on 16-line programs it never saw.

Two held-out sets: the training code's own (`debug.train.eval_programs`, a seed range the training stream
never draws) and one from `independent_binding`, a generator that shares no code or distribution with
`debug.generators`, with CPython as the answer oracle.

`FLOOR` is what the shipped model measured on each set when it shipped, less a margin: a model swap or a
change to the scoring path that loses accuracy fails here. `GOAL` is issue 6's bar (>= 99% overall, >= 97% at
every hop count), which the shipped model meets on both sets.
"""

from __future__ import annotations

import functools

import pytest
from independent_binding import independent_programs

from debug import DEFAULT_MODEL, models
from debug.programs import Program
from debug.scoring import teacher_forced_correct
from debug.train import eval_programs

#: (overall, worst hop) the shipped model must keep on each set: measured at shipping (debug's set 0.996,
#: worst hop 0.99; the independent set 0.994, worst hop 0.98; 1,000 programs each), less 0.02 / 0.03.
FLOOR = {"debug-held-out": (0.976, 0.96), "independent-generator": (0.974, 0.95)}
GOAL = (0.99, 0.97)

SETS = {
    "debug-held-out": lambda: eval_programs(250),
    "independent-generator": lambda: independent_programs(250, seed=20261127),
}


@functools.cache  # both tests read the same measurement
def _accuracy(name: str) -> tuple[float, dict[int, float]]:
    programs: list[Program] = SETS[name]()
    loaded = models.load(DEFAULT_MODEL)
    correct = teacher_forced_correct(loaded.model, loaded.tokenizer, programs)
    by_hop: dict[int, list[bool]] = {}
    for program, ok in zip(programs, correct, strict=True):
        by_hop.setdefault(program.metadata["hops"], []).append(ok)
    return sum(correct) / len(correct), {h: sum(v) / len(v) for h, v in sorted(by_hop.items())}


@pytest.mark.parametrize("name", sorted(SETS))
def test_default_model_keeps_its_shipped_accuracy(name: str) -> None:
    overall, by_hop = _accuracy(name)
    assert overall >= FLOOR[name][0] and min(by_hop.values()) >= FLOOR[name][1], (overall, by_hop)


@pytest.mark.parametrize("name", sorted(SETS))
def test_default_model_meets_the_issue_6_goal(name: str) -> None:
    overall, by_hop = _accuracy(name)
    assert overall >= GOAL[0] and min(by_hop.values()) >= GOAL[1], (overall, by_hop)
