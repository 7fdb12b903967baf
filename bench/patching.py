"""Patching speed side by side in one run: a trace per cell, the one-pass and default sweeps, a plain forward.

    python bench/patching.py                      # embedded model + Qwen3-0.6B shape, on cuda when available
    python bench/patching.py --device cuda --dtype bfloat16

For each model the same program pair and the same residual-stream cells are timed these ways:

* per-cell: one nnsight trace per (layer, position), batch 1 — the usual loop (the seed's, TransformerLens');
* one-pass: `sweep(..., reuse_prefix=False, skip_layers=False)` — one cached counterfactual run, then batched
  traces with rows = cells, every row through every layer at every position (the brute-force batched sweep);
* default: `sweep(...)` as it runs with no options on this device — cells before the first token where the
  programs differ are not run (the patch is a no-op there), rows patched at layer l start from the
  unpatched run's residual at l (layers below never run), and on a CPU also from the first patched position
  over the unpatched key/value cache, in (layer band x position band) tiles;
* the other skipping variant: on a CPU `reuse_prefix=False` (layers skipped, every position run), elsewhere
  `reuse_prefix=True`;
* plain: a plain forward over as many rows as there are cells, no nnsight, no patching, same chunking and
  `logits_to_keep=1`.

work: the layer x token work the default sweep ran (counted by hooks on every MLP, the cache runs included)
over the one-pass sweep's; ideal: what a patch at (l, p) needs at the least, layers >= l at positions >= p,
and nothing before the first token where the two programs differ.

A first table shows peak memory against the number of cells: `sweep_pairs` over 1 pair x 1 layer,
1 pair x every layer, 8 and 64 pairs x every layer of the embedded model, at one fixed `--memory-batch-size`
(default 64) on `--memory-seq-len`-line programs (default 4), each in a fresh process: the peak resident
set (`resource.getrusage`) over the model-loaded baseline on the CPU, the peak of
`torch.cuda.max_memory_allocated` on a GPU. With a fixed batch size the peak should stay flat while the
cells grow, but for the pairs' caches a block holds (at most a quarter of the memory budget)
(`--skip-memory` leaves the table out, `--memory-only` prints only it).

Goals: default / one-pass <= 0.35 on a CPU and <= 0.5 on a GPU at the Qwen3-0.6B shape; per-cell / default
>= 100 on a GPU there. On a CPU the Qwen3-0.6B shape is too slow to sweep whole, so there the cells are every
9th layer x all positions of a 4-line program, and the per-cell loop runs on a sample of cells and is
extrapolated; the printout says so. Timings do not depend on weight values, so the large model has random
weights.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import nnsight
import numpy as np
import torch
from tabulate import tabulate

from debug.causal.architectures import get_path, resolve_architecture

# The per-cell loop reuses the engine's own counterfactual cache, so only the patching strategy differs.
from debug.causal.engine import (
    auto_batch_size,
    cache_counterfactual,
    forward_kwargs,
    sweep,
    sweep_pairs,
)
from debug.causal.inputs import prepare_inputs
from debug.causal.pairs import binding_pair
from debug.models import DEFAULT_MODEL, LoadedModel, load
from debug.tokenizer import build_char_tokenizer
from debug.train.model import build_decoder


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def qwen3_06b_shape(dtype: torch.dtype, device: str) -> LoadedModel:
    """Qwen3-0.6B's decoder shape (28 layers, d1024, 16 heads, 8 KV heads, head_dim 128, MLP 3072), random
    weights, with the char tokenizer (the vocabulary size does not matter with logits_to_keep=1)."""
    tok = build_char_tokenizer()
    torch.manual_seed(0)
    with torch.device(device):
        model = build_decoder(
            tok,
            layers=28,
            hidden=1024,
            heads=16,
            kv_heads=8,
            intermediate=3072,
            head_dim=128,
            max_positions=1024,
        )
    return LoadedModel(model.to(dtype).eval(), tok, "random Qwen3-0.6B shape", "random")


def per_cell_loop(loaded: LoadedModel, pair: Any, cells: list[tuple[int, int]]) -> tuple[float, np.ndarray]:
    """One nnsight trace per cell (batch 1): seconds and the logit differences."""
    model = loaded.model
    arch = resolve_architecture(model)
    nn = nnsight.NNsight(model)
    kwargs = forward_kwargs(model)
    layers = sorted({layer for layer, _ in cells})
    cache, _ = cache_counterfactual(nn, arch, "residual_stream", pair, layers, kwargs)
    device = model.get_input_embeddings().weight.device
    ids = pair.original_ids.to(device)[None]
    o_id, c_id = pair.answer.original_id, pair.answer.counterfactual_id
    out = []
    _sync(device)
    start = time.perf_counter()
    for layer, pos in cells:
        with torch.no_grad(), nn.trace(input_ids=ids, **kwargs):
            hidden = get_path(nn, arch.layer_path(layer)).input
            hidden[0, pos] = cache[layer][pos]
            logits = nnsight.save(nn.output.logits[0, -1].float())
        out.append(float(logits[c_id] - logits[o_id]))
    _sync(device)
    return time.perf_counter() - start, np.array(out)


def brute_force(loaded: LoadedModel, ids: torch.Tensor, rows: int, batch_size: int) -> float:
    """Seconds for a plain forward over `rows` copies of the input, chunked like the sweep."""
    model = loaded.model
    kwargs = forward_kwargs(model)
    device = model.get_input_embeddings().weight.device
    ids = ids.to(device)
    _sync(device)
    start = time.perf_counter()
    with torch.no_grad():
        for first in range(0, rows, batch_size):
            n = min(batch_size, rows - first)
            model(input_ids=ids[None].expand(n, -1), **kwargs).logits[:, -1].float().cpu()
    _sync(device)
    return time.perf_counter() - start


class _WorkCounter:
    """Counts the tokens (rows x positions) every decoder layer's MLP runs on: the layer x token work done."""

    def __init__(self, model: torch.nn.Module) -> None:
        arch = resolve_architecture(model)
        self.tokens = 0
        self.handles = [
            get_path(model, arch.mlp_path(layer)).register_forward_hook(self._count)
            for layer in range(arch.num_layers)
        ]

    def _count(self, module: Any, args: Any, out: torch.Tensor) -> None:
        self.tokens += out.shape[0] * out.shape[1]

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


