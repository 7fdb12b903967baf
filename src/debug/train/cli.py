"""`debug train` and `debug train-report`: the command lines over `debug.train`.

Every recipe field the command line can set is named once (`debug.train.config.VALUE_FLAGS`, `SWITCHES`):
`config_from_args` applies them to a preset, `resume_config` refuses them on `--resume` (the run folder holds
the recipe) except the schedule's (`SCHEDULE_KEYS`, where the steps already trained keep their rates), and
`debug.train.card.reproduce_command` writes them back out as the command that replays a saved model.

Where a run saves: `--out-dir DIR` (default `runs/<name>`) receives the model folder `DIR/<name>/` and every
`--checkpoint` copy beside it; `--ship` writes them into the installed package's `embedded/` folder
instead, as `embedded:<name>`. Nothing is written into the package without `--ship`, and no model folder
that exists is replaced without `--overwrite`. The model's name is `--name`, else (with `--ship`) the
preset's ship name, else the last part of `--out-dir`, else the preset's own name (`default`, `grow-8`,
...). Every numeric option is checked against its range (`debug.train.config.RANGES`) before any work.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from debug.models import DEFAULT_MODEL, EMBEDDED_DIR
from debug.train.checkpoint import check_resumable, load_output_record, resumed_step
from debug.train.config import (
    DEVICES,
    INITS,
    PRESETS,
    RANGES,
    RUNTIME_KEYS,
    SCHEDULE_KEYS,
    SWITCHES,
    VALUE_FLAGS,
    Range,
    TrainConfig,
    check_config,
    flag,
    load_run_config,
)
from debug.train.evaluate import short_eval
from debug.train.loop import train
from debug.train.report import (
    REPORT_RANGES,
    check_patch_families,
    check_report_args,
    default_checkpoints,
    training_report,
)

#: Per-sitting fields with a flag (`log_every` has none): a resumed sitting may set them.
SITTING_FLAGS = tuple(key for key in RUNTIME_KEYS if key != "log_every")
#: Bounds of the options that are not config fields.
DATA_WORKERS = Range(0, 256)
SAVE_EVERY = RANGES["eval_every"]  # 0 (never) up to any step count


def bounded(valid: Range) -> Callable[[str], float]:
    """An argparse `type` that parses a number and refuses it outside `valid`, naming the range.

    The returned callable carries `valid` as `.range` (the tests walk every numeric option through it).
    """

    def parse(text: str) -> float:
        try:
            value: float = int(text) if valid.integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {valid.describe()}; got {text!r}") from None
        if not valid.contains(value):
            raise argparse.ArgumentTypeError(f"must be {valid.describe()}; got {text}")
        return value

    parse.range = valid  # type: ignore[attr-defined]
    parse.__name__ = "integer" if valid.integer else "number"  # argparse names the type in its errors
    return parse


def _preset_default(key: str) -> str:
    value = getattr(PRESETS["default"], key)
    return f"default: the preset's; {'none' if value is None else value} in `default`"


def train_parser() -> argparse.ArgumentParser:
    """The parser of `debug train` (every option's default is in its help)."""
    parser = argparse.ArgumentParser(
        prog="debug train",
        description="Train a small binder model from a fixed seed; save it under --out-dir (or --ship it).",
    )
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), default="default", help="base configuration (default: default)"
    )
    parser.add_argument(
        "--name",
        help="the saved model's name (default: the last part of --out-dir; with --ship the preset's ship "
        "name; else the preset's name)",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--out-dir",
        help="folder receiving <name>/ and every --checkpoint copy (default: runs/<name>; on --resume: where "
        "the run saves)",
    )
    where.add_argument(
        "--ship",
        action="store_true",
        help="save into the installed package's embedded/ folder, as embedded:<name> (default: off)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace model folders (and a run folder) that already exist (default: off, refused)",
    )
    _add_recipe_options(parser)
    parser.add_argument(
        "--data-workers",
        type=bounded(DATA_WORKERS),
        default=0,
        help="processes generating batches ahead (default: 0, in-process; same data either way)",
    )
    parser.add_argument(
        "--save-every",
        type=bounded(SAVE_EVERY),
        default=0,
        help="save a resumable checkpoint every N steps and where the sitting stops (default: 0, never)",
    )
    parser.add_argument(
        "--run-dir", help="folder for resumable checkpoints (default: --out-dir; with --ship runs/<name>)"
    )
    parser.add_argument(
        "--resume",
        metavar="DIR",
        help="continue the run saved in DIR from its last checkpoint (default: none, a new run)",
    )
    return parser


