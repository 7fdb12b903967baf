"""The training-dynamics report: how a binder's behaviour and mechanism change across one run's checkpoints.

`debug train-report` (CLI) or `training_report(models, out_dir)` (Python) reads checkpoints saved by
`debug train` (embedded names or folders) and writes `train_report.html` (self-contained) and
`train_report.json` with:

- the run's evaluation history (every `eval_every` steps, from the last checkpoint's
  `training_history.json`): held-out accuracy by hop, and the model's *agreement* with the copy heuristics
  (how often its answer is the one `copy_line_1` / `copy_last_constant` would give, right or wrong). A
  copying phase shows as high agreement with accuracy near the heuristic's; dereferencing shows as accuracy
  rising while agreement falls to the heuristic's own accuracy.
- per checkpoint, the same numbers re-measured now; which misreadings of the programs give its wrong answers,
  against chance (`debug.misreadings`); and a residual-stream patching sweep averaged over binding
  pairs (the chain root's constant changed): the normalized effect per layer at the right-hand side of each
  chain line ("ref depth k"), the query variable and the final token. Where in depth and position the value
  travels can then be compared between phases.
- for a run that measures every program family (`TrainConfig.eval_per_length > 0`, e.g. the `multi`
  preset): held-out accuracy by family and by length at every evaluation of the run (a plot, one panel per
  family) and per checkpoint re-measured now (a family x length table), the eval suite's default lengths
  marked.

The sweeps use `debug.causal.engine.sweep`; the evaluation uses `debug.train.evaluate.evaluate` on the
held-out set of `debug.train.evaluate.eval_programs`, so the numbers are the ones the model card reports.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2

from debug._util.figures import figure_base64
from debug._util.files import atomic_write_json, atomic_write_text
from debug._util.jsonable import jsonable
from debug.causal.pairs import binding_pair
from debug.causal.plots import plot_ref_depth_aggregate
from debug.causal.result import aggregate_by_target
from debug.misreadings import CATEGORIES
from debug.models import DEFAULT_MODEL, EMBEDDED, load, unload
from debug.train.card import HISTORY_FILE
from debug.train.data import stage_spans
from debug.train.evaluate import (
    FAMILIES,
    eval_programs,
    evaluate,
    evaluate_families,
    family_line,
    family_programs,
)


def read_history(folder: str | Path) -> dict[str, Any]:
    """The `training_history.json` of a saved checkpoint folder.

    Raises:
        FileNotFoundError: When the folder was not written by `debug train` (one-line message).
    """
    path = Path(folder) / HISTORY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: train-report takes checkpoints saved by `debug train`")
    return json.loads(path.read_text())


def lineage(model_id: str) -> list[tuple[str, dict[str, Any]]]:
    """(model id, `training_history.json` record) of every run a checkpoint continues, oldest first.

    A run that started from a trained model (`TrainConfig.start_from`) continues that model's run, and so on
    back to a run from scratch; the checkpoint's own run comes last.
    """
    chain = [(model_id, read_history(_folder(model_id)))]
    while start := chain[0][1]["config"].get("start_from"):
        chain.insert(0, (start, read_history(_folder(start))))
    return chain


def default_checkpoints() -> list[str]:
    """The default model and the checkpoints its runs saved, as embedded names in step order."""
    names: list[str] = []
    for model_id, record in lineage(DEFAULT_MODEL):
        saved = [f"embedded:{ck_name}" for _, ck_name in record["config"]["checkpoints"]]
        names += [m for m in saved if m in EMBEDDED and m not in names] + [model_id]
    return names


def whole_run(record: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    """The steps trained before a checkpoint's run began, and the evaluation history of the whole run.

    A run started from a trained model (`start_from`) counts its steps on from that model's and carries its
    history before its own; a run from scratch starts at 0 with its own history.
    """
    start = record["config"].get("start_from")
    before = lineage(start) if start else []
    offset, history = 0, []
    for _, earlier in before:
        history += [row | {"step": row["step"] + offset} for row in earlier["history"]]
        offset += earlier["step"]
    return offset, history + [row | {"step": row["step"] + offset} for row in record["history"]]


def _folder(model_id: str) -> Path:
    if model_id.startswith("embedded:"):
        if model_id not in EMBEDDED:
            raise FileNotFoundError(f"no embedded model {model_id!r}; choose one of {', '.join(EMBEDDED)}")
        return EMBEDDED[model_id]
    return Path(model_id)


def binding_pairs(tokenizer: Any, count: int, num_hops: int, seq_len: int = 16) -> list[tuple[Any, Any]]:
    """`count` (original, counterfactual) binding pairs from seeds 0, 1, ... (skipping seeds with none)."""
    pairs, seed = [], 0
    while len(pairs) < count and seed < 50 * count:
        with contextlib.suppress(ValueError):  # no counterfactual of equal token length for this seed
            pairs.append(binding_pair(seq_len, num_hops, seed, tokenizer))
        seed += 1
    return pairs


def measure_checkpoint(
    model_id: str, *, per_hop: int, pairs: int, num_hops: int, per_length: int = 0
) -> dict[str, Any]:
    """Held-out evaluation and the averaged residual-stream sweep of one checkpoint.

    With `per_length`, the evaluation also has `by_family`: {family: {length: accuracy}} on that many
    held-out programs per family and length (`debug.train.evaluate.evaluate_families`).
    """
    from debug.causal.engine import sweep  # at use: the patching engine imports torch (seconds)

    loaded = load(model_id)
    evaluation = evaluate(loaded.model, loaded.tokenizer, eval_programs(per_hop))
    if per_length:
        evaluation["by_family"] = evaluate_families(
            loaded.model, loaded.tokenizer, family_programs(per_length)
        )
    # Early checkpoints are expected to miss pairs (the report compares phases, accuracy beside each): no
    # warning per pair.
    sweeps = [
        sweep(loaded, original, counterfactual, warn_unsolved=False)
        for original, counterfactual in binding_pairs(loaded.tokenizer, pairs, num_hops)
    ]
    unload(model_id)  # a run has many checkpoints; keep one in memory at a time
    return {
        "model": model_id,
        "evaluation": evaluation,
        "patching": aggregate_by_target(sweeps),
    }


def curriculum_stages(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The first and last step and the program lengths of each curriculum stage in a stored run config."""
    stages = config.get("curriculum", [])  # runs saved before curricula existed have none
    out = []
    for (first, last), stage in zip(stage_spans([st["steps"] for st in stages]), stages, strict=True):
        lens = [n for source in stage["mix"] for n in source["seq_lens"]]
        out.append({"first": first, "last": last, "lines": [min(lens), max(lens)]})
    return out


