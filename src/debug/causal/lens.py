"""The logit lens: decode every layer's residual stream at the final token with the model's own unembedding.

`logit_lens(model, program)` reads the residual stream entering each decoder layer (`layers[l].input`; layer
`num_layers` is the final residual, the final norm's input), applies the final norm and the unembedding
(`lm_head`) to it at the final token, and reports the answer token's rank, probability and logit there, and
the first layer where the answer decodes (is the top-1 token). With a counterfactual program it also reports
the patching metrics' logit difference LD = logit(cf answer) - logit(orig answer) per layer, decoded from the
original run, and P(cf answer).

It is one forward pass with plain torch forward pre-hooks on the layers and the final norm (no nnsight:
nothing is patched, only read); `logit_lens_programs` reads many programs in each forward, the shorter ones
left-padded. The lens is an approximation (nostalgebraist 2020): early layers need not
live in the unembedding's basis, so "does not decode at layer l" does not mean "the answer is absent at
layer l"; a linear probe or the patching sweep tests presence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from debug.causal.architectures import get_path, resolve_architecture
from debug.causal.forward import check_eval, hidden_arg, hooked_forward, left_pad, resolve_model
from debug.causal.inputs import (
    CausalTracingError,
    as_text_and_answer,
    check_context,
    continuation_ids,
    encode,
    prepare_inputs,
    token_label,
)
from debug.causal.plots import _pyplot
from debug.causal.result import array_json, layer_label

__all__ = [
    "LENS_DEFINITIONS",
    "LENS_ROWS",
    "LensResult",
    "logit_lens",
    "logit_lens_programs",
    "plot_logit_lens",
]

LENS_DEFINITIONS: dict[str, str] = {
    "site": (
        "residual stream entering decoder layer l (layers[l].input) at the final token; layer num_layers = "
        "the final residual (the final norm's input)"
    ),
    "decoding": "logits_l = lm_head(final_norm(residual_l)): the model's own final norm and unembedding",
    "metrics": (
        "rank = 1 + number of tokens with a larger lens logit than the answer token (1 = top-1); prob = "
        "softmax of the lens logits at the answer token; logit = its lens logit; first_decoding_layer = "
        "the first layer whose lens top-1 is the answer token (None if none); stays_from_layer = the first "
        "layer from which it is the top-1 at every later layer"
    ),
    "counterfactual": (
        "with a counterfactual program: LD = logit(cf answer) - logit(orig answer) of the original run's "
        "lens logits, and prob_cf = P(cf answer) under the lens; the counterfactual itself is not run"
    ),
}


@dataclass(repr=False)
class LensResult:
    """The logit lens of one program at its final token.

    Attributes:
        layers: Layers read, `0..num_layers` (`num_layers` = the final residual).
        num_layers: Decoder layers of the model.
        tokens: Readable label of every input position.
        position: The position read (the final token; after any teacher-forced shared answer prefix).
        answer_id: The scored answer token (the first token of the answer, or the first differing token
            when a counterfactual is given).
        answer_text: The full answer.
        rank: `[layers]` rank of the answer token (1 = top-1).
        prob: `[layers]` lens probability of the answer token.
        logit: `[layers]` lens logit of the answer token.
        top1: `[layers]` readable label of each layer's lens top-1 token.
        first_decoding_layer: The first layer whose lens top-1 is the answer token, or None.
        logit_diff: `[layers]` LD = logit(cf) - logit(orig), or None without a counterfactual.
        prob_cf: `[layers]` lens P(cf answer), or None without a counterfactual.
        counterfactual_id: The cf answer token, or None.
        definitions: What was read, decoded and measured, as sentences.
        model_id: The model's id.
        notes: Anything a reader should know (how the answer token was chosen).
    """

    layers: list[int]
    num_layers: int
    tokens: list[str]
    position: int
    answer_id: int
    answer_text: str
    rank: np.ndarray
    prob: np.ndarray
    logit: np.ndarray
    top1: list[str]
    first_decoding_layer: int | None
    logit_diff: np.ndarray | None = None
    prob_cf: np.ndarray | None = None
    counterfactual_id: int | None = None
    definitions: dict[str, str] = field(default_factory=lambda: dict(LENS_DEFINITIONS))
    model_id: str = ""
    notes: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        return (
            f"LensResult(model_id={self.model_id!r}, answer={self.answer_text!r}, "
            f"first_decoding_layer={self.first_decoding_layer_label}, final rank={int(self.rank[-1])})"
        )

    @property
    def layer_labels(self) -> list[str]:
        """Layer names for axes: the layer number, or "final" for the final residual."""
        return [layer_label(layer, self.num_layers) for layer in self.layers]

    @property
    def first_decoding_layer_label(self) -> str:
        """The first decoding layer as a label ("final" = the final residual, "none" = it never decodes)."""
        if self.first_decoding_layer is None:
            return "none"
        return self.layer_labels[self.layers.index(self.first_decoding_layer)]

    @property
    def stays_from_layer(self) -> int | None:
        """The first layer from which the answer is the lens top-1 at every later layer too, or None.

        Less sensitive than `first_decoding_layer` to an early layer where the answer is top-1 by chance.
        """
        if self.rank[-1] != 1:
            return None
        layer = len(self.layers) - 1
        while layer > 0 and self.rank[layer - 1] == 1:
            layer -= 1
        return self.layers[layer]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "method": "logit_lens",
            "model_id": self.model_id,
            "layers": self.layers,
            "layer_labels": self.layer_labels,
            "num_layers": self.num_layers,
            "tokens": self.tokens,
            "position": self.position,
            "answer": {
                "text": self.answer_text,
                "token_id": self.answer_id,
                "cf_token_id": self.counterfactual_id,
            },
            "rank": [int(r) for r in self.rank],
            "prob": array_json(self.prob),
            "logit": array_json(self.logit),
            "top1": self.top1,
            "first_decoding_layer": self.first_decoding_layer,
            "stays_from_layer": self.stays_from_layer,
            "logit_diff": array_json(self.logit_diff),
            "prob_cf": array_json(self.prob_cf),
            "definitions": self.definitions,
            "notes": self.notes,
        }


def residual_streams(model: Any, arch: Any, input_ids: Any, mask: Any = None) -> Any:
    """`[rows, num_layers + 1, hidden]` residual stream at each row's last position: each layer's input,
    then the final norm's.

    One forward pass of `input_ids` (`[rows, seq]`, left-padded under `mask`: `debug.causal.forward.left_pad`)
    with plain torch forward pre-hooks.
    """

    box: list[Any] = []
    modules = [get_path(model, arch.layer_path(layer)) for layer in range(arch.num_layers)]
    modules.append(get_path(model, arch.spec.final_norm))
    # Only the last position is kept: `record_hidden` would hold every position of every layer.
    handles = [
        module.register_forward_pre_hook(
            lambda m, a, k: box.append(hidden_arg(a, k)[:, -1].detach().clone()), with_kwargs=True
        )
        for module in modules
    ]
    hooked_forward(model, input_ids, handles, mask=mask)
    return torch.stack(box, dim=1)


def logit_lens(model: Any, program: Any, counterfactual: Any = None) -> LensResult:
    """Decode every layer's residual stream at the final token and rank the answer there.

    For many programs, `logit_lens_programs` reads them in batched forwards (same numbers).

    Args:
        model: A model id (loaded with `debug.models.load`) or a `LoadedModel`.
        program: A `Program` or `(text, answer)`.
        counterfactual: Optional counterfactual of the same token length: then the scored token is the first
            token where the two answers differ (shared answer tokens are teacher-forced), and the result
            also carries LD and P(cf) per layer.

    Returns:
        A `LensResult` over layers `0..num_layers`.

    Raises:
        CausalTracingError: A program without an answer, unequal lengths or equal answers with a
            counterfactual, a program longer than the model's context (all before any forward).
        debug.causal.architectures.UnsupportedArchitectureError: When the model's layers cannot be found.
    """
    (result,) = logit_lens_programs(model, [program], None if counterfactual is None else [counterfactual])
    return result


#: Programs per forward of `logit_lens_programs`.
LENS_ROWS = 64


@dataclass
class _Read:
    """One program as the lens reads it."""

    ids: list[int]
    answer_id: int  # the scored token
    cf_id: int | None  # the counterfactual's, with a counterfactual
    answer_text: str
    note: str  # how the scored token was chosen


def _read(tokenizer: Any, program: Any, counterfactual: Any) -> _Read:
    """Encode one program (with its counterfactual, if any) and choose the scored token; no forward."""
    if counterfactual is not None:
        pair = prepare_inputs(tokenizer, program, counterfactual)
        if pair.answer is None:
            raise CausalTracingError(
                "logit_lens needs programs with answers: pass Programs or (text, answer)"
            )
        answer = pair.answer
        ids = pair.original_ids.tolist()
        return _Read(ids, answer.original_id, answer.counterfactual_id, answer.original_text, answer.note)
    text, answer, _ = as_text_and_answer(program)
    if answer is None:
        raise CausalTracingError(
            "logit_lens needs a program with an answer: pass a Program or (text, answer), not bare text"
        )
    ids = encode(tokenizer, text)
    continuation = continuation_ids(tokenizer, ids, text, str(answer))
    if not continuation:
        raise CausalTracingError(f"the answer {answer!r} encodes to no tokens; pass a non-empty answer")
    note = (
        "single-token answer: scored on the answer token"
        if len(continuation) == 1
        else f"multi-token answer: scored on its first token of {len(continuation)}"
    )
    return _Read(ids, int(continuation[0]), None, str(answer), note)


def logit_lens_programs(
    model: Any, programs: Sequence[Any], counterfactuals: Sequence[Any] | None = None
) -> list[LensResult]:
    """`logit_lens` of many programs, up to `LENS_ROWS` per forward (shorter programs left-padded, with an
    attention mask and position ids of their own, so each reads as it does alone).

    Args:
        model: A model id (loaded with `debug.models.load`) or a `LoadedModel`.
        programs: `Program`s or `(text, answer)`s.
        counterfactuals: None, or one counterfactual (or None) per program, as `logit_lens` takes it.

    Returns:
        One `LensResult` per program, in order.

    Raises:
        CausalTracingError: As `logit_lens`, for any program, all before the first forward; also a list of
            counterfactuals whose length is not the programs'.
    """
    loaded = resolve_model(model)
    arch = resolve_architecture(loaded.model)
    check_eval(loaded.model)
    tokenizer = loaded.tokenizer
    programs = list(programs)
    cfs = [None] * len(programs) if counterfactuals is None else list(counterfactuals)
    if len(cfs) != len(programs):
        raise CausalTracingError(
            f"{len(cfs)} counterfactuals for {len(programs)} programs; pass one (or None) per program"
        )
    reads = [_read(tokenizer, program, cf) for program, cf in zip(programs, cfs)]
    for read in reads:
        check_context(loaded, len(read.ids), "the program")
    hf = loaded.model
    norm = get_path(hf, arch.spec.final_norm)
    results = []
    for at in range(0, len(reads), LENS_ROWS):
        chunk = reads[at : at + LENS_ROWS]
        ids, mask = left_pad([torch.tensor(r.ids, dtype=torch.long) for r in chunk])
        residuals = residual_streams(hf, arch, ids, mask)
        with torch.no_grad():
            logits = hf.get_output_embeddings()(norm(residuals)).float()
        results += [_result(loaded, arch, read, row) for read, row in zip(chunk, logits)]
    return results


def _result(loaded: Any, arch: Any, read: _Read, logits: Any) -> LensResult:
    """One program's `LensResult` from its `[layers, vocab]` lens logits."""
    tokenizer = loaded.tokenizer
    answer_id, cf_id = read.answer_id, read.cf_id
    probs = torch.softmax(logits, dim=-1)
    answer_logit = logits[:, answer_id]
    rank = 1 + (logits > answer_logit[:, None]).sum(dim=-1)
    top = logits.argmax(dim=-1).tolist()
    layers = list(range(arch.num_layers + 1))
    first = next((layer for layer, t in zip(layers, top) if t == answer_id), None)
    return LensResult(
        layers=layers,
        num_layers=arch.num_layers,
        tokens=[token_label(tokenizer, t) for t in read.ids],
        position=len(read.ids) - 1,
        answer_id=answer_id,
        answer_text=read.answer_text,
        rank=rank.cpu().numpy(),
        prob=probs[:, answer_id].cpu().numpy().astype(np.float64),
        logit=answer_logit.cpu().numpy().astype(np.float64),
        top1=[token_label(tokenizer, t) for t in top],
        first_decoding_layer=first,
        logit_diff=None
        if cf_id is None
        else (logits[:, cf_id] - answer_logit).cpu().numpy().astype(np.float64),
        prob_cf=None if cf_id is None else probs[:, cf_id].cpu().numpy().astype(np.float64),
        counterfactual_id=cf_id,
        model_id=str(getattr(loaded, "model_id", "")),
        notes=[read.note],
    )


