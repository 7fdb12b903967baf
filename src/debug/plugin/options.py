"""Command-line options and `[tool.debug]` configuration of the plugin, validated into `DebugOptions`.

Every value is checked once, in `pytest_configure`; a bad one stops the run with a one-line
`pytest.UsageError` that says what is accepted.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from debug.plugin.gates import Gate, GateError, parse_gate

DEFAULT_NUM_SEQS = 50
_OPTIONS_KEY = pytest.StashKey["DebugOptions"]()


@dataclass(frozen=True)
class CompareFail:
    """`--compare-fail METRIC:MARGIN`: fail when a case drops by more than `margin` with p < `alpha`."""

    metric: str
    margin: float
    text: str
    alpha: float = 0.05


@dataclass(frozen=True)
class DebugOptions:
    """The plugin's resolved options."""

    models: tuple[str, ...]
    num_seqs: int
    seq_lens: tuple[int, ...] | None
    seed: int
    report_dir: Path
    baseline: Path | None
    compare_fail: CompareFail | None
    gates: tuple[Gate, ...]
    no_cache: bool
    cache_dir: Path
    batch_size: int | None
    max_new_tokens: int | None
    args: tuple[str, ...] = field(default_factory=tuple)


def addoption(parser: pytest.Parser) -> None:
    """Register the plugin's command-line options and ini keys."""
    group = parser.getgroup("debug", "debug: language-model code-tracing evals")
    group.addoption(
        "--model",
        action="append",
        default=None,
        metavar="ID",
        help="model to evaluate (repeatable): embedded:NAME, a local folder or a hub id "
        "(default: debug.DEFAULT_MODEL)",
    )
    group.addoption(
        "--num-seqs", default=None, metavar="N", help=f"programs per case (default {DEFAULT_NUM_SEQS})"
    )
    group.addoption(
        "--seq-lens",
        default=None,
        metavar="L1,L2,...",
        help="sequence lengths to measure, comma-separated (default: each task's own)",
    )
    group.addoption(
        "--program-seed",
        default="0",
        metavar="SEED",
        help="base seed of the generated programs (default 0; keep it for comparable runs)",
    )
    group.addoption(
        "--report-dir",
        default="reports",
        metavar="DIR",
        help="where runs are written, relative to the rootdir (default reports/)",
    )
    group.addoption(
        "--baseline",
        default=None,
        metavar="PATH",
        help="results.json of an earlier run: per-case deltas with exact McNemar tests",
    )
    group.addoption(
        "--compare-fail",
        default=None,
        metavar="METRIC:MARGIN",
        help="exit non-zero when a case drops by more than MARGIN (e.g. accuracy:2pp, "
        "accuracy:0.02) with p < 0.05 against --baseline",
    )
    group.addoption(
        "--gate",
        action="append",
        default=[],
        metavar="EXPR",
        help='gate "[SELECTOR:]METRIC>=VALUE" or "<=" (repeatable; also [tool.debug] gates)',
    )
    group.addoption(
        "--no-cache", action="store_true", default=False, help="ignore and do not write the answer cache"
    )
    group.addoption("--batch-size", default=None, metavar="N", help="scoring batch size (default: scorer's)")
    group.addoption(
        "--max-new-tokens", default=None, metavar="N", help="generation budget per answer (default: scorer's)"
    )
    parser.addini(
        "debug_gates", type="linelist", default=[], help="gates applied to every run (same grammar as --gate)"
    )


def _positive_int(text: str | None, option: str, example: str) -> int | None:
    if text is None:
        return None
    try:
        value = int(str(text).strip())
    except ValueError:
        value = 0
    if value <= 0:
        raise pytest.UsageError(f"{option} takes a positive integer, e.g. {option} {example}; got {text!r}")
    return value


