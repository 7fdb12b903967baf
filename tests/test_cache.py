"""Tests for debug.cache.AnswerCache and its use by score_programs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from debug import models, prompts
from debug.cache import AnswerCache, default_cache_dir, settings_key
from debug.generators import make_variable_binding_program
from debug.programs import generate_programs
from debug.scoring import score_programs


def test_put_get_roundtrip_survives_a_new_instance(tmp_path: Path) -> None:
    cache = AnswerCache(tmp_path)
    settings = {"max_new_tokens": 5, "decoding": "greedy"}
    cache.put("fp1", "p1", settings, {"raw_output": "7", "answer_logprob": -0.5})
    assert cache.get("fp1", "p1", {"decoding": "greedy", "max_new_tokens": 5})["raw_output"] == "7"
    fresh = AnswerCache(tmp_path)
    assert fresh.get("fp1", "p1", settings) == {"raw_output": "7", "answer_logprob": -0.5}
    # Every part of the key matters.
    assert fresh.get("fp2", "p1", settings) is None
    assert fresh.get("fp1", "p2", settings) is None
    assert fresh.get("fp1", "p1", {**settings, "max_new_tokens": 6}) is None


def test_settings_key_ignores_order() -> None:
    assert settings_key({"a": 1, "b": 2}) == settings_key({"b": 2, "a": 1})
    assert settings_key({"a": 1}) != settings_key({"a": 2})


def test_a_line_cut_short_is_skipped(tmp_path: Path) -> None:
    cache = AnswerCache(tmp_path)
    cache.put("fp", "p1", {}, {"raw_output": "1"})
    with open(tmp_path / "fp.jsonl", "a") as handle:
        handle.write('{"prompt_hash": "p2", "sett')  # a writer killed mid-line
    fresh = AnswerCache(tmp_path)
    assert fresh.get("fp", "p1", {}) == {"raw_output": "1"}
    assert fresh.get("fp", "p2", {}) is None
    assert len(fresh) == 1


def test_clear(tmp_path: Path) -> None:
    cache = AnswerCache(tmp_path)
    cache.put("a", "p", {}, {"raw_output": "1"})
    cache.put("b", "p", {}, {"raw_output": "2"})
    cache.clear("a")
    assert cache.get("a", "p", {}) is None and cache.get("b", "p", {}) is not None
    cache.clear()
    assert not list(tmp_path.glob("*.jsonl"))


def test_default_dir_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DEBUG_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert default_cache_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("DEBUG_CACHE_DIR")
    assert default_cache_dir() == Path(".debug_cache")


def test_scoring_appends_per_sample_and_reuses(tiny_qwen3_dir: Path, tmp_path: Path) -> None:
    loaded = models.load(str(tiny_qwen3_dir))
    programs = generate_programs(make_variable_binding_program, 3, 5, base_seed=1)
    cache = AnswerCache(tmp_path)
    first = score_programs(loaded, programs, prompts.MINIMAL, cache=cache, batch_size=2)
    lines = (tmp_path / f"{loaded.fingerprint}.jsonl").read_text().splitlines()
    assert len(lines) == 5 and all(json.loads(line)["record"] for line in lines)
    again = score_programs(loaded, programs, prompts.MINIMAL, cache=AnswerCache(tmp_path))
    assert all(s.cached for s in again)
    assert [s.to_dict() | {"cached": False} for s in again] == [s.to_dict() for s in first]
    # A different decoding budget is a different key: decoded afresh.
    other = score_programs(loaded, programs, prompts.MINIMAL, cache=cache, max_new_tokens=2)
    assert not any(s.cached for s in other)


def test_another_model_never_gets_these_answers(
    tiny_qwen3_dir: Path, tiny_gpt2_dir: Path, tmp_path: Path
) -> None:
    programs = generate_programs(make_variable_binding_program, 3, 3, base_seed=2)
    cache = AnswerCache(tmp_path)
    score_programs(models.load(str(tiny_qwen3_dir)), programs, prompts.MINIMAL, cache=cache)
    other = score_programs(models.load(str(tiny_gpt2_dir)), programs, prompts.MINIMAL, cache=cache)
    assert not any(s.cached for s in other)
