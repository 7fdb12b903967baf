"""The pytest hooks of the `debug` plugin (the `pytest11` entry point `debug = debug.plugin.hooks`).

`pytest evals -k variable_binding` runs eval modules whose tests take the `debug_case` fixture: every
(model, task, seq_len) is one parametrized case with a readable id. Each case records its measurements through
the `measure` fixture (`debug.plugin.measurement`); the records travel inside pytest's report objects, so
pytest-xdist workers deliver them and the controller alone writes `reports/<run>/` (results.json,
samples.jsonl, report.html; `debug.plugin.session`). Gates (`debug.plugin.gates`) and baseline comparisons
(`debug.plugin.compare`) decide the exit code; a low accuracy on its own never fails a test.

The plugin is split by role, imports flowing one way: options and cases (what to run), evaluate (the standard
measurement), measurement and fixtures (how a test records), session, storage, results and html (what the
controller writes), gates and compare (what decides the exit code), terminal (what it prints), scheduling
(xdist), testing (a fake backend for users' own tests).
"""

from __future__ import annotations

from typing import Any

import pytest

from debug.plugin.cases import CAUSAL_FAMILY_PREFIX, Task, build_params, family_of, model_labels
from debug.plugin.compare import BaselineError, load_baseline
from debug.plugin.fixtures import debug_backend, debug_model, measure, record_for_report
from debug.plugin.options import addoption, get_options, store_options
from debug.plugin.session import DebugSession

# The fixtures are registered with pytest by being attributes of this plugin module.
__all__ = ["debug_backend", "debug_model", "measure"]


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register --model, --num-seqs, --seq-lens, --report-dir, --baseline, --compare-fail, --gate, ..."""
    addoption(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Validate options; on the controller, load the baseline and register the session that writes reports."""
    config.addinivalue_line(
        "markers", "xdist_group(name): pytest-xdist loadgroup group (debug groups by model)"
    )
    config.addinivalue_line("markers", "slow: takes more than ~10 s; deselect with -m 'not slow'")
    options = store_options(config)
    if hasattr(config, "workerinput"):  # an xdist worker: only the controller aggregates and writes
        return
    baseline = None
    if options.baseline is not None:
        try:
            baseline = load_baseline(options.baseline)
        except BaselineError as exc:
            raise pytest.UsageError(str(exc)) from None
        if baseline.program_seed is not None and baseline.program_seed != options.seed:
            raise pytest.UsageError(
                f"--baseline {options.baseline} ran with --program-seed {baseline.program_seed}, "
                f"this run with "
                f"{options.seed}; use the same seed so both runs score the same programs"
            )
    config.pluginmanager.register(DebugSession(config, options, baseline), "debug-session")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under `-n N` (dist `load`), schedule by model so each model loads on one worker (`scheduling.py`)."""
    if config.getoption("dist", None) not in ("load", "loadgroup"):
        return None
    from debug.plugin.scheduling import ModelScheduling  # deferred: it imports xdist, present only under -n

    return ModelScheduling(config, log, labels=list(model_labels(get_options(config).models).values()))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize `debug_case` from the module's TASKS and the --model/--seq-lens/--num-seqs options."""
    if "debug_case" not in metafunc.fixturenames:
        return
    tasks = getattr(metafunc.module, "TASKS", None)
    if not tasks or not all(isinstance(t, Task) for t in tasks):
        raise pytest.UsageError(
            f"{metafunc.module.__name__} requests debug_case but defines no TASKS = [Task(...), ...] "
            "(see debug.plugin.cases)"
        )
    options = get_options(metafunc.config)
    params = build_params(
        tasks,
        models=options.models,
        seq_lens=options.seq_lens,
        num_seqs=options.num_seqs,
        seed=options.seed,
        family=family_of(metafunc.module),
        prompt_form=options.prompt_form,
    )
    metafunc.parametrize("debug_case", params)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run causal eval cases after every other test, the order otherwise kept.

    A causal case answers the same programs as its behavioural twin (`debug.causal.evaluate`) through the
    same scorer and answer cache, so when the twin runs first the causal case reads those answers back
    instead of decoding them again. Alphabetical order would run `test_causal_*` modules first.
    """
    items.sort(key=is_causal_item)


def is_causal_item(item: pytest.Item) -> bool:
    """Whether a test is a causal eval case (its family starts with `CAUSAL_FAMILY_PREFIX`)."""
    case = getattr(getattr(item, "callspec", None), "params", {}).get("debug_case")
    return case is not None and str(case.family).startswith(CAUSAL_FAMILY_PREFIX)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    """Attach the case's measurement record to its report (call phase, or a failed setup)."""
    report = yield
    if report.when == "call" or (report.when == "setup" and report.failed):
        record = record_for_report(item)
        if record is not None:
            report.debug_record = record
    return report
