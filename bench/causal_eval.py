"""Causal eval speed: each causal eval case vs its behavioural twin on the same programs, side by side.

    python bench/causal_eval.py                        # embedded:binder, N = 50 (make evals), all families
    python bench/causal_eval.py --families binding --num-seqs 20 --repeats 3

For each family (binding: 16 lines, 2 hops; range: 4 iterations; boolean: 4 assignments, the shapes of
`evals/test_causal_*.py`), every repeat times, in turn, on the same N programs (seeded like the eval cases),
as `pytest evals` runs them (the causal cases after the behavioural ones, one answer cache):

* behavioural: `debug.plugin.evaluate.evaluate_case` on the family's generator in query form, prompt
  `{code}` - the behavioural eval case, with an empty answer cache of its own (a fresh folder each repeat),
  so it decodes every program and writes the answers;
* causal: `debug.causal.evaluate.measure_eval_case` - the causal eval case as `pytest evals -k causal_...`
  runs it without --num-seqs (every original answered, `SWEPT_PAIRS` pairs patched exactly at their
  targets, one attribution map), metrics, lens, knockout and pictures included, with the cache the twin
  just wrote: the originals' answers are read back, the counterfactuals' decoded;
* causal, cold: the same with no answer cache (`pytest evals -k causal_... --no-cache`, or a causal case
  run without its twin): every answer decoded.

Printed: medians over the repeats, the ratios per family and overall, the goal (causal <= 2x behavioural,
judged on the run as `pytest evals` makes it), "map rho": the Spearman correlation of the attribution map
with the exact effects at the first swept pair's targets (how far the drawn estimate can be trusted), and
the causal case's seconds by phase.
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
from debug.causal.evaluate import CAUSAL_FAMILIES, SWEPT_PAIRS, measure_eval_case
from debug.models import load
from debug.plugin import Case, Measurement, Task
from debug.plugin.evaluate import Backend, evaluate_case

GOAL = 2.0
#: The phases of a causal case (`debug.causal.evaluate`'s `info.seconds`).
PHASES = ("answers", "exact sweep", "lens and knockout", "attribution map and pictures")
#: Family -> (seq_len, knobs) of its causal eval module's task.
SHAPES: dict[str, tuple[int, dict[str, Any]]] = {
    "binding": (16, {"num_hops": 2}),
    "range": (4, {}),
    "boolean": (4, {}),
}


def _case(args: argparse.Namespace, family: str, num_seqs: int) -> Case:
    """The eval case both paths run: the causal module's generator and knobs, prompt `{code}`."""
    generator, fixed = CAUSAL_FAMILIES[family]
    seq_len, knobs = SHAPES[family]
    task = Task(family, generator=generator, prompt="{code}", seq_lens=(seq_len,), knobs={**fixed, **knobs})
    return Case(args.model, "bench", task, seq_len, num_seqs, args.seed, family)


def backend(cache_dir: str | None) -> Backend:
    """The plugin's backend with an answer cache in `cache_dir` (None: `--no-cache`)."""
    options = SimpleNamespace(
        no_cache=cache_dir is None, cache_dir=cache_dir, batch_size=None, max_new_tokens=None
    )
    return Backend(options)


def behavioural(loaded: Any, case: Case, backend: Backend) -> None:
    """The behavioural eval case on the case's programs."""
    evaluate_case(Measurement("bench", "bench", case.family), case, loaded, backend)


def causal(loaded: Any, case: Case, backend: Backend) -> Measurement:
    """The causal eval case on the same programs, as the eval runs it without --num-seqs."""
    measure = Measurement("bench", "bench", f"causal_{case.family}")
    measure_eval_case(case, loaded, measure, family=case.family, num_seqs_given=False, cache=backend.cache)
    return measure


def _timed(fn: Any, *args: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--num-seqs", type=int, default=50, help="programs per case, N (default 50)")
    parser.add_argument("--families", default=",".join(SHAPES), help="comma-separated (default all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="interleaved repeats (median; default 1)")
    args = parser.parse_args(argv)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    if args.num_seqs < 1 or args.repeats < 1:
        parser.error("--num-seqs and --repeats take a positive integer")
    if not families or any(f not in SHAPES for f in families):
        parser.error(f"--families takes names from {', '.join(SHAPES)}")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    loaded = load(args.model, device=args.device)

    rows, phases, totals = [], [], [0.0, 0.0, 0.0]
    cold = backend(None)
    for family in families:
        case = _case(args, family, args.num_seqs)
        # Warm-up: first-trace and first-forward costs are paid before any clock starts.
        warm = _case(args, family, 2)
        behavioural(loaded, warm, cold)
        causal(loaded, warm, cold)
        behav, caus, caus_cold = [], [], []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as cache_dir:
                shared = backend(cache_dir)  # empty: the twin decodes and writes, the causal case reads
                behav.append(_timed(behavioural, loaded, case, shared)[0])
                seconds, measure = _timed(causal, loaded, case, shared)
                caus.append(seconds)
            caus_cold.append(_timed(causal, loaded, case, cold)[0])
        b, c, cc = (statistics.median(v) for v in (behav, caus, caus_cold))
        for i, value in enumerate((b, c, cc)):
            totals[i] += value
        record = measure.to_record()
        swept = record["metrics"].get("swept_pairs", {}).get("k", 0)
        rho = record["info"].get("map_vs_exact_spearman")
        rows.append(
            [family, args.num_seqs, swept, f"{b:.2f}", f"{c:.2f}", f"{c / b:.2f}x", f"{cc / b:.2f}x", rho]
        )
        phases.append([family, *(f"{record['info']['seconds'].get(p, 0.0):.2f}" for p in PHASES)])
    device = loaded.model.get_input_embeddings().weight.device
    print(
        f"{args.model} on {device.type} ({torch.get_num_threads()} threads), N = {args.num_seqs} programs "
        f"per case, SWEPT_PAIRS = {SWEPT_PAIRS}, median of {args.repeats}"
    )
    headers = [
        "family",
        "programs",
        "pairs patched",
        "behavioural s",
        "causal s",
        "causal / behav",
        "cold / behav",
        "map rho",
    ]
    print(tabulate(rows, headers=headers))
    print("\ncausal case by phase (s, the last repeat after its twin, answers read from the cache):")
    print(tabulate(phases, headers=["family", *PHASES]))
    ratio, cold_ratio = totals[1] / totals[0], totals[2] / totals[0]
    verdict = "met" if ratio <= GOAL else "not met"
    print(
        f"\nall families: causal {totals[1]:.2f} s after the twins ({totals[2]:.2f} s cold), "
        f"behavioural {totals[0]:.2f} s"
    )
    print(
        f"goal: causal cases <= {GOAL:.0f}x their behavioural twins, as pytest evals runs them; measured "
        f"{ratio:.2f}x ({verdict}); cold, without the twin's answers: {cold_ratio:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
