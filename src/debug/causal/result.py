"""What a causal method returns: effect arrays, labels, targets, the unpatched runs and the definitions used.

`Effects` is what every method that scores runs against an (original, counterfactual) pair shares: the four
metrics (`METRIC_NAMES`, defined in `METRICS_DEFINITION`), the unpatched runs, the answer tokens, the
definitions, notes and its JSON. `SweepResult` (one patching sweep), `debug.causal.knockout.KnockoutResult`
and `debug.causal.path_patching.PathPatchResult` are `Effects`; `scored_rows` computes the metrics of a batch
of answer-position logits and `normalized_effect` the normalization, once for all of them.
`aggregate_by_target` averages many sweeps at each target label ("ref depth k", "query", "final"). Results
serialize to plain JSON (NaN becomes null), and `SweepResult.from_dict` reads a sweep back.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from debug._util.jsonable import jsonable
from debug.causal.inputs import AnswerTokens, PairedInputs

__all__ = [
    "METRICS_DEFINITION",
    "METRIC_NAMES",
    "Effects",
    "SweepResult",
    "UNDEFINED_NORMALIZED",
    "UnpatchedRun",
    "UnsolvedPairWarning",
    "aggregate_by_target",
    "answer_json",
    "array_json",
    "effects_fields",
    "layer_label",
    "normalized_effect",
    "scored_rows",
    "target_sort_key",
    "warn_if_unsolved",
]

METRIC_NAMES = ("logit_diff", "normalized", "prob_cf", "iia")
#: The metrics' definition, as every result's `definitions["metrics"]` states it.
METRICS_DEFINITION = (
    "unclipped, at the answer position: LD = logit(cf) - logit(orig); "
    "normalized = (LD - LD_orig)/(LD_cf - LD_orig); "
    "prob_cf = P(cf answer); iia = top-1 equals the cf answer"
)
UNDEFINED_NORMALIZED = "LD_cf equals LD_orig: the normalized effect is undefined (NaN)"


class UnsolvedPairWarning(UserWarning):
    """The model's top-1 answer is wrong on the original or the counterfactual run of a swept pair.

    Nothing is refused: the effects are still measured, but they describe a pair the model does not solve, so
    a normalized effect of 1 no longer means "this cell carries the answer".
    """


@dataclass(frozen=True)
class UnpatchedRun:
    """One unpatched run (the original or the counterfactual) scored against the answer tokens.

    Attributes:
        logit_diff: logit(cf answer) - logit(orig answer) at the answer position.
        prob_counterfactual: P(cf answer).
        prob_original: P(orig answer).
        top1_id: The top-1 token id.
        top1: Its readable label.
    """

    logit_diff: float
    prob_counterfactual: float
    prob_original: float
    top1_id: int
    top1: str


def array_json(values: Any) -> Any:
    """An array as JSON-ready nested lists of floats (NaN becomes null; booleans 0/1); None stays None."""
    return None if values is None else jsonable(np.asarray(values).astype(float).tolist())


def layer_label(layer: int, num_layers: int) -> str:
    """A layer's name on an axis: its number, or "final" for the final residual (index `num_layers`)."""
    return "final" if layer == num_layers else str(layer)


def answer_json(answer: AnswerTokens) -> dict[str, Any]:
    """The scored answer tokens as JSON (the keys `SweepResult.from_dict` reads back)."""
    return {
        "original": answer.original_text,
        "counterfactual": answer.counterfactual_text,
        "original_token_id": answer.original_id,
        "counterfactual_token_id": answer.counterfactual_id,
        "teacher_forced_prefix_ids": answer.prefix_ids,
        "source": answer.source,
    }


def normalized_effect(
    logit_diff: np.ndarray, original: UnpatchedRun, counterfactual: UnpatchedRun, notes: list[str]
) -> np.ndarray:
    """(LD - LD_orig) / (LD_cf - LD_orig), unclipped; NaN (and a note appended) when LD_cf equals LD_orig."""
    denominator = counterfactual.logit_diff - original.logit_diff
    if abs(denominator) < 1e-6:
        notes.append(UNDEFINED_NORMALIZED)
        return np.full(np.shape(logit_diff), np.nan)
    return (np.asarray(logit_diff, dtype=np.float64) - original.logit_diff) / denominator


