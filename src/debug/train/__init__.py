"""Train the embedded models: small Qwen3-style decoders on this project's variable-binding programs.

The package is layered so that nothing below imports what is above it:

- `config`: `TrainConfig`, `DataSource`, `Stage`, `PRESETS` and the checks on them (plain data);
- `model`: `build_decoder`, the one place a decoder is configured; `grow`: a trained decoder grown deeper or
  wider without changing what it computes, and `start_model`, fresh or grown;
- `data`: the seeded training stream; `evaluate`: the held-out sets (binding by hop; every family by
  length) and their measurement;
- `checkpoint`: resumable run folders (safetensors + JSON, never pickle); `card`: the saved model folder
  and its model card;
- `loop`: `train`, which uses all of the above; `report`: the training-dynamics report; `cli`: `debug train`
  and `debug train-report`.

Typical use::

    from debug.train import PRESETS, train

    result = train(PRESETS["tiny"], "runs/tiny")  # saves runs/tiny/tiny/
    print(result.final_eval["accuracy"])
"""

from __future__ import annotations

from debug.train.card import HISTORY_FILE, model_card, reproduce_command, resave, save_embedded
from debug.train.checkpoint import load_resume_state, save_resume_state
from debug.train.config import (
    ADDABLE_KEYS,
    DEFAULT_CURRICULUM,
    DEFAULT_MIX,
    DEVICES,
    INITS,
    MULTI_MIX,
    PRESETS,
    RANGES,
    RECALL,
    RUNTIME_KEYS,
    SCHEDULE_KEYS,
    SWITCHES,
    VALUE_FLAGS,
    DataSource,
    Stage,
    TrainConfig,
    check_config,
    config_from_dict,
    load_run_config,
)
from debug.train.data import BatchStream, Curriculum, encode, sample_programs
from debug.train.evaluate import (
    EVAL_BASE_SEED,
    FAMILIES,
    Family,
    eval_programs,
    evaluate,
    evaluate_families,
    family_programs,
    short_eval,
)
from debug.train.grow import grow_decoder, grow_from, start_model
from debug.train.loop import TrainResult, lr_factor, train
from debug.train.model import build_decoder, build_model
from debug.train.report import training_report

__all__ = [
    "ADDABLE_KEYS",
    "DEFAULT_CURRICULUM",
    "DEFAULT_MIX",
    "DEVICES",
    "EVAL_BASE_SEED",
    "FAMILIES",
    "HISTORY_FILE",
    "INITS",
    "MULTI_MIX",
    "PRESETS",
    "RANGES",
    "RECALL",
    "RUNTIME_KEYS",
    "SCHEDULE_KEYS",
    "SWITCHES",
    "VALUE_FLAGS",
    "BatchStream",
    "Curriculum",
    "DataSource",
    "Family",
    "Stage",
    "TrainConfig",
    "TrainResult",
    "build_decoder",
    "build_model",
    "check_config",
    "config_from_dict",
    "encode",
    "eval_programs",
    "evaluate",
    "evaluate_families",
    "family_programs",
    "grow_decoder",
    "grow_from",
    "load_resume_state",
    "load_run_config",
    "lr_factor",
    "model_card",
    "reproduce_command",
    "resave",
    "sample_programs",
    "save_embedded",
    "save_resume_state",
    "short_eval",
    "start_model",
    "train",
    "training_report",
]
