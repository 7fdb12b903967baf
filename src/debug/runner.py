"""`ExperimentRunner`: the seed's behavioural runner (generate programs, score models, summarise, plot).

    runner = ExperimentRunner()
    result = runner.run(config)            # config from debug.quick_experiment(...)
    result["summary"]["overall_accuracy"]; result["output_dir"]
    runner.plot(config.name); runner.analyze_errors(config.name, show_programs=True)

Each run writes `results/debug_experiments/{name}_{timestamp}/` with `results.json` (one record per program
and model, generator metadata flattened in), `summary.json` (accuracy with Wilson 95% intervals by model,
seq_len and hop count, next to heuristic baselines on the same programs) and `accuracy_plot.png`.

`no_cache=True` keeps both meanings it has had: answers are neither read from nor written to the on-disk
answer cache (`debug.cache`), and models this run loaded are unloaded when it finishes (the seed's meaning).
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from debug import models
from debug._util.files import atomic_write_json, timestamped_dir
from debug._util.jsonable import jsonable
from debug.baselines import heuristic_baselines, predict_copy_last_constant, predict_copy_line_1
from debug.cache import AnswerCache
from debug.programs import Program
from debug.scoring import Sample, score_programs
from debug.stats import pooled_proportion

DEFAULT_OUTPUT_DIR = Path("results") / "debug_experiments"
_CORE = (
    "model_id",
    "fingerprint",
    "seq_len",
    "seq_id",
    "program",
    "prompt",
    "program_hash",
    "prompt_hash",
    "true_answer",
    "predicted_answer",
    "raw_output",
    "parsed",
    "correct",
    "answer_logprob",
    "cached",
)


def _record(sample: Sample) -> dict[str, Any]:
    """A results.json record: the sample's fields with the generator metadata flattened in."""
    data = sample.to_dict()
    record = {key: data[key] for key in _CORE}
    for key, value in sample.metadata.items():
        record[key if key not in record else f"meta_{key}"] = value
    return record


def _rate(flags: Sequence[bool]) -> dict[str, Any]:
    rate = pooled_proportion([(sum(bool(f) for f in flags), len(flags))])
    return {"accuracy": rate.value, "k": rate.k, "n": rate.n, "ci_low": rate.low, "ci_high": rate.high}


def _grouped(records: list[dict[str, Any]], key: str) -> dict[str, Any]:
    groups: dict[Any, list[bool]] = defaultdict(list)
    for r in records:
        if r.get(key) is not None:
            groups[r[key]].append(r["correct"])
    return {str(k): _rate(v) for k, v in sorted(groups.items())}


def summarize(records: list[dict[str, Any]], programs: dict[int, list[Program]]) -> dict[str, Any]:
    """Accuracy with Wilson 95% intervals overall, by model, seq_len and hops; baselines on the programs."""
    overall = _rate([r["correct"] for r in records])
    by_model = {}
    for model_id in dict.fromkeys(r["model_id"] for r in records):
        mine = [r for r in records if r["model_id"] == model_id]
        by_model[model_id] = {
            **_rate([r["correct"] for r in mine]),
            "fingerprint": mine[0]["fingerprint"],
            "parsed_rate": sum(r["parsed"] for r in mine) / len(mine),
            "by_seq_len": _grouped(mine, "seq_len"),
            "by_hops": _grouped(mine, "hops"),
        }
    every = [p for group in programs.values() for p in group]
    return {
        "overall_accuracy": overall["accuracy"],
        "overall": overall,
        "num_samples": len(records),
        "by_model": by_model,
        "baselines": heuristic_baselines(every) if every else {},
        "baselines_by_seq_len": {str(n): heuristic_baselines(p) for n, p in sorted(programs.items()) if p},
        "interval": "Wilson score, 95%",
    }