def scored_rows(
    logits: Any, answer: AnswerTokens, original: UnpatchedRun, counterfactual: UnpatchedRun, notes: list[str]
) -> dict[str, np.ndarray]:
    """The four metrics (`METRIC_NAMES`) of each row of `[rows, vocab]` answer-position logits (a tensor).

    `notes` gets the undefined-normalization sentence when LD_cf equals LD_orig.
    """
    o, c = answer.original_id, answer.counterfactual_id
    logit_diff = (logits[:, c] - logits[:, o]).cpu().numpy().astype(np.float64)
    return {
        "logit_diff": logit_diff,
        "normalized": normalized_effect(logit_diff, original, counterfactual, notes),
        "prob_cf": logits.softmax(-1)[:, c].cpu().numpy().astype(np.float64),
        "iia": (logits.argmax(-1) == c).cpu().numpy(),
    }


def effects_fields(
    loaded: Any,
    pair: PairedInputs,
    num_layers: int,
    metrics: dict[str, np.ndarray],
    runs: tuple[UnpatchedRun, UnpatchedRun | None],
    definitions: dict[str, str],
    notes: list[str],
) -> dict[str, Any]:
    """The `Effects` fields of one pair's result, as keyword arguments of a result class.

    Args:
        loaded: The `LoadedModel` (its `model_id` names the result).
        pair: The encoded pair (tokens, targets, answer).
        num_layers: Decoder layers of the model.
        metrics: The four metric arrays (`scored_rows`).
        runs: The unpatched (original, counterfactual) runs.
        definitions: The method's definitions (copied).
        notes: Notes for the reader.
    """
    return {
        **metrics,
        "original": runs[0],
        "counterfactual": runs[1],
        "answer": pair.answer,
        "num_layers": num_layers,
        "tokens": pair.tokens,
        "targets": pair.targets,
        "definitions": dict(definitions),
        "model_id": str(getattr(loaded, "model_id", "")),
        "notes": notes,
    }


@dataclass(repr=False, kw_only=True)
class Effects:
    """What every result scored against a program pair carries: the four metrics and what they are read by.

    Attributes:
        logit_diff: LD of the intervened runs.
        normalized: (LD - LD_orig) / (LD_cf - LD_orig), unclipped; NaN when LD_cf == LD_orig.
        prob_cf: P(cf answer) of the intervened runs.
        iia: Whether the intervened run's top-1 is the cf answer token.
        original: The original run, unpatched.
        counterfactual: The counterfactual run, unpatched (None when a method ran a single program).
        answer: The scored answer tokens.
        num_layers: Decoder layers of the model.
        tokens: Readable label of every input position.
        targets: TokenAnalyzer positions ("ref depth 1", ..., "query", "final"); empty when the
            answer is not computed by a chain of assignments.
        definitions: Site, intervention, direction and metric definitions, as sentences.
        model_id: The model's id.
        notes: Anything a reader should know.
    """

    logit_diff: np.ndarray
    normalized: np.ndarray
    prob_cf: np.ndarray
    iia: np.ndarray
    original: UnpatchedRun
    counterfactual: UnpatchedRun | None
    answer: AnswerTokens
    num_layers: int
    tokens: list[str]
    targets: dict[str, int]
    definitions: dict[str, str]
    model_id: str = ""
    notes: list[str] = field(default_factory=list)

    def metric(self, name: str) -> np.ndarray:
        """The array of one metric by name (`logit_diff`, `normalized`, `prob_cf`, `iia`)."""
        if name not in METRIC_NAMES:
            raise ValueError(f"unknown metric {name!r}; choose one of {', '.join(METRIC_NAMES)}")
        return getattr(self, name)

    def effects_json(self) -> dict[str, Any]:
        """The shared part of `to_dict()`: model id, pair, answer, runs, metrics, definitions and notes."""
        return {
            "model_id": self.model_id,
            "num_layers": self.num_layers,
            "tokens": self.tokens,
            "targets": self.targets,
            "answer": answer_json(self.answer),
            "original": jsonable(vars(self.original)),
            "counterfactual": None if self.counterfactual is None else jsonable(vars(self.counterfactual)),
            "definitions": self.definitions,
            "notes": self.notes,
            **{name: array_json(self.metric(name)) for name in METRIC_NAMES},
        }


