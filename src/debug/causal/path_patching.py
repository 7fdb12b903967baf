"""Path patching: the effect of one sender head's counterfactual output through chosen receivers only.

`path_patch(model, pair, sender=(layer, head), receivers=[...])` (Wang et al. 2022, "Interpretability in the
wild"; Goldowsky-Dill et al. 2023) answers: how much of the answer's move toward the counterfactual travels
from the sender head along the chosen paths? Two forwards of the original program, rows = senders:

1. Freeze everything at the original except the sender: every head output (the slice of the attention output
   projection's input, as in the sweep) and every MLP output is set to the original run's value, except the
   sender head, set to the counterfactual run's. Each later layer's input is then exactly the original's plus
   the sender's counterfactual change (through the output projection), and nothing else moved. Each receiver
   head's output is recorded as computed from that input (its queries, keys and values all see the change).
2. Run the original with only the receiver heads' outputs replaced by those records; everything downstream
   of the receivers recomputes. The receiver "logits" (the direct path) adds the sender's change to the final
   residual, the final norm's input, instead.

With receivers = ["logits"] alone, step 2 is not needed: the frozen run's own logits are the direct effect.
Receivers must sit in layers after the sender's (a head cannot read a head of its own layer).

Metrics match the sweep's, at the answer position: LD = logit(cf answer) - logit(orig answer); normalized =
(LD - LD_orig) / (LD_cf - LD_orig); P(cf answer); IIA = top-1 equals the cf answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from debug._util.jsonable import jsonable
from debug.causal.architectures import get_path, resolve_architecture
from debug.causal.forward import (
    check_eval,
    forward_kwargs,
    hidden_arg,
    input_device,
    resolve_model,
    unpatched_run,
)
from debug.causal.inputs import CausalTracingError, as_pair, check_context, prepare_inputs
from debug.causal.plots import _pyplot

__all__ = ["PATH_DEFINITIONS", "PathPatchResult", "path_patch", "path_patch_heads", "plot_path_patching"]

PATH_DEFINITIONS: dict[str, str] = {
    "site": "head h of layer l = its head_dim slice of the input of layer l's attention output projection",
    "intervention": (
        "sender head set to its counterfactual output with every other head and MLP frozen at the original; "
        "receiver heads recomputed from that run's layer inputs (original + only the sender's change); then "
        "the original runs with only the receivers replaced and everything after them recomputed; receiver "
        "'logits' = the sender's change added to the final residual (direct path)"
    ),
    "direction": "noising the original / denoising toward the counterfactual, along the chosen paths only",
    "metrics": (
        "unclipped, at the answer position: LD = logit(cf) - logit(orig); normalized = "
        "(LD - LD_orig)/(LD_cf - LD_orig); prob_cf = P(cf answer); iia = top-1 equals the cf answer"
    ),
}
LOGITS = "logits"


@dataclass(repr=False)
class PathPatchResult:
    """Path-patching effects, one row per (sender, receivers).

    Attributes:
        senders: Per row, the sender (layer, head).
        receivers: Per row, the receivers: (layer, head) tuples and/or "logits".
        num_layers: Decoder layers of the model.
        num_heads: Heads per layer.
        tokens: Readable label of every input position.
        logit_diff: `[rows]` LD of the path-patched runs.
        normalized: `[rows]` (LD - LD_orig) / (LD_cf - LD_orig).
        prob_cf: `[rows]` P(cf answer).
        iia: `[rows]` top-1 equals the cf answer.
        original: The unpatched original run (`UnpatchedRun`).
        counterfactual: The unpatched counterfactual run.
        answer: The scored answer tokens.
        definitions: Site, intervention, direction and metric definitions, as sentences.
        model_id: The model's id.
        notes: Anything a reader should know.
    """

    senders: list[tuple[int, int]]
    receivers: list[list[Any]]
    num_layers: int
    num_heads: int
    tokens: list[str]
    logit_diff: np.ndarray
    normalized: np.ndarray
    prob_cf: np.ndarray
    iia: np.ndarray
    original: Any
    counterfactual: Any
    answer: Any
    definitions: dict[str, str] = field(default_factory=lambda: dict(PATH_DEFINITIONS))
    model_id: str = ""
    notes: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        return (
            f"PathPatchResult(model_id={self.model_id!r}, rows={len(self.senders)}, "
            f"normalized={np.round(self.normalized, 3)})"
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN becomes null)."""
        return jsonable(
            {
                "method": "path_patching",
                "model_id": self.model_id,
                "senders": [list(s) for s in self.senders],
                "receivers": [[r if r == LOGITS else list(r) for r in rs] for rs in self.receivers],
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "tokens": self.tokens,
                "answer": {
                    "original": self.answer.original_text,
                    "counterfactual": self.answer.counterfactual_text,
                },
                "original": vars(self.original),
                "counterfactual": vars(self.counterfactual),
                "logit_diff": self.logit_diff.tolist(),
                "normalized": self.normalized.tolist(),
                "prob_cf": self.prob_cf.tolist(),
                "iia": self.iia.astype(float).tolist(),
                "definitions": self.definitions,
                "notes": self.notes,
            }
        )


