"""Counterfactual programs for causal tracing: the same program with one constant changed.

Three families have counterfactuals (`COUNTERFACTUAL_FAMILIES`), each built by its own function and reached
through `create_counterfactual(program, rng, tokenizer, family=...)`:

- "binding", `create_counterfactual_program`: traces the queried variable's binding chain (`debug.chain`)
  and replaces the integer literal at its root with another value;
- "range", `create_range_counterfactual`: changes the increment of a `x += <int>` line or the bound of a
  `for ... in range(<int>)` loop (`change="increment"` / `"bound"`, or either, seeded);
- "boolean", `create_boolean_counterfactual`: flips a root constant (a `v = True` / `v = False` line).
  `True` and `False` differ by one character, so when the plain flip changes the token count the line's
  spacing absorbs the difference (`q = True` -> `q =False`, `q = False` -> `q = True `; metadata
  `respaced`).

All share the same guarantees: the new value is drawn from a seeded rng (same seed, same counterfactual);
both programs are run with CPython (`run_program`) and the counterfactual is kept only when its answer
differs; only one line changes; given a tokenizer, only counterfactuals whose prompt (the program rendered
in `template`) tokenizes to the same number of tokens are kept, because activation patching pairs positions
one to one. Metadata records what changed: changed_line, original_value, counterfactual_value, and for the
range and boolean families also family, change (what kind of constant), original_line / counterfactual_line
(the line's text before and after), original_span / changed_span (the literal's `(line, start, end)` in the
original / the counterfactual text). `mark_change(original, counterfactual)` copies the span onto the
original, which is how `debug.token_analyzer` finds the "changed constant" token of the original prompt.
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from debug.chain import Chain, ChainError, Span, query_variable, trace_chain
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


def _candidates(value: int, r: Any, low: int = 0) -> list[int]:
    """Replacement values: same digit count first (keeps the character length), in seeded random order.

    `low` is the smallest one-digit value allowed (1 for loop bounds and increments, where 0 would empty the
    loop or stop the accumulator).
    """
    digits = len(str(value))
    low, high = (low, 9) if digits == 1 else (10 ** (digits - 1), 10**digits - 1)
    if high - low + 1 <= _MAX_CANDIDATES:
        same = [v for v in range(low, high + 1) if v != value]
    else:
        same = list({r.randint(low, high) for _ in range(_MAX_CANDIDATES)} - {value})
        same.sort()
    r.shuffle(same)
    return same


def _as_program_arg(program: Any) -> Program:
    if isinstance(program, str):
        return Program(program, None, {})
    return as_program(program)


def _length_check(tokenizer: Any, template: str, text: str) -> tuple[int | None, Any]:
    """The original prompt's token count and a predicate `fits(new_text)` (True without a tokenizer)."""
    if tokenizer is None:
        return None, lambda _text: True
    count = _token_count(tokenizer, render(template, text))
    return count, lambda new_text: _token_count(tokenizer, render(template, new_text)) == count


def _checked_answer(name: str, program: Program, answer_var: str) -> Any:
    """CPython's answer for `answer_var`, refusing a program whose stated answer disagrees."""
    original = run_program(program.text, answer_var)
    if program.answer is not None and original != program.answer:
        raise ValueError(
            f"{name}: CPython gives {answer_var}={original!r} but the program says "
            f"{program.answer!r}; fix the generator's answer"
        )
    return original


def _replace_line(lines: list[str], line: int, new_line: str) -> str:
    return "\n".join(lines[: line - 1] + [new_line] + lines[line:])


# -- binding ------------------------------------------------------------------------------------------------


def _binding_chain(program: Program) -> Chain:
    try:
        return trace_chain(program.text, program.metadata.get("answer_var"))
    except ChainError as exc:
        raise ValueError(f"create_counterfactual_program: {exc}") from None


def _check_root_line(program: Program, chain: Chain) -> None:
    stated_root = program.metadata.get("root_line")
    if stated_root is not None and stated_root != chain.root.line:
        raise ValueError(
            f"create_counterfactual_program: metadata root_line={stated_root} but the chain's root is on "
            f"line {chain.root.line}"
        )


