"""The causal eval's measurement: a sample for every program, skipped pairs counted with their reasons."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from xml.etree import ElementTree

import pytest

import debug.causal.evaluate as evaluate
from debug.causal.evaluate import (
    NO_COUNTERFACTUAL,
    NOT_SAMPLED,
    SWEPT_PAIRS,
    WRONG_WAY,
    attribution_map,
    causal_pairs,
    measure_binding_case,
    measure_eval_case,
)
from debug.causal.inputs import CausalTracingError
from debug.models import load
from debug.plugin import Case, Measurement, Task
from debug.plugin.evaluate import Backend, evaluate_case


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
        assert ElementTree.fromstring(source).tag.endswith("svg")  # well-formed SVG bytes
        self.images.append(name)


@pytest.fixture(scope="module")
def loaded(tiny_qwen3_dir: Path):
    return load(str(tiny_qwen3_dir), device="cpu")


@pytest.fixture
def asked(monkeypatch) -> list[int]:
    """Counts the programs each scoring call answers; right on all but the first program's original."""
    real = evaluate.score_programs
    sizes: list[int] = []
    first: list[str] = []

    def answers(loaded, programs, template, **kwargs):
        sizes.append(len(programs))
        first.extend([programs[0].text] if not first else [])
        out = real(loaded, programs, template, **kwargs)
        # Right everywhere except the case's first original: one pair right both ways is missing.
        wrong = {0} if len(sizes) == 1 else set()
        return [dataclasses.replace(o, correct=i not in wrong) for i, o in enumerate(out)]

    monkeypatch.setattr(evaluate, "score_programs", answers)
    return sizes


def test_every_program_gets_a_sample_and_skipped_pairs_say_why(loaded, asked, monkeypatch) -> None:
    real_counterfactual = evaluate.create_counterfactual_program
    programs: list[str] = []

    def counterfactual(program, seed, tokenizer=None):
        programs.append(program.text)
        if len(programs) == 2:  # the second program has no counterfactual of equal length
            raise ValueError("no replacement keeps the token length")
        return real_counterfactual(program, seed, tokenizer=tokenizer)

    monkeypatch.setattr(evaluate, "create_counterfactual_program", counterfactual)
    measure = FakeMeasure()
    results = measure_binding_case(loaded, measure, hops=2, seq_len=5, num_seqs=5, seed=0, max_pairs=None)
    assert len(measure.records) == 5 and len(results) == 3
    assert asked == [5, 4]  # every original, then every counterfactual
    assert [r["swept"] for r in measure.records] == [False, False, True, True, True]
    assert [r["skipped"] for r in measure.records] == [WRONG_WAY, NO_COUNTERFACTUAL, None, None, None]
    assert measure.records[1]["why"] == "no replacement keeps the token length"
    assert measure.metrics["swept_pairs"] == {"value": 3 / 5, "k": 3, "n": 5}
    assert measure.metrics["robust_pairs"]["k"] == 3 and measure.metrics["robust_pairs"]["n"] == 4
    assert measure.metrics["accuracy"]["k"] == 3 and measure.metrics["accuracy"]["n"] == 4
    assert measure.facts["skipped_pairs"] == 2
    assert measure.facts["skipped_why"] == f"1 {WRONG_WAY}; 1 {NO_COUNTERFACTUAL}"
    assert measure.images == ["layer x token", "target x layer"]
    assert "attribution" in measure.facts["map_method"]
    # Lens and knockout read the swept pairs' originals: one count per swept pair.
    for cut in ("root_line", "last_chain_line"):
        assert measure.metrics[f"knockout/final_to_{cut}/answer_kept"]["n"] == 3
        assert 0.0 <= measure.metrics[f"knockout/final_to_{cut}/prob_orig"]["value"] <= 1.0
    assert measure.metrics["lens/answer_top1/layer_final"]["n"] == 3


def test_max_pairs_bounds_the_counterfactuals_answered_and_the_pairs_patched(loaded, asked) -> None:
    measure = FakeMeasure()
    results = measure_binding_case(loaded, measure, hops=1, seq_len=4, num_seqs=6, seed=1, max_pairs=1)
    usable = [r for r in measure.records if r["counterfactual"] is not None]
    assert asked == [6, 2]  # all originals answered; the counterfactuals of 2 x max_pairs candidates
    assert len(results) == 1 and sum(r["swept"] for r in measure.records) == 1
    # The first original is answered wrong, so the candidates start at the second program.
    assert measure.records[0]["counterfactual_correct"] is None and measure.records[0]["swept"] is False
    assert sum(r["counterfactual_correct"] is not None for r in usable) == 2
    assert measure.metrics["robust_pairs"]["n"] == 2
    assert measure.metrics["accuracy"]["n"] == len(usable)
    assert {r["skipped"] for r in usable if not r["swept"]} == {NOT_SAMPLED}
    # Only the targets are patched, at every layer and the final residual.
    result = results[0]
    assert sorted(result.positions) == sorted(set(result.targets.values()))
    assert len(result.layers) == loaded.model.config.num_hidden_layers + 1


