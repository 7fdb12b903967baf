"""The paired inputs of a patching sweep: original and counterfactual token ids, the answer token, targets.

Everything here checks the pair before any forward pass, so bad input fails in one line that names the fix:
different token lengths, equal answers, answers that cannot be told apart at the first token, a prompt longer
than the model's context.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from debug.models import context_length
from debug.programs import Program
from debug.token_analyzer import TokenAnalyzer

if TYPE_CHECKING:
    import torch


class CausalTracingError(ValueError):
    """A sweep cannot run on this input; the message says how to fix it."""


def check_context(loaded: Any, n_tokens: int, what: str = "the prompt") -> None:
    """Refuse a sequence longer than the model's context, before any forward runs.

    The limit is `debug.models.context_length` of the model's config; a config that declares none is not
    checked. Sequences are never truncated: a cut program would be a different program.

    Args:
        loaded: A `LoadedModel` (anything with `.model.config`; `.model_id` names it in the message).
        n_tokens: Tokens the forward would take.
        what: What those tokens are, for the message (e.g. "the original program").

    Raises:
        CausalTracingError: Naming both sizes and the fix.
    """
    limit = context_length(getattr(getattr(loaded, "model", None), "config", None))
    if limit is not None and n_tokens > limit:
        name = getattr(loaded, "model_id", "") or "the model"
        raise CausalTracingError(
            f"{what} is {n_tokens} tokens but {name} takes at most {limit}; use shorter programs "
            "(smaller seq_len) or a model with a longer context (programs are never truncated)"
        )


@dataclass(frozen=True)
class AnswerTokens:
    """The token a patched run is scored on.

    Attributes:
        original_id: Token id of the original answer at the scored position.
        counterfactual_id: Token id of the counterfactual answer there.
        original_text: The full original answer, as text.
        counterfactual_text: The full counterfactual answer, as text.
        prefix_ids: Answer tokens shared by both answers, appended to both inputs (teacher forcing) so the
            scored position is the first token where the answers differ; empty for single-token answers.
        source: "program" when the answers came from the programs, "model" when from the model's own top-1.
        note: A sentence for the report on how the answer token was chosen.
    """

    original_id: int
    counterfactual_id: int
    original_text: str
    counterfactual_text: str
    prefix_ids: list[int] = field(default_factory=list)
    source: str = "program"
    note: str = ""


def as_answer_text(answer: Any) -> str:
    """The text a model is expected to continue with for `answer` (`str()` of ints, bools and strings)."""
    return str(answer)


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of `text` as the model sees it (with the tokenizer's own special tokens, if it adds any)."""
    return list(tokenizer(text)["input_ids"])


def token_label(tokenizer: Any, token_id: int) -> str:
    """A readable label of one token: decoded text, with newlines, tabs and leading spaces made visible."""
    text = tokenizer.decode([int(token_id)])
    return text.replace("\n", "\\n").replace("\t", "\\t").replace(" ", "\u2423") or f"<{token_id}>"


def continuation_ids(tokenizer: Any, prompt_ids: list[int], prompt: str, answer: str) -> list[int]:
    """The tokens that follow `prompt` when `answer` is appended to it.

    Encoding `prompt + answer` and cutting off the prompt's tokens keeps tokenizers that merge across the
    boundary honest; when the prompt's tokens are not a prefix of the whole, the answer is encoded alone.
    """
    whole = encode(tokenizer, prompt + answer)
    if whole[: len(prompt_ids)] == prompt_ids and len(whole) > len(prompt_ids):
        return whole[len(prompt_ids) :]
    return list(tokenizer(answer, add_special_tokens=False)["input_ids"])


