"""The module-path table finds layers, attention output projections, MLPs and final norms per family."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

from debug.causal.architectures import (
    ARCHITECTURES,
    UnsupportedArchitectureError,
    get_path,
    resolve_architecture,
    supported_architectures,
)
from debug.causal.engine import sweep
from debug.models import LoadedModel
from debug.programs import Program
from debug.tokenizer import build_char_tokenizer

# Untrained models get most pairs wrong; the tests that check that warning catch it themselves.
pytestmark = pytest.mark.filterwarnings("ignore::debug.causal.result.UnsolvedPairWarning")

SMALL = {"vocab_size": 101, "max_position_embeddings": 64}
LLAMA_LIKE = dict(SMALL, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4)
CONFIGS = {
    "qwen2": (transformers.Qwen2Config, dict(LLAMA_LIKE, num_key_value_heads=2)),
    "qwen3": (transformers.Qwen3Config, dict(LLAMA_LIKE, num_key_value_heads=2, head_dim=8)),
    "llama": (transformers.LlamaConfig, dict(LLAMA_LIKE, num_key_value_heads=4)),
    "mistral": (transformers.MistralConfig, dict(LLAMA_LIKE, num_key_value_heads=2)),
    "gpt2": (
        transformers.GPT2Config,
        {"vocab_size": 101, "n_positions": 64, "n_embd": 32, "n_layer": 3, "n_head": 4},
    ),
    "gpt_neox": (transformers.GPTNeoXConfig, dict(LLAMA_LIKE, intermediate_size=64)),
}


def _model(model_type: str) -> torch.nn.Module:
    config_cls, kwargs = CONFIGS[model_type]
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config_cls(**kwargs)).eval()


def test_the_table_covers_the_families_the_design_names() -> None:
    assert set(supported_architectures()) == set(CONFIGS) == set(ARCHITECTURES)


@pytest.mark.parametrize("model_type", sorted(CONFIGS))
def test_resolves_layers_heads_and_norm(model_type: str) -> None:
    model = _model(model_type)
    arch = resolve_architecture(model)
    assert (arch.model_type, arch.num_layers, arch.num_heads, arch.head_dim, arch.hidden_size) == (
        model_type,
        3,
        4,
        8,
        32,
    )
    assert isinstance(get_path(model, arch.spec.final_norm), torch.nn.Module)
    assert get_path(model, arch.layer_path(2)) is get_path(model, arch.spec.layers)[2]
    assert "c_proj" in arch.attn_out_path(0) if model_type == "gpt2" else True


@pytest.mark.parametrize("model_type", ["llama", "gpt_neox", "mistral"])
def test_the_engine_runs_on_other_families(model_type: str) -> None:
    tok = build_char_tokenizer()
    loaded = LoadedModel(_model(model_type), tok, model_type, "x")
    original, counterfactual = Program("a=1\nb=a\n#b:", 1), Program("a=4\nb=a\n#b:", 4)
    result = sweep(loaded, original, counterfactual, site="attention_heads")
    assert result.logit_diff.shape == (3, len(original.text), 4)
    # Heads at positions before the changed constant see identical inputs: no effect at all.
    assert np.abs(result.logit_diff[:, :2] - result.original.logit_diff).max() < 1e-5
    assert np.abs(result.logit_diff[:, 2:] - result.original.logit_diff).max() > 1e-6


def test_unknown_architecture_names_the_supported_ones() -> None:
    model = transformers.AutoModelForCausalLM.from_config(
        transformers.OPTConfig(
            vocab_size=101, hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2
        )
    )
    with pytest.raises(UnsupportedArchitectureError, match=r"'opt' model.*supports gpt2, gpt_neox, llama"):
        resolve_architecture(model)


def test_a_base_model_without_lm_head_says_what_to_pass() -> None:
    config_cls, kwargs = CONFIGS["qwen3"]
    base = transformers.AutoModel.from_config(config_cls(**kwargs))
    with pytest.raises(UnsupportedArchitectureError, match="AutoModelForCausalLM"):
        resolve_architecture(base)
