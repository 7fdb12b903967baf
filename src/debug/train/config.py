"""What determines a training run: `TrainConfig`, its data sources and curriculum stages, and the presets.

Everything here is plain data and checks on it (no torch), so the command line, the model card and the run
folder's `config.json` all read one definition. `check_config` states every field's valid range once
(`RANGES`); the command line's option types read the same table, so a bound is never stated twice.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class DataSource:
    """One component of the training mix.

    Attributes:
        generator: A name in `debug.generators.GENERATORS`.
        seq_lens: The program lengths drawn uniformly for this source.
        weight: Relative share of training programs.
        knobs: Keyword arguments for the generator (e.g. `{"style": "spaced"}`).
    """

    generator: str = "make_variable_binding_program"
    seq_lens: tuple[int, ...] = (16,)
    weight: float = 1.0
    knobs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Stage:
    """One stage of a training curriculum: `steps` optimizer steps on `mix` before the run moves on.

    Attributes:
        steps: How many steps the stage lasts.
        mix: The data sources it draws from.
    """

    steps: int
    mix: tuple[DataSource, ...]


DEFAULT_MIX: tuple[DataSource, ...] = (
    DataSource(seq_lens=(16,), weight=0.5),
    DataSource(seq_lens=tuple(range(2, 16)), weight=0.25),
    DataSource(seq_lens=tuple(range(2, 17)), weight=0.25, knobs={"style": "spaced"}),
)

#: 2-line programs whose query is one of two constants: name lookup with the fewest candidates.
RECALL = (DataSource(seq_lens=(2,), knobs={"max_hops": 1, "p_constant": 1.0}),)

#: The shipped recipe's warm-up: name lookup between two lines, then short chains, then up to 8 lines, all
#: before `DEFAULT_MIX`. Without it (and the `"torch"` init) every recipe measured stayed at the plateau.
DEFAULT_CURRICULUM: tuple[Stage, ...] = (
    Stage(6000, RECALL),
    Stage(4000, (DataSource(seq_lens=(2, 3, 4), knobs={"max_hops": 2}),)),
    Stage(4000, (DataSource(seq_lens=tuple(range(2, 9))),)),
)

#: The weight initialisations `debug.train.model.build_decoder` knows (see there).
INITS = ("transformers", "torch")
#: Where a run may train: `auto` is CUDA when torch sees a GPU, else the CPU.
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (the model card records all of it).

    Attributes:
        name: Model name the final weights are saved under (the folder name and the card's title).
        seed: Seeds model init and the training-data stream.
        steps: Optimizer steps (the learning-rate schedule is laid out over these).
        batch_size: Programs per step.
        micro_batches: Forwards each step's batch is split into, rows sorted by length so that each forward
            pads only to its own longest row; the loss (and so the gradient) is still the whole batch's mean
            over its answer tokens. 1 is one padded forward, as every binder recipe trained. On a mix of
            short and long programs it cuts the padding a CPU step spends most of its time on.
        lr: Peak AdamW learning rate (linear warmup, then cosine decay to `lr_floor` of it).
        lr_floor: The fraction of `lr` the cosine decays to by the last step (1.0: a constant rate after
            warmup).
        decay_steps: How many of the last steps the cosine takes; the rate holds at `lr` from warmup until
            then (0: the cosine takes every step after warmup). A run saved with `--save-every` at a constant
            rate can be resumed with more `steps` and a decay at the end (`train`, `resume`).
        warmup: Warmup steps.
        weight_decay: AdamW weight decay.
        layers, hidden, heads, kv_heads, intermediate, max_positions: Qwen3 architecture (intermediate None:
            4 * hidden).
        init: Starting weights, `"transformers"` or `"torch"` (`build_decoder` says what each is).
        start_from: A trained model (`embedded:<name>` or a saved folder) to start from instead of fresh
            weights, grown to `layers`, `hidden` and `heads` without changing what it computes
            (`debug.train.grow.grow_decoder`); its new weights start as `init="torch"` would make them.
        mix: Training data sources (after the curriculum's stages, if any).
        curriculum: Stages trained in order from step 1, each on its own mix, before `mix` takes over
            (`debug.train.data.Curriculum`).
        line_targets: Also train the output at every assignment line's newline on the value the line's
            variable holds there (`debug.train.data.encode_lists`): dense targets for every hop.
        eval_per_hop: Held-out 16-line programs per hop count (1..4) for evaluation.
        eval_per_length: Held-out programs per (family, length) of `debug.train.evaluate.FAMILIES`, measured
            at every evaluation beside the binding set (0: binding only, as a binder recipe needs).
        eval_every: Evaluate every this many steps (0: only at the end).
        checkpoints: Extra models to save mid-run, as (step, name) pairs.
        max_minutes: Stop early (and save) once this much wall time has passed; None for no limit.
        stop_after: Stop after this many steps while keeping the schedule laid out over `steps` (replays a
            run that a time limit ended; its model card gives the command).
        threads: torch intra-op threads (None leaves torch's default).
        log_every: Print a progress line every this many steps (0: never).
        device: `auto` (CUDA when visible), `cpu` or `cuda`.
        bf16: Run the training forward under bfloat16 autocast (CUDA only; changes the weights).
    """

    name: str = "binder-4l"
    seed: int = 0
    steps: int = 40_000
    batch_size: int = 64
    micro_batches: int = 1
    lr: float = 1e-3
    lr_floor: float = 0.1
    decay_steps: int = 0
    warmup: int = 100
    weight_decay: float = 0.01
    layers: int = 4
    hidden: int = 64
    heads: int = 4
    kv_heads: int = 4
    intermediate: int | None = None
    max_positions: int = 512
    init: str = "torch"
    start_from: str | None = None
    mix: tuple[DataSource, ...] = DEFAULT_MIX
    curriculum: tuple[Stage, ...] = DEFAULT_CURRICULUM
    line_targets: bool = False
    eval_per_hop: int = 100
    eval_per_length: int = 0
    eval_every: int = 500
    checkpoints: tuple[tuple[int, str], ...] = ((10_000, "binder-early"), (14_000, "binder-mid"))
    max_minutes: float | None = None
    stop_after: int | None = None
    threads: int | None = None
    log_every: int = 50
    device: str = "auto"
    bf16: bool = False