def plot_history(
    history: Sequence[dict[str, Any]], marks: Sequence[int], stages: Sequence[dict[str, Any]] = ()
) -> str:
    """Accuracy by hop and heuristic agreement against step (base64 PNG).

    Checkpoints are drawn as lines, curriculum stages as shaded spans labelled with their program lengths
    (the held-out programs always have 16 lines).
    """
    import matplotlib  # at use: matplotlib costs a noticeable part of a second to import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [row["step"] for row in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), sharex=True)
    hops = sorted(k for k in history[0] if k.startswith("hop"))
    for key in ["accuracy", *hops]:
        left.plot(steps, [row[key] for row in history], lw=2 if key == "accuracy" else 1, label=key)
    agree = [k for k in history[0] if k.startswith("agree_")]
    for key in agree:
        right.plot(steps, [row[key] for row in history], label=key.removeprefix("agree_"))
    right.plot(steps, [row["accuracy"] for row in history], color="0.4", ls="--", lw=1, label="accuracy")
    # Runs saved before agreement was recorded have accuracy rows only; the checkpoint table still has it.
    right_title = "agreement with the copy heuristics" if agree else "agreement: not recorded by this run"
    for ax, title in ((left, "held-out accuracy by hop"), (right, right_title)):
        for step in marks:
            ax.axvline(step, color="0.75", lw=0.8)
        for i, stage in enumerate(st for st in stages if st["first"] <= steps[-1]):
            last = min(stage["last"], steps[-1])  # a checkpoint saved mid-stage ends its plot there
            ax.axvspan(stage["first"], last, color="0.5", alpha=0.06 + 0.06 * (i % 2), lw=0)
            low, high = stage["lines"]
            label = f"{low} lines" if low == high else f"{low}-{high} lines"
            ax.text((stage["first"] + last) / 2, 0.02, label, ha="center", va="bottom", fontsize=7)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("step")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return figure_base64(fig, dpi=110)