def _binding_metadata(program: Program, chain: Chain, original: Any, answer: Any, value: int) -> dict:
    metadata = dict(program.metadata)
    metadata.update(
        answer_var=chain.variables[0],
        expected_counterfactual=answer,
        original_answer=original,
        original_text=program.text,
        changed_line=chain.root.line,
        original_value=chain.root_value,
        counterfactual_value=value,
        root_line=chain.root.line,
    )
    if "root_value" in metadata:
        metadata["root_value"] = value
    return metadata


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
    program = _as_program_arg(program)
    chain = _binding_chain(program)
    answer_var, root = chain.variables[0], chain.root
    original = _checked_answer("create_counterfactual_program", program, answer_var)
    _check_root_line(program, chain)
    lines = program.text.split("\n")
    root_line = lines[root.line - 1]
    original_tokens, fits = _length_check(tokenizer, template, program.text)
    tried_length: list[int] = []
    for value in _candidates(chain.root_value, as_random(rng_or_seed)):
        new_text = _replace_line(
            lines, root.line, root_line[: root.start] + str(value) + root_line[root.end :]
        )
        answer = run_program(new_text, answer_var)
        if answer == original:
            continue
        if not fits(new_text):
            tried_length.append(value)
            continue
        return Program(new_text, answer, _binding_metadata(program, chain, original, answer, value))
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


# -- range and boolean: one literal, found with `ast`, changed in place -------------------------------------

#: The families `create_counterfactual` supports.
COUNTERFACTUAL_FAMILIES = ("binding", "range", "boolean")

#: What a range counterfactual may change.
RANGE_CHANGES = ("increment", "bound")


@dataclass(frozen=True)
class _Site:
    """One literal a counterfactual may change: its kind, its span in the original text and its value."""

    kind: str
    span: Span
    value: Any


@dataclass(frozen=True)
class _Edit:
    """One candidate counterfactual: the site, the new value, the new line and the new literal's span."""

    site: _Site
    value: Any
    line: str
    span: Span


def _answer_var(name: str, program: Program) -> str:
    var = program.metadata.get("answer_var") or query_variable(program.text)
    if var is None:
        raise ValueError(
            f"{name}: cannot tell which variable is queried: end the program with '#x:' or set answer_var"
        )
    return var


def _parse(name: str, text: str) -> ast.Module:
    try:
        return ast.parse(text)
    except SyntaxError as exc:
        raise ValueError(f"{name}: the program is not valid Python (line {exc.lineno}: {exc.msg})") from None


def _node_span(lines: list[str], node: ast.expr) -> Span:
    # ast columns count UTF-8 bytes; convert to character columns.
    raw = lines[node.lineno - 1].encode("utf-8")
    return Span(
        node.lineno,
        len(raw[: node.col_offset].decode("utf-8")),
        len(raw[: node.end_col_offset].decode("utf-8")),
    )


def _is_int(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) is int


def _range_sites(text: str, answer_var: str) -> list[_Site]:
    """Increments (`answer_var += <int>`) and loop bounds (`for ... in range(<int>)`), in text order."""
    lines, sites = text.split("\n"), []
    for node in ast.walk(_parse("create_range_counterfactual", text)):
        if (
            isinstance(node, ast.AugAssign)
            and isinstance(node.op, ast.Add)
            and isinstance(node.target, ast.Name)
            and node.target.id == answer_var
            and _is_int(node.value)
        ):
            sites.append(_Site("increment", _node_span(lines, node.value), node.value.value))
        elif (
            isinstance(node, ast.For)
            and isinstance(node.iter, ast.Call)
            and isinstance(node.iter.func, ast.Name)
            and node.iter.func.id == "range"
            and len(node.iter.args) == 1
            and _is_int(node.iter.args[0])
        ):
            arg = node.iter.args[0]
            sites.append(_Site("bound", _node_span(lines, arg), arg.value))
    return sorted(sites, key=lambda s: (s.span.line, s.span.start))


def _boolean_sites(text: str) -> list[_Site]:
    """Root constants: assignments whose whole right-hand side is `True` or `False`, in text order."""
    lines, sites = text.split("\n"), []
    for node in _parse("create_boolean_counterfactual", text).body:
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant)
            and type(node.value.value) is bool
        ):
            sites.append(_Site("constant", _node_span(lines, node.value), node.value.value))
    return sites