#: Named configurations: `tiny` runs in seconds (tests). A preset's `name` is the name its model ships under
#: in the package (`debug train --ship`); a run that does not ship is named after its `--name` or `--out-dir`.
#: The shipped recipe is four runs, each continuing the last one's model (README, "Growing"): `default`
#: trains 4 layers from scratch (`binder-4l`), `grow-8` grows that to 8 layers (`binder-8l`), `grow-12` grows
#: that to 12 at a constant rate (`binder-12l`) and `grow-16` that to 16 (`binder`).
_GROW_8 = TrainConfig(
    name="binder-8l",
    start_from="embedded:binder-4l",
    layers=8,
    steps=6000,
    lr=3e-4,
    warmup=200,
    curriculum=(),
    checkpoints=(),
)
_GROW_12 = dataclasses.replace(
    _GROW_8, name="binder-12l", start_from="embedded:binder-8l", layers=12, lr_floor=1.0
)


def _query(generator: str, seq_lens: range, weight: float) -> DataSource:
    return DataSource(generator, tuple(seq_lens), weight, {"query": True})


#: Every family in its query form. Binding keeps the binder's two styles (a third of it at the eval suite's
#: 16 lines) and runs to 24 lines; loops and integer tracking run to 12 steps, exceptions to 5 blocks and
#: boolean chains to 10 lines: past each eval's longest default length (16 lines; 6 steps; 3 blocks; 6 lines)
#: so that the lengths measured beyond them (`debug.train.evaluate.FAMILIES`) are inside the training range.
#: The longest programs (5 exception blocks, 12 Fibonacci steps) stay under the binder's 512 positions.
MULTI_MIX: tuple[DataSource, ...] = (
    DataSource(seq_lens=tuple(range(2, 25)), weight=0.2),
    DataSource(seq_lens=(16,), weight=0.1),
    DataSource(seq_lens=tuple(range(2, 25)), weight=0.1, knobs={"style": "spaced"}),
    _query("make_range_program", range(1, 13), 0.07),
    _query("make_range_program_lines", range(1, 13), 0.07),
    _query("make_variable_increments", range(1, 13), 0.07),
    _query("make_arithmetic_sequence", range(1, 13), 0.07),
    _query("make_counter_program", range(1, 13), 0.04),
    _query("make_fibonacci_program", range(1, 13), 0.08),
    _query("make_exception_program", range(1, 6), 0.1),
    _query("make_boolean_program", range(1, 11), 0.1),
)

