"""Distributed alignment search (DAS): is the answer carried by a low-dimensional subspace of one activation?

`das(model, pairs, layer, position, dim)` learns an orthonormal basis `W` (`[dim, hidden]`) of a subspace of
the residual stream entering decoder layer `layer` (`layers[l].input`; `num_layers` = the final norm's input)
at one position, such that the interchange intervention

    h = h_orig + W^T W (h_cf - h_orig)

(the original's activation with its subspace coordinates swapped for the counterfactual's) makes the original
run answer the counterfactual answer (Geiger et al. 2023, "Finding alignments between interpretable causal
variables and distributed neural representations"). The model is frozen; only `W` trains, with Adam on the
cross-entropy toward the counterfactual answer token, over the training pairs. `W` is kept orthonormal by
`torch.nn.utils.parametrizations.orthogonal`. The result reports the interchange intervention accuracy (IIA:
top-1 = cf answer) on held-out pairs, with the patching sweep's other metrics, beside references:

* full-vector patching (`h = h_cf`, the sweep's residual-stream cell): what any subspace can at most reach
  when the whole vector carries the answer;
* a control: a random orthonormal subspace of the same `dim` (untrained). A trained subspace can reach high
  IIA by steering through directions the model does not use on its own (the "interpretability illusion",
  Makelov et al. 2023); a learned subspace that clearly beats the random one at small `dim`, on held-out
  pairs, is evidence and not proof. Read `dim` close to the hidden size as "the whole vector".
* with `label_control=True`, a second control: a subspace of the same `dim` trained the same way toward
  *permuted* labels (each cf answer mapped to another by a fixed permutation), a mapping the model does not
  compute. If it reaches high held-out IIA too, the intervention can steer the model anywhere and a high
  DAS IIA says little about how the model stores the value.

pyvene (Stanford's DAS library) was checked on this setup (transformers 5.24, torch 2.13, nnsight 0.8.1):
`pip install --dry-run pyvene` would install pyvene 0.1.8 without changing torch or transformers (it adds
about 30 packages: datasets, pandas, ipython, plotnine, ...), but pyvene 0.1.8 does not know Qwen3:
`IntervenableModel` over a `Qwen3ForCausalLM` fails with `KeyError: Qwen3ForCausalLM` in its model-type
table (the embedded models are Qwen3-style), while a GPT-2 model runs (pyvene installed without its
dependencies into a side folder, `LowRankRotatedSpaceIntervention` on `block_input`). So DAS is this small
torch implementation, with plain forward pre-hooks, for every architecture the engine supports, and pyvene is
not a dependency.
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
    hidden_arg,
    hooked_logits,
    record_hidden,
    resolve_model,
    site_path,
    with_hidden_arg,
)
from debug.causal.inputs import CausalTracingError, as_pair, check_context, prepare_inputs
from debug.causal.knockout import resolve_positions
from debug.causal.plots import _pyplot
from debug.causal.result import layer_label

__all__ = ["DAS_DEFINITIONS", "DASResult", "das", "das_by_layer", "plot_das"]

DAS_DEFINITIONS: dict[str, str] = {
    "site": (
        "residual stream entering decoder layer l (layers[l].input) at one position; layer num_layers = the "
        "final residual (the final norm's input)"
    ),
    "intervention": (
        "interchange in a learned subspace: h = h_orig + W^T W (h_cf - h_orig), W an orthonormal "
        "[dim, hidden] basis trained (model frozen) with cross-entropy toward the cf answer on the "
        "training pairs"
    ),
    "direction": "the original program runs with the intervened activation; the cf run supplies h_cf",
    "metrics": (
        "on held-out pairs, means at the answer position: iia = top-1 equals the cf answer; LD = logit(cf) - "
        "logit(orig); normalized = (LD - LD_orig)/(LD_cf - LD_orig) per pair; prob_cf = P(cf answer)"
    ),
    "references": (
        "full_vector = h_cf patched whole (the sweep's residual cell); random_subspace = an untrained random "
        "orthonormal basis of the same dim (a control against the interpretability illusion); "
        "permuted_labels (with label_control) = a basis of the same dim trained toward the cf answers mapped "
        "by a fixed permutation without fixed points, iia measured toward those labels"
    ),
}


@dataclass(repr=False)
class DASResult:
    """One DAS fit: the learned subspace's held-out effect beside full-vector patching and a random subspace.

    Attributes:
        layer: The layer whose input was intervened on (`num_layers` = the final residual).
        num_layers: Decoder layers of the model.
        position: The position as given (an int or a target label).
        positions: The resolved position, per pair.
        dim: Subspace dimension.
        hidden_size: Residual-stream width.
        n_train: Training pairs.
        n_test: Held-out pairs.
        losses: Training loss per step.
        iia_train: IIA of the learned subspace on the training pairs.
        metrics: "das", "random_subspace", "full_vector" -> {"iia", "logit_diff", "normalized", "prob_cf"},
            means over the held-out pairs; with the label control also "permuted_labels" -> {"iia_train",
            "iia"} (IIA toward the permuted labels on the training and the held-out pairs).
        basis: The learned orthonormal basis, `[dim, hidden]`.
        definitions: Site, intervention, direction, metrics and references, as sentences.
        model_id: The model's id.
        notes: Anything a reader should know.
    """

    layer: int
    num_layers: int
    position: Any
    positions: list[int]
    dim: int
    hidden_size: int
    n_train: int
    n_test: int
    losses: list[float]
    iia_train: float
    metrics: dict[str, dict[str, float]]
    basis: np.ndarray
    definitions: dict[str, str] = field(default_factory=lambda: dict(DAS_DEFINITIONS))
    model_id: str = ""
    notes: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        iia = {k: round(v["iia"], 3) for k, v in self.metrics.items()}
        return (
            f"DASResult(layer={self.layer}, position={self.position!r}, dim={self.dim}, "
            f"n_test={self.n_test}, iia={iia})"
        )

    @property
    def iia_test(self) -> float:
        """Held-out IIA of the learned subspace."""
        return self.metrics["das"]["iia"]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (without the basis)."""
        return jsonable(
            {
                "method": "das",
                "model_id": self.model_id,
                "layer": self.layer,
                "num_layers": self.num_layers,
                "position": self.position,
                "positions": self.positions,
                "dim": self.dim,
                "hidden_size": self.hidden_size,
                "n_train": self.n_train,
                "n_test": self.n_test,
                "iia_train": self.iia_train,
                "final_loss": self.losses[-1] if self.losses else None,
                "metrics": self.metrics,
                "definitions": self.definitions,
                "notes": self.notes,
            }
        )