def _range_edits(lines: list[str], sites: list[_Site], r: Any) -> Iterator[_Edit]:
    """Every site's replacements; kinds and sites in seeded order (either kind may come first)."""
    kinds = sorted({s.kind for s in sites})
    r.shuffle(kinds)
    for kind in kinds:
        of_kind = [s for s in sites if s.kind == kind]
        r.shuffle(of_kind)
        for site in of_kind:
            line, span = lines[site.span.line - 1], site.span
            for value in _candidates(site.value, r, low=1):
                new = str(value)
                yield _Edit(
                    site,
                    value,
                    line[: span.start] + new + line[span.end :],
                    Span(span.line, span.start, span.start + len(new)),
                )


def _boolean_edits(lines: list[str], sites: list[_Site], r: Any) -> Iterator[_Edit]:
    """Each root constant flipped, in seeded order; after the plain flip, respellings of equal length."""
    sites = list(sites)
    r.shuffle(sites)
    for site in sites:
        line, (n, s, e) = lines[site.span.line - 1], (site.span.line, site.span.start, site.span.end)
        new = str(not site.value)
        spellings = [(line[:s] + new + line[e:], s)]
        if len(new) > e - s:  # True -> False: drop a space next to the literal
            if s > 0 and line[s - 1] == " ":
                spellings.append((line[: s - 1] + new + line[e:], s - 1))
            if line[e : e + 1] == " ":
                spellings.append((line[:s] + new + line[e + 1 :], s))
        else:  # False -> True: pad with a space after it, else before it
            spellings += [(line[:s] + new + " " + line[e:], s), (line[:s] + " " + new + line[e:], s + 1)]
        for new_line, start in spellings:
            yield _Edit(site, not site.value, new_line, Span(n, start, start + len(new)))


def _search_edits(
    name: str, program: Program, answer_var: str, edits: Iterator[_Edit], fits: Callable[[str], bool]
) -> tuple[_Edit, str, Any, Any] | list[_Edit]:
    """The first edit that changes the answer and keeps the length, as (edit, text, answer, original answer).

    Returns the edits refused only for their token count when none qualifies.
    """
    original = _checked_answer(name, program, answer_var)
    lines = program.text.split("\n")
    refused: list[_Edit] = []
    for edit in edits:
        new_text = _replace_line(lines, edit.span.line, edit.line)
        answer = run_program(new_text, answer_var)
        if answer == original:
            continue
        if not fits(new_text):
            refused.append(edit)
            continue
        return edit, new_text, answer, original
    return refused


def _edited_program(
    program: Program, family: str, answer_var: str, found: tuple[_Edit, str, Any, Any]
) -> Program:
    edit, new_text, answer, original = found
    site, lines = edit.site, program.text.split("\n")
    metadata = dict(program.metadata)
    metadata.update(
        family=family,
        answer_var=answer_var,
        expected_counterfactual=answer,
        original_answer=original,
        original_text=program.text,
        change=site.kind,
        changed_line=site.span.line,
        original_value=site.value,
        counterfactual_value=edit.value,
        original_line=lines[site.span.line - 1],
        counterfactual_line=edit.line,
        original_span=(site.span.line, site.span.start, site.span.end),
        changed_span=(edit.span.line, edit.span.start, edit.span.end),
    )
    if family == "boolean":
        start, end = site.span.start, site.span.end
        plain = lines[site.span.line - 1][:start] + str(edit.value) + lines[site.span.line - 1][end:]
        metadata["respaced"] = edit.line != plain
    return Program(new_text, answer, metadata)


