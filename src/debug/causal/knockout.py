"""Attention knockout: stop chosen query positions from attending to chosen key positions at chosen layers.

`attention_knockout(model, pair_or_program, query_positions, key_positions, layers)` runs the original
program with the attention *scores* from each query position to each key position set to -inf before the
softmax at every chosen layer, in every head (Geva et al. 2023, "Dissecting recall"). The softmax then
renormalizes over the remaining keys, which is the same as zeroing those probabilities and renormalizing.

How: transformers 5 decoder layers hand the attention module an `attention_mask` keyword (None for an
unpadded sdpa batch, which then uses `is_causal`; a 4D additive float mask for eager attention; a 4D bool mask
where sdpa masks are boolean). A forward pre-hook on each knocked layer's attention module replaces that
keyword by a 4D mask `[rows, 1, query, key]` that is causal and also blocks the chosen (query, key) pairs:
additive (0 / the dtype's most negative value) when the model passes None or a float mask, boolean
(True = attend) when it passes a bool mask. Eager and sdpa attention both honour it (Qwen2/3, Llama,
Mistral, GPT-2, GPT-NeoX); flash attention takes no 4D mask and is refused.

Rows of one forward are knockout configurations (`knockout_by_layer`: row 0 unknocked, then one row per layer
set), so a per-layer scan is one batched forward. `knockout_programs` runs many programs with several cuts
each, one row per (program, cut), programs of equal token length sharing a forward (the causal eval's
knockout metrics: what a cut does to the answer of every swept program).

Metrics match the patching sweep's, at the answer position of the original run: LD = logit(cf answer) -
logit(orig answer); normalized = (LD_knocked - LD_orig) / (LD_cf - LD_orig); P(cf answer); IIA = top-1 equals
the cf answer; and, what a knockout is mostly read by, P(orig answer) and whether the top-1 stays the original
answer. A single program (no counterfactual) gets P(answer) and its top-1 only; the LD-based metrics are NaN.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from debug.causal.architectures import get_path, resolve_architecture
from debug.causal.forward import check_eval, hooked_logits, input_device, resolve_model, unpatched_run
from debug.causal.inputs import (
    AnswerTokens,
    CausalTracingError,
    PairedInputs,
    as_pair,
    as_text_and_answer,
    check_context,
    continuation_ids,
    encode,
    prepare_inputs,
    token_label,
    token_targets,
)
from debug.causal.plots import _pyplot
from debug.causal.result import METRICS_DEFINITION, Effects, array_json, effects_fields, scored_rows

__all__ = [
    "KNOCKOUT_DEFINITIONS",
    "CutOutcome",
    "KnockoutResult",
    "attention_knockout",
    "knockout_by_layer",
    "knockout_programs",
    "line_positions",
    "plot_knockout",
    "resolve_positions",
]

KNOCKOUT_DEFINITIONS: dict[str, str] = {
    "intervention": (
        "attention scores from each query position to each key position set to -inf before the softmax, "
        "in every head of each knocked layer (equivalently: those probabilities zeroed and the rest "
        "renormalized); "
        "injected as a 4D attention mask on the attention module's attention_mask keyword"
    ),
    "direction": "the original program runs with the knockout; nothing from the counterfactual is patched in",
    "metrics": (
        f"{METRICS_DEFINITION}; prob_original = P(orig answer); original_top1 = top-1 equals the orig answer"
    ),
}
_MASKABLE = ("eager", "sdpa")
#: Rows per forward of `knockout_programs` (programs x cuts); more rows run as further forwards.
MAX_ROWS = 64


@dataclass(repr=False)
class KnockoutResult(Effects):
    """Effects of attention knockouts on one program (pair), one row per knocked layer set.

    The metrics (`[rows]`; LD, normalized and P(cf) NaN and IIA False without a counterfactual), the
    unknocked runs (`original`; `counterfactual` None for a single program), answer, tokens, targets,
    definitions, model id and notes are the `debug.causal.result.Effects` fields.

    Attributes:
        query_positions: Query positions whose attention was cut.
        key_positions: Key positions they could no longer read.
        layer_sets: Per row, the layers knocked (row order of every array).
        row_labels: A readable name per row.
        prob_original: `[rows]` P(orig answer).
        original_top1: `[rows]` top-1 equals the orig answer.
        top1: `[rows]` readable top-1 token.
    """

    query_positions: list[int]
    key_positions: list[int]
    layer_sets: list[list[int]]
    row_labels: list[str]
    prob_original: np.ndarray
    original_top1: np.ndarray
    top1: list[str]

    @property
    def baseline(self) -> Any:
        """The unknocked original run (the same as `original`)."""
        return self.original

    def __repr__(self) -> str:
        return (
            f"KnockoutResult(model_id={self.model_id!r}, queries={self.query_positions}, "
            f"keys={self.key_positions}, rows={self.row_labels}, P(orig)={np.round(self.prob_original, 3)})"
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN becomes null)."""
        return {
            "method": "attention_knockout",
            **self.effects_json(),
            "query_positions": self.query_positions,
            "key_positions": self.key_positions,
            "layer_sets": self.layer_sets,
            "row_labels": self.row_labels,
            "prob_original": array_json(self.prob_original),
            "original_top1": array_json(self.original_top1),
            "top1": self.top1,
        }


