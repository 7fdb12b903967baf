"""Grow a trained Qwen3 decoder deeper or wider without changing what it computes.

`grow_decoder` returns a larger `Qwen3ForCausalLM` (more layers, a wider residual stream, more heads of the
same size) whose logits equal the source model's on every input, so training can go on from a model that has
already left the plateau with more capacity than it was trained at. The new parameters start from PyTorch's
layer defaults (the recipe's `init="torch"`), except every weight that writes into the residual stream from
something new, which starts at zero:

* new layers are appended on top, with zero `o_proj` and `down_proj`: each is the identity until trained;
* new residual dimensions get zero embeddings and nothing writes to them (zero rows in every `o_proj` and
  `down_proj`), and the old units read them through zero columns, so they stay zero until trained;
* new heads and MLP units read the old dimensions from the start but write through zero columns of `o_proj`
  and `down_proj`;
* every RMSNorm over the residual stream is scaled by `sqrt(old / new)`: its input has the same entries plus
  zeros, so its root mean square shrinks by exactly that factor.

Gradients reach every zero weight from the first step (each multiplies an input that is not zero), so the
grown model trains like any other. Head size is kept: `head_dim` and the per-head QK-norm carry over.

`start_model` is where a run's weights come from: `build_model`'s fresh decoder, or the trained model
`TrainConfig.start_from` grown to the config's shape.
"""

from __future__ import annotations

import math
from typing import Any

from debug.models import ModelNotAvailableError, resolve_source
from debug.train.config import TrainConfig
from debug.train.model import build_decoder, build_model


def grow_decoder(source: Any, *, layers: int, hidden: int, heads: int, tokenizer: Any) -> Any:
    """A copy of `source` grown to `layers`, `hidden` and `heads` (each at least the source's).

    Args:
        source: A `Qwen3ForCausalLM` with as many key-value heads as query heads and an untied output head
            (the shape `debug.train.model.build_decoder(init="torch")` builds).
        layers: Decoder layers of the grown model.
        hidden: Residual width of the grown model (the MLP is 4x this).
        heads: Attention heads of the grown model; `hidden` must be `heads * source head_dim`.
        tokenizer: The tokenizer the model was built over (`build_decoder` takes its ids from it).

    Returns:
        A new model, in training mode, whose logits equal `source`'s (up to float rounding).

    Raises:
        ValueError: A smaller target than the source, a width that is not `heads` times the head size, or a
            source of another shape than `build_decoder` makes.
    """
    import torch  # at use: torch costs seconds to import

    cfg = source.config
    old_hidden, old_layers, head_dim = cfg.hidden_size, cfg.num_hidden_layers, cfg.head_dim
    if layers < old_layers or hidden < old_hidden or heads < cfg.num_attention_heads:
        raise ValueError(
            f"grow_decoder only grows: the source has {old_layers} layers, hidden {old_hidden} and "
            f"{cfg.num_attention_heads} heads; ask for at least that"
        )
    if heads * head_dim != hidden:
        raise ValueError(f"hidden must be heads x head_dim = {heads} x {head_dim}; got {hidden}")
    if cfg.num_key_value_heads != cfg.num_attention_heads or cfg.tie_word_embeddings:
        raise ValueError("grow_decoder takes build_decoder(init='torch') models: kv_heads = heads, untied")
    if cfg.intermediate_size != 4 * old_hidden:
        raise ValueError(f"grow_decoder takes an MLP of 4 x hidden; the source's is {cfg.intermediate_size}")
    grown = build_decoder(
        tokenizer,
        layers=layers,
        hidden=hidden,
        heads=heads,
        head_dim=head_dim,
        max_positions=cfg.max_position_embeddings,
        init="torch",
    )
    scale = math.sqrt(old_hidden / hidden)
    old = source.state_dict()
    with torch.no_grad():
        for key, new in grown.state_dict().items():
            if key not in old:  # a whole new layer: its writes start at zero
                if key.endswith(("o_proj.weight", "down_proj.weight")):
                    new.zero_()
                elif key.endswith("layernorm.weight"):
                    new.fill_(1.0)
                continue
            weight = old[key]
            if key.endswith(("q_norm.weight", "k_norm.weight")):
                new.copy_(weight)  # per head, over head_dim: untouched by the width
            elif key.endswith("norm.weight"):
                new.fill_(scale)
                new[:old_hidden] = weight * scale
            elif key == "model.embed_tokens.weight":
                new.zero_()
                new[:, :old_hidden] = weight
            elif key == "lm_head.weight":
                new[:, :old_hidden] = weight
                new[:, old_hidden:] = 0
            elif key.endswith(("o_proj.weight", "down_proj.weight")):
                new.zero_()
                new[: weight.shape[0], : weight.shape[1]] = weight
            else:  # q, k, v, gate and up projections: old units ignore the new dimensions at first
                new[: weight.shape[0], : weight.shape[1]] = weight
                new[: weight.shape[0], weight.shape[1] :] = 0
    return grown


def start_model(config: TrainConfig, tokenizer: Any) -> Any:
    """The decoder `config` starts training from (seeded by the caller): fresh, or `start_from` grown."""
    if config.start_from is None:
        return build_model(config, tokenizer)
    return grow_from(config.start_from, config, tokenizer)


def grow_from(start_from: str, config: TrainConfig, tokenizer: Any) -> Any:
    """The trained model `start_from` (`embedded:<name>` or a saved folder), grown to `config`'s shape.

    Raises:
        ValueError: An unknown model, a hub id (only local models are grown), a config asking for key-value
            heads or an MLP width that growing does not make, or a smaller shape than the source's.
    """
    from transformers import AutoModelForCausalLM  # at use: transformers costs seconds to import

    try:
        source, local = resolve_source(start_from)
    except ModelNotAvailableError as err:
        raise ValueError(f"start_from: {err}") from None
    if local is None:
        raise ValueError(f"start_from takes embedded:<name> or a saved model folder; got {start_from!r}")
    if config.kv_heads != config.heads or config.intermediate not in (None, 4 * config.hidden):
        raise ValueError("start_from grows to kv_heads = heads and an MLP of 4 x hidden; drop those settings")
    model = AutoModelForCausalLM.from_pretrained(source, use_safetensors=True)
    return grow_decoder(
        model, layers=config.layers, hidden=config.hidden, heads=config.heads, tokenizer=tokenizer
    )
