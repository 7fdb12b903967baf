"""Training speed of the shipped recipe, side by side in one run: each device and data path, stage by stage.

    python bench/train.py                          # cpu, one thread, data in-process vs one data worker
    python bench/train.py --devices cpu cuda       # adds the GPU (with --workers data processes)

The recipe's steps differ in cost by stage (2-line programs are about a fifth the tokens of 16-line ones), so
every stage of `DEFAULT_CURRICULUM`, then `DEFAULT_MIX`, is timed on its own: `debug.train.train` itself runs
`--steps` steps of that stage's data from the recipe's starting weights, with no evaluation in the loop, and
its own wall clock (`TrainResult.wall_seconds`, which starts after the model is built) gives steps/s. From
those rates the script estimates the wall time of the whole schedule (every stage's steps, then the rest of
`--schedule` on the final mix; the held-out evaluations every 500 steps are not included).

Cases, each timed in the same process:

* `cpu` with data built in-process (`data_workers=0`): how the shipped binder was trained;
* `cpu+workers`: the same with `--workers` processes building batches ahead (on a 2-core machine one
  worker leaves the model one core, the same as the first case's thread);
* `cuda` (with `--devices cuda`): the same config on the GPU, data built ahead by `--workers` processes.

The data path alone (plan, generate and encode one batch in this process) is timed too, and its share of a
`cpu` step is printed: where that share is small, the model, not Python, bounds a CPU step, and data workers
cannot buy much. Steps/s do not depend on what the weights have learned, so every case starts from scratch.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import time

from tabulate import tabulate

from debug.tokenizer import build_char_tokenizer
from debug.train import DEFAULT_CURRICULUM, DEFAULT_MIX, PRESETS, DataSource, TrainConfig, train
from debug.train.data import BatchStream, Curriculum


def stage_mixes(schedule: int) -> list[tuple[str, int, tuple[DataSource, ...]]]:
    """(label, steps in the schedule, mix) for every stage of the default recipe, then its final mix."""
    stages = [
        (f"stage {k + 1}: {_lengths(stage.mix)} lines", stage.steps, stage.mix)
        for k, stage in enumerate(DEFAULT_CURRICULUM)
    ]
    rest = schedule - sum(stage.steps for stage in DEFAULT_CURRICULUM)
    return [*stages, (f"final mix: {_lengths(DEFAULT_MIX)} lines", rest, DEFAULT_MIX)]


def _lengths(mix: tuple[DataSource, ...]) -> str:
    lengths = sorted({n for source in mix for n in source.seq_lens})
    return str(lengths[0]) if len(lengths) == 1 else f"{lengths[0]}-{lengths[-1]}"


def timed_config(mix: tuple[DataSource, ...], steps: int, device: str, threads: int | None) -> TrainConfig:
    """The default recipe on one stage's data, stopped after `steps`, with no evaluation in the loop."""
    return dataclasses.replace(
        PRESETS["default"],
        mix=mix,
        curriculum=(),
        stop_after=steps,
        eval_every=0,
        eval_per_hop=1,
        checkpoints=(),
        log_every=0,
        device=device,
        threads=threads,
    )


def steps_per_second(config: TrainConfig, workers: int) -> float:
    """Steps/s of `train` over `config.stop_after` steps, by its own clock (model building excluded)."""
    result = train(config, log=lambda _line: None, data_workers=workers)
    return result.steps_done / result.wall_seconds


def batch_seconds(mix: tuple[DataSource, ...], batch_size: int, batches: int) -> float:
    """Median seconds to plan, generate and encode one batch of `mix` in this process."""
    stream = BatchStream(Curriculum(mix, ()), random.Random(0), batch_size, build_char_tokenizer())
    times = []
    with stream:
        for _ in range(batches):
            start = time.perf_counter()
            stream.next()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", nargs="+", default=["cpu"], choices=["cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=100, help="steps timed per stage and case")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on cpu (the recipe's: 1)")
    parser.add_argument("--workers", type=int, default=1, help="data worker processes for the worker cases")
    parser.add_argument(
        "--schedule", type=int, default=PRESETS["default"].steps, help="steps in the whole-run estimate"
    )
    args = parser.parse_args()

    cases: list[tuple[str, str, int, int | None]] = []
    if "cpu" in args.devices:
        cases += [("cpu", "cpu", 0, args.threads), ("cpu+workers", "cpu", args.workers, args.threads)]
    if "cuda" in args.devices:
        cases.append(("cuda", "cuda", args.workers, None))
    stages = stage_mixes(args.schedule)
    batch_size = PRESETS["default"].batch_size

    rates: dict[str, list[float]] = {name: [] for name, *_ in cases}
    data_ms: list[float] = []
    for label, _steps, mix in stages:
        data_ms.append(1000 * batch_seconds(mix, batch_size, batches=max(20, args.steps // 5)))
        for name, device, workers, threads in cases:
            # A short untimed run first: CUDA context, kernel selection and allocator warm-up are not steps.
            steps_per_second(timed_config(mix, 5, device, threads), workers)
            rates[name].append(steps_per_second(timed_config(mix, args.steps, device, threads), workers))
            print(f"{label:<28} {name:<12} {rates[name][-1]:7.2f} steps/s", flush=True)

    rows = []
    for k, (label, steps, _mix) in enumerate(stages):
        row = [label, f"{steps:,}", f"{data_ms[k]:.1f}"]
        row += [f"{rates[name][k]:.2f}" for name, *_ in cases]
        if "cpu" in rates:
            row.append(f"{data_ms[k] / 1000 * rates['cpu'][k]:.0%}")
        rows.append(row)
    schedule = [steps for _label, steps, _mix in stages]
    totals = {name: sum(n / rate for n, rate in zip(schedule, r)) for name, r in rates.items()}
    rows.append(["whole schedule (estimate)", f"{args.schedule:,}", "", *map(_hours, totals.values())])
    headers = ["stage", "steps", "data ms/batch", *(f"{name} steps/s" for name, *_ in cases)]
    if "cpu" in rates:
        headers.append("data share of a cpu step")
    print()
    print(tabulate(rows, headers=headers, disable_numparse=True))
    print()
    for name, total in totals.items():
        if "cpu" in totals and name != "cpu":
            print(f"whole schedule, {name} vs cpu: {totals['cpu'] / total:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
