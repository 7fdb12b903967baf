"""Counterfactual programs for causal tracing: the same program with the chain's root constant changed.

`create_counterfactual_program` traces the queried variable's binding chain (`debug.chain`), replaces the
integer literal at its root with another value drawn from a seeded rng, and re-runs both programs with CPython
to confirm the answer changed. Only the root line changes. Given a tokenizer it keeps only replacements whose
prompt tokenizes to the same number of tokens, because activation patching pairs positions one to one.
"""

from __future__ import annotations

import builtins
from typing import Any

from debug.chain import ChainError, trace_chain
from debug.programs import Program, as_program
from debug.prompts import render
from debug.rng import as_random

_MAX_CANDIDATES = 400


#: The builtins program text runs with: what the generators' programs use (`range`, `abs`, `int`, the
#: exceptions their try/except blocks raise and catch) plus a few pure functions of the same kind. No
#: `__import__`, `open`, `eval`, `exec`, `compile`, `getattr`, `globals` or `input`: a program is data to
#: trace, not code to trust.
PROGRAM_BUILTINS: dict[str, Any] = {
    name: getattr(builtins, name)
    for name in (
        # values and pure functions
        "abs", "all", "any", "bool", "dict", "divmod", "enumerate", "float", "int", "len", "list", "max",
        "min", "pow", "range", "reversed", "round", "set", "sorted", "str", "sum", "tuple", "zip",
        # exceptions a program may raise or catch
        "ArithmeticError", "AssertionError", "Exception", "IndexError", "KeyError", "LookupError",
        "NameError", "OverflowError", "RuntimeError", "StopIteration", "TypeError", "ValueError",
        "ZeroDivisionError",
    )
}  # fmt: skip


def run_program(text: str, variable: str | None = None) -> Any:
    """Execute program text with CPython and restricted builtins; return `variable`'s final value.

    The one place the package executes program text. The program sees only `PROGRAM_BUILTINS` (so `import`,
    `open`, `print` and `__import__` fail inside it) and runs in a fresh namespace, so a program cannot
    import modules or touch files by accident. It is not a sandbox: code written to escape still can
    (attribute walks such as `().__class__`), and a program that never ends is not stopped.

    Args:
        text: Program text (a trailing `#x:` query line is a comment and runs as is).
        variable: The name whose final value to return; None returns the whole final namespace.

    Raises:
        ValueError: When the program does not compile, raises, or never assigns `variable`.
    """
    namespace: dict[str, Any] = {}
    try:
        code = compile(text, "<program>", "exec")
        # A copy per run: a program that writes to `__builtins__` changes only its own.
        exec(code, {"__builtins__": dict(PROGRAM_BUILTINS)}, namespace)  # noqa: S102 - restricted builtins
    except Exception as exc:  # noqa: BLE001 - reported as a bad program
        raise ValueError(f"the program raised {type(exc).__name__}: {exc}") from None
    if variable is None:
        return namespace
    if variable not in namespace:
        raise ValueError(f"the program never assigns {variable!r}")
    return namespace[variable]


def _candidates(value: int, r: Any) -> list[int]:
    """Replacement values: same digit count first (keeps the character length), in seeded random order."""
    digits = len(str(value))
    low, high = (0, 9) if digits == 1 else (10 ** (digits - 1), 10**digits - 1)
    if high - low + 1 <= _MAX_CANDIDATES:
        same = [v for v in range(low, high + 1) if v != value]
    else:
        same = list({r.randint(low, high) for _ in range(_MAX_CANDIDATES)} - {value})
        same.sort()
    r.shuffle(same)
    return same


def create_counterfactual_program(
    program: Any, rng_or_seed: Any, tokenizer: Any = None, *, template: str = "{code}"
) -> Program:
    """The counterfactual of `program`: its chain's root constant replaced, everything else unchanged.

    Args:
        program: A `Program` (or `(text, answer[, metadata])` tuple, or bare program text) whose queried
            variable (`metadata["answer_var"]`, else the trailing `#x:` line) is computed by a straight-line
            chain of assignments, e.g. a binding program or `x = 5\\ny = x * 2\\n#y:`.
        rng_or_seed: Random source or int seed choosing the new constant (same seed, same counterfactual).
        tokenizer: Optional Hugging Face tokenizer. When given, the counterfactual tokenizes to exactly as
            many tokens as the original (checked on the prompt as the model sees it).
        template: The prompt template the pair will be shown in (`{code}` marks the program); only used for
            the token-length check.

    Returns:
        A `Program` with the counterfactual text and answer; metadata copies the original's and adds
        expected_counterfactual, original_answer, original_text, changed_line (1-based), original_value and
        counterfactual_value (the root literal before and after), root_line and root_value (updated).

    Raises:
        ValueError: When the program has no traceable chain (the message says which line and why), its stated
            answer disagrees with CPython, no replacement changes the answer, or no replacement keeps the
            token length under `tokenizer` (the message says what was tried).
    """
    if isinstance(program, str):
        program = Program(program, None, {})
    program = as_program(program)
    text = program.text
    try:
        chain = trace_chain(text, program.metadata.get("answer_var"))
    except ChainError as exc:
        raise ValueError(f"create_counterfactual_program: {exc}") from None
    answer_var = chain.variables[0]
    original = run_program(text, answer_var)
    if program.answer is not None and original != program.answer:
        raise ValueError(
            f"create_counterfactual_program: CPython gives {answer_var}={original!r} but the program says "
            f"{program.answer!r}; fix the generator's answer"
        )
    stated_root = program.metadata.get("root_line")
    if stated_root is not None and stated_root != chain.root.line:
        raise ValueError(
            f"create_counterfactual_program: metadata root_line={stated_root} but the chain's root is on "
            f"line {chain.root.line}"
        )

    lines = text.split("\n")
    root = chain.root
    root_line = lines[root.line - 1]
    original_tokens = _token_count(tokenizer, render(template, text)) if tokenizer is not None else None
    r = as_random(rng_or_seed)
    tried_length: list[int] = []
    for value in _candidates(chain.root_value, r):
        new_line = root_line[: root.start] + str(value) + root_line[root.end :]
        new_text = "\n".join(lines[: root.line - 1] + [new_line] + lines[root.line :])
        answer = run_program(new_text, answer_var)
        if answer == original:
            continue
        if (
            original_tokens is not None
            and _token_count(tokenizer, render(template, new_text)) != original_tokens
        ):
            tried_length.append(value)
            continue
        metadata = dict(program.metadata)
        metadata.update(
            answer_var=answer_var,
            expected_counterfactual=answer,
            original_answer=original,
            original_text=text,
            changed_line=root.line,
            original_value=chain.root_value,
            counterfactual_value=value,
            root_line=root.line,
        )
        if "root_value" in metadata:
            metadata["root_value"] = value
        return Program(new_text, answer, metadata)
    if tried_length:
        shown = ", ".join(map(str, tried_length[:10]))
        raise ValueError(
            f"create_counterfactual_program: every replacement of the root constant {chain.root_value} on "
            f"line {root.line} that changes the answer changes the token count ({original_tokens}) under "
            f"this tokenizer (tried {shown}); patching needs equal lengths, so use another program"
        )
    raise ValueError(
        f"create_counterfactual_program: no replacement of the root constant {chain.root_value} on line "
        f"{root.line} changes {answer_var}; the answer does not depend on it"
    )


def _token_count(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])
