"""Model loading: hub ids, local folders and `embedded:<name>` models, behind one process-wide cache.

`load` is the one door every part of `debug` uses to get a model. It accepts

* `embedded:<name>`: a model this project trains and ships under `debug/embedded/<name>/`
  (listed in `EMBEDDED`; `debug.DEFAULT_MODEL` names one of them);
* a local folder written by `save_pretrained` (config, safetensors weights, tokenizer);
* a Hugging Face hub id, found in the local hub cache first and downloaded only when the hub answers.

Loaded models stay in a process-wide cache keyed by (id, device, dtype, loading options), so a session that
scores, traces and plots the same model loads it once. `preload`, `list_loaded`, `unload` and `unload_all`
manage that cache. Weights load through safetensors only (`use_safetensors=True`).
"""

from __future__ import annotations

import gc
import hashlib
import importlib.util
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

EMBEDDED_PREFIX = "embedded:"
EMBEDDED_DIR = Path(__file__).parent / "embedded"


class ModelNotAvailableError(OSError):
    """A model id that names nothing loadable here (unknown embedded name; hub id not available offline)."""


def _discover_embedded() -> dict[str, Path]:
    found: dict[str, Path] = {}
    if EMBEDDED_DIR.is_dir():
        for sub in sorted(EMBEDDED_DIR.iterdir()):
            if (sub / "config.json").is_file() and (sub / "model.safetensors").is_file():
                found[f"{EMBEDDED_PREFIX}{sub.name}"] = sub
    return found


#: The models shipped inside the package: id (`embedded:<name>`) -> folder.
EMBEDDED: dict[str, Path] = _discover_embedded()


@dataclass
class LoadedModel:
    """A loaded causal LM with its tokenizer.

    Attributes:
        model: A transformers causal LM (`PreTrainedModel`), in eval mode.
        tokenizer: Its tokenizer, left padding.
        model_id: The id it was loaded by (`embedded:<name>`, a hub id or a local path).
        fingerprint: Stable hash of config and weights (or the hub revision); keys caches and pairs runs.
    """

    model: Any
    tokenizer: Any
    model_id: str
    fingerprint: str

    @property
    def device(self) -> Any:
        """The device of the model's input embeddings (where input ids must go)."""
        return self.model.get_input_embeddings().weight.device

    @property
    def context_length(self) -> int | None:
        """The longest sequence the model accepts (from its config), or None when the config does not say."""
        return context_length(self.model.config)


def context_length(config: Any) -> int | None:
    """The maximum sequence length a transformers config declares, or None."""
    for attr in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


_CACHE: dict[tuple[str, str, str, str], LoadedModel] = {}


def resolve_device(device: str | None = "auto") -> str:
    """Map "auto" to the best available device ("cuda", then "mps", then "cpu")."""
    import torch

    if device not in (None, "auto"):
        return str(device)
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _resolve_dtype(dtype: Any, device: str) -> Any:
    import torch

    if dtype is None:
        # float32 on CPU keeps small models exact; accelerators take the checkpoint's own dtype.
        return torch.float32 if device == "cpu" else "auto"
    if isinstance(dtype, str) and dtype != "auto":
        if not hasattr(torch, dtype):
            raise ValueError(f"unknown dtype {dtype!r}; use e.g. 'float32', 'bfloat16' or 'float16'")
        return getattr(torch, dtype)
    return dtype


def _hash_files(paths: list[Path], extra: bytes = b"") -> str:
    digest = hashlib.sha256(extra)
    for path in sorted(paths):
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def folder_fingerprint(folder: str | Path) -> str:
    """Stable hash of a saved model folder: its config, safetensors weights and tokenizer files."""
    folder = Path(folder)
    names = ["config.json", "tokenizer.json", "tokenizer_config.json"]
    files = [folder / n for n in names if (folder / n).is_file()]
    files += sorted(folder.glob("*.safetensors"))
    return _hash_files(files)


def state_fingerprint(model: Any) -> str:
    """Stable hash of a model's config and state dict (for models that are not backed by a folder)."""
    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _hub_reachable(timeout: float = 2.0) -> bool:
    # transformers retries an unreachable hub for ~30 s; one quick socket probe answers the question first.
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = urlparse(endpoint).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _offline_error(model_id: str) -> ModelNotAvailableError:
    names = ", ".join(EMBEDDED) or "none installed"
    return ModelNotAvailableError(
        f"model {model_id!r} is not available offline (not a local folder, not in the hub cache, and the hub "
        f"cannot be reached); use a local save_pretrained folder or an embedded model: {names}"
    )


def _quantization_kwargs(kw: dict[str, Any]) -> dict[str, Any]:
    eight, four = kw.pop("load_in_8bit", False), kw.pop("load_in_4bit", False)
    if not (eight or four):
        return kw
    if importlib.util.find_spec("bitsandbytes") is None:
        bits = "8" if eight else "4"
        raise ImportError(f"{bits}-bit loading needs bitsandbytes: pip install bitsandbytes (and a CUDA GPU)")
    from transformers import BitsAndBytesConfig

    kw["quantization_config"] = BitsAndBytesConfig(load_in_8bit=bool(eight), load_in_4bit=bool(four))
    kw.setdefault("device_map", "auto")
    return kw


