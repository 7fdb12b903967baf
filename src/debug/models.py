"""Model loading: hub ids, local folders, `embedded:<name>` and served models, behind one process-wide cache.

`load` is the one door every part of `debug` uses to get a model. It accepts

* `embedded:<name>`: a model this project trains and ships under `debug/embedded/<name>/`
  (listed in `EMBEDDED`; `debug.DEFAULT_MODEL` names one of them);
* a local folder written by `save_pretrained` (config, safetensors weights, tokenizer);
* a Hugging Face hub id, found in the local hub cache first and downloaded only when the hub answers;
* `openai:<served-name>@<base-url>`: a model behind an OpenAI-compatible server (vLLM, SGLang,
  `transformers serve`), for behavioural evals only; `load` returns a `debug.serving.ServedModel` and
  `require_weights` refuses it for steps that need the weights (patching).

Loaded models stay in a process-wide cache keyed by (id, device, dtype, loading options), so a session that
scores, traces and plots the same model loads it once. `preload`, `list_loaded`, `unload` and `unload_all`
manage that cache. Weights load through safetensors only (`use_safetensors=True`).

Placement: `load(..., device="cuda:1")` puts a model on one device; `device_map="auto"` with `max_memory`
(`parse_max_memory("0=20GiB,1=20GiB")`) spreads a model larger than one GPU. `worker_device` gives each
pytest-xdist worker its own GPU (worker gwK gets `cuda:K mod count`, or the K-th of a `--devices` list), and
`placement` says where a loaded model lives, for reports.
"""

from __future__ import annotations

import gc
import hashlib
import importlib.util
import json
import os
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from debug import serving
from debug.serving import OPENAI_PREFIX, ServedModel, WeightsRequiredError

EMBEDDED_PREFIX = "embedded:"
#: The model every command uses when none is named: a small char-level model this project trains and ships.
DEFAULT_MODEL = "embedded:binder"
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

    @property
    def placement(self) -> str:
        """Where the weights live, for reports: "cpu", "cuda:1", or "cuda:0,cuda:1" for a split model."""
        device_map = getattr(self.model, "hf_device_map", None)
        if isinstance(device_map, dict) and device_map:
            # accelerate writes a bare integer for a CUDA device.
            names = [f"cuda:{d}" if isinstance(d, int) else str(d) for d in device_map.values()]
            return ",".join(dict.fromkeys(names))
        return str(self.device)


def context_length(config: Any) -> int | None:
    """The maximum sequence length a transformers config declares, or None."""
    for attr in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


_CACHE: dict[tuple[str, str, str, str], LoadedModel | ServedModel] = {}


def resolve_device(device: str | None = "auto", *, accelerators: tuple[str, ...] = ("cuda", "mps")) -> str:
    """Map "auto" to the first available of `accelerators` (default "cuda", then "mps"), else "cpu".

    Any other device string is returned as given, except that a CUDA device torch cannot see is refused.
    Training passes `accelerators=("cuda",)`: its recipes are replayed on CUDA or the CPU only.

    Raises:
        ValueError: A "cuda" device when torch sees no GPU (one line naming the fix).
    """
    import torch

    if device not in (None, "auto"):
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} but torch sees no GPU; use 'cpu' (or 'auto')")
        index = re.fullmatch(r"cuda:(\d+)", str(device))
        if index and int(index.group(1)) >= torch.cuda.device_count():
            count = torch.cuda.device_count()
            raise ValueError(
                f"device {device!r} but torch sees {count} GPU(s) (cuda:0..cuda:{count - 1}); "
                "pick one of those (check CUDA_VISIBLE_DEVICES)"
            )
        return str(device)
    if "cuda" in accelerators and torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if "mps" in accelerators and mps is not None and mps.is_available():
        return "mps"
    return "cpu"


_DEVICE = re.compile(r"cpu|mps|cuda(?::\d+)?")
_MEMORY = re.compile(r"\d+(?:\.\d+)?\s*(?:[KMGT]i?B|B)", re.IGNORECASE)


def visible_devices() -> list[str]:
    """The CUDA devices torch can see, as "cuda:N" strings (empty without a GPU)."""
    import torch

    if not torch.cuda.is_available():
        return []
    return [f"cuda:{i}" for i in range(torch.cuda.device_count())]


