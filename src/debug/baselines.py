"""Heuristic baselines: how far a model gets without tracing anything.

Reports show these beside every model accuracy, so a model that merely copies line 1 cannot look competent.
Each baseline is a function over a list of programs returning the fraction it answers correctly:

- `copy_line_1`: answer with the first literal of the answer's type (an integer, or True/False for
  boolean programs) on the program's first line. For variable binding this is the seed's confound (81% there,
  about 16% on this project's 16-line programs).
- `copy_last_constant`: answer with the last such literal anywhere in the program's code.
- `majority`: always answer the most common answer of the list (measured in-sample, so it is an upper bound).

They are defined for every family; comments (`# step 3`, the `#x:` query) are ignored, so only code counts.
A program with no literal of the right type counts as wrong for the copy baselines.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from debug.programs import Answer, Program, as_program

_INT = re.compile(r"(?<![\w.])-?\d+(?![\w.])")
_BOOL = re.compile(r"\b(True|False)\b")


def _literals(line: str, answer: Answer) -> list[Answer]:
    """Literals on one line of code (comment stripped) of the same kind as `answer`."""
    code = line.split("#", 1)[0]
    if isinstance(answer, bool):
        return [m == "True" for m in _BOOL.findall(code)]
    if isinstance(answer, int):
        return [int(m) for m in _INT.findall(code)]
    return re.findall(r"\S+", code)


def _accuracy(programs: Sequence[Any], predict: Callable[[Program], Answer | None]) -> float:
    items = [as_program(p) for p in programs]
    if not items:
        raise ValueError("a baseline needs at least one program; pass a non-empty list")
    hits = 0
    for p in items:
        guess = predict(p)
        hits += guess is not None and type(guess) is type(p.answer) and guess == p.answer
    return hits / len(items)


def predict_copy_line_1(program: Program) -> Answer | None:
    """The first literal of the answer's type on line 1, or None."""
    found = _literals(program.text.split("\n", 1)[0], program.answer)
    return found[0] if found else None


def predict_copy_last_constant(program: Program) -> Answer | None:
    """The last literal of the answer's type in the program's code, or None."""
    for line in reversed(program.text.split("\n")):
        found = _literals(line, program.answer)
        if found:
            return found[-1]
    return None


def copy_line_1(programs: Sequence[Any]) -> float:
    """Accuracy of answering with the first literal on line 1.

    Args:
        programs: `Program`s or `(text, answer[, metadata])` tuples.
    """
    return _accuracy(programs, predict_copy_line_1)


def copy_last_constant(programs: Sequence[Any]) -> float:
    """Accuracy of answering with the last literal in the program's code.

    Args:
        programs: `Program`s or `(text, answer[, metadata])` tuples.
    """
    return _accuracy(programs, predict_copy_last_constant)


def majority(programs: Sequence[Any]) -> float:
    """Accuracy of always answering the list's most common answer (in-sample).

    Args:
        programs: `Program`s or `(text, answer[, metadata])` tuples.
    """
    items = [as_program(p) for p in programs]
    if not items:
        raise ValueError("a baseline needs at least one program; pass a non-empty list")
    counts = Counter((type(p.answer).__name__, p.answer) for p in items)
    return counts.most_common(1)[0][1] / len(items)


#: Name -> baseline, in the order reports show them.
BASELINES: dict[str, Callable[[Sequence[Any]], float]] = {
    "copy_line_1": copy_line_1,
    "copy_last_constant": copy_last_constant,
    "majority": majority,
}


def heuristic_baselines(programs: Sequence[Any]) -> dict[str, float]:
    """All baselines over one list of programs, keyed copy_line_1, copy_last_constant and majority.

    Raises:
        ValueError: When `programs` is empty.
    """
    return {name: fn(programs) for name, fn in BASELINES.items()}
