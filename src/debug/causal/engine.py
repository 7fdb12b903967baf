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
one row per cell, keeping only the last position's logits. A cell never gets its own trace.

`sweep` runs as named steps: `_plan` (load, check and encode, no forward), `_unpatched_runs` (the cache run),
`_schedule` (cell order and chunk size), `_patch_chunks` (the patched forwards) and `_result`.
"""

from __future__ import annotations

import copy
import inspect
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from debug.causal.architectures import Architecture, get_path, resolve_architecture
from debug.causal.inputs import (
    AnswerTokens,
    CausalTracingError,
    PairedInputs,
    check_context,
    prepare_inputs,
    token_label,
)
from debug.causal.result import SweepResult, UnpatchedRun, warn_if_unsolved
from debug.models import load

__all__ = [
    "DIRECTION",
    "METRICS",
    "SITES",
    "auto_batch_size",
    "cache_counterfactual",
    "forward_kwargs",
    "resolve_model",
    "sweep",
]

#: What each site means; copied into every result.
SITES: dict[str, str] = {
    "residual_stream": (
        "hidden state entering decoder layer l (layers[l].input); layer num_layers = final norm input"
    ),
    "attention_heads": (
        "head h's head_dim slice of the input of layer l's attention output projection (o_proj)"
    ),
    "mlp": "output of layer l's MLP block",
}
DIRECTION = (
    "noising the original / denoising toward the counterfactual: the original program runs, and the cell's "
    "activation is replaced by the counterfactual run's activation at the same layer and position"
)
METRICS = (
    "unclipped, at the answer position: LD = logit(cf) - logit(orig); "
    "normalized = (LD - LD_orig)/(LD_cf - LD_orig); "
    "prob_cf = P(cf answer); iia = top-1 equals the cf answer"
)


def resolve_model(model: Any) -> Any:
    """An id (loaded by `debug.models.load`) or anything with `.model` and `.tokenizer` (a LoadedModel)."""
    if isinstance(model, str):
        return load(model)
    if hasattr(model, "model") and hasattr(model, "tokenizer"):
        return model
    raise CausalTracingError(
        f"model must be a model id or a debug.models.LoadedModel; got {type(model).__name__} "
        "(wrap a transformers model as LoadedModel(model, tokenizer, model_id, fingerprint))"
    )


def _indices(values: Any, limit: int, name: str, default: range) -> list[int]:
    if values is None:
        return list(default)
    out = sorted({int(v) for v in values})
    bad = [v for v in out if not 0 <= v < limit]
    if bad or not out:
        raise CausalTracingError(f"{name} {bad or 'list is empty'}: choose {name}s in 0..{limit - 1}")
    return out


def forward_kwargs(model: torch.nn.Module) -> dict[str, Any]:
    """The keyword arguments every forward of a sweep passes to `model`.

    No key/value cache is built (`use_cache=False`), and where the model supports it only the last
    position's logits are computed (`logits_to_keep=1`): the answer position is the only one ever read.
    """
    params = inspect.signature(model.forward).parameters
    kwargs: dict[str, Any] = {"use_cache": False} if "use_cache" in params else {}
    if "logits_to_keep" in params:
        kwargs["logits_to_keep"] = 1
    return kwargs


def _device(model: torch.nn.Module) -> torch.device:
    # Input ids go where the embeddings are (accelerate may spread layers over devices).
    return model.get_input_embeddings().weight.device


def auto_batch_size(model: torch.nn.Module, arch: Architecture, seq_len: int) -> int:
    """Rows per patched forward: a quarter of free GPU memory, or 1 GiB on CPU, over a rough per-row cost."""
    device = _device(model)
    elem = next(model.parameters()).element_size()
    inter = int(getattr(model.config, "intermediate_size", None) or 4 * arch.hidden_size)
    # Activations alive at once per row: a few residual-width tensors, the MLP's wide ones, attention scores.
    per_row = seq_len * (8 * arch.hidden_size + 3 * inter + arch.num_heads * seq_len) * elem
    budget = torch.cuda.mem_get_info(device)[0] // 4 if device.type == "cuda" else 1 << 30
    return int(max(1, min(1024, budget // max(per_row, 1))))


def _site_envoy(nn: Any, arch: Architecture, site: str, layer: int) -> Any:
    if site == "residual_stream":
        path = arch.spec.final_norm if layer == arch.num_layers else arch.layer_path(layer)
        return get_path(nn, path)
    if site == "mlp":
        return get_path(nn, arch.mlp_path(layer))
    return get_path(nn, arch.attn_out_path(layer))


def _read(envoy: Any, site: str) -> torch.Tensor:
    # MLP is patched at its output; the residual stream and heads at a module input.
    return envoy.output if site == "mlp" else envoy.input


def cache_counterfactual(
    nn: Any, arch: Architecture, site: str, pair: PairedInputs, layers: list[int], kwargs: dict[str, Any]
) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """One forward over [original, counterfactual]: the counterfactual's activations and both runs' logits.

    Args:
        nn: The model wrapped in `nnsight.NNsight`.
        arch: Its resolved architecture (`resolve_architecture`).
        site: "residual_stream", "attention_heads" or "mlp".
        pair: The encoded pair (`debug.causal.inputs.prepare_inputs`).
        layers: The layers to cache, ascending.
        kwargs: Forward keyword arguments (`forward_kwargs`).

    Returns:
        (layer -> the counterfactual's `[seq, hidden]` activation, `[seq, heads, head_dim]` for heads;
        `[2, vocab]` float32 last-position logits of the original and the counterfactual run).
    """
    import nnsight  # deferred: nnsight (and its torch extensions) cost seconds to import

    device = _device(nn._module)
    batch = torch.stack([pair.original_ids, pair.counterfactual_ids]).to(device)
    with torch.no_grad(), nn.trace(input_ids=batch, **kwargs):
        acts = nnsight.save([])
        for layer in layers:  # forward order
            acts.append(_read(_site_envoy(nn, arch, site, layer), site)[1].clone())
        logits = nnsight.save(nn.output.logits[:, -1].float())
    cache = {}
    for layer, act in zip(layers, acts):
        cache[layer] = (
            act.view(act.shape[0], arch.num_heads, arch.head_dim) if site == "attention_heads" else act
        )
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
    """One forward, row i = the original with cell `cells[i]` patched; `[rows, vocab]` float32 logits.

    With `prefix = (start, cache_kwargs)`, only tokens from `start` on are run, on top of the unpatched
    run's key/value cache of the tokens before it (valid because no cell in the chunk sits before `start`).
    """
    import nnsight  # deferred: nnsight (and its torch extensions) cost seconds to import

    rows = cells.shape[0]
    start, extra = prefix if prefix is not None else (0, {})
    batch = input_ids[start:].to(_device(nn._module)).unsqueeze(0).expand(rows, -1)
    groups = []
    for layer in torch.unique(cells[:, 0]).tolist():  # ascending: modules are touched in forward order
        idx = torch.nonzero(cells[:, 0] == layer).flatten()
        device = cache[layer].device  # the layer's own device, under accelerate's device maps too
        groups.append((layer, *(t.to(device) for t in (idx, cells[idx, 1], cells[idx, -1]))))
    with torch.no_grad(), nn.trace(input_ids=batch, **{**kwargs, **extra}):
        for layer, idx, pos, head in groups:
            value = _read(_site_envoy(nn, arch, site, layer), site)
            if site == "attention_heads":
                per_head = value.view(*value.shape[:2], arch.num_heads, arch.head_dim)
                per_head[idx, pos - start, head] = cache[layer][pos, head]
            else:
                value[idx, pos - start] = cache[layer][pos]
        logits = nnsight.save(nn.output.logits[:, -1].float())
    return logits


def _original_kv(model: torch.nn.Module, input_ids: torch.Tensor) -> tuple[str, Any]:
    """The unpatched original run's key/value cache, and the forward keyword that takes it."""
    params = inspect.signature(model.forward).parameters
    name = "cache" if "cache" in params else "past_key_values"
    with torch.no_grad():
        out = model(input_ids=input_ids.to(_device(model))[None], use_cache=True)
    kv = out.get("cache") or out.get("past_key_values")
    if kv is None or not hasattr(kv, "crop"):
        raise CausalTracingError(
            f"{type(model).__name__} returns no croppable key/value cache; use reuse_prefix=False"
        )
    return name, kv


