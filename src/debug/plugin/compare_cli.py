"""`debug compare OLD NEW`: compare two saved runs, with no model loaded and no program generated.

This module (`debug.plugin.compare_cli`, registered in `debug.cli` as the `compare` command) reads each run's
results.json and the samples.jsonl beside it (OLD and NEW may name the run folder or its results.json) and
compares NEW's cases with OLD's exactly as `pytest --baseline OLD` would have while NEW ran: the same case
matching, pairing by program hash, exact McNemar tests, Holm correction and breakdowns
(`debug.plugin.compare.build_comparisons`), the same terminal table (`debug.plugin.terminal`), and the same
`--fail METRIC:MARGIN` rule as `--compare-fail`, incomplete pairings included.

Exit codes: 0 when nothing failed (always without `--fail`), 1 when `--fail` found a regression or a case
whose programs did not all pair, 2 on a usage error (bad arguments, unreadable runs, runs of another
`--program-seed` or of other programs). `--report-dir DIR` writes `DIR/<UTC timestamp>-<6 hex>/` with
comparison.html (the comparison's own page) and comparison.json (the comparisons and failures).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from debug._util.files import atomic_write_text, timestamped_dir
from debug._util.templates import template_env
from debug.plugin.compare import (
    ALPHA_RANGE,
    CORRECTIONS,
    DEFAULT_ALPHA,
    BaselineError,
    BaselineRun,
    build_comparisons,
    load_run,
    parse_alpha,
    parse_fail_rule,
    regressions,
)
from debug.plugin.terminal import case_table, family_lines, regression_lines

__all__ = ["build_parser", "main", "render_comparison_html"]

EXIT_OK, EXIT_REGRESSION, EXIT_USAGE = 0, 1, 2
PAGE_FILE, JSON_FILE = "comparison.html", "comparison.json"


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage block): `debug compare: error: ...`."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _alpha(text: str) -> float:
    try:
        return parse_alpha(text, "--compare-alpha")
    except ValueError as exc:
        # argparse prefixes "argument --compare-alpha/--alpha: ", so only the range follows.
        raise argparse.ArgumentTypeError("takes " + str(exc).split(" takes ", 1)[-1]) from None


def _fail(text: str) -> tuple[str, float, str]:
    try:
        return (*parse_fail_rule(text, "--fail"), text.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError("takes " + str(exc).split(" takes ", 1)[-1]) from None


def build_parser() -> argparse.ArgumentParser:
    """The parser of `debug compare`."""
    parser = _Parser(
        prog="debug compare",
        description="Compare two saved runs (each a results.json with its samples.jsonl beside it) case by "
        "case on the programs both measured: paired deltas, exact McNemar tests, Holm correction.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("old", metavar="OLD", help="the reference run: its folder or its results.json")
    parser.add_argument("new", metavar="NEW", help="the run compared with it: its folder or its results.json")
    parser.add_argument(
        "--fail",
        type=_fail,
        default=None,
        metavar="METRIC:MARGIN",
        help="exit 1 when a case drops by more than MARGIN (accuracy:2pp or accuracy:0.02) significantly "
        "after the correction, or when a compared case's programs do not all pair (as --compare-fail)",
    )
    low, high = ALPHA_RANGE
    parser.add_argument(
        "--compare-alpha",
        "--alpha",
        dest="alpha",
        type=_alpha,
        default=DEFAULT_ALPHA,
        metavar="A",
        help=f"family-wise significance level, in [{low:g}, {high:g}]",
    )
    parser.add_argument(
        "--compare-correction",
        "--correction",
        dest="correction",
        choices=CORRECTIONS,
        default="holm",
        help="multiple-comparison correction over all compared cases (holm: Holm's step-down)",
    )
    parser.add_argument(
        "--report-dir",
        default=None,
        metavar="DIR",
        help="write comparison.html and comparison.json into a new DIR/<timestamp>-<id>/ folder "
        "(without it nothing is written)",
    )
    return parser


def _check_same_programs(old: BaselineRun, new: BaselineRun) -> None:
    seeds = old.program_seed, new.program_seed
    if None not in seeds and seeds[0] != seeds[1]:
        raise BaselineError(
            f"OLD {old.path} ran with --program-seed {seeds[0]}, NEW {new.path} with {seeds[1]}; compare "
            "runs of the same seed, so both scored the same programs"
        )


def render_comparison_html(
    old: BaselineRun,
    new: BaselineRun,
    comparisons: dict[str, Any],
    failures: Sequence[dict[str, Any]],
    *,
    fail_rule: str | None = None,
    verdict: str | None = None,
) -> str:
    """The comparison's own page: both runs' facts and the comparisons section of report.html."""
    return (
        template_env()
        .get_template("compare.html.j2")
        .render(
            old=old.results.get("run") or {},
            new=new.results.get("run") or {},
            old_path=str(old.path),
            new_path=str(new.path),
            comparisons=comparisons,
            regressions=list(failures),
            fail_rule=fail_rule,
            verdict=verdict,
        )
    )


def _run_label(run: BaselineRun) -> str:
    info = run.results.get("run") or {}
    models = ", ".join(str(m.get("id")) for m in info.get("models") or []) or "no models"
    status = "" if info.get("status") in (None, "finished") else f", {info.get('status')}: not finished"
    return f"{info.get('id') or run.path.parent.name} ({models}{status})"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `debug compare`; returns the exit code (see the module docstring)."""
    try:
        args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # --help (0) or a usage error (2, already printed in one line)
        return int(exc.code or 0)
    try:
        old = load_run(args.old, "OLD")
        new = load_run(args.new, "NEW")
        _check_same_programs(old, new)
        comparisons = build_comparisons(
            new.cases, new.samples, baseline=old, correction=args.correction, alpha=args.alpha
        )
    except BaselineError as exc:
        print(f"debug compare: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    assert comparisons is not None  # a baseline always gives a document
    failures = regressions(comparisons, args.fail[0], args.fail[1]) if args.fail else []
    fail_text = args.fail[2] if args.fail else None
    print(f"debug compare: NEW {_run_label(new)} against OLD {_run_label(old)}")
    print(case_table(new.cases, comparisons, [], show_gates=False))
    families = family_lines(comparisons)
    if families:
        print("--- pooled per family")
        for line in families:
            print(line)
    for line in regression_lines(failures):
        print(line)
    verdict = None
    if args.fail:
        tests = comparisons["tests"].get(args.fail[0], 0)
        how = "Holm-corrected" if args.correction == "holm" else "uncorrected"
        verdict = (
            f"FAIL: {len(failures)} case(s) fail --fail {fail_text}"
            if failures
            else f"PASS: no case fails --fail {fail_text}"
        ) + f" ({tests} compared, {how}, alpha {args.alpha:g})"
        print(verdict)
    if args.report_dir is not None:
        folder = timestamped_dir(Path(args.report_dir))
        page = render_comparison_html(old, new, comparisons, failures, fail_rule=fail_text, verdict=verdict)
        atomic_write_text(folder / PAGE_FILE, page)
        document = {
            "old": str(old.path),
            "new": str(new.path),
            "fail": fail_text,
            "comparisons": comparisons,
            "regressions": failures,
        }
        atomic_write_text(folder / JSON_FILE, json.dumps(document, indent=1, ensure_ascii=False))
        print(f"debug compare report: {folder / PAGE_FILE}")
    return EXIT_REGRESSION if failures else EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
