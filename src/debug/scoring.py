"""Batched answer scoring: greedy answers and the teacher-forced log-probability of the expected answer.

`score_programs` renders each program into the prompt template, groups prompts of similar length into batches
and, per batch:

1. runs one forward over `prompt + expected answer` (right-padded, plain causal mask) that yields the
   log-probability of the expected answer (summed over its tokens, teacher-forced) and the KV cache;
2. reads greedy decoding off that same forward for as long as it follows the expected answer, and decodes
   further only the rows that diverge, one token per step, each row stopping as soon as its answer is
   complete: `<eos>`, a newline after some text (direct-answer prompts), or the token budget (the expected
   answer's length plus a small margin unless `max_new_tokens` is given). `debug.decoding` has the details.

Each program becomes a `Sample`. An answer the parser cannot read is recorded as wrong with its raw text; a
prompt longer than the model's context is refused before anything runs, with the sizes, never truncated.

With `chat_template=True` each rendered prompt becomes one user message in the tokenizer's own chat template
(`debug.chat`); the templated text is what is tokenized (without adding special tokens again), hashed,
cached and recorded, and the answer is scored as the start of the assistant's reply.

A served model (`openai:` id, `debug.serving.ServedModel`) takes the same path up to the decoding: the same
rendering, budgets, stop rule and cache, but the answers come from the server, `max_concurrency` requests at a
time. There the answer log-prob is None unless the server returns prompt log-probs (see `debug.serving`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from debug import serving
from debug.chat import (
    chat_request_text,
    check_chat_template_kwargs,
    has_chat_template,
    render_chat,
    require_chat_template,
)
from debug.decoding import decode_batch, teacher_forced_forward
from debug.parsing import parser_for
from debug.programs import Program, as_program, text_hash
from debug.prompts import render
from debug.serving import ServedModel

__all__ = [
    "Sample",
    "answer_continuation",
    "decode_batch",
    "score_programs",
    "teacher_forced",
    "teacher_forced_correct",
]

#: Tokens allowed beyond the expected answer's own length when no `max_new_tokens` is given.
ANSWER_MARGIN = 4
#: A prompt shorter than (1 - PAD_SLACK) of its batch's longest starts a new batch (bounds padding).
PAD_SLACK = 0.3
#: Budget for prompts that ask for reasoning before the answer ("Final answer: ..."), when none is given.
REASONING_BUDGET = 256


@dataclass
class Sample:
    """One program put to one model: what was asked, what came back, and how it was judged.

    Attributes:
        model_id: Model id as loaded.
        fingerprint: The model's fingerprint (config and weights hash, or hub revision).
        program: Program text.
        prompt: The rendered prompt the model saw.
        program_hash: `Program.hash` (text and answer).
        prompt_hash: Hash of the prompt text.
        true_answer: The expected answer.
        predicted_answer: The parsed answer, or None when nothing parsed.
        raw_output: The decoded continuation (special tokens removed).
        correct: Parsed and equal to the expected answer (same type).
        parsed: Whether the parser found an answer.
        answer_logprob: Sum of log-probabilities of the expected answer's tokens after the prompt; None when
            unavailable (a served model whose server returns no prompt log-probs).
        metadata: The generator's metadata.
        seq_len: Program length, when known.
        seq_id: Index of the program at its length, when known.
        cached: Whether the decoding came from the answer cache.
    """

    model_id: str
    fingerprint: str
    program: str
    prompt: str
    program_hash: str
    prompt_hash: str
    true_answer: Any
    predicted_answer: Any
    raw_output: str
    correct: bool
    parsed: bool
    answer_logprob: float | None
    metadata: dict[str, Any] = field(default_factory=dict)
    seq_len: int | None = None
    seq_id: int | None = None
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return asdict(self)


def answer_continuation(template: str, answer: Any) -> str:
    """The text whose log-probability is measured after the prompt.

    Directly after a raw program (`...#q:` then `5`); after a space when the template adds text after the code
    (`Answer: 5`), as a model would write it.
    """
    return str(answer) if template.rstrip().endswith("{code}") else f" {answer}"


def _is_reasoning(template: str) -> bool:
    lowered = template.lower()
    return "final answer" in lowered or "step by step" in lowered


def _same(predicted: Any, expected: Any) -> bool:
    if predicted is None:
        return False
    if isinstance(expected, bool | int) or isinstance(predicted, bool | int):
        return type(predicted) is type(expected) and predicted == expected
    return str(predicted).strip() == str(expected).strip()


def _parse(parser: Callable[[str], Any], raw: str) -> Any:
    try:
        return parser(raw)
    except Exception:  # noqa: BLE001 - an unreadable answer is a wrong answer, never a crash
        return None


@dataclass
class _Job:
    index: int
    program: Program
    prompt: str
    prompt_hash: str
    prompt_ids: list[int]
    answer_ids: list[int]
    limit: int
    settings: dict[str, Any]
    request: serving.Request | None = None


def _width(job: _Job) -> int:
    """Tokens in the job's row of the prefill: prompt and expected answer."""
    return len(job.prompt_ids) + len(job.answer_ids)