def _seq_lens(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts or not all(re.fullmatch(r"\d+", p) and int(p) > 0 for p in parts):
        raise pytest.UsageError(
            f"--seq-lens takes comma-separated positive integers, e.g. --seq-lens 4,8,16; got {text!r}"
        )
    return tuple(dict.fromkeys(int(p) for p in parts))


def parse_compare_fail(text: str) -> CompareFail:
    """Parse `METRIC:MARGIN` where MARGIN is `2pp` (percentage points) or an absolute number like `0.02`.

    Raises:
        ValueError: With the accepted grammar.
    """
    from debug.plugin.compare import PAIRED_METRICS

    match = re.fullmatch(r"\s*([A-Za-z_][\w]*)\s*:\s*([0-9]*\.?[0-9]+)\s*(pp)?\s*", text or "")
    grammar = "--compare-fail takes METRIC:MARGIN, e.g. accuracy:2pp or accuracy:0.02"
    if not match:
        raise ValueError(f"{grammar}; got {text!r}")
    metric, number, unit = match.groups()
    if metric not in PAIRED_METRICS:
        raise ValueError(f"{grammar}; METRIC must be one of {', '.join(PAIRED_METRICS)}, got {metric!r}")
    margin = float(number) / 100.0 if unit else float(number)
    if not 0.0 <= margin < 1.0:
        raise ValueError(f"{grammar}; the margin must be below 100pp, got {text!r}")
    return CompareFail(metric, margin, text.strip())


def pyproject_gates(config: pytest.Config) -> list[str]:
    """Gates listed under `[tool.debug] gates` in the rootdir's pyproject.toml (and the `debug_gates` ini)."""
    found: list[str] = list(config.getini("debug_gates") or [])
    path = config.rootpath / "pyproject.toml"
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise pytest.UsageError(f"cannot read {path}: {exc}; fix the TOML") from exc
        gates = data.get("tool", {}).get("debug", {}).get("gates", [])
        if isinstance(gates, str):
            gates = [gates]
        if not isinstance(gates, list) or not all(isinstance(g, str) for g in gates):
            raise pytest.UsageError(
                f"[tool.debug] gates in {path} must be a list of strings like "
                '"variable_binding:accuracy>=0.95"'
            )
        found.extend(gates)
    return found


def resolve_options(config: pytest.Config) -> DebugOptions:
    """Validate every option; raise `pytest.UsageError` with a one-line fix on bad input."""
    import debug

    models = tuple(config.getoption("--model") or [debug.DEFAULT_MODEL])
    for model in models:
        if not model.strip():
            raise pytest.UsageError(
                "--model needs a model id, e.g. --model embedded:binder; got an empty one"
            )
    models = tuple(dict.fromkeys(m.strip() for m in models))
    num_seqs = _positive_int(config.getoption("--num-seqs"), "--num-seqs", "50") or DEFAULT_NUM_SEQS
    seed_text = config.getoption("--program-seed")
    if not re.fullmatch(r"\d+", str(seed_text).strip()):
        raise pytest.UsageError(f"--program-seed takes a non-negative integer, e.g. 0; got {seed_text!r}")
    compare_text = config.getoption("--compare-fail")
    baseline_text = config.getoption("--baseline")
    compare_fail = None
    if compare_text is not None:
        try:
            compare_fail = parse_compare_fail(compare_text)
        except ValueError as exc:
            raise pytest.UsageError(str(exc)) from None
        if baseline_text is None:
            raise pytest.UsageError(
                "--compare-fail needs --baseline PATH (the results.json to compare against)"
            )
    gates: list[Gate] = []
    try:
        gates.extend(parse_gate(text, source="--gate") for text in config.getoption("--gate") or [])
        gates.extend(parse_gate(text, source="pyproject") for text in pyproject_gates(config))
    except GateError as exc:
        raise pytest.UsageError(str(exc)) from None
    root = config.rootpath
    report_dir = Path(config.getoption("--report-dir"))
    baseline = Path(baseline_text) if baseline_text else None
    if baseline is not None and not baseline.is_absolute():
        baseline = Path(config.invocation_params.dir) / baseline
    return DebugOptions(
        models=models,
        num_seqs=num_seqs,
        seq_lens=_seq_lens(config.getoption("--seq-lens")),
        seed=int(seed_text),
        report_dir=report_dir if report_dir.is_absolute() else root / report_dir,
        baseline=baseline,
        compare_fail=compare_fail,
        gates=tuple(gates),
        no_cache=bool(config.getoption("--no-cache")),
        # The same folder `debug.cache` uses (and `$DEBUG_CACHE_DIR` when set), so runner and plugin share
        # answers.
        cache_dir=Path(os.environ["DEBUG_CACHE_DIR"])
        if os.environ.get("DEBUG_CACHE_DIR")
        else root / ".debug_cache",
        batch_size=_positive_int(config.getoption("--batch-size"), "--batch-size", "32"),
        max_new_tokens=_positive_int(config.getoption("--max-new-tokens"), "--max-new-tokens", "4"),
        args=tuple(config.invocation_params.args),
    )


def store_options(config: pytest.Config) -> DebugOptions:
    """Resolve the options and keep them on the config."""
    options = resolve_options(config)
    config.stash[_OPTIONS_KEY] = options
    return options


def get_options(config: pytest.Config) -> DebugOptions:
    """The options resolved in `pytest_configure` (resolved now if that has not happened)."""
    options = config.stash.get(_OPTIONS_KEY, None)
    return options if options is not None else store_options(config)


def describe_options(options: DebugOptions) -> dict[str, Any]:
    """Plain-JSON form of the options, for results.json."""
    return {
        "models": list(options.models),
        "num_seqs": options.num_seqs,
        "seq_lens": list(options.seq_lens) if options.seq_lens else None,
        "program_seed": options.seed,
        "report_dir": str(options.report_dir),
        "baseline": str(options.baseline) if options.baseline else None,
        "compare_fail": options.compare_fail.text if options.compare_fail else None,
        "gates": [g.text for g in options.gates],
        "no_cache": options.no_cache,
        "batch_size": options.batch_size,
        "max_new_tokens": options.max_new_tokens,
    }
