"""Tests for debug.scoring: batching equivalence, log-probabilities, early stop, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from debug import models, prompts, scoring
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


class _Scripted(torch.nn.Module):
    """A stand-in causal LM that predicts `script[k]` as the k-th token after a prompt of `prompt_len` tokens.

    It depends only on the position (so teacher forcing and step-by-step decoding agree, as for any causal
    LM) and keeps no real cache (the decoder then cannot drop finished rows and must still be right).
    """

    def __init__(self, script: list[int], vocab: int, prompt_len: int) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, 2)
        self.script, self.vocab, self.prompt_len = script, vocab, prompt_len

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.emb

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=True, **_kw):
        rows, length = input_ids.shape
        if position_ids is None:
            position_ids = torch.arange(length).expand(rows, length)
        logits = torch.zeros(rows, length, self.vocab)
        for r in range(rows):
            for j in range(length):
                k = int(position_ids[r, j]) - (self.prompt_len - 1)
                logits[r, j, self.script[min(max(k, 0), len(self.script) - 1)]] = 1.0
        return type("Out", (), {"logits": logits, "past_key_values": object()})()


@pytest.mark.parametrize(
    ("script", "answer", "stop_at_newline", "expected"),
    [
        ("\n7\n9", "\n", True, "\n7\n"),  # a leading newline does not end the answer; the one after "7" does
        ("\n7\n9", "\n", False, "\n7\n9"),  # reasoning mode: only the budget ends it
        ("\n7\n9", "5", True, "\n7\n"),  # the expected answer is rejected at once: all steps decoded
        ("\n7\n9", "\n7\n", False, "\n7\n9"),  # accepted in full, then one decoded step
        ("4<eos>5", "4", True, "4"),  # accepted, and the <eos> after it read off the same forward
        ("4<eos>5", "3", True, "4"),
    ],
)
def test_stop_rules(script: str, answer: str, stop_at_newline: bool, expected: str) -> None:
    from debug.scoring import decode_batch
    from debug.tokenizer import build_char_tokenizer

    tok = build_char_tokenizer()
    ids = [
        tok.eos_token_id if part == "<eos>" else tok.convert_tokens_to_ids(part)
        for part in (["4", "<eos>", "5"] if "<eos>" in script else list(script))
    ]
    prompt = tok("a=1\n#a:")["input_ids"]
    model = _Scripted(ids, len(tok), len(prompt))
    answer_ids = [tok.convert_tokens_to_ids(c) for c in answer]
    [(raw, _lp)] = decode_batch(model, tok, [prompt], [answer_ids], [4], stop_at_newline=stop_at_newline)
    assert raw == expected


def test_cache_that_cannot_drop_rows_gives_the_same_answers(
    tiny_qwen3_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import DynamicCache

    loaded = models.load(str(tiny_qwen3_dir))
    programs = _programs()[:4]
    expected = score_programs(loaded, programs, prompts.MINIMAL, max_new_tokens=4)

    def refuse(self, indices):
        raise NotImplementedError("no row selection")

    monkeypatch.setattr(DynamicCache, "batch_select_indices", refuse)
    again = score_programs(loaded, programs, prompts.MINIMAL, max_new_tokens=4)
    assert [s.raw_output for s in again] == [s.raw_output for s in expected]
    assert [s.answer_logprob for s in again] == pytest.approx([s.answer_logprob for s in expected], abs=1e-5)


def _plain_greedy(loaded: models.LoadedModel, prompt: str, limit: int) -> str:
    """One prompt through `model.generate` (greedy), then the direct-answer stop rules, token by token."""
    tok = loaded.tokenizer
    ids = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        out = loaded.model.generate(
            **ids,
            max_new_tokens=limit,
            do_sample=False,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
    kept: list[int] = []
    spoke = False
    for t in out[0, ids["input_ids"].shape[1] :].tolist():
        if t == tok.eos_token_id:
            break
        kept.append(t)
        piece = tok.decode([t], skip_special_tokens=True)
        if "\n" in piece and (spoke or piece.split("\n")[0].strip()):
            break
        spoke = spoke or bool(piece.strip())
    return tok.decode(kept, skip_special_tokens=True)


@pytest.mark.parametrize("fixture", ["tiny_qwen3_dir", "tiny_gpt2_dir", "embedded"])
def test_speculative_greedy_equals_plain_greedy(fixture: str, request: pytest.FixtureRequest) -> None:
    """Greedy read off the teacher-forced forward equals `generate`, whether the expected answer is rejected
    at once, accepted in part or accepted in full, batched or one at a time."""
    model_id = "embedded:binder" if fixture == "embedded" else str(request.getfixturevalue(fixture))
    if fixture == "embedded" and model_id not in models.EMBEDDED:
        pytest.skip("the embedded model is not shipped in this checkout")
    loaded = models.load(model_id)
    limit = 6
    base = _programs()[:6]
    reference = {p.text: _plain_greedy(loaded, p.text, limit) for p in base}
    variants: list[Program] = list(base)  # true answers: a random model rejects them, the binder often not
    for p in base:
        ref = reference[p.text]
        if ref:
            variants.append(Program(p.text, ref, {}))  # accepted in full, then <eos>/newline/budget
            variants.append(Program(p.text, ref[:1] + "~" + ref[1:], {}))  # diverges after one token
    assert len(variants) > len(base)
    runs = [
        score_programs(loaded, variants, prompts.VARIABLE_BINDING, batch_size=size, max_new_tokens=limit)
        for size in (1, 32, None)
    ]
    for samples in runs:
        assert [s.raw_output for s in samples] == [reference[p.text] for p in variants]
        lps = [s.answer_logprob for s in samples]
        assert lps == pytest.approx([s.answer_logprob for s in runs[0]], abs=1e-4)


@pytest.mark.parametrize("fixture", ["tiny_qwen3_dir", "tiny_gpt2_dir"])
def test_teacher_forced_right_padded_chunks_equal_one_program_at_a_time(
    fixture: str, request: pytest.FixtureRequest, monkeypatch
) -> None:
    # GPT-2 has absolute positions: right padding must not move any position a row reads.
    loaded = models.load(str(request.getfixturevalue(fixture)))
    programs = [
        p
        for seq_len in (2, 5, 9)
        for p in generate_programs(make_variable_binding_program, seq_len, 3, 17, num_hops=1)
    ]
    monkeypatch.setattr(scoring, "TEACHER_FORCED_ROWS", 4)  # several chunks, each of mixed lengths
    batched = scoring.teacher_forced(loaded.model, loaded.tokenizer, programs)
    for program, (predicted, answer) in zip(programs, batched):
        ids = loaded.tokenizer(program.text + str(program.answer), return_tensors="pt").input_ids
        with torch.no_grad():
            alone = loaded.model(input_ids=ids).logits[0].argmax(-1).tolist()
        start = len(loaded.tokenizer(program.text)["input_ids"]) - 1
        assert answer and predicted == alone[start : start + len(answer)]
