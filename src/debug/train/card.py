"""The saved form of a trained model: its folder and the model card generated from the run.

`save_embedded` writes `config.json`, `model.safetensors`, the tokenizer files, `MODEL_CARD.md` and
`training_history.json` (the machine-readable record `debug train-report` reads); the card
states the config, data mix, steps, seed, wall time, hardware, the held-out accuracy by hop beside the
heuristic baselines, and a `debug train` command that replays the run into a folder of its own (never over
the shipped models). `resave` writes a saved model again under another name, its card and history
regenerated to match.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
from dataclasses import asdict
from pathlib import Path
from typing import Any

from debug import models
from debug._util.files import atomic_write_json, atomic_write_text
from debug.train.config import PRESETS, SWITCHES, VALUE_FLAGS, TrainConfig, config_from_dict, flag
from debug.train.data import stage_spans
from debug.train.evaluate import EVAL_BASE_SEED, eval_programs, evaluate, evaluate_families, family_programs

#: Written next to every saved checkpoint: its step, the run's config and evaluations so far (read by
#: `debug train-report`).
HISTORY_FILE = "training_history.json"


def save_embedded(
    model: Any,
    tokenizer: Any,
    out_dir: Path,
    name: str,
    config: TrainConfig,
    step: int,
    seconds: float,
    evaluation: dict[str, Any],
    history: list[dict[str, Any]],
) -> Path:
    """Write `out_dir/name/` (config, safetensors weights, tokenizer, MODEL_CARD.md) and return the folder.

    An existing folder of that name is written over (the command line refuses that without `--overwrite`).
    """
    folder = out_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)  # safetensors is the transformers default
    tokenizer.save_pretrained(folder)
    stray = folder / "generation_config.json"
    if stray.exists():
        stray.unlink()
    atomic_write_text(folder / "MODEL_CARD.md", model_card(name, config, step, seconds, evaluation, history))
    # What `debug train-report` reads: this checkpoint's step and the run's evaluations up to it.
    record = {"name": name, "step": step, "seconds": round(seconds, 1), "config": asdict(config)}
    atomic_write_json(folder / HISTORY_FILE, record | {"history": history}, indent=1)
    return folder


def resave(folder: str | Path, out_dir: str | Path, name: str, *, start_from: str | None = None) -> Path:
    """Save the model in `folder` again as `out_dir/name/`: the same weights under a new name.

    Renaming a shipped model means more than moving its folder: its card, `config.json` and training history
    carry the name, and a model grown from it names it in `start_from`. This reloads the weights, re-runs the
    held-out evaluation (deterministic, so the card's table comes out the same) and writes everything again
    through `save_embedded`. `start_from` replaces the recorded start, for a model whose starting weights were
    themselves renamed since. The step, wall time and evaluation history are the recorded ones.
    """
    path = Path(folder) / HISTORY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: resave takes a model folder written by `debug train`")
    record = json.loads(path.read_text())
    config = dataclasses.replace(config_from_dict(record["config"]), name=name)
    if start_from is not None:
        config = dataclasses.replace(config, start_from=start_from)
    loaded = models.load(str(folder))
    evaluation = evaluate(loaded.model, loaded.tokenizer, eval_programs(config.eval_per_hop))
    if config.eval_per_length:  # a multi-family run's card also has its table by family and length
        sets = family_programs(config.eval_per_length)
        evaluation["by_family"] = evaluate_families(loaded.model, loaded.tokenizer, sets)
    return save_embedded(
        loaded.model,
        loaded.tokenizer,
        Path(out_dir),
        name,
        config,
        record["step"],
        record["seconds"],
        evaluation,
        record["history"],
    )


def _hardware(device: str = "cpu") -> str:
    import torch  # at use: torch costs seconds to import

    device = torch.cuda.get_device_name(0) if device == "cuda" else "CPU"
    return (
        f"{device}; {platform.machine()} {platform.system()}, {os.cpu_count()} logical cores, "
        f"{torch.get_num_threads()} torch thread(s); Python {platform.python_version()}, "
        f"torch {torch.__version__}"
    )


def _closest_preset(config: TrainConfig) -> str:
    """The preset that `config` departs from in the fewest fields (ties go to `default`)."""
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    return min(
        PRESETS,
        key=lambda n: (sum(getattr(config, f) != getattr(PRESETS[n], f) for f in fields), n != "default"),
    )


def reproduce_command(config: TrainConfig, step: int) -> str:
    """The `debug train` command that replays `config` up to `step` (same data, schedule and weights).

    It starts from the preset closest to `config` and adds a flag for every field the command line can set
    that differs from it; a field it cannot set (the data mix, the curriculum, the optimizer's extras) is
    flagged after the command instead. The command saves into `runs/<run name>/` (the name comes from that
    folder), never into the installed package, so it is safe to paste: it refuses to replace a model folder
    that is already there.
    """
    preset = _closest_preset(config)
    base = PRESETS[preset]
    args = ["debug train"] + ([f"--preset {preset}"] if preset != "default" else [])
    for key in VALUE_FLAGS:
        if key != "name" and getattr(config, key) != getattr(base, key):  # --out-dir below names the run
            args.append(f"{flag(key)} {getattr(config, key)}")
    if config.device != base.device:
        args.append(f"--device {config.device}")
    args += [flag(key) for key in SWITCHES if getattr(config, key) and not getattr(base, key)]
    if config.threads:
        args.append(f"--threads {config.threads}")  # the thread count changes float summation order
    for ck_step, ck_name in config.checkpoints:
        if ck_step <= step:
            args.append(f"--checkpoint {ck_step}:{ck_name}")
    if step < config.steps:
        args.append(f"--stop-after {step}")
    args.append(f"--out-dir runs/{config.name}")
    fixed = ("mix", "curriculum", "warmup", "weight_decay", "kv_heads", "intermediate", "max_positions")
    same = all(getattr(config, k) == getattr(base, k) for k in fixed)
    return " ".join(args) + ("" if same else "  (and the data mix / optimizer settings above)")


def _misreading_lines(rates: dict[str, Any]) -> str:
    """The card's account of the wrong answers: which misreadings give them, against chance."""
    if not rates["errors"]:
        return "None on the held-out set."
    shares = ", ".join(
        f"{name.replace('_', ' ')} {rates['share'][name]:.2f} (chance {rates['chance'][name]:.2f})"
        for name in rates["share"]
    )
    return (
        f"Of {rates['errors']} wrong answers, the share each misreading of the program gives "
        f"(`debug.misreadings`): {shares}."
    )


def model_card(
    name: str,
    config: TrainConfig,
    step: int,
    seconds: float,
    evaluation: dict[str, Any],
    history: list[dict[str, Any]],
) -> str:
    """The Markdown model card of one saved checkpoint, generated from the run itself."""
    import transformers  # at use: transformers costs seconds to import

    cfg = {k: v for k, v in asdict(config).items() if k not in ("mix", "curriculum")}
    origin = (
        "started from a trained model (below; `debug.train.grow` grows it where the shapes differ) and"
        " trained further"
        if config.start_from
        else "trained from scratch"
    )
    start = (
        f"\n- Started from: `{config.start_from}` (grown to this shape where it differs); its card gives its "
        "own recipe, steps and wall time, which come before these"
        if config.start_from
        else ""
    )
    families = sorted({source.generator for source in config.mix} | {
        source.generator for stage in config.curriculum for source in stage.mix
    })  # fmt: skip
    data = (
        "variable-binding programs"
        if families == ["make_variable_binding_program"]
        else "the program families of the data mix below"
    )
    return f"""# embedded:{name}

A small Qwen3-style decoder (`Qwen3ForCausalLM`, {config.layers} layers, hidden {config.hidden},
{config.heads} heads) over the project's character tokenizer, {origin} by `debug train` on
{data}. Generated by `debug.train` when this checkpoint was saved; do not edit by hand.

## Training
- Steps: {step} of {config.steps} planned, batch {config.batch_size}, seed {config.seed}{start}
- Wall time: {seconds:.0f} s
- Hardware: {_hardware(config.device)}; transformers {transformers.__version__}
- Input: the raw program text ending in the query `#<var>:`; loss on the answer characters and `<eos>` only.
- Data mix (the curriculum's stages first, if any):
{_mix_lines(config)}
- Config: `{json.dumps(cfg)}`
- {reproduce_line(config, step)}

## Held-out accuracy (16-line paper-style programs, greedy answer exact match)
Programs seeded from base {EVAL_BASE_SEED} + hops, never drawn by the training stream.

{_accuracy_table(evaluation)}
{_family_section(evaluation)}
## Wrong answers
{_misreading_lines(evaluation["misreadings"])}

## Evaluations during training
{_curve(history)}

## Limits
Small char-level binders sit for thousands of steps at a heuristic plateau (copying an early line's constant)
before learning to dereference; read the table above against the baselines before trusting this model on a
task. Use it as the offline default and as a subject for causal tracing, not as a strong code model.
"""


def reproduce_line(config: TrainConfig, step: int) -> str:
    """The card's `Reproduce:` line: the command, and how the shipped copies were written instead."""
    return (
        f"Reproduce: `{reproduce_command(config, step)}` (saves under `runs/{config.name}/`; "
        "the models shipped in the package were written with `--ship` in place of `--out-dir`)"
    )


def _accuracy_table(evaluation: dict[str, Any]) -> str:
    rows = ["| hops | n | model | copy_line_1 | copy_last_constant | majority |", "|---|---|---|---|---|---|"]
    groups = [(hops, v) for hops, v in evaluation["by_hop"].items()] + [("all", evaluation)]
    for label, v in groups:
        b = v["baselines"]
        rows.append(
            f"| {label} | {v['n']} | {v['accuracy']:.3f} | {b['copy_line_1']:.3f} | "
            f"{b['copy_last_constant']:.3f} | {b['majority']:.3f} |"
        )
    return "\n".join(rows)


def _family_section(evaluation: dict[str, Any]) -> str:
    # Only a run that measured every family (`eval_per_length`) has it: a binder's card stays as it was.
    if "by_family" not in evaluation:
        return ""
    rows = [
        f"| {name} | " + ", ".join(f"{n}: {acc:.3f}" for n, acc in by_len.items()) + " |"
        for name, by_len in evaluation["by_family"].items()
    ]
    return (
        "\n## Held-out accuracy by family and length (query form; greedy answer parsed as the eval suite "
        "parses it)\n\n| family | length: accuracy |\n|---|---|\n" + "\n".join(rows) + "\n"
    )


def _mix_lines(config: TrainConfig) -> str:
    # (which steps, their sources) for each curriculum stage, then the final mix.
    spans = stage_spans([stage.steps for stage in config.curriculum])
    stages = [(f"steps {a}-{b}", stage.mix) for (a, b), stage in zip(spans, config.curriculum, strict=True)]
    stages.append((f"step {spans[-1][1] + 1} on" if spans else "every step", config.mix))
    return "\n".join(
        f"- {when}, weight {s.weight}: `{s.generator}` seq_len {min(s.seq_lens)}-{max(s.seq_lens)} "
        f"knobs {s.knobs or '{}'}"
        for when, sources in stages
        for s in sources
    )


def _curve(history: list[dict[str, Any]]) -> str:
    return "\n".join(f"- step {h['step']} ({h['seconds']} s): {json.dumps(h)}" for h in history) or "- (none)"
