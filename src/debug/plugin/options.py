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

from debug.chat import check_chat_template_kwargs
from debug.models import DEFAULT_MODEL, parse_devices, parse_max_memory
from debug.plugin.cases import PROMPT_FORMS
from debug.plugin.compare import ALPHA_RANGE, CORRECTIONS, DEFAULT_ALPHA, parse_alpha, parse_fail_rule
from debug.plugin.gates import Gate, GateError, parse_gate

#: Programs per eval case without --num-seqs (`debug.config.DEFAULT_NUM_SEQS` is the Python API's default).
EVAL_NUM_SEQS = 50
_OPTIONS_KEY = pytest.StashKey["DebugOptions"]()

#: Every integer option of the plugin -> (smallest, largest accepted value, an example). A value outside is
#: refused in `resolve_options`, before any case is collected or model loaded. The upper bounds are far past
#: any useful run and exist so a typo (an extra digit, a pasted number) stops at once instead of after
#: minutes of generating programs or allocating batches.
NUMERIC_OPTIONS: dict[str, tuple[int, int, str]] = {
    "--num-seqs": (1, 1_000_000, "50"),  # programs per case
    "--seq-lens": (1, 10_000, "4,8,16"),  # each of them: lines, blocks or loop iterations
    "--program-seed": (0, 2**63 - 1, "0"),  # fits a signed 64-bit integer in results.json readers
    "--batch-size": (1, 65_536, "32"),  # prompts per forward
    "--max-new-tokens": (1, 32_768, "4"),  # generated tokens per answer
    "--max-concurrency": (1, 1_024, "8"),  # requests in flight to a served (openai:) model
}


@dataclass(frozen=True)
class CompareFail:
    """`--compare-fail METRIC:MARGIN`: fail when a case drops by more than `margin` (adjusted p < `alpha`)."""

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
    prompt_form: str = "auto"
    #: The model the other `--model`s are compared with (None with a single model).
    reference: str | None = None
    compare_alpha: float = DEFAULT_ALPHA
    compare_correction: str = "holm"
    #: Requests in flight per served (`openai:`) model.
    max_concurrency: int = 8
    chat_template: bool = False
    chat_template_kwargs: dict[str, Any] | None = field(default=None, hash=False)
    #: `--devices`: the devices workers take in turn (None: the visible CUDA devices, else auto).
    devices: tuple[str, ...] | None = None
    #: `--max-memory`: per-device budget; set, models load with device_map="auto" across those devices.
    max_memory: dict[Any, str] | None = field(default=None, hash=False)


def addoption(parser: pytest.Parser) -> None:
    """Register the plugin's command-line options and ini keys."""
    group = parser.getgroup("debug", "debug: language-model code-tracing evals")
    _add_model_options(group)
    _add_program_options(group)
    _add_verdict_options(group)
    parser.addini(
        "debug_gates", type="linelist", default=[], help="gates applied to every run (same grammar as --gate)"
    )


def _add_model_options(group: pytest.OptionGroup) -> None:
    """Which models run, where they are placed and how they are prompted."""
    group.addoption(
        "--model",
        action="append",
        default=None,
        metavar="ID",
        help="model to evaluate (repeatable): embedded:NAME, a local folder, a hub id or a served model "
        "openai:NAME@http://HOST:PORT/v1 (base URL from $OPENAI_BASE_URL without @...) "
        "(default: debug.DEFAULT_MODEL)",
    )
    group.addoption(
        "--devices",
        default=None,
        metavar="LIST",
        help="devices the xdist workers take in turn, e.g. cuda:0,cuda:1 (default: worker gwK on "
        "cuda:K mod the visible GPUs; without GPUs auto)",
    )
    group.addoption(
        "--max-memory",
        default=None,
        metavar="MAP",
        help="load each model with device_map=auto within these budgets, e.g. 0=20GiB,1=20GiB "
        "(a model larger than one GPU)",
    )
    group.addoption(
        "--max-concurrency",
        default="8",
        metavar="N",
        help="requests in flight to each served (openai:) model (default 8)",
    )
    group.addoption(
        "--chat-template",
        action="store_true",
        default=False,
        help="render each prompt as one user message through the model's own chat template "
        "(served models: /v1/chat/completions)",
    )
    group.addoption(
        "--chat-template-kwargs",
        default=None,
        metavar="JSON",
        help="""arguments of the chat template as a JSON object, e.g. '{"enable_thinking": false}' """
        "(needs --chat-template)",
    )
    group.addoption(
        "--remote",
        default="off",
        # debug.causal.engine.REMOTE_CHOICES' keys, written out: loading the plugin must not import torch.
        choices=["off", "local", "ndif"],
        help="causal evals: where the patching traces run; ndif: nnsight's remote execution (a hub model id "
        "and an NDIF API key), local: the same serialized requests run here (default off: in process)",
    )


