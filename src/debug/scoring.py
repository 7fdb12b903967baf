"""Batched answer scoring: greedy answers and the teacher-forced log-probability of the expected answer.

`score_programs` renders each program into the prompt template, groups prompts of similar length into batches
(left padding, position ids counted from each row's first real token) and, per batch:

1. runs one forward over `prompt + expected answer` that yields both the log-probability of the expected
   answer (summed over its tokens, teacher-forced) and the KV cache of the prompt;
2. decodes greedily from that cache, one token per step for the whole batch, and stops each row as soon as its
   answer is complete: `<eos>`, a newline after some text (direct-answer prompts), or the token budget (the
   expected answer's length plus a small margin unless `max_new_tokens` is given).

Each program becomes a `Sample`. An answer the parser cannot read is recorded as wrong with its raw text; a
prompt longer than the model's context is refused before anything runs, with the sizes, never truncated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from debug.programs import Program, as_program, text_hash

#: Tokens allowed beyond the expected answer's own length when no `max_new_tokens` is given.
ANSWER_MARGIN = 4
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
        answer_logprob: Sum of log-probabilities of the expected answer's tokens after the prompt.
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


def render_prompt(template: str, code: str) -> str:
    """Put program text into a template at `{code}` (plain substitution; other braces stay)."""
    if "{code}" not in template:
        raise ValueError("a prompt template must contain {code} where the program text goes")
    return template.replace("{code}", code, 1)


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
    prompt_ids: list[int]
    answer_ids: list[int]
    limit: int
    settings: dict[str, Any]


def _default_batch_size(device: Any, max_len: int) -> int:
    budget = 65_536 if getattr(device, "type", "cpu") == "cuda" else 8_192
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
) -> list[Sample]:
    """Score programs on a loaded model: batched greedy answers plus the expected answer's log-probability.

    Args:
        loaded: A `debug.models.LoadedModel`.
        programs: `Program`s or generator tuples; metadata keys `seq_len`/`seq_id` fill those fields.
        template: Prompt template with `{code}`.
        parser: Text -> answer; None picks `debug.parsing.parser_for(expected answer)` per program.
        batch_size: Prompts per forward; None sizes batches by prompt length (about 8k tokens on CPU).
        max_new_tokens: Greedy budget per answer; None means the expected answer's token count plus
            `ANSWER_MARGIN` (or `REASONING_BUDGET` for step-by-step templates).
        cache: An `AnswerCache` to read from and append to, or None.
        progress: Show a tqdm bar.

    Returns:
        One `Sample` per program, in input order.

    Raises:
        ValueError: A prompt (plus its answer budget) longer than the model's context, with the sizes.
    """
    from debug.parsing import parser_for

    tokenizer, model = loaded.tokenizer, loaded.model
    items = [as_program(p) for p in programs]
    reasoning = _is_reasoning(template)
    dtype = str(getattr(model, "dtype", ""))
    jobs: list[_Job] = []
    for i, program in enumerate(items):
        prompt = render_prompt(template, program.text)
        prompt_ids = tokenizer(prompt)["input_ids"]
        answer_ids = tokenizer(answer_continuation(template, program.answer), add_special_tokens=False)[
            "input_ids"
        ]
        if max_new_tokens is not None:
            limit = max_new_tokens
        else:
            limit = REASONING_BUDGET if reasoning else len(answer_ids) + ANSWER_MARGIN
        settings = {
            "decoding": "greedy",
            "max_new_tokens": limit,
            "stop_at_newline": not reasoning,
            "answer": answer_continuation(template, program.answer),
            "dtype": dtype,
            "version": 1,
        }
        jobs.append(_Job(i, program, prompt, prompt_ids, answer_ids, limit, settings))
    _check_context(loaded, jobs)

    results: dict[int, tuple[str, float, bool]] = {}
    todo: list[_Job] = []
    for job in jobs:
        hit = (
            cache.get(loaded.fingerprint, text_hash(job.prompt), job.settings) if cache is not None else None
        )
        if hit is not None:
            results[job.index] = (hit["raw_output"], hit["answer_logprob"], True)
        else:
            todo.append(job)

    todo.sort(key=lambda j: len(j.prompt_ids), reverse=True)  # similar lengths share a batch: little padding
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=len(jobs), initial=len(jobs) - len(todo), desc=f"scoring {loaded.model_id}", unit="prog"
        )
    start = 0
    while start < len(todo):
        longest = len(todo[start].prompt_ids) + len(todo[start].answer_ids) + todo[start].limit
        size = batch_size or _default_batch_size(loaded.device, longest)
        batch = todo[start : start + size]
        start += size
        outputs = decode_batch(
            model,
            tokenizer,
            [j.prompt_ids for j in batch],
            [j.answer_ids for j in batch],
            [j.limit for j in batch],
            stop_at_newline=not reasoning,
        )
        entries = []
        for job, (raw, logprob) in zip(batch, outputs):
            results[job.index] = (raw, logprob, False)
            entries.append(
                (text_hash(job.prompt), job.settings, {"raw_output": raw, "answer_logprob": logprob})
            )
        if cache is not None:
            cache.put_many(loaded.fingerprint, entries)
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()

    samples = []
    for job in jobs:
        raw, logprob, cached = results[job.index]
        program = job.program
        value = _parse(parser or parser_for(program.answer), raw)
        samples.append(
            Sample(
                model_id=loaded.model_id,
                fingerprint=loaded.fingerprint,
                program=program.text,
                prompt=job.prompt,
                program_hash=program.hash,
                prompt_hash=text_hash(job.prompt),
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
        )
    return samples


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


def _keep_kwargs(model: Any, n: int) -> dict[str, int]:
    """`logits_to_keep=n` where the model's forward takes it (saves a [rows, length, vocab] tensor)."""
    import inspect

    accepts = "logits_to_keep" in inspect.signature(model.forward).parameters
    return {"logits_to_keep": n} if accepts else {}


