"""Attribution patching (AtP): a first-order estimate of every cell's patching effect from two forwards.

For a cell c (layer, position[, head]) of a site, exact patching replaces the original run's activation a_c by
the counterfactual run's a*_c and measures the logit difference LD = logit(cf answer) - logit(orig answer).
Attribution patching linearizes LD around the original run:

    LD(patched at c) - LD_orig  ~=  (a*_c - a_c) . dLD/da_c

evaluated with one forward of the counterfactual (activations cached, no gradients), one forward of the
original with gradients, and one backward that gives dLD/da for every cell at once (Nanda, "Attribution
Patching"; Kramar et al. 2024, "AtP*"). It is exact for a cell whose effect on LD is linear and drifts from
the exact effect as the network bends between the cell and the answer (attention softmaxes, norms, MLPs).

Sites and directions are the exact engine's (`debug.causal.engine.sweep`): residual stream = the input of
decoder layer l (layer num_layers = the final norm's input), attention head = its head_dim slice of the
attention output projection's input, mlp = the MLP block's output; the original runs and counterfactual
activations are patched in. Of the metrics only LD is estimated (and `normalized`, derived from it exactly as
the exact sweep derives it); P(cf answer) and IIA depend on the whole softmax and are not estimated: NaN.

Not implemented from AtP*: the QK fix (recomputing attention softmaxes for patched queries and keys) and
GradDrop. With the sites above the patched quantity is never a query or key of its own layer: a head cell is
the head's output, after its softmax. Where linearizing through later softmaxes matters, `verify_attribution`
(`sweep(..., method="attribution+verify")`) measures it on the top cells, and `agreement` over a full grid.

`sweep(..., method=...)` dispatches here through `run_method`; the exact sweep is handed in as a callable so
that this module never imports the engine (the engine imports it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
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

__all__ = [
    "ATTRIBUTION_METRICS",
    "METHODS",
    "AttributionCheck",
    "agreement",
    "attribution_sweep",
    "run_method",
    "verify_attribution",
]

#: `sweep(method=...)` values: the exact engine, the estimate, the estimate with its top cells re-run exactly.
METHODS = ("exact", "attribution", "attribution+verify")

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

    Returns:
        A `SweepResult` shaped like the exact sweep's: `logit_diff` holds LD_orig + the estimated change,
        `normalized` is derived from it as in the exact sweep, `prob_cf` and `iia` are NaN (not estimable);
        `definitions["method"]` says so.

    Raises:
        CausalTracingError: Bad site or indices, unequal lengths, equal answers, training mode (before any
            forward).
        debug.models.WeightsRequiredError: A served model.
    """
    started = time.perf_counter()
    plan = _plan(model, original, counterfactual, site, layers, positions, heads)
    hf, tokenizer, arch = plan.loaded.model, plan.loaded.tokenizer, plan.arch
    device = input_device(hf)
    kwargs = forward_kwargs(hf)

    cf_acts: dict[int, torch.Tensor] = {}
    handles = _capture(hf, arch, site, plan.layers, cf_acts)
    try:
        with torch.no_grad():
            cf_logits = hf(input_ids=plan.pair.counterfactual_ids.to(device)[None], **kwargs).logits[0, -1]
    finally:
        for h in handles:
            h.remove()

    orig_acts: dict[int, torch.Tensor] = {}
    handles = _capture(hf, arch, site, plan.layers, orig_acts)
    # A leaf after the embedding puts every later activation in the graph even when the weights are frozen;
    # gradients are asked only for the activations, never accumulated into parameters.
    handles.append(
        hf.get_input_embeddings().register_forward_hook(lambda _m, _a, out: out.detach().requires_grad_(True))
    )
    try:
        with torch.enable_grad():
            orig_logits = hf(input_ids=plan.pair.original_ids.to(device)[None], **kwargs).logits[0, -1]
    finally:
        for h in handles:
            h.remove()

    answer = plan.pair.answer or answer_from_model(orig_logits.detach(), cf_logits, tokenizer)
    runs = (unpatched_run(orig_logits, answer, tokenizer), unpatched_run(cf_logits, answer, tokenizer))
    ld = orig_logits[answer.counterfactual_id].double() - orig_logits[answer.original_id].double()
    grads = torch.autograd.grad(ld, [orig_acts[layer] for layer in plan.layers], allow_unused=True)

    pos = torch.tensor(plan.positions)
    rows = []
    for layer, grad in zip(plan.layers, grads):
        act = orig_acts[layer][0].detach()
        delta = (cf_acts[layer][0] - act).double()
        grad = torch.zeros_like(delta) if grad is None else grad[0].double()
        if site == "attention_heads":
            shape = (delta.shape[0], arch.num_heads, arch.head_dim)
            cell = (delta.view(shape) * grad.view(shape)).sum(-1)[pos][:, plan.heads]
        else:
            cell = (delta * grad).sum(-1)[pos]
        rows.append(cell.cpu().numpy())
    estimate = np.stack(rows).astype(np.float64)
    return _result(plan, answer, runs, estimate, started, warn_unsolved)


