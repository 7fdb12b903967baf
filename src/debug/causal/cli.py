"""The causal commands: `debug patch` (one full sweep, saved and drawn) and `debug seeds` (robust seeds).

Every numeric option is bounded: a value out of range is refused by the parser in one line that names the flag
and the valid range, before the model loads. A program longer than the model's context is refused next, after
generating and tokenizing the first program and before any forward (or any counterfactual is built).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn

from debug.causal.architectures import UnsupportedArchitectureError
from debug.causal.engine import SITES
from debug.causal.pairs import MAX_SEED, binding_program, check_program_fits, find_robust_seeds
from debug.causal.result import UnsolvedPairWarning
from debug.causal.runner import RESULTS_DIR, CausalExperimentRunner
from debug.models import DEFAULT_MODEL, load

__all__ = ["BoundedInt", "build_patch_parser", "build_seeds_parser", "main_patch", "main_seeds"]

#: Assignment lines of a generated program. Far past any model's context (a line is 4 or more tokens), and
#: small enough that generating and tokenizing the program to check it takes about a second.
MAX_SEQ_LEN = 100_000
#: Query depth: one variable per hop, 26 letters.
MAX_HOPS = 26
MAX_BATCH_SIZE = 1 << 20
MAX_COUNT = 10_000
MAX_SEEDS = 1_000_000


class BoundedInt:
    """An argparse `type=`: an integer in `low..high`, else a one-line error naming the range.

    Attributes:
        low: Smallest accepted value.
        high: Largest accepted value.
    """

    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high
        self.__name__ = f"integer in {low}..{high}"  # argparse names the type in its messages

    def __call__(self, text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be an integer in {self.low}..{self.high}; got {text!r}"
            ) from None
        if not self.low <= value <= self.high:
            raise argparse.ArgumentTypeError(f"must be in {self.low}..{self.high}; got {value}")
        return value

    def __repr__(self) -> str:
        return f"BoundedInt({self.low}, {self.high})"


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage block): `debug patch: error: ...`."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser(prog: str, description: str) -> _Parser:
    return _Parser(prog=prog, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)


def _program_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help="model id: embedded:<name>, a folder or a hub id"
    )
    parser.add_argument(
        "--num-hops", type=BoundedInt(1, MAX_HOPS), default=2, help="query depth of the binding chain"
    )
    parser.add_argument(
        "--seq-len", type=BoundedInt(1, MAX_SEQ_LEN), default=16, help="assignment lines per program"
    )


def build_patch_parser() -> argparse.ArgumentParser:
    """The parser of `debug patch`."""
    parser = _parser(
        "debug patch", "Run and plot one full layer x token patching sweep of a binding program."
    )
    _program_options(parser)
    parser.add_argument(
        "--rng-seed", type=BoundedInt(0, MAX_SEED), default=0, help="program seed (see `debug seeds`)"
    )
    parser.add_argument("--site", default="residual_stream", choices=sorted(SITES), help="what is patched")
    parser.add_argument(
        "--batch-size",
        type=BoundedInt(1, MAX_BATCH_SIZE),
        default=None,
        help="cells per forward (None: sized from free memory)",
    )
    parser.add_argument(
        "--results-dir", default=str(RESULTS_DIR), help="where the timestamped run folder goes"
    )
    return parser


def build_seeds_parser() -> argparse.ArgumentParser:
    """The parser of `debug seeds`."""
    parser = _parser(
        "debug seeds", "Find seeds whose original and counterfactual binding program the model answers right."
    )
    _program_options(parser)
    parser.add_argument(
        "--count", type=BoundedInt(1, MAX_COUNT), default=5, help="how many robust seeds to list"
    )
    parser.add_argument(
        "--max-seeds", type=BoundedInt(1, MAX_SEEDS), default=500, help="give up after this many seeds"
    )
    parser.add_argument("--start", type=BoundedInt(0, MAX_SEED), default=0, help="first seed to try")
    return parser


def _print_patch(results: dict[str, Any], paths: list[Any]) -> None:
    record, result = results["programs"][0], results["sweeps"][0]
    print(record["original"])
    print(
        f"\nanswer {result.answer.original_text!r} -> counterfactual {result.answer.counterfactual_text!r} "
        f"(seed {record['seed']}); original top-1 {result.original.top1!r}, counterfactual top-1 "
        f"{result.counterfactual.top1!r}; {result.forwards} forwards in {result.seconds:.2f} s"
    )
    for label, values in result.target_effects().items():
        finite = [(v, i) for i, v in enumerate(values) if v is not None]
        if finite:
            best, at = max(finite)
            print(f"  {label:<12} strongest normalized effect {best:+.2f} at layer {result.layer_labels[at]}")
    print(f"\nresults: {results['output_dir']}")
    for path in paths:
        print(f"picture: {path}")


def main_patch(argv: Sequence[str] | None = None) -> int:
    """`debug patch`: sweep the pair of one seed, save JSON and heatmaps, print where they are.

    Returns:
        0 on success, 2 for bad input (one line on stderr). A pair the model answers wrong is swept anyway,
        with a one-line warning on stderr.
    """
    args = build_patch_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    runner = CausalExperimentRunner(args.results_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnsolvedPairWarning)
        try:
            loaded = load(args.model)
            results = runner.run_intervention_experiment(
                loaded,
                intervention_type=args.site,
                num_hops=args.num_hops,
                seq_len=args.seq_len,
                rng_seed=args.rng_seed,
                batch_size=args.batch_size,
            )
        except (OSError, ValueError, UnsupportedArchitectureError) as exc:
            print(f"debug patch: {exc}", file=sys.stderr)
            return 2
    for warning in caught:
        if issubclass(warning.category, UnsolvedPairWarning):
            print(f"debug patch: warning: {warning.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    if not results["programs"]:
        print(
            f"debug patch: no program pair of equal token length from seed {args.rng_seed} "
            f"({len(results['skipped'])} seeds tried; first reason: {results['skipped'][0]['reason']})",
            file=sys.stderr,
        )
        return 2
    _print_patch(results, runner.plot_intervention_results(results))
    return 0


def main_seeds(argv: Sequence[str] | None = None) -> int:
    """`debug seeds`: print robust seeds for one (model, hops, seq_len).

    Returns:
        0 when a seed was found, 1 when none was, 2 for bad input (one line on stderr).
    """
    args = build_seeds_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        if args.start + args.max_seeds - 1 > MAX_SEED:
            raise ValueError(
                f"--start {args.start} + --max-seeds {args.max_seeds} passes the last seed {MAX_SEED}; "
                "lower either"
            )
        program = binding_program(args.seq_len, args.num_hops, args.start)  # bad hops / seq_len: one line
        loaded = load(args.model)
        check_program_fits(loaded, program)
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
