"""Attribution patching vs exact patching, side by side in one run: agreement per site and the speed ratio.

    python bench/attribution.py                                  # binder, binder-4l, Qwen3-0.6B shape
    python bench/attribution.py --models embedded:binder --seq-len 16

For each model one program pair is swept at every site both ways on the same cells:
`sweep(..., method="attribution")` (two forwards, one backward) and the exact `sweep(...)` (batched patching).
Printed per site: Spearman rank correlation of the estimated and exact LD change over all cells
(`debug.causal.agreement`), top-k recall (the fraction of the k cells with the largest exact |change| that are
also among the k largest estimates), and seconds of each method with exact / attribution. Goal: >= 20x at the
Qwen3-0.6B shape.

The shipped models get the first pair (seeds from --seed on) they answer correctly both ways. The Qwen3-0.6B
shape (28 layers, d1024, 16 heads, 8 KV heads, head_dim 128, MLP 3072) has random weights, so its agreement
says little about trained models; on a CPU its exact sweep is too slow for every layer, so there both methods
cover the layers in --big-layers (heads: --big-head-layers; the printout says which) and a --big-seq-len-line
program. There the measured ratio understates a full sweep's: the exact cost grows with the cells swept, the
attribution's (two forwards, one backward) does not.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from typing import Any

import torch
from tabulate import tabulate

from debug.causal import agreement, answers_correctly, binding_pair, sweep
from debug.models import LoadedModel, load
from debug.tokenizer import build_char_tokenizer
from debug.train import build_decoder

SITES = ("residual_stream", "attention_heads", "mlp")
BIG = "qwen3-0.6b-shape"


def qwen3_06b_shape() -> LoadedModel:
    """Qwen3-0.6B's decoder shape with random weights and the char tokenizer."""
    tok = build_char_tokenizer()
    torch.manual_seed(0)
    model = build_decoder(
        tok, layers=28, hidden=1024, heads=16, kv_heads=8, intermediate=3072, head_dim=128, max_positions=1024
    )
    return LoadedModel(model.float().eval(), tok, "random Qwen3-0.6B shape", "random")


def solved_pair(loaded: Any, seq_len: int, num_hops: int, seed: int, tries: int = 50) -> tuple[Any, Any, int]:
    """The first pair from `seed` on that the model answers correctly both ways (else the `seed` pair)."""
    for s in range(seed, seed + tries):
        pair = binding_pair(seq_len=seq_len, num_hops=num_hops, seed=s, tokenizer=loaded.tokenizer)
        if all(answers_correctly(loaded, list(pair))):
            return (*pair, s)
    return (*binding_pair(seq_len=seq_len, num_hops=num_hops, seed=seed, tokenizer=loaded.tokenizer), seed)


def timed(fn: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def bench_model(name: str, args: argparse.Namespace) -> list[list[Any]]:
    big = name == BIG
    loaded = qwen3_06b_shape() if big else load(name)
    seq_len = args.big_seq_len if big else args.seq_len
    original, counterfactual, seed = solved_pair(loaded, seq_len, args.num_hops, args.seed)
    n = loaded.model.config.num_hidden_layers
    rows = []
    covered = []
    for site in SITES:
        layers = list(range(n))
        if big:
            chosen = args.big_head_layers if site == "attention_heads" else args.big_layers
            layers = [int(x) for x in chosen.split(",")]
            covered.append(f"{site} layers {layers}")
        kwargs = {"site": site, "layers": layers}
        sweep(loaded, original, counterfactual, method="attribution", **kwargs)  # warm-up (first-call costs)
        estimate, t_attr = timed(
            lambda kw=kwargs: sweep(loaded, original, counterfactual, method="attribution", **kw)
        )
        exact, t_exact = timed(lambda kw=kwargs: sweep(loaded, original, counterfactual, **kw))
        scores = agreement(estimate, exact, top_k=args.top_k)
        rows.append(
            [
                loaded.model_id if big else name,
                site,
                int(scores["cells"]),
                f"{scores['spearman']:.3f}",
                f"{scores['top_k_recall']:.2f} (k={int(scores['k'])})",
                f"{scores['sign_agreement']:.2f}",
                f"{t_attr:.2f}",
                f"{t_exact:.1f}",
                f"{t_exact / t_attr:.1f}x",
            ]
        )
    solved = "solved" if exact.solved else "NOT solved"
    cover = ", ".join(covered) if big else "all layers"
    print(f"{rows[0][0]}: {seq_len}-line program, seed {seed} ({solved}), {cover}", file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=f"embedded:binder,embedded:binder-4l,{BIG}")
    parser.add_argument("--seq-len", type=int, default=8, help="program lines for the shipped models")
    parser.add_argument("--big-seq-len", type=int, default=4, help="program lines for the Qwen3-0.6B shape")
    parser.add_argument("--big-layers", default="0,13,27", help="residual/mlp layers, Qwen3-0.6B shape")
    parser.add_argument("--big-head-layers", default="27", help="head layers at the Qwen3-0.6B shape")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadiest on a shared CPU)")
    parser.add_argument("--num-hops", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--top-k", type=int, default=20)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)  # unsolved random-model pairs: said below
    table = []
    for name in args.models.split(","):
        table.extend(bench_model(name.strip(), args))
    headers = ["model", "site", "cells", "spearman", "top-k recall", "sign (top-k)", "attr s", "exact s"]
    headers.append("exact/attr")
    print(tabulate(table, headers=headers))
    print(f"torch threads: {torch.get_num_threads()}; float32 on cpu")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