def _add_recipe_options(parser: argparse.ArgumentParser) -> None:
    def number(key: str, text: str, **kw: Any) -> None:
        parser.add_argument(
            flag(key), type=bounded(RANGES[key]), help=f"{text} ({_preset_default(key)})", **kw
        )

    number("seed", "seeds the weights and the data stream")
    number("steps", "optimizer steps the schedule is laid out over")
    number("batch_size", "programs per step")
    number("micro_batches", "forwards per step, rows grouped by length (same gradient, less padding)")
    number("lr", "peak AdamW learning rate")
    number("lr_floor", "fraction of --lr the cosine ends at (1: constant)")
    number(
        "decay_steps", "the cosine takes only the last N steps, constant rate before (0: all after warmup)"
    )
    number("layers", "decoder layers")
    number("hidden", "residual width (a multiple of --heads)")
    number("heads", "attention heads (key-value heads too)")
    parser.add_argument(
        "--init", choices=INITS, help=f"starting weights, see build_decoder ({_preset_default('init')})"
    )
    parser.add_argument(
        "--start-from",
        metavar="MODEL",
        help="start from this trained model, grown to --layers/--hidden/--heads "
        f"({_preset_default('start_from')})",
    )
    parser.add_argument(
        "--line-targets",
        action="store_true",
        default=None,
        help="also train every line's value, dense targets (default: the preset's, off in `default`)",
    )
    number("eval_every", "evaluate every N steps (0: only at the end)")
    number("eval_per_hop", "held-out programs per hop count")
    number("eval_per_length", "held-out programs per family and length (0: binding only)")
    parser.add_argument(
        "--max-minutes",
        type=bounded(RANGES["max_minutes"]),
        help="stop (and save) after this much wall time (default: no limit)",
    )
    parser.add_argument(
        "--threads", type=bounded(RANGES["threads"]), help="torch intra-op threads (default: torch's own)"
    )
    parser.add_argument(
        "--stop-after",
        type=bounded(RANGES["stop_after"]),
        help="stop at this step, the schedule still over --steps (default: run every step)",
    )
    parser.add_argument(
        "--checkpoint",
        action="append",
        default=None,
        metavar="STEP:NAME",
        help="also save NAME at STEP; repeatable (default: the preset's, "
        f"{', '.join(f'{s}:{n}' for s, n in PRESETS['default'].checkpoints)} in `default`)",
    )
    parser.add_argument("--device", choices=DEVICES, help="where to train (default: auto, CUDA when visible)")
    parser.add_argument(
        "--bf16", action="store_true", default=None, help="bfloat16 autocast, CUDA only (default: off)"
    )


def _checkpoints(items: list[str]) -> tuple[tuple[int, str], ...]:
    pairs = []
    for item in items:
        step, _, name = item.partition(":")
        if not step.isdigit() or not name:
            raise SystemExit(
                f"debug train: --checkpoint takes STEP:NAME (e.g. 300:binder-early); got {item!r}"
            )
        pairs.append((int(step), name))
    return tuple(pairs)


