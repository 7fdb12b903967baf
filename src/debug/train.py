"""Train the embedded models: a small Qwen3-style decoder on this project's variable-binding programs.

`debug train` (CLI, in `debug.train_cli`) and `train(TrainConfig(...))` (Python) build a `Qwen3ForCausalLM`
over the char tokenizer (`debug.tokenizer.build_char_tokenizer`) from a fixed seed and train it on raw
programs: the model reads the program text, which ends in the query `#q:`, and the loss covers the answer
characters and the `<eos>` after them (the program text itself is random and carries nothing to learn), plus,
with `line_targets`, the value each line's variable holds at that line's end. Every training program is drawn
from a seeded `random.Random`, so the same config gives the same weights on the same machine and thread count.

Accuracy is measured on held-out 16-line paper-style programs (an eval seed namespace the training stream
never uses), by hop count, next to the heuristic baselines. A model is saved as an embedded model folder
(`config.json`, `model.safetensors`, tokenizer files, `MODEL_CARD.md`) that `debug.models.load` reads as
`embedded:<name>`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from debug.programs import Program
from debug.train_checkpoint import load_resume_state, resolve_device, save_resume_state
from debug.train_data import (
    BatchStream,
    Curriculum,
    build_programs,
    encode_lists,
    pad_batch,
    plan_programs,
)

#: Held-out programs are seeded from this base (the training stream draws 48-bit seeds from its own rng).
EVAL_BASE_SEED = 987_654_321


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


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (the model card records all of it).

    Attributes:
        name: Embedded model name the final weights are saved under.
        seed: Seeds model init and the training-data stream.
        steps: Optimizer steps (the learning-rate schedule is laid out over these).
        batch_size: Programs per step.
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
            (`debug.grow.grow_decoder`); its new weights start as `init="torch"` would make them.
        mix: Training data sources (after the curriculum's stages, if any).
        curriculum: Stages trained in order from step 1, each on its own mix, before `mix` takes over
            (`debug.train_data.Curriculum`).
        line_targets: Also train the output at every assignment line's newline on the value the line's
            variable holds there (`debug.train_data.encode_lists`): dense targets for every hop.
        eval_per_hop: Held-out 16-line programs per hop count (1..4) for evaluation.
        eval_every: Evaluate every this many steps (0: only at the end).
        checkpoints: Extra embedded models to save mid-run, as (step, name) pairs.
        max_minutes: Stop early (and save) once this much wall time has passed; None for no limit.
        stop_after: Stop after this many steps while keeping the schedule laid out over `steps` (replays a
            run that a time limit ended; its model card gives the command).
        threads: torch intra-op threads (None leaves torch's default).
        log_every: Print a progress line every this many steps.
        device: `auto` (CUDA when visible), `cpu` or `cuda`.
        bf16: Run the training forward under bfloat16 autocast (CUDA only; changes the weights).
    """

    name: str = "binder-4l"
    seed: int = 0
    steps: int = 40_000
    batch_size: int = 64
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
    eval_every: int = 500
    checkpoints: tuple[tuple[int, str], ...] = ((10_000, "binder-early"), (14_000, "binder-mid"))
    max_minutes: float | None = None
    stop_after: int | None = None
    threads: int | None = None
    log_every: int = 50
    device: str = "auto"
    bf16: bool = False


#: Named configurations: `tiny` runs in seconds (tests). The shipped recipe is four runs, each continuing
#: the last one's model (README, "Growing"): `default` trains 4 layers from scratch (`binder-4l`), `grow-8`
#: grows that to 8 layers (`binder-8l`), `grow-12` grows that to 12 at a constant rate (`binder-12l`) and
#: `grow-16` that to 16 (`binder`).
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


@dataclass
class TrainResult:
    """What a run produced: the model, its tokenizer, the eval history and where it was saved."""

    model: Any
    tokenizer: Any
    config: TrainConfig
    steps_done: int
    wall_seconds: float
    history: list[dict[str, Any]]
    final_eval: dict[str, Any]
    saved: dict[str, Path]


#: The weight initialisations `build_decoder` knows (see there).
INITS = ("transformers", "torch")


