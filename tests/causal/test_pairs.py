"""Robust-seed search: the pair a seed names, the correctness check, the search and `debug seeds`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import debug.causal.pairs as pairs
from debug.causal.cli import main_seeds
from debug.models import load
from debug.programs import Program


@pytest.fixture(scope="module")
def loaded(tiny_qwen3_dir: Path):
    return load(str(tiny_qwen3_dir), device="cpu")


def test_a_seed_names_one_pair_of_equal_length(loaded) -> None:
    original, counterfactual = pairs.binding_pair(16, 3, 7, loaded.tokenizer)
    assert (original, counterfactual) == pairs.binding_pair(16, 3, 7, loaded.tokenizer)
    assert original.metadata["hops"] == 3 and original.answer != counterfactual.answer
    tok = loaded.tokenizer
    assert len(tok(original.text)["input_ids"]) == len(tok(counterfactual.text)["input_ids"])


def test_answers_correctly_agrees_with_greedy_decoding(loaded) -> None:
    texts = [pairs.binding_pair(6, 2, s)[0].text for s in range(6)] + ["a=12\n#a:"]
    greedy = []
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([loaded.tokenizer(text)["input_ids"]])
            out = loaded.model.generate(ids, max_new_tokens=2, do_sample=False, pad_token_id=0)
            greedy.append(loaded.tokenizer.decode(out[0, ids.shape[1] :]))
    # Programs whose stated answer is what the model decodes are correct; one character off is not.
    right = [Program(t, g) for t, g in zip(texts, greedy)]
    first_only = [Program(t, g[0]) for t, g in zip(texts, greedy)]
    wrong = [Program(t, g[0] + chr(ord(g[1]) ^ 1)) for t, g in zip(texts, greedy)]
    assert pairs.answers_correctly(loaded, right + first_only + wrong) == [True] * 14 + [False] * 7


def test_search_keeps_seeds_right_both_ways(loaded, monkeypatch: pytest.MonkeyPatch) -> None:
    # An oracle model that is right exactly on even answers.
    monkeypatch.setattr(pairs, "answers_correctly", lambda _, programs: [p.answer % 2 == 0 for p in programs])
    found, tried = pairs.find_robust_seeds(loaded, 2, 8, count=3, start=10)
    assert len(found) == 3 and found == sorted(found) and found[0] >= 10 and tried == found[-1] - 10 + 1
    for seed in found:
        original, counterfactual = pairs.binding_pair(8, 2, seed, loaded.tokenizer)
        assert original.answer % 2 == 0 and counterfactual.answer % 2 == 0
    skipped = [s for s in range(10, found[-1]) if s not in found]
    for seed in skipped:
        pair = pairs.binding_pair(8, 2, seed, loaded.tokenizer)
        assert pair[0].answer % 2 or pair[1].answer % 2


def test_debug_seeds_command(tiny_qwen3_dir: Path, monkeypatch, capsys) -> None:
    argv = ["--model", str(tiny_qwen3_dir), "--num-hops", "1", "--seq-len", "5", "--count", "2"]
    monkeypatch.setattr(pairs, "answers_correctly", lambda _, programs: [True] * len(programs))
    assert main_seeds(argv) == 0
    out = capsys.readouterr().out
    assert "[0, 1]" in out and "ROBUST_SEEDS[(1, 5)] = 0" in out and "debug patch" in out
    monkeypatch.setattr(pairs, "answers_correctly", lambda _, programs: [False] * len(programs))
    assert main_seeds(argv + ["--max-seeds", "10"]) == 1
    assert "no robust seed for (1, 5)" in capsys.readouterr().out
    assert main_seeds(argv + ["--num-hops", "9"]) == 2
    assert "num_hops" in capsys.readouterr().err
