"""Tests for debug.scoring: batching equivalence, log-probabilities, early stop, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from debug import models, prompts
from debug.generators import make_variable_binding_program
from debug.programs import Program, generate_programs
from debug.scoring import answer_continuation, score_programs


def _programs() -> list[Program]:
    out: list[Program] = []
    for seq_len in (2, 5, 9):
        out += generate_programs(make_variable_binding_program, seq_len, 3, base_seed=7)
    return out


@pytest.mark.parametrize("fixture", ["tiny_qwen3_dir", "tiny_gpt2_dir"])
@pytest.mark.parametrize("template", [prompts.VARIABLE_BINDING, prompts.MINIMAL])
def test_batched_equals_one_at_a_time(fixture: str, template: str, request: pytest.FixtureRequest) -> None:
    loaded = models.load(str(request.getfixturevalue(fixture)))
    programs = _programs()
    batched = score_programs(loaded, programs, template, batch_size=16, max_new_tokens=5)
    single = score_programs(loaded, programs, template, batch_size=1, max_new_tokens=5)
    assert [s.raw_output for s in batched] == [s.raw_output for s in single]
    assert [s.predicted_answer for s in batched] == [s.predicted_answer for s in single]
    for a, b in zip(batched, single):
        assert a.answer_logprob == pytest.approx(b.answer_logprob, abs=1e-4)
    assert any(s.raw_output for s in batched)  # the random model does emit text


def test_logprob_matches_a_plain_forward(tiny_qwen3_dir: Path) -> None:
    loaded = models.load(str(tiny_qwen3_dir))
    program = Program("a=1\nb=a\n#b:", 12, {})  # a two-token answer under the char tokenizer
    [sample] = score_programs(loaded, [program], prompts.VARIABLE_BINDING)
    tok = loaded.tokenizer
    prompt = tok(program.text)["input_ids"]
    answer = tok(answer_continuation(prompts.VARIABLE_BINDING, 12), add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt + answer])
    with torch.no_grad():
        logp = torch.log_softmax(loaded.model(input_ids=ids).logits[0].float(), -1)
    expected = sum(float(logp[len(prompt) - 1 + j, t]) for j, t in enumerate(answer))
    assert len(answer) == 2
    assert sample.answer_logprob == pytest.approx(expected, abs=1e-5)
    assert sample.answer_logprob < 0


def test_greedy_matches_generate_and_stops_early(tiny_qwen3_dir: Path) -> None:
    loaded = models.load(str(tiny_qwen3_dir))
    program = generate_programs(make_variable_binding_program, 4, 1, base_seed=3)[0]
    [sample] = score_programs(loaded, [program], prompts.VARIABLE_BINDING, max_new_tokens=6)
    ids = loaded.tokenizer(program.text, return_tensors="pt")
    with torch.no_grad():
        out = loaded.model.generate(**ids, max_new_tokens=6, do_sample=False)
    reference = loaded.tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert reference.startswith(sample.raw_output)
    assert len(sample.raw_output) <= 6
    # Default budget: the answer's token count plus a small margin, not a long generation.
    [short] = score_programs(loaded, [program], prompts.VARIABLE_BINDING)
    assert len(loaded.tokenizer(short.raw_output, add_special_tokens=False)["input_ids"]) <= 1 + 4


def test_sample_fields_and_json(tiny_qwen3_dir: Path) -> None:
    loaded = models.load(str(tiny_qwen3_dir))
    program = make_variable_binding_program(3, 11)
    [sample] = score_programs(loaded, [program], prompts.MINIMAL)
    record = json.loads(json.dumps(sample.to_dict()))
    assert record["model_id"] == loaded.model_id
    assert record["fingerprint"] == loaded.fingerprint
    assert record["program_hash"] == program.hash
    assert record["prompt"] == prompts.MINIMAL.replace("{code}", program.text)
    assert record["true_answer"] == program.answer
    assert record["metadata"]["hops"] == program.metadata["hops"]
    assert record["seq_len"] == 3
    assert record["correct"] == (record["predicted_answer"] == program.answer)


def test_correct_answer_is_recognised(tiny_qwen3_dir: Path) -> None:
    loaded = models.load(str(tiny_qwen3_dir))
    program = make_variable_binding_program(3, 5)
    [sample] = score_programs(loaded, [program], prompts.MINIMAL, parser=lambda _text: program.answer)
    assert sample.correct and sample.parsed


def test_unparseable_answer_is_wrong_not_a_crash(tiny_qwen3_dir: Path) -> None:
    loaded = models.load(str(tiny_qwen3_dir))
    programs = _programs()[:3]

    def broken(text: str) -> int:
        raise RuntimeError("cannot read " + text)

    for parser in (lambda _text: None, broken):
        samples = score_programs(loaded, programs, prompts.MINIMAL, parser=parser)
        assert all(not s.correct and not s.parsed and s.predicted_answer is None for s in samples)
        assert all(isinstance(s.raw_output, str) for s in samples)
        assert all(math.isfinite(s.answer_logprob) for s in samples)


def test_prompt_longer_than_context_is_refused(tiny_qwen3_dir: Path) -> None:
    loaded = models.load(str(tiny_qwen3_dir))
    long_program = make_variable_binding_program(140, 1)  # 140 lines of "v=x\n": over 512 characters
    with pytest.raises(ValueError, match=r"takes at most 512 tokens.*never truncated"):
        score_programs(loaded, [make_variable_binding_program(3, 1), long_program], prompts.VARIABLE_BINDING)


class _Cache:
    def __init__(self) -> None:
        self.calls = 0

    def crop(self, _n: int) -> None:
        pass


class _Scripted(torch.nn.Module):
    """A stand-in LM whose k-th forward call predicts `script[k]` everywhere (for the stop rules)."""

    def __init__(self, script: list[int], vocab: int) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, 2)
        self.script, self.vocab = script, vocab

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.emb

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=True, cache=None, **_kw):
        cache = cache or _Cache()
        logits = torch.zeros(input_ids.shape[0], input_ids.shape[1], self.vocab)
        logits[:, :, self.script[min(cache.calls, len(self.script) - 1)]] = 1.0
        cache.calls += 1
        return type("Out", (), {"logits": logits, "past_key_values": cache, "cache": cache})()


@pytest.mark.parametrize(
    ("script", "stop_at_newline", "expected"),
    [
        ("\n7\n9", True, "\n7\n"),  # a leading newline does not end the answer; the one after "7" does
        ("\n7\n9", False, "\n7\n9"),  # reasoning mode: only the budget ends it
        ("4<eos>5", True, "4"),
    ],
)
def test_stop_rules(script: str, stop_at_newline: bool, expected: str) -> None:
    from debug.scoring import decode_batch
    from debug.tokenizer import build_char_tokenizer

    tok = build_char_tokenizer()
    ids = [
        tok.eos_token_id if part == "<eos>" else tok.convert_tokens_to_ids(part)
        for part in (["4", "<eos>", "5"] if "<eos>" in script else list(script))
    ]
    model = _Scripted(ids, len(tok))
    [(raw, _lp)] = decode_batch(
        model, tok, [tok("a=1\n#a:")["input_ids"]], [[ids[0]]], [4], stop_at_newline=stop_at_newline
    )
    assert raw == expected


def test_cache_that_cannot_crop_falls_back_to_a_second_prefill(
    tiny_qwen3_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import DynamicCache

    loaded = models.load(str(tiny_qwen3_dir))
    programs = _programs()[:4]
    expected = score_programs(loaded, programs, prompts.MINIMAL, max_new_tokens=4)

    def refuse(self, n):
        raise NotImplementedError("no crop")

    monkeypatch.setattr(DynamicCache, "crop", refuse)
    again = score_programs(loaded, programs, prompts.MINIMAL, max_new_tokens=4)
    assert [s.raw_output for s in again] == [s.raw_output for s in expected]
    assert [s.answer_logprob for s in again] == pytest.approx([s.answer_logprob for s in expected], abs=1e-5)