def _prefix_kwargs(
    name: str, kv: Any, start: int, seq_len: int, rows: int
) -> tuple[int, dict[str, Any]] | None:
    if start == 0:
        return None
    chunk_kv = copy.deepcopy(kv)
    chunk_kv.crop(start - seq_len)  # keep the first `start` tokens
    chunk_kv.batch_repeat_interleave(rows)
    return start, {name: chunk_kv, "use_cache": True}


def _unpatched(logits: torch.Tensor, answer: AnswerTokens, tokenizer: Any) -> UnpatchedRun:
    probs = torch.softmax(logits, dim=-1)
    top1 = int(logits.argmax())
    return UnpatchedRun(
        logit_diff=float(logits[answer.counterfactual_id] - logits[answer.original_id]),
        prob_counterfactual=float(probs[answer.counterfactual_id]),
        prob_original=float(probs[answer.original_id]),
        top1_id=top1,
        top1=token_label(tokenizer, top1),
    )


def _answer_from_model(logits: torch.Tensor, tokenizer: Any) -> AnswerTokens:
    orig, cf = int(logits[0].argmax()), int(logits[1].argmax())
    if orig == cf:
        raise CausalTracingError(
            "text programs carry no answers and the model predicts "
            f"{token_label(tokenizer, orig)!r} for both; "
            "pass Programs (or (text, answer) tuples) with different answers"
        )
    return AnswerTokens(
        original_id=orig,
        counterfactual_id=cf,
        original_text=tokenizer.decode([orig]),
        counterfactual_text=tokenizer.decode([cf]),
        source="model",
        note="text programs without answers: scored on the model's own top-1 tokens of the two runs",
    )