def _update_generator_record(metadata: dict[str, Any], sites: list[_Site], changed: _Site) -> None:
    """Keep a range generator's own record of its constants true (increment, step, increments, iterations)."""
    of_kind = [s for s in sites if s.kind == changed.kind]
    new = metadata["counterfactual_value"]
    if changed.kind == "bound" and len(of_kind) == 1 and metadata.get("iterations") == changed.value:
        metadata["iterations"] = new
    if changed.kind != "increment":
        return
    if len(of_kind) == 1:  # one `+=` line (the loop body): the generator's single increment is it
        for key in ("increment", "step"):
            if metadata.get(key) == changed.value:
                metadata[key] = new
    increments = metadata.get("increments")
    if isinstance(increments, list) and len(increments) == len(of_kind):  # make_variable_increments
        increments = list(increments)
        increments[of_kind.index(changed)] = new
        metadata["increments"] = increments


def _refusal(name: str, what: str, answer_var: str, refused: list[_Edit], tokens: int | None) -> ValueError:
    if refused:
        shown = ", ".join(f"line {e.span.line} -> {e.value}" for e in refused[:6])
        return ValueError(
            f"{name}: every change of {what} that changes the answer changes the token count ({tokens}) "
            f"under this tokenizer (tried {shown}); patching needs equal lengths, so use another program"
        )
    return ValueError(f"{name}: no change of {what} changes {answer_var}; the answer does not depend on them")


def create_range_counterfactual(
    program: Any,
    rng_or_seed: Any,
    tokenizer: Any = None,
    *,
    template: str = "{code}",
    change: str | None = None,
) -> Program:
    """The counterfactual of a range-tracking program: one increment or loop bound changed.

    Args:
        program: A `Program`, tuple or program text accumulating into its queried variable with
            `x += <int>` lines, optionally inside `for i in range(<int>):` (`make_range_program`,
            `make_range_program_lines`, `make_variable_increments`, ...).
        rng_or_seed: Random source or int seed choosing what changes and the new value.
        tokenizer: Optional Hugging Face tokenizer; when given, the prompt keeps its token count.
        template: The prompt template, for the token-length check.
        change: "increment", "bound", or None for either (the seeded rng picks which is tried first).

    Returns:
        The counterfactual `Program` (metadata as in the module docstring; the generator's own record of the
        changed constant, `increment`, `step`, `increments` or `iterations`, is updated).

    Raises:
        ValueError: For an unknown `change`, a program with nothing of that kind to change, a stated answer
            CPython disagrees with, or when no change both changes the answer and keeps the token count.
    """
    name = "create_range_counterfactual"
    if change is not None and change not in RANGE_CHANGES:
        raise ValueError(f"{name}: change must be one of {', '.join(RANGE_CHANGES)} or None; got {change!r}")
    program = _as_program_arg(program)
    answer_var = _answer_var(name, program)
    sites = [s for s in _range_sites(program.text, answer_var) if change in (None, s.kind)]
    what = {"increment": "increment", "bound": "loop bound", None: "increment or loop bound"}[change]
    if not sites:
        raise ValueError(
            f"{name}: the program has no {what} to change "
            f"(`{answer_var} += <int>` or `for ... in range(<int>):`)"
        )
    tokens, fits = _length_check(tokenizer, template, program.text)
    edits = _range_edits(program.text.split("\n"), sites, as_random(rng_or_seed))
    found = _search_edits(name, program, answer_var, edits, fits)
    if isinstance(found, list):
        raise _refusal(name, f"the {what}", answer_var, found, tokens)
    cf = _edited_program(program, "range", answer_var, found)
    _update_generator_record(cf.metadata, _range_sites(program.text, answer_var), found[0].site)
    return cf


def create_boolean_counterfactual(
    program: Any, rng_or_seed: Any, tokenizer: Any = None, *, template: str = "{code}"
) -> Program:
    """The counterfactual of a boolean-logic program: one root constant (`v = True` / `v = False`) flipped.

    Constants are tried in seeded order; the first whose flip changes the answer (and keeps the token count,
    respacing the line when needed: see the module docstring) is kept.

    Args:
        program: A `Program`, tuple or program text of boolean assignments (`make_boolean_program`).
        rng_or_seed: Random source or int seed choosing which constant is flipped.
        tokenizer: Optional Hugging Face tokenizer; when given, the prompt keeps its token count.
        template: The prompt template, for the token-length check.

    Returns:
        The counterfactual `Program` (metadata as in the module docstring, plus `respaced`).

    Raises:
        ValueError: For a program without a root constant, a stated answer CPython disagrees with, or when
            no flip both changes the answer and keeps the token count.
    """
    name = "create_boolean_counterfactual"
    program = _as_program_arg(program)
    answer_var = _answer_var(name, program)
    sites = _boolean_sites(program.text)
    if not sites:
        raise ValueError(
            f"{name}: the program has no root constant to flip (a line `v = True` or `v = False`)"
        )
    tokens, fits = _length_check(tokenizer, template, program.text)
    edits = _boolean_edits(program.text.split("\n"), sites, as_random(rng_or_seed))
    found = _search_edits(name, program, answer_var, edits, fits)
    if isinstance(found, list):
        raise _refusal(name, "a root constant", answer_var, found, tokens)
    return _edited_program(program, "boolean", answer_var, found)