def _check_head(value: Any, arch: Any, name: str) -> tuple[int, int]:
    try:
        layer, head = (int(v) for v in value)
    except (TypeError, ValueError):
        raise CausalTracingError(f"{name} {value!r} must be a (layer, head) pair of ints") from None
    if not (0 <= layer < arch.num_layers and 0 <= head < arch.num_heads):
        raise CausalTracingError(
            f"{name} ({layer}, {head}) does not exist: layers 0..{arch.num_layers - 1}, "
            f"heads 0..{arch.num_heads - 1}"
        )
    return layer, head


def _receivers(receivers: Any, sender: tuple[int, int], arch: Any) -> list[Any]:
    """Receivers checked against the model and the sender, as (layer, head) tuples and "logits"."""
    items = [receivers] if isinstance(receivers, (str, int)) else list(receivers)
    if not items:
        raise CausalTracingError("receivers is empty: give (layer, head) pairs, layers or 'logits'")
    out: list[Any] = []
    for item in items:
        if item == LOGITS:
            out.append(LOGITS)
            continue
        if item == "later":
            out += [
                (layer, h) for layer in range(sender[0] + 1, arch.num_layers) for h in range(arch.num_heads)
            ]
            continue
        if isinstance(item, (int, np.integer)) or (isinstance(item, str) and item.isdigit()):
            heads = [(int(item), h) for h in range(arch.num_heads)]
        else:
            heads = [item]
        for head in heads:
            layer, h = _check_head(head, arch, "receiver")
            if layer <= sender[0]:
                raise CausalTracingError(
                    f"receiver ({layer}, {h}) is not after the sender in layer {sender[0]}: receivers "
                    f"must sit in layers {sender[0] + 1}..{arch.num_layers - 1} (or be 'logits')"
                )
            out.append((layer, h))
    return list(dict.fromkeys(out))


def _cache(model: Any, arch: Any, pair: Any) -> tuple[dict[str, Any], Any]:
    """One forward over [original, counterfactual]: head outputs, MLP outputs, final residuals, logits."""

    store: dict[str, Any] = {"heads": [], "mlp": []}
    handles = []
    for layer in range(arch.num_layers):
        out_proj = get_path(model, arch.attn_out_path(layer))
        mlp = get_path(model, arch.mlp_path(layer))
        handles.append(
            out_proj.register_forward_pre_hook(
                lambda m, a, k: store["heads"].append(hidden_arg(a, k).detach().clone()), with_kwargs=True
            )
        )
        handles.append(mlp.register_forward_hook(lambda m, a, out: store["mlp"].append(out.detach().clone())))
    norm = get_path(model, arch.spec.final_norm)
    handles.append(
        norm.register_forward_pre_hook(
            lambda m, a, k: store.__setitem__("final", hidden_arg(a, k).detach().clone()), with_kwargs=True
        )
    )
    batch = torch.stack([pair.original_ids, pair.counterfactual_ids]).to(input_device(model))
    try:
        with torch.no_grad():
            logits = model(input_ids=batch, **forward_kwargs(model)).logits[:, -1].float()
    finally:
        for handle in handles:
            handle.remove()
    return store, logits