def line_positions(tokens: Sequence[str], position: int) -> list[int]:
    """All positions on the line holding `position`, its newline included (labels as `token_label`)."""
    start = position
    while start > 0 and tokens[start - 1] != "\\n":
        start -= 1
    end = position
    while end < len(tokens) - 1 and tokens[end] != "\\n":
        end += 1
    return list(range(start, end + 1))


def resolve_positions(spec: Any, tokens: Sequence[str], targets: dict[str, int], name: str) -> list[int]:
    """Positions from ints, target labels ("final", "ref depth 1") or "line:<target>" (that target's line).

    Raises:
        CausalTracingError: Naming `name`, the bad entry and the valid range / labels.
    """
    items = [spec] if isinstance(spec, (int, str)) else list(spec)
    seq_len = len(tokens)
    labels = ", ".join(sorted(targets)) or "none (the program has no chain targets)"
    out: set[int] = set()
    for item in items:
        if isinstance(item, str) and not item.lstrip("-").isdigit():
            line = item.startswith("line:")
            label = item[5:] if line else item
            if label not in targets:
                raise CausalTracingError(
                    f"{name} {item!r} is not a position or target; use ints in 0..{seq_len - 1}, "
                    f"target labels ({labels}) or 'line:<target>'"
                )
            out.update(line_positions(tokens, targets[label]) if line else [targets[label]])
            continue
        value = int(item)
        if not 0 <= value < seq_len:
            raise CausalTracingError(
                f"{name} {value} is outside the prompt: choose positions in 0..{seq_len - 1}"
            )
        out.add(value)
    if not out:
        raise CausalTracingError(f"{name} is empty: give at least one position in 0..{seq_len - 1}")
    return sorted(out)


def check_layers(layers: Any, num_layers: int, name: str = "layers") -> list[int]:
    """Sorted unique decoder layers, each in 0..num_layers - 1 (None = all).

    Raises:
        CausalTracingError: Naming the bad layers and the valid range.
    """
    if layers is None:
        return list(range(num_layers))
    values = sorted({int(v) for v in ([layers] if isinstance(layers, int) else layers)})
    bad = [v for v in values if not 0 <= v < num_layers]
    if bad or not values:
        raise CausalTracingError(
            f"{name} {bad or 'is empty'}: the model has decoder layers 0..{num_layers - 1}"
        )
    return values


def _pair(tokenizer: Any, pair_or_program: Any) -> PairedInputs:
    """A program pair, or one program (then answer and counterfactual answer are the same token), encoded."""

    if isinstance(pair_or_program, dict) or (
        isinstance(pair_or_program, tuple)
        and len(pair_or_program) == 2
        and not isinstance(pair_or_program[0], str)
    ):
        original, counterfactual = as_pair(pair_or_program)
        return prepare_inputs(tokenizer, original, counterfactual)
    text, answer, program = as_text_and_answer(pair_or_program)
    if answer is None:
        raise CausalTracingError(
            "attention_knockout needs answers: pass a Program, (text, answer) or an "
            "(original, counterfactual) pair"
        )

    ids = encode(tokenizer, text)
    first = continuation_ids(tokenizer, ids, text, str(answer))[0]
    answer_tokens = AnswerTokens(
        original_id=int(first),
        counterfactual_id=int(first),
        original_text=str(answer),
        counterfactual_text=str(answer),
        note="single program: scored on the answer's first token; LD, normalized and P(cf) are NaN",
    )
    base = prepare_inputs(tokenizer, text, text)
    return PairedInputs(
        base.original_ids,
        base.counterfactual_ids,
        base.tokens,
        answer_tokens,
        dict(_targets(tokenizer, program)),
    )


