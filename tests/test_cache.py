"""Tests for debug.cache.AnswerCache and its use by score_programs."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from debug import models, prompts
from debug.cache import AnswerCache, CacheWarning, default_cache_dir, record_checksum, settings_key
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
    with pytest.warns(CacheWarning, match="skipped 1 "):
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


# -- the cache checks itself -------------------------------------------------------------------------------


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")


def _fresh_get(path: Path, *keys: str) -> tuple[list, list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fresh = AnswerCache(path)
        found = [fresh.get("fp", key, {}) for key in keys]
    return found, [w for w in caught if issubclass(w.category, CacheWarning)]


def _three(tmp_path: Path) -> Path:
    cache = AnswerCache(tmp_path)
    for i in (1, 2, 3):
        cache.put("fp", f"p{i}", {}, {"raw_output": str(i), "answer_logprob": -0.5})
    return tmp_path / "fp.jsonl"


def test_every_line_carries_a_checksum_over_key_and_answer(tmp_path: Path) -> None:
    file = _three(tmp_path)
    rows = [json.loads(line) for line in file.read_text().splitlines()]
    assert all(
        row["checksum"] == record_checksum(row["prompt_hash"], row["settings"], row["record"]) for row in rows
    )
    found, warned = _fresh_get(tmp_path, "p1", "p2", "p3")
    assert [r["raw_output"] for r in found] == ["1", "2", "3"] and not warned


def test_a_hand_edited_answer_is_not_served(tmp_path: Path) -> None:
    file = _three(tmp_path)
    file.write_text(file.read_text().replace('"raw_output": "2"', '"raw_output": "9"'))
    assert json.loads(file.read_text().splitlines()[1])["record"]["raw_output"] == "9"  # still valid JSON
    found, warned = _fresh_get(tmp_path, "p1", "p2", "p3")
    assert found[1] is None and found[0]["raw_output"] == "1" and found[2]["raw_output"] == "3"
    assert len(warned) == 1 and str(file) in str(warned[0].message) and "skipped 1 " in str(warned[0].message)


def test_invalid_utf8_torn_and_incomplete_lines_are_skipped_with_one_warning(tmp_path: Path) -> None:
    file = _three(tmp_path)
    lines = _lines(file)
    good = json.loads(lines[0])
    no_record = json.dumps({k: v for k, v in good.items() if k != "record"}).encode()
    lines[1] = lines[1].replace(b'"2"', b'"\xff\xfe"')  # not UTF-8
    file.write_bytes(b"\n".join(lines[:3] + [no_record, b"[1, 2]", b"", b'{"prompt_hash": "p4", "sett']))
    found, warned = _fresh_get(tmp_path, "p1", "p2", "p3", "p4")
    assert found[0]["raw_output"] == "1" and found[2]["raw_output"] == "3"
    assert found[1] is None and found[3] is None
    assert len(warned) == 1
    message = str(warned[0].message)
    # bad UTF-8, the record-less line, the list and the torn tail (the blank line is no record)
    assert str(file) in message and "skipped 4 " in message


def test_an_append_after_a_torn_tail_starts_a_fresh_line(tmp_path: Path) -> None:
    file = _three(tmp_path)
    with open(file, "ab") as handle:
        handle.write(b'{"prompt_hash": "p4", "sett')  # a writer killed mid-line
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CacheWarning)
        AnswerCache(tmp_path).put("fp", "p5", {}, {"raw_output": "5", "answer_logprob": -1.0})
    assert _lines(file)[3] == b'{"prompt_hash": "p4", "sett'
    found, warned = _fresh_get(tmp_path, "p1", "p4", "p5")
    assert found[0]["raw_output"] == "1" and found[1] is None and found[2]["raw_output"] == "5"
    assert len(warned) == 1 and "skipped 1 " in str(warned[0].message)  # only the torn line


def test_lines_without_a_checksum_are_skipped(tmp_path: Path) -> None:
    file = tmp_path / "fp.jsonl"
    file.write_text(
        json.dumps({"prompt_hash": "p1", "settings": settings_key({}), "record": {"raw_output": "1"}}) + "\n"
    )
    found, warned = _fresh_get(tmp_path, "p1")
    assert found == [None] and len(warned) == 1 and "skipped 1 " in str(warned[0].message)


def test_what_get_returns_after_put_is_what_a_rerun_reads(tmp_path: Path) -> None:
    cache = AnswerCache(tmp_path)
    cache.put("fp", "p", {}, {"raw_output": "1", "answer_logprob": float("-inf"), "tokens": (1, 2)})
    found, warned = _fresh_get(tmp_path, "p")
    assert (
        found[0]
        == cache.get("fp", "p", {})
        == {"raw_output": "1", "answer_logprob": float("-inf"), "tokens": [1, 2]}
    )
    assert not warned


def test_scoring_decodes_again_what_the_cache_cannot_vouch_for(tiny_qwen3_dir: Path, tmp_path: Path) -> None:
    loaded = models.load(str(tiny_qwen3_dir))
    programs = generate_programs(make_variable_binding_program, 3, 4, base_seed=3)
    first = score_programs(loaded, programs, prompts.MINIMAL, cache=AnswerCache(tmp_path))
    file = tmp_path / f"{loaded.fingerprint}.jsonl"
    rows = [json.loads(line) for line in file.read_text().splitlines()]
    rows[0]["record"]["raw_output"] = "not what the model said"  # valid JSON, wrong checksum
    text = "\n".join(json.dumps(row) for row in rows) + "\n"
    file.write_bytes(text.encode()[:-10])  # and the last line torn
    with pytest.warns(CacheWarning, match="skipped 2 "):
        again = score_programs(loaded, programs, prompts.MINIMAL, cache=AnswerCache(tmp_path))
    spoiled = {rows[0]["prompt_hash"], rows[-1]["prompt_hash"]}
    assert [s.cached for s in again] == [s.prompt_hash not in spoiled for s in first]
    assert [s.raw_output for s in again] == [s.raw_output for s in first]