def check_same_length(tokenizer: Any, original: str, counterfactual: str) -> tuple[list[int], list[int]]:
    """Encode both programs and insist they have the same number of tokens.

    Raises:
        CausalTracingError: Naming the first differing token and how to fix the counterfactual.
    """
    orig_ids, cf_ids = encode(tokenizer, original), encode(tokenizer, counterfactual)
    if len(orig_ids) == len(cf_ids):
        return orig_ids, cf_ids
    first = next(
        (i for i, (a, b) in enumerate(zip(orig_ids, cf_ids)) if a != b), min(len(orig_ids), len(cf_ids))
    )
    shown_o = token_label(tokenizer, orig_ids[first]) if first < len(orig_ids) else "<end>"
    shown_c = token_label(tokenizer, cf_ids[first]) if first < len(cf_ids) else "<end>"
    raise CausalTracingError(
        f"original has {len(orig_ids)} tokens and counterfactual {len(cf_ids)}; they first differ at token "
        f"{first} ('{shown_o}' vs '{shown_c}'); patching needs equal lengths: change only values that "
        "tokenize to the same number of tokens (e.g. one digit for one digit), as "
        "create_counterfactual_program(program, seed, tokenizer=...) does"
    )


def answer_tokens(
    tokenizer: Any, prompt: str, prompt_ids: list[int], original_answer: Any, counterfactual_answer: Any
) -> AnswerTokens:
    """Choose the scored token: the first token where the two answers' continuations differ.

    Raises:
        CausalTracingError: When the answers are equal, or one continues the other (no differing token).
    """
    orig_text, cf_text = as_answer_text(original_answer), as_answer_text(counterfactual_answer)
    if orig_text == cf_text:
        raise CausalTracingError(
            f"original and counterfactual have the same answer {orig_text!r}, so no effect can be measured; "
            "change the value the answer depends on (the chain's root constant)"
        )
    orig_cont = continuation_ids(tokenizer, prompt_ids, prompt, orig_text)
    cf_cont = continuation_ids(tokenizer, prompt_ids, prompt, cf_text)
    first = next((i for i, (a, b) in enumerate(zip(orig_cont, cf_cont)) if a != b), None)
    if first is None:
        raise CausalTracingError(
            f"answers {orig_text!r} and {cf_text!r} share their tokens up to the shorter one's end, so no "
            "single token tells them apart; choose a counterfactual value whose first digit differs"
        )
    multi = max(len(orig_cont), len(cf_cont)) > 1
    if not multi:
        note = "single-token answers: scored on the answer token"
    elif first == 0:
        note = "multi-token answers: scored on the first differing token, their first token"
    else:
        note = (
            f"multi-token answers: scored on the first differing token (answer token {first}), after "
            f"teacher-forcing the {first} shared token(s) before it"
        )
    return AnswerTokens(
        original_id=int(orig_cont[first]),
        counterfactual_id=int(cf_cont[first]),
        original_text=orig_text,
        counterfactual_text=cf_text,
        prefix_ids=[int(t) for t in orig_cont[:first]],
        source="program",
        note=note,
    )


@dataclass(frozen=True)
class PairedInputs:
    """Original and counterfactual inputs of equal length, plus what the sweep reports about them.

    Attributes:
        original_ids: `[seq]` token ids of the original program (plus any shared answer prefix).
        counterfactual_ids: `[seq]` token ids of the counterfactual.
        tokens: One readable label per position.
        answer: The scored answer tokens.
        targets: TokenAnalyzer positions ("ref depth 1", ..., "query", "final"); empty when the
            answer is not computed by a chain of assignments.
        target_note: Why targets are empty, when they are.
    """

    original_ids: torch.Tensor
    counterfactual_ids: torch.Tensor
    tokens: list[str]
    answer: AnswerTokens | None
    targets: dict[str, int]
    target_note: str = ""


def as_text_and_answer(program: Program | str | tuple[Any, ...]) -> tuple[str, Any, Program | None]:
    """Split a program argument into (text, answer or None, Program or None)."""
    if isinstance(program, Program):
        return program.text, program.answer, program
    if isinstance(program, tuple) and len(program) in (2, 3):
        prog = Program(str(program[0]), program[1], dict(program[2]) if len(program) == 3 else {})
        return prog.text, prog.answer, prog
    if isinstance(program, str):
        return program, None, None
    raise CausalTracingError(
        f"a program must be text, a Program or (text, answer); got {type(program).__name__}"
    )


