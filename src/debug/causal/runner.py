"""The seed's causal API: sweeps over program pairs, saved results and pictures.

`run_causal_tracing_experiment(model_id, programs, ...)` returns one `SweepResult` per pair.
`CausalExperimentRunner().run_intervention_experiment(...)` patches every layer x token cell of each program
pair, writes `results/full_token_layer_patching/<timestamp>/intervention_results.json` (per program and cell)
and `patch_results.json` (averaged over programs by ref-depth label), and returns the same data plus the
`SweepResult` objects. `plot_intervention_results(results)` draws the heatmaps next to those files.

Both check every program against the model's context before any forward, and warn in one line
(`UnsolvedPairWarning`) for each pair whose original or counterfactual the model answers wrong; nothing is
refused for that, and every saved record says it (`original_correct`, `counterfactual_correct`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from debug._util.figures import save_figure
from debug._util.files import atomic_write_json, timestamped_dir
from debug.causal.architectures import resolve_architecture
from debug.causal.engine import resolve_model, sweep_pairs
from debug.causal.inputs import CausalTracingError, as_pair
from debug.causal.pairs import binding_pair, binding_program, check_program_fits
from debug.causal.plots import plot_head_heatmaps, plot_ref_depth_aggregate, plot_token_heatmap
from debug.causal.result import SweepResult, aggregate_by_target, warn_if_unsolved
from debug.counterfactual import create_counterfactual_program
from debug.models import DEFAULT_MODEL
from debug.programs import Program

__all__ = ["RESULTS_DIR", "CausalExperimentRunner", "ProgramPairs", "run_causal_tracing_experiment"]

RESULTS_DIR = Path("results") / "full_token_layer_patching"
#: Generated pairs: at most this many seeds are tried per requested pair before giving up.
SEEDS_PER_PAIR = 100


def _layers_of_this_model(loaded: Any, layers: Any, site: str) -> list[int]:
    # The seed's examples pass list(range(28)) (Qwen3-0.6B's depth) whatever the model; keep the layers this
    # model has and say what was dropped, rather than refusing an example copied from the README.
    limit = resolve_architecture(loaded.model).num_layers + (1 if site == "residual_stream" else 0)
    kept = [int(layer) for layer in layers if 0 <= int(layer) < limit]
    dropped = sorted(set(int(layer) for layer in layers) - set(kept))
    if dropped:
        warnings.warn(
            f"{getattr(loaded, 'model_id', 'the model')} has {limit} patchable layers (0..{limit - 1}); "
            f"intervention_layers {dropped[0]}..{dropped[-1]} skipped",
            stacklevel=3,
        )
    if not kept:
        raise CausalTracingError(f"no intervention layer in 0..{limit - 1}; pass layers this model has")
    return kept


def run_causal_tracing_experiment(
    model_id: Any,
    programs: list[Any],
    intervention_layers: list[int] | None = None,
    intervention_type: str = "residual_stream",
    *,
    positions: Any = None,
    batch_size: int | None = None,
    progress: bool = False,
) -> list[SweepResult]:
    """The seed's causal tracing entry point: one full sweep per program pair (`sweep_pairs`: pairs of equal
    token length share batched forwards).

    Args:
        model_id: A model id or a `LoadedModel`.
        programs: Pairs as dicts with `original`, `counterfactual`, `expected_original`,
            `expected_counterfactual` and optionally `variable_chain`; or `(original, counterfactual)` tuples
            of `Program`s.
        intervention_layers: Layers to patch (default all). Layers the model does not have are skipped
            with a warning, so the seed's `list(range(28))` runs on smaller models.
        intervention_type: "residual_stream", "attention_heads" or "mlp".
        positions: Positions to patch (default all).
        batch_size: Cells per forward (default automatic).
        progress: Show progress bars.

    Returns:
        One `SweepResult` per program, in order. Each pair the model answers wrong (on the original or the
        counterfactual) gets a one-line `UnsolvedPairWarning`.

    Raises:
        debug.causal.inputs.CausalTracingError: For a bad pair or a program longer than the model's
            context, checked for every pair before the first forward.
    """
    loaded = resolve_model(model_id)
    if intervention_layers is not None:
        intervention_layers = _layers_of_this_model(loaded, intervention_layers, intervention_type)
    pairs = [as_pair(item) for item in programs]
    for original, _ in pairs:
        check_program_fits(loaded, original, with_answer=False)
    # All pairs in one call: they share batched forwards (the shorter ones left-padded).
    results = sweep_pairs(
        loaded,
        pairs,
        site=intervention_type,
        layers=intervention_layers,
        positions=positions,
        batch_size=batch_size,
        progress=progress,
        warn_unsolved=False,
    )
    for result in results:
        warn_if_unsolved(result, stacklevel=2)
    return results


@dataclass
class ProgramPairs:
    """The pairs a run sweeps, and the seeds it passed over.

    Attributes:
        pairs: (original, counterfactual, seed or None) per pair, in order.
        skipped: One `{"seed": S, "reason": "..."}` per generated seed that gave no usable pair.
    """

    pairs: list[tuple[Program, Program, int | None]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)


def _generated_pairs(loaded: Any, num_hops: int, seq_len: int, count: int, seed: int) -> ProgramPairs:
    """`count` binding pairs from seeds `seed`, `seed + 1`, ...; a seed without an equal-length pair is
    skipped and recorded. The first program is checked against the model's context before anything else."""
    # Bad hops / seq_len fail here in one line, and a too-long program before any counterfactual is built.
    check_program_fits(loaded, binding_program(seq_len, num_hops, seed), with_answer=False)
    found = ProgramPairs()
    for candidate in range(seed, seed + SEEDS_PER_PAIR * count):
        if len(found.pairs) == count:
            break
        try:
            found.pairs.append((*binding_pair(seq_len, num_hops, candidate, loaded.tokenizer), candidate))
        except ValueError as exc:
            found.skipped.append({"seed": candidate, "reason": str(exc)})
    return found


