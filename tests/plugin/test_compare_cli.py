"""`debug compare OLD NEW`: the pytest comparison's numbers from the saved files, exit codes, its own page."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import plugin.preload  # noqa: F401  (pytester forgets modules an inner run imports: import the heavy ones once)
from debug.cli import main as debug_main
from debug.plugin.compare_cli import main
from debug.plugin.terminal import delta_text
from plugin.fakes import FAKE_CONFTEST, FAKE_EVAL

pytest_plugins = ["pytester"]


@pytest.fixture
def runs(pytester: pytest.Pytester) -> tuple[Path, Path, dict, str]:
    """OLD (model good) and NEW (model bad, run with --baseline OLD): folders, NEW's comparisons, stdout."""
    pytester.makeconftest(FAKE_CONFTEST)
    pytester.makepyfile(test_counting=FAKE_EVAL)
    assert pytester.runpytest("--model", "good", "--num-seqs", "60").ret == 0
    old = pytester.path / "old"
    shutil.copytree(pytester.path / "reports" / "latest", old)
    result = pytester.runpytest("--model", "bad", "--num-seqs", "60", "--baseline", str(old / "results.json"))
    assert result.ret == 0
    new = pytester.path / "new"
    shutil.copytree(pytester.path / "reports" / "latest", new)
    comparisons = json.loads((new / "results.json").read_text())["comparisons"]
    return old, new, comparisons, result.stdout.str()


def test_debug_compare_reproduces_the_pytest_comparison(
    runs: tuple[Path, Path, dict, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new, expected, pytest_out = runs
    # OLD as its folder, NEW as its results.json: both are accepted.
    assert main([str(old), str(new / "results.json"), "--report-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    (folder,) = tmp_path.iterdir()
    document = json.loads((folder / "comparison.json").read_text())
    assert document["comparisons"] == expected  # every number, pairing and breakdown the same
    assert document["regressions"] == [] and document["fail"] is None
    for row in expected["cases"]:
        cell = delta_text(row, expected["correction"])
        assert cell in out and cell in pytest_out  # the same table cells
    assert "counting: bad vs baseline good: -" in out
    page = (folder / "comparison.html").read_text()
    assert 'id="comparison-grid"' in page and 'id="families"' in page and "<script" not in page


def test_debug_compare_fails_on_regressions_and_unpaired_cases(
    runs: tuple[Path, Path, dict, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new, _, _ = runs
    # Through the `debug` command itself: "compare" is registered in debug.cli.
    assert debug_main(["compare", str(old), str(new), "--fail", "accuracy:2pp"]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION test_counting[bad-COUNT-2]: accuracy -" in out
    assert "FAIL: 2 case(s) fail --fail accuracy:2pp (2 compared, Holm-corrected, alpha 0.05)" in out
    assert main([str(old), str(new), "--fail", "accuracy:0.9", "--correction", "none"]) == 0
    assert (
        "PASS: no case fails --fail accuracy:0.9 (2 compared, uncorrected, alpha 0.05)"
        in capsys.readouterr().out
    )
    # OLD compared with itself passes, until its samples.jsonl loses lines.
    assert main([str(old), str(old), "--fail", "accuracy:2pp"]) == 0
    truncated = tmp_path / "truncated"
    shutil.copytree(old, truncated)
    lines = (truncated / "samples.jsonl").read_text().splitlines(keepends=True)
    (truncated / "samples.jsonl").write_text("".join(lines[:90]))
    assert main([str(truncated), str(old), "--fail", "accuracy:2pp"]) == 1
    out = capsys.readouterr().out
    assert "UNPAIRED test_counting[good-" in out and "only 30 of 60 programs paired with the baseline" in out


def test_debug_compare_usage_errors_exit_2_in_one_line(
    runs: tuple[Path, Path, dict, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new, _, _ = runs
    other_seed = tmp_path / "other-seed"
    shutil.copytree(new, other_seed)
    data = json.loads((other_seed / "results.json").read_text())
    data["run"]["options"]["program_seed"] = 7
    (other_seed / "results.json").write_text(json.dumps(data))
    old_s, new_s = str(old), str(new)
    cases = [
        (
            [str(tmp_path / "nope"), new_s],
            "debug compare: error: OLD: * does not exist; pass the results.json*",
        ),
        ([old_s, str(other_seed)], "debug compare: error: OLD * ran with --program-seed 0, NEW * with 7; *"),
        (
            [old_s, new_s, "--alpha", "0"],
            "debug compare: error: argument --compare-alpha/--alpha: takes a number in [[]1e-06, 0.5[]]*",
        ),
        ([old_s, new_s, "--fail", "accuracy"], "debug compare: error: argument --fail: takes METRIC:MARGIN*"),
        ([old_s, new_s, "--correction", "x"], "debug compare: error: argument --compare-correction*"),
    ]
    for argv, pattern in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
        pytest.LineMatcher(err.splitlines()).fnmatch_lines([pattern])
    assert main(["--help"]) == 0
    assert "(default: holm)" in capsys.readouterr().out