def resolve_source(model_id: str) -> tuple[str, Path | None]:
    """Return (what to pass to from_pretrained, local folder or None for a hub id)."""
    if model_id.startswith(EMBEDDED_PREFIX):
        folder = EMBEDDED.get(model_id) or _discover_embedded().get(model_id)
        if folder is None:
            names = ", ".join(EMBEDDED) or "none installed"
            raise ModelNotAvailableError(f"unknown embedded model {model_id!r}; embedded models: {names}")
        return str(folder), folder
    path = Path(model_id).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotAvailableError(
                f"folder {model_id!r} has no config.json; save the model there first"
            )
        return str(path), path
    return model_id, None


def _from_pretrained(source: str, kw: dict[str, Any]) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok_kw = {k: kw[k] for k in ("revision", "trust_remote_code", "local_files_only") if k in kw}
    model = AutoModelForCausalLM.from_pretrained(source, use_safetensors=True, **kw)
    tokenizer = AutoTokenizer.from_pretrained(source, **tok_kw)
    return model, tokenizer


def _load_uncached(model_id: str, device: str, dtype: Any, kw: dict[str, Any]) -> LoadedModel:
    source, folder = resolve_source(model_id)
    kw = _quantization_kwargs(dict(kw))
    kw["dtype"] = dtype
    placed = "device_map" in kw  # accelerate places the weights itself
    if folder is not None:
        model, tokenizer = _from_pretrained(source, kw)
        fingerprint = folder_fingerprint(folder)
    else:
        try:
            model, tokenizer = _from_pretrained(source, {**kw, "local_files_only": True})
        except OSError as exc:
            if not _hub_reachable():
                raise _offline_error(model_id) from exc
            try:
                model, tokenizer = _from_pretrained(source, kw)
            except OSError as exc2:
                raise ModelNotAvailableError(
                    f"model {model_id!r} could not be loaded from the hub: {exc2}"
                ) from exc2
        revision = getattr(model.config, "_commit_hash", None)
        fingerprint = (
            hashlib.sha256(f"{model_id}@{revision}".encode()).hexdigest()[:16]
            if revision
            else state_fingerprint(model)
        )
    if not placed:
        model = model.to(device)
    model.eval()
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        # Hub decoders often ship without a pad token; padding is masked, so any id works, eos is customary.
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model=model, tokenizer=tokenizer, model_id=model_id, fingerprint=fingerprint)


def _cache_key(model_id: str, device: str, dtype: Any, kw: dict[str, Any]) -> tuple[str, str, str, str]:
    return (model_id, device, str(dtype), json.dumps(kw, sort_keys=True, default=repr))


def load(
    model_id: str | os.PathLike[str], *, device: str = "auto", dtype: Any = None, **from_pretrained_kw: Any
) -> LoadedModel:
    """Load (or fetch from the process cache) a model by id.

    Args:
        model_id: `embedded:<name>`, a local `save_pretrained` folder, or a hub id.
        device: "auto" (cuda, then mps, then cpu) or any torch device string. Ignored when
            `device_map` is given (accelerate places the weights, e.g. `device_map="auto"` for large models).
        dtype: A torch dtype or its name; None means float32 on CPU and the checkpoint's dtype elsewhere.
        **from_pretrained_kw: Passed to `AutoModelForCausalLM.from_pretrained` (e.g. `revision`,
            `device_map="auto"`); `load_in_8bit=True` / `load_in_4bit=True` need bitsandbytes.

    Returns:
        The `LoadedModel`; the same object on every later call with the same arguments.

    Raises:
        ModelNotAvailableError: An unknown embedded name, a folder without config.json, or a hub id that is
            not available offline. The message is one line and lists `EMBEDDED`.
        ImportError: 8/4-bit loading without bitsandbytes installed.
    """
    if isinstance(model_id, os.PathLike):
        model_id = os.fspath(model_id)
    if not isinstance(model_id, str) or not model_id:
        raise ModelNotAvailableError(f"model id must be a non-empty string, got {model_id!r}")
    resolved_device = resolve_device(device)
    resolved_dtype = _resolve_dtype(dtype, resolved_device)
    key = _cache_key(model_id, resolved_device, resolved_dtype, from_pretrained_kw)
    if key not in _CACHE:
        _CACHE[key] = _load_uncached(model_id, resolved_device, resolved_dtype, from_pretrained_kw)
    return _CACHE[key]


def preload(model_ids: list[str] | str, **load_kw: Any) -> list[LoadedModel]:
    """Load several models into the process cache now (so later steps do not pay for loading)."""
    ids = [model_ids] if isinstance(model_ids, str) else list(model_ids)
    return [load(model_id, **load_kw) for model_id in ids]


def list_loaded() -> list[str]:
    """The ids of the models in the process cache, in load order (one entry per id)."""
    return list(dict.fromkeys(key[0] for key in _CACHE))


def _release() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


def unload(model_id: str) -> bool:
    """Drop every cached copy of `model_id` (all devices and dtypes); True when something was dropped."""
    keys = [key for key in _CACHE if key[0] == model_id]
    for key in keys:
        del _CACHE[key]
    if keys:
        _release()
    return bool(keys)


def unload_all() -> int:
    """Empty the process cache; returns how many models were dropped."""
    count = len(_CACHE)
    _CACHE.clear()
    _release()
    return count