VARIANTS = {
    "one-pass": {"reuse_prefix": False, "skip_layers": False},
    "default": {},
    "skip layers": {"reuse_prefix": False},
    "prefix+skip": {"reuse_prefix": True},
}


def _setup(loaded: LoadedModel, args: argparse.Namespace, big: bool) -> dict[str, Any]:
    """The pair, its cells and the ways to time on this model (the big shape on a CPU: a reduced grid)."""
    device = loaded.model.get_input_embeddings().weight.device
    on_cpu = device.type == "cpu"
    seq_len = 4 if (big and on_cpu) else args.seq_len
    original, counterfactual = binding_pair(seq_len, min(args.num_hops, seq_len), args.seed, loaded.tokenizer)
    pair = prepare_inputs(loaded.tokenizer, original, counterfactual)
    arch = resolve_architecture(loaded.model)
    n_tokens = int(pair.original_ids.shape[0])
    layers = list(range(0, arch.num_layers, 9)) if (big and on_cpu) else list(range(arch.num_layers))
    return {
        "device": device,
        "on_cpu": on_cpu,
        "original": original,
        "counterfactual": counterfactual,
        "pair": pair,
        "arch": arch,
        "n_tokens": n_tokens,
        "layers": layers,
        "cells": [(layer, pos) for layer in layers for pos in range(n_tokens)],
        "batch_size": args.batch_size or auto_batch_size(loaded.model, arch, n_tokens),
        # The default is prefix+skip on a CPU and skip layers elsewhere; time the other one too.
        "names": ["one-pass", "default", "skip layers" if on_cpu else "prefix+skip"],
    }


def _run(loaded: LoadedModel, setup: dict[str, Any], name: str, batch_size: int | None, **where: Any) -> Any:
    where = where or {"layers": setup["layers"]}
    return sweep(
        loaded,
        setup["original"],
        setup["counterfactual"],
        batch_size=batch_size,
        warn_unsolved=False,
        **where,
        **VARIANTS[name],
    )


def _timings(loaded: LoadedModel, setup: dict[str, Any], args: argparse.Namespace) -> tuple[dict, dict]:
    """Warm-up, then interleaved repeats of every way and of the plain forward: (times, results)."""
    names, device, pair, cells = setup["names"], setup["device"], setup["pair"], setup["cells"]
    # Warm-up: kernels, allocator and nnsight's first-trace costs are paid before any clock starts.
    for name in names:
        _run(loaded, setup, name, None, layers=setup["layers"][-1:], positions=[1, 2])
    brute_force(loaded, pair.original_ids, 2, 2)
    per_cell_loop(loaded, pair, cells[:2])
    # Interleaved repeats, medians: the machine may be shared, and load drifts between runs.
    times: dict[str, list[float]] = {name: [] for name in names + ["plain"]}
    results: dict[str, Any] = {}
    for _ in range(args.repeats):
        for name in names:
            _sync(device)
            start = time.perf_counter()
            results[name] = _run(loaded, setup, name, args.batch_size)
            _sync(device)
            times[name].append(time.perf_counter() - start)
        # The plain forward over the same rows, + the cache run.
        times["plain"].append(brute_force(loaded, pair.original_ids, len(cells) + 2, setup["batch_size"]))
    return times, results


