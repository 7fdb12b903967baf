"""Token targeting: which token positions of a prompt carry each step of a binding chain.

`TokenAnalyzer(tokenizer).analyze(program)` labels, in the tokenized prompt:

- "ref depth k": the first token of the right-hand side of the chain's k-th line, counted from the root
  (k=1 is the line holding the root constant, k=hops the line assigning the queried variable);
- "query": the token holding the queried variable's name in the trailing `#q:` line;
- "final": the last token, where the model predicts the answer.

Positions come from the tokenizer's offset mapping, so they are right for char-level tokenizers (one token per
character) and for BPE tokenizers that merge `=5` or `#q:` into one token alike: a label points at the token
whose character span covers the labelled character.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from debug.chain import Span, line_offsets, trace_chain
from debug.programs import Program, as_program
from debug.prompts import code_offset, render


@dataclass(frozen=True)
class TokenTargets:
    """Labelled token positions of one prompt.

    Attributes:
        positions: Label -> token index ("ref depth 1", ..., "query", "final").
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
    """Maps binding programs to labelled token positions under one tokenizer.

    Args:
        tokenizer: A Hugging Face fast tokenizer (it must return an offset mapping).
        add_special_tokens: Tokenize as the model is run (BOS and the like); offsets of special tokens are
            ignored when matching characters.
    """

    def __init__(self, tokenizer: Any, *, add_special_tokens: bool = True) -> None:
        self.tokenizer = tokenizer
        self.add_special_tokens = add_special_tokens

    def analyze(self, program: Any, template: str = "{code}") -> TokenTargets:
        """Label the chain, query and final token positions of `program` shown in `template`.

        Args:
            program: A `Program`, tuple or program text whose queried variable is computed by a straight-line
                chain (binding programs, or the seed's `x = 5\\ny = x * 2\\n#y:`).
            template: The prompt template (`{code}` marks where the program goes).

        Raises:
            ValueError: When the program has no traceable chain or the tokenizer gives no offsets.
        """
        if isinstance(program, str):
            program = Program(program, None, {})
        program = as_program(program)
        chain = trace_chain(program.text, program.metadata.get("answer_var"))
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

        positions: dict[str, int] = {}
        for depth, span in enumerate(reversed(chain.rhs), start=1):
            positions[f"ref depth {depth}"] = token_at(span)
        if chain.query is not None:
            positions["query"] = token_at(chain.query)
        positions["final"] = len(ids) - 1
        labels: dict[int, list[str]] = {}
        for label, index in positions.items():
            labels.setdefault(index, []).append(label)
        tokens = self.tokenizer.convert_ids_to_tokens(ids)
        return TokenTargets(positions, list(tokens), ids, offsets, prompt, labels)