def build_decoder(
    tokenizer: Any,
    *,
    layers: int,
    hidden: int,
    heads: int,
    kv_heads: int | None = None,
    intermediate: int | None = None,
    head_dim: int | None = None,
    max_positions: int = 512,
    init: str = "transformers",
) -> Any:
    """A freshly initialised Qwen3ForCausalLM over `tokenizer` (seeded by the caller).

    The one place a Qwen3-style decoder is configured: the embedded models, the tests' tiny models and the
    benches' random models all come from here. Defaults: `kv_heads = heads`, `intermediate = 4 * hidden`,
    `head_dim = hidden // heads`.

    `init` picks the starting weights. `"transformers"`: the library's own (normal, std 0.02, for every
    matrix; input and output embeddings tied), as a hub checkpoint of this shape would start. `"torch"`:
    every `nn.Linear` and `nn.Embedding` reset to PyTorch's layer defaults (uniform within 1/sqrt(fan_in);
    embeddings N(0, 1)) and the output head untied, since N(0, 1) embeddings as output weights give
    logits in the tens. At this size the choice decides whether name lookup is learned at all (measured:
    2-pair recall, 4 layers d64, batch 64 — learned by step ~3,000 from `"torch"`, at chance through 6,000
    from `"transformers"`; see the README).
    """
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}; got {init!r}")
    model_config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate or 4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads or heads,
        head_dim=head_dim or hidden // heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=init == "transformers",
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = Qwen3ForCausalLM(model_config)
    if init == "torch":
        for module in model.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
                module.reset_parameters()
    return model


def build_model(config: TrainConfig, tokenizer: Any) -> Any:
    """The decoder `config` starts training from (seeded by the caller): fresh, or `start_from` grown."""
    if config.start_from is not None:
        return _grown_start(config.start_from, config, tokenizer)
    return build_decoder(
        tokenizer,
        layers=config.layers,
        hidden=config.hidden,
        heads=config.heads,
        kv_heads=config.kv_heads,
        intermediate=config.intermediate,
        max_positions=config.max_positions,
        init=config.init,
    )


def _grown_start(start_from: str, config: TrainConfig, tokenizer: Any) -> Any:
    from transformers import AutoModelForCausalLM

    from debug.grow import grow_decoder
    from debug.models import ModelNotAvailableError, resolve_source

    try:
        source, local = resolve_source(start_from)
    except ModelNotAvailableError as err:
        raise ValueError(f"start_from: {err}") from None
    if local is None:
        raise ValueError(f"start_from takes embedded:<name> or a saved model folder; got {start_from!r}")
    if config.kv_heads != config.heads or config.intermediate not in (None, 4 * config.hidden):
        raise ValueError("start_from grows to kv_heads = heads and an MLP of 4 x hidden; drop those settings")
    model = AutoModelForCausalLM.from_pretrained(source, use_safetensors=True)
    return grow_decoder(
        model, layers=config.layers, hidden=config.hidden, heads=config.heads, tokenizer=tokenizer
    )


def sample_programs(config: TrainConfig, rng: random.Random, n: int) -> list[Program]:
    """Draw `n` training programs from the mix, every choice and program seed taken from `rng`.

    Each program gets its own `random.Random(seed)` with a 48-bit seed drawn from `rng`; the scheme is fixed
    in `debug.train_data` (not borrowed from `debug.programs.generate`) so a recipe's data never changes.
    """
    return build_programs(config.mix, plan_programs(config.mix, rng, n))


def encode(programs: Sequence[Program], tokenizer: Any, line_targets: bool = False) -> dict[str, Any]:
    """Right-padded `text + answer + <eos>` ids with labels on the answer and eos (and, with `line_targets`,
    on every assignment line's value); -100 elsewhere."""
    return pad_batch(*encode_lists(programs, tokenizer, line_targets), tokenizer.pad_token_id)


def eval_programs(per_hop: int) -> list[Program]:
    """The held-out set: `per_hop` 16-line paper-style programs at each hop count 1..4."""
    from debug.generators import make_variable_binding_program as gen

    # Seeded here rather than through `debug.programs.generate`, so the held-out set of a shipped model card
    # stays the same whatever the harness's own seeding scheme becomes.
    out: list[Program] = []
    for hops in range(1, 5):
        for i in range(per_hop):
            digest = hashlib.sha256(f"{EVAL_BASE_SEED + hops}:16:{i}".encode()).hexdigest()
            out.append(gen(16, random.Random(int(digest[:12], 16)), num_hops=hops))
    return out