@dataclass
class _Batch:
    """The encoded pairs and their cached activations at the intervention site."""

    original_ids: Any  # [n, seq]
    positions: list[int]
    h_orig: Any  # [n, hidden]
    h_cf: Any  # [n, hidden]
    orig_answer: Any  # [n]
    cf_answer: Any  # [n]
    ld_orig: Any  # [n]
    ld_cf: Any  # [n]


def _replace_hook(rows_pos: Any, values: Any) -> Any:
    """A forward pre-hook setting hidden[row, pos[row]] = values[row] (differentiably)."""

    def pre(module: Any, args: tuple, kwargs: dict) -> tuple:
        hidden = hidden_arg(args, kwargs)
        rows = range(hidden.shape[0])
        mask = hidden.new_zeros(hidden.shape[:2])
        mask[list(rows), rows_pos] = 1.0
        patched = hidden * (1 - mask[..., None]) + mask[..., None] * values[:, None, :].to(hidden.dtype)
        return with_hidden_arg(args, kwargs, patched)

    return pre


def _run(model: Any, arch: Any, layer: int, ids: Any, positions: list[int], values: Any) -> Any:
    """`[n, vocab]` last-position logits of `ids`, the layer-`layer` input at `positions` set to `values`."""

    module = get_path(model, site_path(arch, "residual_stream", layer))
    handle = module.register_forward_pre_hook(_replace_hook(positions, values), with_kwargs=True)
    # Under the caller's grad mode: the basis trains through this forward.
    return hooked_logits(model, ids, [handle], grad=True)


