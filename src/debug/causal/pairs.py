"""Binding pairs for patching, and robust seeds: seeds whose original and counterfactual a model gets right.

A patching sweep is easiest to read on a pair the model gets right both ways: the original run predicts the
original answer and the counterfactual run the counterfactual answer, so a normalized effect of 1 means "the
patched cell carries the whole difference". `debug seeds --model M --num-hops H --seq-len N` lists such seeds
(the seed project's ROBUST_SEEDS table); `debug patch --rng-seed S` draws the same pair from the same seed.

A seed S means: `make_variable_binding_program(N, np.random.RandomState(S), H)` and its counterfactual
`create_counterfactual_program(program, S, tokenizer)` (equal token length under the model's tokenizer).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from debug.causal.inputs import check_context, encode
from debug.counterfactual import create_counterfactual_program
from debug.generators import make_variable_binding_program
from debug.programs import Program
from debug.scoring import teacher_forced_correct

__all__ = ["answers_correctly", "binding_pair", "binding_program", "check_program_fits", "find_robust_seeds"]

#: Seeds are numpy `RandomState` seeds: 0..2**32 - 1.
MAX_SEED = 2**32 - 1


def binding_program(seq_len: int, num_hops: int, seed: int) -> Program:
    """The original binding program of one seed (no counterfactual: cheap, for checks before any work).

    Raises:
        ValueError: When the generator refuses the arguments (the message gives the valid range).
    """
    return make_variable_binding_program(seq_len, np.random.RandomState(seed), num_hops)


def binding_pair(seq_len: int, num_hops: int, seed: int, tokenizer: Any = None) -> tuple[Program, Program]:
    """The (original, counterfactual) binding pair of one seed.

    Raises:
        ValueError: When the generator refuses the arguments or no counterfactual of equal length exists.
    """
    program = binding_program(seq_len, num_hops, seed)
    return program, create_counterfactual_program(program, seed, tokenizer=tokenizer)


def check_program_fits(loaded: Any, program: Program, *, with_answer: bool = True) -> None:
    """Refuse a program (plus its answer, fed when teacher forcing) longer than the model's context.

    Raises:
        debug.causal.inputs.CausalTracingError: Naming both sizes; before any forward.
    """
    text = program.text + (str(program.answer) if with_answer else "")
    what = "the program with its answer" if with_answer else "the program"
    check_context(loaded, len(encode(loaded.tokenizer, text)), what)


def answers_correctly(loaded: Any, programs: Sequence[Program]) -> list[bool]:
    """Whether greedy decoding starts with each program's answer (`debug.scoring.teacher_forced_correct`).

    The prompt is the program text itself, as in `debug.causal.engine.sweep`.

    Raises:
        debug.causal.inputs.CausalTracingError: When a program with its answer is longer than the model's
            context (checked for all programs before the first forward).
    """
    for program in programs:
        check_program_fits(loaded, program)
    return teacher_forced_correct(loaded.model, loaded.tokenizer, programs)


def find_robust_seeds(
    loaded: Any, num_hops: int, seq_len: int, *, count: int = 5, max_seeds: int = 500, start: int = 0
) -> tuple[list[int], int]:
    """Seeds from `start` on whose pair the model answers correctly both ways.

    Returns:
        (up to `count` robust seeds, number of seeds tried).

    Raises:
        ValueError: When the generator refuses (seq_len, num_hops), or `count`, `max_seeds` or `start` are out
            of range; `CausalTracingError` (a ValueError) when the programs are longer than the model's
            context. Both before any forward.
    """
    if count < 1 or max_seeds < 1 or not 0 <= start <= MAX_SEED - max_seeds + 1:
        raise ValueError(
            f"count ({count}) and max_seeds ({max_seeds}) must be >= 1 and start ({start}) in "
            f"0..{MAX_SEED} - max_seeds + 1 (seeds are numpy RandomState seeds, 0..{MAX_SEED})"
        )
    check_program_fits(loaded, binding_program(seq_len, num_hops, start))
    found: list[int] = []
    tried = 0
    chunk = 64
    for first in range(start, start + max_seeds, chunk):
        pairs: list[tuple[int, Program, Program]] = []
        for seed in range(first, min(first + chunk, start + max_seeds)):
            try:
                pairs.append((seed, *binding_pair(seq_len, num_hops, seed, loaded.tokenizer)))
            except ValueError:
                continue  # no equal-length counterfactual for this seed
        tried = min(first + chunk, start + max_seeds) - start
        ok = answers_correctly(loaded, [p for _, o, c in pairs for p in (o, c)])
        found += [seed for k, (seed, _, _) in enumerate(pairs) if ok[2 * k] and ok[2 * k + 1]]
        if len(found) >= count:
            tried = found[count - 1] - start + 1
            return found[:count], tried
    return found, tried