def plot_logit_lens(result: LensResult) -> Any:
    """Answer probability (and P(cf), if measured) and rank by layer; returns the matplotlib figure."""

    plt = _pyplot()
    fig, (ax_p, ax_r) = plt.subplots(2, 1, figsize=(max(6.0, 0.45 * len(result.layers)), 5.5), sharex=True)
    x = np.arange(len(result.layers))
    ax_p.plot(x, result.prob, marker="o", label=f"P(answer {result.answer_text!r})")
    if result.prob_cf is not None:
        ax_p.plot(x, result.prob_cf, marker="s", label="P(cf answer)")
    ax_p.set_ylim(0, 1)
    ax_p.set_ylabel("lens probability")
    ax_p.legend(loc="upper left", fontsize=8)
    ax_r.semilogy(x, result.rank, marker="o")
    ax_r.invert_yaxis()
    ax_r.set_ylabel("answer rank (1 = top)")
    ax_r.set_xticks(x, result.layer_labels)
    ax_r.set_xlabel("layer (residual stream entering it)")
    for ax in (ax_p, ax_r):
        if result.first_decoding_layer is not None:
            ax.axvline(result.layers.index(result.first_decoding_layer), color="#d62728", ls="--", lw=1)
    ax_p.set_title(
        f"logit lens, {result.model_id or 'model'}: first decodes at layer "
        f"{result.first_decoding_layer_label}",
        fontsize=10,
    )
    fig.tight_layout()
    return fig
