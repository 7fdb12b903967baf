"""Token targeting: which token positions of a prompt carry each step of a program's computation.

`TokenAnalyzer(tokenizer).analyze(program)` labels, in the tokenized prompt, by the program's family
(`program.metadata["family"]`, default "binding"; see `debug.counterfactual`):

binding (a straight-line chain of assignments):

- "ref depth k": the first token of the right-hand side of the chain's k-th line, counted from the root
  (k=1 is the line holding the root constant, k=hops the line assigning the queried variable);

range (an accumulator updated by `x += <int>` lines, optionally in a `for ... in range(<int>)` loop):

- "changed constant": the first token of the literal the counterfactual changed (the increment or the loop
  bound), when the program's metadata has `changed_span` (`debug.counterfactual.mark_change` puts it on an
  original; a counterfactual carries its own);
- "accumulator": the accumulator's name on its last `x += <int>` line (the loop body's line in loop form);

boolean (boolean assignments; the answer is the queried variable's value):

- "changed constant": the first token of the flipped `True` / `False` literal (as for range);
- "operand 1", "operand 2": the variables the queried variable's line reads, in reading order (one for
  `not v`, none when the line assigns a constant);

every family:

- "query": the token holding the queried variable's name in the trailing `#q:` line;
- "final": the last token, where the model predicts the answer.

Positions come from the tokenizer's offset mapping, so they are right for char-level tokenizers (one token per
character) and for BPE tokenizers that merge `=5` or `#q:` into one token alike: a label points at the token
whose character span covers the labelled character.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any

from debug.chain import Span, line_offsets, query_variable, trace_chain
from debug.programs import Program, as_program
from debug.prompts import code_offset, render


@dataclass(frozen=True)
class TokenTargets:
    """Labelled token positions of one prompt.

    Attributes:
        positions: Label -> token index ("ref depth 1", ..., "changed constant", "accumulator",
            "operand 1", "query", "final": see the module docstring).
        tokens: The token strings of the prompt, in order.
        input_ids: The token ids.
        offsets: (start, end) character span of each token in `prompt`.
        prompt: The full prompt text that was tokenized.
    """

    positions: dict[str, int]
    tokens: list[str]
    input_ids: list[int]
    offsets: list[tuple[int, int]]
    prompt: str
    labels: dict[int, list[str]] = field(default_factory=dict)

    def label_of(self, position: int) -> str:
        """The label(s) of a token position joined by ", ", or "" when it has none."""
        return ", ".join(self.labels.get(position, []))


class TokenAnalyzer:
    """Maps binding, range and boolean programs to labelled token positions under one tokenizer.

    Args:
        tokenizer: A Hugging Face fast tokenizer (it must return an offset mapping).
        add_special_tokens: Tokenize as the model is run (BOS and the like); offsets of special tokens are
            ignored when matching characters.
    """

    def __init__(self, tokenizer: Any, *, add_special_tokens: bool = True) -> None:
        self.tokenizer = tokenizer
        self.add_special_tokens = add_special_tokens

    def analyze(self, program: Any, template: str = "{code}") -> TokenTargets:
        """Label the token positions of `program` shown in `template` (labels: see the module docstring).

        Args:
            program: A `Program`, tuple or program text. Family "binding" (the default): its queried variable
                is computed by a straight-line chain (binding programs, or the seed's
                `x = 5\\ny = x * 2\\n#y:`). Families "range" and "boolean" (`metadata["family"]`, as
                `debug.counterfactual.mark_change` and the counterfactual builders set it): see the module
                docstring.
            template: The prompt template (`{code}` marks where the program goes).

        Raises:
            ValueError: When the program has no traceable chain (binding), no accumulator line (range), an
                unknown family, or the tokenizer gives no offsets.
        """
        if isinstance(program, str):
            program = Program(program, None, {})
        program = as_program(program)
        spans = _family_spans(program)
        prompt = render(template, program.text)
        start = code_offset(template)
        try:
            encoded = self.tokenizer(
                prompt, add_special_tokens=self.add_special_tokens, return_offsets_mapping=True
            )
        except NotImplementedError:  # slow (Python) tokenizers cannot return offsets
            encoded = {}
        if "offset_mapping" not in encoded:
            raise ValueError("TokenAnalyzer needs a fast tokenizer that returns offsets (use_fast=True)")
        ids = list(encoded["input_ids"])
        offsets = [tuple(o) for o in encoded["offset_mapping"]]
        lines = line_offsets(program.text)

        def token_at(span: Span) -> int:
            char = start + lines[span.line - 1] + span.start
            for index, (lo, hi) in enumerate(offsets):
                if lo <= char < hi:
                    return index
            raise ValueError(f"no token covers character {char} of the prompt (line {span.line})")

        positions = {label: token_at(span) for label, span in spans.items()}
        positions["final"] = len(ids) - 1
        labels: dict[int, list[str]] = {}
        for label, index in positions.items():
            labels.setdefault(index, []).append(label)
        tokens = self.tokenizer.convert_ids_to_tokens(ids)
        return TokenTargets(positions, list(tokens), ids, offsets, prompt, labels)


#: Families `TokenAnalyzer` labels (the same as `debug.counterfactual.COUNTERFACTUAL_FAMILIES`).
FAMILIES = ("binding", "range", "boolean")


def _family_spans(program: Program) -> dict[str, Span]:
    """Label -> character span in the program text, for the program's family."""
    family = program.metadata.get("family", "binding")
    if family == "binding":
        chain = trace_chain(program.text, program.metadata.get("answer_var"))
        spans = {f"ref depth {depth}": span for depth, span in enumerate(reversed(chain.rhs), start=1)}
        if chain.query is not None:
            spans["query"] = chain.query
        return spans
    if family not in FAMILIES:
        raise ValueError(
            f"TokenAnalyzer: family {family!r} has no token targets; choose one of {', '.join(FAMILIES)}"
        )
    answer_var = program.metadata.get("answer_var") or query_variable(program.text)
    if answer_var is None:
        raise ValueError("TokenAnalyzer: cannot tell which variable is queried: end the program with '#x:'")
    try:
        module = ast.parse(program.text)
    except SyntaxError as exc:
        raise ValueError(
            f"TokenAnalyzer: the program is not valid Python (line {exc.lineno}: {exc.msg})"
        ) from None
    lines = program.text.split("\n")
    spans: dict[str, Span] = {}
    changed = program.metadata.get("changed_span")
    if changed is not None:
        spans["changed constant"] = Span(*changed)
    if family == "range":
        updates = [
            n.target
            for n in ast.walk(module)
            if isinstance(n, ast.AugAssign) and isinstance(n.target, ast.Name) and n.target.id == answer_var
        ]
        if not updates:
            raise ValueError(f"TokenAnalyzer: the range program has no `{answer_var} += ...` line")
        spans["accumulator"] = _span(lines, max(updates, key=lambda n: (n.lineno, n.col_offset)))
    else:
        assigns = [
            n
            for n in module.body
            if isinstance(n, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == answer_var for t in n.targets)
        ]
        if not assigns:
            raise ValueError(f"TokenAnalyzer: the boolean program never assigns {answer_var!r}")
        names = sorted(
            (n for n in ast.walk(assigns[-1].value) if isinstance(n, ast.Name)),
            key=lambda n: (n.lineno, n.col_offset),
        )
        for k, node in enumerate(names, start=1):
            spans[f"operand {k}"] = _span(lines, node)
    query = _query_span(lines, answer_var)
    if query is not None:
        spans["query"] = query
    return spans


def _span(lines: list[str], node: ast.expr) -> Span:
    # ast columns count UTF-8 bytes; convert to character columns.
    raw = lines[node.lineno - 1].encode("utf-8")
    start = len(raw[: node.col_offset].decode("utf-8"))
    return Span(node.lineno, start, len(raw[: node.end_col_offset].decode("utf-8")))


def _query_span(lines: list[str], answer_var: str) -> Span | None:
    """The span of the queried name in a trailing `#q:` line naming `answer_var`, or None."""
    text = "\n".join(lines)
    if query_variable(text) != answer_var:
        return None
    last = max(i for i, line in enumerate(lines) if line.strip())
    col = lines[last].index(answer_var, lines[last].index("#"))
    return Span(last + 1, col, col + len(answer_var))