def evaluate(model: Any, tokenizer: Any, programs: Sequence[Program]) -> dict[str, Any]:
    """Held-out accuracy overall and by hop, with heuristic baselines and the model's agreement with them.

    `agreement` is the share of programs where the model's greedy first answer token is the first token of
    the heuristic's guess, whether or not that guess is right: a model in the copying phase agrees with a
    copy heuristic far beyond that heuristic's accuracy, a model that dereferences only where it is right.
    `misreadings` says which misreadings of the programs give the wrong answers, beside their chance shares
    (`debug.misreadings.misreading_rates`).
    """
    from debug.baselines import heuristic_baselines, predict_copy_last_constant, predict_copy_line_1
    from debug.misreadings import misreading_rates
    from debug.scoring import teacher_forced

    model.eval()
    forced = teacher_forced(model, tokenizer, programs)
    correct = [pred == answer for pred, answer in forced]
    heuristics = {"copy_line_1": predict_copy_line_1, "copy_last_constant": predict_copy_last_constant}
    agrees: dict[str, list[bool]] = {}
    for name, predict in heuristics.items():
        agrees[name] = []
        for program, (pred, _) in zip(programs, forced, strict=True):
            guess = predict(program)
            ids = tokenizer(str(guess), add_special_tokens=False)["input_ids"] if guess is not None else []
            agrees[name].append(bool(ids) and pred[:1] == ids[:1])

    def summary(idx: list[int]) -> dict[str, Any]:
        group = [programs[i] for i in idx]
        return {
            "n": len(idx),
            "accuracy": sum(correct[i] for i in idx) / len(idx),
            "baselines": heuristic_baselines(group),
            "agreement": {name: sum(a[i] for i in idx) / len(idx) for name, a in agrees.items()},
        }

    by_hop = {
        str(hops): summary([i for i, p in enumerate(programs) if p.metadata["hops"] == hops])
        for hops in sorted({p.metadata["hops"] for p in programs})
    }
    first = [tokenizer.decode(pred[:1]).strip() for pred, _ in forced]
    answers = [int(text) if text.isdigit() else None for text in first]
    return summary(list(range(len(programs)))) | {
        "by_hop": by_hop,
        "misreadings": misreading_rates(programs, answers),
    }


def _lr_factor(step: int, config: TrainConfig) -> float:
    import math

    if step < config.warmup:
        return (step + 1) / config.warmup
    decay_start = config.steps - config.decay_steps if config.decay_steps else config.warmup
    progress = (step - decay_start) / max(1, config.steps - decay_start)
    floor = config.lr_floor
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, progress))))


def _same_rates(a: TrainConfig, b: TrainConfig, steps: int) -> bool:
    """Whether two schedules give the same learning rate for the first `steps` optimizer steps."""
    import math

    return all(math.isclose(_lr_factor(s, a), _lr_factor(s, b), rel_tol=1e-12) for s in range(steps + 1))


#: Config keys that only steer one sitting of a run; a resume may change them, not the rest of the recipe.
RUNTIME_KEYS = ("max_minutes", "stop_after", "threads", "log_every")
#: Config keys a resume may extend without changing the weights: named copies saved along the way.
ADDABLE_KEYS = ("checkpoints",)
#: Config keys of the learning-rate schedule: a resume may change them where the steps already trained keep
#: their rates (a constant-rate run lengthened, or given a decay at its end).
SCHEDULE_KEYS = ("steps", "lr_floor", "decay_steps")


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