def _work(loaded: LoadedModel, setup: dict[str, Any], args: argparse.Namespace) -> dict[str, int]:
    """Tokens run through the decoder layers by the one-pass and the default sweep."""
    work = {}
    for name in ("one-pass", "default"):
        counter = _WorkCounter(loaded.model)
        try:
            _run(loaded, setup, name, args.batch_size)
        finally:
            counter.close()
        work[name] = counter.tokens
    return work


def _per_cell(
    loaded: LoadedModel, setup: dict[str, Any], args: argparse.Namespace, reference: np.ndarray
) -> tuple[float, int, float]:
    """The per-cell loop over a sample of cells: (seconds for every cell, sample size, max |LD diff|)."""
    cells = setup["cells"]
    sample_size = min(len(cells), args.per_cell_sample or (24 if setup["on_cpu"] else len(cells)))
    picks = sorted(np.random.default_rng(0).choice(len(cells), size=sample_size, replace=False))
    t_cells, per_cell_ld = per_cell_loop(loaded, setup["pair"], [cells[i] for i in picks])
    diff = float(np.abs(reference.reshape(-1)[picks] - per_cell_ld).max())
    return t_cells / sample_size * len(cells), sample_size, diff


def bench_one(loaded: LoadedModel, args: argparse.Namespace, *, big: bool) -> dict[str, Any]:
    """Time every way on one model; returns the row of the table."""
    setup = _setup(loaded, args, big)
    names, cells, n_tokens = setup["names"], setup["cells"], setup["n_tokens"]
    times, results = _timings(loaded, setup, args)
    median = {name: float(np.median(t)) for name, t in times.items()}

    def ratio(a: str, b: str) -> float:
        return float(np.median(np.array(times[a]) / np.array(times[b])))

    work = _work(loaded, setup, args)
    reference = results["one-pass"].logit_diff
    skip_diff = max(float(np.abs(results[name].logit_diff - reference).max()) for name in names[1:])
    t_per_cell, sample_size, per_cell_diff = _per_cell(loaded, setup, args, reference)
    # The least work: cell (l, p) must recompute layers >= l at positions >= p, and nothing before the
    # first token where the programs differ (there the patch puts in what is already there).
    layers_all = setup["arch"].num_layers
    pair = setup["pair"]
    first = int(torch.nonzero(pair.original_ids != pair.counterfactual_ids)[0, 0])
    needed = np.mean([(layers_all - layer) * (n_tokens - pos) * (pos >= first) for layer, pos in cells])
    other = names[2]
    device = setup["device"]
    return {
        "model": loaded.model_id,
        "device": f"{device.type} {str(next(loaded.model.parameters()).dtype).replace('torch.', '')}",
        "cells": f"{len(setup['layers'])} layers x {n_tokens} = {len(cells)}",
        "per-cell s": f"{t_per_cell:.2f}"
        + ("" if sample_size == len(cells) else f" (est. from {sample_size})"),
        "one-pass s": f"{median['one-pass']:.3f} ({results['one-pass'].forwards} fw)",
        "default s": f"{median['default']:.3f} ({results['default'].forwards} fw)",
        f"{other} s": f"{median[other]:.3f} ({results[other].forwards} fw)",
        "plain s": f"{median['plain']:.3f}",
        "default/one-pass": f"{ratio('default', 'one-pass'):.3f}",
        f"{other}/one-pass": f"{ratio(other, 'one-pass'):.3f}",
        "one-pass/plain": f"{ratio('one-pass', 'plain'):.3f}",
        "default/plain": f"{ratio('default', 'plain'):.3f}",
        "per-cell/default": f"{t_per_cell / median['default']:.1f}x",
        "work (ideal)": f"{work['default'] / work['one-pass']:.2f} ({needed / (layers_all * n_tokens):.2f})",
        "max |LD diff|": f"{max(skip_diff, per_cell_diff):.1e}",
    }


MEMORY_SIZES = ((1, 1), (1, None), (8, None), (64, None))  # (pairs, layers): None = every layer


