"""The plain-torch side of the causal references: which module a site is, and its activation on one program.

Written with plain hooks rather than `debug.causal.forward`'s helpers (`site_path`, `record_hidden`), so that
a mistake there cannot hide in the references that check the engine and attribution patching.
"""

from __future__ import annotations

import torch

from debug.causal.architectures import get_path, resolve_architecture


def site_module(model: torch.nn.Module, site: str, layer: int) -> torch.nn.Module:
    """The module whose input (output for "mlp") is the site's activation at `layer`."""
    arch = resolve_architecture(model)
    if site == "residual_stream":
        return get_path(model, arch.spec.final_norm if layer == arch.num_layers else arch.layer_path(layer))
    return get_path(model, arch.mlp_path(layer) if site == "mlp" else arch.attn_out_path(layer))


def site_activation(model: torch.nn.Module, site: str, layer: int, ids: torch.Tensor) -> torch.Tensor:
    """The site's `[seq, width]` activation at `layer` in one no-grad forward of the 1-D token ids `ids`."""
    box: list[torch.Tensor] = []
    module = site_module(model, site, layer)
    if site == "mlp":
        handle = module.register_forward_hook(lambda m, a, out: box.append(out.detach().clone()))
    else:
        handle = module.register_forward_pre_hook(
            lambda m, a, k: box.append((a[0] if a else k["hidden_states"]).detach().clone()), with_kwargs=True
        )
    try:
        with torch.no_grad():
            model(input_ids=ids[None])
    finally:
        handle.remove()
    return box[0][0]