def _targets(tokenizer: Any, program: Any) -> dict[str, int]:

    targets, _ = token_targets(tokenizer, program, encode(tokenizer, program.text))
    if targets:
        targets["final"] = len(encode(tokenizer, program.text)) - 1
    return targets


def attention_module_path(arch: Any, layer: int) -> str:
    """Dotted path of layer `layer`'s attention module (the parent of its output projection)."""
    return arch.attn_out_path(layer).rsplit(".", 1)[0]


def check_maskable(model: Any) -> None:
    """Refuse attention implementations that take no 4D mask (flash attention, flex attention)."""
    impl = getattr(model.config, "_attn_implementation", None) or "eager"
    if impl not in _MASKABLE:
        raise CausalTracingError(
            f"attention knockout needs eager or sdpa attention, not {impl!r}; load the model with "
            "attn_implementation='sdpa' (or 'eager')"
        )


def knocked_logits(
    model: Any, arch: Any, input_ids: Any, layer_sets: Sequence[Sequence[int]], blocked: Any
) -> Any:
    """`[rows, vocab]` logits of one forward; row i cuts `blocked` at `layer_sets[i]`.

    `input_ids` is one program (`[seq]`, every row runs it) or one per row (`[rows, seq]`); `blocked` is one
    `[seq, seq]` (query, key) mask for every row or one per row (`[rows, seq, seq]`).
    """

    device = input_device(model)
    rows, seq = len(layer_sets), int(input_ids.shape[-1])
    ids = input_ids.to(device)
    ids = ids[None].expand(rows, -1) if ids.ndim == 1 else ids
    cut = blocked.to(device)
    cut = cut[None] if cut.ndim == 2 else cut
    causal = torch.ones(seq, seq, dtype=torch.bool, device=device).tril()
    dtype = next(model.parameters()).dtype
    handles = []

    def hook_for(layer: int) -> Any:
        knocked = torch.tensor([layer in s for s in layer_sets], device=device)
        allowed = causal[None] & ~(knocked[:, None, None] & cut)  # [rows, q, k]

        def pre(module: Any, args: tuple, kwargs: dict) -> tuple:
            current = kwargs.get("attention_mask")
            if current is not None and current.dtype == torch.bool:
                mask = allowed[:, None]
            else:
                mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
                mask.masked_fill_(~allowed, torch.finfo(dtype).min)
                mask = mask[:, None]
            return args, {**kwargs, "attention_mask": mask}

        return pre

    for layer in sorted({layer for s in layer_sets for layer in s}):
        module = get_path(model, attention_module_path(arch, layer))
        handles.append(module.register_forward_pre_hook(hook_for(layer), with_kwargs=True))
    return hooked_logits(model, ids, handles)