def family_history(history: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The evaluations of a run that measured every family: {"step", "by_family"} rows, in step order."""
    return [{"step": row["step"], "by_family": row["by_family"]} for row in history if "by_family" in row]


def plot_families(rows: Sequence[dict[str, Any]], marks: Sequence[int] = ()) -> str:
    """Held-out accuracy against step, one panel per family and one line per length (base64 PNG).

    Lengths past the eval suite's defaults are dashed: they are the length-generalization signal.
    """
    import matplotlib  # at use: matplotlib costs a noticeable part of a second to import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows[0]["by_family"])
    defaults = {f.name: f.default_lens for f in FAMILIES}
    cols = min(5, len(names))
    nrows = -(-len(names) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.6 * nrows), squeeze=False, sharey=True)
    for ax in axes.flat[len(names) :]:
        ax.set_visible(False)
    steps = [row["step"] for row in rows]
    for ax, name in zip(axes.flat, names, strict=False):
        for length in rows[0]["by_family"][name]:
            dashed = int(length) not in defaults.get(name, ())
            values = [row["by_family"].get(name, {}).get(length) for row in rows]
            ax.plot(steps, values, ls="--" if dashed else "-", marker=".", lw=1, label=length)
        for step in marks:
            ax.axvline(step, color="0.75", lw=0.8)
        ax.set_ylim(0, 1.02)
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=6, title="length", title_fontsize=6)
    fig.tight_layout()
    return figure_base64(fig, dpi=100)


def family_table(checkpoints: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The family x length layout of the checkpoints' `by_family` evaluations, or None when none has one.

    Returns:
        {"lengths": {family: [length, ...]}, "default_lens": {family: [length, ...]}}; the lengths are
        strings, as the evaluations key them.
    """
    measured = [ck["evaluation"]["by_family"] for ck in checkpoints if "by_family" in ck["evaluation"]]
    if not measured:
        return None
    lengths = {name: list(by_len) for name, by_len in measured[0].items()}
    defaults = {f.name: [str(n) for n in f.default_lens] for f in FAMILIES if f.name in lengths}
    return {"lengths": lengths, "default_lens": defaults}


def plot_patching(checkpoints: Sequence[dict[str, Any]]) -> str:
    """One panel per checkpoint: mean normalized effect per layer at each chain target (base64 PNG)."""
    import matplotlib  # deferred: matplotlib costs ~0.3 s to import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, len(checkpoints))
    rows = -(-len(checkpoints) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat[len(checkpoints) :]:
        ax.set_visible(False)
    for ax, ck in zip(axes.flat, checkpoints, strict=False):
        title = f"step {ck['step']} (accuracy {ck['evaluation']['accuracy']:.2f})"
        plot_ref_depth_aggregate(ck["patching"], ax=ax, title=title)
    return figure_base64(fig, dpi=110)


def training_report(
    models: Sequence[str],
    out_dir: str | Path,
    *,
    per_hop: int = 100,
    pairs: int = 8,
    num_hops: int = 3,
    per_length: int | None = None,
    log: Any = print,
) -> Path:
    """Measure every checkpoint in `models` and write `train_report.html` / `.json` under `out_dir`.

    Args:
        models: Checkpoints of one run (`embedded:<name>` or folders), any order; sorted by step.
        out_dir: Where the report goes (created).
        per_hop: Held-out programs per hop count for the re-evaluation.
        pairs: Binding pairs averaged in each checkpoint's patching sweep.
        num_hops: Query depth of those pairs (16-line programs).
        per_length: Held-out programs per family and length re-measured on every checkpoint (0: binding
            only); None takes the last checkpoint's run's `eval_per_length` (0 for a binder's run).
        log: Progress lines go here.

    Returns:
        The path of `train_report.html`.

    Raises:
        ValueError: No checkpoints, or a bad count.
        FileNotFoundError: A checkpoint `debug train` did not write (before anything is measured).
    """
    check_report_args(per_hop=per_hop, pairs=pairs, num_hops=num_hops)
    if not models:
        raise ValueError("train-report needs at least one checkpoint (embedded:<name> or a folder)")
    # Read first, so a bad name fails now, not after minutes of measuring the others.
    records = []
    for model_id in models:
        record = read_history(_folder(model_id))
        offset, history = whole_run(record)
        records.append((offset + record["step"], model_id, record, history))
    records.sort(key=lambda entry: entry[0])
    if per_length is None:
        per_length = int(records[-1][2]["config"].get("eval_per_length", 0))
    measured = []
    for step, model_id, _, _ in records:
        log(f"measuring {model_id}")
        ck = measure_checkpoint(
            model_id, per_hop=per_hop, pairs=pairs, num_hops=num_hops, per_length=per_length
        )
        if "by_family" in ck["evaluation"]:
            log(f"{model_id} (step {step}) by family: {family_line(ck['evaluation']['by_family'])}")
        measured.append({"step": step, **ck})
    _, _, last, history = records[-1]
    by_family = family_history(history)
    stages = curriculum_stages(records[0][2]["config"])  # the first run's: a grown run has none of its own
    document = {
        "config": last["config"],
        "curriculum": stages,
        "history": history,
        "checkpoints": measured,
        "misreadings": list(CATEGORIES),
        "pairs": {"count": pairs, "num_hops": num_hops, "seq_len": 16},
        "families": family_table(measured),
        "family_history": by_family,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Plain JSON: an undefined normalized effect (a pair whose two runs agree) is written as null, not NaN.
    atomic_write_json(out / "train_report.json", jsonable(document), indent=1)
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("debug", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    html = env.get_template("train_report.html.j2").render(
        doc=document,
        history_png=plot_history(history, [ck["step"] for ck in measured], stages) if history else None,
        patching_png=plot_patching(measured),
        families_png=plot_families(by_family, [ck["step"] for ck in measured]) if by_family else None,
    )
    path = atomic_write_text(out / "train_report.html", html)
    log(f"wrote {path}")
    return path


#: The valid range of each count `training_report` takes (the command line's option types read it too).
REPORT_RANGES = {
    "per_hop": (1, 100_000),
    "pairs": (1, 10_000),
    "num_hops": (1, 16),
    "per_length": (0, 100_000),
}


def check_report_args(**counts: int) -> None:
    """Refuse a count outside `REPORT_RANGES` in one line naming it and its range.

    Raises:
        ValueError: e.g. `per_hop (--per-hop) must be an integer from 1 to 100000; got 0`.
    """
    for key, value in counts.items():
        if key == "per_length" and value is None:  # None: the run's own eval_per_length
            continue
        low, high = REPORT_RANGES[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            flag = "--" + key.replace("_", "-")
            raise ValueError(f"{key} ({flag}) must be an integer from {low} to {high}; got {value!r}")