def parse_devices(text: str | Sequence[str] | None, source: str = "--devices") -> tuple[str, ...] | None:
    """A device list ("cuda:0,cuda:1", or a sequence of names) as a tuple; None for None.

    Raises:
        ValueError: An entry other than cpu, mps, cuda or cuda:N (one line naming `source`).
    """
    if text is None:
        return None
    parts = [p.strip() for p in (text.split(",") if isinstance(text, str) else text)]
    parts = [p for p in parts if p]
    bad = [p for p in parts if not _DEVICE.fullmatch(p)]
    if not parts or bad:
        raise ValueError(
            f"{source} takes comma-separated devices (cpu, mps, cuda or cuda:N), e.g. "
            f"{source} cuda:0,cuda:1; got {text!r}"
        )
    return tuple(parts)


def worker_index(worker: str | None = None) -> int:
    """The number K of pytest-xdist worker "gwK" (`$PYTEST_XDIST_WORKER` when not given); 0 outside xdist."""
    worker = os.environ.get("PYTEST_XDIST_WORKER") if worker is None else worker
    match = re.fullmatch(r"gw(\d+)", worker or "")
    return int(match.group(1)) if match else 0


def worker_device(worker: str | None = None, devices: Sequence[str] | None = None) -> str:
    """The device a process places its models on: one GPU per pytest-xdist worker.

    Worker gwK takes the K-th (mod count) of `devices` when given, else `cuda:K mod count` over the visible
    CUDA devices; without a GPU (and no `devices`) it is "auto" (mps, then cpu). A process outside xdist
    counts as worker 0.

    Args:
        worker: The xdist worker id ("gw3"); None reads `$PYTEST_XDIST_WORKER`.
        devices: An explicit device list (`--devices`), or None.
    """
    pool = list(devices) if devices else visible_devices()
    if not pool:
        return "auto"
    return pool[worker_index(worker) % len(pool)]


def parse_max_memory(
    text: str | dict[Any, str] | None, source: str = "--max-memory"
) -> dict[Any, str] | None:
    """A per-device memory budget for `device_map="auto"`: "0=20GiB,1=20GiB,cpu=64GiB" -> {0: "20GiB", ...}.

    Keys are GPU indices (or cpu, mps, disk), values sizes such as 20GiB, 512MB; None gives None.

    Raises:
        ValueError: A malformed entry (one line naming `source` with an example).
    """
    if text is None:
        return None
    example = f"{source} takes DEVICE=SIZE pairs, e.g. {source} 0=20GiB,1=20GiB (or cpu=64GiB)"
    pairs = list(text.items()) if isinstance(text, dict) else []
    if isinstance(text, str):
        for part in (p.strip() for p in text.split(",") if p.strip()):
            key, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"{example}; got {text!r}")
            pairs.append((key.strip(), value.strip()))
    budget: dict[Any, str] = {}
    for key, value in pairs:
        key_text = str(key).strip()
        if key_text.isdigit():
            key = int(key_text)
        elif key_text not in ("cpu", "mps", "disk"):
            raise ValueError(f"{example}; {key!r} is not a GPU index or cpu/mps/disk")
        if not isinstance(value, str) or not _MEMORY.fullmatch(value.strip()):
            raise ValueError(f"{example}; {value!r} is not a size like 20GiB")
        budget[key] = value.strip().replace(" ", "")
    if not budget:
        raise ValueError(f"{example}; got {text!r}")
    return budget


def placement(loaded: Any) -> str | None:
    """Where a loaded model lives ("cuda:1", "cuda:0,cuda:1", "server http://..."), or None if unknown."""
    try:
        value = getattr(loaded, "placement", None)
    except Exception:  # noqa: BLE001 - a stand-in model without weights simply has no placement
        return None
    return str(value) if value is not None else None


def require_weights(loaded: Any, purpose: str) -> Any:
    """Return `loaded` when its weights are in this process; refuse a served (`openai:`) model.

    Call it first in any step that reads activations or gradients (patching sweeps, attribution, knockout):
    a served model gives text only.

    Args:
        loaded: What `load` returned (or a model id string, which is checked by its prefix).
        purpose: What needs the weights, for the message (e.g. "a patching sweep").

    Raises:
        WeightsRequiredError: One line: `purpose` needs the weights in process; load the model by its hub
            id or folder instead.
    """
    model_id = loaded if isinstance(loaded, str) else getattr(loaded, "model_id", "")
    if isinstance(loaded, ServedModel) or serving.is_served_id(model_id):
        raise WeightsRequiredError(serving.weights_message(str(model_id), purpose))
    return loaded


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
    tokenizer = _left_padded(tokenizer)
    return LoadedModel(model=model, tokenizer=tokenizer, model_id=model_id, fingerprint=fingerprint)


