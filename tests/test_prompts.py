"""Prompt templates: every seed name exists, each holds `{code}` once, and rendering keeps program braces."""

from __future__ import annotations

import random

import pytest

from debug import prompts
from debug.generators import make_exception_program

SEED_NAMES = [
    "RANGE_TRACKING",
    "BOOLEAN_LOGIC",
    "EXCEPTION_HANDLING",
    "STEP_BY_STEP",
    "CHAIN_OF_THOUGHT",
    "MINIMAL",
    "ENTITY_TRACKING",
    "VARIABLE_BINDING",
]


@pytest.mark.parametrize("name", SEED_NAMES)
def test_every_seed_template_has_one_code_placeholder(name):
    template = getattr(prompts, name)
    assert prompts.PROMPTS[name] is template
    assert template.count("{code}") == 1
    code = "x = 1\n#x:"
    # Both ways of filling a template agree (no stray braces in the built-in templates).
    assert template.format(code=code) == prompts.render(template, code)
    assert prompts.render(template, code)[prompts.code_offset(template) :].startswith(code)


def test_variable_binding_prompt_is_the_raw_program():
    assert prompts.render(prompts.VARIABLE_BINDING, "a=1\n#a:") == "a=1\n#a:"


def test_program_braces_are_left_alone():
    program = make_exception_program(3, random.Random(2), kinds=("key",))
    assert "{" in program.text
    assert program.text in prompts.render(prompts.EXCEPTION_HANDLING, program.text)


@pytest.mark.parametrize("bad", ["no placeholder", "{code} twice {code}", "{ code }"])
def test_template_without_exactly_one_code_is_refused(bad):
    with pytest.raises(ValueError, match=r"\{code\}"):
        prompts.check_template(bad)


def test_direct_answer_templates_end_with_an_answer_cue():
    for name in ["RANGE_TRACKING", "BOOLEAN_LOGIC", "EXCEPTION_HANDLING", "MINIMAL", "ENTITY_TRACKING"]:
        assert getattr(prompts, name).endswith("Answer:")
