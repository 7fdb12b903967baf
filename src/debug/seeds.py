"""Robust seeds: program seeds whose original and counterfactual the model both answers correctly.

A patching sweep is easiest to read on a pair the model gets right both ways: the clean run predicts the
original answer and the counterfactual run the counterfactual answer, so a normalized effect of 1 means "the
patched cell carries the whole difference". `debug seeds --model M --num-hops H --seq-len N` lists such seeds
(the seed project's ROBUST_SEEDS table); `debug patch --rng-seed S` draws the same pair from the same seed.

A seed S means: `make_variable_binding_program(N, np.random.RandomState(S), H)` and its counterfactual
`create_counterfactual_program(program, S, tokenizer)` (equal token length under the model's tokenizer).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from debug.programs import Program


def binding_pair(seq_len: int, num_hops: int, seed: int, tokenizer: Any = None) -> tuple[Program, Program]:
    """The (original, counterfactual) binding pair of one seed.

    Raises:
        ValueError: When the generator refuses the arguments or no counterfactual of equal length exists.
    """
    from debug.counterfactual import create_counterfactual_program
    from debug.generators import make_variable_binding_program

    program = make_variable_binding_program(seq_len, np.random.RandomState(seed), num_hops)
    return program, create_counterfactual_program(program, seed, tokenizer=tokenizer)


def answers_correctly(loaded: Any, programs: Sequence[Program]) -> list[bool]:
    """Whether greedy decoding starts with each program's answer (`debug.scoring.teacher_forced_correct`).

    The prompt is the program text itself, as in `debug.causal_tracing.sweep`.
    """
    from debug.scoring import teacher_forced_correct

    return teacher_forced_correct(loaded.model, loaded.tokenizer, programs)


def find_robust_seeds(
    loaded: Any, num_hops: int, seq_len: int, *, count: int = 5, max_seeds: int = 500, start: int = 0
) -> tuple[list[int], int]:
    """Seeds from `start` on whose pair the model answers correctly both ways.

    Returns:
        (up to `count` robust seeds, number of seeds tried).
    """
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


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    from debug import DEFAULT_MODEL

    parser = argparse.ArgumentParser(prog="debug seeds", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model id (default {DEFAULT_MODEL})")
    parser.add_argument(
        "--num-hops", type=int, default=2, help="query depth of the binding chain (default 2)"
    )
    parser.add_argument("--seq-len", type=int, default=16, help="assignment lines per program (default 16)")
    parser.add_argument("--count", type=int, default=5, help="how many robust seeds to list (default 5)")
    parser.add_argument(
        "--max-seeds", type=int, default=500, help="give up after this many seeds (default 500)"
    )
    parser.add_argument("--start", type=int, default=0, help="first seed to try (default 0)")
    return parser.parse_args(list(argv))


def main(argv: Sequence[str] | None = None) -> int:
    """`debug seeds`: print robust seeds for one (model, hops, seq_len); exit 1 when none is found."""
    args = _parse(sys.argv[1:] if argv is None else argv)
    from debug.models import load

    try:
        loaded = load(args.model)
        binding_pair(args.seq_len, args.num_hops, args.start)  # bad hops / seq_len fail here, in one line
        seeds, tried = find_robust_seeds(
            loaded, args.num_hops, args.seq_len, count=args.count, max_seeds=args.max_seeds, start=args.start
        )
    except (OSError, ValueError) as exc:
        print(f"debug seeds: {exc}", file=sys.stderr)
        return 2
    key = f"({args.num_hops}, {args.seq_len})"
    if not seeds:
        print(f"no robust seed for {key} on {args.model} in seeds {args.start}..{args.start + tried - 1}")
        return 1
    print(
        f"robust seeds for (num_hops, seq_len) = {key} on {args.model}: {seeds} "
        f"({len(seeds)} of {tried} tried)"
    )
    print(f"ROBUST_SEEDS[{key}] = {seeds[0]}")
    print(
        f"next: debug patch --model {args.model} --rng-seed {seeds[0]} --num-hops {args.num_hops} "
        f"--seq-len {args.seq_len}"
    )
    return 0
