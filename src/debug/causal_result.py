"""What a patching sweep returns: effect arrays, labels, targets, baselines and the definitions used."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from debug.causal_inputs import AnswerTokens

METRIC_NAMES = ("logit_diff", "normalized", "prob_cf", "iia")


@dataclass(frozen=True)
class Baseline:
    """One unpatched run scored against the answer tokens.

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


def _clean(value: Any) -> Any:
    # JSON has no NaN: undefined numbers become null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


@dataclass(repr=False)
class SweepResult:
    """Effects of patching each cell from the counterfactual into the original.

    Arrays are indexed `[layer_index, position_index]` (plus `head_index` for attention heads) into
    `layers`, `positions` and `heads`.

    Attributes:
        site: "residual_stream", "attention_heads" or "mlp".
        layers: Patched layers (`num_layers` = the final residual).
        positions: Patched token positions.
        heads: Patched heads, or None.
        num_layers: Decoder layers of the model.
        tokens: Readable label of every input position (not only patched ones).
        targets: TokenAnalyzer positions ("ref depth 1", ..., "query", "final"); empty when the
            answer is not computed by a chain of assignments.
        logit_diff: LD of the patched runs.
        normalized: (LD - LD_orig) / (LD_cf - LD_orig), unclipped; NaN when LD_cf == LD_orig.
        prob_cf: P(cf answer) of the patched runs.
        iia: Whether the patched run's top-1 is the cf answer token.
        clean: The original run, unpatched.
        counterfactual: The counterfactual run.
        answer: The scored answer tokens.
        definitions: Site, direction, metric and answer definitions, as sentences.
        model_id: The model's id.
        notes: Anything a reader should know (multi-token answers, missing targets, undefined normalization).
        seconds: Wall time of the sweep.
        forwards: Forward passes run (1 cache run + one per chunk).
    """

    site: str
    layers: list[int]
    positions: list[int]
    heads: list[int] | None
    num_layers: int
    tokens: list[str]
    targets: dict[str, int]
    logit_diff: np.ndarray
    normalized: np.ndarray
    prob_cf: np.ndarray
    iia: np.ndarray
    clean: Baseline
    counterfactual: Baseline
    answer: AnswerTokens
    definitions: dict[str, str]
    model_id: str = ""
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    forwards: int = 0

    def __repr__(self) -> str:
        shape = "x".join(str(n) for n in self.logit_diff.shape)
        return (
            f"SweepResult(site={self.site!r}, model_id={self.model_id!r}, cells={shape}, "
            f"answer={self.answer.original_text!r}->{self.answer.counterfactual_text!r}, "
            f"LD_orig={self.clean.logit_diff:.3f}, LD_cf={self.counterfactual.logit_diff:.3f}, "
            f"targets={self.targets})"
        )

    @property
    def layer_labels(self) -> list[str]:
        """Layer names for axes: the layer number, or "final" for the final residual."""
        return ["final" if layer == self.num_layers else str(layer) for layer in self.layers]

    def metric(self, name: str) -> np.ndarray:
        """The array of one metric by name (`logit_diff`, `normalized`, `prob_cf`, `iia`)."""
        if name not in METRIC_NAMES:
            raise ValueError(f"unknown metric {name!r}; choose one of {', '.join(METRIC_NAMES)}")
        return getattr(self, name)

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
            out[target] = _clean([float(v) for v in values])
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN becomes null)."""

        def arr(a: np.ndarray) -> Any:
            return _clean(a.astype(float).tolist())

        return {
            "model_id": self.model_id,
            "site": self.site,
            "layers": self.layers,
            "layer_labels": self.layer_labels,
            "num_layers": self.num_layers,
            "positions": self.positions,
            "heads": self.heads,
            "tokens": self.tokens,
            "targets": self.targets,
            "answer": {
                "original": self.answer.original_text,
                "counterfactual": self.answer.counterfactual_text,
                "original_token_id": self.answer.original_id,
                "counterfactual_token_id": self.answer.counterfactual_id,
                "teacher_forced_prefix_ids": self.answer.prefix_ids,
                "source": self.answer.source,
            },
            "clean": _clean(vars(self.clean).copy()),
            "counterfactual": _clean(vars(self.counterfactual).copy()),
            "definitions": self.definitions,
            "notes": self.notes,
            "logit_diff": arr(self.logit_diff),
            "normalized": arr(self.normalized),
            "prob_cf": arr(self.prob_cf),
            "iia": arr(self.iia),
            "seconds": self.seconds,
            "forwards": self.forwards,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepResult:
        """Rebuild a result from `to_dict()` output (e.g. read back from intervention_results.json)."""

        def arr(key: str) -> np.ndarray:
            return np.array(data[key], dtype=float)  # null -> nan

        answer = data["answer"]
        layers = list(data["layers"])
        return cls(
            site=data["site"],
            layers=layers,
            positions=list(data["positions"]),
            heads=data.get("heads"),
            num_layers=int(data["num_layers"]),
            tokens=list(data["tokens"]),
            targets=dict(data["targets"]),
            logit_diff=arr("logit_diff"),
            normalized=arr("normalized"),
            prob_cf=arr("prob_cf"),
            iia=arr("iia").astype(bool),
            clean=Baseline(**data["clean"]),
            counterfactual=Baseline(**data["counterfactual"]),
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
        )