def run_name(args: argparse.Namespace) -> str:
    """The saved model's name: `--name`, the preset's ship name under `--ship`, `--out-dir`'s last part, or
    the preset's own name."""
    if args.name is not None:
        return args.name
    if args.ship:
        return PRESETS[args.preset].name
    if args.out_dir:
        return Path(args.out_dir).resolve().name
    return args.preset


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The preset with every option given on the command line applied, named by `run_name`."""
    overrides: dict[str, Any] = {"name": run_name(args)}
    for key in (*VALUE_FLAGS, *SWITCHES, *SITTING_FLAGS, "device"):
        if getattr(args, key) is not None and key != "name":
            overrides[key] = getattr(args, key)
    if args.heads is not None:
        overrides["kv_heads"] = args.heads
    if args.checkpoint is not None:
        overrides["checkpoints"] = _checkpoints(args.checkpoint)
    return dataclasses.replace(PRESETS[args.preset], **overrides)


def resume_config(args: argparse.Namespace) -> TrainConfig:
    """The config stored in `--resume DIR`, with only the per-sitting options of the command line applied.

    `--checkpoint STEP:NAME` may be given too: it adds a named copy at a step still ahead (saving one does not
    change the weights), so a long run can keep the phase it turns out to show. So may `--steps`,
    `--lr-floor` and `--decay-steps`, where they leave the rates of the steps already trained alone: a
    constant-rate run can be lengthened, or given a decay at its end, once its accuracy is known.
    """
    recipe = ("preset", *(k for k in VALUE_FLAGS if k not in SCHEDULE_KEYS), *SWITCHES, "device")
    extra = [
        k for k in recipe if getattr(args, k) is not None and (k != "preset" or args.preset != "default")
    ]
    if extra:
        raise SystemExit(f"debug train: --resume takes the recipe from its run folder; drop {flag(extra[0])}")
    try:
        config = load_run_config(args.resume)
    except FileNotFoundError as err:
        raise SystemExit(f"debug train: {err}") from None
    # The limits of the sitting that stopped do not carry over; the thread count does unless given.
    threads = args.threads if args.threads is not None else config.threads
    added = _checkpoints(args.checkpoint) if args.checkpoint else ()
    schedule = {k: getattr(args, k) for k in SCHEDULE_KEYS if getattr(args, k) is not None}
    return dataclasses.replace(
        config,
        **schedule,
        max_minutes=args.max_minutes,
        stop_after=args.stop_after,
        threads=threads,
        checkpoints=tuple(sorted({*config.checkpoints, *added})),
    )


def _in_package(path: Path) -> bool:
    package = EMBEDDED_DIR.resolve()
    path = path.resolve()
    return path == package or package in path.parents


def resolve_outputs(args: argparse.Namespace, config: TrainConfig) -> tuple[Path, Path | None]:
    """(the folder receiving the run's models, the run folder or None) that `args` ask for.

    A new run saves under `--out-dir` (default `runs/<name>`) or, with `--ship`, the package's embedded/
    folder; its run folder (with `--save-every`) is `--run-dir`, else the out-dir (`runs/<name>` when
    shipping). A resumed run saves where its run folder records, unless `--out-dir` or `--ship` says
    otherwise; a run that ships must be resumed with `--ship`.

    Raises:
        SystemExit: A resumed run that ships, resumed without `--ship`.
    """
    if args.resume:
        run_dir: Path | None = Path(args.resume)
        recorded = load_output_record(Path(args.resume))
        if args.ship:
            return EMBEDDED_DIR, run_dir
        if args.out_dir:
            return Path(args.out_dir), run_dir
        if recorded is not None and _in_package(recorded):
            raise SystemExit(
                f"debug train: the run in {args.resume} saves into the installed package (it was started "
                "with --ship); resume it with --ship, or give --out-dir"
            )
        return (recorded if recorded is not None else Path(args.resume)), run_dir
    out_dir = EMBEDDED_DIR if args.ship else Path(args.out_dir or Path("runs") / config.name)
    run_dir = None
    if args.save_every:
        run_dir = Path(args.run_dir or (Path("runs") / config.name if args.ship else out_dir))
    return out_dir, run_dir


def refuse_existing(
    args: argparse.Namespace, config: TrainConfig, out_dir: Path, run_dir: Path | None
) -> None:
    """Refuse, in one line, to replace a model folder (or a new run's run folder) unless `--overwrite`.

    A resumed run may replace the folders it saved itself (where its run folder records that it saves).
    """
    if args.overwrite:
        return
    if args.resume:
        recorded = load_output_record(Path(args.resume))
        if recorded is not None and recorded.resolve() == out_dir.resolve():
            return
        done = resumed_step(Path(args.resume))
        names = [name for step, name in config.checkpoints if step > done] + [config.name]
    else:
        names = [name for _, name in config.checkpoints] + [config.name]
        if run_dir is not None and (run_dir / "LATEST").is_file():
            raise SystemExit(
                f"debug train: {run_dir} holds a run already; continue it with --resume {run_dir}, or pass "
                "--overwrite to start it over"
            )
    for name in names:
        if (out_dir / name).exists():
            raise SystemExit(
                f"debug train: {out_dir / name} exists; pass --overwrite to replace it, or choose another "
                "--out-dir or --name"
            )


def prepare_train(argv: list[str]) -> tuple[TrainConfig, argparse.Namespace, Path, Path | None]:
    """Parse and check `debug train`'s arguments, all before any work.

    Returns:
        (the config, the parsed arguments, the folder receiving the models, the run folder or None).

    Raises:
        SystemExit: A bad option, named in one line (argparse's exit status 2 for a value out of range).
    """
    args = train_parser().parse_args(argv)
    if args.resume:
        try:
            check_resumable(Path(args.resume))
        except (ValueError, FileNotFoundError) as err:
            raise SystemExit(f"debug train: {err}") from None
        config = resume_config(args)
    else:
        if args.run_dir and not args.save_every:
            raise SystemExit(
                "debug train: --run-dir holds resumable checkpoints; give --save-every N with it"
            )
        config = config_from_args(args)
    try:
        check_config(config)
    except ValueError as err:
        raise SystemExit(f"debug train: {err}") from None
    out_dir, run_dir = resolve_outputs(args, config)
    refuse_existing(args, config, out_dir, run_dir)
    return config, args, out_dir, run_dir


def main_train(argv: list[str] | None = None) -> int:
    """`debug train`: train and save a model; prints progress and the held-out accuracy by hop."""
    config, args, out_dir, run_dir = prepare_train(list(sys.argv[1:] if argv is None else argv))
    try:
        result = train(
            config,
            out_dir,
            run_dir=run_dir,
            save_every=args.save_every,
            resume=bool(args.resume),
            data_workers=args.data_workers,
        )
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"debug train: {err}") from None
    print(
        json.dumps({"saved": {k: str(v) for k, v in result.saved.items()}, **short_eval(result.final_eval)})
    )
    return 0


def report_parser() -> argparse.ArgumentParser:
    """The parser of `debug train-report` (every option's default is in its help)."""
    parser = argparse.ArgumentParser(
        prog="debug train-report", description="Training dynamics across the checkpoints of one run."
    )
    parser.add_argument(
        "models",
        nargs="*",
        help=f"checkpoints, embedded:<name> or folders (default: the checkpoints of {DEFAULT_MODEL}'s run)",
    )
    parser.add_argument("--out-dir", default="reports/train", help="output folder (default: reports/train)")

    def count(key: str, default: int, text: str) -> None:
        low, high = REPORT_RANGES[key]
        parser.add_argument(
            flag(key), type=bounded(Range(low, high)), default=default, help=f"{text} (default: {default})"
        )

    count("per_hop", 100, "held-out programs per hop")
    count("pairs", 8, "program pairs per family in each checkpoint's patching sweep")
    count("num_hops", 3, "query depth of the binding pairs (16 lines)")
    low, high = REPORT_RANGES["per_length"]
    parser.add_argument(
        "--per-length",
        type=bounded(Range(low, high)),
        default=None,
        help="held-out programs per family and length re-measured per checkpoint, 0: binding only "
        "(default: each checkpoint's own per-family evaluation from the run's history, re-measured with "
        "the run's eval_per_length where its step has none; 0 for a binder's run)",
    )
    parser.add_argument(
        "--patch-families",
        type=lambda text: [name.strip() for name in text.split(",") if name.strip()],
        default=None,
        metavar="NAMES",
        help="comma-separated families whose patching panels are drawn (binding, range, boolean), --pairs "
        "pairs each (default: all three for a run that measures every family, none for a binder's run, "
        "whose binding panel by ref depth is always drawn)",
    )
    return parser


def main_report(argv: list[str] | None = None) -> int:
    """`debug train-report`: the dynamics report of the default model's run (or of the checkpoints given)."""
    args = report_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        check_report_args(
            per_hop=args.per_hop, pairs=args.pairs, num_hops=args.num_hops, per_length=args.per_length
        )
        if args.patch_families is not None:
            check_patch_families(args.patch_families)
        models = args.models or default_checkpoints()
        training_report(
            models,
            args.out_dir,
            per_hop=args.per_hop,
            pairs=args.pairs,
            num_hops=args.num_hops,
            per_length=args.per_length,
            patch_families=args.patch_families,
        )
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"debug train-report: {err}") from None
    return 0