def knockout_by_layer(
    model: Any,
    pair_or_program: Any,
    query_positions: Any,
    key_positions: Any,
    layer_sets: Sequence[Any],
    *,
    row_labels: Sequence[str] | None = None,
) -> KnockoutResult:
    """Several knockouts of the same (query, key) positions in one batched forward, one row per layer set.

    Args:
        model: A model id or a `LoadedModel`.
        pair_or_program: An (original, counterfactual) pair of `Program`s / `(text, answer)` tuples, a seed
            pair dict, or one `Program` / `(text, answer)`.
        query_positions: Query positions (ints, target labels such as "final", or "line:<target>").
        key_positions: Key positions, the same way.
        layer_sets: Per row, the decoder layers to knock at (an int or a list of ints).
        row_labels: Names of the rows (default: the layers, e.g. "L3" or "L0-15").

    Returns:
        A `KnockoutResult` with one row per layer set (the unknocked run is `original`).

    Raises:
        CausalTracingError: Positions outside the prompt, unknown target labels, layers the model does not
            have, a query left with no key to read, flash attention (all before any forward).
    """

    loaded = resolve_model(model)
    arch = resolve_architecture(loaded.model)
    check_eval(loaded.model)
    check_maskable(loaded.model)
    tokenizer = loaded.tokenizer
    pair = _pair(tokenizer, pair_or_program)

    seq_len = int(pair.original_ids.shape[0])
    check_context(loaded, seq_len, "the original program")
    queries = resolve_positions(query_positions, pair.tokens, pair.targets, "query_positions")
    keys = resolve_positions(key_positions, pair.tokens, pair.targets, "key_positions")
    sets = [check_layers(s, arch.num_layers, "layer set") for s in layer_sets]
    if not sets:
        raise CausalTracingError("layer_sets is empty: give at least one set of layers to knock at")
    for q in queries:
        if all(k in keys for k in range(q + 1)):
            raise CausalTracingError(
                f"query position {q} would attend to nothing: keep at least one key in 0..{q} unblocked"
            )
    labels = list(row_labels) if row_labels is not None else [_layers_label(s) for s in sets]
    if len(labels) != len(sets):
        raise CausalTracingError(f"row_labels has {len(labels)} names for {len(sets)} layer sets")

    blocked = torch.zeros(seq_len, seq_len, dtype=torch.bool)
    blocked[torch.tensor(queries)[:, None], torch.tensor(keys)[None]] = True
    single = pair.answer.original_id == pair.answer.counterfactual_id
    rows = [[]] + sets
    logits = knocked_logits(loaded.model, arch, pair.original_ids, rows, blocked)
    if not single:
        cf_logits = knocked_logits(loaded.model, arch, pair.counterfactual_ids, [[]], blocked)[0]
    answer = pair.answer
    original = unpatched_run(logits[0], answer, tokenizer)
    counterfactual = None if single else unpatched_run(cf_logits, answer, tokenizer)
    knocked = logits[1:]
    top = knocked.argmax(dim=-1)
    notes = [answer.note]
    if single:
        nan = np.full(len(sets), np.nan)
        metrics = {"logit_diff": nan, "normalized": nan.copy(), "prob_cf": nan.copy()}
        metrics["iia"] = np.zeros(len(sets), dtype=bool)
    else:
        metrics = scored_rows(knocked, answer, original, counterfactual, notes)
    return KnockoutResult(
        query_positions=queries,
        key_positions=keys,
        layer_sets=sets,
        row_labels=labels,
        prob_original=knocked.softmax(-1)[:, answer.original_id].cpu().numpy().astype(np.float64),
        original_top1=(top == answer.original_id).cpu().numpy(),
        top1=[token_label(tokenizer, int(t)) for t in top],
        **effects_fields(
            loaded, pair, arch.num_layers, metrics, (original, counterfactual), KNOCKOUT_DEFINITIONS, notes
        ),
    )


@dataclass(frozen=True)
class CutOutcome:
    """What one attention cut did to one program's answer (`knockout_programs`).

    Attributes:
        answer_kept: The top-1 token at the answer position is still the answer's first token.
        prob_original: P(answer's first token) with the cut.
    """

    answer_kept: bool
    prob_original: float


def _names_missing_target(spec: Any, targets: Mapping[str, int]) -> bool:
    items = [spec] if isinstance(spec, (int, str)) else list(spec)
    labels = [i.removeprefix("line:") for i in items if isinstance(i, str) and not i.lstrip("-").isdigit()]
    return any(label not in targets for label in labels)


