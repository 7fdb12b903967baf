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
does the same for many pairs at once: rows are (pair, cell), so pairs share forwards. Pairs of different
token lengths share a block when its shortest program is at least `PAD_RATIO` of its longest: the shorter ones
are left-padded, masked out of attention and given their own position ids, so every row's last position is
its answer position and each pair's numbers are those of its own unpadded sweep (to float32 rounding).
A patch at (layer l, position p) cannot change layers below l or positions before p, so a chunk whose cells
sit at layers >= l starts there (`skip_layers`: decoder layers below l are skipped with nnsight's
`.skip`, layer l fed the unpatched run's residual) and, with `reuse_prefix`, runs only its tokens from p on
over the unpatched key/value cache. Rows are sorted into (layer band x position band) tiles so each chunk
starts late in both. Cells before the first token where the two programs differ are not run at all (with
`skip_layers`): a causal model's activations there are the same in both runs, so the patch changes nothing
and the cell gets the unpatched original's values.

`sweep` is `sweep_pairs` over one pair. It runs as named steps: `plan_pair` (`debug.causal.plan`: check and
encode each pair, no forward), `_blocks` (group pairs by token length into blocks of about `batch_size`
rows), then per block `_use_prefix` (optional prefix key/value cache), `_plan_chunks` (row order and
chunks), `_cache_block` (the counterfactual cache run, with the originals' residual at each chunk's first
layer), `_patch_block` (the patched forwards) and `_result`.
"""

from __future__ import annotations

import copy
import inspect
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from debug.causal.architectures import Architecture, get_path, resolve_architecture
from debug.causal.attribution import AttributionCheck, run_method
from debug.causal.forward import (
    SITES,
    RemoteModel,
    answer_from_model,
    check_eval,
    forward_kwargs,
    input_device,
    left_pad,
    padding_kwargs,
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
    "check_remote",
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
    """Rows per patched forward: a quarter of free GPU memory, or 32 MiB on CPU, over a rough per-row cost.

    The CPU budget is small on purpose: on a shared 2-core CPU the one-pass sweep of the embedded binder
    (1,072 cells) took 36.8 s in chunks of 80 rows (this budget) and 83.1 s in chunks of 1,024 (a 1 GiB
    budget), in `bench/patching.py` runs minutes apart: activations that stay in the caches count for more
    than fewer forwards.
    """
    device = input_device(model)
    elem = next(model.parameters()).element_size()
    inter = int(getattr(model.config, "intermediate_size", None) or 4 * arch.hidden_size)
    # Activations alive at once per row: a few residual-width tensors, the MLP's wide ones, attention scores.
    per_row = seq_len * (8 * arch.hidden_size + 3 * inter + arch.num_heads * seq_len) * elem
    return int(max(1, min(1024, memory_budget(device) // max(per_row, 1))))


def memory_budget(device: torch.device) -> int:
    """Bytes one patched forward's activations may take: a quarter of free GPU memory, 32 MiB on a CPU."""
    return torch.cuda.mem_get_info(device)[0] // 4 if device.type == "cuda" else 32 << 20


def _pair_bytes(plan: SweepPlan, width: int | None = None) -> int:
    """What one pair keeps in its block while the block runs, at most: the counterfactual's activation at
    each patched layer, and the original's residual and key/value cache at every layer, over the whole
    sequence (`width`: the block's padded length, default the pair's own)."""
    elem = next(plan.loaded.model.parameters()).element_size()
    tokens = width or plan.seq_len
    return (len(plan.layers) + 3 * plan.arch.num_layers) * tokens * plan.arch.hidden_size * elem


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
        pair: The encoded pair (`debug.causal.inputs.prepare_inputs`), or a list of pairs (rows original 1,
            counterfactual 1, original 2, ...; shorter pairs left-padded to the longest:
            `debug.causal.forward.left_pad`).
        layers: The layers to cache, ascending.
        kwargs: Forward keyword arguments (`forward_kwargs`).

    Returns:
        (layer -> the counterfactual's `[seq, hidden]` activation, `[seq, heads, head_dim]` for heads, with a
        leading `[pairs]` axis for a list; `[2 * pairs, vocab]` float32 last-position logits of each pair's
        original and counterfactual run).
    """
    many = not isinstance(pair, PairedInputs)
    items = list(pair) if many else [pair]
    ids, mask = left_pad([ids for p in items for ids in (p.original_ids, p.counterfactual_ids)])
    cache, _, logits = _cache_forward(nn, arch, site, ids, mask, layers, [], kwargs)
    return (cache if many else {layer: act[0] for layer, act in cache.items()}), logits


def _cache_forward(
    nn: Any,
    arch: Architecture,
    site: str,
    batch: torch.Tensor,
    mask: torch.Tensor | None,
    layers: list[int],
    residual_layers: list[int],
    kwargs: dict[str, Any],
) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor], torch.Tensor]:
    """`cache_counterfactual` over rows original 1, counterfactual 1, ... (`batch`, left-padded under `mask`),
    also keeping the originals' residual at `residual_layers`.

    Returns:
        (layer -> `[pairs, seq, ...]` counterfactual activations, layer -> `[pairs, seq, hidden]` unpatched
        originals' residual stream entering that layer, `[2 * pairs, vocab]` logits).
    """
    import nnsight  # deferred: nnsight (and its torch extensions) cost seconds to import

    device = input_device(nn._module)
    wanted, keep = set(layers), set(residual_layers)
    padding = padding_kwargs(mask, 0, device)
    with torch.no_grad(), nn.trace(input_ids=batch.to(device), **kwargs, **padding):
        acts = nnsight.save([])
        kept = nnsight.save([])
        for layer in sorted(wanted | keep):  # forward order: a layer's input comes before its modules
            if layer in keep:
                hidden = get_path(nn, site_path(arch, "residual_stream", layer)).input
                kept.append(hidden[0::2].clone())
                if site == "residual_stream" and layer in wanted:  # the same tensor: read it once
                    acts.append(hidden[1::2].clone())
                    continue
            if layer in wanted:
                acts.append(_read(get_path(nn, site_path(arch, site, layer)), site)[1::2].clone())
        logits = nnsight.save(nn.output.logits[:, -1].float())
    cache = {}
    for layer, act in zip(sorted(wanted), acts):
        if site == "attention_heads":
            act = act.view(*act.shape[:2], arch.num_heads, arch.head_dim)
        cache[layer] = act
    return cache, dict(zip(sorted(keep), kept)), logits


def _patched_logits(
    nn: Any,
    arch: Architecture,
    site: str,
    input_ids: torch.Tensor,
    cells: torch.Tensor,
    cache: dict[int, torch.Tensor],
    kwargs: dict[str, Any],
    prefix: tuple[int, dict[str, Any]] | None = None,
    start_layer: tuple[int, torch.Tensor] | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """One forward, row i = pair `cells[i, 0]`'s original with cell `cells[i, 2:]` patched.

    Args:
        input_ids: `[pairs, seq]` originals of the block's pairs (positions in these padded coordinates).
        cells: `[rows, 4 or 5]` (pair in block, cell index, layer, position[, head]).
        cache: layer -> `[pairs, seq, ...]` counterfactual activations of the block's pairs.
        prefix: `(start, cache_kwargs)`: only tokens from `start` on are run, on top of the unpatched runs'
            key/value cache of the tokens before it (valid because no cell in the chunk sits before `start`).
        start_layer: `(layer, [pairs, seq, hidden] unpatched residual entering it)`: decoder layers below
            `layer` are skipped and `layer` starts from each row's pair's unpatched residual (valid because
            no cell in the chunk sits below `layer`).
        mask: `[pairs, seq]` attention mask of left-padded originals (None: no pads).

    Returns:
        `[rows, vocab]` float32 last-position logits.
    """
    import nnsight  # deferred: nnsight (and its torch extensions) cost seconds to import

    start, extra = prefix if prefix is not None else (0, {})
    device = input_device(nn._module)
    batch = input_ids[cells[:, 0], start:].to(device)
    extra = {**extra, **padding_kwargs(None if mask is None else mask[cells[:, 0]], start, device)}
    groups = []
    for layer in torch.unique(cells[:, 2]).tolist():  # ascending: modules are touched in forward order
        idx = torch.nonzero(cells[:, 2] == layer).flatten()
        device = cache[layer].device  # the layer's own device, under accelerate's device maps too
        pair, pos, head = cells[idx, 0], cells[idx, 3], cells[idx, -1]
        value = cache[layer][pair, pos, head] if site == "attention_heads" else cache[layer][pair, pos]
        groups.append((layer, *(t.to(device) for t in (idx, pos - start, head, value))))
    first, residual = start_layer if start_layer is not None else (0, None)
    pair_rows = cells[:, 0].to(residual.device) if residual is not None else None
    with torch.no_grad(), nn.trace(input_ids=batch, **{**kwargs, **extra}):
        if first:
            # Indexed here, inside the trace, so a remote request carries the block's residual once, not per
            # row. Indexing copies: the patch below writes into the copy, never into the cached residual.
            entering = residual[pair_rows, start:]
            for layer in range(first):
                # Each skipped layer returns this as its output, so layer `first` receives it as its input.
                get_path(nn, arch.layer_path(layer)).skip(entering)
        for layer, idx, pos, head, value in groups:
            act = _read(get_path(nn, site_path(arch, site, layer)), site)
            if site == "attention_heads":
                per_head = act.view(*act.shape[:2], arch.num_heads, arch.head_dim)
                per_head[idx, pos, head] = value
            else:
                act[idx, pos] = value
        logits = nnsight.save(nn.output.logits[:, -1].float())
    return logits


def _original_kv(
    model: torch.nn.Module, input_ids: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[str, Any]:
    """The unpatched originals' key/value cache (`input_ids`: `[pairs, seq]`, left-padded under `mask`), and
    its forward keyword."""
    params = inspect.signature(model.forward).parameters
    name = "cache" if "cache" in params else "past_key_values"
    device = input_device(model)
    with torch.no_grad():
        out = model(input_ids=input_ids.to(device), use_cache=True, **padding_kwargs(mask, 0, device))
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


def _per_pair(spec: Any, n_pairs: int, name: str) -> list[Any]:
    """`layers` or `positions` as one entry per pair: one spec for all, or one (None or ints) per pair."""
    if spec is None or isinstance(spec, range):
        return [spec] * n_pairs
    items = list(spec)
    if items and all(item is None or not np.isscalar(item) for item in items):
        if len(items) != n_pairs:
            raise CausalTracingError(
                f"{name} has {len(items)} per-pair lists for {n_pairs} pairs; pass one list per pair "
                f"(None = all {name}) or one list of ints for every pair"
            )
        return items
    return [items] * n_pairs


@dataclass
class _Block:
    """Pairs of one token length whose cells run together, and how: chunks, row order, what each skips."""

    members: list[int]  # indices into the sweep's plans
    rows: torch.Tensor  # [rows, 4 or 5]: (pair in block, cell index, layer, padded position[, head])
    size: int  # rows per forward, at most
    order: torch.Tensor
    ids: torch.Tensor  # [pairs, width] originals, left-padded to the block's longest
    mask: torch.Tensor | None  # their attention mask (None: one token length, no pads)
    bounds: list[tuple[int, int]] = field(default_factory=list)  # chunks: [start, end) into `order`
    skip_layers: bool = False
    kv_name: str = ""
    original_kv: Any = None

    @property
    def reuse_prefix(self) -> bool:
        return self.original_kv is not None

    @property
    def width(self) -> int:
        return int(self.ids.shape[1])

    @property
    def chunks(self) -> list[torch.Tensor]:
        """Each chunk's rows (indices into `rows`), in the order they run."""
        return [self.order[a:b] for a, b in self.bounds]

    @property
    def start_layers(self) -> list[int]:
        """Layers whose unpatched residual some chunk starts from (layer 0 needs none: the embeddings run)."""
        if not self.skip_layers:
            return []
        return sorted({int(self.rows[at, 2].min()) for at in self.chunks} - {0})


#: Pairs of different token lengths share a block (the shorter left-padded) while its shortest program is at
#: least this fraction of its longest: a pad costs a row a token's work, a block of its own costs a cache
#: forward, a key/value forward and at least one patched forward. Pairs of one length always share.
PAD_RATIO = 0.5


def _blocks(
    plans: list[SweepPlan], batch_size: int | None, max_rows: int | None = None, skip_unchanged: bool = False
) -> list[_Block]:
    """Sort pairs by token length, then cut them into blocks whose caches fit the memory budget.

    A block holds whole pairs: consecutive pairs, longest first, until what they keep while the block runs
    (`_pair_bytes`: their cached activations) reaches a quarter of `memory_budget`, the budget of one
    forward's activations, or the next pair is shorter than `PAD_RATIO` of the block's longest (or the model
    takes no attention mask and position ids, and its length differs). So no block grows with the number
    of pairs, and a block's chunks (at most `batch_size` rows each) are planned over all its pairs' cells at
    once: fewer cache forwards, and tiles that mix pairs, than blocks of one chunk's worth of cells (which a
    pair of many cells alone fills). `max_rows` caps the rows of every forward (remote requests). With
    `skip_unchanged` a block's rows leave out the cells before the pair's first differing token
    (`_first_difference`).
    """
    if not plans:
        return []
    first = plans[0]
    hf = first.loaded.model
    params = inspect.signature(hf.forward).parameters
    can_pad = "attention_mask" in params and "position_ids" in params
    budget = memory_budget(input_device(hf)) // 4
    # Stable: pairs of one length keep their order.
    by_length = sorted(range(len(plans)), key=lambda i: -plans[i].seq_len)
    blocks, current, held = [], [], 0
    for i in by_length:
        longest = plans[current[0]].seq_len if current else 0
        fits = plans[i].seq_len == longest or (can_pad and plans[i].seq_len >= PAD_RATIO * longest)
        if current and (held >= budget or not fits):
            blocks.append(_block(plans, current, batch_size, max_rows, skip_unchanged))
            current, held = [], 0
        current.append(i)
        held += _pair_bytes(plans[i], plans[current[0]].seq_len)  # padded to the block's longest
    blocks.append(_block(plans, current, batch_size, max_rows, skip_unchanged))
    return blocks


def _block(
    plans: list[SweepPlan],
    members: list[int],
    batch_size: int | None,
    max_rows: int | None,
    skip_unchanged: bool,
) -> _Block:
    ids, mask = left_pad([plans[i].pair.original_ids for i in members])
    first = plans[members[0]]
    size = batch_size or auto_batch_size(first.loaded.model, first.arch, int(ids.shape[1]))
    size = min(size, max_rows or size)
    parts = []
    for k, i in enumerate(members):
        grid = plans[i].grid()
        n = grid.shape[0]
        rows = torch.cat([torch.full((n, 1), k), torch.arange(n)[:, None], grid], dim=1)
        if skip_unchanged:
            rows = rows[grid[:, 1] >= _first_difference(plans[i])]
        rows[:, 3] += ids.shape[1] - plans[i].seq_len  # into the block's left-padded positions
        parts.append(rows)
    rows = torch.cat(parts)
    return _Block(members, rows, size, torch.arange(rows.shape[0]), ids, mask)


def _first_difference(plan: SweepPlan) -> int:
    """The first position whose token differs between the pair's programs (the length when none does).

    A causal model's activations at earlier positions read only the tokens up to them, the same in both
    programs, so patching any site there puts in what is already there.
    """
    differ = torch.nonzero(plan.pair.original_ids != plan.pair.counterfactual_ids)
    return int(differ[0, 0]) if differ.numel() else plan.seq_len


def _use_prefix(block: _Block, plans: list[SweepPlan], reuse_prefix: bool | None) -> None:
    """Fetch the block's original key/value cache when prefix reuse is on (None: on for models on a CPU)."""
    hf = plans[block.members[0]].loaded.model
    if not (reuse_prefix or (reuse_prefix is None and input_device(hf).type == "cpu")):
        return
    try:
        block.kv_name, block.original_kv = _original_kv(hf, block.ids, block.mask)
    except CausalTracingError:
        if reuse_prefix:
            raise


#: Bands tried per axis when a CPU sweep cuts a block's rows into (layer band x position band) tiles.
BANDS = (1, 2, 3, 4, 6, 8, 12, 16)
#: Cost of one patched forward on a CPU beyond its arithmetic, in seconds: a fixed part and a part per
#: decoder layer run (nnsight's hooks, Python); the arithmetic rate that turns work into seconds; and the
#: tokens' worth of arithmetic every layer run costs even for one row (its weights streamed from memory, small
#: matrix products below peak). Measured on a 2-core CPU, one torch thread: the embedded binder's forwards
#: cost about 0.1 s each beyond their work (16 layers); at the Qwen3-0.6B shape one row of 19 tokens costs
#: what about 40 tokens cost in a batched forward (`bench/patching.py`).
FORWARD_SECONDS = (2e-2, 5e-3)
CPU_FLOPS = 4e9
MIN_TOKENS = 20


def _tile_order(rows: np.ndarray, seq_len: int, size: int, bands: tuple[int, int]) -> tuple[np.ndarray, list]:
    """Rows sorted into (layer band x position band) tiles, each cut into chunks of at most `size` rows.

    Within a tile rows run layer, then position, then pair: each chunk covers few layers and positions, so
    it can start late in both. Returns the order (indices into `rows`) and the chunks' `[start, end)`.
    """
    layer, pos = rows[:, 2], rows[:, 3]
    _, rank = np.unique(layer, return_inverse=True)
    layer_band = rank * bands[0] // (rank.max() + 1)
    pos_band = pos * bands[1] // seq_len
    order = np.lexsort((rows[:, -1], rows[:, 0], pos, layer, pos_band, layer_band))
    tile = (layer_band * bands[1] + pos_band)[order]
    edges = [0, *(np.flatnonzero(np.diff(tile)) + 1).tolist(), len(order)]
    bounds = [(a, min(a + size, b)) for lo, b in zip(edges, edges[1:]) for a in range(lo, b, size)]
    return order, bounds


def _plan_seconds(
    rows: np.ndarray, order: np.ndarray, bounds: list, shape: tuple[int, int, float], skip: tuple[bool, bool]
) -> float:
    """Predicted CPU seconds of a chunk plan: per chunk, `FORWARD_SECONDS` plus the arithmetic it runs (at
    least `MIN_TOKENS` tokens' worth per layer).

    `shape` is (decoder layers, tokens, flops per token per layer); `skip` says whether chunks start at their
    lowest layer and at their first position.
    """
    num_layers, seq_len, flops = shape
    total = 0.0
    for a, b in bounds:
        at = order[a:b]
        run = num_layers - (int(rows[at, 2].min()) if skip[0] else 0)
        tokens = seq_len - (int(rows[at, 3].min()) if skip[1] else 0)
        overhead = FORWARD_SECONDS[0] + FORWARD_SECONDS[1] * run
        # + 1 layer's worth: the embeddings, the final norm and the head.
        total += overhead + ((b - a) * tokens + MIN_TOKENS) * (run + 1) * flops / CPU_FLOPS
    return total


def _plan_chunks(block: _Block, plans: list[SweepPlan], skip_layers: bool | None, on_cpu: bool) -> None:
    """Choose the block's row order and chunks, and whether its chunks skip the layers below their cells.

    Without skipping or prefix reuse, rows run in grid order. Otherwise rows are sorted into tiles of
    (layer band x position band): on a CPU the band counts (from `BANDS`) minimize `_plan_seconds`, more
    chunks each starting later against the fixed cost of a forward; elsewhere there is one band of layers
    (no extra forwards: the chunks of the one-pass sweep, layer-major) and 8 of positions with prefix reuse.
    """
    first = plans[block.members[0]]
    hf = first.loaded.model
    block.skip_layers = skip_layers is not False
    skip = (block.skip_layers, block.reuse_prefix)
    n_rows = block.rows.shape[0]
    if not any(skip) or n_rows == 0:
        block.bounds = [(a, min(a + block.size, n_rows)) for a in range(0, n_rows, block.size)]
        return
    rows = block.rows.numpy()
    if not on_cpu:
        order, bounds = _tile_order(rows, block.width, block.size, (1, 8 if skip[1] else 1))
    else:
        per_layer = sum(p.numel() for p in get_path(hf, first.arch.layer_path(0)).parameters())
        shape = (first.arch.num_layers, block.width, 2.0 * per_layer)
        best = None
        for layer_bands in BANDS if skip[0] else (1,):
            for pos_bands in BANDS if skip[1] else (1,):
                plan = _tile_order(rows, block.width, block.size, (layer_bands, pos_bands))
                seconds = _plan_seconds(rows, *plan, shape, skip)
                if best is None or seconds < best[0]:
                    best = (seconds, plan)
        order, bounds = best[1]
    block.order, block.bounds = torch.from_numpy(order), bounds


def _cache_block(
    nn: Any, plans: list[SweepPlan], block: _Block, kwargs: dict[str, Any]
) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor], torch.Tensor, int]:
    """The counterfactual activations and unpatched logits of the block's pairs, `size // 2` pairs a forward.

    Returns:
        (layer -> `[pairs, seq, ...]` activations, layer -> `[pairs, seq, hidden]` originals' residual at the
        chunks' start layers, `[pairs, 2, vocab]` logits, forwards run).
    """
    first = plans[block.members[0]]
    per_forward = max(1, block.size // 2)
    # Every forward caches the block's union of layers, so the parts merge layer by layer.
    layers = sorted({layer for i in block.members for layer in plans[i].layers})
    parts = []
    for at in range(0, len(block.members), per_forward):
        members = range(at, min(at + per_forward, len(block.members)))
        pairs = [plans[block.members[k]].pair for k in members]
        rows = [ids for p in pairs for ids in (p.original_ids, p.counterfactual_ids)]
        batch, mask = left_pad(rows, block.width)
        cache, residual, out = _cache_forward(
            nn, first.arch, first.site, batch, mask, layers, block.start_layers, kwargs
        )
        parts.append((cache, residual, out.view(len(members), 2, -1)))
    if len(parts) == 1:
        return (*parts[0], 1)
    merged = [{key: torch.cat([part[k][key] for part in parts]) for key in parts[0][k]} for k in (0, 1)]
    return merged[0], merged[1], torch.cat([part[2] for part in parts]), len(parts)


def _patch_block(
    plans: list[SweepPlan],
    nn: Any,
    block: _Block,
    cache: dict[int, torch.Tensor],
    residual: dict[int, torch.Tensor],
    answers: list[AnswerTokens],
    originals: list[UnpatchedRun],
    kwargs: dict[str, Any],
    bar: Any,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Run every chunk of the block's patched rows; per member pair, (logit_diff, prob_cf, iia) per cell.

    A cell without a row (before its pair's first differing token) gets the unpatched original's values.
    """
    first = plans[block.members[0]]
    cf_ids = torch.tensor([a.counterfactual_id for a in answers])
    orig_ids = torch.tensor([a.original_id for a in answers])
    n_rows = block.rows.shape[0]
    logit_diff, prob_cf, iia = (np.empty(n_rows, dtype=np.float64) for _ in range(3))
    for at in block.chunks:
        cells = block.rows[at]
        prefix = None
        if block.reuse_prefix:
            prefix = _prefix_kwargs(
                block.kv_name, block.original_kv, int(cells[:, 3].min()), block.width, cells[:, 0]
            )
        layer = int(cells[:, 2].min())
        start_layer = (layer, residual[layer]) if block.skip_layers and layer > 0 else None
        logits = _patched_logits(
            nn, first.arch, first.site, block.ids, cells, cache, kwargs, prefix, start_layer, block.mask
        )
        rows_cf = cf_ids[cells[:, 0]].to(logits.device)[:, None]
        rows_orig = orig_ids[cells[:, 0]].to(logits.device)[:, None]
        flat = at.numpy()
        logit_diff[flat] = (logits.gather(1, rows_cf) - logits.gather(1, rows_orig)).flatten().cpu().numpy()
        prob_cf[flat] = torch.softmax(logits, dim=-1).gather(1, rows_cf).flatten().cpu().numpy()
        iia[flat] = (logits.argmax(dim=-1, keepdim=True) == rows_cf).float().flatten().cpu().numpy()
        if bar is not None:
            bar.update(len(at))
    # Rows were built pair by pair, each pair's cells in grid order: split them back onto the pair's grid.
    out = []
    for k, (i, original) in enumerate(zip(block.members, originals)):
        n = int(np.prod([len(a) for a in plans[i].axes]))
        unpatched = float(original.top1_id == answers[k].counterfactual_id)
        pair_ld, pair_prob, pair_iia = (
            np.full(n, v) for v in (original.logit_diff, original.prob_counterfactual, unpatched)
        )
        mine = (block.rows[:, 0] == k).numpy()
        at = block.rows[mine, 1].numpy()
        pair_ld[at], pair_prob[at], pair_iia[at] = logit_diff[mine], prob_cf[mine], iia[mine]
        out.append((pair_ld, pair_prob, pair_iia))
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


#: `remote=` values by the names `debug patch --remote` and `pytest --remote` take: in process, NDIF's
#: request path run here, or NDIF (nnsight's remote execution).
REMOTE_CHOICES = {"off": False, "local": "local", "ndif": True}
REMOTE = tuple(REMOTE_CHOICES.values())
#: Rows per forward when the forwards run remotely: each request carries its chunk's patch values and its
#: block's cached residual, and brings back one row of last-position logits per cell.
REMOTE_MAX_ROWS = 64


def check_remote(model: Any, remote: Any, reuse_prefix: bool | None) -> None:
    """Refuse, before any forward, a remote sweep that cannot run: bad value, no API key, no hub model.

    Args:
        model: A model id or a `LoadedModel` (its `model_id` is checked).
        remote: False, True or "local" (see `sweep`).
        reuse_prefix: As passed to `sweep`; True cannot go with remote.

    Raises:
        CausalTracingError: One line naming the fix.
    """
    if not any(remote is value or (isinstance(value, str) and remote == value) for value in REMOTE):
        raise CausalTracingError(
            f"remote must be False, True (NDIF) or 'local' (NDIF's request path run here); got {remote!r}"
        )
    if remote and reuse_prefix:
        raise CausalTracingError(
            "reuse_prefix needs the model's key/value cache in this process; pass reuse_prefix=False with "
            "remote"
        )
    if remote is not True:
        return
    from nnsight import CONFIG  # deferred: nnsight (and its torch extensions) cost seconds to import

    if not (os.environ.get("NDIF_API_KEY") or CONFIG.API.APIKEY):
        raise CausalTracingError(
            "remote=True needs an NDIF API key: set NDIF_API_KEY or call "
            "nnsight.CONFIG.set_default_api_key(KEY) (remote='local' runs the same requests here without one)"
        )
    model_id = model if isinstance(model, str) else str(getattr(model, "model_id", "") or "")
    if not model_id or model_id.startswith("embedded:") or Path(model_id).expanduser().exists():
        raise CausalTracingError(
            f"remote=True runs a hub model on NDIF; {model_id or type(model).__name__!r} is a local folder or"
            " an embedded model, which NDIF does not have (pass a hub id, or remote='local' to run it here)"
        )


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
    skip_layers: bool | None = None,
    remote: bool | str = False,
    warn_unsolved: bool = True,
) -> list[SweepResult]:
    """`sweep` over many pairs at once: the cells of several pairs share each batched forward.

    A separate function rather than a list argument to `sweep`, because the two return different things (one
    result vs a list) and a pair is itself a 2-sequence: `sweep(model, [a, b], ...)` would be ambiguous.

    Rows are (pair, cell). Pairs are sorted by token length and cut into blocks of whole pairs (`_blocks`):
    a block's shorter programs are left-padded to its longest, with an attention mask and position ids
    that count only their real tokens, so a row's last position is its own answer position and its
    patched position is moved by its pad (a pair under `PAD_RATIO` of a block's longest starts a block of
    its own). Each block runs its counterfactual cache forward(s), then its chunks of at most `batch_size`
    rows. Peak memory is set by `batch_size`, not by the number of pairs or cells. The numbers equal one
    `sweep` per pair (float32: to rounding, ~1e-6; tested with padded blocks on Qwen3- and GPT-2-style
    models at every site).

    Args:
        model: A model id (loaded with `debug.models.load`) or a `LoadedModel`.
        pairs: `(original, counterfactual)` per pair; each program as `sweep` takes it.
        site: "residual_stream", "attention_heads" or "mlp".
        layers: Layers to patch (see `sweep`): None (all), one list of ints for every pair, or a list with
            one entry (None or a list of ints) per pair.
        positions: Positions to patch: None (all), one list of ints for every pair, or a list with one entry
            (None or a list of ints) per pair.
        heads: Heads to patch for "attention_heads" (default all).
        batch_size: Rows (cells, over pairs) per forward (default: sized from free memory).
        progress: Show a tqdm bar over rows.
        reuse_prefix: As in `sweep`; with several pairs a chunk's prefix cache holds each row's own pair.
        skip_layers: As in `sweep`; each row starts from its own pair's unpatched residual.
        remote: As in `sweep`.
        warn_unsolved: Warn once per pair the model answers wrong (see `sweep`).

    Returns:
        One `SweepResult` per pair, in order. `forwards` and `seconds` are the pair's block's (shared by
        the pairs of that block; `seconds` split evenly among them).

    Raises:
        CausalTracingError: As `sweep`, for any pair, all before the first forward.
    """
    import nnsight  # deferred: nnsight (and its torch extensions) cost seconds to import

    check_site(site)
    check_remote(model, remote, reuse_prefix)
    loaded = resolve_model(model, remote=remote)
    arch = resolve_architecture(loaded.model)
    check_eval(loaded.model)
    pairs = list(pairs)
    plans = [
        plan_pair(loaded, arch, original, counterfactual, site, at, where, heads)
        for (original, counterfactual), at, where in zip(
            pairs, _per_pair(layers, len(pairs), "layers"), _per_pair(positions, len(pairs), "positions")
        )
    ]
    kwargs = forward_kwargs(loaded.model)
    if isinstance(loaded, RemoteModel):
        nn = loaded.nn
    elif remote:
        from nnsight.modeling.transformers import TransformersModel  # deferred: as nnsight above

        # nnsight.NNsight takes `remote=` and ignores it; the transformers wrapper sends the request.
        nn = TransformersModel(loaded.model, tokenizer=loaded.tokenizer)
    else:
        nn = nnsight.NNsight(loaded.model)
    if remote:
        kwargs["remote"] = remote
        reuse_prefix = False
    # The CPU plan's costs are this machine's; remote forwards run elsewhere.
    on_cpu = input_device(loaded.model).type == "cpu" and not remote
    results: list[SweepResult | None] = [None] * len(plans)
    blocks = _blocks(plans, batch_size, REMOTE_MAX_ROWS if remote else None, skip_layers is not False)
    total = sum(b.rows.shape[0] for b in blocks)
    bar = tqdm(total=total, desc=f"patching {site}", unit="cell") if progress else None
    for block in blocks:
        started = time.perf_counter()
        _use_prefix(block, plans, reuse_prefix)
        _plan_chunks(block, plans, skip_layers, on_cpu)
        cache, residual, logits, forwards = _cache_block(nn, plans, block, kwargs)
        answers, runs = [], []
        for k, i in enumerate(block.members):
            answer = plans[i].pair.answer or answer_from_model(logits[k][0], logits[k][1], loaded.tokenizer)
            answers.append(answer)
            runs.append(tuple(unpatched_run(logits[k, j], answer, loaded.tokenizer) for j in (0, 1)))
        originals = [run[0] for run in runs]
        effects = _patch_block(plans, nn, block, cache, residual, answers, originals, kwargs, bar)
        forwards += len(block.chunks) + int(block.reuse_prefix)
        seconds = (time.perf_counter() - started) / len(block.members)
        for k, i in enumerate(block.members):
            results[i] = _result(plans[i], answers[k], runs[k], effects[k], forwards, seconds)
        block.original_kv = None  # a finished block keeps no cache: the peak does not grow with the pairs
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
    skip_layers: bool | None = None,
    remote: bool | str = False,
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
        reuse_prefix: Run each chunk only from its first patched position on, over the unpatched run's
            key/value cache of the tokens before it (same results: a patch at position p cannot change
            earlier positions). None (default) turns it on for models on a CPU whose cache allows it; on a
            GPU it was slower than one large pass (1.42x the plain forward on an H200, before layer skipping
            existed; `bench/patching.py`), so it stays off there. Not with `remote`.
        skip_layers: Start each chunk at its lowest patched layer l: decoder layers below l are skipped
            (nnsight's `.skip`) and layer l is fed the unpatched originals' residual, kept by the cache run
            (same results: a patch at layer l cannot change the layers below); and cells before the first
            token where the programs differ are not run (their patch is a no-op: they get the unpatched
            original's values). None (default) = True on every device; False runs every cell through
            every layer (the one-pass sweep). On a CPU the rows are cut into (layer band x position band)
            tiles whose counts minimize a cost model (`FORWARD_SECONDS`, `CPU_FLOPS`: measured on a 2-core
            CPU), which with `reuse_prefix` brought the embedded binder's sweep to the ratios in
            `bench/patching.py`'s printout (docs/benchmarks.md). On a GPU the chunks stay those of the
            one-pass sweep, ordered layer by layer: no more forwards, less work in each; not measured on a
            GPU yet.
        remote: False (default) runs in this process; "local" sends every trace through nnsight's remote
            request path (serialize, deserialize, run) here, with the same numbers; True sends them to NDIF
            (nnsight's remote execution), which needs an NDIF API key (`NDIF_API_KEY` or nnsight's config)
            and a hub model id: refused in one line before any forward otherwise. Remote forwards take at
            most `REMOTE_MAX_ROWS` rows each; layer skipping serializes and stays on; the prefix cache does
            not (it lives in this process) and is off. Given a model id, the weights are not loaded here:
            the sweep is planned on a meta-device skeleton (`debug.causal.forward.RemoteModel`; with "local",
            nnsight loads the weights on the first trace). A `LoadedModel` is sent as it is.
        warn_unsolved: Warn (`UnsolvedPairWarning`, one line) when the model's top-1 is wrong on the
            original or the counterfactual; the result records it either way (`original_correct`,
            `counterfactual_correct`). Callers that warn themselves pass False.
        method: "exact" (patch every cell), "attribution" (first-order estimates from two forwards and one
            backward, `debug.causal.attribution`), "atp*" (the same with AtP*'s QK fix and GradDrop), or
            either with "+verify" (the estimate, with its `top_k` cells patched exactly: an
            `AttributionCheck`).
        top_k: Cells verified by the "+verify" methods.

    Returns:
        A `SweepResult` with `[layers, positions]` arrays (`[layers, positions, heads]` for heads); an
        `AttributionCheck` for the "+verify" methods.

    Raises:
        CausalTracingError: Unknown site, different token lengths, equal answers, out-of-range indices, a
            program longer than the model's context, a remote sweep that cannot run (`check_remote`) or a
            remote method other than "exact" (all before any forward).
        debug.causal.architectures.UnsupportedArchitectureError: When the model's layers cannot be found.
        debug.models.WeightsRequiredError: For a served (`openai:`) model.
    """
    if method != "exact":
        if remote:
            raise CausalTracingError(f"remote runs method='exact' only; method={method!r} runs in process")
        return run_method(
            method,
            exact_sweep_pairs=sweep_pairs,
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
        skip_layers=skip_layers,
        remote=remote,
        warn_unsolved=False,
    )
    if warn_unsolved:
        warn_if_unsolved(result, stacklevel=2)
    return result
