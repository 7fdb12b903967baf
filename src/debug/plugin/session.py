"""The controller side of a run: collect measurement records, write the reports, decide the exit code.

Under pytest-xdist only the controller registers `DebugSession`; workers attach each case's record to its
report object (`debug_record`) and xdist ships it here. Without xdist the same object sees the same reports.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from debug._util.files import atomic_write_text
from debug.plugin.cases import model_labels
from debug.plugin.compare import (
    BaselineError,
    annotate_gates,
    build_comparisons,
    pairing_fields,
    pairing_key,
    regressions,
)
from debug.plugin.gates import evaluate_gates
from debug.plugin.html import render_html
from debug.plugin.options import DebugOptions, describe_options
from debug.plugin.results import build_results, environment, git_commit
from debug.plugin.storage import HTML_FILE, RESULTS_FILE, RunDir
from debug.plugin.terminal import case_table, family_lines, gate_lines, regression_lines


def _one_line(text: str, limit: int = 300) -> str:
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    # The first "E   ..." line of a pytest traceback is the message a reader wants.
    errors = [ln[1:].strip() for ln in lines if ln.startswith("E ")]
    line = (errors[0] if errors else (lines[-1] if lines else "")) or "error"
    # "debug.plugin.evaluate.ModelLoadError: ..." reads better as "ModelLoadError: ...".
    line = re.sub(r"^(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_]\w*: )", "", line)
    return line[:limit]


#: Samples per case, and in all, that report.html's drill-down shows (samples.jsonl keeps every one).
DRILL_PER_CASE = 50
DRILL_TOTAL = 5000


def case_order(case: Mapping[str, Any]) -> tuple[Any, ...]:
    """Cases by test, model, task, then numeric seq_len (so `-4]` comes before `-16]`)."""
    seq_len = case.get("seq_len")
    return (
        str(case["id"]).split("[", 1)[0],
        str(case.get("model")),
        str((case.get("info") or {}).get("task")),
        seq_len if isinstance(seq_len, int) else -1,
        str(case["id"]),
    )


class DebugSession:
    """Aggregates records into cases, writes results.json, samples.jsonl, report.html and latest/."""

    def __init__(self, config: pytest.Config, options: DebugOptions, baseline: Any = None):
        self.config = config
        self.options = options
        self.baseline = baseline
        self.cases: dict[str, dict[str, Any]] = {}
        self.samples: dict[str, dict[str, dict[str, Any]]] = {}
        self._seen_hashes: dict[str, dict[str, int]] = {}
        self.sample_counts: dict[str, int] = {}
        self._kept = 0
        self.sample_lists: dict[str, list[dict[str, Any]]] = {}
        self.images: dict[str, list[dict[str, Any]]] = {}
        self.errors: list[dict[str, Any]] = []
        self.run_dir: Any = None
        self.results: dict[str, Any] | None = None
        self.problems: list[str] = []
        self.started = datetime.now(UTC).isoformat(timespec="seconds")
        self._t0 = time.perf_counter()
        self.finished = False
        self._labels = list(model_labels(options.models).values())

    # -- collecting ---------------------------------------------------------------------------------------
    def _ensure_run_dir(self) -> Any:
        if self.run_dir is None:
            self.run_dir = RunDir.create(self.options.report_dir)
        return self.run_dir

    def _is_case_id(self, nodeid: str) -> bool:
        """Whether a node id is an eval case's: its parameters start with a model label (see scheduling)."""
        _, bracket, param = nodeid.partition("[")
        # A case's parameter is exactly `<label>-<task>-<seq_len>` (`Case.param_id`); a harness test
        # parametrized by model id alone (`[embedded:binder-4l]`) must not count as one.
        return bool(bracket) and any(
            re.fullmatch(rf"{re.escape(label)}-.+-\d+\]", param) for label in self._labels
        )

    def _start_run(self) -> None:
        """Write a placeholder report and point latest at this run, before its first case runs.

        A run killed later (a worker crash takes no report with it; SIGKILL takes everything) then leaves
        `latest` at its own folder, whose results.json says it never finished, not at an older run.
        """
        if self.run_dir is not None or self.config.option.collectonly:
            return
        run_dir = self._ensure_run_dir()
        self._write_reports(run_dir, build_results(self._run_info(), []))

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """Start the run's report as soon as the collected (and selected) tests include eval cases."""
        if any({"debug_case", "measure"} & set(getattr(item, "fixturenames", ())) for item in session.items):
            self._start_run()

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        """Under xdist the controller collects nothing: start the report when a worker collected a case."""
        if any(self._is_case_id(nodeid) for nodeid in ids):
            self._start_run()

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Take the record a worker (or this process) attached to the report."""
        record = getattr(report, "debug_record", None)
        if record is None:
            if report.failed and report.when != "teardown":  # "???" is xdist's report of a crashed worker
                self.errors.append(
                    {"nodeid": report.nodeid, "when": report.when, "message": _one_line(report.longreprtext)}
                )
            return
        self.add_record(record, report)

    def add_record(self, record: Mapping[str, Any], report: pytest.TestReport) -> None:
        """Merge one case record: append its samples to disk at once, keep the rest in memory."""
        record = dict(record)
        case_id = str(record["id"])
        samples = record.pop("samples", []) or []
        images = record.pop("images", []) or []
        if report.passed:
            outcome, error = "passed", None
        else:
            outcome = "error" if report.when == "setup" else "failed"
            error = _one_line(report.longreprtext)
        record.update(outcome=outcome, error=error, images=[], duration=round(float(report.duration), 6))
        run_dir = self._ensure_run_dir()
        if samples:
            run_dir.append_samples(case_id, samples)
            self.sample_counts[case_id] = self.sample_counts.get(case_id, 0) + len(samples)
            # Memory stays bounded on huge runs: the page shows a capped drill-down; samples.jsonl has all.
            room = min(DRILL_PER_CASE - len(self.sample_lists.get(case_id, [])), DRILL_TOTAL - self._kept)
            if room > 0:
                self.sample_lists.setdefault(case_id, []).extend(samples[:room])
                self._kept += len(samples[:room])
            # Pairing (with --baseline, or several models) keeps each sample's outcomes and breakdown keys.
            if self.baseline is not None or self.options.reference is not None:
                keyed = self.samples.setdefault(case_id, {})
                seen = self._seen_hashes.setdefault(case_id, {})
                for sample in samples:
                    if sample.get("program_hash") is not None:
                        key = pairing_key(str(sample["program_hash"]), seen)
                        keyed[key] = pairing_fields(sample)
        for image in images:
            path = run_dir.save_image(case_id, image)
            record["images"].append(
                {"name": image["name"], "caption": image["caption"], "path": path, "mime": image["mime"]}
            )
            self.images.setdefault(case_id, []).append(image)
        self.cases[case_id] = record

    # -- finishing ----------------------------------------------------------------------------------------
    def _run_info(self) -> dict[str, Any]:
        models: dict[str, dict[str, Any]] = {}
        for case in self.cases.values():
            entry = models.setdefault(
                str(case.get("model")), {"id": case.get("model"), "fingerprint": None, "cases": 0}
            )
            entry["cases"] += 1
            entry["fingerprint"] = entry["fingerprint"] or case.get("fingerprint")
        workers = getattr(self.config.option, "numprocesses", None)
        return {
            "id": self.run_dir.run_id,
            "started": self.started,
            "finished": datetime.now(UTC).isoformat(timespec="seconds") if self.finished else None,
            "duration_s": round(time.perf_counter() - self._t0, 3),
            "models": list(models.values()),
            "git_commit": git_commit(self.config.rootpath),
            "args": list(self.options.args),
            "options": describe_options(self.options),
            "xdist_workers": workers,
            "environment": environment(),
            "status": "finished" if self.finished else "running",
            "note": self._note(),
        }

    def _note(self) -> str | None:
        """What a reader of a report without measurements needs to know (None when there are some)."""
        if not self.finished:
            return (
                "this run has not finished: its cases are still running, or it was killed before it could "
                "write its results"
            )
        if any(case.get("metrics") for case in self.cases.values()):
            return None
        return (
            "no measurement was recorded: every case errored, failed before measuring or crashed its worker "
            "(see each case's error and the errors list)"
        )

    def _write_reports(self, run_dir: Any, results: dict[str, Any]) -> None:
        """results.json and report.html, each replaced atomically, then `latest` pointed at this run."""
        atomic_write_text(run_dir.path / RESULTS_FILE, json.dumps(results, indent=1, ensure_ascii=False))
        html = render_html(
            results,
            self.sample_lists,
            self.images,
            sample_counts=self.sample_counts,
            max_samples_per_case=DRILL_PER_CASE,
            max_samples_total=DRILL_TOTAL,
        )
        atomic_write_text(run_dir.path / HTML_FILE, html)
        run_dir.mirror_latest()

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """Write the reports and turn failed gates or regressions into a non-zero exit status.

        A run writes them when it collected eval cases (the placeholder exists) or recorded any, and when an
        eval case crashed its worker before the run could know it had cases; other runs write nothing.
        """
        if (
            not self.cases
            and self.run_dir is None
            and not any(self._is_case_id(e["nodeid"]) for e in self.errors)
        ):
            return
        self.finished = True
        cases = sorted(self.cases.values(), key=case_order)
        comparisons, found = None, []
        if self.baseline is not None or self.options.reference is not None:
            try:
                comparisons = build_comparisons(
                    cases,
                    self.samples,
                    baseline=self.baseline,
                    reference=self.options.reference,
                    correction=self.options.compare_correction,
                    alpha=self.options.compare_alpha,
                )
            except BaselineError as exc:
                self.problems.append(str(exc))
                session.exitstatus = pytest.ExitCode.USAGE_ERROR
            if comparisons is not None and self.options.compare_fail is not None:
                cf = self.options.compare_fail
                found = regressions(comparisons, cf.metric, cf.margin)
        gates = [g.to_dict() for g in evaluate_gates(self.options.gates, cases)]
        annotate_gates(gates)  # programs per case that would decide a gate whose interval straddles its bar
        run_dir = self._ensure_run_dir()
        run_dir.close()
        self.results = build_results(
            self._run_info(),
            cases,
            comparisons=comparisons,
            gates=gates,
            regressions=found,
            errors=self.errors,
        )
        self._write_reports(run_dir, self.results)
        failed_gates = [g for g in gates if g["status"] == "fail"]
        if (failed_gates or found) and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        """Print the case table, gate outcomes, regressions and where the report is."""
        if self.results is None:
            return
        tr = terminalreporter
        tr.write_sep("=", "debug measurements")
        tr.write_line(case_table(self.results["cases"], self.results["comparisons"], self.results["gates"]))
        families = family_lines(self.results["comparisons"])
        if families:
            tr.write_sep("-", "comparisons, pooled per family")
            for line in families:
                tr.write_line(line)
        if self.results["gates"]:
            tr.write_sep("-", "gates")
            for line in gate_lines(self.results["gates"]):
                tr.write_line(line, red=line.startswith("FAIL"), green=line.startswith("PASS"))
        for line in regression_lines(self.results["regressions"]):
            tr.write_line(line, red=True)
        if self.results["run"].get("note"):
            tr.write_line(f"debug: {self.results['run']['note']}", red=True)
        for problem in self.problems:
            tr.write_line(f"debug: {problem}", red=True)
        tr.write_line(
            f"debug report: {self.run_dir.path / 'report.html'} (mirrored to "
            f"{self.run_dir.path.parent / 'latest'})"
        )