@dataclass
class _Plan:
    """Everything a sweep knows before its first forward: the model, the encoded pair and the cell axes."""

    loaded: Any
    arch: Architecture
    site: str
    pair: PairedInputs
    layers: list[int]
    positions: list[int]
    heads: list[int] | None

    @property
    def seq_len(self) -> int:
        return int(self.pair.original_ids.shape[0])

    @property
    def axes(self) -> list[list[int]]:
        return [self.layers, self.positions] + ([self.heads] if self.heads is not None else [])


def _plan(
    model: Any, original: Any, counterfactual: Any, site: str, layers: Any, positions: Any, heads: Any
) -> _Plan:
    """Resolve the model, encode and check the pair and the cell axes; runs no forward."""
    if site not in SITES:
        raise CausalTracingError(f"unknown site {site!r}; choose one of {', '.join(SITES)}")
    loaded = resolve_model(model)
    arch = resolve_architecture(loaded.model)
    if loaded.model.training:
        raise CausalTracingError("the model is in training mode (dropout on); call model.eval() first")
    pair = prepare_inputs(loaded.tokenizer, original, counterfactual)
    seq_len = int(pair.original_ids.shape[0])
    check_context(loaded, seq_len, "the original program (with any teacher-forced answer prefix)")
    max_layer = arch.num_layers + (1 if site == "residual_stream" else 0)
    return _Plan(
        loaded=loaded,
        arch=arch,
        site=site,
        pair=pair,
        layers=_indices(layers, max_layer, "layer", range(arch.num_layers)),
        positions=_indices(positions, seq_len, "position", range(seq_len)),
        heads=(
            _indices(heads, arch.num_heads, "head", range(arch.num_heads))
            if site == "attention_heads"
            else None
        ),
    )


@dataclass
class _Schedule:
    """How the cells are run: the cell grid, the order rows are run in, the chunk size, any prefix cache."""

    grid: torch.Tensor
    order: torch.Tensor
    size: int
    kv_name: str = ""
    original_kv: Any = None

    @property
    def reuse_prefix(self) -> bool:
        return self.original_kv is not None

    @property
    def chunks(self) -> range:
        return range(0, self.grid.shape[0], self.size)