class ExperimentRunner:
    """Runs `ExperimentConfig`s and keeps their results for `plot` and `analyze_errors`.

    Args:
        output_dir: Where run folders go (default `results/debug_experiments`).
        cache_dir: Answer cache folder (default `$DEBUG_CACHE_DIR` or `.debug_cache`).
        device: Device for models ("auto" picks cuda, mps, then cpu).
        progress: Show tqdm bars while scoring.
        max_concurrency: Requests in flight to a served (`openai:`) model (default 8).
    """

    def __init__(
        self,
        output_dir: str | Path = DEFAULT_OUTPUT_DIR,
        cache_dir: str | Path | None = None,
        device: str = "auto",
        progress: bool = True,
        max_concurrency: int = 8,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.cache = AnswerCache(cache_dir)
        self.device = device
        self.progress = progress
        self.max_concurrency = max_concurrency
        self.experiments: dict[str, dict[str, Any]] = {}

    def run(
        self, config: Any, save: bool = True, no_cache: bool = False, batch_size: int | None = None
    ) -> dict[str, Any]:
        """Generate the config's programs, score every model on them, summarise and (optionally) save.

        Args:
            config: An `ExperimentConfig` (see `debug.quick_experiment`).
            save: Write the run folder (results.json, summary.json, accuracy_plot.png).
            no_cache: Bypass the answer cache and unload models this run loaded, once it is done.
            batch_size: Prompts per forward pass (None: sized by prompt length).

        Returns:
            {"name", "summary", "results" (records), "output_dir" (str or None), "config"}.

        Raises:
            debug.programs.GeneratorError: The generator raised (names generator, seq_len and seed).
            debug.models.ModelNotAvailableError: A model id that cannot be loaded here.
        """
        started = time.time()
        programs = {seq_len: config.programs(seq_len) for seq_len in config.seq_lens}
        ordered = [(n, i, p) for n, group in programs.items() for i, p in enumerate(group)]
        already = set(models.list_loaded())
        records: list[dict[str, Any]] = []
        try:
            for model_id in config.models:
                loaded = models.load(model_id, device=self.device)
                samples = score_programs(
                    loaded,
                    [p for _, _, p in ordered],
                    config.prompt_template,
                    parser=config.parser,
                    batch_size=batch_size,
                    max_new_tokens=config.max_new_tokens,
                    cache=None if no_cache else self.cache,
                    progress=self.progress,
                    chat_template=getattr(config, "chat_template", False),
                    chat_template_kwargs=getattr(config, "chat_template_kwargs", None),
                    max_concurrency=self.max_concurrency,
                )
                for (seq_len, seq_id, _), sample in zip(ordered, samples):
                    sample.seq_len, sample.seq_id = seq_len, seq_id
                    records.append(_record(sample))
        finally:
            if no_cache:
                for model_id in config.models:
                    if model_id not in already:
                        models.unload(model_id)
        summary = summarize(records, programs)
        summary["seconds"] = round(time.time() - started, 3)
        summary["config"] = config.to_dict()
        result: dict[str, Any] = {
            "name": config.name,
            "summary": summary,
            "results": records,
            "output_dir": None,
            "config": config.to_dict(),
        }
        if save:
            folder = self._new_folder(config.name)
            # jsonable: a non-finite log-prob is stored as null, which every JSON reader accepts.
            atomic_write_json(folder / "results.json", jsonable(records))
            atomic_write_json(folder / "summary.json", jsonable(summary))
            self._plot_records(result, folder / "accuracy_plot.png")
            result["output_dir"] = str(folder)
        self.experiments[config.name] = result
        return result

    def _new_folder(self, name: str) -> Path:
        return timestamped_dir(self.output_dir, prefix=f"{name}_")

    def _get(self, name: str) -> dict[str, Any]:
        if name in self.experiments:
            return self.experiments[name]
        folders = sorted(
            (f for f in self.output_dir.glob(f"{name}_*") if (f / "results.json").is_file()),
            key=lambda f: f.stat().st_mtime,
        )
        if not folders:
            raise KeyError(
                f"no experiment named {name!r} in this runner or under {self.output_dir}; run it first"
            )
        folder = folders[-1]
        result = {
            "name": name,
            "results": json.loads((folder / "results.json").read_text()),
            "summary": json.loads((folder / "summary.json").read_text()),
            "output_dir": str(folder),
        }
        self.experiments[name] = result
        return result

    def plot(self, name: str, save_path: str | Path | None = None) -> Path:
        """Plot accuracy against seq_len per model (Wilson 95% bands, copy-line-1 baseline)."""
        result = self._get(name)
        if save_path is None:
            base = Path(result["output_dir"]) if result.get("output_dir") else self.output_dir / name
            base.mkdir(parents=True, exist_ok=True)
            save_path = base / "accuracy_plot.png"
        return self._plot_records(result, Path(save_path))

    @staticmethod
    def _plot_records(result: dict[str, Any], path: Path) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        for model_id, stats in result["summary"]["by_model"].items():
            rows = sorted(stats["by_seq_len"].items(), key=lambda kv: int(kv[0]))
            xs = [int(k) for k, _ in rows]
            ax.plot(xs, [v["accuracy"] for _, v in rows], marker="o", label=model_id)
            ax.fill_between(xs, [v["ci_low"] for _, v in rows], [v["ci_high"] for _, v in rows], alpha=0.2)
        base = sorted(result["summary"].get("baselines_by_seq_len", {}).items(), key=lambda kv: int(kv[0]))
        if base:
            xs = [int(k) for k, _ in base]
            ax.plot(xs, [v["copy_line_1"] for _, v in base], "k--", lw=1, label="copy line 1 (baseline)")
        ax.set(
            xlabel="seq_len", ylabel="accuracy", ylim=(-0.02, 1.02), title=f"{result['name']} (Wilson 95%)"
        )
        ax.legend(fontsize=8)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

    def analyze_errors(
        self,
        name: str,
        show_programs: bool = False,
        min_seq_len: int | None = None,
        max_seq_len: int | None = None,
        n_examples: int = 3,
    ) -> dict[str, Any]:
        """Print and return an error analysis: rates by seq_len, common wrong answers, heuristic matches.

        Args:
            name: Experiment name (this runner's, or the newest saved run of that name).
            show_programs: Also print the programs of `n_examples` errors with the model's raw output.
            min_seq_len: Only consider programs at least this long.
            max_seq_len: Only consider programs at most this long.
            n_examples: How many error examples to keep (and print with `show_programs`).
        """
        records = [
            r
            for r in self._get(name)["results"]
            if (min_seq_len is None or r["seq_len"] >= min_seq_len)
            and (max_seq_len is None or r["seq_len"] <= max_seq_len)
        ]
        errors = [r for r in records if not r["correct"]]
        by_len: dict[int, list[bool]] = defaultdict(list)
        for r in records:
            by_len[r["seq_len"]].append(not r["correct"])
        copy1 = [r for r in errors if _heuristic(r, predict_copy_line_1)]
        copy_last = [r for r in errors if _heuristic(r, predict_copy_last_constant)]
        analysis = {
            "total": len(records),
            "errors": len(errors),
            "error_rate": len(errors) / len(records) if records else None,
            "unparsed": sum(not r["parsed"] for r in errors),
            "error_rate_by_seq_len": {n: sum(v) / len(v) for n, v in sorted(by_len.items())},
            "common_wrong_answers": Counter(repr(r["predicted_answer"]) for r in errors).most_common(5),
            "errors_matching_copy_line_1": len(copy1),
            "errors_matching_copy_last_constant": len(copy_last),
            "examples": errors[:n_examples],
        }
        print(f"{name}: {len(errors)} errors in {len(records)} samples ({analysis['unparsed']} unparsed)")
        for n, rate in analysis["error_rate_by_seq_len"].items():
            print(f"  seq_len {n}: error rate {rate:.1%}")
        print(f"  common wrong answers: {analysis['common_wrong_answers']}")
        print(f"  errors equal to the line-1 constant: {len(copy1)}; to the last constant: {len(copy_last)}")
        if show_programs:
            for r in analysis["examples"]:
                print(
                    f"--- {r['model_id']} seq_len={r['seq_len']} seq_id={r['seq_id']} "
                    f"expected {r['true_answer']!r}"
                )
                print(r["program"])
                print(f">>> raw output: {r['raw_output']!r} (parsed {r['predicted_answer']!r})")
        return analysis

    def preload_models(self, model_ids: Sequence[str] | str) -> list[str]:
        """Load models into the process cache ahead of runs; returns their ids."""
        return [m.model_id for m in models.preload(model_ids, device=self.device)]

    def list_loaded_models(self) -> list[str]:
        """Ids of the models in the process cache."""
        return models.list_loaded()

    def unload_model(self, model_id: str) -> bool:
        """Drop one model from the process cache; True when it was loaded."""
        return models.unload(model_id)

    def unload_all_models(self) -> int:
        """Empty the process cache; returns how many models were dropped."""
        return models.unload_all()


def _heuristic(record: dict[str, Any], predict: Any) -> bool:
    guess = predict(Program(record["program"], record["true_answer"], {}))
    return guess is not None and guess == record["predicted_answer"]
