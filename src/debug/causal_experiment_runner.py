"""The seed's causal runner: sweeps over program pairs, saved results, pictures, and `debug patch`.

`CausalExperimentRunner().run_intervention_experiment(...)` patches every layer x token cell of each program
pair, writes `results/full_token_layer_patching/{timestamp}/intervention_results.json` (per program and cell)
and `patch_results.json` (averaged over programs by ref-depth label), and returns the same data plus the
`SweepResult` objects. `plot_intervention_results(results)` draws the heatmaps next to those files.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from debug.causal_inputs import as_pair
from debug.causal_result import METRIC_NAMES, SweepResult
from debug.causal_tracing import resolve_model, sweep
from debug.programs import Program

RESULTS_DIR = Path("results") / "full_token_layer_patching"


def aggregate_by_target(sweeps: Sequence[SweepResult]) -> dict[str, Any]:
    """Mean of every metric at each target label ("ref depth k", "query", "final") over programs.

    Returns:
        A JSON-ready dict: site, model_id, layers, layer_labels, heads, definitions, and `by_target` ->
        label -> {"n": programs, metric: per-layer means (per layer and head for head sweeps)}.
    """
    if not sweeps:
        return {"by_target": {}, "layer_labels": [], "layers": []}
    first = sweeps[0]
    by_target: dict[str, Any] = {}
    labels = sorted({label for s in sweeps for label in s.targets})
    for label in labels:
        found = [s for s in sweeps if s.at_target(label) is not None]
        entry: dict[str, Any] = {"n": len(found)}
        for metric in METRIC_NAMES:
            stacked = np.stack([s.at_target(label, metric).astype(float) for s in found])
            with np.errstate(invalid="ignore"):
                mean = np.nanmean(stacked, axis=0) if np.isfinite(stacked).any() else stacked[0]
            entry[metric] = [None if not np.isfinite(v) else float(v) for v in mean.ravel()]
            if mean.ndim == 2:
                entry[metric] = np.array(entry[metric], dtype=object).reshape(mean.shape).tolist()
        by_target[label] = entry
    return {
        "model_id": first.model_id,
        "site": first.site,
        "layers": first.layers,
        "layer_labels": first.layer_labels,
        "heads": first.heads,
        "num_programs": len(sweeps),
        "definitions": first.definitions,
        "by_target": by_target,
    }


def _timestamped(root: Path) -> Path:
    stamp = time.strftime("%Y%m%d_%H%M%S")
    path, n = root / stamp, 1
    while path.exists():
        n += 1
        path = root / f"{stamp}_{n}"
    path.mkdir(parents=True)
    return path


def _write_json(path: Path, data: Any) -> None:
    # Written whole, then renamed: a run that dies never leaves half a file.
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=False))
    os.replace(tmp, path)


class CausalExperimentRunner:
    """Runs and saves full layer x token patching experiments (the seed's API).

    Args:
        results_dir: Where timestamped run folders go (default `results/full_token_layer_patching`).
        progress: Show tqdm bars.
    """

    def __init__(self, results_dir: str | Path = RESULTS_DIR, *, progress: bool = True) -> None:
        self.results_dir = Path(results_dir)
        self.progress = progress

    def _pairs(
        self,
        programs: Sequence[Any] | None,
        tokenizer: Any,
        num_hops: int,
        seq_len: int,
        num_programs: int,
        seed: int,
    ) -> list[tuple[Program, Program, int | None]]:
        from debug.counterfactual import create_counterfactual_program
        from debug.seeds import binding_pair

        if programs is None:
            from debug.generators import make_variable_binding_program

            make_variable_binding_program(seq_len, seed, num_hops)  # bad hops / seq_len: its one-line error
            pairs: list[tuple[Program, Program, int | None]] = []
            for candidate in range(seed, seed + 100 * num_programs):
                if len(pairs) == num_programs:
                    break
                try:
                    pairs.append((*binding_pair(seq_len, num_hops, candidate, tokenizer), candidate))
                except ValueError:
                    continue  # no equal-length counterfactual: the next seed
            return pairs
        out: list[tuple[Program, Program, int | None]] = []
        for i, item in enumerate(programs):
            # A lone program gets a counterfactual: its chain's root constant changed.
            if isinstance(item, Program):
                out.append(
                    (item, create_counterfactual_program(item, seed + i, tokenizer=tokenizer), seed + i)
                )
            else:
                out.append((*as_pair(item), None))
        return out

    def run_intervention_experiment(
        self,
        model_id: Any = None,
        programs: Sequence[Any] | None = None,
        intervention_type: str = "residual_stream",
        num_hops: int = 2,
        seq_len: int = 16,
        *,
        num_programs: int = 1,
        rng_seed: int = 0,
        layers: Sequence[int] | None = None,
        positions: Sequence[int] | None = None,
        batch_size: int | None = None,
        save: bool = True,
    ) -> dict[str, Any]:
        """Sweep every program pair and save the results.

        Args:
            model_id: Model id or `LoadedModel` (default `debug.DEFAULT_MODEL`).
            programs: Seed-style dicts (original, counterfactual, expected_original, expected_counterfactual,
                variable_chain), `(original, counterfactual)` Program pairs, or lone `Program`s (each gets
                a counterfactual). None generates `num_programs` binding pairs from `rng_seed` on.
            intervention_type: "residual_stream", "attention_heads" or "mlp".
            num_hops: Query depth of generated programs.
            seq_len: Assignment lines of generated programs.
            num_programs: How many pairs to generate when `programs` is None.
            rng_seed: First seed for generated pairs (see `debug.seeds`).
            layers: Layers to patch (default all).
            positions: Positions to patch (default all).
            batch_size: Cells per forward (default automatic).
            save: Write the JSON files (False keeps everything in memory).

        Returns:
            A dict with model_id, intervention_type, output_dir, programs (per program: texts, answers,
            seed and the sweep as a dict), aggregate (by ref depth), and `sweeps` (the `SweepResult`s,
            kept in memory only).
        """
        from debug import DEFAULT_MODEL

        loaded = resolve_model(model_id or DEFAULT_MODEL)
        pairs = self._pairs(programs, loaded.tokenizer, num_hops, seq_len, num_programs, rng_seed)
        sweeps, records = [], []
        for index, (original, counterfactual, seed) in enumerate(pairs):
            result = sweep(
                loaded,
                original,
                counterfactual,
                site=intervention_type,
                layers=layers,
                positions=positions,
                batch_size=batch_size,
                progress=self.progress,
            )
            sweeps.append(result)
            records.append(
                {
                    "index": index,
                    "seed": seed,
                    "original": original.text,
                    "counterfactual": counterfactual.text,
                    "expected_original": original.answer,
                    "expected_counterfactual": counterfactual.answer,
                    "variable_chain": original.metadata.get("chain"),
                    "clean_correct": result.clean.top1_id == result.answer.original_id,
                    "counterfactual_correct": result.counterfactual.top1_id
                    == result.answer.counterfactual_id,
                    "sweep": result.to_dict(),
                }
            )
        results: dict[str, Any] = {
            "model_id": getattr(loaded, "model_id", str(model_id)),
            "intervention_type": intervention_type,
            "num_hops": num_hops if programs is None else None,
            "seq_len": seq_len if programs is None else None,
            "programs": records,
            "aggregate": aggregate_by_target(sweeps),
            "output_dir": None,
        }
        if save:
            out = _timestamped(self.results_dir)
            results["output_dir"] = str(out)
            _write_json(out / "intervention_results.json", results)
            _write_json(out / "patch_results.json", results["aggregate"])
        results["sweeps"] = sweeps
        return results

    def plot_intervention_results(
        self, results: dict[str, Any], *, metric: str = "normalized", output_dir: str | Path | None = None
    ) -> list[Path]:
        """Draw one layer x token heatmap per program (plus layer x head panels for head sweeps) and the
        ref-depth aggregate, as PNGs in the run's folder (or `output_dir`).

        Returns:
            The PNG paths.
        """
        from debug.causal_visualization import (
            plot_head_heatmaps,
            plot_ref_depth_aggregate,
            plot_token_heatmap,
            save_figure,
        )

        folder = Path(output_dir or results.get("output_dir") or _timestamped(self.results_dir))
        sweeps = results.get("sweeps") or [SweepResult.from_dict(r["sweep"]) for r in results["programs"]]
        paths = []
        for index, result in enumerate(sweeps):
            paths.append(
                save_figure(plot_token_heatmap(result, metric), folder / f"program_{index}_{metric}.png")
            )
            if result.heads is not None:
                paths.append(
                    save_figure(plot_head_heatmaps(result, metric), folder / f"program_{index}_heads.png")
                )
        if results["aggregate"].get("by_target"):
            figure = plot_ref_depth_aggregate(results["aggregate"], metric)
            paths.append(save_figure(figure, folder / f"aggregate_{metric}.png"))
        return paths


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    from debug import DEFAULT_MODEL

    parser = argparse.ArgumentParser(
        prog="debug patch",
        description="Run and plot one full layer x token patching sweep of a binding program.",
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model id (default {DEFAULT_MODEL})")
    parser.add_argument("--rng-seed", type=int, default=0, help="program seed (see `debug seeds`; default 0)")
    parser.add_argument("--num-hops", type=int, default=2, help="query depth (default 2)")
    parser.add_argument("--seq-len", type=int, default=16, help="assignment lines (default 16)")
    parser.add_argument("--site", default="residual_stream", help="residual_stream, attention_heads or mlp")
    parser.add_argument("--batch-size", type=int, default=None, help="cells per forward (default automatic)")
    parser.add_argument("--results-dir", default=str(RESULTS_DIR), help=f"default {RESULTS_DIR}")
    return parser.parse_args(list(argv))


def main(argv: Sequence[str] | None = None) -> int:
    """`debug patch`: sweep the pair of one seed, save JSON and heatmaps, print where they are."""
    from debug.architectures import UnsupportedArchitectureError

    args = _parse(sys.argv[1:] if argv is None else argv)
    runner = CausalExperimentRunner(args.results_dir)
    try:
        results = runner.run_intervention_experiment(
            args.model,
            intervention_type=args.site,
            num_hops=args.num_hops,
            seq_len=args.seq_len,
            rng_seed=args.rng_seed,
            batch_size=args.batch_size,
        )
    except (OSError, ValueError, UnsupportedArchitectureError) as exc:
        print(f"debug patch: {exc}", file=sys.stderr)
        return 2
    if not results["programs"]:
        print(
            f"debug patch: no program pair of equal token length from seed {args.rng_seed}", file=sys.stderr
        )
        return 2
    paths = runner.plot_intervention_results(results)
    record, result = results["programs"][0], results["sweeps"][0]
    print(record["original"])
    print(
        f"\nanswer {result.answer.original_text!r} -> counterfactual {result.answer.counterfactual_text!r} "
        f"(seed {record['seed']}); clean top-1 {result.clean.top1!r}, counterfactual top-1 "
        f"{result.counterfactual.top1!r}; {result.forwards} forwards in {result.seconds:.2f} s"
    )
    for label, values in result.target_effects().items():
        finite = [(v, i) for i, v in enumerate(values) if v is not None]
        if finite:
            best, at = max(finite)
            print(f"  {label:<12} strongest normalized effect {best:+.2f} at layer {result.layer_labels[at]}")
    print(f"\nresults: {results['output_dir']}")
    for path in paths:
        print(f"picture: {path}")
    return 0