def _default_batch_size(device: Any, max_len: int) -> int:
    # On CPU, batches past a few thousand tokens measured slower (cache-bound), not faster.
    budget = 65_536 if getattr(device, "type", "cpu") == "cuda" else 2_048
    return max(1, min(256, budget // max(1, max_len)))


def score_programs(
    loaded: Any,
    programs: Sequence[Program | tuple[Any, ...]],
    template: str,
    *,
    parser: Callable[[str], Any] | None = None,
    batch_size: int | None = None,
    max_new_tokens: int | None = None,
    cache: Any = None,
    progress: bool = False,
    chat_template: bool = False,
    chat_template_kwargs: dict[str, Any] | None = None,
    max_concurrency: int | None = None,
) -> list[Sample]:
    """Score programs on a loaded model: batched greedy answers plus the expected answer's log-probability.

    Args:
        loaded: A `debug.models.LoadedModel`, or a `debug.serving.ServedModel` (an `openai:` id).
        programs: `Program`s or generator tuples; metadata keys `seq_len`/`seq_id` fill those fields.
        template: Prompt template with `{code}`.
        parser: Text -> answer; None picks `debug.parsing.parser_for(expected answer)` per program.
        batch_size: Most prompts per forward (prompts much shorter than a batch's longest go to the next
            batch); None sizes batches by prompt length (about 2k tokens on CPU, 64k on CUDA).
        max_new_tokens: Greedy budget per answer; None means the expected answer's token count plus
            `ANSWER_MARGIN` (or `REASONING_BUDGET` for step-by-step templates).
        cache: An `AnswerCache` to read from and append to, or None.
        progress: Show a tqdm bar.
        chat_template: Render each prompt as one user message through the tokenizer's chat template.
        chat_template_kwargs: Arguments of the template (e.g. `{"enable_thinking": False}`).
        max_concurrency: Requests in flight for a served model (default
            `debug.serving.DEFAULT_MAX_CONCURRENCY`); ignored for models in this process.

    Returns:
        One `Sample` per program, in input order.

    Raises:
        ValueError: A prompt (plus its answer budget) longer than the model's context, with the sizes.
        debug.chat.ChatTemplateError: `chat_template=True` on a model without one, or bad template arguments.
        debug.serving.ServerError: A served model's server failed (answers finished before it are cached).
    """
    kwargs = check_chat_template_kwargs(chat_template_kwargs)
    items = [as_program(p) for p in programs]
    if isinstance(loaded, ServedModel):
        return _score_served(
            loaded,
            items,
            template,
            parser,
            max_new_tokens,
            cache,
            progress,
            chat_template,
            kwargs,
            max_concurrency,
        )
    if chat_template:
        require_chat_template(loaded.tokenizer, loaded.model_id)
    jobs = _make_jobs(loaded, items, template, max_new_tokens, chat_template, kwargs)
    _check_context(loaded, jobs)
    results, todo = _cached(loaded, jobs, cache)
    bar = _progress_bar(loaded, jobs, todo) if progress else None
    stop_at_newline = not _is_reasoning(template)
    for batch in _batches(todo, batch_size, loaded.device):
        outputs = decode_batch(
            loaded.model,
            loaded.tokenizer,
            [j.prompt_ids for j in batch],
            [j.answer_ids for j in batch],
            [j.limit for j in batch],
            stop_at_newline=stop_at_newline,
        )
        entries = []
        for job, (raw, logprob) in zip(batch, outputs):
            results[job.index] = (raw, logprob, False)
            entries.append((job.prompt_hash, job.settings, {"raw_output": raw, "answer_logprob": logprob}))
        if cache is not None:
            cache.put_many(loaded.fingerprint, entries)
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    return [_sample(loaded, job, *results[job.index], parser) for job in jobs]


def _budget(answer_tokens: int, reasoning: bool, max_new_tokens: int | None) -> int:
    if max_new_tokens is not None:
        return max_new_tokens
    return REASONING_BUDGET if reasoning else answer_tokens + ANSWER_MARGIN


def _chat_settings(chat: bool, kwargs: dict[str, Any] | None) -> dict[str, Any]:
    # Only chat runs carry these keys, so the cache keys of plain prompts stay what they always were.
    return {"chat_template": True, "chat_template_kwargs": kwargs or {}} if chat else {}


def _cached(
    loaded: Any, jobs: list[_Job], cache: Any
) -> tuple[dict[int, tuple[str, float | None, bool]], list[_Job]]:
    """Answers the cache already holds (index -> raw, log-prob, cached=True), and the jobs still to decode."""
    results: dict[int, tuple[str, float | None, bool]] = {}
    todo: list[_Job] = []
    for job in jobs:
        hit = cache.get(loaded.fingerprint, job.prompt_hash, job.settings) if cache is not None else None
        if hit is not None:
            results[job.index] = (hit["raw_output"], hit["answer_logprob"], True)
        else:
            todo.append(job)
    return results, todo


def _progress_bar(loaded: Any, jobs: list[_Job], todo: list[_Job]) -> Any:
    from tqdm.auto import tqdm  # deferred: tqdm.auto probes for notebooks at import

    done = len(jobs) - len(todo)
    return tqdm(total=len(jobs), initial=done, desc=f"scoring {loaded.model_id}", unit="prog")


def _make_jobs(
    loaded: Any,
    items: list[Program],
    template: str,
    max_new_tokens: int | None,
    chat: bool = False,
    chat_kwargs: dict[str, Any] | None = None,
) -> list[_Job]:
    """Render and tokenize every prompt and expected answer; fix each one's token budget and cache key."""
    tokenizer = loaded.tokenizer
    reasoning = _is_reasoning(template)
    dtype = str(getattr(loaded.model, "dtype", ""))
    rendered = [render(template, program.text) for program in items]
    if chat:
        rendered = [render_chat(tokenizer, text, chat_kwargs) for text in rendered]
        # The reply starts fresh after the template's generation prompt: no separating space.
        answers = [str(program.answer) for program in items]
    else:
        answers = [answer_continuation(template, program.answer) for program in items]
    # One tokenizer call per list: the fast tokenizer encodes them in one go. A chat template writes its own
    # special tokens (BOS included), so the tokenizer must not add them a second time.
    all_prompt_ids = tokenizer(rendered, add_special_tokens=not chat)["input_ids"] if items else []
    all_answer_ids = tokenizer(answers, add_special_tokens=False)["input_ids"] if items else []
    jobs: list[_Job] = []
    for i, program in enumerate(items):
        answer_ids = all_answer_ids[i]
        limit = _budget(len(answer_ids), reasoning, max_new_tokens)
        settings = {
            "decoding": "greedy",
            "max_new_tokens": limit,
            "stop_at_newline": not reasoning,
            "answer": answers[i],
            "dtype": dtype,
            "version": 1,
            **_chat_settings(chat, chat_kwargs),
        }
        prompt = rendered[i]
        jobs.append(
            _Job(i, program, prompt, text_hash(prompt), all_prompt_ids[i], answer_ids, limit, settings)
        )
    return jobs


def _make_served_jobs(
    loaded: ServedModel,
    items: list[Program],
    template: str,
    max_new_tokens: int | None,
    chat: bool,
    chat_kwargs: dict[str, Any] | None,
) -> list[_Job]:
    """Requests for a served model: the in-process scorer's prompts, budgets and stop rule.

    Budgets count the answer's tokens with the model's tokenizer when it is available here, else its
    characters (never fewer than its tokens for the usual tokenizers). A chat prompt is rendered here for the
    record when the local tokenizer has the template; otherwise the message and template arguments stand in
    for it (`debug.chat.chat_request_text`).
    """
    tokenizer = loaded.tokenizer
    reasoning = _is_reasoning(template)
    endpoint = "chat" if chat else "completions"
    jobs: list[_Job] = []
    for i, program in enumerate(items):
        text = render(template, program.text)
        answer = str(program.answer) if chat else answer_continuation(template, program.answer)
        if chat:
            rendered = render_chat(tokenizer, text, chat_kwargs) if has_chat_template(tokenizer) else None
            prompt = rendered if rendered is not None else text
            hashed = rendered if rendered is not None else chat_request_text(text, chat_kwargs)
        else:
            prompt = hashed = text
        if tokenizer is not None:
            prompt_ids = list(tokenizer(prompt, add_special_tokens=not chat)["input_ids"])
            answer_ids = list(tokenizer(answer, add_special_tokens=False)["input_ids"])
            answer_size = len(answer_ids)
        else:
            prompt_ids, answer_ids, answer_size = [], [], len(answer)
        limit = _budget(answer_size, reasoning, max_new_tokens)
        settings = {
            "decoding": "greedy",
            "max_new_tokens": limit,
            "stop_at_newline": not reasoning,
            "answer": answer,
            "endpoint": endpoint,
            "budget": "tokens" if tokenizer is not None else "characters",
            "version": 1,
            **_chat_settings(chat, chat_kwargs),
        }
        request = serving.Request(
            prompt=text if chat else prompt,
            max_tokens=limit,
            stop_at_newline=not reasoning,
            answer=None if chat else answer,
            chat=chat,
            chat_template_kwargs=chat_kwargs,
        )
        jobs.append(
            _Job(i, program, prompt, text_hash(hashed), prompt_ids, answer_ids, limit, settings, request)
        )
    return jobs


def _score_served(
    loaded: ServedModel,
    items: list[Program],
    template: str,
    parser: Any,
    max_new_tokens: int | None,
    cache: Any,
    progress: bool,
    chat: bool,
    chat_kwargs: dict[str, Any] | None,
    max_concurrency: int | None,
) -> list[Sample]:
    """`score_programs` for a served model: cache first, then the server, answers cached as they arrive."""
    jobs = _make_served_jobs(loaded, items, template, max_new_tokens, chat, chat_kwargs)
    if loaded.tokenizer is not None:
        _check_context(loaded, jobs)
    results, todo = _cached(loaded, jobs, cache)
    bar = _progress_bar(loaded, jobs, todo) if progress else None
    by_index = {job.index: job for job in todo}

    def finished(index: int, raw: str, logprob: float | None) -> None:
        job = by_index[index]
        results[index] = (raw, logprob, False)
        if cache is not None:
            cache.put(
                loaded.fingerprint,
                job.prompt_hash,
                job.settings,
                {"raw_output": raw, "answer_logprob": logprob},
            )
        if bar is not None:
            bar.update(1)

    try:
        serving.serve_many(
            loaded,
            [(job.index, job.request) for job in todo],
            max_concurrency=max_concurrency,
            on_done=finished,
        )
    finally:
        if bar is not None:
            bar.close()
    return [_sample(loaded, job, *results[job.index], parser) for job in jobs]


def _batches(todo: list[_Job], batch_size: int | None, device: Any) -> Iterator[list[_Job]]:
    """Longest first, so similar lengths share a batch; a row much shorter than the batch's longest starts the
    next batch, which keeps padding under PAD_SLACK."""
    todo = sorted(todo, key=_width, reverse=True)
    start = 0
    while start < len(todo):
        longest = _width(todo[start])
        size = batch_size or _default_batch_size(device, longest + todo[start].limit)
        end = start + 1
        while end < len(todo) and end - start < size and _width(todo[end]) >= longest * (1 - PAD_SLACK):
            end += 1
        yield todo[start:end]
        start = end


def _sample(loaded: Any, job: _Job, raw: str, logprob: float | None, cached: bool, parser: Any) -> Sample:
    program = job.program
    value = _parse(parser or parser_for(program.answer), raw)
    return Sample(
        model_id=loaded.model_id,
        fingerprint=loaded.fingerprint,
        program=program.text,
        prompt=job.prompt,
        program_hash=program.hash,
        prompt_hash=job.prompt_hash,
        true_answer=program.answer,
        predicted_answer=value,
        raw_output=raw,
        correct=_same(value, program.answer),
        parsed=value is not None,
        answer_logprob=logprob,
        metadata=dict(program.metadata),
        seq_len=program.metadata.get("seq_len"),
        seq_id=program.metadata.get("seq_id"),
        cached=cached,
    )


def _check_context(loaded: Any, jobs: list[_Job]) -> None:
    limit = loaded.context_length
    if limit is None:
        return
    for job in jobs:
        needed = len(job.prompt_ids) + max(job.limit, len(job.answer_ids) - 1)
        if needed > limit:
            raise ValueError(
                f"prompt {job.index} is {len(job.prompt_ids)} tokens and needs up to {job.limit} more for "
                f"the answer ({needed} in all), but {loaded.model_id} takes at most {limit} tokens; use "
                "shorter programs (smaller seq_len), a shorter template or a model with a longer context "
                "(prompts are never truncated)"
            )


def teacher_forced_correct(model: Any, tokenizer: Any, programs: Sequence[Program]) -> list[bool]:
    """Whether greedy decoding starts with each program's answer, read off one teacher-forced forward.

    The prompt is the program text itself. Greedy decoding reproduces the answer exactly when the argmax at
    every answer position is the answer token, so this is a greedy decode's correctness on the answer (what
    follows it is not judged), at the cost of one forward per `TEACHER_FORCED_ROWS` programs and no decoding
    loop (see `teacher_forced`). Used where only right/wrong matters: training evaluation and robust-seed
    search.
    """
    return [pred == answer for pred, answer in teacher_forced(model, tokenizer, programs)]


#: Rows per teacher-forced forward (programs sorted by length first, so a chunk pads little).
TEACHER_FORCED_ROWS = 64


def teacher_forced(
    model: Any, tokenizer: Any, programs: Sequence[Program]
) -> list[tuple[list[int], list[int]]]:
    """(argmax ids at the answer positions, answer ids) per program, from teacher-forced forwards.

    The first argmax id is the model's greedy first answer token whatever the answer; the later ones are
    conditioned on the true answer's earlier tokens (see `teacher_forced_correct`). Programs are sorted by
    length into forwards of `TEACHER_FORCED_ROWS` rows, each `debug.decoding.teacher_forced_forward` (padded
    on the right, as `decode_batch`'s prefill is).
    """
    import torch

    rows = []
    for program in programs:
        prompt = list(tokenizer(program.text)["input_ids"])
        whole = list(tokenizer(program.text + str(program.answer))["input_ids"])
        # A BPE tokenizer may merge the answer into the prompt's last token; then score the answer alone.
        answer = whole[len(prompt) :] if whole[: len(prompt)] == prompt else None
        rows.append(
            (prompt, answer or list(tokenizer(str(program.answer), add_special_tokens=False)["input_ids"]))
        )
    out: list[tuple[list[int], list[int]]] = [([], [])] * len(programs)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]) + len(rows[i][1]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    with torch.no_grad():
        for begin in range(0, len(order), TEACHER_FORCED_ROWS):
            chunk = order[begin : begin + TEACHER_FORCED_ROWS]
            prompts, answers = [rows[i][0] for i in chunk], [rows[i][1] for i in chunk]
            _, logits, offset = teacher_forced_forward(model, prompts, answers, pad)
            predicted = logits.argmax(-1).cpu()
            for row, (i, prompt, answer) in enumerate(zip(chunk, prompts, answers)):
                start = len(prompt) - 1 - offset
                out[i] = (predicted[row, start : start + len(answer)].tolist(), answer)
    return out
