"""The decoder a run trains: a Qwen3-style `Qwen3ForCausalLM` over the char tokenizer.

`build_decoder` is the one place such a decoder is configured (the embedded models, the tests' tiny models,
the grown models of `debug.train.grow` and the benches' random models all come from here); `build_model` is
the fresh decoder of a `TrainConfig`. This module imports neither the training loop nor `grow` (both import
it).
"""

from __future__ import annotations

from typing import Any

from debug.train.config import INITS, TrainConfig


def build_decoder(
    tokenizer: Any,
    *,
    layers: int,
    hidden: int,
    heads: int,
    kv_heads: int | None = None,
    intermediate: int | None = None,
    head_dim: int | None = None,
    max_positions: int = 512,
    init: str = "transformers",
) -> Any:
    """A freshly initialised Qwen3ForCausalLM over `tokenizer` (seeded by the caller).

    Defaults: `kv_heads = heads`, `intermediate = 4 * hidden`, `head_dim = hidden // heads`.

    `init` picks the starting weights. `"transformers"`: the library's own (normal, std 0.02, for every
    matrix; input and output embeddings tied), as a hub checkpoint of this shape would start. `"torch"`:
    every `nn.Linear` and `nn.Embedding` reset to PyTorch's layer defaults (uniform within 1/sqrt(fan_in);
    embeddings N(0, 1)) and the output head untied, since N(0, 1) embeddings as output weights give
    logits in the tens. At this size the choice decides whether name lookup is learned at all (measured:
    2-pair recall, 4 layers d64, batch 64 — learned by step ~3,000 from `"torch"`, at chance through 6,000
    from `"transformers"`; see the README).

    Raises:
        ValueError: An `init` not in `INITS`.
    """
    # torch and transformers load at use: `debug train --help` and the config checks stay fast.
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}; got {init!r}")
    model_config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate or 4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads or heads,
        head_dim=head_dim or hidden // heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=init == "transformers",
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = Qwen3ForCausalLM(model_config)
    if init == "torch":
        for module in model.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
                module.reset_parameters()
    return model


def build_model(config: TrainConfig, tokenizer: Any) -> Any:
    """Fresh weights of `config`'s shape (seeded by the caller).

    A config with `start_from` starts from a trained model instead: `debug.train.grow.start_model` builds
    either (this module stays below `grow`, which builds its grown models here).

    Raises:
        ValueError: `config.start_from` is set.
    """
    if config.start_from is not None:
        raise ValueError(
            "build_model makes fresh weights; start a config with start_from by debug.train.grow.start_model"
        )
    return build_decoder(
        tokenizer,
        layers=config.layers,
        hidden=config.hidden,
        heads=config.heads,
        kv_heads=config.kv_heads,
        intermediate=config.intermediate,
        max_positions=config.max_positions,
        init=config.init,
    )
