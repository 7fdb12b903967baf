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
  marked; when each family is learned (`learned_at`: the first evaluation from which every length stays at
  or above `LEARNED_AT`); and, per family with a counterfactual (binding, range, boolean:
  `debug.counterfactual.COUNTERFACTUAL_FAMILIES`), where the changed value travels (`measure_patching`):
  the same pairs at every checkpoint, one pair's layer x position heatmap and the mean effect per target
  and layer over all of them, one row per checkpoint.

The sweeps use `debug.causal.engine.sweep_pairs`; the evaluation uses `debug.train.evaluate.evaluate` on
the held-out set of `debug.train.evaluate.eval_programs`, so the numbers are the ones the model card
reports. Every input is checked (checkpoint folders, counts, patch families) before the first checkpoint is
measured.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from debug._util.figures import figure_base64
from debug._util.files import atomic_write_json, atomic_write_text
from debug._util.jsonable import jsonable
from debug._util.templates import template_env
from debug.causal.inputs import prepare_inputs
from debug.causal.plots import plot_ref_depth_aggregate
from debug.causal.result import aggregate_by_target
from debug.counterfactual import COUNTERFACTUAL_FAMILIES, create_counterfactual, mark_change
from debug.generators import GENERATORS
from debug.misreadings import CATEGORIES
from debug.models import DEFAULT_MODEL, EMBEDDED, load, unload
from debug.programs import Program, as_program
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


#: The program length of each family's patching pairs: the causal eval modules' lengths
#: (`evals/test_causal_*.py`), 16 lines for binding as in the paper.
PATCH_LENGTHS = {"binding": 16, "range": 5, "boolean": 4}

#: What each family's counterfactual changes (the report's captions).
PATCH_CHANGES = {
    "binding": "the chain's root constant",
    "range": "the loop bound or the increment",
    "boolean": "one root constant flipped",
}


def check_patch_families(families: Sequence[str]) -> tuple[str, ...]:
    """The families to patch; one without counterfactual support is refused in one line naming those with it.

    Raises:
        ValueError: e.g. `patch family 'exception' has no counterfactual support; families with one: binding,
            range, boolean`.
    """
    for family in families:
        if family not in COUNTERFACTUAL_FAMILIES:
            raise ValueError(
                f"patch family {family!r} has no counterfactual support; families with one: "
                f"{', '.join(COUNTERFACTUAL_FAMILIES)}"
            )
    return tuple(dict.fromkeys(families))  # in the order given, each once


def patching_pairs(
    tokenizer: Any, family: str, count: int, *, num_hops: int = 3, seq_len: int | None = None
) -> list[tuple[Program, Program]]:
    """`count` (original, counterfactual) pairs of one family from seeds 0, 1, ... (skipping seeds with none).

    Seed S: the family's causal-eval generator (`debug.causal.evaluate.CAUSAL_FAMILIES`, query form) at
    `seq_len` (default `PATCH_LENGTHS`) with `np.random.RandomState(S)`, and its counterfactual
    `debug.counterfactual.create_counterfactual(program, S, tokenizer, family=...)` (equal token length).
    A binding seed is `debug.causal.pairs.binding_pair`'s; a range or boolean original carries its change
    (`mark_change`), so its "changed constant" token is a target. Every checkpoint gets the same pairs.
    """
    # deferred: debug.causal.evaluate imports torch through the patching engine
    from debug.causal.evaluate import CAUSAL_FAMILIES

    generator, knobs = CAUSAL_FAMILIES[family]
    knobs = knobs | ({"num_hops": num_hops} if family == "binding" else {})
    length = seq_len or PATCH_LENGTHS[family]
    pairs, seed = [], 0
    while len(pairs) < count and seed < 50 * count:
        program = as_program(GENERATORS[generator](length, np.random.RandomState(seed), **knobs))
        # No counterfactual of equal token length, or none that changes the answer, for this seed.
        with contextlib.suppress(ValueError):
            cf = create_counterfactual(program, seed, tokenizer, family=family)
            pairs.append((program if family == "binding" else mark_change(program, cf), cf))
        seed += 1
    return pairs


