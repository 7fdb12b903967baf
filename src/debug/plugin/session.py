"""The controller side of a run: collect measurement records, write the reports, decide the exit code.

Under pytest-xdist only the controller registers `DebugSession`; workers attach each case's record to its
report object (`debug_record`) and xdist ships it here. Without xdist the same object sees the same reports.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from debug.plugin.options import DebugOptions


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

    # -- collecting ---------------------------------------------------------------------------------------
    def _ensure_run_dir(self) -> Any:
        if self.run_dir is None:
            from debug.plugin.storage import RunDir

            self.run_dir = RunDir.create(self.options.report_dir)
        return self.run_dir

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
            if self.baseline is not None:  # pairing needs only each sample's outcomes
                from debug.plugin.compare import pairing_key

                keyed = self.samples.setdefault(case_id, {})
                seen = self._seen_hashes.setdefault(case_id, {})
                for sample in samples:
                    if sample.get("program_hash") is not None:
                        key = pairing_key(str(sample["program_hash"]), seen)
                        keyed[key] = {"correct": sample.get("correct"), "parsed": sample.get("parsed", True)}
        for image in images:
            path = run_dir.save_image(case_id, image)
            record["images"].append(
                {"name": image["name"], "caption": image["caption"], "path": path, "mime": image["mime"]}
            )
            self.images.setdefault(case_id, []).append(image)
        self.cases[case_id] = record

    # -- finishing ----------------------------------------------------------------------------------------
    def _run_info(self) -> dict[str, Any]:
        from debug.plugin.options import describe_options
        from debug.report import environment, git_commit

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
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "duration_s": round(time.perf_counter() - self._t0, 3),
            "models": list(models.values()),
            "git_commit": git_commit(self.config.rootpath),
            "args": list(self.options.args),
            "options": describe_options(self.options),
            "xdist_workers": workers,
            "environment": environment(),
        }

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """Write the reports and turn failed gates or regressions into a non-zero exit status."""
        if not self.cases:
            return
        from debug.plugin.compare import BaselineError, compare_to_baseline, regressions
        from debug.plugin.gates import evaluate_gates
        from debug.plugin.storage import HTML_FILE, RESULTS_FILE, atomic_write_text
        from debug.report import build_results, render_html

        cases = sorted(self.cases.values(), key=case_order)
        comparisons, found = None, []
        if self.baseline is not None:
            try:
                comparisons = compare_to_baseline(cases, self.samples, self.baseline)
            except BaselineError as exc:
                self.problems.append(str(exc))
                session.exitstatus = pytest.ExitCode.USAGE_ERROR
            if comparisons is not None and self.options.compare_fail is not None:
                cf = self.options.compare_fail
                found = regressions(comparisons, cf.metric, cf.margin, cf.alpha)
        gates = [g.to_dict() for g in evaluate_gates(self.options.gates, cases)]
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
        import json

        atomic_write_text(run_dir.path / RESULTS_FILE, json.dumps(self.results, indent=1, ensure_ascii=False))
        html = render_html(
            self.results,
            self.sample_lists,
            self.images,
            sample_counts=self.sample_counts,
            max_samples_per_case=DRILL_PER_CASE,
            max_samples_total=DRILL_TOTAL,
        )
        atomic_write_text(run_dir.path / HTML_FILE, html)
        run_dir.mirror_latest()
        failed_gates = [g for g in gates if g["status"] == "fail"]
        if (failed_gates or found) and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        """Print the case table, gate outcomes, regressions and where the report is."""
        if self.results is None:
            return
        from debug.plugin.terminal import case_table, family_lines, gate_lines

        tr = terminalreporter
        tr.write_sep("=", "debug measurements")
        tr.write_line(case_table(self.results["cases"], self.results["comparisons"], self.results["gates"]))
        families = family_lines(self.results["comparisons"])
        if families:
            tr.write_sep("-", "against the baseline, pooled per family")
            for line in families:
                tr.write_line(line)
        if self.results["gates"]:
            tr.write_sep("-", "gates")
            for line in gate_lines(self.results["gates"]):
                tr.write_line(line, red=line.startswith("FAIL"), green=line.startswith("PASS"))
        for reg in self.results["regressions"]:
            tr.write_line(
                f"REGRESSION {reg['case']}: {reg['metric']} {100 * reg['delta']:+.1f} pp "
                f"(p={reg['p_value']:.3g}) "
                f"exceeds the allowed {100 * reg['margin']:.1f} pp",
                red=True,
            )
        for problem in self.problems:
            tr.write_line(f"debug: {problem}", red=True)
        tr.write_line(
            f"debug report: {self.run_dir.path / 'report.html'} (mirrored to "
            f"{self.run_dir.path.parent / 'latest'})"
        )
