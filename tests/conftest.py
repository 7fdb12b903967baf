"""Shared fixtures: tiny random models saved to local folders (tests exercise the real `from_pretrained`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# No machine here reaches a model hub: tests must never try. Loading code honours HF_HUB_OFFLINE.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Two cores are shared by everything on these machines; one thread per test process keeps runs predictable.
torch.set_num_threads(int(os.environ.get("DEBUG_TEST_THREADS", "1")))


def _save_tiny(model_dir: Path, arch: str) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    from debug.tokenizer import build_char_tokenizer
    from debug.train import build_decoder

    tokenizer = build_char_tokenizer()
    torch.manual_seed(0)
    if arch == "qwen3":
        model = build_decoder(tokenizer, layers=2, hidden=32, heads=4, kv_heads=2, intermediate=64)
    elif arch == "gpt2":
        config = GPT2Config(
            vocab_size=len(tokenizer),
            n_embd=32,
            n_layer=2,
            n_head=4,
            n_positions=512,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        model = GPT2LMHeadModel(config)
    else:
        raise ValueError(f"unknown tiny architecture {arch!r}")
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return model_dir


@pytest.fixture(scope="session")
def tiny_qwen3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Qwen3-style causal LM with the char tokenizer, saved with `save_pretrained`."""
    return _save_tiny(tmp_path_factory.mktemp("tiny-qwen3"), "qwen3")


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer GPT-2-style causal LM with the char tokenizer, saved with `save_pretrained`."""
    return _save_tiny(tmp_path_factory.mktemp("tiny-gpt2"), "gpt2")