def test_the_attribution_map_covers_every_cell_and_is_compared_with_the_exact_targets(loaded) -> None:
    pairs = causal_pairs(loaded, "binding", 4, 2, 0, num_hops=1)
    pair = next(p for p in pairs if p.counterfactual is not None)
    exact = evaluate._sweep_targets(loaded, [pair])[pair.index]
    estimate, rho = attribution_map(loaded, pair, exact)
    assert estimate.positions == list(range(len(estimate.tokens)))
    assert estimate.layers == exact.layers
    assert rho is None or -1.0 <= rho <= 1.0
    assert "attribution" in str(estimate.definitions.get("method", "")).lower()


def test_a_range_case_draws_the_map_and_the_exact_target_by_layer_heatmap(loaded) -> None:
    measure = FakeMeasure()
    results = evaluate.measure_causal_case(
        loaded, measure, family="range", seq_len=3, num_seqs=4, seed=0, max_pairs=1
    )
    assert len(results) == 1 and measure.metrics["swept_pairs"]["k"] == 1
    assert measure.images == ["layer x token", "target x layer"]
    assert "changed constant" in results[0].targets and "normalized/query/max" in measure.metrics


def test_an_eval_case_patches_swept_pairs_unless_num_seqs_is_given(monkeypatch) -> None:
    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(evaluate, "measure_causal_case", lambda *a, **kw: seen.append(kw) or [])
    task = Task("t", generator="make_range_program", prompt="{code}", knobs={"query": True, "step": 2})
    case = SimpleNamespace(task=task, seq_len=5, num_seqs=50, seed=3)
    for given in (False, True):
        measure_eval_case(case, None, None, family="range", num_seqs_given=given)
    assert [kw["max_pairs"] for kw in seen] == [SWEPT_PAIRS, None]
    assert seen[0]["knobs"] == {"step": 2} and seen[0]["num_seqs"] == 50  # the same programs as the twin


def test_max_pairs_below_one_is_refused_before_any_work() -> None:
    with pytest.raises(ValueError, match="max_pairs must be a positive integer"):
        measure_binding_case(None, FakeMeasure(), hops=1, seq_len=4, num_seqs=2, seed=0, max_pairs=0)


def test_a_case_longer_than_the_context_is_refused_before_any_forward(loaded, monkeypatch):
    def no_forward(*_: Any, **__: Any) -> None:
        raise AssertionError("a forward ran")

    monkeypatch.setattr(evaluate, "score_programs", no_forward)
    with pytest.raises(CausalTracingError, match=r"804 tokens but .* takes at most 512"):
        measure_binding_case(loaded, FakeMeasure(), hops=2, seq_len=200, num_seqs=2, seed=0)


def test_the_remote_choice_reaches_the_sweep_and_ndif_without_a_key_is_refused_first(monkeypatch):
    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(evaluate, "measure_causal_case", lambda *a, **kw: seen.append(kw) or [])
    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    task = Task("t", generator="make_range_program", prompt="{code}", knobs={"query": True})
    case = SimpleNamespace(task=task, seq_len=5, num_seqs=4, seed=0)
    for choice in ("off", "local"):
        measure_eval_case(case, None, None, family="range", num_seqs_given=False, remote=choice)
    assert [kw["remote"] for kw in seen] == [False, "local"]
    import nnsight  # deferred: only this test needs nnsight's config

    monkeypatch.setattr(nnsight.CONFIG.API, "APIKEY", None)
    with pytest.raises(CausalTracingError, match="NDIF API key"):
        measure_eval_case(case, None, None, family="range", num_seqs_given=False, remote="ndif")
    assert len(seen) == 2  # refused before the case measured anything


def test_a_case_reads_its_behavioural_twins_answers_from_the_answer_cache(
    loaded, tmp_path: Path, monkeypatch
) -> None:
    # The twin as `pytest evals` runs it first: the behavioural case on the same programs, cache on.
    task = Task("binding", generator="make_variable_binding_program", prompt="{code}", knobs={"num_hops": 1})
    case = Case(loaded.model_id, "tiny", task, 4, 6, 3, "binding")
    options = SimpleNamespace(no_cache=False, cache_dir=str(tmp_path), batch_size=None, max_new_tokens=None)
    backend = Backend(options)
    twin = Measurement("twin", "tiny", "binding")
    evaluate_case(twin, case, loaded, backend)
    served: list[list[bool]] = []
    real = evaluate.score_programs

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        served.append([s.cached for s in out])
        return out

    monkeypatch.setattr(evaluate, "score_programs", spy)
    measure = FakeMeasure()
    evaluate.measure_causal_case(
        loaded, measure, family="binding", seq_len=4, num_seqs=6, seed=3, knobs={"num_hops": 1}, max_pairs=1,
        cache=backend.cache,
    )  # fmt: skip
    assert served[0] == [True] * 6  # every original's answer is the twin's, read back
    twin_correct = {r["program_hash"]: r["correct"] for r in twin.to_record()["samples"]}
    usable = [r for r in measure.records if r["counterfactual"] is not None]
    assert [r["correct"] for r in usable] == [twin_correct[r["program_hash"]] for r in usable]
