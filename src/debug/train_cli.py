"""`debug train`: the command line over `debug.train.train`.

Every recipe field the command line can set is named once here (`VALUE_FLAGS`, `SWITCHES`): `config_from_args`
applies them to a preset, `resume_config` refuses them on `--resume` (the run folder holds the recipe) except
the schedule's (`SCHEDULE_KEYS`, where the steps already trained keep their rates), and
`debug.model_card.reproduce_command` writes them back out as the command that replays a saved model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from debug.train import (
    INITS,
    PRESETS,
    RUNTIME_KEYS,
    SCHEDULE_KEYS,
    TrainConfig,
    load_run_config,
    short_eval,
    train,
)

#: `TrainConfig` fields set by `--flag VALUE` (underscores become dashes on the command line).
VALUE_FLAGS = (
    "name",
    "seed",
    "steps",
    "batch_size",
    "lr",
    "lr_floor",
    "decay_steps",
    "layers",
    "hidden",
    "heads",
    "init",
    "start_from",
    "eval_every",
    "eval_per_hop",
)
#: `TrainConfig` booleans set by a bare `--flag`.
SWITCHES = ("bf16", "line_targets")
#: Per-sitting fields with a flag (`log_every` has none): a resumed sitting may set them.
SITTING_FLAGS = tuple(key for key in RUNTIME_KEYS if key != "log_every")


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="debug train", description="Train an embedded model from a fixed seed."
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default", help="base configuration")
    parser.add_argument("--name", help="embedded model name for the final weights")
    parser.add_argument(
        "--out-dir", default=None, help="folder receiving <name>/ (default: the package's embedded/)"
    )
    parser.add_argument("--seed", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--lr-floor", type=float, help="fraction of --lr the cosine ends at (1: constant)")
    parser.add_argument(
        "--decay-steps", type=int, help="the cosine takes only the last N steps (constant rate before)"
    )
    parser.add_argument("--layers", type=int)
    parser.add_argument("--hidden", type=int)
    parser.add_argument("--heads", type=int)
    parser.add_argument("--init", choices=INITS, help="starting weights (see debug.train.build_decoder)")
    parser.add_argument(
        "--start-from",
        metavar="MODEL",
        help="start from this trained model, grown to --layers/--hidden/--heads",
    )
    parser.add_argument(
        "--line-targets", action="store_true", default=None, help="also train every line's value (dense)"
    )
    parser.add_argument("--eval-every", type=int)
    parser.add_argument("--eval-per-hop", type=int)
    parser.add_argument("--max-minutes", type=float)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--stop-after", type=int, help="stop at this step, schedule still over --steps")
    parser.add_argument(
        "--checkpoint", action="append", default=None, metavar="STEP:NAME", help="also save NAME at STEP"
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where to train (default auto)")
    parser.add_argument("--bf16", action="store_true", default=None, help="bfloat16 autocast (CUDA only)")
    parser.add_argument("--data-workers", type=int, default=0, help="processes generating batches ahead")
    parser.add_argument("--save-every", type=int, help="save a resumable checkpoint every N steps")
    parser.add_argument("--run-dir", help="folder for resumable checkpoints (default: runs/<name>)")
    parser.add_argument(
        "--resume", metavar="DIR", help="continue the run saved in DIR from its last checkpoint"
    )
    return parser.parse_args(argv)


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


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The preset with every option given on the command line applied."""
    overrides: dict[str, Any] = {}
    for key in (*VALUE_FLAGS, *SWITCHES, *SITTING_FLAGS, "device"):
        if getattr(args, key) is not None:
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
        raise SystemExit(
            f"debug train: --resume takes the recipe from its run folder; drop --{extra[0].replace('_', '-')}"
        )
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


def main(argv: list[str] | None = None) -> int:
    """`debug train`: train and save an embedded model; prints progress and the held-out accuracy by hop."""
    from debug.models import EMBEDDED_DIR

    args = _parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.resume:
        config = resume_config(args)
        run_dir: Path | None = Path(args.resume)
    else:
        config = config_from_args(args)
        run_dir = Path(args.run_dir or Path("runs") / config.name) if args.save_every else None
    out_dir = Path(args.out_dir) if args.out_dir else EMBEDDED_DIR
    try:
        result = train(
            config,
            out_dir,
            run_dir=run_dir,
            save_every=args.save_every or 0,
            resume=bool(args.resume),
            data_workers=args.data_workers,
        )
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"debug train: {err}") from None
    print(
        json.dumps({"saved": {k: str(v) for k, v in result.saved.items()}, **short_eval(result.final_eval)})
    )
    return 0
