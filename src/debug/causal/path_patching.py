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

`sender_positions` restricts the sender to some positions (an int, a target label such as "ref depth 2", or
"line:<target>" for that target's whole line; default every position): the sender's output is the
counterfactual's only there and the original's everywhere else, so the row measures what the head writes
*at those positions* that reaches the answer through the receivers. `path_patch_hops` does this per hop of a
binding chain: for each chain line ("ref depth 1" = the root constant's line ... "ref depth H" = the line
assigning the queried variable), every head as the sender at that line, one row each, in one call. A sender
restricted to positions before the final token has no direct path (its change never reaches the final
token's residual without a head reading it), so there "logits" alone measures 0 by construction.

Metrics match the sweep's, at the answer position: LD = logit(cf answer) - logit(orig answer); normalized =
(LD - LD_orig) / (LD_cf - LD_orig); P(cf answer); IIA = top-1 equals the cf answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from debug.causal.architectures import get_path, resolve_architecture
from debug.causal.forward import (
    check_eval,
    hidden_arg,
    hooked_logits,
    input_device,
    record_hidden,
    resolve_model,
    unpatched_run,
    with_hidden_arg,
)
from debug.causal.inputs import CausalTracingError, as_pair, check_context, prepare_inputs
from debug.causal.knockout import resolve_positions
from debug.causal.plots import _pyplot
from debug.causal.result import METRICS_DEFINITION, Effects, effects_fields, scored_rows

__all__ = [
    "ALL_POSITIONS",
    "PATH_DEFINITIONS",
    "PathPatchResult",
    "path_patch",
    "path_patch_heads",
    "path_patch_hops",
    "plot_path_patching",
]

PATH_DEFINITIONS: dict[str, str] = {
    "site": "head h of layer l = its head_dim slice of the input of layer l's attention output projection",
    "intervention": (
        "sender head set to its counterfactual output with every other head and MLP frozen at the original; "
        "receiver heads recomputed from that run's layer inputs (original + only the sender's change); then "
        "the original runs with only the receivers replaced and everything after them recomputed; receiver "
        "'logits' = the sender's change added to the final residual (direct path)"
    ),
    "sender_positions": (
        "the sender's output is the counterfactual's only at the row's sender positions and the original's "
        "at every other position ('all' = every position)"
    ),
    "direction": "noising the original / denoising toward the counterfactual, along the chosen paths only",
    "metrics": METRICS_DEFINITION,
}
LOGITS = "logits"
#: The position label of a sender patched at every position.
ALL_POSITIONS = "all"


@dataclass(repr=False)
class PathPatchResult(Effects):
    """Path-patching effects, one row per (sender, sender positions, receivers).

    The metrics (`[rows]`), unpatched runs, answer, tokens, targets, definitions, model id and notes are
    the `debug.causal.result.Effects` fields.

    Attributes:
        senders: Per row, the sender (layer, head).
        sender_positions: Per row, the positions where the sender's output is the counterfactual's.
        position_labels: Per row, those positions as asked for ("all", an int, "ref depth 2",
            "line:ref depth 2", ...).
        receivers: Per row, the receivers: (layer, head) tuples and/or "logits".
        num_heads: Heads per layer.
    """

    senders: list[tuple[int, int]]
    sender_positions: list[list[int]]
    position_labels: list[str]
    receivers: list[list[Any]]
    num_heads: int

    def __repr__(self) -> str:
        return (
            f"PathPatchResult(model_id={self.model_id!r}, rows={len(self.senders)}, "
            f"positions={list(dict.fromkeys(self.position_labels))}, "
            f"normalized={np.round(self.normalized, 3)})"
        )

    def head_grid(self, label: str | None = None, metric: str = "normalized") -> np.ndarray:
        """`[num_layers, num_heads]` of one metric over the rows whose position label is `label`.

        Args:
            label: A position label of the rows (default: the first row's); heads without a row are NaN.
            metric: `logit_diff`, `normalized`, `prob_cf` or `iia`.
        """
        label = self.position_labels[0] if label is None else label
        if label not in self.position_labels:
            known = ", ".join(dict.fromkeys(self.position_labels))
            raise ValueError(f"no rows at {label!r}; labels: {known}")
        grid = np.full((self.num_layers, self.num_heads), np.nan)
        for (layer, head), row_label, value in zip(self.senders, self.position_labels, self.metric(metric)):
            if row_label == label:
                grid[layer, head] = value
        return grid

    def top_senders(self, label: str | None = None, k: int = 5) -> list[tuple[int, int, float]]:
        """The `k` senders with the largest normalized effect at one position label: (layer, head, effect)."""
        grid = self.head_grid(label)
        order = np.argsort(np.nan_to_num(-grid, nan=np.inf), axis=None)[:k]
        return [(int(i // self.num_heads), int(i % self.num_heads), float(grid.flat[i])) for i in order]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN becomes null)."""
        return {
            "method": "path_patching",
            **self.effects_json(),
            "senders": [list(s) for s in self.senders],
            "sender_positions": self.sender_positions,
            "position_labels": self.position_labels,
            "receivers": [[r if r == LOGITS else list(r) for r in rs] for rs in self.receivers],
            "num_heads": self.num_heads,
        }


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
    final: list[Any] = []
    handles = []
    for layer in range(arch.num_layers):
        mlp = get_path(model, arch.mlp_path(layer))
        handles.append(record_hidden(get_path(model, arch.attn_out_path(layer)), store["heads"]))
        handles.append(mlp.register_forward_hook(lambda m, a, out: store["mlp"].append(out.detach().clone())))
    handles.append(record_hidden(get_path(model, arch.spec.final_norm), final))
    batch = torch.stack([pair.original_ids, pair.counterfactual_ids])
    logits = hooked_logits(model, batch, handles)
    store["final"] = final[0]
    return store, logits


def _freeze_heads(
    layer: int,
    arch: Any,
    store: dict,
    senders: list[tuple[int, int]],
    index: list[Any],
    recorded: dict[int, Any],
) -> Any:
    """Step 1's pre-hook on the output projection of `layer`: records the heads, then freezes them.

    Every head's output as computed goes to `recorded[layer]`; then every head is set to the original's,
    except each row's sender (if in this layer), set to the counterfactual's at its positions (`index`).
    """

    heads, hd = arch.num_heads, arch.head_dim

    def pre(module: Any, args: tuple, kwargs: dict) -> tuple:
        x = hidden_arg(args, kwargs)
        rows = x.shape[0]
        recorded[layer] = x.detach().clone().view(rows, x.shape[1], heads, hd)
        frozen = store["heads"][layer][0].expand(rows, -1, -1).clone().view(rows, x.shape[1], heads, hd)
        cf = store["heads"][layer][1].view(x.shape[1], heads, hd)
        for row, (s_layer, s_head) in enumerate(senders):
            if s_layer == layer:
                at = index[row]
                frozen[row, at, s_head] = cf[at, s_head]
        return with_hidden_arg(args, kwargs, frozen.view(x.shape))

    return pre


def _freeze_hooks(
    model: Any, arch: Any, store: dict, senders: list[tuple[int, int]], index: list[Any], recorded: dict
) -> list[Any]:
    """Step 1's hooks: heads frozen (`_freeze_heads`), MLP outputs set to the original's, final norm recorded.

    `recorded` gets each layer's computed head outputs (by layer) and the final norm's input (in "final").
    """

    handles = []
    for layer in range(arch.num_layers):
        handles.append(
            get_path(model, arch.attn_out_path(layer)).register_forward_pre_hook(
                _freeze_heads(layer, arch, store, senders, index, recorded), with_kwargs=True
            )
        )
        orig_mlp = store["mlp"][layer][0]
        handles.append(
            get_path(model, arch.mlp_path(layer)).register_forward_hook(
                lambda m, a, out, value=orig_mlp: value.expand_as(out).clone()
            )
        )
    recorded["final"] = []
    handles.append(record_hidden(get_path(model, arch.spec.final_norm), recorded["final"]))
    return handles


def _receivers_by_layer(receivers: list[list[Any]]) -> dict[int, list[tuple[int, int]]]:
    """Per layer, the (row, head) of every receiver head in it (the "logits" receiver left out)."""
    by_layer: dict[int, list[tuple[int, int]]] = {}
    for row, rs in enumerate(receivers):
        for r in rs:
            if r != LOGITS:
                by_layer.setdefault(r[0], []).append((row, r[1]))
    return by_layer


def _put_receivers(layer: int, arch: Any, slots: list[tuple[int, int]], recorded: dict) -> Any:
    """Step 2's pre-hook on the output projection of `layer`: each (row, head) in `slots` set to step 1's."""

    heads, hd = arch.num_heads, arch.head_dim

    def pre(module: Any, args: tuple, kwargs: dict) -> tuple:
        x = hidden_arg(args, kwargs)
        value = x.clone().view(x.shape[0], x.shape[1], heads, hd)
        for row, head in slots:
            value[row, :, head] = recorded[layer][row, :, head]
        return with_hidden_arg(args, kwargs, value.view(x.shape))

    return pre


def _add_direct(delta_final: Any, direct: Any) -> Any:
    """Step 2's pre-hook on the final norm: the sender's change to the final residual added where `direct`."""

    def pre(module: Any, args: tuple, kwargs: dict) -> tuple:
        x = hidden_arg(args, kwargs)
        return with_hidden_arg(args, kwargs, x + delta_final * direct[:, None, None].to(x.dtype))

    return pre


def _receiver_hooks(
    model: Any, arch: Any, receivers: list[list[Any]], recorded: dict, delta_final: Any, device: Any
) -> list[Any]:
    """Step 2's hooks: receiver heads replaced (`_put_receivers`), the direct path added (`_add_direct`)."""

    handles = [
        get_path(model, arch.attn_out_path(layer)).register_forward_pre_hook(
            _put_receivers(layer, arch, slots, recorded), with_kwargs=True
        )
        for layer, slots in _receivers_by_layer(receivers).items()
    ]
    direct = torch.tensor([LOGITS in rs for rs in receivers], device=device)
    if bool(direct.any()):
        handles.append(
            get_path(model, arch.spec.final_norm).register_forward_pre_hook(
                _add_direct(delta_final, direct), with_kwargs=True
            )
        )
    return handles


def _path_logits(
    model: Any,
    arch: Any,
    pair: Any,
    senders: list[tuple[int, int]],
    positions: list[list[int]],
    receivers: list[list[Any]],
    store: dict,
) -> Any:
    """`[rows, vocab]` logits of the two-step path patch; row i = senders[i] at positions[i], receivers[i]."""

    device = input_device(model)
    index = [torch.tensor(p, device=device) for p in positions]
    ids = pair.original_ids.to(device)[None].expand(len(senders), -1)
    recorded: dict[int | str, Any] = {}  # step 1's head outputs by layer; "final": [its final residual]
    frozen_logits = hooked_logits(model, ids, _freeze_hooks(model, arch, store, senders, index, recorded))
    if all(rs == [LOGITS] for rs in receivers):
        return frozen_logits
    delta_final = recorded["final"][0] - store["final"][0][None]
    return hooked_logits(model, ids, _receiver_hooks(model, arch, receivers, recorded, delta_final, device))


def _senders_at(spec: Any, pair: Any) -> tuple[list[int], str]:
    """The positions of a `sender_positions` argument (None = every position) and the label naming them."""
    if spec is None or spec == ALL_POSITIONS:
        return list(range(len(pair.tokens))), ALL_POSITIONS
    label = str(spec) if isinstance(spec, (int, str)) else ",".join(str(v) for v in spec)
    return resolve_positions(spec, pair.tokens, pair.targets, "sender_positions"), label


def _run(model: Any, pair: Any, rows: list[tuple[tuple[int, int], Any, Any]]) -> PathPatchResult:
    """Check, then path-patch each (sender, sender positions, receivers) row of one pair, batched."""

    loaded = resolve_model(model)
    arch = resolve_architecture(loaded.model)
    check_eval(loaded.model)
    senders = [_check_head(s, arch, "sender") for s, _, _ in rows]
    receivers = [_receivers(r, s, arch) for s, (_, _, r) in zip(senders, rows)]
    empty = [s for s, r in zip(senders, receivers) if not r]
    if empty:
        raise CausalTracingError(
            f"sender {empty[0]} has no receivers after it; use 'logits' for the last layer"
        )
    encoded = prepare_inputs(loaded.tokenizer, *as_pair(pair))
    if encoded.answer is None:
        raise CausalTracingError("path_patch needs programs with answers: pass Programs or (text, answer)")
    check_context(loaded, int(encoded.original_ids.shape[0]), "the original program")
    resolved = {}
    for _, spec, _ in rows:
        key = repr(spec)
        if key not in resolved:
            resolved[key] = _senders_at(spec, encoded)
    positions = [resolved[repr(spec)][0] for _, spec, _ in rows]
    labels = [resolved[repr(spec)][1] for _, spec, _ in rows]
    store, logits = _cache(loaded.model, arch, encoded)
    answer = encoded.answer
    original = unpatched_run(logits[0], answer, loaded.tokenizer)
    counterfactual = unpatched_run(logits[1], answer, loaded.tokenizer)
    patched = _path_logits(loaded.model, arch, encoded, senders, positions, receivers, store)
    notes = [answer.note]
    final = len(encoded.tokens) - 1
    if any(rs == [LOGITS] and final not in ps for rs, ps in zip(receivers, positions)):
        notes.append(
            "a sender restricted to positions before the final token has no direct path to the logits: "
            "'logits' alone measures 0 there by construction (use 'later' to follow it through later heads)"
        )
    return PathPatchResult(
        senders=senders,
        sender_positions=positions,
        position_labels=labels,
        receivers=receivers,
        num_heads=arch.num_heads,
        **effects_fields(
            loaded,
            encoded,
            arch.num_layers,
            scored_rows(patched, answer, original, counterfactual, notes),
            (original, counterfactual),
            PATH_DEFINITIONS,
            notes,
        ),
    )


def path_patch(
    model: Any,
    pair: Any,
    sender: tuple[int, int],
    receivers: Sequence[Any] | str = LOGITS,
    *,
    sender_positions: Any = None,
) -> PathPatchResult:
    """The sender head's counterfactual effect on the answer through `receivers` only.

    Args:
        model: A model id or a `LoadedModel`.
        pair: An (original, counterfactual) pair of `Program`s / `(text, answer)` tuples, or a seed pair dict.
        sender: (layer, head).
        receivers: (layer, head) pairs in later layers, bare layer numbers (all their heads), "later" (every
            head after the sender) and/or "logits" (the direct path).
        sender_positions: Where the sender's output is patched: None (every position), ints, target labels
            ("ref depth 2", "final") or "line:<target>" (that target's whole line).

    Returns:
        A `PathPatchResult` with one row.

    Raises:
        CausalTracingError: A head that does not exist, receivers not after the sender, a sender position
            outside the prompt or an unknown target, bad programs (all before any forward).
    """
    return _run(model, pair, [(sender, sender_positions, receivers)])


def _scan_receivers(receivers: Sequence[Any] | str) -> list[str]:
    items = [receivers] if isinstance(receivers, str) else list(receivers)
    if not items or any(r not in (LOGITS, "later") for r in items):
        raise CausalTracingError(
            "scanning every head takes receivers 'logits' and/or 'later'; use path_patch for heads"
        )
    return items


def _head_rows(arch: Any, items: list[str], spec: Any) -> list[tuple[tuple[int, int], Any, list[str]]]:
    """Every head as a sender (layer-major) at `spec`; last-layer heads fall back to 'logits' for 'later'."""
    rows = []
    for layer in range(arch.num_layers):
        mine = [r for r in items if r != "later" or layer < arch.num_layers - 1]
        rows += [((layer, head), spec, mine or [LOGITS]) for head in range(arch.num_heads)]
    return rows


def _note_last_layer(result: PathPatchResult, items: list[str]) -> PathPatchResult:
    if "later" in items and LOGITS not in items:
        result.notes.append("last-layer heads have no later heads: their rows use the direct path ('logits')")
    return result


def path_patch_heads(
    model: Any, pair: Any, receivers: Sequence[Any] | str = LOGITS, *, sender_positions: Any = None
) -> PathPatchResult:
    """Every head as the sender (rows layer-major), each with the same kind of receivers.

    Receivers that are (layer, head) pairs must sit after every sender, so a scan over all heads takes
    "logits" (direct effects) or "later" (each sender through every head after it, plus nothing else).
    `sender_positions` restricts every sender as in `path_patch`.
    """

    loaded = resolve_model(model)
    arch = resolve_architecture(loaded.model)
    items = _scan_receivers(receivers)
    return _note_last_layer(_run(loaded, pair, _head_rows(arch, items, sender_positions)), items)


def path_patch_hops(
    model: Any, pair: Any, receivers: Sequence[Any] | str = "later", *, whole_line: bool = True
) -> PathPatchResult:
    """Per hop of a binding chain, every head as the sender at that hop's line: which heads carry each hop.

    Rows are hop-major ("ref depth 1" = the root constant's line, ..., "ref depth H" = the line assigning the
    queried variable), then layer-major over heads; `result.head_grid("line:ref depth k")` is one hop's
    layer x head map. All rows run in one batch of forwards.

    Args:
        model: A model id or a `LoadedModel`.
        pair: An (original, counterfactual) binding pair (its targets name the chain lines).
        receivers: "later" (every head after the sender; default) and/or "logits".
        whole_line: Patch the sender at every position of the chain line, its newline included
            ("line:ref depth k"); False patches only the line's first right-hand-side token ("ref depth k").

    Raises:
        CausalTracingError: A pair without chain targets, or bad input as in `path_patch` (before any
            forward).
    """

    loaded = resolve_model(model)
    arch = resolve_architecture(loaded.model)
    items = _scan_receivers(receivers)
    encoded = prepare_inputs(loaded.tokenizer, *as_pair(pair))
    hops = sorted(
        (t for t in encoded.targets if t.startswith("ref depth ")), key=lambda t: int(t.split()[-1])
    )
    if not hops:
        raise CausalTracingError(
            "path_patch_hops needs a pair whose answer comes from a chain of assignments (targets 'ref depth "
            f"k'); this pair has {', '.join(encoded.targets) or 'no targets'}"
            + (f" ({encoded.target_note})" if encoded.target_note else "")
        )
    rows = []
    for hop in hops:
        rows += _head_rows(arch, items, f"line:{hop}" if whole_line else hop)
    return _note_last_layer(_run(loaded, pair, rows), items)


def plot_path_patching(result: PathPatchResult, title: str = "") -> Any:
    """Layer x head heatmaps of the normalized effect, one panel per sender-position label; the figure.

    For the rows of `path_patch_heads` (one panel) or `path_patch_hops` (one panel per hop).
    """

    plt = _pyplot()
    labels = list(dict.fromkeys(result.position_labels))
    grids = [result.head_grid(label) for label in labels]
    finite = [g[np.isfinite(g)] for g in grids]
    peak = max((float(np.abs(f).max()) for f in finite if f.size), default=1.0)
    bound = max(1.0, peak)
    width = 1.0 + 0.6 * result.num_heads
    fig, axes = plt.subplots(
        1, len(labels), figsize=(width * len(labels) + 1.0, 1.2 + 0.3 * result.num_layers), squeeze=False
    )
    for ax, label, grid in zip(axes[0], labels, grids):
        image = ax.imshow(grid, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
        ax.set_xlabel("sender head")
        ax.set_xticks(range(result.num_heads))
        ax.set_yticks(range(result.num_layers))
        ax.set_title(f"sender at {label}", fontsize=8)
    axes[0][0].set_ylabel("sender layer")
    fig.colorbar(image, ax=list(axes[0]), label="normalized effect")
    fig.suptitle(title or f"path patching, {result.model_id}", fontsize=9)
    return fig
