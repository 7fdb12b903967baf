"""Resumable checkpoints of `debug.train` runs, and the choice of device.

A run folder holds `config.json` (the recipe), `LATEST` (the name of the newest checkpoint folder) and one
`step-NNNNNNN/` folder: `model.safetensors` (the weights) and `trainer.pt` (optimizer moments, scheduler,
data-stream and rng states, step, eval history). Only the newest folder is kept; `LATEST` moves to it
atomically, so a run killed while saving still resumes from the previous one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any


def resolve_device(name: str) -> str:
    """`auto` -> `cuda` when a GPU is visible, else `cpu`; `cpu`/`cuda` are checked and returned."""
    import torch

    if name not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda; got {name!r}")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda but torch sees no GPU; use --device cpu (or auto)")
    return name


def save_resume_state(run_dir: Path, model: Any, state: dict[str, Any]) -> Path:
    """Write `run_dir/step-NNNNNNN/` (weights + trainer state), point `LATEST` at it, drop the older one."""
    import torch
    from safetensors.torch import save_model

    folder = run_dir / f"step-{state['step']:07d}"
    folder.mkdir(parents=True, exist_ok=True)
    save_model(model, str(folder / "model.safetensors"))  # handles the tied embedding / lm_head weights
    # Optimizer moments, scheduler and rng states go through torch.save: these resume files are never shipped
    # or loaded as a model (shipped weights stay safetensors-only, read weights-only by debug.models).
    torch.save(state, folder / "trainer.pt")
    previous = (run_dir / "LATEST").read_text().strip() if (run_dir / "LATEST").is_file() else None
    tmp = run_dir / "LATEST.tmp"
    tmp.write_text(folder.name)
    os.replace(tmp, run_dir / "LATEST")  # atomic: a run killed mid-save still resumes from the older folder
    if previous and previous != folder.name:
        shutil.rmtree(run_dir / previous, ignore_errors=True)
    return folder


def load_resume_state(run_dir: Path, model: Any) -> dict[str, Any]:
    """Load the latest checkpoint's weights into `model` and return its trainer state."""
    import torch
    from safetensors.torch import load_model

    latest = run_dir / "LATEST"
    if not latest.is_file():
        raise FileNotFoundError(
            f"{latest} not found: the run saved no checkpoint yet; start it without --resume"
        )
    folder = run_dir / latest.read_text().strip()
    load_model(model, str(folder / "model.safetensors"), device=str(next(model.parameters()).device))
    # weights_only=False: the file holds Python rng tuples; it is this run's own file, never a download.
    return torch.load(folder / "trainer.pt", map_location="cpu", weights_only=False)