def knockout_programs(
    model: Any,
    programs: Sequence[Any],
    query_positions: Any,
    cuts: Mapping[str, Any],
    layers: Any = None,
) -> dict[str, list[CutOutcome | None]]:
    """Several cuts of many programs in few forwards: one row per (program, cut), equal lengths together.

    Each cut stops `query_positions` attending to its key positions at all of `layers` at once, as
    `attention_knockout` does for one program; the answer is each program's own (no counterfactual).

    Args:
        model: A model id or a `LoadedModel`.
        programs: `Program`s or `(text, answer)` tuples.
        query_positions: Query positions, as `knockout_by_layer` takes them ("final", ints, "line:<target>").
        cuts: Name -> key positions, the same way (e.g. `{"root_line": "line:ref depth 1"}`).
        layers: Decoder layers to knock at (default: all).

    Returns:
        Cut name -> one `CutOutcome` per program, in program order; None where the program has no target
        the cut names (a 1-hop program has no "ref depth 2").

    Raises:
        CausalTracingError: As `knockout_by_layer`, for any program, before any forward.
    """
    loaded = resolve_model(model)
    arch = resolve_architecture(loaded.model)
    check_eval(loaded.model)
    check_maskable(loaded.model)
    knocked = [check_layers(layers, arch.num_layers)]
    rows: dict[int, list[tuple[str, int, torch.Tensor, torch.Tensor, int]]] = {}
    for index, program in enumerate(programs):
        pair = _pair(loaded.tokenizer, program)
        seq_len = int(pair.original_ids.shape[0])
        check_context(loaded, seq_len, "the original program")
        queries = resolve_positions(query_positions, pair.tokens, pair.targets, "query_positions")
        for name, spec in cuts.items():
            if _names_missing_target(spec, pair.targets):
                continue
            keys = resolve_positions(spec, pair.tokens, pair.targets, f"cut {name!r}")
            for q in queries:
                if all(k in keys for k in range(q + 1)):
                    raise CausalTracingError(
                        f"cut {name!r}: query position {q} would attend to nothing; keep a key in 0..{q}"
                    )
            blocked = torch.zeros(seq_len, seq_len, dtype=torch.bool)
            blocked[torch.tensor(queries)[:, None], torch.tensor(keys)[None]] = True
            rows.setdefault(seq_len, []).append(
                (name, index, pair.original_ids, blocked, pair.answer.original_id)
            )
    out: dict[str, list[CutOutcome | None]] = {name: [None] * len(programs) for name in cuts}
    for group in rows.values():
        for start in range(0, len(group), MAX_ROWS):
            chunk = group[start : start + MAX_ROWS]
            logits = knocked_logits(
                loaded.model,
                arch,
                torch.stack([ids for _, _, ids, _, _ in chunk]),
                knocked * len(chunk),
                torch.stack([blocked for _, _, _, blocked, _ in chunk]),
            )
            probs, top = logits.softmax(-1), logits.argmax(-1)
            for row, (name, index, _, _, answer) in enumerate(chunk):
                out[name][index] = CutOutcome(bool(top[row] == answer), float(probs[row, answer]))
    return out


def _layers_label(layers: Sequence[int]) -> str:
    if len(layers) > 1 and list(layers) == list(range(layers[0], layers[-1] + 1)):
        return f"L{layers[0]}-{layers[-1]}"
    return "L" + ",".join(str(v) for v in layers)


def attention_knockout(
    model: Any, pair_or_program: Any, query_positions: Any, key_positions: Any, layers: Any = None
) -> KnockoutResult:
    """Cut attention from `query_positions` to `key_positions` at all of `layers` at once, and measure.

    Args:
        model: A model id or a `LoadedModel`.
        pair_or_program: An (original, counterfactual) pair, a seed pair dict, or one program with an answer.
        query_positions: Query positions (ints, target labels such as "final", or "line:<target>").
        key_positions: Key positions, the same way.
        layers: Decoder layers to knock at, together (default: all).

    Returns:
        A `KnockoutResult` with one row.

    Raises:
        CausalTracingError: As `knockout_by_layer`, before any forward.
    """
    return knockout_by_layer(model, pair_or_program, query_positions, key_positions, [layers])


def plot_knockout(result: KnockoutResult) -> Any:
    """P(orig answer) and P(cf answer) per knocked layer set beside the unknocked run; the figure."""

    plt = _pyplot()
    n = len(result.row_labels)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * n + 2), 3.8))
    x = np.arange(n)
    ax.bar(x - 0.2, result.prob_original, width=0.4, label=f"P(orig {result.answer.original_text!r})")
    if np.isfinite(result.prob_cf).any():
        ax.bar(x + 0.2, result.prob_cf, width=0.4, label=f"P(cf {result.answer.counterfactual_text!r})")
    ax.axhline(result.original.prob_original, color="k", ls="--", lw=1, label="P(orig), no knockout")
    ax.set_xticks(x, result.row_labels, rotation=90 if n > 12 else 0, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability at the answer position")
    ax.set_xlabel("knocked layer(s)")
    ax.set_title(
        f"attention knockout {result.model_id or ''}: queries {result.query_positions} -/-> keys "
        f"{result.key_positions}",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