def token_targets(tokenizer: Any, program: Program | str, input_ids: list[int]) -> tuple[dict[str, int], str]:
    """TokenAnalyzer positions of a program whose answer comes from a chain of assignments, or ({}, why).

    Programs without a traceable chain (loops, arbitrary text) simply get no targets.
    """
    try:
        analysis = TokenAnalyzer(tokenizer).analyze(program)
    except Exception as exc:  # noqa: BLE001 - targets are an annotation; the sweep itself stays valid
        return {}, f"no ref-depth targets: {type(exc).__name__}: {exc}"
    if list(analysis.input_ids) != input_ids[: len(analysis.input_ids)]:
        return {}, "no ref-depth targets: the token analyzer tokenized the program differently"
    return {k: int(v) for k, v in analysis.positions.items()}, ""


def prepare_inputs(
    tokenizer: Any, original: Program | str | tuple[Any, ...], counterfactual: Program | str | tuple[Any, ...]
) -> PairedInputs:
    """Encode and check a pair. Text without an answer leaves `answer` None (the sweep asks the model).

    Raises:
        CausalTracingError: Different token lengths, equal answers, or unreadable program arguments.
    """
    orig_text, orig_answer, orig_prog = as_text_and_answer(original)
    cf_text, cf_answer, _ = as_text_and_answer(counterfactual)
    orig_ids, cf_ids = check_same_length(tokenizer, orig_text, cf_text)
    answer = None
    if orig_answer is not None and cf_answer is not None:
        answer = answer_tokens(tokenizer, orig_text, orig_ids, orig_answer, cf_answer)
        orig_ids = orig_ids + answer.prefix_ids
        cf_ids = cf_ids + answer.prefix_ids
    targets, target_note = token_targets(tokenizer, orig_prog or orig_text, orig_ids)
    if targets:
        # "final" is where the scored token is read, after any teacher-forced answer prefix.
        targets["final"] = len(orig_ids) - 1
    import torch  # deferred: torch costs seconds to import, and the pair checks above need none of it

    return PairedInputs(
        original_ids=torch.tensor(orig_ids, dtype=torch.long),
        counterfactual_ids=torch.tensor(cf_ids, dtype=torch.long),
        tokens=[token_label(tokenizer, t) for t in orig_ids],
        answer=answer,
        targets=targets,
        target_note=target_note,
    )


def as_pair(item: Any) -> tuple[Program, Program]:
    """A seed program dict (or a 2-tuple of programs) as (original, counterfactual) `Program`s.

    Dict keys: `original`, `counterfactual` (texts), `expected_original`, `expected_counterfactual`
    (answers), optional `variable_chain` (query variable first, as the seed writes it) and `metadata`.

    Raises:
        CausalTracingError: When a key is missing, naming it.
    """
    if isinstance(item, tuple) and len(item) == 2:
        return _program(item[0]), _program(item[1])
    if not isinstance(item, dict):
        raise CausalTracingError(
            "a program pair must be a dict with original/counterfactual/expected_original/"
            f"expected_counterfactual or an (original, counterfactual) tuple; got {type(item).__name__}"
        )
    missing = [
        k
        for k in ("original", "counterfactual", "expected_original", "expected_counterfactual")
        if k not in item
    ]
    if missing:
        raise CausalTracingError(f"program dict lacks {', '.join(missing)}; add the key(s)")
    metadata = dict(item.get("metadata") or {})
    chain = item.get("variable_chain")
    if chain:
        metadata.setdefault("chain", list(chain))
        metadata.setdefault("answer_var", chain[0])
    cf_meta = dict(metadata, original_answer=item["expected_original"])
    return (
        Program(str(item["original"]), item["expected_original"], metadata),
        Program(str(item["counterfactual"]), item["expected_counterfactual"], cf_meta),
    )


def _program(value: Any) -> Program:
    text, answer, program = as_text_and_answer(value)
    if program is None:
        raise CausalTracingError(
            "a program pair tuple needs Programs or (text, answer) tuples, not bare text"
        )
    return program
