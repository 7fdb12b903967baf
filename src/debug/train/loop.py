"""The training loop: a small Qwen3-style decoder trained on this project's variable-binding programs.

`debug train` (`debug.train.cli`) and `train(TrainConfig(...))` (Python) build a `Qwen3ForCausalLM` over the
char tokenizer (`debug.tokenizer.build_char_tokenizer`) from a fixed seed, or grow a trained one
(`debug.train.grow`), and train it on raw programs: the model reads the program text, which ends in the query
`#q:`, and the loss covers the answer characters and the `<eos>` after them (the program text itself is random
and carries nothing to learn), plus, with `line_targets`, the value each line's variable holds at that line's
end. Every training program is drawn from a seeded `random.Random`, so the same config gives the same weights
on the same machine and thread count.

Accuracy is measured on held-out 16-line paper-style programs (`debug.train.evaluate`), by hop count, next to
the heuristic baselines, and (with `eval_per_length`) on every program family at every length. A model is
saved as a model folder (`debug.train.card.save_embedded`) that `debug.models.load` reads by its path, or as
`embedded:<name>` once shipped. A run folder makes the run
resumable (`debug.train.checkpoint`); a resumed run ends with the weights of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from debug._util.files import atomic_write_json
from debug.models import resolve_device
from debug.programs import Program
from debug.train.card import save_embedded
from debug.train.checkpoint import load_resume_state, save_output_record, save_resume_state
from debug.train.config import TrainConfig, check_config, load_run_config, recipe
from debug.train.data import BatchStream, Curriculum
from debug.train.evaluate import (
    baseline_line,
    eval_programs,
    evaluate,
    evaluate_families,
    family_line,
    family_programs,
    short_eval,
)
from debug.train.grow import start_model


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


def lr_factor(step: int, config: TrainConfig) -> float:
    """The learning rate of optimizer step `step` (0-based) as a fraction of `config.lr`.

    Linear warmup over `warmup` steps, then `lr` until the cosine starts (the last `decay_steps` steps, or
    right after warmup when that is 0), which ends at `lr_floor` of `lr` on the last step.
    """
    if step < config.warmup:
        return (step + 1) / config.warmup
    decay_start = config.steps - config.decay_steps if config.decay_steps else config.warmup
    progress = (step - decay_start) / max(1, config.steps - decay_start)
    floor = config.lr_floor
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, progress))))


def same_rates(a: TrainConfig, b: TrainConfig, steps: int) -> bool:
    """Whether two schedules give the same learning rate for the first `steps` optimizer steps."""
    return all(math.isclose(lr_factor(s, a), lr_factor(s, b), rel_tol=1e-12) for s in range(steps + 1))


def prepare(config: TrainConfig) -> tuple[TrainConfig, Any]:
    """Check `config`, pick its device and set torch up for it; the config comes back with the device named.

    Raises:
        ValueError: A config no run can train (`check_config`), or bf16 off CUDA.
    """
    import torch  # at use: torch costs seconds to import (`debug train --help` never pays it)

    check_config(config)
    device = torch.device(resolve_device(config.device, accelerators=("cuda",)))
    # Recorded resolved: `auto` would replay on whatever the next machine has, and the device changes weights.
    config = dataclasses.replace(config, device=device.type)
    if config.bf16 and device.type != "cuda":
        raise ValueError("bf16 autocast is for CUDA only; drop --bf16 or use --device cuda")
    if config.threads:
        torch.set_num_threads(config.threads)
    if device.type == "cuda":
        torch.set_float32_matmul_precision(
            "high"
        )  # TF32 matmuls: the GPU recipe's speed, part of its numerics
    return config, device


@dataclass
class _Run:
    """One sitting of a run: the model, its optimizer and data stream, and what the sitting has produced."""

    config: TrainConfig
    device: Any
    model: Any
    tokenizer: Any
    optimizer: Any
    scheduler: Any
    stream: BatchStream
    curriculum: Curriculum
    held_out: list[Program]
    families: dict[str, dict[int, list[Program]]]
    log: Callable[[str], None]
    out_dir: Path | None
    run_path: Path | None
    save_every: int
    history: list[dict[str, Any]] = field(default_factory=list)
    saved: dict[str, Path] = field(default_factory=dict)
    first: int = 1  # the first step of this sitting
    before: float = 0.0  # wall seconds of the sittings before this one
    start: float = field(default_factory=time.monotonic)
    step: int = 0  # the last step trained

    def elapsed(self) -> float:
        """Wall seconds of the whole run so far."""
        return self.before + time.monotonic() - self.start


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
        out_dir: Folder that receives `<name>/` model folders (existing ones are written over); None saves
            nothing. Pass the package's `debug.models.EMBEDDED_DIR` only to ship the models.
        log: Where progress lines go (default: print to stdout, flushed).
        run_dir: Folder for resumable checkpoints (needed by `save_every` and `resume`).
        save_every: Save a resumable checkpoint every this many steps, and when the run stops (0: never).
        resume: Continue from `run_dir`'s latest checkpoint (with its `save_every` unless one is given); the
            result equals an uninterrupted run's on the same device and thread count.
        data_workers: Processes generating batches ahead of the model (0: in-process; same data either way).

    Returns:
        A `TrainResult` with the trained model and its held-out evaluation.

    Raises:
        ValueError: A config no run can train, a resume that would change the recipe, or an older run folder.
        FileNotFoundError: `resume` with a run folder that holds no run or no checkpoint.
    """
    if save_every < 0:
        raise ValueError(f"save_every must be >= 0 (0: never); got {save_every}")
    if (save_every or resume) and run_dir is None:
        raise ValueError("save_every/resume need a run_dir (the CLI's --run-dir or --resume DIR)")
    from debug.tokenizer import build_char_tokenizer  # at use: it imports transformers (seconds)

    config, device = prepare(config)
    tokenizer = build_char_tokenizer()
    curriculum = Curriculum(config.mix, config.curriculum)
    # The stream starts its workers here, before the model touches CUDA: forked workers stay CPU-only.
    with BatchStream(
        curriculum,
        random.Random(config.seed),
        config.batch_size,
        tokenizer,
        workers=data_workers,
        line_targets=config.line_targets,
    ) as stream:
        run = _start(config, device, tokenizer, stream, curriculum, log, out_dir, run_dir, save_every)
        if resume:
            _resume(run)
        elif run.run_path is not None:
            _start_run_folder(run)
        _train_steps(run)
    return _finish(run)


