"""Tests for debug.models: loading from folders and the embedded registry, the process cache, bad ids."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from debug import DEFAULT_MODEL, models


@pytest.fixture(autouse=True)
def _empty_cache():
    models.unload_all()
    yield
    models.unload_all()


def test_load_local_folder(tiny_qwen3_dir: Path) -> None:
    loaded = models.load(str(tiny_qwen3_dir), device="cpu")
    assert loaded.model_id == str(tiny_qwen3_dir)
    assert not loaded.model.training
    assert loaded.tokenizer.padding_side == "left"
    assert loaded.context_length == 512
    assert len(loaded.fingerprint) == 16
    assert str(loaded.device) == "cpu"
    assert models.load(tiny_qwen3_dir) is loaded  # a Path works too, and "auto" resolves to the same device


def test_cache_returns_same_object_and_unload_forgets(tiny_qwen3_dir: Path, tiny_gpt2_dir: Path) -> None:
    first = models.load(str(tiny_qwen3_dir))
    assert models.load(str(tiny_qwen3_dir)) is first
    models.preload([str(tiny_gpt2_dir)])
    assert models.list_loaded() == [str(tiny_qwen3_dir), str(tiny_gpt2_dir)]
    assert models.unload(str(tiny_qwen3_dir)) is True
    assert models.unload(str(tiny_qwen3_dir)) is False
    assert models.list_loaded() == [str(tiny_gpt2_dir)]
    again = models.load(str(tiny_qwen3_dir))
    assert again is not first
    assert again.fingerprint == first.fingerprint  # stable across loads
    assert models.unload_all() == 2
    assert models.list_loaded() == []


def test_fingerprint_tracks_weights(tiny_qwen3_dir: Path, tiny_gpt2_dir: Path, tmp_path: Path) -> None:
    import torch

    assert models.folder_fingerprint(tiny_qwen3_dir) != models.folder_fingerprint(tiny_gpt2_dir)
    copy = tmp_path / "copy"
    shutil.copytree(tiny_qwen3_dir, copy)
    assert models.folder_fingerprint(copy) == models.folder_fingerprint(tiny_qwen3_dir)
    loaded = models.load(str(copy))
    with torch.no_grad():
        loaded.model.get_input_embeddings().weight[0, 0] += 1.0
    loaded.model.save_pretrained(copy)
    assert models.folder_fingerprint(copy) != models.folder_fingerprint(tiny_qwen3_dir)


def test_state_fingerprint_is_deterministic(tiny_gpt2_dir: Path) -> None:
    loaded = models.load(str(tiny_gpt2_dir))
    assert models.state_fingerprint(loaded.model) == models.state_fingerprint(loaded.model)


def test_dtype_by_name(tiny_qwen3_dir: Path) -> None:
    import torch

    loaded = models.load(str(tiny_qwen3_dir), dtype="bfloat16")
    assert loaded.model.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        models.load(str(tiny_qwen3_dir), dtype="float7")


def test_offline_hub_id_fails_in_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(models.ModelNotAvailableError) as info:
        models.load("some-org/no-such-model-xyz")
    message = str(info.value)
    assert "\n" not in message
    assert "not available offline" in message
    assert "embedded" in message


def test_unknown_embedded_name_lists_the_registry() -> None:
    with pytest.raises(models.ModelNotAvailableError, match="unknown embedded model 'embedded:nope'"):
        models.load("embedded:nope")


def test_folder_without_config(tmp_path: Path) -> None:
    with pytest.raises(models.ModelNotAvailableError, match="no config.json"):
        models.load(str(tmp_path))


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is not None, reason="bitsandbytes is installed")
def test_8bit_without_bitsandbytes_says_how_to_fix(tiny_qwen3_dir: Path) -> None:
    with pytest.raises(ImportError, match="pip install bitsandbytes"):
        models.load(str(tiny_qwen3_dir), load_in_8bit=True)


def test_device_map_path_leaves_placement_to_accelerate(tiny_qwen3_dir: Path) -> None:
    loaded = models.load(str(tiny_qwen3_dir), device_map="cpu")
    assert str(loaded.device) == "cpu"


@pytest.mark.skipif(DEFAULT_MODEL not in models.EMBEDDED, reason="embedded model not trained yet")
def test_embedded_default_model_ships_within_budget() -> None:
    from transformers import Qwen3ForCausalLM

    folder = models.EMBEDDED[DEFAULT_MODEL]
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "MODEL_CARD.md",
    ):
        assert (folder / name).is_file(), name
    total = sum(f.stat().st_size for f in models.EMBEDDED_DIR.rglob("*.safetensors"))
    assert total <= 32_000_000  # every embedded model together: at most 32 MB of weights
    assert len(models.EMBEDDED) >= 2  # an early checkpoint and the final one
    loaded = models.load(DEFAULT_MODEL)
    assert isinstance(loaded.model, Qwen3ForCausalLM)
    assert loaded.fingerprint == models.folder_fingerprint(folder)