def _given_pairs(loaded: Any, programs: Sequence[Any], seed: int) -> ProgramPairs:
    """The caller's pairs; a lone `Program` gets a counterfactual (its chain's root constant changed)."""
    found = ProgramPairs()
    for i, item in enumerate(programs):
        if isinstance(item, Program):
            cf = create_counterfactual_program(item, seed + i, tokenizer=loaded.tokenizer)
            found.pairs.append((item, cf, seed + i))
        else:
            found.pairs.append((*as_pair(item), None))
    for original, _, _ in found.pairs:
        check_program_fits(loaded, original, with_answer=False)
    return found


def _record(
    index: int, original: Program, counterfactual: Program, seed: int | None, result: SweepResult
) -> dict:
    """One program's entry of intervention_results.json."""
    return {
        "index": index,
        "seed": seed,
        "original": original.text,
        "counterfactual": counterfactual.text,
        "expected_original": original.answer,
        "expected_counterfactual": counterfactual.answer,
        "variable_chain": original.metadata.get("chain"),
        "original_correct": result.original_correct,
        "counterfactual_correct": result.counterfactual_correct,
        "sweep": result.to_dict(),
    }


class CausalExperimentRunner:
    """Runs and saves full layer x token patching experiments (the seed's API).

    Args:
        results_dir: Where timestamped run folders go (default `results/full_token_layer_patching`).
        progress: Show tqdm bars.
    """

    def __init__(self, results_dir: str | Path = RESULTS_DIR, *, progress: bool = True) -> None:
        self.results_dir = Path(results_dir)
        self.progress = progress

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
        remote: bool | str = False,
    ) -> dict[str, Any]:
        """Sweep every program pair and save the results.

        Args:
            model_id: Model id or `LoadedModel` (default `debug.models.DEFAULT_MODEL`).
            programs: Seed-style dicts (original, counterfactual, expected_original, expected_counterfactual,
                variable_chain), `(original, counterfactual)` Program pairs, or lone `Program`s (each gets
                a counterfactual). None generates `num_programs` binding pairs from `rng_seed` on.
            intervention_type: "residual_stream", "attention_heads" or "mlp".
            num_hops: Query depth of generated programs.
            seq_len: Assignment lines of generated programs.
            num_programs: How many pairs to generate when `programs` is None.
            rng_seed: First seed for generated pairs (see `debug.causal.pairs`).
            layers: Layers to patch (default all).
            positions: Positions to patch (default all).
            batch_size: Cells per forward (default automatic).
            save: Write the JSON files (False keeps everything in memory).
            remote: Where the patching traces run: False (here), "local" (nnsight's remote request path run
                in this process) or True (NDIF); see `debug.causal.engine.sweep_pairs`. With either of the
                last two a model id is not loaded here (`debug.causal.forward.RemoteModel`).

        Returns:
            A dict with model_id, intervention_type, output_dir, programs (per program: texts, answers,
            seed, original_correct, counterfactual_correct and the sweep as a dict), skipped (generated
            seeds that gave no pair, each with its reason), unsolved (how many pairs the model answers wrong
            either way), aggregate (by ref depth), and `sweeps` (the `SweepResult`s, kept in memory only).

        Raises:
            ValueError: Bad num_hops / seq_len (the generator's message), a bad pair, or a program longer
                than the model's context (`CausalTracingError`), before any forward.
        """
        loaded = resolve_model(model_id or DEFAULT_MODEL, remote=remote)
        if programs is None:
            found = _generated_pairs(loaded, num_hops, seq_len, num_programs, rng_seed)
        else:
            found = _given_pairs(loaded, programs, rng_seed)
        sweeps = sweep_pairs(
            loaded,
            [(original, counterfactual) for original, counterfactual, _ in found.pairs],
            site=intervention_type,
            layers=layers,
            positions=positions,
            batch_size=batch_size,
            progress=self.progress,
            warn_unsolved=False,
            remote=remote,
        )
        records = []
        for index, ((original, counterfactual, seed), result) in enumerate(zip(found.pairs, sweeps)):
            warn_if_unsolved(result, stacklevel=2)
            records.append(_record(index, original, counterfactual, seed, result))
        results: dict[str, Any] = {
            "model_id": getattr(loaded, "model_id", str(model_id)),
            "intervention_type": intervention_type,
            "num_hops": num_hops if programs is None else None,
            "seq_len": seq_len if programs is None else None,
            "programs": records,
            "skipped": found.skipped,
            "unsolved": sum(not s.solved for s in sweeps),
            "aggregate": aggregate_by_target(sweeps),
            "output_dir": None,
        }
        if save:
            self._save(results)
        results["sweeps"] = sweeps
        return results

    def _save(self, results: dict[str, Any]) -> None:
        out = timestamped_dir(self.results_dir)
        results["output_dir"] = str(out)
        atomic_write_json(out / "intervention_results.json", results)
        atomic_write_json(out / "patch_results.json", results["aggregate"])

    def plot_intervention_results(
        self, results: dict[str, Any], *, metric: str = "normalized", output_dir: str | Path | None = None
    ) -> list[Path]:
        """Draw one layer x token heatmap per program (plus layer x head panels for head sweeps) and the
        ref-depth aggregate, as PNGs in the run's folder (or `output_dir`).

        Returns:
            The PNG paths.
        """
        folder = Path(output_dir or results.get("output_dir") or timestamped_dir(self.results_dir))
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
