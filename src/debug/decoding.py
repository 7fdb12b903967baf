"""Greedy decoding that reads as much of the answer as it can from one teacher-forced forward.

`decode_batch` scores a batch of prompts in one prefill over `prompt + expected answer` and decodes greedily:

- Rows are right-padded, so a plain causal mask is all the prefill needs (no padding mask, the default
  positions) and every row sees exactly what it would see alone.
- The logits at the last prompt position and over the answer give the teacher-forced log-probability of the
  expected answer. They also give greedy decoding for free for as long as it follows the expected answer: if
  greedy picks answer token 0, its next pick is the argmax at answer token 0's position, and so on. The greedy
  continuation is therefore the expected answer up to the first token where the argmax differs, plus that
  argmax (speculative decoding with the expected answer as the draft). Rows that stop there (`<eos>`, newline,
  budget) cost nothing more.
- Only the other rows decode further, from the prefill's KV cache, with the rejected answer positions masked
  out; finished rows leave the batch, and each step keeps one position of logits.

The result equals plain one-at-a-time greedy decoding (`model.generate(do_sample=False)` with the same stop
rules); the tests check it.
"""

from __future__ import annotations

import inspect
from typing import Any


def _accepts(model: Any, name: str) -> bool:
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


class _Stops:
    """Per-row stop rules: `<eos>` (not kept), a newline after some text (direct answers), the budget."""

    def __init__(self, tokenizer: Any, limits: list[int], stop_at_newline: bool) -> None:
        self.tokenizer, self.limits, self.newline = tokenizer, limits, stop_at_newline
        self.eos = tokenizer.eos_token_id
        self.generated: list[list[int]] = [[] for _ in limits]
        self.spoke = [False] * len(limits)  # the row has written something other than whitespace
        self.done = [limit <= 0 for limit in limits]
        self._pieces: dict[int, str] = {}

    def _piece(self, tok: int) -> str:
        piece = self._pieces.get(tok)
        if piece is None:
            piece = self._pieces[tok] = self.tokenizer.decode([tok], skip_special_tokens=True)
        return piece

    def push(self, row: int, tok: int) -> bool:
        """Append a greedy token to `row`; True once the row is finished."""
        if self.eos is not None and tok == self.eos:
            self.done[row] = True
            return True
        self.generated[row].append(tok)
        piece = self._piece(tok)
        # A newline ends a direct answer once some text came before it (a leading newline does not).
        ended = self.newline and "\n" in piece and (self.spoke[row] or bool(piece.split("\n")[0].strip()))
        self.spoke[row] = self.spoke[row] or bool(piece.strip())
        if ended or len(self.generated[row]) >= self.limits[row]:
            self.done[row] = True
        return self.done[row]

    def texts(self) -> list[str]:
        return [self.tokenizer.decode(g, skip_special_tokens=True) for g in self.generated]