def _cache_kwargs(model: Any, cache: Any) -> dict[str, Any]:
    """The KV cache under the name this transformers version expects (`cache`, formerly `past_key_values`)."""
    import inspect

    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    return {name: cache}


def _crop(cache: Any, n: int) -> bool:
    """Drop the last `n` positions from a KV cache (negative argument: "remove n"); False if it can't."""
    try:
        cache.crop(-n)
        return True
    except (AttributeError, NotImplementedError, ValueError, TypeError):
        return False


def _out_cache(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def decode_batch(
    model: Any,
    tokenizer: Any,
    prompt_ids: list[list[int]],
    answer_ids: list[list[int]],
    limits: list[int],
    *,
    stop_at_newline: bool = True,
) -> list[tuple[str, float]]:
    """Greedy continuations and expected-answer log-probabilities for one batch (one prefill for both).

    The input is `[left-padded prompt | expected answer minus its last token, right-padded]`. Its logits at
    the last prompt position and over the answer give the teacher-forced log-probability; the KV cache is then
    cropped back to the prompt and greedy decoding continues from it, each row stopping on its own.

    Returns:
        (raw output text, answer log-probability) per row.
    """
    import torch

    device = model.get_input_embeddings().weight.device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    eos = tokenizer.eos_token_id
    rows = len(prompt_ids)
    width = max(len(p) for p in prompt_ids)
    span = max(1, max(len(a) for a in answer_ids))
    ids = torch.full((rows, width + span - 1), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, (p, a) in enumerate(zip(prompt_ids, answer_ids)):
        ids[r, width - len(p) : width] = torch.tensor(p)
        mask[r, width - len(p) : width] = 1
        tail = a[:-1]
        if tail:
            ids[r, width : width + len(tail)] = torch.tensor(tail)
            mask[r, width : width + len(tail)] = 1
    ids, mask = ids.to(device), mask.to(device)
    # Positions count real tokens only, so a left-padded row sees the same positions as it would alone.
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        keep = _keep_kwargs(model, span)
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **keep)
        logits = out.logits[:, -span:]
        logprobs = torch.log_softmax(logits.float(), dim=-1)  # [rows, span, vocab] at width-1 ...
        answer_lp = []
        for r, a in enumerate(answer_ids):
            answer_lp.append(float(sum(logprobs[r, j, tok] for j, tok in enumerate(a))) if a else 0.0)
        next_logits = logits[:, 0]
        cache = _out_cache(out)
        if span > 1 and not _crop(cache, span - 1):  # a cache that cannot be cut back: prefill again
            cache = _out_cache(
                model(
                    input_ids=ids[:, :width],
                    attention_mask=mask[:, :width],
                    position_ids=positions[:, :width],
                    use_cache=True,
                    **_keep_kwargs(model, 1),
                )
            )
        mask = mask[:, :width]
        last_pos = positions[:, width - 1]
        generated: list[list[int]] = [[] for _ in range(rows)]
        done = [False] * rows
        spoke = [False] * rows  # the row has written something other than whitespace
        for _step in range(max(limits)):
            tokens = next_logits.argmax(-1)
            for r in range(rows):
                if done[r]:
                    continue
                tok = int(tokens[r])
                if eos is not None and tok == eos:
                    done[r] = True
                    continue
                generated[r].append(tok)
                piece = tokenizer.decode([tok], skip_special_tokens=True)
                # A newline ends a direct answer once some text came before it (a leading newline does not).
                ended = stop_at_newline and "\n" in piece and (spoke[r] or bool(piece.split("\n")[0].strip()))
                spoke[r] = spoke[r] or bool(piece.strip())
                if ended or len(generated[r]) >= limits[r]:
                    done[r] = True
            if all(done):
                break
            tokens = torch.where(torch.tensor(done, device=device), torch.full_like(tokens, pad), tokens)
            mask = torch.cat([mask, torch.ones((rows, 1), dtype=mask.dtype, device=device)], dim=-1)
            last_pos = last_pos + 1
            out = model(
                input_ids=tokens[:, None],
                attention_mask=mask,
                position_ids=last_pos[:, None],
                use_cache=True,
                **_cache_kwargs(model, cache),
            )
            cache = _out_cache(out)
            next_logits = out.logits[:, -1]
    texts = [tokenizer.decode(g, skip_special_tokens=True) for g in generated]
    return list(zip(texts, answer_lp))
