"""Causal eval speed: the behavioural eval case vs the causal eval case on the same programs, side by side.

    python bench/causal_eval.py                       # embedded:binder, 16 lines, 2 hops, N = 10
    python bench/causal_eval.py --num-seqs 20 --repeats 3

Every repeat times, in turn, on the same N binding programs (seeded like the eval cases):

* behavioural: `debug.plugin.evaluate.evaluate_case` - the variable-binding eval case as `pytest evals` runs
  it (answer cache off, so every repeat scores afresh);
* causal, batched: `debug.causal.evaluate.measure_binding_case` - the causal binding eval case as
  `pytest evals -k causal_binding` runs it (all of a case's pairs in one `sweep_pairs` call), metrics and
  heatmaps included;
* causal, per pair: `binding_pairs` then one `sweep` per measured pair (the first pair over every
  position, the others at their targets), the path the case took before `sweep_pairs`. It leaves out the
  metrics and heatmaps the batched case includes, so the per-pair / batched ratio is, if anything, low;
* sweeps only, batched: `binding_pairs` then one `sweep_pairs` call over the same pairs and positions.

Printed: medians over the repeats, the ratios, and the goal: causal (batched) <= 2x behavioural.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from types import SimpleNamespace
from typing import Any

import torch
from tabulate import tabulate

from debug import DEFAULT_MODEL
from debug.causal import sweep, sweep_pairs
from debug.causal.architectures import resolve_architecture
from debug.causal.evaluate import binding_pairs, measure_binding_case
from debug.causal.inputs import prepare_inputs
from debug.models import load
from debug.plugin import Case, Measurement, Task
from debug.plugin.evaluate import Backend, evaluate_case

GOAL = 2.0


def _measured(loaded: Any, args: argparse.Namespace) -> tuple[list[Any], list[Any]]:
    """The pairs the causal case sweeps (right both ways, else all with a counterfactual) and positions."""
    pairs = binding_pairs(loaded, args.hops, args.seq_len, args.num_seqs, args.seed)
    usable = [p for p in pairs if p.counterfactual is not None]
    measured = [p for p in usable if p.robust] or usable
    positions: list[Any] = [None]
    for pair in measured[1:]:
        targets = prepare_inputs(loaded.tokenizer, pair.original, pair.counterfactual).targets
        positions.append(sorted(set(targets.values())))
    return measured, positions


def behavioural(loaded: Any, args: argparse.Namespace) -> None:
    """The variable-binding eval case on the bench's programs."""
    task = Task(
        "bench", generator="make_variable_binding_program", prompt="{code}", knobs={"num_hops": args.hops}
    )
    case = Case(args.model, "bench", task, args.seq_len, args.num_seqs, args.seed, "variable_binding")
    options = SimpleNamespace(no_cache=True, batch_size=None, max_new_tokens=None)
    evaluate_case(Measurement("bench", "bench", "variable_binding"), case, loaded, Backend(options))


def causal_batched(loaded: Any, args: argparse.Namespace, out_dir: str) -> None:
    """The causal binding eval case, as the eval runs it."""
    measure = Measurement("bench", "bench", "causal_binding")
    measure_binding_case(
        loaded,
        measure,
        hops=args.hops,
        seq_len=args.seq_len,
        num_seqs=args.num_seqs,
        seed=args.seed,
        out_dir=out_dir,
    )


def causal_per_pair(loaded: Any, args: argparse.Namespace) -> int:
    """Pairs, then one sweep per pair; returns the forwards run."""
    layers = range(resolve_architecture(loaded.model).num_layers + 1)
    measured, positions = _measured(loaded, args)
    forwards = 0
    for pair, where in zip(measured, positions):
        result = sweep(
            loaded, pair.original, pair.counterfactual, layers=layers, positions=where, warn_unsolved=False
        )
        forwards += result.forwards
    return forwards


def sweeps_batched(loaded: Any, args: argparse.Namespace) -> int:
    """Pairs, then one `sweep_pairs` call; returns the forwards run."""
    layers = range(resolve_architecture(loaded.model).num_layers + 1)
    measured, positions = _measured(loaded, args)
    results = sweep_pairs(
        loaded,
        [(p.original, p.counterfactual) for p in measured],
        layers=layers,
        positions=positions,
        warn_unsolved=False,
    )
    # Pairs of one block share its forwards: count each block once.
    return sum({(r.forwards, round(r.seconds, 9)): r.forwards for r in results}.values())


def _timed(fn: Any, *args: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--num-seqs", type=int, default=10, help="programs per case, N (default 10)")
    parser.add_argument("--seq-len", type=int, default=16, help="assignment lines (default 16)")
    parser.add_argument("--hops", type=int, default=2, help="query depth (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (median)")
    args = parser.parse_args(argv)
    if args.num_seqs < 1 or args.repeats < 1:
        parser.error("--num-seqs and --repeats take a positive integer")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    loaded = load(args.model, device=args.device)

    with tempfile.TemporaryDirectory() as out_dir:
        # Warm-up: first-trace and first-forward costs are paid before any clock starts.
        small = argparse.Namespace(**{**vars(args), "num_seqs": 2, "seq_len": 4, "hops": min(args.hops, 4)})
        behavioural(loaded, small)
        causal_batched(loaded, small, out_dir)
        causal_per_pair(loaded, small)
        times: dict[str, list[float]] = {k: [] for k in ("behav", "batched", "per_pair", "sweeps")}
        forwards = {}
        for _ in range(args.repeats):
            times["behav"].append(_timed(behavioural, loaded, args)[0])
            times["batched"].append(_timed(causal_batched, loaded, args, out_dir)[0])
            seconds, forwards["per_pair"] = _timed(causal_per_pair, loaded, args)
            times["per_pair"].append(seconds)
            seconds, forwards["sweeps"] = _timed(sweeps_batched, loaded, args)
            times["sweeps"].append(seconds)
    med = {k: statistics.median(v) for k, v in times.items()}
    measured, _ = _measured(loaded, args)
    rows = [
        ["behavioural case (evaluate_case)", f"{med['behav']:.2f}", "", "1.00x"],
        [
            "causal case, batched (measure_binding_case)",
            f"{med['batched']:.2f}",
            "",
            f"{med['batched'] / med['behav']:.2f}x",
        ],
        [
            "causal, per pair (binding_pairs + sweep per pair)",
            f"{med['per_pair']:.2f}",
            forwards["per_pair"],
            f"{med['per_pair'] / med['behav']:.2f}x",
        ],
        [
            "causal, sweeps batched (binding_pairs + sweep_pairs)",
            f"{med['sweeps']:.2f}",
            forwards["sweeps"],
            f"{med['sweeps'] / med['behav']:.2f}x",
        ],
    ]
    device = loaded.model.get_input_embeddings().weight.device
    print(
        f"{args.model} on {device.type} ({torch.get_num_threads()} threads), N = {args.num_seqs} programs, "
        f"{args.seq_len} lines, {args.hops} hops, {len(measured)} pairs swept, median of {args.repeats}"
    )
    print(tabulate(rows, headers=["path", "seconds", "forwards", "/ behavioural"]))
    print(
        f"\nper pair / batched sweeps: {med['per_pair'] / med['sweeps']:.2f}x; "
        f"per pair / batched case: {med['per_pair'] / med['batched']:.2f}x"
    )
    ratio = med["batched"] / med["behav"]
    verdict = "met" if ratio <= GOAL else "not met"
    print(f"goal: causal case <= {GOAL:.0f}x behavioural case; measured {ratio:.2f}x ({verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
