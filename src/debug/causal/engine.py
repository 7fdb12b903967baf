"""Activation patching through nnsight: one cached counterfactual run, then batched runs (rows = cells).

`sweep` runs the original program with one cell (layer, position[, head]) at a time replaced by the
counterfactual run's activation, and measures how far the answer moves toward the counterfactual answer.
Definitions (also returned in `SweepResult.definitions`):

* residual stream at layer l = the hidden state *entering* decoder layer l; layer index `num_layers` means the
  final residual, the input of the final norm;
* attention head h of layer l = its `head_dim` slice of the attention output projection's *input*;
* mlp at layer l = the output of layer l's MLP block;
* direction: run the original, patch in counterfactual activations ("noising the original / denoising toward
  the counterfactual");
* metrics per cell, unclipped, at the answer position: LD = logit(cf answer) - logit(orig answer);
  normalized = (LD_patched - LD_orig) / (LD_cf - LD_orig); P(cf answer); IIA = (top-1 == cf answer).

Speed: the counterfactual's activations come from one forward; then each chunk of cells is one forward with
one row per cell, keeping only the last position's logits. A cell never gets its own trace. `sweep_pairs`
does the same for many pairs at once: rows are (pair, cell), so pairs of equal token length share forwards.

`sweep` is `sweep_pairs` over one pair. It runs as named steps: `plan_pair` (`debug.causal.plan`: check and
encode each pair, no forward), `_blocks` (group pairs by token length into blocks of about `batch_size`
rows), then per block `_cache_block` (the counterfactual cache run), `_use_prefix` (optional prefix
key/value cache and row order), `_patch_block` (the patched forwards) and `_result`.
"""

from __future__ import annotations

import copy
import inspect
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from debug.causal.architectures import Architecture, get_path, resolve_architecture
from debug.causal.attribution import AttributionCheck, run_method
from debug.causal.forward import (
    SITES,
    answer_from_model,
    check_eval,
    forward_kwargs,
    input_device,
    resolve_model,
    site_path,
    unpatched_run,
)
from debug.causal.inputs import AnswerTokens, CausalTracingError, PairedInputs
from debug.causal.plan import SweepPlan, check_site, plan_pair
from debug.causal.result import SweepResult, UnpatchedRun, warn_if_unsolved

__all__ = [
    "DIRECTION",
    "METRICS",
    "SITES",
    "auto_batch_size",
    "cache_counterfactual",
    "forward_kwargs",
    "resolve_model",
    "sweep",
    "sweep_pairs",
]

DIRECTION = (
    "noising the original / denoising toward the counterfactual: the original program runs, and the cell's "
    "activation is replaced by the counterfactual run's activation at the same layer and position"
)
METRICS = (
    "unclipped, at the answer position: LD = logit(cf) - logit(orig); "
    "normalized = (LD - LD_orig)/(LD_cf - LD_orig); "
    "prob_cf = P(cf answer); iia = top-1 equals the cf answer"
)


