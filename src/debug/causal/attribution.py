"""Attribution patching (AtP, AtP*): first-order estimates of every cell's patching effect from two forwards.

For a cell c (layer, position[, head]) of a site, exact patching replaces the original run's activation a_c by
the counterfactual run's a*_c and measures the logit difference LD = logit(cf answer) - logit(orig answer).
Attribution patching linearizes LD around the original run:

    LD(patched at c) - LD_orig  ~=  (a*_c - a_c) . dLD/da_c

evaluated with one forward of the counterfactual (activations cached, no gradients), one forward of the
original with gradients, and one backward that gives dLD/da for every cell at once (Nanda, "Attribution
Patching"; Kramar et al. 2024, "AtP*"). It is exact for a cell whose effect on LD is linear and drifts from
the exact effect as the network bends between the cell and the answer (attention softmaxes, norms, MLPs).

AtP* (Kramar et al. 2024) adds two corrections, both options here (`qk_fix`, `grad_drop`; `method="atp*"`
turns both on):

* QK fix. A saturated softmax has a near-zero gradient, so a change of queries or keys that moves attention a
  lot is estimated as nothing. The fix computes the change of the attention pattern exactly (softmax
  recomputed with the patched queries and keys) and linearizes only from the pattern on:
  sum over heads, query rows t and keys k of dLD/dA[t, k] * (A_patched[t, k] - A[t, k]). Of this project's
  sites only the residual stream feeds a query or key of its own layer: patching the input of layer l at
  position p changes layer l's query at p (row p of every head's pattern, recomputed with the patched query
  and key) and its key at p (column p of every later row: a one-entry softmax change, in closed form), both
  taken from the counterfactual run, which has the same input at that layer and position. The estimate is
  then the plain one with its linear term through layer l's pattern, (a* - a) . (dLD/dA dA/da), replaced by
  that exact pattern term; everything else (values, the skip path, later layers) stays linear. A head cell is
  the head's output, after its own softmax, and an MLP cell is after its layer's attention: no query or key
  of their layer changes, so the fix leaves their estimates as they are (the definitions say so).
  Attention probabilities are read by running the model's own attention modules with a probe attention
  function (`transformers.AttentionInterface`) that computes the eager softmax and records queries, keys
  and probabilities: no per-architecture code beyond `debug.causal.architectures`.
* GradDrop. A cell's direct and indirect effects can cancel in the gradient while patching still matters.
  For each decoder layer l' of L, one more backward pass drops the gradient through layer l''s residual
  contribution (layer output - input: only the skip path carries gradient past it, and cells inside layer
  l' get none), and AtP+GD(c) = 1/(L-1) * sum over l' of |AtP_l'(c)| (the paper's eq. 11; L-1 because the
  drop of a cell's own layer gives 0). That is a magnitude; `logit_diff` carries it with the sign of the
  undropped estimate, so rank it by |change| (`agreement`'s `spearman_abs`, `top_k_recall`). By linearity
  each drop is one backward from layer l''s input down (of what the full gradient there carries beyond the
  skip path), so the L drops cost about L/2 full backward passes; drops of layers below every swept cell
  change nothing and are not run.

Sites and directions are the exact engine's (`debug.causal.engine.sweep`): residual stream = the input of
decoder layer l (layer num_layers = the final norm's input), attention head = its head_dim slice of the
attention output projection's input, mlp = the MLP block's output; the original runs and counterfactual
activations are patched in. Of the metrics only LD is estimated (and `normalized`, derived from it exactly as
the exact sweep derives it); P(cf answer) and IIA depend on the whole softmax and are not estimated: NaN.
`verify_attribution` (`sweep(..., method="attribution+verify")`) patches the top cells exactly, and
`agreement` compares a full grid with an exact sweep.

`sweep(..., method=...)` dispatches here through `run_method`; the exact sweep is handed in as a callable so
that this module never imports the engine (the engine imports it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from debug._util.jsonable import jsonable
from debug.causal.architectures import Architecture, get_path, resolve_architecture
from debug.causal.forward import (
    SITES,
    answer_from_model,
    check_eval,
    forward_kwargs,
    hidden_arg,
    input_device,
    resolve_model,
    site_path,
    unpatched_run,
)
from debug.causal.inputs import AnswerTokens, CausalTracingError
from debug.causal.plan import SweepPlan, check_site, plan_pair
from debug.causal.result import SweepResult, UnpatchedRun, warn_if_unsolved
from debug.stats import spearman

__all__ = [
    "ATTRIBUTION_METRICS",
    "METHODS",
    "AttributionCheck",
    "agreement",
    "attribution_sweep",
    "run_method",
    "verify_attribution",
]

#: `sweep(method=...)` values: the exact engine; the estimate (AtP); AtP* (the estimate with the QK fix and
#: GradDrop); either with its top cells re-run exactly.
METHODS = ("exact", "attribution", "attribution+verify", "atp*", "atp*+verify")

ATTRIBUTION_METRICS = (
    "estimates, first order (attribution patching): logit_diff = LD_orig + (a_cf - a_orig) . dLD/da at the "
    "cell, with LD = logit(cf) - logit(orig) at the answer position and the gradient taken on the original "
    "run; normalized = (logit_diff - LD_orig)/(LD_cf - LD_orig) as in the exact sweep; prob_cf and iia are "
    "not estimated (NaN): they depend on the whole softmax, not on LD"
)
_DIRECTION = (
    "noising the original / denoising toward the counterfactual: the original program runs, and the cell's "
    "activation is (to first order) replaced by the counterfactual run's activation at the same layer and "
    "position"
)


def _resolve_for_gradients(model: Any) -> Any:
    return resolve_model(model, "attribution patching (it needs gradients)")


def _plan(
    model: Any, original: Any, counterfactual: Any, site: str, layers: Any, positions: Any, heads: Any
) -> SweepPlan:
    check_site(site)
    loaded = _resolve_for_gradients(model)
    arch = resolve_architecture(loaded.model)
    check_eval(loaded.model)
    return plan_pair(loaded, arch, original, counterfactual, site, layers, positions, heads)


def _capture(
    model: torch.nn.Module, arch: Architecture, site: str, layers: list[int], store: dict[int, torch.Tensor]
) -> list[Any]:
    """Hooks that put each layer's site activation (`[batch, seq, width]`, in the graph) into `store`."""
    handles = []
    for layer in layers:
        module = get_path(model, site_path(arch, site, layer))
        if site == "mlp":

            def post(_m: Any, _args: Any, out: Any, layer: int = layer) -> None:
                store[layer] = out[0] if isinstance(out, tuple) else out

            handles.append(module.register_forward_hook(post))
        else:

            def pre(_m: Any, args: tuple, kwargs: dict, layer: int = layer) -> None:
                store[layer] = hidden_arg(args, kwargs)

            handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
    return handles