#: `multi`: the shipped 16-layer binder, warm-started at its own shape, trained on every family's query
#: form (`MULTI_MIX`) at a constant rate after warmup, so a later sitting can lengthen it (`--resume DIR
#: --steps N`) or end it in a decay (`--resume DIR --decay-steps N`). Not grown: the binder's circuits are
#: kept as they are, the new families' answers are one to three characters, and on a CPU a step of the
#: 16 x d64 model is already the budget: measured on two shared cores, one thread, batch 32, about 3.5 s per
#: step with `micro_batches=4` (12-13 s as one padded forward: a batch's longest program, five exception
#: blocks, is ~3x its mean), 4.3 s (0.23 steps/s) with other work on the machine. Growing the width
#: would multiply that. Every 100 steps it measures every family at every length (`eval_per_length` 16
#: programs each, 44 cells) beside the binding set. On a GPU, continue from a saved model as a new run
#: (`--start-from embedded:multi-2000 --device cuda --batch-size 512 --micro-batches 1`): `--resume` keeps the
#: recipe, device and batch included. Its ship name is `multi`, never `binder`: it replaces nothing unless
#: it meets the bars of tests/test_multi_family_model.py.
MULTI = TrainConfig(
    name="multi",
    seed=0,
    start_from="embedded:binder",
    layers=16,
    hidden=64,
    heads=4,
    kv_heads=4,
    steps=40_000,
    batch_size=32,
    micro_batches=4,
    lr=5e-4,
    lr_floor=1.0,
    warmup=100,
    mix=MULTI_MIX,
    curriculum=(),
    eval_per_hop=50,
    eval_per_length=16,
    eval_every=100,
    checkpoints=(),
)

PRESETS: dict[str, TrainConfig] = {
    "default": TrainConfig(),
    "grow-8": _GROW_8,
    # The same continuation one growth further, without the decay.
    "grow-12": _GROW_12,
    # Once more, and the last 1,500 steps decay to 0 (a constant-rate run resumed with --decay-steps).
    "grow-16": dataclasses.replace(
        _GROW_12,
        name="binder",
        start_from="embedded:binder-12l",
        layers=16,
        steps=7500,
        decay_steps=1500,
        lr_floor=0.0,
    ),
    "multi": MULTI,
    "tiny": TrainConfig(
        name="tiny",
        steps=12,
        batch_size=8,
        warmup=2,
        layers=1,
        hidden=32,
        heads=2,
        kv_heads=2,
        intermediate=64,
        max_positions=128,
        mix=(DataSource(seq_lens=(3, 4)),),
        curriculum=(),
        eval_per_hop=4,
        eval_every=0,
        checkpoints=(),
        log_every=0,
    ),
}

#: `TrainConfig` fields set by `--flag VALUE` (underscores become dashes on the command line).
VALUE_FLAGS = (
    "name",
    "seed",
    "steps",
    "batch_size",
    "micro_batches",
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
    "eval_per_length",
)
#: `TrainConfig` booleans set by a bare `--flag`.
SWITCHES = ("bf16", "line_targets")