def intervene(h_orig: Any, h_cf: Any, basis: Any | None) -> Any:
    """h_orig + W^T W (h_cf - h_orig) for rows of `[n, hidden]`; `basis` None swaps the whole vector."""
    if basis is None:
        return h_cf
    return h_orig + ((h_cf - h_orig) @ basis.T) @ basis


def _cache(model: Any, arch: Any, layer: int, pairs: list[Any], positions: list[int]) -> _Batch:
    """One forward over all originals and counterfactuals: site activations and unpatched LDs."""

    orig = torch.stack([p.original_ids for p in pairs])
    cf = torch.stack([p.counterfactual_ids for p in pairs])
    box: list[Any] = []
    handle = record_hidden(get_path(model, site_path(arch, "residual_stream", layer)), box)
    logits = hooked_logits(model, torch.cat([orig, cf]), [handle])
    n = len(pairs)
    acts = box[0]
    index = torch.arange(n)
    pos = torch.tensor(positions)
    o_ans = torch.tensor([p.answer.original_id for p in pairs])
    c_ans = torch.tensor([p.answer.counterfactual_id for p in pairs])
    rows = torch.arange(2 * n)
    lds = logits[rows, c_ans.repeat(2)] - logits[rows, o_ans.repeat(2)]
    return _Batch(orig, positions, acts[index, pos], acts[n + index, pos], o_ans, c_ans, lds[:n], lds[n:])


def _metrics(logits: Any, batch: _Batch, rows: Any) -> dict[str, float]:

    o_ans, c_ans = batch.orig_answer[rows], batch.cf_answer[rows]
    index = torch.arange(len(rows))
    ld = logits[index, c_ans] - logits[index, o_ans]
    denominator = batch.ld_cf[rows] - batch.ld_orig[rows]
    normalized = (ld - batch.ld_orig[rows]) / torch.where(denominator.abs() < 1e-6, torch.nan, denominator)
    return {
        "iia": float((logits.argmax(-1) == c_ans).float().mean()),
        "logit_diff": float(ld.mean()),
        "normalized": float(normalized.nanmean()) if torch.isfinite(normalized).any() else float("nan"),
        "prob_cf": float(torch.softmax(logits, -1)[index, c_ans].mean()),
    }


def _prepare(
    loaded: Any, arch: Any, pairs: Sequence[Any], layer: int, position: Any, dim: int, test_fraction: float
) -> tuple[list[Any], list[int], int]:
    """Check every argument and encode the pairs, before any forward: (encoded pairs, positions, n_test)."""

    if not 0 <= int(layer) <= arch.num_layers:
        raise CausalTracingError(
            f"layer {layer}: choose a layer in 0..{arch.num_layers} ({arch.num_layers} = the final residual)"
        )
    if not 1 <= int(dim) <= arch.hidden_size:
        raise CausalTracingError(
            f"dim {dim}: choose a subspace dimension in 1..{arch.hidden_size} (the hidden size)"
        )
    if not 0 < test_fraction < 1:
        raise CausalTracingError(f"test_fraction {test_fraction}: choose a fraction strictly between 0 and 1")
    items = list(pairs)
    n_test = max(1, round(len(items) * test_fraction))
    if len(items) - n_test < 1:
        raise CausalTracingError(
            f"das needs at least 2 pairs for a held-out split (one to train, one to test); got {len(items)}"
        )
    encoded = [prepare_inputs(loaded.tokenizer, *as_pair(item)) for item in items]
    for index, pair in enumerate(encoded):
        if pair.answer is None:
            raise CausalTracingError(f"pair {index} has no answers: pass Programs or (text, answer) tuples")
    lengths = sorted({int(p.original_ids.shape[0]) for p in encoded})
    if len(lengths) > 1:
        raise CausalTracingError(
            f"das batches the pairs, which must all have the same token length; got lengths {lengths} "
            "(use programs of one seq_len and single-token answers)"
        )
    check_context(loaded, lengths[0], "the original programs")
    positions = []
    for pair in encoded:
        positions += resolve_positions(position, pair.tokens, pair.targets, "position")[:1]
    return encoded, positions, n_test