@dataclass(repr=False)
class SweepResult(Effects):
    """Effects of patching each cell from the counterfactual into the original.

    Arrays are indexed `[layer_index, position_index]` (plus `head_index` for attention heads) into
    `layers`, `positions` and `heads`. The metrics, runs, answer, tokens (every input position, not only
    patched ones), targets, definitions, model id and notes are the `Effects` fields (notes: multi-token
    answers, missing targets, undefined normalization, a pair the model gets wrong).

    Attributes:
        site: "residual_stream", "attention_heads" or "mlp".
        layers: Patched layers (`num_layers` = the final residual).
        positions: Patched token positions.
        heads: Patched heads, or None.
        seconds: Wall time of the sweep.
        forwards: Forward passes run (1 cache run + one per chunk, + 1 for a reused prefix cache).
        original_correct: Whether the original run's top-1 is the original answer token; None when the
            answers are the model's own predictions (text programs), so there is nothing to be wrong about.
        counterfactual_correct: Whether the counterfactual run's top-1 is the counterfactual answer token
            (None likewise).
    """

    site: str
    layers: list[int]
    positions: list[int]
    heads: list[int] | None
    seconds: float = 0.0
    forwards: int = 0
    original_correct: bool | None = None
    counterfactual_correct: bool | None = None

    def __post_init__(self) -> None:
        # Scored on the programs' answers, correctness is a fact of the two runs: fill it in when not given.
        if self.answer.source == "program":
            if self.original_correct is None:
                self.original_correct = self.original.top1_id == self.answer.original_id
            if self.counterfactual_correct is None:
                self.counterfactual_correct = self.counterfactual.top1_id == self.answer.counterfactual_id

    def __repr__(self) -> str:
        shape = "x".join(str(n) for n in self.logit_diff.shape)
        return (
            f"SweepResult(site={self.site!r}, model_id={self.model_id!r}, cells={shape}, "
            f"answer={self.answer.original_text!r}->{self.answer.counterfactual_text!r}, "
            f"LD_orig={self.original.logit_diff:.3f}, LD_cf={self.counterfactual.logit_diff:.3f}, "
            f"solved={self.solved}, targets={self.targets})"
        )

    @property
    def solved(self) -> bool:
        """Whether the model's top-1 is right on both unpatched runs (True when there is nothing to judge)."""
        return self.original_correct is not False and self.counterfactual_correct is not False

    def unsolved_message(self) -> str:
        """One line saying on which run(s) the model's top-1 is wrong, or "" when it is right on both."""
        wrong = []
        if self.original_correct is False:
            wrong.append(
                f"the original (top-1 {self.original.top1!r}, expected {self.answer.original_text!r})"
            )
        if self.counterfactual_correct is False:
            wrong.append(
                f"the counterfactual (top-1 {self.counterfactual.top1!r}, expected "
                f"{self.answer.counterfactual_text!r})"
            )
        if not wrong:
            return ""
        return (
            f"{self.model_id or 'the model'} answers {' and '.join(wrong)} wrong: the patching effects "
            "describe a pair it does not solve"
        )

    @property
    def layer_labels(self) -> list[str]:
        """Layer names for axes: the layer number, or "final" for the final residual."""
        return [layer_label(layer, self.num_layers) for layer in self.layers]

    def at_target(self, target: str, metric: str = "normalized") -> np.ndarray | None:
        """The metric over layers (and heads) at a target's position; None when it was not patched."""
        position = self.targets.get(target)
        if position is None or position not in self.positions:
            return None
        return self.metric(metric)[:, self.positions.index(position)]

    def target_effects(self, metric: str = "normalized") -> dict[str, list[float | None]]:
        """Per target label, the metric at each patched layer (for heads, the largest value over heads)."""
        out: dict[str, list[float | None]] = {}
        for target in self.targets:
            values = self.at_target(target, metric)
            if values is None:
                continue
            if values.ndim == 2:
                values = np.nanmax(values, axis=1) if np.isfinite(values).any() else values[:, 0]
            out[target] = jsonable([float(v) for v in values])
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN becomes null)."""
        return {
            **self.effects_json(),
            "site": self.site,
            "layers": self.layers,
            "layer_labels": self.layer_labels,
            "positions": self.positions,
            "heads": self.heads,
            "original_correct": self.original_correct,
            "counterfactual_correct": self.counterfactual_correct,
            "seconds": self.seconds,
            "forwards": self.forwards,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepResult:
        """Rebuild a result from `to_dict()` output (e.g. read back from intervention_results.json).

        Files written before the unpatched original run was called "original" keep it under "clean"; they
        are read too.
        """

        def arr(key: str) -> np.ndarray:
            return np.array(data[key], dtype=float)  # null -> nan

        def _iia(values: np.ndarray) -> np.ndarray:
            # An exact sweep stores booleans; an attribution estimate stores null (not estimable), which must
            # stay NaN: NaN cast to bool would read as True.
            return values if np.isnan(values).any() else values.astype(bool)

        answer = data["answer"]
        return cls(
            site=data["site"],
            layers=list(data["layers"]),
            positions=list(data["positions"]),
            heads=data.get("heads"),
            num_layers=int(data["num_layers"]),
            tokens=list(data["tokens"]),
            targets=dict(data["targets"]),
            logit_diff=arr("logit_diff"),
            normalized=arr("normalized"),
            prob_cf=arr("prob_cf"),
            iia=_iia(arr("iia")),
            original=UnpatchedRun(**data["original" if "original" in data else "clean"]),
            counterfactual=UnpatchedRun(**data["counterfactual"]),
            answer=AnswerTokens(
                original_id=answer["original_token_id"],
                counterfactual_id=answer["counterfactual_token_id"],
                original_text=answer["original"],
                counterfactual_text=answer["counterfactual"],
                prefix_ids=list(answer.get("teacher_forced_prefix_ids", [])),
                source=answer.get("source", "program"),
                note=data.get("definitions", {}).get("answer", ""),
            ),
            definitions=dict(data.get("definitions", {})),
            model_id=data.get("model_id", ""),
            notes=list(data.get("notes", [])),
            seconds=float(data.get("seconds", 0.0)),
            forwards=int(data.get("forwards", 0)),
            original_correct=data.get("original_correct"),
            counterfactual_correct=data.get("counterfactual_correct"),
        )


def warn_if_unsolved(result: SweepResult, *, stacklevel: int = 2) -> str:
    """Warn (`UnsolvedPairWarning`, one line) when the model's top-1 is wrong on either unpatched run.

    Args:
        result: The sweep.
        stacklevel: Passed to `warnings.warn`; 2 points at the caller of the function that calls this one.

    Returns:
        The message, or "" when the model is right on both runs (then nothing is warned).
    """
    message = result.unsolved_message()
    if message:
        warnings.warn(message, UnsolvedPairWarning, stacklevel=stacklevel + 1)
    return message


def aggregate_by_target(sweeps: Sequence[SweepResult]) -> dict[str, Any]:
    """Mean of every metric at each target label ("ref depth k", "query", "final") over programs.

    Returns:
        A JSON-ready dict: site, model_id, layers, layer_labels, heads, num_programs, unsolved_programs
        (how many of them the model gets wrong on either run), definitions, and `by_target` -> label ->
        {"n": programs, metric: per-layer means (per layer and head for head sweeps)}.
    """
    if not sweeps:
        return {"by_target": {}, "layer_labels": [], "layers": []}
    first = sweeps[0]
    by_target: dict[str, Any] = {}
    labels = sorted({label for s in sweeps for label in s.targets})
    for label in labels:
        found = [s for s in sweeps if s.at_target(label) is not None]
        entry: dict[str, Any] = {"n": len(found)}
        for metric in METRIC_NAMES:
            stacked = np.stack([s.at_target(label, metric).astype(float) for s in found])
            with np.errstate(invalid="ignore"):
                mean = np.nanmean(stacked, axis=0) if np.isfinite(stacked).any() else stacked[0]
            entry[metric] = jsonable(mean.tolist())
        by_target[label] = entry
    return {
        "model_id": first.model_id,
        "site": first.site,
        "layers": first.layers,
        "layer_labels": first.layer_labels,
        "heads": first.heads,
        "num_programs": len(sweeps),
        "unsolved_programs": sum(not s.solved for s in sweeps),
        "definitions": first.definitions,
        "by_target": by_target,
    }


def target_sort_key(label: str) -> tuple[int, int, str]:
    """Reading order of target labels: the changed constant, chain lines or operands by depth, the
    accumulator, the query, the final token, then any other label by name."""
    for rank, prefix in ((1, "ref depth "), (1, "operand ")):
        if label.startswith(prefix) and label[len(prefix) :].isdigit():
            return (rank, int(label[len(prefix) :]), label)
    order = {"changed constant": 0, "accumulator": 2, "query": 3, "final": 4}
    return (order.get(label, 5), 0, label)