def _add_program_options(group: pytest.OptionGroup) -> None:
    """The programs of each case and how their answers are scored."""
    group.addoption(
        "--num-seqs", default=None, metavar="N", help=f"programs per case (default {EVAL_NUM_SEQS})"
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
        "--prompt-form",
        default="auto",
        choices=PROMPT_FORMS,
        help="which tasks each family measures: query (the raw program ending in '#<var>:'), instruction "
        "(the worded templates) or auto (default: query for embedded:* models, instruction for the rest); "
        "tasks with no form (variable binding) run in all",
    )
    group.addoption("--batch-size", default=None, metavar="N", help="scoring batch size (default: scorer's)")
    group.addoption(
        "--max-new-tokens", default=None, metavar="N", help="generation budget per answer (default: scorer's)"
    )
    group.addoption(
        "--no-cache", action="store_true", default=False, help="ignore and do not write the answer cache"
    )


def _add_verdict_options(group: pytest.OptionGroup) -> None:
    """Where runs are written, what they are compared with and the gates that fail them."""
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
        "accuracy:0.02), significantly after --compare-correction, against --baseline or the reference "
        "model, or when a compared case's programs do not all pair",
    )
    group.addoption(
        "--reference",
        default=None,
        metavar="ID",
        help="with several --model: the model the others are compared with (default: the first --model)",
    )
    group.addoption(
        "--compare-alpha",
        default=str(DEFAULT_ALPHA),
        metavar="A",
        help=f"family-wise significance level of --compare-fail, in [{ALPHA_RANGE[0]:g}, {ALPHA_RANGE[1]:g}] "
        f"(default {DEFAULT_ALPHA})",
    )
    group.addoption(
        "--compare-correction",
        default="holm",
        choices=CORRECTIONS,
        help="multiple-comparison correction over all compared cases: holm (Holm step-down, the default) "
        "or none (raw p-values)",
    )
    group.addoption(
        "--gate",
        action="append",
        default=[],
        metavar="EXPR",
        help='gate "[SELECTOR:]METRIC>=VALUE" or "<=" (repeatable; also [tool.debug] gates)',
    )


def _range_words(option: str) -> str:
    low, high, example = NUMERIC_OPTIONS[option]
    kind = "a non-negative integer" if low == 0 else "a positive integer"
    if option == "--seq-lens":
        kind = "comma-separated positive integers"
    return f"{option} takes {kind} in [{low}, {high}], e.g. {option} {example}"


def bounded_int(text: Any, option: str) -> int | None:
    """`text` as an int within `NUMERIC_OPTIONS[option]`, or None for None.

    Raises:
        pytest.UsageError: One line naming the option and its valid range.
    """
    if text is None:
        return None
    low, high, _ = NUMERIC_OPTIONS[option]
    stripped = str(text).strip()
    # Digits only (no sign, no underscores, at most 20 of them): int() of a long digit string is slow.
    if not re.fullmatch(r"\d{1,20}", stripped) or not low <= int(stripped) <= high:
        raise pytest.UsageError(f"{_range_words(option)}; got {text!r}")
    return int(stripped)


