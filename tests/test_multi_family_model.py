"""Acceptance of one model that traces every program family in its query form (`MODEL`).

The bars, each on programs the model never trained on:

- every non-binding family at >= 97% over the eval suite's default lengths (`evals/test_*.py`), and range
  and integer tracking also at 8 steps, past those lengths;
- binding on both acceptance sets of `tests/test_default_model.py` (debug's held-out set and the
  independent generator of `independent_binding`): >= 99% at 16 lines, >= 97% at every hop count, and
  >= 95% at 24 lines.

Every answer is scored as the eval suite scores it: greedy decoding after the raw program, parsed by
`debug.parsing.parser_for` (`debug.scoring.score_programs`). `MODEL` is the default model, which the design
says traces every family; a multi-family model becomes the default only once it passes here. The shipped
default (`embedded:binder`) traces binding alone, so the test is a strict xfail: it measures and fails, and
the day a shipped model meets every bar the xfail turns into a failure that says to drop the marker.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import random

import pytest
from independent_binding import independent_programs

from debug import DEFAULT_MODEL, models
from debug.generators import make_variable_binding_program
from debug.programs import Program
from debug.scoring import score_programs
from debug.train import FAMILIES, eval_programs, family_programs
from debug.train.evaluate import EVAL_BASE_SEED

#: The model the goal is about.
MODEL = DEFAULT_MODEL
#: Every non-binding family's bar at its default lengths, and the families also held to it at 8 steps.
FAMILY_BAR = 0.97
AT_8_STEPS = ("range", "range_lines", "increments", "arithmetic", "counter", "fibonacci")
#: Binding's bars: (overall at 16 lines, every hop at 16 lines, overall at 24 lines).
BINDING_BARS = (0.99, 0.97, 0.95)
#: Programs per (family, length), per hop at 16 lines, and per hop at 24 lines: about 1,500 in all. The
#: 16-line sets are the largest: at the shipped binder's 0.99-0.996 a bar of 0.99 on 160 programs (two
#: errors fail it) measured 0.988 on the independent set, noise; on 400 it takes five errors.
PER_LENGTH, PER_HOP_16, PER_HOP_24 = 20, 100, 20


def _family_sets() -> dict[str, dict[int, list[Program]]]:
    chosen = [
        dataclasses.replace(f, seq_lens=(*f.default_lens, *((8,) if f.name in AT_8_STEPS else ())))
        for f in FAMILIES
        if not f.name.startswith("binding")
    ]
    return family_programs(PER_LENGTH, chosen)


def _debug_binding_24(per_hop: int) -> list[Program]:
    # debug's own 24-line programs, seeded in the held-out namespace as `eval_programs` seeds 16-line ones.
    out = []
    for hops in range(1, 5):
        for i in range(per_hop):
            digest = hashlib.sha256(f"{EVAL_BASE_SEED + hops}:24:{i}".encode()).hexdigest()
            out.append(make_variable_binding_program(24, random.Random(int(digest[:12], 16)), num_hops=hops))
    return out


BINDING_SETS = {
    "debug-held-out": (lambda: eval_programs(PER_HOP_16), lambda: _debug_binding_24(PER_HOP_24)),
    "independent-generator": (
        lambda: independent_programs(PER_HOP_16, seed=20261127),
        lambda: independent_programs(PER_HOP_24, seed=20261128, seq_len=24),
    ),
}


def _correct(loaded: models.LoadedModel, programs: list[Program]) -> list[bool]:
    return [sample.correct for sample in score_programs(loaded, programs, "{code}")]


@functools.cache
def _shortfalls() -> tuple[list[str], dict[str, float]]:
    """(every bar the model misses, in words; every accuracy measured)."""
    loaded = models.load(MODEL)
    misses, measured = [], {}
    for name, by_len in _family_sets().items():
        default = [p for n, ps in by_len.items() if n != 8 or name not in AT_8_STEPS for p in ps]
        cells = {"default lengths": default}
        if name in AT_8_STEPS:
            cells["8 steps"] = by_len[8]
        for where, programs in cells.items():
            acc = sum(_correct(loaded, programs)) / len(programs)
            measured[f"{name} at {where}"] = acc
            if acc < FAMILY_BAR:
                misses.append(f"{name} at {where}: {acc:.3f} < {FAMILY_BAR}")
    for name, (at_16, at_24) in BINDING_SETS.items():
        programs = at_16()
        correct = _correct(loaded, programs)
        overall = sum(correct) / len(correct)
        measured[f"binding {name} 16 lines"] = overall
        if overall < BINDING_BARS[0]:
            misses.append(f"binding {name} at 16 lines: {overall:.3f} < {BINDING_BARS[0]}")
        for hops in range(1, 5):
            hop = [ok for p, ok in zip(programs, correct, strict=True) if p.metadata["hops"] == hops]
            acc = sum(hop) / len(hop)
            measured[f"binding {name} 16 lines hop {hops}"] = acc
            if acc < BINDING_BARS[1]:
                misses.append(f"binding {name} at 16 lines, hop {hops}: {acc:.3f} < {BINDING_BARS[1]}")
        long = _correct(loaded, at_24())
        acc = sum(long) / len(long)
        measured[f"binding {name} 24 lines"] = acc
        if acc < BINDING_BARS[2]:
            misses.append(f"binding {name} at 24 lines: {acc:.3f} < {BINDING_BARS[2]}")
    return misses, measured


@pytest.mark.xfail(
    strict=True,
    reason="no multi-family model is shipped yet: the default, embedded:binder, traces binding only "
    "(docs/research/multi-family-training.md)",
)
def test_one_model_traces_every_family_at_and_past_the_eval_lengths() -> None:
    misses, measured = _shortfalls()
    assert not misses, "; ".join(misses)
    assert len(measured) == 8 + len(AT_8_STEPS) + 2 * 6