def measure_patching(loaded: Any, family: str, count: int, *, num_hops: int = 3) -> dict[str, Any]:
    """Residual-stream patching of `count` pairs of one family: the mean effect at each target, and one pair.

    The first pair is swept at every layer and position (its layer x position heatmap); the others at their
    targets only (all the mean by target needs), in one `debug.causal.engine.sweep_pairs` call.

    Returns:
        {"family", "seq_len", "pairs" (swept), "solved" (answered right both ways), "aggregate"
        (`debug.causal.result.aggregate_by_target`), "example" (the first pair's `SweepResult.to_dict()`,
        None without pairs), "program" and "counterfactual" (its texts)}.
    """
    from debug.causal.engine import sweep_pairs  # deferred: the patching engine imports torch (seconds)

    pairs = patching_pairs(loaded.tokenizer, family, count, num_hops=num_hops)
    positions: list[list[int] | None] = [None] + [
        sorted(set(prepare_inputs(loaded.tokenizer, o, c).targets.values())) for o, c in pairs[1:]
    ]
    # Early checkpoints are expected to miss pairs (the report compares phases, accuracy beside each): no
    # warning per pair; `solved` counts them.
    results = sweep_pairs(loaded, pairs, positions=positions, warn_unsolved=False) if pairs else []
    return {
        "family": family,
        "seq_len": PATCH_LENGTHS[family],
        "pairs": len(results),
        "solved": sum(r.solved for r in results),
        "aggregate": aggregate_by_target(results),
        "example": results[0].to_dict() if results else None,
        "program": pairs[0][0].text if pairs else None,
        "counterfactual": pairs[0][1].text if pairs else None,
    }