# -- the dispatcher -----------------------------------------------------------------------------------------


def program_family(program: Any) -> str:
    """The counterfactual family of a program: `metadata["family"]`, else read from its statements.

    A loop or `+=` line makes it "range", a `v = True/False` line "boolean", a `try` block "exceptions"
    (no counterfactual support), anything else "binding".
    """
    program = _as_program_arg(program)
    family = program.metadata.get("family")
    if isinstance(family, str):
        return family
    try:
        nodes = list(ast.walk(ast.parse(program.text)))
    except SyntaxError:
        return "binding"  # the binding path reports the syntax error with its line
    if any(isinstance(n, ast.Try) for n in nodes):
        return "exceptions"
    if any(isinstance(n, (ast.For, ast.While, ast.AugAssign)) for n in nodes):
        return "range"
    if any(
        isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant) and type(n.value.value) is bool
        for n in nodes
    ):
        return "boolean"
    return "binding"


def create_counterfactual(
    program: Any,
    rng_or_seed: Any,
    tokenizer: Any = None,
    *,
    family: str | None = None,
    template: str = "{code}",
    change: str | None = None,
) -> Program:
    """The counterfactual of a program of any supported family (`COUNTERFACTUAL_FAMILIES`).

    Args:
        program: A `Program`, tuple or program text.
        rng_or_seed: Random source or int seed.
        tokenizer: Optional Hugging Face tokenizer; when given, the prompt keeps its token count.
        family: "binding", "range" or "boolean"; None reads it from the program (`program_family`).
        template: The prompt template, for the token-length check.
        change: For family "range" only: "increment", "bound" or None (either).

    Returns:
        The family's counterfactual; its metadata also names the `family`.

    Raises:
        ValueError: For a family without counterfactual support (the message names those with one), `change`
            outside the range family, or whatever the family's builder refuses.
    """
    program = _as_program_arg(program)
    family = family if family is not None else program_family(program)
    if family not in COUNTERFACTUAL_FAMILIES:
        raise ValueError(
            f"create_counterfactual: family {family!r} has no counterfactual support; families with one: "
            f"{', '.join(COUNTERFACTUAL_FAMILIES)} (pass family=...)"
        )
    if change is not None and family != "range":
        raise ValueError(
            f"create_counterfactual: change= applies to family 'range' only; got it with {family!r}"
        )
    if family == "range":
        return create_range_counterfactual(program, rng_or_seed, tokenizer, template=template, change=change)
    if family == "boolean":
        return create_boolean_counterfactual(program, rng_or_seed, tokenizer, template=template)
    cf = create_counterfactual_program(program, rng_or_seed, tokenizer, template=template)
    return Program(cf.text, cf.answer, {**cf.metadata, "family": "binding"})


def mark_change(original: Program, counterfactual: Program) -> Program:
    """`original` with the counterfactual's change on it: metadata family, change and changed_span.

    `changed_span` then gives the changed literal's `(line, start, end)` in the *original* text, which is
    what `debug.token_analyzer.TokenAnalyzer` labels "changed constant". Text and answer are unchanged.
    """
    meta = counterfactual.metadata
    marked = dict(original.metadata, family=meta.get("family", "binding"))
    if "original_span" in meta:
        marked.update(change=meta["change"], changed_span=tuple(meta["original_span"]))
    return Program(original.text, original.answer, marked)


def _token_count(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])