def _schedule(plan: _Plan, batch_size: int | None, reuse_prefix: bool | None) -> _Schedule:
    """The cell grid (layer-major) and the order, chunk size and optional prefix cache to run it with."""
    hf = plan.loaded.model
    grid = torch.cartesian_prod(*[torch.tensor(a) for a in plan.axes]).reshape(-1, len(plan.axes))
    n_cells = grid.shape[0]
    schedule = _Schedule(
        grid, torch.arange(n_cells), batch_size or auto_batch_size(hf, plan.arch, plan.seq_len)
    )
    if reuse_prefix or (reuse_prefix is None and _device(hf).type == "cpu"):
        try:
            schedule.kv_name, schedule.original_kv = _original_kv(hf, plan.pair.original_ids)
        except CausalTracingError:
            if reuse_prefix:
                raise
    if schedule.reuse_prefix:
        if batch_size is None:
            # About 8 chunks: each later chunk starts further in, so the work falls toward half.
            schedule.size = min(schedule.size, max(1, -(-n_cells // 8)))
        # Position-major, so each chunk starts as late as possible; rows keep their place in the results.
        schedule.order = torch.argsort(grid[:, 1] * n_cells + torch.arange(n_cells), stable=True)
    return schedule


def _patch_chunks(
    plan: _Plan,
    nn: Any,
    cache: dict[int, torch.Tensor],
    answer: AnswerTokens,
    schedule: _Schedule,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run every chunk of patched rows; (logit_diff, prob_cf, iia) flat over the cell grid."""
    n_cells = schedule.grid.shape[0]
    kwargs = forward_kwargs(plan.loaded.model)
    logit_diff, prob_cf, iia = (np.empty(n_cells, dtype=np.float64) for _ in range(3))
    chunks: Any = schedule.chunks
    if progress:
        chunks = tqdm(chunks, desc=f"patching {plan.site}", unit="chunk")
    for start in chunks:
        rows = schedule.order[start : start + schedule.size]
        cells = schedule.grid[rows]
        prefix = None
        if schedule.reuse_prefix:
            first = int(cells[:, 1].min())
            prefix = _prefix_kwargs(schedule.kv_name, schedule.original_kv, first, plan.seq_len, len(rows))
        logits = _patched_logits(
            nn, plan.arch, plan.site, plan.pair.original_ids, cells, cache, kwargs, prefix
        )
        at = rows.numpy()
        logit_diff[at] = (logits[:, answer.counterfactual_id] - logits[:, answer.original_id]).cpu().numpy()
        prob_cf[at] = torch.softmax(logits, dim=-1)[:, answer.counterfactual_id].cpu().numpy()
        iia[at] = (logits.argmax(dim=-1) == answer.counterfactual_id).float().cpu().numpy()
    return logit_diff, prob_cf, iia


def _result(
    plan: _Plan,
    answer: AnswerTokens,
    runs: tuple[UnpatchedRun, UnpatchedRun],
    effects: tuple[np.ndarray, np.ndarray, np.ndarray],
    schedule: _Schedule,
    started: float,
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
        seconds=time.perf_counter() - started,
        forwards=1 + len(schedule.chunks) + int(schedule.reuse_prefix),
    )
    if not result.solved:
        result.notes.append(result.unsolved_message())
    return result


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
) -> SweepResult:
    """Patch every (layer, position[, head]) cell from the counterfactual into the original and measure.

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
        progress: Show a tqdm bar over chunks.
        reuse_prefix: Order cells by position and run each chunk only from its first patched position on,
            over the unpatched run's key/value cache of the tokens before it (same results, less work:
            a patch at position p cannot change earlier positions). It trades one large batch for
            about 8 smaller ones with less work per row, which pays on CPUs (about 2x there) and not on
            GPUs (1.3x slower than the one-pass sweep on an H200, `bench/patching.py`); None (default)
            turns it on for models on the CPU whose cache allows it.
        warn_unsolved: Warn (`UnsolvedPairWarning`, one line) when the model's top-1 is wrong on the
            original or the counterfactual; the result records it either way (`original_correct`,
            `counterfactual_correct`). Callers that warn themselves pass False.

    Returns:
        A `SweepResult` with `[layers, positions]` arrays (`[layers, positions, heads]` for heads).

    Raises:
        CausalTracingError: Unknown site, different token lengths, equal answers, out-of-range indices, a
            program longer than the model's context (all before any forward).
        debug.causal.architectures.UnsupportedArchitectureError: When the model's layers cannot be found.
    """
    import nnsight  # deferred: nnsight (and its torch extensions) cost seconds to import

    started = time.perf_counter()
    plan = _plan(model, original, counterfactual, site, layers, positions, heads)
    hf, tokenizer = plan.loaded.model, plan.loaded.tokenizer
    nn = nnsight.NNsight(hf)
    cache, logits = cache_counterfactual(nn, plan.arch, site, plan.pair, plan.layers, forward_kwargs(hf))
    answer = plan.pair.answer or _answer_from_model(logits, tokenizer)
    runs = (_unpatched(logits[0], answer, tokenizer), _unpatched(logits[1], answer, tokenizer))
    schedule = _schedule(plan, batch_size, reuse_prefix)
    effects = _patch_chunks(plan, nn, cache, answer, schedule, progress)
    result = _result(plan, answer, runs, effects, schedule, started)
    if warn_unsolved:
        warn_if_unsolved(result, stacklevel=2)
    return result
