"""The causal eval's measurement: a sample for every program, skipped pairs counted with their reasons."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import debug.causal.evaluate as evaluate
from debug.causal.evaluate import NO_COUNTERFACTUAL, WRONG_WAY, measure_binding_case
from debug.causal.inputs import CausalTracingError
from debug.models import load


class FakeMeasure:
    """Records what the plugin's Measurement would (same methods)."""

    def __init__(self) -> None:
        self.metrics: dict[str, dict[str, Any]] = {}
        self.records: list[dict[str, Any]] = []
        self.facts: dict[str, Any] = {}
        self.images: list[str] = []

    def metric(self, name: str, value: float | None = None, *, k: int | None = None, n: int | None = None):
        self.metrics[name] = {"value": value if k is None else (k / n if n else None), "k": k, "n": n}

    def info(self, **fields: Any) -> None:
        self.facts.update(fields)

    def samples(self, records) -> None:
        self.records.extend(records)

    def image(self, name: str, source: Any, *, caption: str = "") -> None:
        assert Path(source).read_bytes().startswith(b"\x89PNG")
        self.images.append(name)


@pytest.fixture(scope="module")
def loaded(tiny_qwen3_dir: Path):
    return load(str(tiny_qwen3_dir), device="cpu")


def test_every_program_gets_a_sample_and_skipped_pairs_say_why(loaded, monkeypatch, tmp_path: Path) -> None:
    real_counterfactual, real_answers = evaluate.create_counterfactual_program, evaluate.teacher_forced
    programs: list[str] = []

    def counterfactual(program, seed, tokenizer=None):
        programs.append(program.text)
        if len(programs) == 2:  # the second program has no counterfactual of equal length
            raise ValueError("no replacement keeps the token length")
        return real_counterfactual(program, seed, tokenizer=tokenizer)

    def answers(model, tokenizer, asked):
        # Right on everything but the first original: one pair right both ways is missing, as in hops-4.
        out = real_answers(model, tokenizer, asked)
        return [(answer if i else [answer[0] + 1], answer) for i, (_, answer) in enumerate(out)]

    monkeypatch.setattr(evaluate, "create_counterfactual_program", counterfactual)
    monkeypatch.setattr(evaluate, "teacher_forced", answers)
    measure = FakeMeasure()
    results = measure_binding_case(loaded, measure, hops=2, seq_len=5, num_seqs=5, seed=0, out_dir=tmp_path)
    assert len(measure.records) == 5 and len(results) == 3
    assert [r["swept"] for r in measure.records] == [False, False, True, True, True]
    assert [r["skipped"] for r in measure.records] == [WRONG_WAY, NO_COUNTERFACTUAL, None, None, None]
    assert measure.records[1]["why"] == "no replacement keeps the token length"
    assert measure.metrics["swept_pairs"] == {"value": 3 / 5, "k": 3, "n": 5}
    assert measure.metrics["robust_pairs"]["k"] == 3 and measure.metrics["robust_pairs"]["n"] == 4
    assert measure.facts["skipped_pairs"] == 2
    assert measure.facts["skipped_why"] == f"1 {WRONG_WAY}; 1 {NO_COUNTERFACTUAL}"
    assert measure.images == ["layer x token", "by ref depth"]


def test_a_case_longer_than_the_context_is_refused_before_any_forward(loaded, monkeypatch, tmp_path):
    def no_forward(*_: Any) -> None:
        raise AssertionError("a forward ran")

    monkeypatch.setattr(evaluate, "teacher_forced", no_forward)
    with pytest.raises(CausalTracingError, match=r"804 tokens but .* takes at most 512"):
        measure_binding_case(loaded, FakeMeasure(), hops=2, seq_len=200, num_seqs=2, seed=0, out_dir=tmp_path)