#: Config keys that only steer one sitting of a run; a resume may change them, not the rest of the recipe.
RUNTIME_KEYS = ("max_minutes", "stop_after", "threads", "log_every")
#: Config keys a resume may extend without changing the weights: named copies saved along the way.
ADDABLE_KEYS = ("checkpoints",)
#: Config keys of the learning-rate schedule: a resume may change them where the steps already trained keep
#: their rates (a constant-rate run lengthened, or given a decay at its end).
SCHEDULE_KEYS = ("steps", "lr_floor", "decay_steps")

#: A step count no run reaches (about 30 years at 1 step per second): the cap of every step-valued field.
MAX_STEPS = 10**9


@dataclass(frozen=True)
class Range:
    """The valid values of one number: `low` to `high` inclusive (`low` itself excluded when `open_low`).

    Attributes:
        low: The smallest valid value.
        high: The largest valid value.
        integer: Whether only integers are valid.
        open_low: Whether `low` itself is excluded (a rate must be above 0).
    """

    low: float
    high: float
    integer: bool = True
    open_low: bool = False

    def contains(self, value: float) -> bool:
        """Whether `value` is valid (a float must be finite)."""
        if not self.integer and not math.isfinite(value):
            return False
        above = value > self.low if self.open_low else value >= self.low
        return above and value <= self.high

    def describe(self) -> str:
        """The range in words, e.g. `an integer from 1 to 65536` or `a number > 0 and <= 1`."""
        if self.integer:
            return f"an integer from {self.low} to {self.high}"
        low = f"> {self.low}" if self.open_low else f">= {self.low}"
        return f"a number {low} and <= {self.high}"


def _steps(low: int = 0) -> Range:
    return Range(low, MAX_STEPS)


#: The valid range of every numeric `TrainConfig` field (an optional field may also be None).
RANGES: dict[str, Range] = {
    "seed": Range(0, 2**63 - 1),  # torch.manual_seed takes at most 64 bits
    "steps": _steps(),  # 0 steps: the starting model evaluated and saved (a grown copy, unchanged)
    "batch_size": Range(1, 65_536),
    "micro_batches": Range(1, 65_536),  # at most batch_size (checked with it)
    "lr": Range(0, 1, integer=False, open_low=True),
    "lr_floor": Range(0, 1, integer=False),
    "decay_steps": _steps(),
    "warmup": _steps(),
    "weight_decay": Range(0, 1, integer=False),
    "layers": Range(1, 1024),
    "hidden": Range(1, 65_536),
    "heads": Range(1, 4096),
    "kv_heads": Range(1, 4096),
    "intermediate": Range(1, 1 << 20),
    "max_positions": Range(1, 1 << 20),
    "eval_per_hop": Range(1, 100_000),  # 4 hop counts of this many programs, evaluated in one pass
    "eval_per_length": Range(0, 100_000),  # 0: no per-family evaluation
    "eval_every": _steps(),
    "max_minutes": Range(0, 1e9, integer=False, open_low=True),
    "stop_after": _steps(1),
    "threads": Range(1, 4096),
    "log_every": _steps(),
}


def flag(key: str) -> str:
    """The command-line flag of a config field (`batch_size` -> `--batch-size`)."""
    return "--" + key.replace("_", "-")


