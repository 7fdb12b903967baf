"""TokenAnalyzer: labels land on the right characters under a char tokenizer and a locally trained BPE."""

from __future__ import annotations

import random

import pytest
from bpe_tokenizer import tiny_bpe

from debug import prompts
from debug.generators import make_variable_binding_program
from debug.token_analyzer import TokenAnalyzer
from debug.token_analyzer import TokenAnalyzer as SeedNameAnalyzer
from debug.tokenizer import build_char_tokenizer

BPE = tiny_bpe()
CHAR = build_char_tokenizer()


def expected_chars(program, template: str) -> dict[str, int]:
    """Character index of each label, from the metadata and the paper-style line shape `v=x`."""
    starts, position = [], prompts.code_offset(template)
    for line in program.text.split("\n"):
        starts.append(position)
        position += len(line) + 1
    meta = program.metadata
    chars = {
        f"ref depth {k}": starts[line - 1] + 2 for k, line in enumerate(reversed(meta["chain_lines"]), 1)
    }
    chars["query"] = starts[-1] + 1
    return chars


@pytest.mark.parametrize("tokenizer", [CHAR, BPE], ids=["char", "bpe"])
@pytest.mark.parametrize("template", [prompts.VARIABLE_BINDING, prompts.MINIMAL, prompts.STEP_BY_STEP])
def test_labels_cover_the_labelled_characters(tokenizer, template):
    rng = random.Random(1)
    analyzer = TokenAnalyzer(tokenizer)
    for _ in range(40):
        program = make_variable_binding_program(16, rng)
        targets = analyzer.analyze(program, template)
        assert targets.positions["final"] == len(targets.input_ids) - 1
        assert targets.prompt == prompts.render(template, program.text)
        chars = expected_chars(program, template)
        assert set(targets.positions) == set(chars) | {"final"}
        assert len(chars) == program.metadata["hops"] + 1
        for label, char in chars.items():
            lo, hi = targets.offsets[targets.positions[label]]
            assert lo <= char < hi, (label, program.text)


def test_char_tokenizer_labels_are_the_chain_characters():
    program = make_variable_binding_program(12, random.Random(5), 3)
    targets = TokenAnalyzer(CHAR).analyze(program)
    chain = program.metadata["chain"]  # query -> root
    labelled = [targets.tokens[targets.positions[f"ref depth {k}"]] for k in (1, 2, 3)]
    assert labelled == [str(program.answer), chain[2], chain[1]]
    assert targets.tokens[targets.positions["query"]] == chain[0]
    assert targets.tokens[targets.positions["final"]] == ":"
    assert targets.label_of(targets.positions["query"]) == "query"


def test_bpe_really_merges_characters():
    program = make_variable_binding_program(16, random.Random(2))
    targets = TokenAnalyzer(BPE).analyze(program)
    assert len(targets.input_ids) < len(program.text)


def test_seed_style_program_and_seed_module_name():
    targets = SeedNameAnalyzer(CHAR).analyze("x = 5\ny = x * 2\n#y:")
    assert {k: targets.tokens[v] for k, v in targets.positions.items()} == {
        "ref depth 1": "5",
        "ref depth 2": "x",
        "query": "y",
        "final": ":",
    }


def test_untraceable_program_is_refused():
    with pytest.raises(ValueError, match="For"):
        TokenAnalyzer(CHAR).analyze("x = 0\nfor i in range(3):\n    x += 1\n#x:")