def _seq_lens(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise pytest.UsageError(f"{_range_words('--seq-lens')}; got {text!r}")
    try:
        values = [bounded_int(p, "--seq-lens") for p in parts]
    except pytest.UsageError:
        raise pytest.UsageError(f"{_range_words('--seq-lens')}; got {text!r}") from None
    return tuple(dict.fromkeys(v for v in values if v is not None))


def parse_compare_fail(text: str) -> CompareFail:
    """Parse `METRIC:MARGIN` where MARGIN is `2pp` (percentage points) or an absolute number like `0.02`.

    Raises:
        ValueError: With the accepted grammar (`debug.plugin.compare.parse_fail_rule`).
    """
    metric, margin = parse_fail_rule(text, "--compare-fail")
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


def _models(config: pytest.Config) -> tuple[str, ...]:
    models = tuple(config.getoption("--model") or [DEFAULT_MODEL])
    for model in models:
        if not model.strip():
            raise pytest.UsageError(
                "--model needs a model id, e.g. --model embedded:binder; got an empty one"
            )
    return tuple(dict.fromkeys(m.strip() for m in models))


def _reference(config: pytest.Config, models: tuple[str, ...]) -> str | None:
    """The model the others are compared with: --reference, else the first --model; None for one model."""
    reference = config.getoption("--reference")
    if reference is not None and reference.strip() not in models:
        raise pytest.UsageError(
            f"--reference names the model the others are compared with and must be one of the --model "
            f"values ({', '.join(models)}); got {reference!r}"
        )
    if reference is not None and len(models) == 1:
        raise pytest.UsageError(
            f"--reference {reference} needs a second --model to compare with it, e.g. --model {models[0]} "
            "--model OTHER"
        )
    return (reference.strip() if reference else models[0]) if len(models) > 1 else None


def _compare_fail(config: pytest.Config, reference: str | None) -> tuple[float, CompareFail | None]:
    """--compare-alpha and the parsed --compare-fail rule (None without one)."""
    try:
        compare_alpha = parse_alpha(config.getoption("--compare-alpha"), "--compare-alpha")
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    compare_text = config.getoption("--compare-fail")
    if compare_text is None:
        return compare_alpha, None
    try:
        rule = parse_compare_fail(compare_text)
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    if config.getoption("--baseline") is None and reference is None:
        raise pytest.UsageError(
            "--compare-fail needs something to compare with: --baseline PATH (an earlier run's "
            "results.json) or a second --model"
        )
    return compare_alpha, CompareFail(rule.metric, rule.margin, rule.text, compare_alpha)


def _gates(config: pytest.Config) -> tuple[Gate, ...]:
    gates: list[Gate] = []
    try:
        gates.extend(parse_gate(text, source="--gate") for text in config.getoption("--gate") or [])
        gates.extend(parse_gate(text, source="pyproject") for text in pyproject_gates(config))
    except GateError as exc:
        raise pytest.UsageError(str(exc)) from None
    return tuple(gates)


def _prompting_and_placement(config: pytest.Config) -> dict[str, Any]:
    """The chat-template and device options, checked together (some exclude others)."""
    chat_template = bool(config.getoption("--chat-template"))
    try:
        chat_template_kwargs = check_chat_template_kwargs(
            config.getoption("--chat-template-kwargs"), "--chat-template-kwargs"
        )
        devices = parse_devices(config.getoption("--devices"), "--devices")
        max_memory = parse_max_memory(config.getoption("--max-memory"), "--max-memory")
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    if chat_template_kwargs is not None and not chat_template:
        raise pytest.UsageError("--chat-template-kwargs needs --chat-template (add it, or drop the kwargs)")
    if devices is not None and max_memory is not None:
        raise pytest.UsageError(
            "--devices puts each worker's models on one device and --max-memory spreads a model over "
            "several; use one of them"
        )
    return {
        "chat_template": chat_template,
        "chat_template_kwargs": chat_template_kwargs,
        "devices": devices,
        "max_memory": max_memory,
    }


def resolve_options(config: pytest.Config) -> DebugOptions:
    """Validate every option; raise `pytest.UsageError` with a one-line fix on bad input."""
    models = _models(config)
    num_seqs = bounded_int(config.getoption("--num-seqs"), "--num-seqs") or EVAL_NUM_SEQS
    seed = bounded_int(config.getoption("--program-seed"), "--program-seed")
    batch_size = bounded_int(config.getoption("--batch-size"), "--batch-size")
    max_new_tokens = bounded_int(config.getoption("--max-new-tokens"), "--max-new-tokens")
    seq_lens = _seq_lens(config.getoption("--seq-lens"))
    reference = _reference(config, models)
    compare_alpha, compare_fail = _compare_fail(config, reference)
    gates = _gates(config)
    max_concurrency = bounded_int(config.getoption("--max-concurrency"), "--max-concurrency")
    prompting = _prompting_and_placement(config)
    baseline_text = config.getoption("--baseline")
    root = config.rootpath
    report_dir = Path(config.getoption("--report-dir"))
    baseline = Path(baseline_text) if baseline_text else None
    if baseline is not None and not baseline.is_absolute():
        baseline = Path(config.invocation_params.dir) / baseline
    return DebugOptions(
        models=models,
        num_seqs=num_seqs,
        seq_lens=seq_lens,
        seed=int(seed or 0),
        report_dir=report_dir if report_dir.is_absolute() else root / report_dir,
        baseline=baseline,
        compare_fail=compare_fail,
        gates=gates,
        no_cache=bool(config.getoption("--no-cache")),
        # The same folder `debug.cache` uses (and `$DEBUG_CACHE_DIR` when set), so runner and plugin share
        # answers.
        cache_dir=Path(os.environ["DEBUG_CACHE_DIR"])
        if os.environ.get("DEBUG_CACHE_DIR")
        else root / ".debug_cache",
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        args=tuple(config.invocation_params.args),
        prompt_form=config.getoption("--prompt-form"),
        reference=reference,
        compare_alpha=compare_alpha,
        compare_correction=config.getoption("--compare-correction"),
        max_concurrency=int(max_concurrency or 8),
        **prompting,
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
        "prompt_form": options.prompt_form,
        "reference": options.reference,
        "compare_alpha": options.compare_alpha,
        "compare_correction": options.compare_correction,
        "max_concurrency": options.max_concurrency,
        "chat_template": options.chat_template,
        "chat_template_kwargs": options.chat_template_kwargs,
        "devices": list(options.devices) if options.devices else None,
        "max_memory": {str(k): v for k, v in options.max_memory.items()} if options.max_memory else None,
    }