def _peak_memory(device: str, pairs: int, n_layers: int | None, batch_size: int, seq_len: int) -> dict:
    """In a fresh process: load the embedded model, sweep, and report the peak memory over the baseline."""
    import resource

    torch.set_num_threads(1)
    loaded = load(DEFAULT_MODEL, device=device, dtype=torch.float32)
    arch = resolve_architecture(loaded.model)
    programs = [binding_pair(seq_len, 2, seed, loaded.tokenizer) for seed in range(pairs)]
    layers = list(range(arch.num_layers if n_layers is None else n_layers))
    # A tiny sweep first: nnsight's and torch's one-time allocations belong to the baseline.
    sweep_pairs(loaded, programs[:1], layers=[0], positions=[0], batch_size=2, warn_unsolved=False)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    results = sweep_pairs(loaded, programs, layers=layers, batch_size=batch_size, warn_unsolved=False)
    peak = (
        torch.cuda.max_memory_allocated()
        if cuda
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    return {
        "pairs": pairs,
        "layers": len(layers),
        "cells": sum(r.logit_diff.size for r in results),
        "batch": batch_size,
        "peak MiB": f"{peak / 2**20:.1f}",
        "peak - baseline MiB": f"{(peak - base) / 2**20:.1f}",
    }


def memory_table(args: argparse.Namespace) -> list[dict]:
    """One row per sweep size, each measured in its own process (a peak RSS never falls back)."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    rows = []
    for pairs, n_layers in MEMORY_SIZES:
        with context.Pool(1) as pool:
            row = pool.apply(
                _peak_memory,
                (args.device, pairs, n_layers, args.memory_batch_size, args.memory_seq_len),
            )
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one table row per model."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="float32 (CPU default) or bfloat16 (GPU default)")
    parser.add_argument(
        "--seq-len", type=int, default=16, help="assignment lines of the program (default 16)"
    )
    parser.add_argument("--num-hops", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=None, help="rows per forward (default automatic)")
    parser.add_argument(
        "--per-cell-sample",
        type=int,
        default=None,
        help="cells the per-cell loop times, extrapolated to all (default: 24 on CPU, all on GPU)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats of every way (median)")
    parser.add_argument("--skip-big", action="store_true", help="only the embedded model")
    parser.add_argument("--skip-small", action="store_true", help="only the Qwen3-0.6B shape")
    parser.add_argument("--skip-memory", action="store_true", help="leave out the peak-memory table")
    parser.add_argument(
        "--memory-batch-size", type=int, default=64, help="rows per forward of the memory table (default 64)"
    )
    parser.add_argument(
        "--memory-seq-len", type=int, default=4, help="assignment lines of the memory table's programs"
    )
    parser.add_argument("--memory-only", action="store_true", help="only the peak-memory table")
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype or ("float32" if args.device == "cpu" else "bfloat16"))
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))

    if args.memory_batch_size < 1 or args.memory_seq_len < 2:
        parser.error("--memory-batch-size takes a positive integer, --memory-seq-len one of at least 2")
    if not args.skip_memory:
        memory = memory_table(args)
        print(tabulate(memory, headers="keys"))
        print(
            "peak memory of sweep_pairs at a fixed batch size, each size in a fresh process "
            f"({'CUDA allocator' if args.device.startswith('cuda') else 'peak RSS, resource.getrusage'}); "
            "baseline = the model loaded and one tiny sweep run\n",
            flush=True,
        )
        if args.memory_only:
            return 0
    rows = []
    if not args.skip_small:
        rows.append(bench_one(load(DEFAULT_MODEL, device=args.device, dtype=torch.float32), args, big=False))
        print(tabulate(rows, headers="keys"), flush=True)
    if not args.skip_big:
        rows.append(bench_one(qwen3_06b_shape(dtype, args.device), args, big=True))
    print()
    print(tabulate(rows, headers="keys"))
    print(
        "\ndefault/one-pass: goal <= 0.35 on a CPU, <= 0.5 on a GPU at the Qwen3-0.6B shape; per-cell/"
        "default: goal >= 100x on a GPU there (ratios: median of the interleaved repeats' ratios)."
        "\nwork: layer x token work of the default sweep over the one-pass sweep's, counted by MLP hooks, the"
        " cache runs included; in brackets the least a patch at (l, p) needs (layers >= l, positions >= p;"
        " none before the first differing token)."
        "\nmax |LD diff|: the skipping sweeps and the per-cell loop against the one-pass sweep."
    )
    if args.device == "cpu":
        print(
            "CPU run: the Qwen3-0.6B shape uses a 4-line program and every 9th layer, the per-cell loop a "
            f"sample of {args.per_cell_sample or 24} cells extrapolated to all."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