def _result(
    plan: SweepPlan,
    answer: AnswerTokens,
    runs: tuple[UnpatchedRun, UnpatchedRun],
    estimate: np.ndarray,
    started: float,
    warn_unsolved: bool,
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
            "method": (
                "attribution: one counterfactual forward (activations cached), one original forward with "
                "gradients, one backward for all cells; AtP* QK fix and GradDrop not applied"
            ),
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


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr  # deferred: scipy costs a noticeable part of a second to import

    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def agreement(estimate: SweepResult, exact: SweepResult, top_k: int = 20) -> dict[str, float]:
    """How well an attribution sweep ranks cells, against an exact sweep over the same cells.

    Both are compared on the LD change of each cell (`logit_diff - original.logit_diff`).

    Args:
        estimate: `attribution_sweep`'s result.
        exact: The exact sweep of the same model, pair, site, layers, positions and heads.
        top_k: Cells counted by the recall.

    Returns:
        `spearman`: Spearman rank correlation of the signed changes over all cells; `top_k_recall`: the
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
        "spearman": _spearman(est, ex),
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
    exact_sweep: Callable[..., SweepResult],
    site: str = "residual_stream",
    layers: Any = None,
    positions: Any = None,
    heads: Any = None,
    top_k: int = 20,
    batch_size: int | None = None,
    reuse_prefix: bool | None = None,
    warn_unsolved: bool = True,
) -> AttributionCheck:
    """Attribute every cell, then patch the `top_k` cells with the largest estimated |LD change| exactly.

    Args:
        model, original, counterfactual, site, layers, positions, heads, warn_unsolved: As in
            `attribution_sweep`.
        exact_sweep: The exact engine (`debug.causal.engine.sweep`); `sweep(..., method="attribution+verify")`
            passes it. It runs once per layer among the top cells, over that layer's top positions (and
            heads), a small superset of the top cells.
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
    )
    effect = _effect(estimate)
    axes = [estimate.layers, estimate.positions] + ([estimate.heads] if estimate.heads is not None else [])
    flat = _top(effect.ravel(), min(int(top_k), effect.size))
    index = [np.unravel_index(i, effect.shape) for i in flat]
    cells = [tuple(int(axis[j]) for axis, j in zip(axes, idx)) for idx in index]
    exact = np.empty(len(cells))
    exact_normalized = np.empty(len(cells))
    for layer in sorted({c[0] for c in cells}):
        members = [i for i, c in enumerate(cells) if c[0] == layer]
        pos = sorted({cells[i][1] for i in members})
        hs = sorted({cells[i][2] for i in members}) if site == "attention_heads" else None
        run = exact_sweep(
            loaded,
            original,
            counterfactual,
            site=site,
            layers=[layer],
            positions=pos,
            heads=hs,
            batch_size=batch_size,
            reuse_prefix=reuse_prefix,
            warn_unsolved=False,
        )
        for i in members:
            at = (0, pos.index(cells[i][1])) + ((hs.index(cells[i][2]),) if hs is not None else ())
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
        spearman=_spearman(estimated, exact),
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


def run_method(method: str, *, exact_sweep: Callable[..., SweepResult], **kwargs: Any) -> Any:
    """Run `sweep(..., method=method)` for a method other than "exact".

    Args:
        method: "attribution" or "attribution+verify".
        exact_sweep: The exact engine, for verification.
        **kwargs: `sweep`'s arguments (model, original, counterfactual, site, layers, positions, heads,
            batch_size, progress, reuse_prefix, warn_unsolved, top_k).

    Raises:
        CausalTracingError: An unknown method, in one line naming the methods.
    """
    if method not in METHODS or method == "exact":
        raise CausalTracingError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    top_k = kwargs.pop("top_k", 20)
    batch_size = kwargs.pop("batch_size", None)
    reuse_prefix = kwargs.pop("reuse_prefix", None)
    kwargs.pop("progress", None)  # two forwards: nothing to show progress over
    if method == "attribution":
        return attribution_sweep(**kwargs)
    return verify_attribution(
        **kwargs, exact_sweep=exact_sweep, top_k=top_k, batch_size=batch_size, reuse_prefix=reuse_prefix
    )