def _split(n: int, n_test: int, seed: int) -> tuple[Any, Any]:

    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[n_test:], order[:n_test]


def _random_basis(hidden: int, dim: int, seed: int) -> Any:

    gaussian = torch.randn(hidden, dim, generator=torch.Generator().manual_seed(seed + 1))
    q, _ = torch.linalg.qr(gaussian)
    return q.T.contiguous()  # [dim, hidden], orthonormal rows


def _fit(
    run: Any, train: Any, targets: Any, hidden: int, dim: int, steps: int, lr: float, seed: int, device: Any
) -> tuple[Any, list[float]]:
    """Train an orthonormal `[dim, hidden]` basis (Adam, cross-entropy toward `targets`); (basis, losses)."""
    torch.manual_seed(seed)
    projector = torch.nn.Linear(hidden, dim, bias=False).to(device=device, dtype=torch.float32)
    torch.nn.utils.parametrizations.orthogonal(projector)
    optimizer = torch.optim.Adam(projector.parameters(), lr=lr)
    losses: list[float] = []
    for _ in range(steps):
        optimizer.zero_grad()
        logits = run(train, projector.weight)
        loss = torch.nn.functional.cross_entropy(logits, targets[train].to(logits.device))
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return projector.weight.detach().clone(), losses


def _permuted_labels(labels: Any, seed: int) -> Any:
    """`labels` with each distinct value mapped to another one: a seeded cyclic shift of a shuffled order."""
    values = sorted(set(labels.tolist()))
    order = torch.randperm(len(values), generator=torch.Generator().manual_seed(seed + 2)).tolist()
    shuffled = [values[i] for i in order]
    mapping = {a: b for a, b in zip(shuffled, shuffled[1:] + shuffled[:1])}  # a cycle: no fixed points
    return torch.tensor([mapping[v] for v in labels.tolist()])


def _target_iia(logits: Any, targets: Any) -> float:
    return float((logits.argmax(-1).cpu() == targets).float().mean())