def _start(
    config: TrainConfig,
    device: Any,
    tokenizer: Any,
    stream: BatchStream,
    curriculum: Curriculum,
    log: Callable[[str], None] | None,
    out_dir: str | Path | None,
    run_dir: str | Path | None,
    save_every: int,
) -> _Run:
    import torch  # at use: torch costs seconds to import

    torch.manual_seed(config.seed)
    model = start_model(config, tokenizer).to(device)
    # fused on CUDA: one kernel per step, not one per parameter group (a tiny model is launch-bound).
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=device.type == "cuda"
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config))
    return _Run(
        config=config,
        device=device,
        model=model,
        tokenizer=tokenizer,
        optimizer=optimizer,
        scheduler=scheduler,
        stream=stream,
        curriculum=curriculum,
        held_out=eval_programs(config.eval_per_hop),
        families=family_programs(config.eval_per_length) if config.eval_per_length else {},
        log=log or (lambda line: print(line, flush=True)),
        out_dir=Path(out_dir) if out_dir is not None else None,
        run_path=Path(run_dir) if run_dir is not None else None,
        save_every=save_every,
    )


def _start_run_folder(run: _Run) -> None:
    assert run.run_path is not None
    run.run_path.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run.run_path / "config.json", dataclasses.asdict(run.config), indent=1)
    save_output_record(run.run_path, run.out_dir)


def _resume(run: _Run) -> None:
    """Restore the run folder's latest checkpoint into `run`: weights, optimizer, schedule, data and rngs."""
    import torch  # at use: torch costs seconds to import

    run_path, config = run.run_path, run.config
    assert run_path is not None
    stored = load_run_config(run_path)
    if recipe(stored) != recipe(config):
        raise ValueError(f"config differs from the one stored in {run_path}; resume with load_run_config")
    if not set(stored.checkpoints) <= set(config.checkpoints):
        raise ValueError(f"a resume may add checkpoints, not drop those stored in {run_path}")
    state = load_resume_state(run_path, run.model)
    if not same_rates(stored, config, state["step"]):
        raise ValueError(
            f"the new schedule changes the learning rate of steps already trained in {run_path}; "
            "only a constant-rate stretch may be lengthened or end in a decay (--decay-steps)"
        )
    atomic_write_json(run_path / "config.json", dataclasses.asdict(config), indent=1)
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.stream.restore(state["step"], state["data_rng"])
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") is not None and run.device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"])
    run.first, run.before, run.history = state["step"] + 1, state["elapsed"], state["history"]
    run.step = state["step"]
    run.save_every = run.save_every or state["save_every"]  # keep the run's cadence unless told otherwise
    run.log(f"resumed {run_path} at step {state['step']}")


def _train_steps(run: _Run) -> None:
    """Train from `run.first` to the last step, or until `stop_after` or the time limit ends the sitting."""
    config = run.config
    run.start = time.monotonic()
    run.step = run.first - 1
    for step in range(run.first, config.steps + 1):
        run.step = step
        loss = _train_step(run, step)
        sitting = time.monotonic() - run.start
        if config.log_every and step % config.log_every == 0:
            run.log(
                f"step {step}/{config.steps} loss {loss.item():.4f} "
                f"lr {run.scheduler.get_last_lr()[0]:.2e} {run.elapsed():.0f}s "
                f"{(step - run.first + 1) / max(sitting, 1e-9):.1f} steps/s"
            )
        _after_step(run, step)
        if config.stop_after is not None and step >= config.stop_after:
            break
        if config.max_minutes is not None and sitting > config.max_minutes * 60:
            run.log(f"time limit of {config.max_minutes} min reached at step {step}")
            break
    if run.save_every and run.step % run.save_every != 0 and run.step >= run.first:
        _save_checkpoint(run)  # where this sitting stopped, so the next --resume starts there