def teacher_forced_forward(
    model: Any, prompt_ids: list[list[int]], answer_ids: list[list[int]], pad: int, **kwargs: Any
) -> tuple[Any, Any, int]:
    """One forward of each row's prompt followed by its answer, padded on the right.

    Under causal attention no position sees the padding after it, so rows of any lengths share the forward
    with no attention mask or position ids. Logits are computed only from the shortest prompt's last token on
    (`logits_to_keep`, where the model takes it: a hub vocabulary is large). The caller sets the grad mode.

    Returns:
        (the model's output, the kept logits `[rows, keep, vocab]`, the position the window starts at).
    """
    import torch

    width = max(len(p) + len(a) for p, a in zip(prompt_ids, answer_ids))
    ids = torch.full((len(prompt_ids), width), pad, dtype=torch.long)
    for r, (p, a) in enumerate(zip(prompt_ids, answer_ids)):
        ids[r, : len(p) + len(a)] = torch.tensor(p + a, dtype=torch.long)
    keep = width - min(len(p) for p in prompt_ids) + 1
    if _accepts(model, "logits_to_keep"):
        kwargs["logits_to_keep"] = keep
    out = model(input_ids=ids.to(model.get_input_embeddings().weight.device), **kwargs)
    return out, out.logits[:, -keep:], width - keep


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

    Args:
        model: A transformers causal LM.
        tokenizer: Its tokenizer (`eos_token_id`, `pad_token_id`, `decode`).
        prompt_ids: Token ids of each prompt.
        answer_ids: Token ids of each expected answer (the continuation scored after the prompt).
        limits: Greedy budget per row (tokens, `<eos>` not counted).
        stop_at_newline: Stop a row at a newline that follows some text.

    Returns:
        (raw output text, answer log-probability) per row.
    """
    import torch

    device = model.get_input_embeddings().weight.device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    rows = len(prompt_ids)
    plens = [len(p) for p in prompt_ids]
    alens = [len(a) for a in answer_ids]
    span = max(alens) + 1
    stops = _Stops(tokenizer, limits, stop_at_newline)
    with torch.inference_mode():
        out, logits, offset = teacher_forced_forward(model, prompt_ids, answer_ids, pad, use_cache=True)
        keep = logits.shape[1]
        width = offset + keep
        # Row r's answer token j is predicted at position plens[r] - 1 + j; j = alens[r]: what follows it.
        where = torch.tensor([[p - 1 + j - offset for j in range(span)] for p in plens], dtype=torch.long)
        where = where.clamp(max=keep - 1).to(logits.device)
        picked = logits.gather(1, where[:, :, None].expand(-1, -1, logits.shape[-1])).float()
        greedy = picked.argmax(-1).tolist()
        logprobs = torch.log_softmax(picked, dim=-1)
        answer_lp = []
        for r, a in enumerate(answer_ids):
            lp = logprobs[r, torch.arange(len(a)), torch.tensor(a, dtype=torch.long)] if a else None
            answer_lp.append(float(lp.double().sum()) if lp is not None else 0.0)
        # Read greedy off the teacher-forced forward up to (and including) the first disagreement.
        accepted = [0] * rows
        nxt = [0] * rows
        for r in range(rows):
            if stops.done[r]:
                continue
            a, g = answer_ids[r], greedy[r]
            k = 0
            while k < len(a) and g[k] == a[k]:
                if stops.push(r, a[k]):
                    break
                k += 1
            if stops.done[r]:
                continue
            accepted[r], nxt[r] = k, g[k]
            stops.push(r, g[k])
        active = [r for r in range(rows) if not stops.done[r]]
        if active:
            _continue(model, out, stops, active, plens, accepted, nxt, width, pad, device)
    return list(zip(stops.texts(), answer_lp))


def _continue(
    model: Any,
    out: Any,
    stops: _Stops,
    active: list[int],
    plens: list[int],
    accepted: list[int],
    nxt: list[int],
    width: int,
    pad: int,
    device: Any,
) -> None:
    """Decode the rows that are not finished, from the prefill's KV cache, dropping rows as they finish."""
    import torch

    cache = getattr(out, "cache", None)
    if cache is None:
        cache = out.past_key_values
    cache_name = "cache" if _accepts(model, "cache") else "past_key_values"
    keep = {"logits_to_keep": 1} if _accepts(model, "logits_to_keep") else {}
    # The cache's row order follows the batch; `rows` maps cache rows to batch rows.
    rows = list(range(len(plens)))
    selectable = hasattr(cache, "batch_select_indices")
    if selectable and len(active) < len(rows):
        selectable = _select(cache, active)
        if selectable:
            rows = list(active)
    # Valid cache entries per row: its prompt and the answer tokens greedy accepted; the rest is masked out.
    valid = torch.tensor([plens[r] + accepted[r] for r in rows], dtype=torch.long)
    mask = (torch.arange(width)[None, :] < valid[:, None]).long().to(device)
    positions = valid.to(device)
    tokens = torch.tensor(
        [nxt[r] if not stops.done[r] else pad for r in rows], dtype=torch.long, device=device
    )
    while True:
        mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=mask.dtype, device=device)], dim=-1)
        out = model(
            input_ids=tokens[:, None],
            attention_mask=mask,
            position_ids=positions[:, None],
            use_cache=True,
            **{cache_name: cache},
            **keep,
        )
        cache = getattr(out, "cache", None)
        if cache is None:
            cache = out.past_key_values
        picks = out.logits[:, -1].argmax(-1).tolist()
        for i, r in enumerate(rows):
            if not stops.done[r]:
                stops.push(r, picks[i])
        still = [i for i, r in enumerate(rows) if not stops.done[r]]
        if not still:
            return
        if selectable and len(still) < len(rows):
            index = torch.tensor(still, dtype=torch.long, device=device)
            if _select(cache, still):
                rows = [rows[i] for i in still]
                mask, positions, picks = mask[index], positions[index], [picks[i] for i in still]
        positions = positions + 1
        tokens = torch.tensor(
            [picks[i] if not stops.done[r] else pad for i, r in enumerate(rows)],
            dtype=torch.long,
            device=device,
        )


def _select(cache: Any, keep_rows: list[int]) -> bool:
    """Keep only `keep_rows` of a KV cache (in place); False when this cache type cannot."""
    import torch

    try:
        cache.batch_select_indices(torch.tensor(keep_rows, dtype=torch.long))
        return True
    except (AttributeError, NotImplementedError, TypeError, ValueError, RuntimeError):
        return False
