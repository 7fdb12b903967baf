"""The causal commands: `debug patch` (a sweep or another causal method, saved and drawn), `debug seeds`.

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

from debug._util.figures import save_figure
from debug._util.files import atomic_write_json, timestamped_dir
from debug._util.jsonable import jsonable
from debug.causal.architectures import UnsupportedArchitectureError, resolve_architecture
from debug.causal.das import das_by_layer, plot_das
from debug.causal.engine import REMOTE_CHOICES, SITES, check_remote
from debug.causal.forward import resolve_model
from debug.causal.knockout import knockout_by_layer, plot_knockout
from debug.causal.lens import logit_lens, plot_logit_lens
from debug.causal.pairs import MAX_SEED, binding_pair, binding_program, check_program_fits, find_robust_seeds
from debug.causal.path_patching import path_patch_heads, path_patch_hops, plot_path_patching
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
MAX_DIM = 1 << 16
MAX_STEPS = 100_000
#: `debug patch --method` choices: the patching sweep, then the knockout, lens, das and path_patching modules.
METHODS = ["sweep", "knockout", "lens", "das", "path"]


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
        "--method",
        default="sweep",
        choices=METHODS,
        help="sweep: activation patching; knockout: attention knockout; lens: logit lens; das: distributed "
        "alignment search by layer; path: path patching of every head",
    )
    parser.add_argument(
        "--query", default="final", help="knockout: query positions (comma-separated ints or target labels)"
    )
    parser.add_argument(
        "--keys",
        default="line:ref depth 1",
        help="knockout: key positions (ints, target labels, or line:<target> for that target's whole line)",
    )
    parser.add_argument(
        "--position", default="final", help="das: the intervened position (an int or a target label)"
    )
    parser.add_argument("--dim", type=BoundedInt(1, MAX_DIM), default=4, help="das: subspace dimension")
    parser.add_argument(
        "--num-pairs", type=BoundedInt(2, MAX_COUNT), default=8, help="das: pairs (seeds from --rng-seed on)"
    )
    parser.add_argument("--steps", type=BoundedInt(0, MAX_STEPS), default=200, help="das: training steps")
    parser.add_argument(
        "--receivers",
        default="logits",
        choices=["logits", "later"],
        help="path: receivers of every sender head",
    )
    parser.add_argument(
        "--sender-positions",
        default=None,
        help="path: where each sender head is patched: 'hops' (each chain line, one panel per hop; use "
        "--receivers later) or comma-separated ints / target labels / line:<target>; omitted: every "
        "position",
    )
    parser.add_argument(
        "--batch-size",
        type=BoundedInt(1, MAX_BATCH_SIZE),
        default=None,
        help="cells per forward (None: sized from free memory)",
    )
    parser.add_argument(
        "--remote",
        default="off",
        choices=sorted(REMOTE_CHOICES),
        help="sweep: where the forwards run; ndif: nnsight's remote execution (a hub model id and an NDIF "
        "API key: NDIF_API_KEY or nnsight's config), local: the same serialized requests run here",
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
    remote = REMOTE_CHOICES[args.remote]
    if args.method != "sweep":
        if remote:
            print(f"debug patch: --remote runs --method sweep only, not {args.method}", file=sys.stderr)
            return 2
        return _main_method(args)
    runner = CausalExperimentRunner(args.results_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnsolvedPairWarning)
        try:
            check_remote(args.model, remote, None)  # no key, or no hub model: one line before loading
            loaded = resolve_model(args.model, remote=remote)  # remote: no weights loaded here
            results = runner.run_intervention_experiment(
                loaded,
                intervention_type=args.site,
                num_hops=args.num_hops,
                seq_len=args.seq_len,
                rng_seed=args.rng_seed,
                batch_size=args.batch_size,
                remote=remote,
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


def _split_positions(text: str) -> list[Any]:
    return [int(p) if p.strip().isdigit() else p.strip() for p in text.split(",") if p.strip()]


def _method_pairs(loaded: Any, args: argparse.Namespace, count: int) -> list[Any]:
    """`count` binding pairs from seed --rng-seed on (seeds with no equal-length counterfactual skipped)."""
    found: list[Any] = []
    for seed in range(args.rng_seed, min(args.rng_seed + 20 * count, MAX_SEED + 1)):
        try:
            found.append(binding_pair(args.seq_len, args.num_hops, seed, loaded.tokenizer))
        except ValueError:
            continue
        if len(found) == count:
            return found
    raise ValueError(
        f"only {len(found)} of {count} seeds from {args.rng_seed} on have an equal-length counterfactual"
    )


def _run_method(loaded: Any, args: argparse.Namespace) -> tuple[Any, Any, list[str]]:
    """Run one non-sweep method: (JSON-ready result, figure, summary lines)."""
    num_layers = resolve_architecture(loaded.model).num_layers
    pairs = _method_pairs(loaded, args, args.num_pairs if args.method == "das" else 1)
    if args.method == "lens":
        result = logit_lens(loaded, *pairs[0])
        stays = "none" if result.stays_from_layer is None else result.stays_from_layer
        lines = [
            f"answer {result.answer_text!r} first decodes (lens top-1) at layer "
            f"{result.first_decoding_layer_label}, and stays top-1 from layer {stays}"
        ]
        lines += [
            f"  layer {label:>5}: rank {int(r):>3}  P(answer) {p:.3f}  top-1 {t!r}"
            for label, r, p, t in zip(result.layer_labels, result.rank, result.prob, result.top1)
        ]
        return result.to_dict(), plot_logit_lens(result), lines
    if args.method == "knockout":
        sets = [[layer] for layer in range(num_layers)] + [list(range(num_layers))]
        result = knockout_by_layer(
            loaded, pairs[0], _split_positions(args.query), _split_positions(args.keys), sets
        )
        lines = [
            f"queries {result.query_positions} cut from keys {result.key_positions}; unknocked P(orig) "
            f"{result.baseline.prob_original:.3f}"
        ]
        lines += [
            f"  {label:>6}: P(orig) {p:.3f}  top-1 {t!r}"
            for label, p, t in zip(result.row_labels, result.prob_original, result.top1)
        ]
        return result.to_dict(), plot_knockout(result), lines
    if args.method == "das":
        results = das_by_layer(
            loaded,
            pairs,
            range(num_layers + 1),
            _split_positions(args.position)[0],
            args.dim,
            steps=args.steps,
        )
        lines = [f"held-out IIA at {args.position!r}, dim {args.dim} (das / random subspace / full vector)"]
        lines += [
            f"  layer {r.layer:>2}: {r.metrics['das']['iia']:.2f} / "
            f"{r.metrics['random_subspace']['iia']:.2f} / {r.metrics['full_vector']['iia']:.2f}"
            for r in results
        ]
        return {"method": "das", "by_layer": [r.to_dict() for r in results]}, plot_das(results), lines
    if args.sender_positions == "hops":
        result = path_patch_hops(loaded, pairs[0], args.receivers)
    else:
        spec = None if args.sender_positions is None else _split_positions(args.sender_positions)
        result = path_patch_heads(loaded, pairs[0], args.receivers, sender_positions=spec)
    lines = [f"strongest sender heads (receivers {args.receivers!r}), normalized effect:"]
    for label in dict.fromkeys(result.position_labels):
        lines.append(f" sender at {label}:")
        lines += [
            f"  layer {layer} head {head}: {value:+.3f}"
            for layer, head, value in result.top_senders(label, 5)
        ]
    return result.to_dict(), plot_path_patching(result), lines


def _main_method(args: argparse.Namespace) -> int:
    """`debug patch --method M` for M other than sweep: run, save JSON and a picture, print a summary."""
    try:
        program = binding_program(args.seq_len, args.num_hops, args.rng_seed)  # bad hops / seq_len: one line
        loaded = load(args.model)
        check_program_fits(loaded, program)
        data, figure, lines = _run_method(loaded, args)
    except (OSError, ValueError, UnsupportedArchitectureError) as exc:
        print(f"debug patch: {exc}", file=sys.stderr)
        return 2
    folder = timestamped_dir(args.results_dir, prefix=f"{args.method}-")
    atomic_write_json(folder / f"{args.method}.json", jsonable({"model": args.model, **data}))
    picture = save_figure(figure, folder / f"{args.method}.png")
    print("\n".join(lines))
    print(f"\nresults: {folder}\npicture: {picture}")
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