def train(
    config: TrainConfig,
    out_dir: str | Path | None = None,
    *,
    log: Callable[[str], None] | None = None,
    run_dir: str | Path | None = None,
    save_every: int = 0,
    resume: bool = False,
    data_workers: int = 0,
) -> TrainResult:
    """Train one model from `config.seed`; save it (and mid-run checkpoints) under `out_dir` when given.

    Args:
        config: The run's configuration (see `PRESETS`).
        out_dir: Folder that receives `<name>/` model folders (the package's `debug/embedded` to ship them).
        log: Where progress lines go (default: print to stdout, flushed).
        run_dir: Folder for resumable checkpoints (needed by `save_every` and `resume`).
        save_every: Save a resumable checkpoint every this many steps, and when the run stops (0: never).
        resume: Continue from `run_dir`'s latest checkpoint (with its `save_every` unless one is given); the
            result equals an uninterrupted run's on the same device and thread count.
        data_workers: Processes generating batches ahead of the model (0: in-process; same data either way).

    Returns:
        A `TrainResult` with the trained model and its held-out evaluation.
    """
    import torch

    from debug.model_card import save_embedded  # model_card imports this module: import at use
    from debug.tokenizer import build_char_tokenizer

    log = log or (lambda line: print(line, flush=True))
    if (save_every or resume) and run_dir is None:
        raise ValueError("save_every/resume need a run_dir (the CLI's --run-dir or --resume DIR)")
    run_path = Path(run_dir) if run_dir is not None else None
    device = torch.device(resolve_device(config.device))
    # Recorded resolved: `auto` would replay on whatever the next machine has, and the device changes weights.
    config = dataclasses.replace(config, device=device.type)
    if not 0.0 <= config.lr_floor <= 1.0:
        raise ValueError(f"lr_floor is a fraction of lr, 0 to 1 (1: constant); got {config.lr_floor}")
    if not 0 <= config.decay_steps <= (most := max(0, config.steps - config.warmup)):
        raise ValueError(f"decay_steps must be 0 to steps - warmup ({most}); got {config.decay_steps}")
    if config.bf16 and device.type != "cuda":
        raise ValueError("bf16 autocast is for CUDA only; drop --bf16 or use --device cuda")
    if config.threads:
        torch.set_num_threads(config.threads)
    if device.type == "cuda":
        torch.set_float32_matmul_precision(
            "high"
        )  # TF32 matmuls: the GPU recipe's speed, part of its numerics
    tokenizer = build_char_tokenizer()
    data_rng = random.Random(config.seed)
    # The stream starts its workers here, before the model touches CUDA: forked workers stay CPU-only.
    curriculum = Curriculum(config.mix, config.curriculum)
    with BatchStream(
        curriculum,
        data_rng,
        config.batch_size,
        tokenizer,
        workers=data_workers,
        line_targets=config.line_targets,
    ) as stream:
        torch.manual_seed(config.seed)
        model = build_model(config, tokenizer).to(device)
        # fused on CUDA: one kernel per step, not one per parameter group (a tiny model is launch-bound).
        optimizer = torch.optim.AdamW(
            model.parameters(),
            lr=config.lr,
            weight_decay=config.weight_decay,
            fused=device.type == "cuda",
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, config))
        held_out = eval_programs(config.eval_per_hop)
        history: list[dict[str, Any]] = []
        saved: dict[str, Path] = {}
        checkpoints = dict(config.checkpoints)
        first, before = 1, 0.0
        if resume:
            assert run_path is not None
            stored = load_run_config(run_path)
            if _recipe(stored) != _recipe(config):
                raise ValueError(
                    f"config differs from the one stored in {run_path}; resume with load_run_config"
                )
            if not set(stored.checkpoints) <= set(config.checkpoints):
                raise ValueError(f"a resume may add checkpoints, not drop those stored in {run_path}")
            state = load_resume_state(run_path, model)
            if not _same_rates(stored, config, state["step"]):
                raise ValueError(
                    f"the new schedule changes the learning rate of steps already trained in {run_path}; "
                    "only a constant-rate stretch may be lengthened or end in a decay (--decay-steps)"
                )
            (run_path / "config.json").write_text(json.dumps(asdict(config), indent=1))
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            stream.restore(state["step"], state["data_rng"])
            torch.set_rng_state(state["torch_rng"])
            if state.get("cuda_rng") is not None and device.type == "cuda":
                torch.cuda.set_rng_state(state["cuda_rng"])
            first, before, history = state["step"] + 1, state["elapsed"], state["history"]
            save_every = save_every or state["save_every"]  # keep the run's cadence unless told otherwise
            log(f"resumed {run_path} at step {state['step']}")
        elif run_path is not None:
            run_path.mkdir(parents=True, exist_ok=True)
            (run_path / "config.json").write_text(json.dumps(asdict(config), indent=1))
        start = time.monotonic()
        step = first - 1

        def checkpoint() -> None:
            assert run_path is not None
            cuda_rng = torch.cuda.get_rng_state() if device.type == "cuda" else None
            state = {
                "step": step,
                "elapsed": before + time.monotonic() - start,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "data_rng": stream.rng_state(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": cuda_rng,
                "history": history,
                "save_every": save_every,
            }
            save_resume_state(run_path, model, state)

        for step in range(first, config.steps + 1):
            if config.curriculum and (step == 1 or curriculum.stage(step) != curriculum.stage(step - 1)):
                k = curriculum.stage(step)
                log(f"step {step}: curriculum stage {k + 1} of {len(config.curriculum) + 1} begins")
            model.train()
            batch = {k: v.to(device, non_blocking=True) for k, v in stream.next().items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16):
                loss = model(**batch).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            sitting = time.monotonic() - start
            elapsed = before + sitting
            if config.log_every and step % config.log_every == 0:
                log(
                    f"step {step}/{config.steps} loss {loss.item():.4f} "
                    f"lr {scheduler.get_last_lr()[0]:.2e} {elapsed:.0f}s "
                    f"{(step - first + 1) / max(sitting, 1e-9):.1f} steps/s"
                )
            result = None
            if config.eval_every and step % config.eval_every == 0:
                result = evaluate(model, tokenizer, held_out)
                history.append({"step": step, "seconds": round(elapsed, 1), **short_eval(result)})
                log(f"eval step {step}: {json.dumps(short_eval(result))} {_baseline_line(result)}")
            if step in checkpoints and out_dir is not None:
                # The scheduled evaluation of this very step, when there was one (the weights are the same).
                ck_eval = result or evaluate(model, tokenizer, held_out)
                saved[checkpoints[step]] = save_embedded(
                    model,
                    tokenizer,
                    Path(out_dir),
                    checkpoints[step],
                    config,
                    step,
                    elapsed,
                    ck_eval,
                    history,
                )
                log(f"saved checkpoint {checkpoints[step]} at step {step}")
            if save_every and step % save_every == 0:
                checkpoint()
            if config.stop_after is not None and step >= config.stop_after:
                break
            if config.max_minutes is not None and sitting > config.max_minutes * 60:
                log(f"time limit of {config.max_minutes} min reached at step {step}")
                break
        if save_every and step % save_every != 0 and step >= first:
            checkpoint()  # where this sitting stopped, so the next --resume starts there

    wall = before + time.monotonic() - start
    final = evaluate(model, tokenizer, held_out)
    if not history or history[-1]["step"] != step:  # unless the last scheduled eval was this very step
        history.append({"step": step, "seconds": round(wall, 1), **short_eval(final)})
    if out_dir is not None:
        saved[config.name] = save_embedded(
            model, tokenizer, Path(out_dir), config.name, config, step, wall, final, history
        )
    log(f"done: {step} steps in {wall:.0f}s, held-out accuracy {final['accuracy']:.3f}")
    return TrainResult(model, tokenizer, config, step, wall, history, final, saved)


def _recipe(config: TrainConfig) -> dict[str, Any]:
    # Compared through JSON so tuples and the lists that config.json gives back compare equal.
    fixed = {k: v for k, v in asdict(config).items() if k not in RUNTIME_KEYS + ADDABLE_KEYS + SCHEDULE_KEYS}
    return json.loads(json.dumps(fixed))


def _baseline_line(result: dict[str, Any]) -> str:
    # The plateau is read against these: a binder that only copies tracks copy_line_1 / copy_last_constant.
    b = result["baselines"]
    return f"(copy_line_1 {b['copy_line_1']:.3f}, copy_last_constant {b['copy_last_constant']:.3f})"


def short_eval(result: dict[str, Any]) -> dict[str, Any]:
    """One history row: accuracy by hop and the agreement with each copy heuristic (the phase signal)."""
    return (
        {"accuracy": round(result["accuracy"], 4)}
        | {f"hop{h}": round(v["accuracy"], 4) for h, v in result["by_hop"].items()}
        | {f"agree_{k}": round(v, 4) for k, v in result["agreement"].items()}
    )