# ---- QK fix: a probe attention function, the eager softmax with queries, keys and probabilities kept ----

_PROBE = "debug_attribution_probe"
#: id(attention module) -> callback(query, key, probs, mask, scale), set only while `_attention_probe` runs.
_PROBES: dict[int, Callable[..., None]] = {}


def _probe_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **_kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention (`[batch, heads, seq, head_dim]` in, transformers' layout out), reporting to `_PROBES`.

    Dropout is ignored: attribution refuses models in training mode, where it would be on.
    """
    scale = query.shape[-1] ** -0.5 if scaling is None else float(scaling)
    groups = query.shape[1] // key.shape[1]  # grouped-query attention: kv head h // groups serves head h
    key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    scores = torch.matmul(query, key.transpose(-1, -2)) * scale
    mask = None if attention_mask is None else attention_mask[..., : key.shape[-2]]
    if mask is not None:
        scores = scores + mask
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    record = _PROBES.get(id(module))
    if record is not None:
        record(query, key, probs, mask, scale)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), probs


def _register_probe() -> None:
    # deferred: transformers is imported only when the QK fix runs
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(_PROBE, _probe_attention)
    AttentionMaskInterface.register(_PROBE, eager_mask)  # the additive float mask eager attention takes


@dataclass
class _Pattern:
    """One layer's attention on one run: `[heads, seq, head_dim]` queries and keys (per query head), the
    additive `[seq, seq]` mask, the scale, and the `[heads, seq, seq]` probabilities (in the graph when the
    run has gradients)."""

    query: torch.Tensor
    key: torch.Tensor
    mask: torch.Tensor
    scale: float
    probs: torch.Tensor


@contextmanager
def _attention_probe(
    model: torch.nn.Module, arch: Architecture, store: dict[int, _Pattern]
) -> Iterator[None]:
    """Run `model`'s attention through `_probe_attention`, recording every layer's pattern into `store`."""
    _register_probe()
    for layer in range(arch.num_layers):
        # The attention module is the output projection's parent in every layout of the table.
        module = get_path(model, arch.attn_out_path(layer).rsplit(".", 1)[0])

        def record(query: Any, key: Any, probs: Any, mask: Any, scale: float, layer: int = layer) -> None:
            seq = query.shape[-2]
            mask2 = torch.zeros(seq, seq, dtype=torch.float64) if mask is None else mask[0, 0].detach()
            store[layer] = _Pattern(query[0].detach(), key[0].detach(), mask2.double().cpu(), scale, probs)

        _PROBES[id(module)] = record
    previous = model.config._attn_implementation
    model.config._attn_implementation = _PROBE
    try:
        yield
    finally:
        model.config._attn_implementation = previous
        for layer in range(arch.num_layers):
            _PROBES.pop(id(get_path(model, arch.attn_out_path(layer).rsplit(".", 1)[0])), None)


def _pattern_change_effect(
    original: _Pattern, counterfactual: _Pattern, grad_probs: torch.Tensor | None
) -> torch.Tensor:
    """The QK fix's exact pattern term for every position p of one layer: `[seq]`, float64.

    Patching the layer's input at p replaces query p and key p by the counterfactual's. Row p of every head is
    recomputed with both; every other row t sees one key change, score[t, p] += scale * q_t . (k*_p - k_p), a
    one-entry softmax change in closed form. Returns sum over heads, rows t and keys k of
    dLD/dA[t, k] * (A_patched_p[t, k] - A[t, k]).
    """
    if grad_probs is None:
        return torch.zeros(original.query.shape[-2], dtype=torch.float64)
    q, k, scale = original.query.double().cpu(), original.key.double().cpu(), original.scale
    q_cf, k_cf = counterfactual.query.double().cpu(), counterfactual.key.double().cpu()
    mask, g = original.mask, grad_probs[0].double().cpu()
    seq = q.shape[-2]
    diag = torch.arange(seq)
    scores = scale * q @ k.transpose(-1, -2) + mask
    log_a = torch.log_softmax(scores, dim=-1)
    a = log_a.exp()
    # Row p: the patched query against the original keys, with key p patched too.
    rows = scale * q_cf @ k.transpose(-1, -2) + mask
    rows[:, diag, diag] = scale * (q_cf * k_cf).sum(-1) + mask[diag, diag]
    row_effect = (g * (torch.softmax(rows, dim=-1) - a)).sum(-1)  # [heads, p]
    # Rows t != p: A'[t, p] = A[t, p] e^d / (others + A[t, p] e^d), the other entries scaled by
    # (1 - A')/(1 - A); the effect is (A'[t, p] - A[t, p]) * (g[t, p] - the A-weighted mean of g over the
    # other keys).
    shift = scale * q @ (k_cf - k).transpose(-1, -2)  # [heads, t, p]
    ga = g * a
    others, weighted = 1.0 - a, ga.sum(-1, keepdim=True) - ga
    # At most one entry of a row exceeds 1/2; there 1 - A loses digits, so sum the other entries directly.
    top = a.argmax(-1, keepdim=True)
    others = others.scatter(-1, top, a.scatter(-1, top, 0.0).sum(-1, keepdim=True))
    weighted = weighted.scatter(-1, top, ga.scatter(-1, top, 0.0).sum(-1, keepdim=True))
    new = torch.sigmoid(log_a + shift - torch.log(others))
    mean_others = torch.where(others > 0, weighted / others.clamp_min(1e-300), torch.zeros_like(others))
    column = (new - a) * (g - mean_others)
    column[:, diag, diag] = 0.0  # row p is counted above, with its query patched as well
    return (row_effect + column.sum(-2)).sum(0)


def attribution_sweep(
    model: Any,
    original: Any,
    counterfactual: Any,
    *,
    site: str = "residual_stream",
    layers: Any = None,
    positions: Any = None,
    heads: Any = None,
    warn_unsolved: bool = True,
    qk_fix: bool = False,
    grad_drop: bool = False,
) -> SweepResult:
    """Estimate every cell's patching effect on LD to first order: two forwards and one backward in all.

    Args:
        model: A model id (loaded with `debug.models.load`) or a `LoadedModel` in eval mode with weights in
            this process (a served `openai:` model has no gradients).
        original: The original program (a `Program`, `(text, answer)`, or text: then the answers are the
            model's own top-1 tokens on the two runs).
        counterfactual: The counterfactual, of the same token length.
        site: "residual_stream", "attention_heads" or "mlp".
        layers: Layers (default all decoder layers; for the residual stream `num_layers` adds the final
            residual).
        positions: Token positions (default all).
        heads: Heads for "attention_heads" (default all).
        warn_unsolved: Warn (`UnsolvedPairWarning`) when the model's top-1 is wrong on either run.
        qk_fix: AtP*'s QK fix (module docstring): the change of the patched layer's attention pattern computed
            exactly. It changes residual-stream cells of decoder layers only; head and MLP cells come after
            their layer's softmax and keep the plain estimate.
        grad_drop: AtP*'s GradDrop (module docstring): up to one more backward pass per decoder layer;
            `logit_diff` then holds LD_orig + sign(undropped estimate) * 1/(L-1) sum |per-drop estimate|.
            Needs at least 2 decoder layers.

    Returns:
        A `SweepResult` shaped like the exact sweep's: `logit_diff` holds LD_orig + the estimated change,
        `normalized` is derived from it as in the exact sweep, `prob_cf` and `iia` are NaN (not estimable);
        `definitions["method"]` says which estimate it is.

    Raises:
        CausalTracingError: Bad site or indices, unequal lengths, equal answers, training mode, GradDrop on a
            one-layer model (before any forward).
        debug.models.WeightsRequiredError: A served model.
    """
    started = time.perf_counter()
    plan = _plan(model, original, counterfactual, site, layers, positions, heads)
    arch = plan.arch
    if grad_drop and arch.num_layers < 2:
        raise CausalTracingError(
            "GradDrop needs at least 2 decoder layers (it divides by L - 1); use qk_fix alone"
        )
    # The QK fix reads layer l's pattern for residual cells of decoder layers l (not the final residual).
    qk_layers = (
        [layer for layer in plan.layers if layer < arch.num_layers]
        if qk_fix and site == "residual_stream"
        else []
    )
    traced = _trace(plan, qk_layers, grad_drop)
    tokenizer = plan.loaded.tokenizer
    answer = plan.pair.answer or answer_from_model(traced.orig_logits.detach(), traced.cf_logits, tokenizer)
    runs = (
        unpatched_run(traced.orig_logits, answer, tokenizer),
        unpatched_run(traced.cf_logits, answer, tokenizer),
    )
    ld = (
        traced.orig_logits[answer.counterfactual_id].double()
        - traced.orig_logits[answer.original_id].double()
    )
    grads = _gradients(traced, ld, plan, qk_layers, grad_drop)
    base = traced.estimate(plan, qk_layers, grads.sites, grads.probs)
    final = _grad_drop(traced, plan, qk_layers, grads, base) if grad_drop else base
    return _result(
        plan, answer, runs, final, started, warn_unsolved, _method_sentence(plan, qk_layers, grad_drop)
    )


@dataclass
class _Traced:
    """The two forwards of an attribution sweep: logits, site activations, patterns, layer inputs."""

    cf_logits: torch.Tensor
    orig_logits: torch.Tensor
    cf_acts: dict[int, torch.Tensor]
    orig_acts: dict[int, torch.Tensor]  # in the graph
    cf_patterns: dict[int, Any]
    patterns: dict[int, Any]  # in the graph (QK fix)
    layer_inputs: dict[int, torch.Tensor]  # every decoder layer's input and the final residual (GradDrop)
    deltas: dict[int, torch.Tensor] = field(default_factory=dict)

    def estimate(
        self, plan: SweepPlan, qk_layers: list[int], site_grads: dict[int, Any], prob_grads: dict[int, Any]
    ) -> np.ndarray:
        """First-order estimates of every cell from these gradients, QK-fixed where `qk_layers` say."""
        cells = _cell_estimates(plan, self.deltas, site_grads)
        for layer in qk_layers:
            cells[plan.layers.index(layer)] += _qk_correction(
                self.patterns[layer],
                self.cf_patterns[layer],
                prob_grads[layer],
                self.orig_acts[layer],
                self.deltas[layer],
            )[plan.positions].numpy()
        return cells


def _trace(plan: SweepPlan, qk_layers: list[int], grad_drop: bool) -> _Traced:
    """The counterfactual forward (no gradients), then the original's, its read activations in the graph."""
    hf, arch, site = plan.loaded.model, plan.arch, plan.site
    device = input_device(hf)
    kwargs = forward_kwargs(hf)
    probe = _attention_probe if qk_layers else _no_probe

    cf_acts: dict[int, torch.Tensor] = {}
    cf_patterns: dict[int, _Pattern] = {}
    handles = _capture(hf, arch, site, plan.layers, cf_acts)
    try:
        with torch.no_grad(), probe(hf, arch, cf_patterns):
            cf_logits = hf(input_ids=plan.pair.counterfactual_ids.to(device)[None], **kwargs).logits[0, -1]
    finally:
        for h in handles:
            h.remove()

    orig_acts: dict[int, torch.Tensor] = {}
    patterns: dict[int, _Pattern] = {}
    layer_inputs: dict[int, torch.Tensor] = {}
    handles = _capture(hf, arch, site, plan.layers, orig_acts)
    # A leaf after the embedding puts every later activation in the graph even when the weights are frozen;
    # gradients are asked only for the activations, never accumulated into parameters.
    handles.append(
        hf.get_input_embeddings().register_forward_hook(lambda _m, _a, out: out.detach().requires_grad_(True))
    )
    if grad_drop:
        handles.extend(_capture(hf, arch, "residual_stream", list(range(arch.num_layers + 1)), layer_inputs))
    try:
        with torch.enable_grad(), probe(hf, arch, patterns):
            orig_logits = hf(input_ids=plan.pair.original_ids.to(device)[None], **kwargs).logits[0, -1]
    finally:
        for h in handles:
            h.remove()
    traced = _Traced(cf_logits, orig_logits, cf_acts, orig_acts, cf_patterns, patterns, layer_inputs)
    traced.deltas = {m: (cf_acts[m][0] - orig_acts[m][0].detach()).double() for m in plan.layers}
    return traced


@dataclass
class _Gradients:
    """dLD/da at every swept layer, dLD/dA of the patterns the QK fix reads, dLD/dr at every layer input."""

    sites: dict[int, Any]
    probs: dict[int, Any]
    inputs: dict[int, Any]


def _gradients(
    traced: _Traced, ld: torch.Tensor, plan: SweepPlan, qk_layers: list[int], grad_drop: bool
) -> _Gradients:
    """One backward for all of them (the graph is kept when the QK fix or GradDrop reads it again)."""
    inputs = list(range(plan.arch.num_layers + 1)) if grad_drop else []
    wanted = [traced.orig_acts[m] for m in plan.layers] + [traced.patterns[m].probs for m in qk_layers]
    wanted += [traced.layer_inputs[m] for m in inputs]
    grads = iter(
        torch.autograd.grad(ld, wanted, allow_unused=True, retain_graph=bool(qk_layers) or grad_drop)
    )
    sites = {m: next(grads) for m in plan.layers}
    probs = {m: next(grads) for m in qk_layers}
    return _Gradients(sites, probs, {m: next(grads) for m in inputs})


def _grad_drop(
    traced: _Traced, plan: SweepPlan, qk_layers: list[int], grads: _Gradients, base: np.ndarray
) -> np.ndarray:
    """AtP+GD: sign(base) * 1/(L-1) * sum over dropped layers l' of |the estimate without l''s gradient|.

    Dropping layer l' removes the gradient that enters l''s residual contribution from r^(l'+1):
    u = dLD/dr^l' - dLD/dr^(l'+1), what the full gradient at r^l' carries beyond the skip path. By linearity,
    below r^l' every gradient loses the backward of u from r^l'; inside layer l' nothing is left; above it
    nothing changes. One backward per drop, each only from r^l' down. Drops of layers below every swept
    cell change none of them: those terms are `base`.
    """
    num_layers = plan.arch.num_layers
    below = min(min(plan.layers), num_layers)
    total = below * np.abs(base)
    for drop in range(below, num_layers):
        u = _minus(grads.inputs[drop], grads.inputs[drop + 1])
        sites_below = [m for m in plan.layers if m < drop]
        probs_below = [m for m in qk_layers if m < drop]
        targets = [traced.orig_acts[m] for m in sites_below] + [traced.patterns[m].probs for m in probs_below]
        lost = iter(
            torch.autograd.grad(traced.layer_inputs[drop], targets, u, retain_graph=True, allow_unused=True)
            if targets and u is not None
            else [None] * len(targets)
        )
        dropped_sites = {m: _minus(grads.sites[m], next(lost)) for m in sites_below}
        dropped_probs = {m: _minus(grads.probs[m], next(lost)) for m in probs_below}
        for m in plan.layers:
            if m == drop:
                # r^l' keeps its skip path (dLD/dr^(l'+1)); a head or MLP inside layer l' keeps nothing.
                dropped_sites[m] = grads.inputs[drop + 1] if plan.site == "residual_stream" else None
            elif m > drop:
                dropped_sites[m] = grads.sites[m]
        for m in qk_layers:
            if m >= drop:
                dropped_probs[m] = None if m == drop else grads.probs[m]
        total += np.abs(traced.estimate(plan, qk_layers, dropped_sites, dropped_probs))
    return np.where(base < 0, -1.0, 1.0) * total / (num_layers - 1)


def _minus(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    """a - b, with None (a gradient autograd found unused) as zero."""
    if b is None:
        return a
    return -b if a is None else a - b


@contextmanager
def _no_probe(_model: Any, _arch: Any, _store: Any) -> Iterator[None]:
    yield


def _cell_estimates(
    plan: SweepPlan, deltas: dict[int, torch.Tensor], grads: dict[int, torch.Tensor | None]
) -> np.ndarray:
    """(a* - a) . dLD/da per cell, `[layers, positions(, heads)]`, float64."""
    pos = torch.tensor(plan.positions)
    rows = []
    for layer in plan.layers:
        delta, grad = deltas[layer], grads[layer]
        grad = torch.zeros_like(delta) if grad is None else grad[0].double()
        if plan.site == "attention_heads":
            shape = (delta.shape[0], plan.arch.num_heads, plan.arch.head_dim)
            cell = (delta.view(shape) * grad.view(shape)).sum(-1)[pos][:, plan.heads]
        else:
            cell = (delta * grad).sum(-1)[pos]
        rows.append(cell.cpu().numpy())
    return np.stack(rows).astype(np.float64)


def _qk_correction(
    original: _Pattern,
    counterfactual: _Pattern,
    grad_probs: torch.Tensor | None,
    layer_input: torch.Tensor,
    delta: torch.Tensor,
) -> torch.Tensor:
    """Per position: the exact pattern term minus the plain estimate's linear term through that pattern."""
    seq = delta.shape[0]
    if grad_probs is None:
        return torch.zeros(seq, dtype=torch.float64)
    # d(sum dLD/dA * A)/da at every position: what the plain estimate's gradient carries through this pattern
    # (query and key paths together); a local backward from the probabilities to the layer input.
    (through,) = torch.autograd.grad(
        original.probs, layer_input, grad_probs, retain_graph=True, allow_unused=True
    )
    linear = (
        torch.zeros(seq, dtype=torch.float64) if through is None else (through[0].double() * delta).sum(-1)
    )
    return _pattern_change_effect(original, counterfactual, grad_probs) - linear.cpu()


def _method_sentence(plan: SweepPlan, qk_layers: list[int], grad_drop: bool) -> str:
    parts = [
        "attribution: one counterfactual forward (activations cached), one original forward with gradients, "
        "one backward for all cells"
    ]
    if qk_layers:
        parts.append(
            "AtP* QK fix: each residual cell's change of its layer's attention pattern computed exactly, "
            "linearized from the pattern on"
        )
    elif plan.site != "residual_stream":
        parts.append(f"no QK fix: {plan.site} cells come after their layer's softmax")
    else:
        parts.append("no QK fix")
    if grad_drop:
        parts.append(
            "AtP* GradDrop: 1/(L-1) sum over decoder layers l' of |estimate with the gradient through l''s "
            "residual contribution dropped|, signed as the undropped estimate (a magnitude: rank by |change|)"
        )
    else:
        parts.append("no GradDrop")
    return "; ".join(parts)


def _result(
    plan: SweepPlan,
    answer: AnswerTokens,
    runs: tuple[UnpatchedRun, UnpatchedRun],
    estimate: np.ndarray,
    started: float,
    warn_unsolved: bool,
    method: str,
) -> SweepResult:
    original, counterfactual = runs
    notes = [answer.note] + ([plan.pair.target_note] if plan.pair.target_note else [])
    notes.append(
        "attribution patching: logit_diff and normalized are first-order estimates; prob_cf and iia are NaN"
    )
    denominator = counterfactual.logit_diff - original.logit_diff
    if abs(denominator) < 1e-6:
        normalized = np.full(estimate.shape, np.nan)
        notes.append("LD_cf equals LD_orig: the normalized effect is undefined (NaN)")
    else:
        normalized = estimate / denominator
    result = SweepResult(
        site=plan.site,
        layers=plan.layers,
        positions=plan.positions,
        heads=plan.heads,
        num_layers=plan.arch.num_layers,
        tokens=plan.pair.tokens,
        targets=plan.pair.targets,
        logit_diff=original.logit_diff + estimate,
        normalized=normalized,
        prob_cf=np.full(estimate.shape, np.nan),
        iia=np.full(estimate.shape, np.nan),
        original=original,
        counterfactual=counterfactual,
        answer=answer,
        definitions={
            "site": SITES[plan.site],
            "direction": _DIRECTION,
            "metrics": ATTRIBUTION_METRICS,
            "method": method,
            "answer": answer.note,
        },
        model_id=str(getattr(plan.loaded, "model_id", "")),
        notes=notes,
        seconds=time.perf_counter() - started,
        forwards=2,
    )
    if not result.solved:
        result.notes.append(result.unsolved_message())
        if warn_unsolved:
            warn_if_unsolved(result, stacklevel=3)
    return result


def _effect(result: SweepResult) -> np.ndarray:
    """LD change of every cell relative to the unpatched original (estimated or exact)."""
    return np.asarray(result.logit_diff, dtype=np.float64) - result.original.logit_diff


def _top(values: np.ndarray, k: int) -> np.ndarray:
    # Largest |value| first; a stable sort keeps ties in grid order, so the choice is deterministic.
    return np.argsort(-np.abs(values), kind="stable")[:k]


def agreement(estimate: SweepResult, exact: SweepResult, top_k: int = 20) -> dict[str, float]:
    """How well an attribution sweep ranks cells, against an exact sweep over the same cells.

    Both are compared on the LD change of each cell (`logit_diff - original.logit_diff`).

    Args:
        estimate: `attribution_sweep`'s result.
        exact: The exact sweep of the same model, pair, site, layers, positions and heads.
        top_k: Cells counted by the recall.

    Returns:
        `spearman`: Spearman rank correlation of the signed changes over all cells; `spearman_abs`: the same
        of |change| (how GradDrop's magnitudes are meant to be ranked); `top_k_recall`: the
        fraction of the `top_k` cells with the largest exact |change| that are also among the `top_k` with
        the largest estimated |change|; `sign_agreement`: the fraction of those exact top cells whose
        estimate has the exact change's sign; `cells` and `k` (top_k capped at the number of cells).

    Raises:
        CausalTracingError: When the two results cover different cells or top_k < 1.
    """
    if top_k < 1:
        raise CausalTracingError(f"top_k must be at least 1; got {top_k}")
    same = (estimate.site, estimate.layers, estimate.positions, estimate.heads) == (
        exact.site,
        exact.layers,
        exact.positions,
        exact.heads,
    )
    if not same:
        raise CausalTracingError(
            "estimate and exact cover different cells; sweep the same site, layers, positions and heads"
        )
    est, ex = _effect(estimate).ravel(), _effect(exact).ravel()
    k = min(top_k, est.size)
    top_exact = _top(ex, k)
    recall = len(set(top_exact.tolist()) & set(_top(est, k).tolist())) / k
    return {
        "spearman": spearman(est, ex),
        "spearman_abs": spearman(np.abs(est), np.abs(ex)),
        "top_k_recall": recall,
        "sign_agreement": float(np.mean(np.sign(est[top_exact]) == np.sign(ex[top_exact]))),
        "cells": float(est.size),
        "k": float(k),
    }


@dataclass
class AttributionCheck:
    """An attribution sweep with its `k` top cells re-run by exact patching.

    Attributes:
        attribution: The attribution sweep (estimates for every cell).
        cells: The verified cells, `(layer, position)` or `(layer, position, head)`, largest estimated |LD
            change| first.
        estimated: Estimated LD change of each verified cell (`attribution.logit_diff - LD_orig`).
        exact: Exact LD change of each verified cell (exact patched LD - LD_orig).
        exact_normalized: The exact sweep's normalized effect of each verified cell.
        spearman: Spearman rank correlation of `estimated` and `exact` over the verified cells only (NaN
            with fewer than 2 cells or constant values).
        top_half_recall: Of the ceil(k/2) verified cells with the largest exact |change|, the fraction that
            are also among the ceil(k/2) with the largest estimated |change|: whether the estimate orders
            the top of its own list correctly. It says nothing about cells outside the list (for that, run
            an exact sweep and `agreement`).
        sign_agreement: Fraction of verified cells whose estimate has the exact change's sign.
        seconds: Wall time of the estimate and the verification together.
        definitions: What each field means, as sentences.
    """

    attribution: SweepResult
    cells: list[tuple[int, ...]]
    estimated: np.ndarray
    exact: np.ndarray
    exact_normalized: np.ndarray
    spearman: float
    top_half_recall: float
    sign_agreement: float
    seconds: float = 0.0
    definitions: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN becomes null)."""
        return jsonable(
            {
                "attribution": self.attribution.to_dict(),
                "cells": [list(c) for c in self.cells],
                "estimated": self.estimated.tolist(),
                "exact": self.exact.tolist(),
                "exact_normalized": self.exact_normalized.tolist(),
                "spearman": self.spearman,
                "top_half_recall": self.top_half_recall,
                "sign_agreement": self.sign_agreement,
                "seconds": self.seconds,
                "definitions": self.definitions,
            }
        )


def verify_attribution(
    model: Any,
    original: Any,
    counterfactual: Any,
    *,
    exact_sweep_pairs: Callable[..., list[SweepResult]],
    site: str = "residual_stream",
    layers: Any = None,
    positions: Any = None,
    heads: Any = None,
    top_k: int = 20,
    batch_size: int | None = None,
    reuse_prefix: bool | None = None,
    warn_unsolved: bool = True,
    qk_fix: bool = False,
    grad_drop: bool = False,
) -> AttributionCheck:
    """Attribute every cell, then patch the `top_k` cells with the largest estimated |LD change| exactly.

    Args:
        model, original, counterfactual, site, layers, positions, heads, warn_unsolved, qk_fix, grad_drop: As
            in `attribution_sweep`.
        exact_sweep_pairs: The exact engine (`debug.causal.engine.sweep_pairs`); `sweep(...,
            method="attribution+verify")` passes it. It runs once, on the pair once per layer among the top
            cells, each at that layer's top positions (and the top cells' heads): a small superset of the top
            cells, in shared forwards.
        top_k: How many cells to verify (at least 1; capped at the number of cells).
        batch_size, reuse_prefix: Passed to the exact sweep.

    Returns:
        An `AttributionCheck`.
    """
    if int(top_k) < 1:
        raise CausalTracingError(f"top_k must be at least 1; got {top_k}")
    started = time.perf_counter()
    loaded = _resolve_for_gradients(model)
    estimate = attribution_sweep(
        loaded,
        original,
        counterfactual,
        site=site,
        layers=layers,
        positions=positions,
        heads=heads,
        warn_unsolved=warn_unsolved,
        qk_fix=qk_fix,
        grad_drop=grad_drop,
    )
    effect = _effect(estimate)
    axes = [estimate.layers, estimate.positions] + ([estimate.heads] if estimate.heads is not None else [])
    flat = _top(effect.ravel(), min(int(top_k), effect.size))
    index = [np.unravel_index(i, effect.shape) for i in flat]
    cells = [tuple(int(axis[j]) for axis, j in zip(axes, idx)) for idx in index]
    exact = np.empty(len(cells))
    exact_normalized = np.empty(len(cells))
    # One exact sweep over the pair once per layer among the top cells, each at that layer's top positions:
    # all of them share the batched forwards (a small superset of the top cells, heads over their union).
    at_layers = sorted({c[0] for c in cells})
    positions_at = [sorted({c[1] for c in cells if c[0] == layer}) for layer in at_layers]
    hs = sorted({c[2] for c in cells}) if site == "attention_heads" else None
    runs = exact_sweep_pairs(
        loaded,
        [(original, counterfactual)] * len(at_layers),
        site=site,
        layers=[[layer] for layer in at_layers],
        positions=positions_at,
        heads=hs,
        batch_size=batch_size,
        reuse_prefix=reuse_prefix,
        warn_unsolved=False,
    )
    for i, cell in enumerate(cells):
        k = at_layers.index(cell[0])
        run = runs[k]
        at = (0, positions_at[k].index(cell[1])) + ((hs.index(cell[2]),) if hs is not None else ())
        exact[i] = run.logit_diff[at] - run.original.logit_diff
        exact_normalized[i] = run.normalized[at]
    estimated = effect.ravel()[flat]
    half = -(-len(cells) // 2)
    recall = len(set(_top(exact, half).tolist()) & set(range(half))) / half
    return AttributionCheck(
        attribution=estimate,
        cells=cells,
        estimated=estimated,
        exact=exact,
        exact_normalized=exact_normalized,
        spearman=spearman(estimated, exact),
        top_half_recall=recall,
        sign_agreement=float(np.mean(np.sign(estimated) == np.sign(exact))),
        seconds=time.perf_counter() - started,
        definitions={
            "cells": f"the {len(cells)} cells with the largest estimated |LD change|, largest first",
            "estimated": "attribution estimate of LD_patched - LD_orig",
            "exact": "LD_patched - LD_orig from exact patching (debug.causal.sweep) of the same cell",
            "spearman": "Spearman rank correlation of estimated and exact over the verified cells only",
            "top_half_recall": (
                "of the ceil(k/2) verified cells with the largest exact |change|, the fraction also among "
                "the ceil(k/2) with the largest estimated |change| (within the verified cells only)"
            ),
            "sign_agreement": "fraction of verified cells whose estimate has the exact change's sign",
        },
    )


def run_method(method: str, *, exact_sweep_pairs: Callable[..., list[SweepResult]], **kwargs: Any) -> Any:
    """Run `sweep(..., method=method)` for a method other than "exact".

    Args:
        method: "attribution" (AtP), "atp*" (AtP with the QK fix and GradDrop), or either with "+verify" (its
            `top_k` cells patched exactly: an `AttributionCheck`).
        exact_sweep_pairs: The exact engine (`debug.causal.engine.sweep_pairs`), for verification.
        **kwargs: `sweep`'s arguments (model, original, counterfactual, site, layers, positions, heads,
            batch_size, progress, reuse_prefix, warn_unsolved, top_k).

    Raises:
        CausalTracingError: An unknown method, in one line naming the methods.
    """
    if method not in METHODS or method == "exact":
        raise CausalTracingError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    estimator, _, verify = method.partition("+")
    star = estimator == "atp*"
    top_k = kwargs.pop("top_k", 20)
    batch_size = kwargs.pop("batch_size", None)
    reuse_prefix = kwargs.pop("reuse_prefix", None)
    kwargs.pop("progress", None)  # a few forwards and backwards: nothing to show progress over
    if not verify:
        return attribution_sweep(**kwargs, qk_fix=star, grad_drop=star)
    return verify_attribution(
        **kwargs,
        exact_sweep_pairs=exact_sweep_pairs,
        top_k=top_k,
        batch_size=batch_size,
        reuse_prefix=reuse_prefix,
        qk_fix=star,
        grad_drop=star,
    )