def _path_logits(
    model: Any, arch: Any, pair: Any, senders: list[tuple[int, int]], receivers: list[list[Any]], store: dict
) -> Any:
    """`[rows, vocab]` logits of the two-step path patch, row i = (senders[i], receivers[i])."""

    rows, hd, heads = len(senders), arch.head_dim, arch.num_heads
    device = input_device(model)
    ids = pair.original_ids.to(device)[None].expand(rows, -1)
    recorded: dict[int, Any] = {}
    final_a: dict[str, Any] = {}
    handles = []

    def freeze_heads(layer: int) -> Any:
        def pre(module: Any, args: tuple, kwargs: dict) -> tuple:
            x = hidden_arg(args, kwargs)
            recorded[layer] = x.detach().clone().view(rows, x.shape[1], heads, hd)
            frozen = store["heads"][layer][0].expand(rows, -1, -1).clone().view(rows, x.shape[1], heads, hd)
            for row, (s_layer, s_head) in enumerate(senders):
                if s_layer == layer:
                    frozen[row, :, s_head] = store["heads"][layer][1].view(x.shape[1], heads, hd)[:, s_head]
            value = frozen.view(x.shape)
            return ((value, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": value})

        return pre

    for layer in range(arch.num_layers):
        handles.append(
            get_path(model, arch.attn_out_path(layer)).register_forward_pre_hook(
                freeze_heads(layer), with_kwargs=True
            )
        )
        orig_mlp = store["mlp"][layer][0]
        handles.append(
            get_path(model, arch.mlp_path(layer)).register_forward_hook(
                lambda m, a, out, value=orig_mlp: value.expand_as(out).clone()
            )
        )
    norm = get_path(model, arch.spec.final_norm)
    handles.append(
        norm.register_forward_pre_hook(
            lambda m, a, k: final_a.__setitem__("x", hidden_arg(a, k).detach().clone()), with_kwargs=True
        )
    )
    try:
        with torch.no_grad():
            frozen_logits = model(input_ids=ids, **forward_kwargs(model)).logits[:, -1].float()
    finally:
        for handle in handles:
            handle.remove()
    if all(rs == [LOGITS] for rs in receivers):
        return frozen_logits
    delta_final = final_a["x"] - store["final"][0][None]
    direct = torch.tensor([LOGITS in rs for rs in receivers], device=device)
    by_layer: dict[int, list[tuple[int, int]]] = {}
    for row, rs in enumerate(receivers):
        for r in rs:
            if r != LOGITS:
                by_layer.setdefault(r[0], []).append((row, r[1]))
    handles = []

    def put_receivers(layer: int) -> Any:
        def pre(module: Any, args: tuple, kwargs: dict) -> tuple:
            x = hidden_arg(args, kwargs)
            value = x.clone().view(rows, x.shape[1], heads, hd)
            for row, head in by_layer[layer]:
                value[row, :, head] = recorded[layer][row, :, head]
            value = value.view(x.shape)
            return ((value, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": value})

        return pre

    def add_direct(module: Any, args: tuple, kwargs: dict) -> tuple:
        x = hidden_arg(args, kwargs)
        value = x + delta_final * direct[:, None, None].to(x.dtype)
        return ((value, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": value})

    for layer in by_layer:
        handles.append(
            get_path(model, arch.attn_out_path(layer)).register_forward_pre_hook(
                put_receivers(layer), with_kwargs=True
            )
        )
    if bool(direct.any()):
        handles.append(norm.register_forward_pre_hook(add_direct, with_kwargs=True))
    try:
        with torch.no_grad():
            return model(input_ids=ids, **forward_kwargs(model)).logits[:, -1].float()
    finally:
        for handle in handles:
            handle.remove()


def _run(model: Any, pair: Any, rows: list[tuple[tuple[int, int], Any]]) -> PathPatchResult:
    """Check, then path-patch each (sender, receivers) row of one pair in two batched forwards."""

    loaded = resolve_model(model)
    arch = resolve_architecture(loaded.model)
    check_eval(loaded.model)
    senders = [_check_head(s, arch, "sender") for s, _ in rows]
    receivers = [_receivers(r, s, arch) for s, (_, r) in zip(senders, rows)]
    empty = [s for s, r in zip(senders, receivers) if not r]
    if empty:
        raise CausalTracingError(
            f"sender {empty[0]} has no receivers after it; use 'logits' for the last layer"
        )
    encoded = prepare_inputs(loaded.tokenizer, *as_pair(pair))
    if encoded.answer is None:
        raise CausalTracingError("path_patch needs programs with answers: pass Programs or (text, answer)")
    check_context(loaded, int(encoded.original_ids.shape[0]), "the original program")
    store, logits = _cache(loaded.model, arch, encoded)
    answer = encoded.answer
    original = unpatched_run(logits[0], answer, loaded.tokenizer)
    counterfactual = unpatched_run(logits[1], answer, loaded.tokenizer)
    patched = _path_logits(loaded.model, arch, encoded, senders, receivers, store)
    ld = (
        (patched[:, answer.counterfactual_id] - patched[:, answer.original_id])
        .cpu()
        .numpy()
        .astype(np.float64)
    )
    denominator = counterfactual.logit_diff - original.logit_diff
    notes = [answer.note]
    if abs(denominator) < 1e-6:
        normalized = np.full(ld.shape, np.nan)
        notes.append("LD_cf equals LD_orig: the normalized effect is undefined (NaN)")
    else:
        normalized = (ld - original.logit_diff) / denominator
    return PathPatchResult(
        senders=senders,
        receivers=receivers,
        num_layers=arch.num_layers,
        num_heads=arch.num_heads,
        tokens=encoded.tokens,
        logit_diff=ld,
        normalized=normalized,
        prob_cf=torch.softmax(patched, -1)[:, answer.counterfactual_id].cpu().numpy().astype(np.float64),
        iia=(patched.argmax(-1) == answer.counterfactual_id).cpu().numpy(),
        original=original,
        counterfactual=counterfactual,
        answer=answer,
        model_id=str(getattr(loaded, "model_id", "")),
        notes=notes,
    )


def path_patch(
    model: Any, pair: Any, sender: tuple[int, int], receivers: Sequence[Any] | str = LOGITS
) -> PathPatchResult:
    """The sender head's counterfactual effect on the answer through `receivers` only.

    Args:
        model: A model id or a `LoadedModel`.
        pair: An (original, counterfactual) pair of `Program`s / `(text, answer)` tuples, or a seed pair dict.
        sender: (layer, head).
        receivers: (layer, head) pairs in later layers, bare layer numbers (all their heads), "later" (every
            head after the sender) and/or "logits" (the direct path).

    Returns:
        A `PathPatchResult` with one row.

    Raises:
        CausalTracingError: A head that does not exist, receivers not after the sender, bad programs (all
            before any forward).
    """
    return _run(model, pair, [(sender, receivers)])


def path_patch_heads(model: Any, pair: Any, receivers: Sequence[Any] | str = LOGITS) -> PathPatchResult:
    """Every head as the sender (rows layer-major), each with the same kind of receivers.

    Receivers that are (layer, head) pairs must sit after every sender, so a scan over all heads takes
    "logits" (direct effects) or "later" (each sender through every head after it, plus nothing else).
    """

    loaded = resolve_model(model)
    arch = resolve_architecture(loaded.model)
    items = [receivers] if isinstance(receivers, str) else list(receivers)
    if any(r not in (LOGITS, "later") for r in items):
        raise CausalTracingError(
            "path_patch_heads takes receivers 'logits' and/or 'later'; use path_patch for heads"
        )
    rows = []
    for layer in range(arch.num_layers):
        for head in range(arch.num_heads):
            mine = [r for r in items if r != "later" or layer < arch.num_layers - 1]
            rows.append(((layer, head), mine or [LOGITS]))
    result = _run(loaded, pair, rows)
    if "later" in items and LOGITS not in items:
        result.notes.append("last-layer heads have no later heads: their rows use the direct path ('logits')")
    return result


def plot_path_patching(result: PathPatchResult, title: str = "") -> Any:
    """A layer x head heatmap of the normalized effect (rows of `path_patch_heads`); returns the figure."""

    plt = _pyplot()
    grid = np.full((result.num_layers, result.num_heads), np.nan)
    for (layer, head), value in zip(result.senders, result.normalized):
        grid[layer, head] = value
    bound = max(1.0, float(np.nanmax(np.abs(grid)))) if np.isfinite(grid).any() else 1.0
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * result.num_heads, 1.2 + 0.3 * result.num_layers))
    image = ax.imshow(grid, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
    ax.set_xlabel("sender head")
    ax.set_ylabel("sender layer")
    ax.set_xticks(range(result.num_heads))
    ax.set_yticks(range(result.num_layers))
    fig.colorbar(image, ax=ax, label="normalized effect")
    ax.set_title(title or f"path patching, {result.model_id}", fontsize=9)
    fig.tight_layout()
    return fig
