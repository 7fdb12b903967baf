"""Resumable checkpoints of `debug.train` runs, stored without pickle.

A run folder holds `config.json` (the recipe), `output.json` (where the run saves its models), `LATEST` (the
name of the newest checkpoint folder) and one `step-NNNNNNN/` folder:

- `model.safetensors`: the weights;
- `trainer.safetensors`: every tensor of the trainer state (optimizer moments and step counts, torch and CUDA
  rng states);
- `trainer.json`: everything else (step, wall time, scheduler, data-stream rng state, eval history), with a
  marker where each tensor was and a tag on tuples and on dicts with non-string keys, so the state comes back
  exactly as it was saved.

Both formats are read without unpickling, so a planted file can at worst fail to parse; nothing in a run
folder runs code. Only the newest step folder is kept; `LATEST` moves to it atomically, so a run killed while
saving still resumes from the previous one. Run folders of the older format (`trainer.pt`, a pickle) are
refused with the way to continue.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from debug._util.files import atomic_write_json, atomic_write_text

#: The files of one step folder.
WEIGHTS_FILE, TENSORS_FILE, STATE_FILE = "model.safetensors", "trainer.safetensors", "trainer.json"
#: The pickled trainer state of older run folders: never read.
LEGACY_FILE = "trainer.pt"
#: Where a run saves its models, recorded when it starts (a resume saves there too).
OUTPUT_FILE = "output.json"

_TENSOR, _TUPLE, _PAIRS = "__tensor__", "__tuple__", "__pairs__"


def save_resume_state(run_dir: Path, model: Any, state: dict[str, Any]) -> Path:
    """Write `run_dir/step-NNNNNNN/` (weights + trainer state), point `LATEST` at it, drop the older one.

    Args:
        run_dir: The run folder.
        model: The model whose weights are saved.
        state: The trainer state: `step` (int) and any nesting of dicts, lists, tuples, strings, numbers,
            None and tensors.

    Returns:
        The step folder written.

    Raises:
        TypeError: A value in `state` of another type (it could not come back without pickle).
    """
    from safetensors.torch import save_file, save_model  # at use: safetensors loads torch (seconds)

    folder = run_dir / f"step-{state['step']:07d}"
    folder.mkdir(parents=True, exist_ok=True)
    save_model(model, str(folder / WEIGHTS_FILE))  # handles the tied embedding / lm_head weights
    tensors: dict[str, Any] = {}
    document = _encode(state, tensors)
    # Each tensor gets its own contiguous CPU copy: safetensors refuses shared or strided storage.
    save_file(
        {k: t.detach().cpu().contiguous().clone() for k, t in tensors.items()}, str(folder / TENSORS_FILE)
    )
    atomic_write_json(folder / STATE_FILE, document, indent=None)
    previous = (run_dir / "LATEST").read_text().strip() if (run_dir / "LATEST").is_file() else None
    atomic_write_text(
        run_dir / "LATEST", folder.name
    )  # a run killed mid-save still resumes from the older one
    if previous and previous != folder.name and "/" not in previous and previous.startswith("step-"):
        shutil.rmtree(run_dir / previous, ignore_errors=True)
    return folder


def load_resume_state(run_dir: Path, model: Any) -> dict[str, Any]:
    """Load the latest checkpoint's weights into `model` and return its trainer state (no unpickling).

    Raises:
        FileNotFoundError: The run saved no checkpoint yet, or its step folder is incomplete.
        ValueError: The run folder holds the older pickled format (`trainer.pt`); the message says how to go
            on from it.
    """
    from safetensors.torch import load_file, load_model  # at use: safetensors loads torch (seconds)

    folder = check_resumable(run_dir)
    load_model(model, str(folder / WEIGHTS_FILE), device=str(next(model.parameters()).device))
    tensors = load_file(str(folder / TENSORS_FILE)) if (folder / TENSORS_FILE).is_file() else {}
    return _decode(json.loads((folder / STATE_FILE).read_text()), tensors)


def check_resumable(run_dir: Path) -> Path:
    """The latest step folder of `run_dir`, once it is known to hold a checkpoint this version reads.

    Reads only `LATEST` and file names, so a command line can refuse a run folder before any work.

    Raises:
        FileNotFoundError: The run saved no checkpoint yet, or its step folder is incomplete.
        ValueError: The folder holds the older pickled format (`trainer.pt`); the message says how to go on.
    """
    folder = latest_folder(run_dir)
    if not (folder / STATE_FILE).is_file():
        if (folder / LEGACY_FILE).is_file():
            raise ValueError(
                f"{folder} holds {LEGACY_FILE}, a pickled resume state this version never loads; start a new "
                "run from the model that run saved with --start-from <model folder>, or train again"
            )
        raise FileNotFoundError(f"{folder / STATE_FILE} not found: the checkpoint is incomplete")
    return folder


def resumed_step(run_dir: Path) -> int:
    """The step the latest checkpoint of `run_dir` was saved at (from `LATEST`'s folder name)."""
    return int(latest_folder(run_dir).name.removeprefix("step-"))


def latest_folder(run_dir: Path) -> Path:
    """The step folder that `run_dir/LATEST` names.

    Raises:
        FileNotFoundError: There is no `LATEST` (the run saved no checkpoint yet).
        ValueError: `LATEST` names something other than a step folder inside `run_dir`.
    """
    latest = run_dir / "LATEST"
    if not latest.is_file():
        raise FileNotFoundError(
            f"{latest} not found: the run saved no checkpoint yet; start it without --resume"
        )
    name = latest.read_text().strip()
    if not name.startswith("step-") or not name.removeprefix("step-").isdigit():
        raise ValueError(f"{latest} names {name!r}, not a step-NNNNNNN folder of this run")
    return run_dir / name


def save_output_record(run_dir: Path, out_dir: Path | None) -> Path:
    """Record in `run_dir` where the run saves its models (None: nowhere), for a later `--resume`."""
    where = None if out_dir is None else str(Path(out_dir).resolve())
    return atomic_write_json(run_dir / OUTPUT_FILE, {"out_dir": where})


def load_output_record(run_dir: Path) -> Path | None:
    """Where the run in `run_dir` saves its models (None: no record, or a run that saves none)."""
    path = run_dir / OUTPUT_FILE
    if not path.is_file():
        return None
    where = json.loads(path.read_text()).get("out_dir")
    return Path(where) if where else None


def _encode(value: Any, tensors: dict[str, Any]) -> Any:
    # Plain JSON, with tensors moved to `tensors` and tuples / non-string-keyed dicts tagged.
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list):
        return [_encode(v, tensors) for v in value]
    if isinstance(value, tuple):
        return {_TUPLE: [_encode(v, tensors) for v in value]}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and not {_TENSOR, _TUPLE, _PAIRS} & set(value):
            return {k: _encode(v, tensors) for k, v in value.items()}
        return {_PAIRS: [[_encode(k, tensors), _encode(v, tensors)] for k, v in value.items()]}
    if hasattr(value, "detach") and hasattr(value, "dtype"):  # a torch tensor
        key = f"t{len(tensors)}"
        tensors[key] = value
        return {_TENSOR: key}
    raise TypeError(f"trainer state cannot hold a {type(value).__name__} (tensors and plain data only)")


def _decode(value: Any, tensors: dict[str, Any]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if _TENSOR in value:
        return tensors[value[_TENSOR]]
    if _TUPLE in value:
        return tuple(_decode(v, tensors) for v in value[_TUPLE])
    if _PAIRS in value:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in value[_PAIRS]}
    return {k: _decode(v, tensors) for k, v in value.items()}