def check_config(config: TrainConfig) -> None:
    """Refuse a config no run can train, before any work, naming the field, its flag and the valid range.

    Raises:
        ValueError: One line, e.g. `batch_size (--batch-size) must be an integer from 1 to 65536; got 0`.
    """
    for key, valid in RANGES.items():
        value = getattr(config, key)
        if value is None and key in ("intermediate", "max_minutes", "stop_after", "threads"):
            continue
        kind_ok = isinstance(value, int) if valid.integer else isinstance(value, int | float)
        if isinstance(value, bool) or not kind_ok or not valid.contains(value):
            raise ValueError(f"{key} ({flag(key)}) must be {valid.describe()}; got {value!r}")
    _check_shape(config)
    _check_schedule(config)
    check_name(config.name, "name (--name)")
    for step, name in config.checkpoints:
        if not isinstance(step, int) or not 1 <= step <= MAX_STEPS:
            raise ValueError(
                f"a checkpoint (--checkpoint STEP:NAME) step must be 1 to {MAX_STEPS}; got {step!r}"
            )
        check_name(name, "a checkpoint (--checkpoint STEP:NAME) name")
    if config.init not in INITS:
        raise ValueError(f"init (--init) must be one of {', '.join(INITS)}; got {config.init!r}")
    if config.device not in DEVICES:
        raise ValueError(f"device (--device) must be one of {', '.join(DEVICES)}; got {config.device!r}")
    if not config.mix:
        raise ValueError("mix needs at least one DataSource")


def _check_shape(config: TrainConfig) -> None:
    if config.micro_batches > config.batch_size:
        raise ValueError(
            f"micro_batches (--micro-batches) must be 1 to batch_size ({config.batch_size}); got "
            f"{config.micro_batches}"
        )
    if config.hidden % config.heads:
        raise ValueError(
            f"hidden (--hidden) must be a multiple of heads ({config.heads}); got {config.hidden}"
        )
    if (config.hidden // config.heads) % 2:
        # Rotary position embeddings rotate pairs of dimensions: a head needs an even size.
        raise ValueError(
            f"hidden / heads (--hidden / --heads) must be even (rotary embeddings); got {config.hidden} / "
            f"{config.heads}"
        )
    if config.kv_heads > config.heads or config.heads % config.kv_heads:
        raise ValueError(f"kv_heads must divide heads ({config.heads}); got {config.kv_heads}")


def _check_schedule(config: TrainConfig) -> None:
    most = max(0, config.steps - config.warmup)
    if not 0 <= config.decay_steps <= most:
        raise ValueError(
            f"decay_steps (--decay-steps) must be 0 to steps - warmup ({most}); got {config.decay_steps}"
        )


def check_name(name: Any, what: str) -> None:
    """Refuse a model name that is not one plain folder name (it becomes `out_dir / name`).

    Raises:
        ValueError: An empty name, `.` or `..`, or one with a path separator in it.
    """
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ValueError(f"{what} must be one folder name (no '/', not '.' or '..'); got {name!r}")


def load_run_config(run_dir: str | Path) -> TrainConfig:
    """The `TrainConfig` stored in a run folder written by `train(..., run_dir=...)`."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --resume takes a run folder written with --save-every")
    return config_from_dict(json.loads(path.read_text()))


def config_from_dict(raw: dict[str, Any]) -> TrainConfig:
    """The `TrainConfig` that `dataclasses.asdict` made `raw` (as run folders and histories store it)."""
    raw = dict(raw)
    raw["mix"] = _sources(raw["mix"])
    raw["curriculum"] = tuple(Stage(st["steps"], _sources(st["mix"])) for st in raw.get("curriculum", ()))
    raw["checkpoints"] = tuple(tuple(c) for c in raw["checkpoints"])
    return TrainConfig(**raw)


def _sources(raw: list[dict[str, Any]]) -> tuple[DataSource, ...]:
    return tuple(DataSource(**{**m, "seq_lens": tuple(m["seq_lens"])}) for m in raw)


def recipe(config: TrainConfig) -> dict[str, Any]:
    """The fields a resume must keep: all but the per-sitting, addable and schedule keys (as plain JSON)."""
    # Compared through JSON so tuples and the lists that config.json gives back compare equal.
    skip = RUNTIME_KEYS + ADDABLE_KEYS + SCHEDULE_KEYS
    fixed = {k: v for k, v in dataclasses.asdict(config).items() if k not in skip}
    return json.loads(json.dumps(fixed))