def measure_checkpoint(
    model_id: str,
    *,
    per_hop: int,
    pairs: int,
    num_hops: int,
    per_length: int = 0,
    patch_families: Sequence[str] = (),
) -> dict[str, Any]:
    """Held-out evaluation and the patching sweeps of one checkpoint.

    With `per_length`, the evaluation also has `by_family`: {family: {length: accuracy}} on that many
    held-out programs per family and length (`debug.train.evaluate.evaluate_families`). `patching` is the
    binding sweep's mean by target (always measured); `family_patching` has `measure_patching` of every
    family in `patch_families`.
    """
    loaded = load(model_id)
    evaluation = evaluate(loaded.model, loaded.tokenizer, eval_programs(per_hop))
    if per_length:
        evaluation["by_family"] = evaluate_families(
            loaded.model, loaded.tokenizer, family_programs(per_length)
        )
    swept = {
        family: measure_patching(loaded, family, pairs, num_hops=num_hops)
        for family in dict.fromkeys(["binding", *patch_families])
    }
    unload(model_id)  # a run has many checkpoints; keep one in memory at a time
    return {
        "model": model_id,
        "evaluation": evaluation,
        "patching": swept["binding"]["aggregate"],
        "family_patching": {family: swept[family] for family in patch_families},
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


#: A family counts as learned from the first evaluation at which every length in question is at least this
#: accurate and stays so at every later evaluation (with the run's 16 programs per cell: 15 of 16 or more).
LEARNED_AT = 0.9


def learned_at(rows: Sequence[dict[str, Any]], threshold: float = LEARNED_AT) -> dict[str, dict[str, Any]]:
    """When each family is learned, from the run's per-family evaluations (`family_history` rows).

    Returns:
        {family: {"default": step, "all": step}}: the first step from which every one of the eval suite's
        default lengths (`default`), or every length measured (`all`), is at least `threshold` at that
        evaluation and at every later one; None when the last evaluation is below it.
    """
    defaults = {f.name: {str(n) for n in f.default_lens} for f in FAMILIES}
    out: dict[str, dict[str, Any]] = {}
    for name in rows[0]["by_family"] if rows else ():
        entry: dict[str, Any] = {}
        for which in ("default", "all"):
            since = None
            for row in rows:
                by_len = row["by_family"].get(name, {})
                keys = [k for k in by_len if which == "all" or k in defaults.get(name, set(by_len))]
                held = bool(keys) and all(by_len[k] >= threshold for k in keys)
                since = (since if since is not None else row["step"]) if held else None
            entry[which] = since
        out[name] = entry
    return out


def plot_family_patching(checkpoints: Sequence[dict[str, Any]], family: str) -> str:
    """One family's patching across checkpoints, one row per checkpoint (base64 PNG).

    Left: the layer x position heatmap of the family's first pair (the same pair at every checkpoint), its
    targets' tokens in red. Right: the mean normalized effect per target and layer over the family's pairs.
    Both on one colour scale, [-1, 1] (0: the original answer kept, 1: the counterfactual's; unclipped values
    beyond it take the end colours).
    """
    import matplotlib  # deferred: matplotlib costs ~0.3 s to import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = [(ck["step"], ck["family_patching"][family]) for ck in checkpoints]
    example = next((e["example"] for _, e in entries if e["example"]), None)
    width = 6.0 + 0.11 * len(example["positions"]) if example else 8.0
    layers = len(example["layers"]) if example else 4
    fig, axes = plt.subplots(
        len(entries),
        2,
        figsize=(min(30.0, width), (1.2 + 0.14 * layers) * len(entries) + 0.6),
        squeeze=False,
        gridspec_kw={"width_ratios": [3, 1]},
    )
    kwargs = {"aspect": "auto", "cmap": "RdBu_r", "vmin": -1.0, "vmax": 1.0, "interpolation": "nearest"}
    image = None
    for (step, entry), (left, right) in zip(entries, axes, strict=True):
        ex = entry["example"]
        if ex is None:
            for ax in (left, right):
                ax.set_axis_off()
            left.set_title(f"step {step}: no pair of equal token length", fontsize=8)
            continue
        values = np.array(ex["normalized"], dtype=float)  # null (undefined) -> nan, drawn blank
        image = left.imshow(values, origin="lower", **kwargs)
        labels = [ex["tokens"][p] for p in ex["positions"]]
        left.set_xticks(range(len(labels)), labels, fontsize=5, fontfamily="monospace")
        marked = {ex["positions"].index(p) for p in ex["targets"].values() if p in ex["positions"]}
        for index in marked:
            left.get_xticklabels()[index].set_color("#d62728")
        left.set_yticks(range(len(ex["layer_labels"])), ex["layer_labels"], fontsize=5)
        verdict = (
            "right both ways" if ex["original_correct"] and ex["counterfactual_correct"] else "not solved"
        )
        answer = f"{ex['answer']['original']!r} -> {ex['answer']['counterfactual']!r}"
        left.set_title(f"step {step}: one pair, answer {answer} ({verdict})", fontsize=8)
        left.set_ylabel("layer", fontsize=7)
        by_target = entry["aggregate"]["by_target"]
        targets = list(by_target)
        means = np.array(
            [[np.nan if v is None else v for v in by_target[t]["normalized"]] for t in targets], dtype=float
        )
        right.imshow(means.T, origin="lower", **kwargs)
        right.set_xticks(range(len(targets)), targets, fontsize=5, rotation=60, ha="right")
        right.set_yticks(range(len(entry["aggregate"]["layer_labels"])), entry["aggregate"]["layer_labels"])
        right.tick_params(axis="y", labelsize=5)
        right.set_title(f"mean of {entry['pairs']} pairs ({entry['solved']} solved)", fontsize=8)
    if image is not None:
        fig.colorbar(image, ax=axes[:, 1].tolist(), fraction=0.08, pad=0.04, label="normalized effect")
    return figure_base64(fig, dpi=90)


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
    patch_families: Sequence[str] | None = None,
    log: Any = print,
) -> Path:
    """Measure every checkpoint in `models` and write `train_report.html` / `.json` under `out_dir`.

    Args:
        models: Checkpoints of one run (`embedded:<name>` or folders), any order; sorted by step.
        out_dir: Where the report goes (created).
        per_hop: Held-out programs per hop count for the re-evaluation.
        pairs: Pairs per family averaged in each checkpoint's patching sweep.
        num_hops: Query depth of the binding pairs (16-line programs).
        per_length: Held-out programs per family and length re-measured on every checkpoint (0: binding
            only). None takes each checkpoint's own evaluation at its step from the run's history, and
            re-measures with the run's `eval_per_length` a checkpoint whose step has none (0 for a
            binder's run: binding only).
        patch_families: Families (of `debug.counterfactual.COUNTERFACTUAL_FAMILIES`) whose patching panels
            the report draws, `pairs` pairs each (`measure_patching`); None: all of them for a run that
            measures every family (its `eval_per_length`, or `per_length`, > 0), none for a binder's run
            (its binding panel by ref depth is always there).
        log: Progress lines go here.

    Returns:
        The path of `train_report.html`.

    Raises:
        ValueError: No checkpoints, a bad count, or a patch family without counterfactual support.
        FileNotFoundError: A checkpoint `debug train` did not write (before anything is measured).
    """
    check_report_args(per_hop=per_hop, pairs=pairs, num_hops=num_hops)
    if patch_families is not None:
        patch_families = check_patch_families(patch_families)
    if not models:
        raise ValueError("train-report needs at least one checkpoint (embedded:<name> or a folder)")
    # Read first, so a bad name fails now, not after minutes of measuring the others.
    records = []
    for model_id in models:
        record = read_history(_folder(model_id))
        offset, history = whole_run(record)
        records.append((offset + record["step"], model_id, record, history))
    records.sort(key=lambda entry: entry[0])
    if per_length is None:  # the run's own: a run that measured every family is reported by family
        per_length = int(records[-1][2]["config"].get("eval_per_length", 0))
        from_history = True
    else:
        from_history = False
    if patch_families is None:
        patch_families = COUNTERFACTUAL_FAMILIES if per_length else ()
    measured = []
    for step, model_id, record, history in records:
        log(f"measuring {model_id}")
        # The run's own evaluation at the checkpoint's step is the same measurement (same held-out seeds,
        # greedy answers): take it rather than spend minutes per checkpoint re-measuring it.
        recorded = next((r["by_family"] for r in history if r["step"] == step and "by_family" in r), None)
        reuse = from_history and recorded is not None
        ck = measure_checkpoint(
            model_id,
            per_hop=per_hop,
            pairs=pairs,
            num_hops=num_hops,
            per_length=0 if reuse else per_length,
            patch_families=patch_families,
        )
        if reuse:
            ck["evaluation"]["by_family"] = recorded
        if "by_family" in ck["evaluation"]:
            ck["evaluation"]["by_family_source"] = "the run's evaluation" if reuse else "re-measured"
            log(f"{model_id} (step {step}) by family: {family_line(ck['evaluation']['by_family'])}")
        for family, entry in ck["family_patching"].items():
            solved = f"{entry['pairs']} pairs, {entry['solved']} solved"
            log(f"{model_id} (step {step}) patching {family}: {solved}")
        # `step` counts on from the start model's steps (`whole_run`); `run_step` is the run's own.
        measured.append({"step": step, "run_step": record["step"], **ck})
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
        "learned": {"threshold": LEARNED_AT, "by_family": learned_at(by_family)} if by_family else None,
        "patch_families": [
            {"family": f, "seq_len": PATCH_LENGTHS[f], "changes": PATCH_CHANGES[f]} for f in patch_families
        ],
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Plain JSON: an undefined normalized effect (a pair whose two runs agree) is written as null, not NaN.
    atomic_write_json(out / "train_report.json", jsonable(document), indent=1)
    html = (
        template_env()
        .get_template("train_report.html.j2")
        .render(
            doc=document,
            history_png=plot_history(history, [ck["step"] for ck in measured], stages) if history else None,
            patching_png=plot_patching(measured),
            families_png=plot_families(by_family, [ck["step"] for ck in measured]) if by_family else None,
            family_patching_png={f: plot_family_patching(measured, f) for f in patch_families},
        )
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