def _train_step(run: _Run, step: int) -> Any:
    """One optimizer step on the stream's next batch; returns the loss."""
    import torch  # at use: torch costs seconds to import

    config = run.config
    if config.curriculum and (step == 1 or run.curriculum.stage(step) != run.curriculum.stage(step - 1)):
        k = run.curriculum.stage(step)
        run.log(f"step {step}: curriculum stage {k + 1} of {len(config.curriculum) + 1} begins")
    run.model.train()
    batch = run.stream.next()
    run.optimizer.zero_grad(set_to_none=True)
    if config.micro_batches == 1:
        batch = {k: v.to(run.device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=config.bf16):
            loss = run.model(**batch).loss
        loss.backward()
    else:
        # Each forward's loss is its answer tokens' summed loss over the whole batch's count, so the
        # forwards' losses add up to the batch's mean and their gradients to its gradient.
        total = int((batch["labels"][:, 1:] != -100).sum())
        loss = torch.zeros(())
        for chunk in length_chunks(batch, config.micro_batches):
            chunk = {k: v.to(run.device, non_blocking=True) for k, v in chunk.items()}
            with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=config.bf16):
                part = run.model(**chunk, num_items_in_batch=total).loss
            part.backward()
            loss = loss + part.detach().float().cpu()
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), 1.0)
    run.optimizer.step()
    run.scheduler.step()
    return loss


def length_chunks(batch: dict[str, Any], parts: int) -> list[dict[str, Any]]:
    """`batch` split into `parts` row groups of similar length, each cut to its own longest row.

    Rows are right-padded (`debug.train.data.pad_batch`), so cutting columns past a group's longest row
    removes only padding; rows are sorted by length (stable) before grouping.
    """
    import torch  # at use: torch costs seconds to import

    lengths = batch["attention_mask"].sum(1)
    order = torch.argsort(lengths, stable=True)
    out = []
    for rows in torch.tensor_split(order, parts):
        if len(rows):
            width = int(lengths[rows].max())
            out.append({k: v[rows, :width] for k, v in batch.items()})
    return out


def _after_step(run: _Run, step: int) -> None:
    """The scheduled evaluation, named copy and resumable checkpoint of `step`, where there is one."""
    config, checkpoints = run.config, dict(run.config.checkpoints)
    result = None
    if config.eval_every and step % config.eval_every == 0:
        result = _evaluate(run)
        run.history.append({"step": step, "seconds": round(run.elapsed(), 1), **_row(result)})
        run.log(f"eval step {step}: {json.dumps(short_eval(result))} {baseline_line(result)}")
        if "by_family" in result:
            run.log(f"eval step {step} by family: {family_line(result['by_family'])}")
    if step in checkpoints and run.out_dir is not None:
        # The scheduled evaluation of this very step, when there was one (the weights are the same).
        ck_eval = result or _evaluate(run)
        name = checkpoints[step]
        run.saved[name] = save_embedded(
            run.model, run.tokenizer, run.out_dir, name, config, step, run.elapsed(), ck_eval, run.history
        )
        run.log(f"saved checkpoint {name} at step {step}")
    if run.save_every and step % run.save_every == 0:
        _save_checkpoint(run)


def _evaluate(run: _Run) -> dict[str, Any]:
    """The binding held-out evaluation, plus `by_family` accuracies when the run measures families."""
    result = evaluate(run.model, run.tokenizer, run.held_out)
    if run.families:
        result["by_family"] = evaluate_families(run.model, run.tokenizer, run.families)
    return result


def _row(result: dict[str, Any]) -> dict[str, Any]:
    # A history row: the binding summary, and {family: {length: accuracy}} when families were measured.
    return short_eval(result) | ({"by_family": result["by_family"]} if "by_family" in result else {})


def _save_checkpoint(run: _Run) -> None:
    import torch  # at use: torch costs seconds to import

    assert run.run_path is not None
    state = {
        "step": run.step,
        "elapsed": run.elapsed(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "data_rng": run.stream.rng_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state() if run.device.type == "cuda" else None,
        "history": run.history,
        "save_every": run.save_every,
    }
    save_resume_state(run.run_path, run.model, state)


def _finish(run: _Run) -> TrainResult:
    """The final evaluation and save of the sitting."""
    wall = run.elapsed()
    final = _evaluate(run)
    if not run.history or run.history[-1]["step"] != run.step:  # unless the last eval was this very step
        run.history.append({"step": run.step, "seconds": round(wall, 1), **_row(final)})
    config = run.config
    if run.out_dir is not None:
        run.saved[config.name] = save_embedded(
            run.model, run.tokenizer, run.out_dir, config.name, config, run.step, wall, final, run.history
        )
    run.log(f"done: {run.step} steps in {wall:.0f}s, held-out accuracy {final['accuracy']:.3f}")
    if "by_family" in final:
        run.log(f"final by family: {family_line(final['by_family'])}")
    return TrainResult(run.model, run.tokenizer, config, run.step, wall, run.history, final, run.saved)
