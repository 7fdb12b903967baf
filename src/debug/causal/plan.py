"""A patching method's plan for one pair: the encoded programs and the cell axes, checked before any forward.

The exact sweep (`debug.causal.engine`) and attribution patching (`debug.causal.attribution`) take the same
arguments and refuse the same bad input; both build a `SweepPlan` per pair here, so the checks and the cell
order (layer-major, the order of a result's flat arrays) are written once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from debug.causal.architectures import Architecture
from debug.causal.forward import SITES, cell_indices
from debug.causal.inputs import CausalTracingError, PairedInputs, check_context, prepare_inputs

__all__ = ["SweepPlan", "check_site", "plan_pair"]


@dataclass
class SweepPlan:
    """What a patching method knows about one pair before its first forward: the encoded pair and the axes."""

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

    def grid(self) -> torch.Tensor:
        """`[cells, 2 or 3]` (layer, position[, head]), layer-major: the order of the result's flat arrays."""
        axes = [torch.tensor(a) for a in self.axes]
        return torch.cartesian_prod(*axes).reshape(-1, len(axes))


def check_site(site: str) -> None:
    """Refuse a site that is not one of `SITES`, naming them."""
    if site not in SITES:
        raise CausalTracingError(f"unknown site {site!r}; choose one of {', '.join(SITES)}")


def plan_pair(
    loaded: Any,
    arch: Architecture,
    original: Any,
    counterfactual: Any,
    site: str,
    layers: Any,
    positions: Any,
    heads: Any,
) -> SweepPlan:
    """Encode and check one pair and its cell axes; runs no forward.

    Default layers are the decoder layers; for the residual stream the final residual (index `num_layers`,
    the final norm's input) is there to ask for by index.

    Raises:
        CausalTracingError: Unequal token lengths, equal answers, a program longer than the context, or an
            index out of range.
    """
    pair = prepare_inputs(loaded.tokenizer, original, counterfactual)
    seq_len = int(pair.original_ids.shape[0])
    check_context(loaded, seq_len, "the original program (with any teacher-forced answer prefix)")
    max_layer = arch.num_layers + (1 if site == "residual_stream" else 0)
    return SweepPlan(
        loaded=loaded,
        arch=arch,
        site=site,
        pair=pair,
        layers=cell_indices(layers, max_layer, "layer", range(arch.num_layers)),
        positions=cell_indices(positions, seq_len, "position"),
        heads=cell_indices(heads, arch.num_heads, "head") if site == "attention_heads" else None,
    )
