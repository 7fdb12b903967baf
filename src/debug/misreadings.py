"""Where a binding model's wrong answers come from: the misreadings of the program that give them.

Reading a binding program right means, at every hop, reading the line that last assigned the variable being
followed before the line that reads it (`debug.chain.trace_chain`). Two ways to misread one hop, each read
right from there on, are named here:

- `neighbour_line`: a line up to `NEIGHBOURHOOD` lines above or below the right one (and still above the
  line that reads it) is read instead: a positional slip;
- `other_assignment`: another line assigning the same variable, anywhere before the query, is read instead:
  the wrong one of a re-assigned name.

`misreadings(program, answer)` names those that give a wrong answer exactly. Any digit has a fair chance of
being given by some misreading by coincidence, so `misreading_rates` reports each one's share of a model's
wrong answers beside its *chance* share: the share of all other wrong digits (each digit but the right one,
weighted equally) that it would explain on the same programs. A misreading accounts for a model's errors only
as far as its share exceeds its chance share.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from debug.chain import ChainError, trace_chain, values_by_line
from debug.programs import Program, as_program

#: The misreadings this module names, in report order.
MISREADINGS = ("neighbour_line", "other_assignment")

#: What `misreading_rates` reports on: every misreading, then `"unexplained"` (none of them gives the answer).
CATEGORIES = (*MISREADINGS, "unexplained")

#: How many lines above or below the right one a `neighbour_line` misreading may land.
NEIGHBOURHOOD = 2


def misread_values(program: Program | Any) -> dict[str, set[int]]:
    """Every answer each misreading of `program` gives (integers; a program it cannot trace gives none).

    Args:
        program: A straight-line binding program ending in a `#q:` query (a `Program` or `(text, answer)`).
    """
    text = as_program(program).text
    out: dict[str, set[int]] = {name: set() for name in MISREADINGS}
    try:
        chain = trace_chain(text)
    except ChainError:
        return out
    lines = text.split("\n")
    values = [int(v) if v is not None else None for v in values_by_line(text)]
    names = [line.split("=", 1)[0].strip() if "=" in line else None for line in lines]
    assert chain.query is not None  # trace_chain found the `#q:` line, or it would have raised
    query_line = chain.query.line - 1
    # The line that reads each chain variable: the query for the first, then the chain line before it.
    readers = [query_line, *(line - 1 for line in chain.lines[:-1])]
    for variable, line, reader in zip(chain.variables, chain.lines, readers, strict=True):
        right = line - 1
        for k in range(max(0, right - NEIGHBOURHOOD), min(reader, right + NEIGHBOURHOOD + 1)):
            if k != right and values[k] is not None:
                out["neighbour_line"].add(values[k])
        for k in range(query_line):
            if k != right and names[k] == variable and values[k] is not None:
                out["other_assignment"].add(values[k])
    return out


def misreadings(program: Program | Any, answer: Any) -> frozenset[str]:
    """The misreadings of `program` that give `answer` (empty for the right answer or a non-integer)."""
    program = as_program(program)
    if not isinstance(answer, int) or answer == program.answer:
        return frozenset()
    return frozenset(name for name, values in misread_values(program).items() if answer in values)


def misreading_rates(programs: Sequence[Program | Any], answers: Sequence[Any]) -> dict[str, Any]:
    """Each misreading's share of the wrong answers among `answers`, and its chance share.

    Args:
        programs: Binding programs with single-digit answers.
        answers: The model's answer to each (an int, or anything else for an answer that is not one).

    Returns:
        `errors` (the number of wrong answers); `share` and `chance`, each mapping every name in
        `CATEGORIES` (the misreadings, then `"unexplained"`) to a share of the wrong answers. The
        chance shares average, over the wrong answers' programs, the share of the nine other digits that each
        misreading (or none) would give. All shares are None when there is no wrong answer.
    """
    share = dict.fromkeys(CATEGORIES, 0.0)
    chance = dict.fromkeys(CATEGORIES, 0.0)
    errors = 0
    for item, answer in zip(programs, answers, strict=True):
        program = as_program(item)
        if answer == program.answer:
            continue
        errors += 1
        values = misread_values(program)
        wrong = [digit for digit in range(10) if digit != program.answer]
        for category in CATEGORIES:
            share[category] += _explains(category, values, answer)
            chance[category] += sum(_explains(category, values, digit) for digit in wrong) / len(wrong)
    if not errors:
        return {"errors": 0, "share": dict.fromkeys(CATEGORIES), "chance": dict.fromkeys(CATEGORIES)}
    return {
        "errors": errors,
        "share": {k: v / errors for k, v in share.items()},
        "chance": {k: v / errors for k, v in chance.items()},
    }


def _explains(category: str, values: dict[str, set[int]], answer: Any) -> bool:
    """Whether `category` accounts for `answer`, given every misreading's answers (`misread_values`)."""
    if category == "unexplained":
        return not any(answer in found for found in values.values())
    return answer in values[category]