def _left_padded(tokenizer: Any) -> Any:
    """The tokenizer set up as every scorer and sweep expects: left padding, a pad token."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        # Hub decoders often ship without a pad token; padding is masked, so any id works, eos is customary.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tokenizer(model_id: str) -> tuple[str, Any]:
    """A model's tokenizer without its weights (for a model whose forwards run elsewhere).

    Returns:
        (what `from_pretrained` takes for this id: an embedded model's folder, a local folder or the hub
        id; the tokenizer, left padding). A hub id is looked up in the local cache first, as `load` does.

    Raises:
        ModelNotAvailableError: An unknown embedded model, a folder without config.json, or a hub id whose
            tokenizer is neither cached nor reachable.
    """
    from transformers import AutoTokenizer  # deferred: transformers costs seconds to import

    source, folder = resolve_source(model_id)
    if folder is not None:
        return source, _left_padded(AutoTokenizer.from_pretrained(source))
    try:
        return source, _left_padded(AutoTokenizer.from_pretrained(source, local_files_only=True))
    except OSError as exc:
        if not _hub_reachable():
            raise _offline_error(model_id) from exc
        return source, _left_padded(AutoTokenizer.from_pretrained(source))


def _cache_key(model_id: str, device: str, dtype: Any, kw: dict[str, Any]) -> tuple[str, str, str, str]:
    return (model_id, device, str(dtype), json.dumps(kw, sort_keys=True, default=repr))


def _local_tokenizer(candidates: Sequence[str]) -> Any:
    """The first candidate's tokenizer found here (a folder or the hub cache, never downloaded), or None."""
    from transformers import AutoTokenizer  # deferred: transformers is slow to import

    for name in candidates:
        try:
            source, _ = resolve_source(name)
            return AutoTokenizer.from_pretrained(source, local_files_only=True)
        except Exception:  # noqa: BLE001 - a served name need not be a loadable id (vLLM aliases)
            continue
    return None


def _connect(model_id: str) -> ServedModel:
    return serving.connect(model_id, tokenizer_loader=_local_tokenizer)


def load(
    model_id: str | os.PathLike[str], *, device: str = "auto", dtype: Any = None, **from_pretrained_kw: Any
) -> LoadedModel | ServedModel:
    """Load (or fetch from the process cache) a model by id.

    Args:
        model_id: `embedded:<name>`, a local `save_pretrained` folder, a hub id, or
            `openai:<served-name>[@<base-url>]` (a served model; see `debug.serving`).
        device: "auto" (cuda, then mps, then cpu) or any torch device string. Ignored when
            `device_map` is given (accelerate places the weights, e.g. `device_map="auto"` for large models).
        dtype: A torch dtype or its name; None means float32 on CPU and the checkpoint's dtype elsewhere.
        **from_pretrained_kw: Passed to `AutoModelForCausalLM.from_pretrained` (e.g. `revision`,
            `device_map="auto"`, `max_memory`); `load_in_8bit=True` / `load_in_4bit=True` need bitsandbytes.
            Placement arguments (device, dtype and these) mean nothing for a served model and are ignored.

    Returns:
        The `LoadedModel` (a `debug.serving.ServedModel` for `openai:` ids); the same object on every later
        call with the same arguments.

    Raises:
        ModelNotAvailableError: An unknown embedded name, a folder without config.json, or a hub id that is
            not available offline. The message is one line and lists `EMBEDDED`.
        ImportError: 8/4-bit loading without bitsandbytes installed.
        debug.serving.ServerError: A served model whose server cannot be reached, does not list the name,
            or replies malformed (one line).
    """
    if isinstance(model_id, os.PathLike):
        model_id = os.fspath(model_id)
    if not isinstance(model_id, str) or not model_id:
        raise ModelNotAvailableError(f"model id must be a non-empty string, got {model_id!r}")
    if model_id.startswith(OPENAI_PREFIX):
        key = (model_id, "server", "", "")
        if key not in _CACHE:
            _CACHE[key] = _connect(model_id)
        return _CACHE[key]
    resolved_device = resolve_device(device)
    resolved_dtype = _resolve_dtype(dtype, resolved_device)
    key = _cache_key(model_id, resolved_device, resolved_dtype, from_pretrained_kw)
    if key not in _CACHE:
        _CACHE[key] = _load_uncached(model_id, resolved_device, resolved_dtype, from_pretrained_kw)
    return _CACHE[key]


def preload(model_ids: list[str] | str, **load_kw: Any) -> list[LoadedModel | ServedModel]:
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
    dropped = [_CACHE.pop(key) for key in keys]
    if any(isinstance(m, LoadedModel) for m in dropped):  # a served model holds no weights to free
        _release()
    return bool(keys)


def unload_all() -> int:
    """Empty the process cache; returns how many models were dropped."""
    count = len(_CACHE)
    weights = any(isinstance(m, LoadedModel) for m in _CACHE.values())
    _CACHE.clear()
    if weights:
        _release()
    return count
