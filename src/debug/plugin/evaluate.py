"""The standard measurement of an eval case, and the backend that loads and scores models.

`evaluate_case` is the one data path of the plugin: generate the case's programs (seeded, so every worker
and every run sees the same ones), score them with the model through `debug.scoring.score_programs` (answer
cache included), and record accuracy, mean answer log-probability, parse-failure rate and the heuristic
baselines, plus one sample record per program.

`Backend` places each model: on the worker's own device (`debug.models.worker_device`: xdist worker gwK on
`cuda:K mod count`, or the K-th of `--devices`), or with `device_map="auto"` within `--max-memory`. A served
model (`openai:` id) stays on its server; `--max-concurrency` bounds its requests in flight. The case info
records where every model ran (`device`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from debug import models
from debug._util.jsonable import jsonable
from debug.baselines import heuristic_baselines
from debug.cache import AnswerCache
from debug.parsing import parser_for
from debug.plugin.cases import Case, resolve_generator, resolve_prompt
from debug.programs import generate_programs
from debug.scoring import score_programs
from debug.serving import ServedModel

if TYPE_CHECKING:
    from debug.plugin.measurement import Measurement
    from debug.plugin.options import DebugOptions


class ModelLoadError(RuntimeError):
    """A model could not be loaded; every case of that model errors with this one-line message."""


class Backend:
    """Loads models once per process and scores programs; the `debug_backend` fixture returns one.

    Args:
        options: The run's resolved plugin options (cache folder, `--no-cache`, batch size, placement, chat
            template, concurrency).
    """

    def __init__(self, options: DebugOptions):
        self.options = options
        self._failures: dict[str, str] = {}
        self._cache: Any = None

    def load(self, model_id: str) -> Any:
        """The loaded model (`debug.models.LoadedModel`); a failure is remembered so later cases fail fast.

        Raises:
            ModelLoadError: When the model cannot be loaded.
        """
        if model_id in self._failures:
            raise ModelLoadError(self._failures[model_id])
        try:
            return models.load(model_id, **self.placement_kwargs())
        except Exception as exc:  # noqa: BLE001 - any load failure errors this model's cases only
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            self._failures[model_id] = (
                f"model {model_id!r} failed to load: {type(exc).__name__}: {first_line}"
            )
            # `from None`: the message already names the cause, and pytest then shows one error, not two.
            raise ModelLoadError(self._failures[model_id]) from None

    def placement_kwargs(self) -> dict[str, Any]:
        """`models.load` arguments that place this process's models (see the module docstring)."""
        max_memory = getattr(self.options, "max_memory", None)
        if max_memory:
            return {"device_map": "auto", "max_memory": dict(max_memory)}
        worker = os.environ.get("PYTEST_XDIST_WORKER")
        return {"device": models.worker_device(worker, getattr(self.options, "devices", None))}

    @property
    def cache(self) -> Any:
        """The answer cache (`debug.cache.AnswerCache`), or None under `--no-cache`."""
        if self.options.no_cache:
            return None
        if self._cache is None:
            self._cache = AnswerCache(Path(self.options.cache_dir))
        return self._cache

    def score(self, loaded: Any, programs: Sequence[Any], template: str, *, parser: Any = None) -> list[Any]:
        """Score programs with `debug.scoring.score_programs` (batched, cached)."""
        return score_programs(
            loaded,
            list(programs),
            template,
            parser=parser,
            batch_size=self.options.batch_size,
            max_new_tokens=self.options.max_new_tokens,
            cache=self.cache,
            progress=False,
            chat_template=getattr(self.options, "chat_template", False),
            chat_template_kwargs=getattr(self.options, "chat_template_kwargs", None),
            max_concurrency=getattr(self.options, "max_concurrency", None),
        )


def _as_mapping(sample: Any) -> dict[str, Any]:
    if isinstance(sample, dict):
        return sample
    if hasattr(sample, "__dict__"):
        return vars(sample)  # a dataclass such as debug.scoring.Sample: a shallow view, no copy
    return {}


def sample_record(sample: Any, program: Any, case: Case, loaded: Any, case_id: str = "") -> dict[str, Any]:
    """One samples.jsonl line: program, prompt and answers, hashes for pairing, model identity.

    `predicted` is the parsed answer; `parsed` says whether the parser read one (a `debug.scoring.Sample`
    carries that flag; for other scorers it is "predicted is not None").
    """
    fields = _as_mapping(sample)
    predicted = fields.get("predicted_answer")
    parsed = fields.get("parsed")
    if not isinstance(parsed, bool):
        parsed = predicted is not None
    logprob = fields.get("answer_logprob")
    return {
        "case": case_id,
        "program_hash": fields.get("program_hash") or program.hash,
        "prompt_hash": fields.get("prompt_hash"),
        "model_id": case.model,
        "fingerprint": getattr(loaded, "fingerprint", None),
        "seq_len": case.seq_len,
        "seq_id": fields.get("seq_id"),
        "program": program.text,
        "prompt": fields.get("prompt"),
        "expected": jsonable(program.answer),
        "output": str(fields.get("raw_output") or ""),
        "predicted": jsonable(predicted),
        "parsed": parsed,
        "correct": bool(fields.get("correct", False)),
        "logprob": jsonable(float(logprob)) if logprob is not None else None,
        "cached": bool(fields.get("cached", False)),
        "metadata": jsonable({k: v for k, v in program.metadata.items() if k != "answer_var"}),
    }


def logprob_unavailable(records: Sequence[dict[str, Any]]) -> bool:
    """Whether no record has an answer log-prob (a served model without echo + logprobs)."""
    return bool(records) and all(r.get("logprob") is None for r in records)


def evaluate_case(measure: Measurement, case: Case, loaded: Any, backend: Backend) -> list[Any]:
    """Generate, score and record one eval case. See the module docstring."""
    generator = resolve_generator(case.task.generator)
    template = resolve_prompt(case.task.prompt)
    programs = generate_programs(
        generator, case.seq_len, case.num_seqs, base_seed=case.seed, **case.task.knobs
    )
    parser = case.task.parser
    if parser is None:
        parser = parser_for(programs[0].answer)
    samples = backend.score(loaded, programs, template, parser=parser)
    if len(samples) != len(programs):
        raise RuntimeError(f"the scorer returned {len(samples)} samples for {len(programs)} programs")
    records = [sample_record(s, p, case, loaded, measure.name) for s, p in zip(samples, programs)]
    n = len(records)
    measure.info(
        model=case.model,
        fingerprint=getattr(loaded, "fingerprint", None),
        seq_len=case.seq_len,
        device=models.placement(loaded),
    )
    options = getattr(backend, "options", None)
    if getattr(options, "chat_template", False):
        measure.info(chat_template=True, chat_template_kwargs=options.chat_template_kwargs or {})
    if isinstance(loaded, ServedModel) and logprob_unavailable(records):
        measure.info(answer_logprob="unavailable: the server returns no prompt log-probs")
    measure.metric("accuracy", k=sum(r["correct"] for r in records), n=n)
    measure.metric("parse_failure_rate", k=sum(not r["parsed"] for r in records), n=n)
    logprobs = [float(r["logprob"]) for r in records if r["logprob"] is not None]
    if logprobs and all(math.isfinite(x) for x in logprobs):
        measure.metric("mean_logprob", sum(logprobs) / len(logprobs))
    for name, rate in heuristic_baselines(programs).items():
        measure.metric(f"baseline/{name}", k=round(rate * n), n=n)
    measure.add_plain_samples(records)  # built field by field above, already plain JSON
    return samples
