"""Prompt templates: plain strings with one `{code}` placeholder where the program text goes.

Templates contain no other braces, so both `template.format(code=text)` and `render(template, text)` work
(braces inside the program, such as a dict literal, are never interpreted). The direct-answer templates end in
"Answer:" so the next tokens a model writes are the answer; `VARIABLE_BINDING` is the raw program, whose last
line (`#q:`) is itself the question.
"""

from __future__ import annotations

PLACEHOLDER = "{code}"

_DIRECT = (
    "What value does the last variable assigned hold after the program finishes? Answer with the value only."
)

#: Loop and running-sum programs (make_range_program and friends).
RANGE_TRACKING = f"Here is a Python program.\n\n```python\n{{code}}\n```\n\n{_DIRECT}\nAnswer:"

#: Boolean programs; the answer is True or False.
BOOLEAN_LOGIC = (
    "Here is a Python program that works with boolean values.\n\n```python\n{code}\n```\n\n"
    "What value does the last variable assigned hold after the program finishes? "
    "Answer True or False.\nAnswer:"
)

#: try/except programs; the answer is the final value of `result`.
EXCEPTION_HANDLING = (
    "Here is a Python program that handles exceptions.\n\n```python\n{code}\n```\n\n"
    "Some operations raise an exception and run their except clause instead. "
    "What is the value of result after the program finishes? Answer with the value only.\nAnswer:"
)

#: Asks the model to trace every variable, then give the value on a final line.
STEP_BY_STEP = (
    "Trace the following Python program step by step, keeping track of every variable's value.\n\n"
    "```python\n{code}\n```\n\n"
    "After tracing, give the final value of the last variable assigned on a line of the form "
    "'Final answer: <value>'.\n"
)

#: Open-ended reasoning before the answer; parse with the answer marker ("Final answer:").
CHAIN_OF_THOUGHT = (
    "```python\n{code}\n```\n\n"
    "What value does the last variable assigned hold after this program runs? Think it through, then end "
    "with 'Final answer: <value>'.\nLet's think step by step."
)

#: The program and a bare answer cue.
MINIMAL = "{code}\nAnswer:"

#: Generic state tracking phrased as entities and values.
ENTITY_TRACKING = (
    "Each line below updates the value held by a named entity.\n\n{code}\n\n"
    "After every line has run, what value does the last entity updated hold?\nAnswer:"
)

#: The raw program (binding programs end with the `#q:` query, so the answer digit comes next).
VARIABLE_BINDING = "{code}"

#: Name -> template, for command lines and reports.
PROMPTS: dict[str, str] = {
    "RANGE_TRACKING": RANGE_TRACKING,
    "BOOLEAN_LOGIC": BOOLEAN_LOGIC,
    "EXCEPTION_HANDLING": EXCEPTION_HANDLING,
    "STEP_BY_STEP": STEP_BY_STEP,
    "CHAIN_OF_THOUGHT": CHAIN_OF_THOUGHT,
    "MINIMAL": MINIMAL,
    "ENTITY_TRACKING": ENTITY_TRACKING,
    "VARIABLE_BINDING": VARIABLE_BINDING,
}


def check_template(template: str) -> str:
    """Return `template` if it holds exactly one `{code}` placeholder.

    Raises:
        ValueError: When `{code}` is missing or repeated; the message names `{code}`.
    """
    if not isinstance(template, str):
        raise ValueError(
            f"a prompt template must be a str containing {{code}}; got {type(template).__name__}"
        )
    count = template.count(PLACEHOLDER)
    if count != 1:
        raise ValueError(
            f"a prompt template must contain the placeholder {{code}} exactly once (found {count}); "
            "add {code} where the program text goes"
        )
    return template


def render(template: str, code: str) -> str:
    """Put `code` into `template` at `{code}` (plain substitution: other braces in the template stay)."""
    return check_template(template).replace(PLACEHOLDER, code)


def code_offset(template: str) -> int:
    """Character index in the rendered prompt where the program text starts."""
    return check_template(template).index(PLACEHOLDER)
