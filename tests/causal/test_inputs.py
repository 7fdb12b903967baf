"""Pair preparation: equal lengths, the scored answer token, targets, and the seed's program dicts."""

from __future__ import annotations

import pytest

from debug.causal.inputs import CausalTracingError, answer_tokens, as_pair, prepare_inputs
from debug.programs import Program
from debug.tokenizer import build_char_tokenizer

TOK = build_char_tokenizer()


def test_pair_ids_labels_and_targets() -> None:
    pair = prepare_inputs(TOK, Program("a=1\nb=a\n#b:", 1), Program("a=4\nb=a\n#b:", 4))
    assert pair.original_ids.tolist() == TOK("a=1\nb=a\n#b:")["input_ids"]
    assert (pair.original_ids != pair.counterfactual_ids).nonzero().flatten().tolist() == [2]
    assert pair.tokens[3] == "\\n" and pair.tokens[-1] == ":"
    assert pair.targets == {"ref depth 1": 2, "ref depth 2": 6, "query": 9, "final": 10}
    assert pair.answer.prefix_ids == [] and TOK.decode([pair.answer.counterfactual_id]) == "4"


def test_shared_answer_prefix_is_teacher_forced() -> None:
    answer = answer_tokens(TOK, "#a:", TOK("#a:")["input_ids"], 123, 153)
    assert (
        TOK.decode(answer.prefix_ids) == "1"
        and TOK.decode([answer.original_id, answer.counterfactual_id]) == "25"
    )
    pair = prepare_inputs(TOK, Program("a=123\n#a:", 123), Program("a=153\n#a:", 153))
    assert len(pair.tokens) == len("a=123\n#a:") + 1 and pair.targets["final"] == len(pair.tokens) - 1


def test_answers_that_no_token_separates_are_refused() -> None:
    with pytest.raises(CausalTracingError, match="share their tokens"):
        answer_tokens(TOK, "#a:", TOK("#a:")["input_ids"], 1, 12)
    with pytest.raises(CausalTracingError, match="same answer '3'"):
        answer_tokens(TOK, "#a:", TOK("#a:")["input_ids"], 3, "3")


def test_text_without_answers_and_non_chain_programs() -> None:
    pair = prepare_inputs(TOK, "for i in range(3): x=i", "for i in range(4): x=i")
    assert pair.answer is None and pair.targets == {} and "no ref-depth targets" in pair.target_note


def test_seed_dicts_become_programs_with_chains() -> None:
    original, counterfactual = as_pair(
        {
            "original": "x = 2\ny = x\n#y:",
            "counterfactual": "x = 7\ny = x\n#y:",
            "expected_original": 2,
            "expected_counterfactual": 7,
            "variable_chain": ["y", "x"],
        }
    )
    assert (original.answer, counterfactual.answer) == (2, 7)
    assert original.metadata["answer_var"] == "y" and original.metadata["chain"] == ["y", "x"]
    assert as_pair((original, counterfactual)) == (original, counterfactual)
    with pytest.raises(CausalTracingError, match="lacks counterfactual, expected_counterfactual"):
        as_pair({"original": "x", "expected_original": 1})
    with pytest.raises(CausalTracingError, match="needs Programs"):
        as_pair(("x = 1", "x = 2"))