def auto_batch_size(model: torch.nn.Module, arch: Architecture, seq_len: int) -> int:
    """Rows per patched forward: a quarter of free GPU memory, or 1 GiB on CPU, over a rough per-row cost."""
    device = input_device(model)
    elem = next(model.parameters()).element_size()
    inter = int(getattr(model.config, "intermediate_size", None) or 4 * arch.hidden_size)
    # Activations alive at once per row: a few residual-width tensors, the MLP's wide ones, attention scores.
    per_row = seq_len * (8 * arch.hidden_size + 3 * inter + arch.num_heads * seq_len) * elem
    budget = torch.cuda.mem_get_info(device)[0] // 4 if device.type == "cuda" else 1 << 30
    return int(max(1, min(1024, budget // max(per_row, 1))))


def _read(envoy: Any, site: str) -> torch.Tensor:
    # MLP is patched at its output; the residual stream and heads at a module input.
    return envoy.output if site == "mlp" else envoy.input


def cache_counterfactual(
    nn: Any,
    arch: Architecture,
    site: str,
    pair: PairedInputs | Sequence[PairedInputs],
    layers: list[int],
    kwargs: dict[str, Any],
) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """One forward over [original, counterfactual] (per pair): the counterfactuals' activations and logits.

    Args:
        nn: The model wrapped in `nnsight.NNsight`.
        arch: Its resolved architecture (`resolve_architecture`).
        site: "residual_stream", "attention_heads" or "mlp".
        pair: The encoded pair (`debug.causal.inputs.prepare_inputs`), or a list of pairs of one token length
            (rows original 1, counterfactual 1, original 2, ...).
        layers: The layers to cache, ascending.
        kwargs: Forward keyword arguments (`forward_kwargs`).

    Returns:
        (layer -> the counterfactual's `[seq, hidden]` activation, `[seq, heads, head_dim]` for heads, with a
        leading `[pairs]` axis for a list; `[2 * pairs, vocab]` float32 last-position logits of each pair's
        original and counterfactual run).
    """
    import nnsight  # deferred: nnsight (and its torch extensions) cost seconds to import

    many = not isinstance(pair, PairedInputs)
    items = list(pair) if many else [pair]
    device = input_device(nn._module)
    batch = torch.stack([ids for p in items for ids in (p.original_ids, p.counterfactual_ids)]).to(device)
    with torch.no_grad(), nn.trace(input_ids=batch, **kwargs):
        acts = nnsight.save([])
        for layer in layers:  # forward order
            acts.append(_read(get_path(nn, site_path(arch, site, layer)), site)[1::2].clone())
        logits = nnsight.save(nn.output.logits[:, -1].float())
    cache = {}
    for layer, act in zip(layers, acts):
        if site == "attention_heads":
            act = act.view(*act.shape[:2], arch.num_heads, arch.head_dim)
        cache[layer] = act if many else act[0]
    return cache, logits


def _patched_logits(
    nn: Any,
    arch: Architecture,
    site: str,
    input_ids: torch.Tensor,
    cells: torch.Tensor,
    cache: dict[int, torch.Tensor],
    kwargs: dict[str, Any],
    prefix: tuple[int, dict[str, Any]] | None = None,
) -> torch.Tensor:
    """One forward, row i = pair `cells[i, 0]`'s original with cell `cells[i, 2:]` patched.

    Args:
        input_ids: `[pairs, seq]` originals of the block's pairs.
        cells: `[rows, 4 or 5]` (pair in block, cell index, layer, position[, head]).
        cache: layer -> `[pairs, seq, ...]` counterfactual activations of the block's pairs.

    Returns:
        `[rows, vocab]` float32 last-position logits. With `prefix = (start, cache_kwargs)`, only tokens from
        `start` on are run, on top of the unpatched runs' key/value cache of the tokens before it (valid
        because no cell in the chunk sits before `start`).
    """
    import nnsight  # deferred: nnsight (and its torch extensions) cost seconds to import

    start, extra = prefix if prefix is not None else (0, {})
    batch = input_ids[cells[:, 0], start:].to(input_device(nn._module))
    groups = []
    for layer in torch.unique(cells[:, 2]).tolist():  # ascending: modules are touched in forward order
        idx = torch.nonzero(cells[:, 2] == layer).flatten()
        device = cache[layer].device  # the layer's own device, under accelerate's device maps too
        pair, pos, head = cells[idx, 0], cells[idx, 3], cells[idx, -1]
        value = cache[layer][pair, pos, head] if site == "attention_heads" else cache[layer][pair, pos]
        groups.append((layer, *(t.to(device) for t in (idx, pos - start, head, value))))
    with torch.no_grad(), nn.trace(input_ids=batch, **{**kwargs, **extra}):
        for layer, idx, pos, head, value in groups:
            act = _read(get_path(nn, site_path(arch, site, layer)), site)
            if site == "attention_heads":
                per_head = act.view(*act.shape[:2], arch.num_heads, arch.head_dim)
                per_head[idx, pos, head] = value
            else:
                act[idx, pos] = value
        logits = nnsight.save(nn.output.logits[:, -1].float())
    return logits


def _original_kv(model: torch.nn.Module, input_ids: torch.Tensor) -> tuple[str, Any]:
    """The unpatched originals' key/value cache (`input_ids`: `[pairs, seq]`), and its forward keyword."""
    params = inspect.signature(model.forward).parameters
    name = "cache" if "cache" in params else "past_key_values"
    with torch.no_grad():
        out = model(input_ids=input_ids.to(input_device(model)), use_cache=True)
    kv = out.get("cache") or out.get("past_key_values")
    if kv is None or not hasattr(kv, "crop") or not hasattr(kv, "batch_select_indices"):
        raise CausalTracingError(
            f"{type(model).__name__} returns no croppable key/value cache; use reuse_prefix=False"
        )
    return name, kv


def _prefix_kwargs(
    name: str, kv: Any, start: int, seq_len: int, pair_rows: torch.Tensor
) -> tuple[int, dict[str, Any]] | None:
    if start == 0:
        return None
    if hasattr(kv, "layers"):
        # Cropping and selecting rebind each layer's tensors (never write into them): copying the layer
        # objects is enough, and the block's cache is not duplicated per chunk.
        chunk_kv = copy.copy(kv)
        chunk_kv.layers = [copy.copy(layer) for layer in kv.layers]
    else:
        chunk_kv = copy.deepcopy(kv)
    chunk_kv.crop(start - seq_len)  # keep the first `start` tokens
    chunk_kv.batch_select_indices(pair_rows.to(_device_of_kv(chunk_kv)))
    return start, {name: chunk_kv, "use_cache": True}


def _device_of_kv(kv: Any) -> torch.device:
    layers = getattr(kv, "layers", None)
    keys = getattr(layers[0], "keys", None) if layers else None
    return keys.device if keys is not None else torch.device("cpu")


def _per_pair_positions(positions: Any, n_pairs: int) -> list[Any]:
    """`positions` as one entry per pair: one spec for all, or a list of one spec (None or ints) per pair."""
    if positions is None or isinstance(positions, range):
        return [positions] * n_pairs
    items = list(positions)
    if items and all(item is None or not np.isscalar(item) for item in items):
        if len(items) != n_pairs:
            raise CausalTracingError(
                f"positions has {len(items)} per-pair lists for {n_pairs} pairs; pass one list per pair "
                "(None = all positions) or one list of ints for every pair"
            )
        return items
    return [items] * n_pairs


@dataclass
class _Block:
    """Pairs of one token length whose cells run together, and how: chunk size, row order, prefix cache."""

    members: list[int]  # indices into the sweep's plans
    rows: torch.Tensor  # [rows, 4 or 5]: (pair in block, cell index, layer, position[, head])
    size: int
    order: torch.Tensor
    kv_name: str = ""
    original_kv: Any = None

    @property
    def reuse_prefix(self) -> bool:
        return self.original_kv is not None

    @property
    def chunks(self) -> range:
        return range(0, self.rows.shape[0], self.size)


def _blocks(plans: list[SweepPlan], batch_size: int | None) -> list[_Block]:
    """Group pairs by token length, then cut each group into blocks of about one chunk's worth of cells.

    A block holds whole pairs: consecutive pairs of the group until their cells fill `batch_size` rows, so
    a chunk mixes pairs when each has fewer cells than a chunk, and no block (its cache, its rows) grows with
    the number of pairs.
    """
    by_length: dict[int, list[int]] = {}
    for i, plan in enumerate(plans):
        by_length.setdefault(plan.seq_len, []).append(i)
    blocks = []
    for seq_len, members in by_length.items():
        first = plans[members[0]]
        size = batch_size or auto_batch_size(first.loaded.model, first.arch, seq_len)
        current: list[int] = []
        cells = 0
        for i in members:
            current.append(i)
            cells += int(np.prod([len(a) for a in plans[i].axes]))
            if cells >= size:
                blocks.append(_block(plans, current, size))
                current, cells = [], 0
        if current:
            blocks.append(_block(plans, current, size))
    return blocks


def _block(plans: list[SweepPlan], members: list[int], size: int) -> _Block:
    parts = []
    for k, i in enumerate(members):
        grid = plans[i].grid()
        n = grid.shape[0]
        parts.append(torch.cat([torch.full((n, 1), k), torch.arange(n)[:, None], grid], dim=1))
    rows = torch.cat(parts)
    return _Block(members, rows, size, torch.arange(rows.shape[0]))


def _use_prefix(
    block: _Block, plans: list[SweepPlan], batch_size: int | None, reuse_prefix: bool | None
) -> None:
    """Fetch the block's original key/value cache and order its rows by position, when prefix reuse is on."""
    hf = plans[block.members[0]].loaded.model
    if not (reuse_prefix or (reuse_prefix is None and input_device(hf).type == "cpu")):
        return
    ids = torch.stack([plans[i].pair.original_ids for i in block.members])
    try:
        block.kv_name, block.original_kv = _original_kv(hf, ids)
    except CausalTracingError:
        if reuse_prefix:
            raise
        return
    n_rows = block.rows.shape[0]
    if batch_size is None:
        # About 8 chunks: each later chunk starts further in, so the work falls toward half.
        block.size = min(block.size, max(1, -(-n_rows // 8)))
    # Position-major, so each chunk starts as late as possible; rows keep their place in the results.
    block.order = torch.argsort(block.rows[:, 3] * n_rows + torch.arange(n_rows), stable=True)


def _cache_block(
    nn: Any, plans: list[SweepPlan], block: _Block, kwargs: dict[str, Any]
) -> tuple[dict[int, torch.Tensor], torch.Tensor, int]:
    """The counterfactual activations and unpatched logits of the block's pairs, `size // 2` pairs a forward.

    Returns:
        (layer -> `[pairs, seq, ...]` activations, `[pairs, 2, vocab]` logits, forwards run).
    """
    first = plans[block.members[0]]
    per_forward = max(1, block.size // 2)
    caches, logits = [], []
    for at in range(0, len(block.members), per_forward):
        members = block.members[at : at + per_forward]
        cache, out = cache_counterfactual(
            nn, first.arch, first.site, [plans[i].pair for i in members], first.layers, kwargs
        )
        caches.append(cache)
        logits.append(out.view(len(members), 2, -1))
    if len(caches) == 1:
        return caches[0], logits[0], 1
    merged = {layer: torch.cat([c[layer] for c in caches]) for layer in first.layers}
    return merged, torch.cat(logits), len(caches)


def _patch_block(
    plans: list[SweepPlan],
    nn: Any,
    block: _Block,
    cache: dict[int, torch.Tensor],
    answers: list[AnswerTokens],
    bar: Any,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Run every chunk of the block's patched rows; per member pair, (logit_diff, prob_cf, iia) per cell."""
    first = plans[block.members[0]]
    kwargs = forward_kwargs(first.loaded.model)
    ids = torch.stack([plans[i].pair.original_ids for i in block.members])
    cf_ids = torch.tensor([a.counterfactual_id for a in answers])
    orig_ids = torch.tensor([a.original_id for a in answers])
    n_rows = block.rows.shape[0]
    logit_diff, prob_cf, iia = (np.empty(n_rows, dtype=np.float64) for _ in range(3))
    for start in block.chunks:
        at = block.order[start : start + block.size]
        cells = block.rows[at]
        prefix = None
        if block.reuse_prefix:
            pairs_here = cells[:, 0]
            prefix = _prefix_kwargs(
                block.kv_name, block.original_kv, int(cells[:, 3].min()), first.seq_len, pairs_here
            )
        logits = _patched_logits(nn, first.arch, first.site, ids, cells, cache, kwargs, prefix)
        rows_cf = cf_ids[cells[:, 0]].to(logits.device)[:, None]
        rows_orig = orig_ids[cells[:, 0]].to(logits.device)[:, None]
        flat = at.numpy()
        logit_diff[flat] = (logits.gather(1, rows_cf) - logits.gather(1, rows_orig)).flatten().cpu().numpy()
        prob_cf[flat] = torch.softmax(logits, dim=-1).gather(1, rows_cf).flatten().cpu().numpy()
        iia[flat] = (logits.argmax(dim=-1, keepdim=True) == rows_cf).float().flatten().cpu().numpy()
        if bar is not None:
            bar.update(len(at))
    # Rows were built pair by pair, each pair's cells in grid order: split them back.
    out = []
    for k in range(len(block.members)):
        mine = (block.rows[:, 0] == k).numpy()
        out.append((logit_diff[mine], prob_cf[mine], iia[mine]))
    return out


def _result(
    plan: SweepPlan,
    answer: AnswerTokens,
    runs: tuple[UnpatchedRun, UnpatchedRun],
    effects: tuple[np.ndarray, np.ndarray, np.ndarray],
    forwards: int,
    seconds: float,
) -> SweepResult:
    """Normalize the effects, shape them over the axes and collect the notes."""
    original, counterfactual = runs
    logit_diff, prob_cf, iia = effects
    notes = [answer.note] + ([plan.pair.target_note] if plan.pair.target_note else [])
    denominator = counterfactual.logit_diff - original.logit_diff
    if abs(denominator) < 1e-6:
        normalized = np.full(logit_diff.shape, np.nan)
        notes.append("LD_cf equals LD_orig: the normalized effect is undefined (NaN)")
    else:
        normalized = (logit_diff - original.logit_diff) / denominator
    shape = tuple(len(a) for a in plan.axes)
    result = SweepResult(
        site=plan.site,
        layers=plan.layers,
        positions=plan.positions,
        heads=plan.heads,
        num_layers=plan.arch.num_layers,
        tokens=plan.pair.tokens,
        targets=plan.pair.targets,
        logit_diff=logit_diff.reshape(shape),
        normalized=normalized.reshape(shape),
        prob_cf=prob_cf.reshape(shape),
        iia=iia.reshape(shape).astype(bool),
        original=original,
        counterfactual=counterfactual,
        answer=answer,
        definitions={
            "site": SITES[plan.site],
            "direction": DIRECTION,
            "metrics": METRICS,
            "answer": answer.note,
        },
        model_id=str(getattr(plan.loaded, "model_id", "")),
        notes=notes,
        seconds=seconds,
        forwards=forwards,
    )
    if not result.solved:
        result.notes.append(result.unsolved_message())
    return result


def sweep_pairs(
    model: Any,
    pairs: Sequence[tuple[Any, Any]],
    *,
    site: str = "residual_stream",
    layers: Any = None,
    positions: Any = None,
    heads: Any = None,
    batch_size: int | None = None,
    progress: bool = False,
    reuse_prefix: bool | None = None,
    warn_unsolved: bool = True,
) -> list[SweepResult]:
    """`sweep` over many pairs at once: the cells of several pairs share each batched forward.

    A separate function rather than a list argument to `sweep`, because the two return different things (one
    result vs a list) and a pair is itself a 2-sequence: `sweep(model, [a, b], ...)` would be ambiguous.

    Rows are (pair, cell). Pairs are grouped by token length (rows of one forward never mix lengths, so no
    padding moves a position), and each group is cut into blocks of whole pairs holding about `batch_size`
    rows; each block runs its counterfactual cache forward(s), then its chunks of at most `batch_size` rows.
    Peak memory is set by `batch_size`, not by the number of pairs or cells. The numbers equal one `sweep`
    per pair (float32: to rounding, ~1e-6).

    Args:
        model: A model id (loaded with `debug.models.load`) or a `LoadedModel`.
        pairs: `(original, counterfactual)` per pair; each program as `sweep` takes it.
        site: "residual_stream", "attention_heads" or "mlp".
        layers: Layers to patch, the same for every pair (default all; see `sweep`).
        positions: Positions to patch: None (all), one list of ints for every pair, or a list with one entry
            (None or a list of ints) per pair.
        heads: Heads to patch for "attention_heads" (default all).
        batch_size: Rows (cells, over pairs) per forward (default: sized from free memory).
        progress: Show a tqdm bar over rows.
        reuse_prefix: As in `sweep`; with several pairs a chunk's prefix cache holds each row's own pair.
        warn_unsolved: Warn once per pair the model answers wrong (see `sweep`).

    Returns:
        One `SweepResult` per pair, in order. `forwards` and `seconds` are the pair's block's (shared by
        the pairs of that block; `seconds` split evenly among them).

    Raises:
        CausalTracingError: As `sweep`, for any pair, all before the first forward.
    """
    import nnsight  # deferred: nnsight (and its torch extensions) cost seconds to import

    check_site(site)
    loaded = resolve_model(model)
    arch = resolve_architecture(loaded.model)
    check_eval(loaded.model)
    pairs = list(pairs)
    plans = [
        plan_pair(loaded, arch, original, counterfactual, site, layers, where, heads)
        for (original, counterfactual), where in zip(pairs, _per_pair_positions(positions, len(pairs)))
    ]
    nn = nnsight.NNsight(loaded.model)
    kwargs = forward_kwargs(loaded.model)
    results: list[SweepResult | None] = [None] * len(plans)
    blocks = _blocks(plans, batch_size)
    total = sum(b.rows.shape[0] for b in blocks)
    bar = tqdm(total=total, desc=f"patching {site}", unit="cell") if progress else None
    for block in blocks:
        started = time.perf_counter()
        cache, logits, forwards = _cache_block(nn, plans, block, kwargs)
        answers, runs = [], []
        for k, i in enumerate(block.members):
            answer = plans[i].pair.answer or answer_from_model(logits[k][0], logits[k][1], loaded.tokenizer)
            answers.append(answer)
            runs.append(tuple(unpatched_run(logits[k, j], answer, loaded.tokenizer) for j in (0, 1)))
        _use_prefix(block, plans, batch_size, reuse_prefix)
        effects = _patch_block(plans, nn, block, cache, answers, bar)
        forwards += len(block.chunks) + int(block.reuse_prefix)
        seconds = (time.perf_counter() - started) / len(block.members)
        for k, i in enumerate(block.members):
            results[i] = _result(plans[i], answers[k], runs[k], effects[k], forwards, seconds)
    if bar is not None:
        bar.close()
    done = [r for r in results if r is not None]
    if warn_unsolved:
        for result in done:
            warn_if_unsolved(result, stacklevel=2)
    return done


def sweep(
    model: Any,
    original: Any,
    counterfactual: Any,
    *,
    site: str = "residual_stream",
    layers: Any = None,
    positions: Any = None,
    heads: Any = None,
    batch_size: int | None = None,
    progress: bool = False,
    reuse_prefix: bool | None = None,
    warn_unsolved: bool = True,
    method: str = "exact",
    top_k: int = 20,
) -> SweepResult | AttributionCheck:
    """Patch every (layer, position[, head]) cell from the counterfactual into the original and measure.

    For many pairs, `sweep_pairs` puts the cells of several pairs in each forward (same numbers).

    Args:
        model: A model id (loaded with `debug.models.load`) or a `LoadedModel`.
        original: The original program: a `Program`, `(text, answer)`, or text (then the answers are the
            model's own top-1 predictions on the two runs).
        counterfactual: The counterfactual, of the same token length.
        site: "residual_stream", "attention_heads" or "mlp".
        layers: Layers to patch (default all decoder layers; for the residual stream `num_layers` adds the
            final residual, the final norm's input).
        positions: Token positions to patch (default all).
        heads: Heads to patch for "attention_heads" (default all).
        batch_size: Cells per forward (default: sized from free memory).
        progress: Show a tqdm bar over cells.
        reuse_prefix: Order cells by position and run each chunk only from its first patched position on,
            over the unpatched run's key/value cache of the tokens before it (same results, less work:
            a patch at position p cannot change earlier positions). It trades one large batch for
            about 8 smaller ones with less work per row, which pays on CPUs (about 2x there) and not on
            GPUs (1.3x slower than the one-pass sweep on an H200, `bench/patching.py`); None (default)
            turns it on for models on the CPU whose cache allows it.
        warn_unsolved: Warn (`UnsolvedPairWarning`, one line) when the model's top-1 is wrong on the
            original or the counterfactual; the result records it either way (`original_correct`,
            `counterfactual_correct`). Callers that warn themselves pass False.
        method: "exact" (patch every cell), "attribution" (first-order estimates from two forwards and one
            backward, `debug.causal.attribution`) or "attribution+verify" (the estimate, with its `top_k`
            cells patched exactly: an `AttributionCheck`).
        top_k: Cells verified by "attribution+verify".

    Returns:
        A `SweepResult` with `[layers, positions]` arrays (`[layers, positions, heads]` for heads); an
        `AttributionCheck` for "attribution+verify".

    Raises:
        CausalTracingError: Unknown site, different token lengths, equal answers, out-of-range indices, a
            program longer than the model's context (all before any forward).
        debug.causal.architectures.UnsupportedArchitectureError: When the model's layers cannot be found.
        debug.models.WeightsRequiredError: For a served (`openai:`) model.
    """
    if method != "exact":
        return run_method(
            method,
            exact_sweep=sweep,
            model=model,
            original=original,
            counterfactual=counterfactual,
            site=site,
            layers=layers,
            positions=positions,
            heads=heads,
            batch_size=batch_size,
            progress=progress,
            reuse_prefix=reuse_prefix,
            warn_unsolved=warn_unsolved,
            top_k=top_k,
        )
    (result,) = sweep_pairs(
        model,
        [(original, counterfactual)],
        site=site,
        layers=layers,
        positions=positions,
        heads=heads,
        batch_size=batch_size,
        progress=progress,
        reuse_prefix=reuse_prefix,
        warn_unsolved=False,
    )
    if warn_unsolved:
        warn_if_unsolved(result, stacklevel=2)
    return result