def das(
    model: Any,
    pairs: Sequence[Any],
    layer: int,
    position: Any,
    dim: int,
    *,
    steps: int = 200,
    lr: float = 1e-2,
    test_fraction: float = 0.25,
    seed: int = 0,
    label_control: bool = False,
) -> DASResult:
    """Fit a `dim`-dimensional interchange subspace at (layer, position) and report its held-out IIA.

    Args:
        model: A model id or a `LoadedModel`.
        pairs: (original, counterfactual) pairs (`Program`s or `(text, answer)` tuples, or seed pair dicts),
            all of the same token length.
        layer: The residual stream entering this decoder layer (`num_layers` = the final residual).
        position: An int, or a target label resolved per pair ("final", "query", "ref depth 1", ...).
        dim: Subspace dimension, 1..hidden size.
        steps: Adam steps (each over all training pairs at once).
        lr: Adam learning rate.
        test_fraction: Share of the pairs held out (at least one pair on each side).
        seed: Seeds the split, the initial basis, the random control and the label permutation.
        label_control: Also fit a second subspace of the same `dim`, the same way, toward *permuted*
            counterfactual labels (each cf answer token mapped to another one by a fixed seeded permutation
            without fixed points): a function the model does not compute. Its train and held-out IIA toward
            those labels go in `metrics["permuted_labels"]`; a subspace that reaches them too is evidence the
            intervention is expressive enough to steer, not that the model stores the value there. Doubles
            the training time.

    Returns:
        A `DASResult`.

    Raises:
        CausalTracingError: `dim` larger than the hidden size, too few pairs for a held-out split, a layer or
            position the model / program does not have, pairs of different lengths, a label control over
            pairs with a single cf answer (all before any forward).
    """

    loaded = resolve_model(model)
    arch = resolve_architecture(loaded.model)
    check_eval(loaded.model)
    if steps < 0:
        raise CausalTracingError(f"steps {steps}: choose 0 or more training steps")
    encoded, positions, n_test = _prepare(loaded, arch, pairs, int(layer), position, int(dim), test_fraction)
    if label_control and len({p.answer.counterfactual_id for p in encoded}) < 2:
        raise CausalTracingError(
            "label_control permutes the counterfactual answers, but every pair has the same one; "
            "pass pairs with at least two different counterfactual answers"
        )
    hf = loaded.model
    batch = _cache(hf, arch, int(layer), encoded, positions)
    train, test = _split(len(encoded), n_test, seed)
    device = batch.h_orig.device

    def run(rows: Any, basis: Any | None) -> Any:
        values = intervene(batch.h_orig[rows].float(), batch.h_cf[rows].float(), basis)
        return _run(
            hf, arch, int(layer), batch.original_ids[rows], [positions[i] for i in rows.tolist()], values
        )

    frozen = [p for p in hf.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)  # only the basis trains; no gradients are kept for the model
    try:
        basis, losses = _fit(run, train, batch.cf_answer, arch.hidden_size, int(dim), steps, lr, seed, device)
        if label_control:
            permuted = _permuted_labels(batch.cf_answer, seed)
            control_basis, _ = _fit(run, train, permuted, arch.hidden_size, int(dim), steps, lr, seed, device)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    with torch.no_grad():
        iia_train = _metrics(run(train, basis), batch, train)["iia"]
        metrics = {
            "das": _metrics(run(test, basis), batch, test),
            "random_subspace": _metrics(
                run(test, _random_basis(arch.hidden_size, int(dim), seed).to(device)), batch, test
            ),
            "full_vector": _metrics(run(test, None), batch, test),
        }
        if label_control:
            metrics["permuted_labels"] = {
                "iia_train": _target_iia(run(train, control_basis), permuted[train]),
                "iia": _target_iia(run(test, control_basis), permuted[test]),
            }
    notes = [encoded[0].answer.note]
    if len(test) < 10:
        notes.append(f"only {len(test)} held-out pairs: each IIA is a fraction of {len(test)}")
    return DASResult(
        layer=int(layer),
        num_layers=arch.num_layers,
        position=position,
        positions=positions,
        dim=int(dim),
        hidden_size=arch.hidden_size,
        n_train=len(train),
        n_test=len(test),
        losses=losses,
        iia_train=iia_train,
        metrics=metrics,
        basis=basis.cpu().numpy(),
        model_id=str(getattr(loaded, "model_id", "")),
        notes=notes,
    )


def das_by_layer(
    model: Any, pairs: Sequence[Any], layers: Sequence[int], position: Any, dim: int, **kwargs: Any
) -> list[DASResult]:
    """`das` at each of `layers` (same pairs, split and seed); every argument is checked before any fit."""

    loaded = resolve_model(model)
    arch = resolve_architecture(loaded.model)
    if not layers:
        raise CausalTracingError(f"layers is empty: choose layers in 0..{arch.num_layers}")
    for layer in layers:
        _prepare(loaded, arch, pairs, int(layer), position, int(dim), kwargs.get("test_fraction", 0.25))
    return [das(loaded, pairs, layer, position, dim, **kwargs) for layer in layers]


def plot_das(results: Sequence[DASResult], title: str = "") -> Any:
    """Held-out IIA by layer: learned subspace, random subspace of the same dim, full vector; the figure."""

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(results) + 2), 3.8))
    labels = [layer_label(r.layer, r.num_layers) for r in results]
    x = np.arange(len(results))
    first = results[0]
    for key, label, style in (
        ("das", f"DAS, dim {first.dim}", "o-"),
        ("random_subspace", f"random subspace, dim {first.dim}", "s--"),
        ("full_vector", "full vector", "^:"),
    ):
        ax.plot(x, [r.metrics[key]["iia"] for r in results], style, label=label)
    ax.set_xticks(x, labels)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("layer (residual stream entering it)")
    ax.set_ylabel(f"held-out IIA ({first.n_test} pairs)")
    ax.set_title(title or f"DAS at position {first.position!r}, {first.model_id}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
