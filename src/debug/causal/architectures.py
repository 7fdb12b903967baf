"""Where the patchable modules live in each supported causal-LM architecture.

The patching engine never names a model family: it asks this table for the decoder layers, each layer's
attention output projection (whose *input* holds the per-head outputs), each layer's MLP, and the final norm.
Adding an architecture is one row in `ARCHITECTURES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class ArchitectureSpec:
    """Module paths of one architecture, relative to the causal-LM module.

    Attributes:
        layers: Dotted path of the `ModuleList` of decoder layers.
        attn_out: Path, relative to a decoder layer, of the attention output projection (its input:
            the heads, concatenated).
        mlp: Path, relative to one decoder layer, of the MLP block.
        final_norm: Dotted path of the norm applied after the last layer.
    """

    layers: str
    attn_out: str
    mlp: str
    final_norm: str


_LLAMA_LIKE = ArchitectureSpec(
    layers="model.layers", attn_out="self_attn.o_proj", mlp="mlp", final_norm="model.norm"
)

#: `config.model_type` -> module paths. Qwen2/3, Llama and Mistral share the Llama layout.
ARCHITECTURES: dict[str, ArchitectureSpec] = {
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "gpt2": ArchitectureSpec(
        layers="transformer.h", attn_out="attn.c_proj", mlp="mlp", final_norm="transformer.ln_f"
    ),
    "gpt_neox": ArchitectureSpec(
        layers="gpt_neox.layers",
        attn_out="attention.dense",
        mlp="mlp",
        final_norm="gpt_neox.final_layer_norm",
    ),
}


class UnsupportedArchitectureError(ValueError):
    """The model's layers cannot be found; the message names the supported architectures."""


@dataclass(frozen=True)
class Architecture:
    """The resolved layout of one loaded model.

    Attributes:
        model_type: `config.model_type`.
        spec: The module paths.
        num_layers: Number of decoder layers.
        num_heads: Attention heads (query heads; grouped KV heads do not change the o_proj input).
        head_dim: Width of one head's slice of the attention output projection's input.
        hidden_size: Width of the residual stream.
    """

    model_type: str
    spec: ArchitectureSpec
    num_layers: int
    num_heads: int
    head_dim: int
    hidden_size: int

    def layer_path(self, layer: int) -> str:
        """Dotted path of decoder layer `layer`."""
        return f"{self.spec.layers}.{layer}"

    def attn_out_path(self, layer: int) -> str:
        """Dotted path of layer `layer`'s attention output projection."""
        return f"{self.layer_path(layer)}.{self.spec.attn_out}"

    def mlp_path(self, layer: int) -> str:
        """Dotted path of layer `layer`'s MLP."""
        return f"{self.layer_path(layer)}.{self.spec.mlp}"


def supported_architectures() -> list[str]:
    """The `config.model_type` values the engine can patch."""
    return sorted(ARCHITECTURES)


def get_path(root: Any, path: str) -> Any:
    """Follow a dotted path of attributes (integers index lists) from `root`: modules and nnsight envoys."""
    node = root
    for part in path.split("."):
        node = node[int(part)] if part.isdigit() else getattr(node, part)
    return node


def _in_features(module: torch.nn.Module) -> int:
    # nn.Linear keeps (out, in) weights; GPT-2's Conv1D keeps (in, out).
    if isinstance(module, torch.nn.Linear):
        return int(module.in_features)
    return int(module.weight.shape[0])


def resolve_architecture(model: torch.nn.Module) -> Architecture:
    """Find the patchable modules of a transformers causal LM.

    Args:
        model: A `PreTrainedModel` with a language-modelling head.

    Raises:
        UnsupportedArchitectureError: When `config.model_type` is not in the table or its modules are missing.
    """
    config = getattr(model, "config", None)
    model_type = str(getattr(config, "model_type", type(model).__name__))
    supported = ", ".join(supported_architectures())
    spec = ARCHITECTURES.get(model_type)
    if spec is None:
        raise UnsupportedArchitectureError(
            f"cannot find the decoder layers of a {model_type!r} model; causal tracing supports {supported} "
            "(add a row to debug.causal.architectures.ARCHITECTURES for another layout)"
        )
    try:
        layers = get_path(model, spec.layers)
        get_path(model, spec.final_norm)
        attn_out = get_path(layers[0], spec.attn_out)
        get_path(layers[0], spec.mlp)
    except (AttributeError, IndexError, TypeError) as exc:
        raise UnsupportedArchitectureError(
            f"a {model_type!r} model without the expected module {exc}; pass the causal-LM model "
            f"(e.g. AutoModelForCausalLM), not its base model; supported: {supported}"
        ) from exc
    num_heads = int(config.num_attention_heads)
    width = _in_features(attn_out)
    if width % num_heads:
        raise UnsupportedArchitectureError(
            f"attention output width {width} is not a multiple of {num_heads} heads in a {model_type!r} model"
        )
    hidden = getattr(config, "hidden_size", None) or config.n_embd
    return Architecture(
        model_type=model_type,
        spec=spec,
        num_layers=len(layers),
        num_heads=num_heads,
        head_dim=width // num_heads,
        hidden_size=int(hidden),
    )
